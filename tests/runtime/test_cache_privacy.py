"""Caches of compiled models are private: a serialised TensorRT engine is native code and sits at a
predictable name, so nothing is loaded from a folder or file another user could have written, and an
engine loads only when it matches the sha256 recorded beside it. (Building and deserialising engines
needs TensorRT and a GPU; the cache rules below are plain Python, tested everywhere.)"""
from __future__ import annotations

import hashlib
import os
import stat
import sys

import pytest

from edgedepth import Runtime
from edgedepth.backends.base import private_dir
from edgedepth.backends.tensorrt import read_cache_file, read_cached_engine, write_cached_engine

posix_only = pytest.mark.skipif(not hasattr(os, "getuid"), reason="file ownership is checked on POSIX")


def test_engine_round_trip_is_private_and_hashed(tmp_path):
    path = tmp_path / "cache" / "refiner.fp16.0123.engine"
    write_cached_engine(path, b"engine bytes")
    assert read_cached_engine(path) == b"engine bytes"
    record = path.with_name(path.name + ".sha256")
    assert record.read_text().strip() == hashlib.sha256(b"engine bytes").hexdigest()
    if hasattr(os, "getuid"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) & 0o077 == 0


def test_engine_that_does_not_match_its_record_is_not_loaded(tmp_path):
    path = tmp_path / "e.engine"
    write_cached_engine(path, b"built by us")
    path.write_bytes(b"swapped in")  # same owner and mode, other bytes (or a truncated write)
    assert read_cached_engine(path) is None
    write_cached_engine(path, b"built by us")
    path.with_name(path.name + ".sha256").unlink()  # crash between the two writes
    assert read_cached_engine(path) is None
    assert read_cached_engine(tmp_path / "absent.engine") is None


@posix_only
def test_cache_folder_writable_by_others_is_refused(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    write_cached_engine(folder / "e.engine", b"x")
    os.chmod(folder, 0o777)  # e.g. EDGEDEPTH_CACHE=/tmp/cache: anyone could plant an engine there
    with pytest.raises(PermissionError, match=r"cache folder .*shared is writable by other users \(mode 777\)"):
        read_cached_engine(folder / "e.engine")
    with pytest.raises(PermissionError, match="writable by other users"):
        write_cached_engine(folder / "f.engine", b"y")


@posix_only
def test_cache_file_writable_by_others_or_linked_is_refused(tmp_path):
    write_cached_engine(tmp_path / "e.engine", b"x")
    os.chmod(tmp_path / "e.engine", 0o666)
    with pytest.raises(PermissionError, match=r"e\.engine was written by another user or is writable by others"):
        read_cached_engine(tmp_path / "e.engine")
    (tmp_path / "elsewhere.engine").write_bytes(b"planted")
    (tmp_path / "l.engine").symlink_to(tmp_path / "elsewhere.engine")
    with pytest.raises(PermissionError, match=r"l\.engine is a symbolic link"):
        read_cache_file(tmp_path / "l.engine")


@posix_only
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="changing a file's owner needs root")
def test_cache_owned_by_another_user_is_refused(tmp_path):
    folder = tmp_path / "c"
    write_cached_engine(folder / "e.engine", b"x")
    os.chown(folder / "e.engine", 65534, 65534)
    with pytest.raises(PermissionError, match="written by another user"):
        read_cached_engine(folder / "e.engine")
    os.chown(folder, 65534, 65534)
    with pytest.raises(PermissionError, match="owned by another user"):
        private_dir(folder)


@posix_only
@pytest.mark.skipif(sys.platform == "darwin", reason="OpenVINO CPU plugin cache is Linux/Windows here")
def test_openvino_refuses_a_shared_compiled_model_cache(tiny_bundle, tmp_path):
    pytest.importorskip("openvino")
    shared = tmp_path / "ov"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(PermissionError, match="writable by other users"):
        Runtime(tiny_bundle, backend="openvino", device="cpu", cache_dir=shared)
    os.chmod(shared, 0o700)
    assert Runtime(tiny_bundle, backend="openvino", device="cpu", cache_dir=shared).backend_name == "openvino"
