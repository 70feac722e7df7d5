"""The on-disk engine cache: private files with sha256 records, one build per engine at a time across
processes, eviction of stale engines and removal of leftover temporaries.

No TensorRT here: :func:`provision` takes the builder as a function, so the runtime's lazy build,
``edgedepth build-engines`` and the tests share one implementation.

Deserialising an engine runs native code, so the cache is trusted only as far as it is private
(:func:`read_cache_file`): the folder and every file must belong to this user and be writable by no
one else, files are opened without following links, and an engine is returned only when its sha256
matches the ``.sha256`` record written beside it (a truncated or swapped engine is rebuilt).

Two processes that miss the same engine (two services starting on an 8 GB Orin) must not build it
together: the second would double the builder's memory. The build runs under an exclusive
``fcntl.flock`` on ``<engine>.lock``; the waiter then finds the engine and reuses it. Lock files stay
(a few bytes): deleting one another process has open would let a third build beside it.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..atomic import TMP_TAG, atomic_path
from .base import private_dir

#: Engines kept per model name (the file name up to its first dot: "coarse", "refiner"), most
#: recently used first; older ones (another TensorRT, GPU, precision or bundle) are deleted.
KEEP_PER_MODEL = 4
#: A temporary older than this is a killed writer's leftover, not a write in progress (an engine
#: write takes well under a second once built), seconds.
STALE_TEMPORARY_S = 3600.0
_LOCK_SUFFIX = ".lock"


def read_cache_file(path: str | Path) -> Optional[bytes]:
    """The bytes of the cache file ``path``, None when it does not exist. PermissionError when its
    folder or the file itself could have been written by another user, or it is a link."""
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PermissionError(f"cache file {path} is a symbolic link; refusing to load it") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise PermissionError(f"cache file {path} is not a regular file; refusing to load it")
        if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
            raise PermissionError(f"cache file {path} was written by another user or is writable by others "
                                  f"(owner uid {info.st_uid}, mode {info.st_mode & 0o777:o}); refusing to load it")
        return fh.read()


def write_cache_file(path: str | Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` in a private cache folder, atomically, readable by this user only;
    ``durable``: fsync the file and the folder (an engine must survive the device losing power)."""
    path = Path(path)
    private_dir(path.parent)
    with atomic_path(path, durable=durable) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)


def _digest_path(engine: Path) -> Path:
    return engine.with_name(engine.name + ".sha256")


def read_cached_engine(path: str | Path) -> Optional[bytes]:
    """A cached engine's bytes, or None when it is absent or does not match its sha256 record (a crash
    between the two writes, a truncated file: rebuild). PermissionError as :func:`read_cache_file`."""
    engine = read_cache_file(path)
    if engine is None:
        return None
    record = read_cache_file(_digest_path(Path(path)))
    if record is None or record.decode("ascii", "replace").strip() != hashlib.sha256(engine).hexdigest():
        return None
    return engine


def write_cached_engine(path: str | Path, engine: bytes) -> None:
    """Cache ``engine`` at ``path`` with its sha256 record beside it (the record last), both fsynced."""
    write_cache_file(path, engine, durable=True)
    write_cache_file(_digest_path(Path(path)), hashlib.sha256(engine).hexdigest().encode("ascii") + b"\n",
                     durable=True)


@contextlib.contextmanager
def build_lock(engine: str | Path, log: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """Hold the exclusive cross-process lock of ``engine`` (``flock`` on ``<engine>.lock``) for the
    block; waits for a process that holds it. Where ``fcntl`` is missing (Windows) nothing is locked."""
    engine = Path(engine)
    try:
        import fcntl
    except ImportError:
        yield
        return
    private_dir(engine.parent)
    lock = engine.with_name(engine.name + _LOCK_SUFFIX)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"another process is building {engine.name}; waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _sidecars(engine: Path) -> list[Path]:
    """The engine and the files written beside it (sha256 record, DLA report), not its lock."""
    prefix = engine.name + "."
    return [engine] + [p for p in engine.parent.iterdir()
                       if p.name.startswith(prefix) and not p.name.endswith(_LOCK_SUFFIX)]


def evict_stale(engine: str | Path, keep: int = KEEP_PER_MODEL) -> list[Path]:
    """Delete the engines of the same model name as ``engine`` beyond the ``keep`` most recently used
    (by modification time: a cache hit touches its engine), never ``engine`` itself, each with its
    records. Returns the engines deleted."""
    engine = Path(engine)
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    model = engine.name.split(".", 1)[0] + "."
    others = [p for p in engine.parent.glob(f"{model}*.engine") if p != engine and p.is_file()]
    others.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    gone = others[keep - 1:]
    for old in gone:
        for path in _sidecars(old):
            path.unlink(missing_ok=True)
    return gone


def remove_leftover_temporaries(engine: str | Path, older_than_s: float = STALE_TEMPORARY_S) -> list[Path]:
    """Delete the temporaries a killed writer left in the engine's folder: those of ``engine``'s own
    files (call this holding its :func:`build_lock`: nobody else writes them) and any other older than
    ``older_than_s`` seconds (a write in progress is younger). Returns what was deleted."""
    engine = Path(engine)
    now, gone = time.time(), []
    for tmp in engine.parent.glob(f".*{TMP_TAG}*"):
        ours = tmp.name.startswith(f".{engine.name}")
        try:
            old = now - tmp.lstat().st_mtime > older_than_s
        except FileNotFoundError:
            continue  # its writer just renamed it into place
        if (ours or old) and not tmp.is_dir():
            tmp.unlink(missing_ok=True)
            gone.append(tmp)
    return gone


def provision(engine: str | Path, build: Callable[[], bytes], *, reject: Optional[bytes] = None,
              keep: int = KEEP_PER_MODEL, log: Optional[Callable[[str], None]] = None) -> tuple[bytes, bool]:
    """The engine cached at ``engine``, built by ``build()`` on a miss: ``(bytes, built here)``.

    The build happens under :func:`build_lock`; a process that waited re-reads the cache and reuses
    what the other built. Before building, this engine's leftover temporaries are removed; after,
    the engine and its sha256 record are written (fsync, atomic rename) and stale engines of the same
    model evicted. ``reject``: cached bytes the caller could not use (e.g. they no longer deserialise
    after a driver upgrade): rebuilt unless another process has already replaced them.
    """
    engine = Path(engine)

    def usable() -> Optional[bytes]:
        cached = read_cached_engine(engine)
        if cached is None or cached == reject:
            return None
        os.utime(engine)  # most recently used: eviction keeps it
        return cached

    cached = usable()
    if cached is not None:
        return cached, False
    with build_lock(engine, log):
        cached = usable()  # built by the process we waited for
        if cached is not None:
            return cached, False
        remove_leftover_temporaries(engine)
        data = build()
        write_cached_engine(engine, data)
        for old in evict_stale(engine, keep):
            if log:
                log(f"evicted stale engine {old.name}")
    return data, True
