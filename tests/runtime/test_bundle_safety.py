"""A bundle is data from outside: every value is validated at load, every file it names stays inside
it without links, every file a model loads is checksummed, and models load from the bytes that were
hashed. Each test here is a way a bundle used to get past the reader."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgedepth import Runtime
from edgedepth.backends.onnxruntime import ONNXRuntimeBackend
from edgedepth.bundle import BundleError, open_bundle, sha256_file

from .tiny_models import export_tiny_onnx, random_image, read_manifest, write_manifest


def _set(manifest: dict, dotted: str, value) -> dict:
    node = manifest
    *path, last = dotted.split(".")
    for key in path:
        node = node[key]
    node[last] = value
    return manifest


# --- one validation layer, at load -----------------------------------------------------------------

@pytest.mark.parametrize("key, value, match", [
    ("tiling.rows", 0, r"tiling\.rows must be in \[1, 64\], got 0"),
    ("tiling.cols", 2.5, r"tiling\.cols must be an integer"),
    ("tiling.overlap_ratio", -0.5, r"tiling\.overlap_ratio must be in \[0, 0\.99\]"),
    ("tiling.window", "bogus", r"tiling\.window must be one of uniform, linear, cosine, gaussian"),
    ("camera.fx_norm", 0, r"camera\.fx_norm must be in \[0\.05, 100\]"),
    ("camera.fx_norm", 1e-300, r"camera\.fx_norm must be in"),
    ("camera.fx_norm", -0.8, r"camera\.fx_norm must be in"),
    ("coarse.std", [0, 0, 0], r"coarse\.std\[0\] must be in \[0\.001, 1000\]"),
    ("coarse.std", [1e-300] * 3, r"coarse\.std\[0\] must be in"),
    ("coarse.mean", [0.5, float("nan"), 0.5], r"coarse\.mean\[1\] must be a finite number"),
    ("coarse.input_size", [30000, 30000], r"coarse\.input_size\[0\] must be in \[1, 4096\]"),
    ("refiner.batch", 1e9, r"refiner\.batch must be an integer"),
    ("refiner.batch", 10**9, r"refiner\.batch must be in \[1, 1024\]"),
    ("refiner.tile_size", [0, 24], r"refiner\.tile_size\[0\] must be in"),
    ("refiner.inputs", [{"name": "rgb"}], r"refiner\.inputs must include 'coarse_depth'"),
    ("coarse.outputs", [{"name": "feat0", "channels": 8}], r"coarse\.outputs must include 'depth'"),
    ("depth", {"valid_max": -1}, r"depth\.valid_max must be in \(0"),
    ("files", {"coarse.onnx": "not a sha"}, r"files\['coarse\.onnx'\] must be a lowercase hex sha256"),
])
def test_bad_manifest_values_are_refused_at_load(tiny_bundle_copy, key, value, match):
    write_manifest(tiny_bundle_copy, _set(read_manifest(tiny_bundle_copy), key, value))
    with pytest.raises(BundleError, match=match):
        open_bundle(tiny_bundle_copy)


def test_declared_shapes_must_agree_with_each_other(tiny_bundle_copy):
    m = read_manifest(tiny_bundle_copy)
    m["refiner"]["inputs"][2]["shape"] = [-1, 5, 6, 6]  # guide0 from feat0, which has 8 channels
    write_manifest(tiny_bundle_copy, m)
    with pytest.raises(BundleError, match=r"refiner\.inputs\[guide0\]\.shape must be \[None, 8, None, None\]"):
        open_bundle(tiny_bundle_copy)


def test_manifest_that_disagrees_with_the_models_is_refused_at_load(tiny_bundle_copy):
    m = read_manifest(tiny_bundle_copy)
    m["refiner"]["tile_size"] = [16, 28]  # consistent in itself, but the models work on 24x24 tiles
    for spec in m["refiner"]["inputs"][:2] + m["refiner"]["outputs"]:
        spec["shape"][2:] = [16, 28]
    write_manifest(tiny_bundle_copy, m)
    with pytest.raises(ValueError, match=r"refiner model refiner\.onnx input rgb has shape \[None, 3, 24, 24\] "
                                         r"but the manifest declares \[-1, 3, 16, 28\]"):
        Runtime(tiny_bundle_copy, backend="onnxruntime")


def test_refiner_emitting_other_tiles_than_declared_is_an_error(tiny_bundle_copy):
    # A refiner with dynamic sides that returns 12x12 tiles for the declared 24x24: loading cannot
    # tell (a static 12x12 output is refused at load), the first frame must (it used to be stitched).
    torch = pytest.importorskip("torch")

    class HalfTiles(torch.nn.Module):
        def forward(self, rgb, coarse_depth, guide0):
            return coarse_depth[:, :, ::2, ::2] + 0 * rgb.mean() + 0 * guide0.mean()

    path = tiny_bundle_copy / "refiner.onnx"
    args = (torch.randn(2, 3, 24, 24), torch.rand(2, 1, 24, 24), torch.randn(2, 8, 6, 6))
    torch.onnx.export(HalfTiles(), args, str(path), input_names=["rgb", "coarse_depth", "guide0"],
                      output_names=["depth"], opset_version=17, dynamo=False,
                      dynamic_axes={"rgb": {0: "N", 2: "H", 3: "W"}, "coarse_depth": {0: "N", 2: "H", 3: "W"},
                                    "guide0": {0: "N"}, "depth": {0: "N", 2: "h", 3: "w"}})
    m = read_manifest(tiny_bundle_copy)
    m["files"]["refiner.onnx"] = sha256_file(path)
    write_manifest(tiny_bundle_copy, m)
    rt = Runtime(tiny_bundle_copy, backend="onnxruntime")
    with pytest.raises(ValueError, match=r"refiner model refiner\.onnx returned tiles of shape \(4, 1, 12, 12\)"):
        rt.predict(random_image())


# --- one safe-path rule ----------------------------------------------------------------------------

@pytest.mark.parametrize("rel", ["../x.onnx", "..\\..\\x.onnx", "C:\\evil.onnx", "C:evil.onnx", "/etc/passwd",
                                 "\\\\server\\share\\m.onnx", "a//b.onnx", "./a.onnx", "a\0.onnx"])
def test_paths_that_leave_the_bundle_on_any_os_are_refused(tiny_bundle_copy, rel):
    from edgedepth.bundle import safe_parts

    with pytest.raises(BundleError, match="must be relative and stay inside the bundle"):
        safe_parts(rel)
    m = read_manifest(tiny_bundle_copy)
    m["refiner"]["files"]["onnx"]["fp32"] = rel
    write_manifest(tiny_bundle_copy, m)
    with pytest.raises(BundleError, match="must be relative and stay inside the bundle"):
        open_bundle(tiny_bundle_copy)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_model_file_that_is_a_link_is_refused(tiny_bundle_copy, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.move(tiny_bundle_copy / "refiner.onnx", outside)
    (tiny_bundle_copy / "refiner.onnx").symlink_to(outside)  # same bytes: the checksum alone would pass
    with pytest.raises(BundleError, match=r"'refiner\.onnx' is or passes through a symbolic link"):
        open_bundle(tiny_bundle_copy)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_folder_that_is_a_link_is_refused(tiny_bundle_copy, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    shutil.move(tiny_bundle_copy / "refiner.onnx", tmp_path / "elsewhere" / "refiner.onnx")
    (tiny_bundle_copy / "models").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    m = read_manifest(tiny_bundle_copy)
    m["refiner"]["files"]["onnx"]["fp32"] = "models/refiner.onnx"
    m["files"]["models/refiner.onnx"] = m["files"].pop("refiner.onnx")
    write_manifest(tiny_bundle_copy, m)
    with pytest.raises(BundleError, match=r"'models/refiner\.onnx' is or passes through a symbolic link"):
        open_bundle(tiny_bundle_copy)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_manifest_that_is_a_link_is_refused(tiny_bundle_copy, tmp_path):
    shutil.move(tiny_bundle_copy / "manifest.json", tmp_path / "manifest.json")
    (tiny_bundle_copy / "manifest.json").symlink_to(tmp_path / "manifest.json")
    with pytest.raises(BundleError, match="symbolic link"):
        open_bundle(tiny_bundle_copy)


# --- every file a model loads is checksummed -----------------------------------------------------

def test_onnx_external_data_is_refused(tiny_bundle_copy):
    # ONNX Runtime, OpenVINO and TensorRT open external data files themselves (ONNX Runtime 1.19 even
    # outside the model's folder): the bundle reader refuses such models, listed or not.
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tiny_bundle_copy / "refiner.onnx"))
    onnx.save_model(model, str(tiny_bundle_copy / "refiner.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="refiner.weights", size_threshold=0)
    m = read_manifest(tiny_bundle_copy)
    m["files"]["refiner.onnx"] = sha256_file(tiny_bundle_copy / "refiner.onnx")
    m["files"]["refiner.weights"] = sha256_file(tiny_bundle_copy / "refiner.weights")
    write_manifest(tiny_bundle_copy, m)
    with pytest.raises(BundleError, match=r"'refiner\.onnx' keeps weights in other files \(refiner\.weights\)"):
        open_bundle(tiny_bundle_copy)


def test_openvino_weights_need_a_checksum(tiny_bundle_copy):
    ov = pytest.importorskip("openvino")
    xml = tiny_bundle_copy / "openvino" / "refiner.xml"
    ov.save_model(ov.Core().read_model(str(tiny_bundle_copy / "refiner.onnx")), str(xml))
    m = read_manifest(tiny_bundle_copy)
    m["refiner"]["files"]["openvino"] = {"fp32": "openvino/refiner.xml"}
    m["files"]["openvino/refiner.xml"] = sha256_file(xml)  # the .bin the .xml loads is not listed
    write_manifest(tiny_bundle_copy, m)
    with pytest.raises(BundleError, match=r"model file 'openvino/refiner\.bin' has no sha256"):
        open_bundle(tiny_bundle_copy)
    m["files"]["openvino/refiner.bin"] = sha256_file(xml.with_suffix(".bin"))
    write_manifest(tiny_bundle_copy, m)
    rt = Runtime(tiny_bundle_copy, backend="openvino", device="cpu", cache_dir=tiny_bundle_copy.parent / "ov")
    ort = Runtime(tiny_bundle_copy, backend="onnxruntime")
    np.testing.assert_allclose(rt.predict(random_image()).depth, ort.predict(random_image()).depth, rtol=1e-4, atol=1e-4)


# --- models load from the bytes that were hashed ---------------------------------------------------

def _swap_model(bundle: Path, tmp_path: Path) -> None:
    """Replace refiner.onnx by another valid model of the same I/O (other weights), keeping its name."""
    other = export_tiny_onnx(tmp_path / "other", seed=7)[1]
    shutil.copyfile(other, bundle / "refiner.onnx")


def test_a_model_swapped_after_verification_is_caught(tiny_bundle_copy, tmp_path, monkeypatch):
    import edgedepth.runtime as runtime_mod

    def open_then_swap(path, **kw):  # the attacker's moment: right after the checksums passed
        bundle = open_bundle(path, **kw)
        _swap_model(tiny_bundle_copy, tmp_path)
        return bundle

    monkeypatch.setattr(runtime_mod, "open_bundle", open_then_swap)
    with pytest.raises(BundleError, match=r"checksum mismatch for 'refiner\.onnx'"):
        Runtime(tiny_bundle_copy, backend="onnxruntime")


def test_the_backend_runs_the_bytes_that_were_hashed(tiny_bundle_copy, tmp_path, monkeypatch):
    expected = Runtime(tiny_bundle_copy, backend="onnxruntime").predict(random_image()).depth
    load = ONNXRuntimeBackend._load

    def swap_then_load(self):  # the file changes after it was read and hashed, before the session opens
        if self.role == "refiner":
            _swap_model(tiny_bundle_copy, tmp_path)
        load(self)

    monkeypatch.setattr(ONNXRuntimeBackend, "_load", swap_then_load)
    got = Runtime(tiny_bundle_copy, backend="onnxruntime").predict(random_image()).depth
    np.testing.assert_array_equal(got, expected)


# --- the torch checkpoint's model.json -------------------------------------------------------------

@pytest.fixture
def torch_bundle(exported_bundle, tmp_path) -> Path:
    return Path(shutil.copytree(exported_bundle, tmp_path / "t.edgedepth"))


def _rewrite_meta(bundle: Path, change) -> None:
    meta_file = bundle / "torch" / "model.json"
    meta = json.loads(meta_file.read_text())
    change(meta)
    meta_file.write_text(json.dumps(meta))
    m = read_manifest(bundle)
    m["files"]["torch/model.json"] = sha256_file(meta_file)
    write_manifest(bundle, m)


def test_torch_model_json_needs_a_checksum(torch_bundle):
    m = read_manifest(torch_bundle)
    del m["files"]["torch/model.json"]
    write_manifest(torch_bundle, m)
    with pytest.raises(BundleError, match=r"model file 'torch/model\.json' has no sha256"):
        open_bundle(torch_bundle)


@pytest.mark.parametrize("role, key, value, match", [
    ("refiner", "pretrained", "/etc/passwd", r"refiner\.kwargs\.pretrained = '/etc/passwd' would load files"),
    ("coarse", "encoder", "../../elsewhere", r"coarse\.kwargs\.encoder = '\.\./\.\./elsewhere' names a path"),
    ("coarse", "width", 1e6, r"coarse\.kwargs\.width = 1000000\.0 is out of range"),
    ("coarse", "input_size", [30000, 30000], r"coarse\.kwargs\.input_size = \[30000, 30000\] is out of range"),
])
def test_torch_model_json_may_not_point_outside_or_ask_for_huge_models(torch_bundle, role, key, value, match):
    pytest.importorskip("torch")
    _rewrite_meta(torch_bundle, lambda meta: meta[role]["kwargs"].__setitem__(key, value))
    with pytest.raises(ValueError, match=match):
        Runtime(torch_bundle, backend="torch", device="cpu")
