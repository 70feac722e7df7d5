"""edgedepth.atomic: files and folders appear whole or not at all; temporaries are recognisable."""
from __future__ import annotations

import os

import pytest

from edgedepth.atomic import (
    atomic_dir,
    atomic_path,
    atomic_write_text,
    make_staging_dir,
    publish_dir,
    remove_temporaries,
    temporary_name,
)


def _fill(target, name, text, fail=False):
    with atomic_dir(target) as tmp:
        (tmp / name).write_text(text)
        if fail:
            raise RuntimeError("killed mid-write")


def test_atomic_dir_failure_leaves_nothing_and_replace_keeps_old_until_done(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        _fill(target, "half", "x", fail=True)
    assert list(tmp_path.iterdir()) == []
    _fill(target, "a", "1")
    with pytest.raises(RuntimeError):
        _fill(target, "half", "x", fail=True)
    assert (target / "a").read_text() == "1"  # the old folder survived the failed replace
    _fill(target, "b", "2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in target.iterdir()] == ["b"]


@pytest.mark.parametrize("durable", [False, True])
def test_atomic_path_publishes_on_success_only(tmp_path, durable):
    target = tmp_path / "sub" / "metrics.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target, durable=durable) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert list((tmp_path / "sub").iterdir()) == []  # parent created, nothing else left
    atomic_write_text(target, "old", durable=durable)
    with pytest.raises(RuntimeError):
        with atomic_path(target, durable=durable) as tmp:
            tmp.write_text("new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    with atomic_path(target, durable=durable) as tmp:
        assert tmp.parent == target.parent and not tmp.exists()
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["metrics.json"]


def test_written_files_get_ordinary_permissions(tmp_path):
    # a mkstemp-style 0600 file would make published bundles unreadable by other users
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        with atomic_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(umask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_temporary_names_keep_the_suffix_and_are_removed_by_the_owner(tmp_path):
    name = temporary_name(tmp_path / "refiner.fp16.mlpackage")
    assert name.parent == tmp_path and name.name.startswith(".refiner.fp16.mlpackage.tmp-")
    assert name.suffix == ".mlpackage"  # coremltools refuses any other suffix
    assert temporary_name(tmp_path / "x") != temporary_name(tmp_path / "x")
    staging = make_staging_dir(tmp_path / "a.edgedepth")
    (staging / "f").write_text("1")
    (tmp_path / ".b.txt.tmp-deadbeef.txt").write_text("partial")
    (tmp_path / "keep.txt").write_text("k")
    assert remove_temporaries(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    assert remove_temporaries(tmp_path / "missing") == 0


def test_publish_dir_replaces_an_existing_folder(tmp_path):
    target = tmp_path / "b.edgedepth"
    for text in ("1", "2"):
        staging = make_staging_dir(target)
        (staging / "f").write_text(text)
        assert publish_dir(staging, target, durable=True) == target
    assert (target / "f").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["b.edgedepth"]
