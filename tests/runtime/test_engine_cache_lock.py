"""The engine cache's build lock, eviction and clean-up, for real: two processes, real files, a stand-in
builder function (TensorRT itself cannot run here; the cache layer takes the builder as a function)."""
from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from edgedepth.atomic import temporary_name
from edgedepth.backends.engine_cache import (evict_stale, provision, read_cached_engine, remove_leftover_temporaries,
                                             write_cached_engine)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the lock is fcntl's; the test forks processes")


def _slow_builder(journal: str) -> bytes:
    """Stands in for TensorRT: records its start and end, holds the lock a while, returns 'engine' bytes."""
    with open(journal, "a") as fh:
        fh.write(f"start {os.getpid()}\n")
    time.sleep(1.0)
    with open(journal, "a") as fh:
        fh.write(f"end {os.getpid()}\n")
    return f"engine built by {os.getpid()}".encode()


def _provision(engine: str, journal: str, results) -> None:
    messages: list[str] = []
    data, built = provision(Path(engine), lambda: _slow_builder(journal), log=messages.append)
    results.put((os.getpid(), data, built, messages))


def test_two_processes_never_build_the_same_engine_at_once(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    engine, journal = cache / "refiner.fp16.0123.engine", tmp_path / "journal.txt"
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    first = ctx.Process(target=_provision, args=(str(engine), str(journal), results))
    first.start()
    deadline = time.time() + 30
    while not (journal.is_file() and "start" in journal.read_text()):  # the first holds the lock now
        assert time.time() < deadline, "the first process never started building"
        time.sleep(0.02)
    second = ctx.Process(target=_provision, args=(str(engine), str(journal), results))
    second.start()
    got = {pid: (data, built, messages) for pid, data, built, messages in (results.get(timeout=60) for _ in range(2))}
    first.join(30)
    second.join(30)
    assert first.exitcode == 0 and second.exitcode == 0
    # One build, by the first; the second waited for it and reused its engine.
    assert journal.read_text().split("\n")[:2] == [f"start {first.pid}", f"end {first.pid}"]
    assert journal.read_text().count("start") == 1
    assert got[first.pid][:2] == (f"engine built by {first.pid}".encode(), True)
    assert got[second.pid][:2] == (f"engine built by {first.pid}".encode(), False)
    assert any("waiting" in m for m in got[second.pid][2])
    assert read_cached_engine(engine) == f"engine built by {first.pid}".encode()
    assert (engine.stat().st_mode & 0o777) == 0o600


def _private(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    return cache


def test_a_hit_is_reused_and_a_rejected_or_corrupt_engine_rebuilt(tmp_path):
    engine = _private(tmp_path) / "coarse.fp16.aaaa.engine"
    builds = []
    build = lambda: builds.append(1) or f"build {len(builds)}".encode()  # noqa: E731
    assert provision(engine, build) == (b"build 1", True)
    assert provision(engine, build) == (b"build 1", False) and len(builds) == 1
    # The caller could not deserialise these bytes (driver upgrade): rebuilt.
    assert provision(engine, build, reject=b"build 1") == (b"build 2", True)
    engine.write_bytes(b"truncat")  # no longer matches its sha256 record
    assert provision(engine, build) == (b"build 3", True)


def test_eviction_keeps_the_most_recently_used_engines_of_a_model(tmp_path):
    cache = _private(tmp_path)
    now = time.time()
    for age, key in enumerate(["k1", "k2", "k3", "k4"]):  # k1 newest
        path = cache / f"refiner.fp16.{key}.engine"
        write_cached_engine(path, key.encode())
        path.with_name(path.name + ".dla.json").write_text("{}")
        for f in (path, path.with_name(path.name + ".sha256")):
            os.utime(f, (now - 100 * (age + 1), now - 100 * (age + 1)))
    (cache / "refiner.fp16.k4.engine.lock").write_bytes(b"")
    write_cached_engine(cache / "coarse.fp16.c1.engine", b"c")
    os.utime(cache / "coarse.fp16.c1.engine", (now - 10_000, now - 10_000))
    new = cache / "refiner.int8.k5.engine"
    data, built = provision(new, lambda: b"k5", keep=3)
    assert built
    names = sorted(p.name for p in cache.iterdir())
    # k5 plus the two most recent others stay; k3 and k4 go with their records; other models and locks stay.
    assert [n for n in names if n.endswith(".engine")] == ["coarse.fp16.c1.engine", "refiner.fp16.k1.engine",
                                                           "refiner.fp16.k2.engine", "refiner.int8.k5.engine"]
    assert not any(n.startswith(("refiner.fp16.k3", "refiner.fp16.k4")) and not n.endswith(".lock") for n in names)
    assert "refiner.fp16.k4.engine.lock" in names
    # A cache hit touches its engine: k2, used now, outlives k1 at the next eviction.
    assert provision(cache / "refiner.fp16.k2.engine", lambda: b"unused") == (b"k2", False)
    assert [p.name for p in evict_stale(new, keep=2)] == ["refiner.fp16.k1.engine"]
    with pytest.raises(ValueError, match="keep"):
        evict_stale(new, keep=0)


def test_leftover_temporaries_are_removed_but_not_a_write_in_progress(tmp_path):
    cache = _private(tmp_path)
    engine = cache / "refiner.fp16.k.engine"
    ours = temporary_name(engine)                       # a killed build of this engine
    record = temporary_name(engine.with_name(engine.name + ".sha256"))
    fresh = temporary_name(cache / "coarse.fp16.c.engine")  # another process writing right now
    stale = temporary_name(cache / "timing.abc.cache")      # killed an hour ago
    for path in (ours, record, fresh, stale):
        path.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert sorted(p.name for p in remove_leftover_temporaries(engine)) == sorted([ours.name, record.name, stale.name])
    assert fresh.exists() and not ours.exists()
    # provision cleans before it builds
    ours.write_bytes(b"partial")
    provision(engine, lambda: b"e")
    assert not ours.exists() and fresh.exists()


def test_a_shared_cache_folder_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with pytest.raises(PermissionError, match="writable by other users"):
        provision(shared / "refiner.fp16.k.engine", lambda: b"e")
