"""Fuzzing the bundle reader: the tiny bundle's manifest with one value replaced, added or deleted
anywhere in it, or one of its files changed. Contract: the bundle is refused when it is opened or its
models are loaded (BundleError / FileNotFoundError / ValueError naming the problem), or it runs and
gives finite depth >= 0 on a frame; never an error per frame, another exception (KeyError,
TypeError, IndexError...) or a crash."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from edgedepth import Runtime
from edgedepth.backends import BackendUnavailableError
from edgedepth.bundle import open_bundle

from ..runtime.tiny_models import read_manifest
from .profiles import fuzz

NAMED = (ValueError, FileNotFoundError, BackendUnavailableError)  # BundleError is a ValueError


def _leaves(node, path=()):
    """Every key path in a JSON tree (inner nodes included)."""
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield from _leaves(child, (*path, key))


json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.sampled_from([0, 1, -1, 2**31, 2**63]),
              st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e-300, 1e300, -0.0, 0.5]),
              st.text(max_size=8),
              st.sampled_from(["../x.onnx", "..\\\\x", "C:\\\\evil", "/etc/passwd", "coarse.onnx", "refiner.onnx",
                               "a" * 64, "bogus", "fp32", "depth", "feat0", "guide0", "rgb", ""])),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children,
                                                                                 max_size=3)),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def pristine(tiny_bundle) -> dict:
    return read_manifest(tiny_bundle)


@pytest.fixture(scope="module")
def workdir(tiny_bundle, tmp_path_factory) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path_factory.mktemp("fuzz") / "b.edgedepth"))


def _outcome(bundle: Path) -> str:
    try:
        open_bundle(bundle)
    except NAMED as err:
        return f"refused at open: {type(err).__name__}"
    try:
        rt = Runtime(bundle, backend="onnxruntime", threads=1)
    except NAMED as err:
        return f"refused at load: {type(err).__name__}"
    # A bundle that loaded must work: a manifest that fails on every frame is what load must catch.
    result = rt.predict(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    assert np.isfinite(result.depth).all() and (result.depth >= 0).all()
    return "ran"


@fuzz(120)
@given(data=st.data(), action=st.sampled_from(["replace", "replace", "delete", "add"]), value=json_value)
def test_any_manifest_is_refused_with_a_name_or_runs(pristine, workdir, data, action, value):
    manifest = json.loads(json.dumps(pristine))
    path = data.draw(st.sampled_from(list(_leaves(manifest))[1:]), label="path")
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    if action == "replace":
        parent[path[-1]] = value
    elif action == "delete":
        del parent[path[-1]]
    else:
        target = parent[path[-1]]
        if isinstance(target, dict):
            target[data.draw(st.text(max_size=6), label="new key")] = value
        elif isinstance(target, list):
            target.append(value)
        else:
            parent[path[-1]] = [target, value]
    text = json.dumps(manifest, allow_nan=True)
    (workdir / "manifest.json").write_text(text)
    event(_outcome(workdir))


@fuzz(40)
@given(name=st.sampled_from(["coarse.onnx", "refiner.onnx"]), how=st.sampled_from(["flip", "truncate", "empty",
                                                                                      "link", "folder"]),
       where=st.integers(0, 10**9))
def test_any_damaged_file_is_refused_with_a_name(pristine, workdir, tiny_bundle, name, how, where):
    (workdir / "manifest.json").write_text(json.dumps(pristine))
    target = workdir / name
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    data = (tiny_bundle / name).read_bytes()
    try:
        if how == "flip":
            i = where % len(data)
            target.write_bytes(data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1:])
        elif how == "truncate":
            target.write_bytes(data[: where % len(data)])
        elif how == "empty":
            target.write_bytes(b"")
        elif how == "link":
            if not hasattr(os, "symlink"):
                return
            target.symlink_to(tiny_bundle / name)  # identical bytes, but through a link
        else:
            target.mkdir()
        outcome = _outcome(workdir)
        assert outcome.startswith("refused at open"), outcome
        event(outcome)
    finally:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
        target.write_bytes(data)
