"""Crash-safe writes: build a file or folder under a temporary name beside it, then rename.

A rename inside one folder is atomic, so a process killed at any instant leaves either the old
target or the new one, never half of one. Temporaries are named
``.{target name}.tmp-{random}{target suffix}``: hidden, recognisable by
:func:`remove_temporaries`, and ending in the target's suffix for writers that pick the format
from it (coremltools insists on ``.mlpackage``). ``durable=True`` also fsyncs the data and the
folder, so the new target survives a power loss, not only a killed process.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]

#: marks a temporary sibling; :func:`remove_temporaries` deletes what carries it.
TMP_TAG = ".tmp-"


def temporary_name(path: PathLike) -> Path:
    """An unused hidden name beside ``path`` to build it under (nothing is created)."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_TAG}{uuid.uuid4().hex[:8]}{path.suffix}")


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some file systems do not open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` (parents created, the file not); the block
    writes it, and it is renamed onto ``path`` if the block succeeds, deleted if it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    finally:
        _remove(tmp)
    if durable:
        _fsync(path.parent)


def atomic_write_bytes(path: PathLike, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: PathLike, text: str, *, durable: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


def make_staging_dir(target: PathLike) -> Path:
    """Create an empty temporary folder beside ``target`` (parents created) to fill and then
    publish with :func:`publish_dir`; use :func:`atomic_dir` when one block does both."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_name(target)
    staging.mkdir()
    return staging


def publish_dir(staging: PathLike, target: PathLike, *, durable: bool = False) -> Path:
    """Rename the filled ``staging`` folder onto ``target``. An existing ``target`` is moved
    aside first and removed only once the new folder is in place."""
    staging, target = Path(staging), Path(target)
    if durable:
        for f in staging.rglob("*"):
            if f.is_file():
                _fsync(f)
    old = None
    if target.exists():
        # not TMP_TAG: a crash between the two renames leaves this as the only complete copy
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(staging, target)
    if durable:
        _fsync(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


@contextlib.contextmanager
def atomic_dir(target: PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; the block fills it, and it replaces
    ``target`` (see :func:`publish_dir`) if the block succeeds, is removed if it raises."""
    staging = make_staging_dir(target)
    try:
        yield staging
        publish_dir(staging, target, durable=durable)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def remove_temporaries(folder: PathLike) -> int:
    """Delete the temporaries a killed writer left in ``folder``; returns how many. Call only
    from the process that owns the folder: another process may be filling one right now."""
    folder = Path(folder)
    stale = list(folder.glob(f".*{TMP_TAG}*")) if folder.is_dir() else []
    for path in stale:
        _remove(path)
    return len(stale)
