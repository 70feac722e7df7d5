"""Bundle reading and verification: every refusal names its cause and the file at fault."""
from __future__ import annotations

import json

import pytest

from edgedepth import bundle as bundle_mod
from edgedepth.bundle import BundleError, open_bundle, sha256_file

from .tiny_models import write_manifest


def _manifest(path):
    return json.loads((path / "manifest.json").read_text())


def test_valid_bundle_opens_and_resolves_files(tiny_bundle):
    b = open_bundle(tiny_bundle)
    assert b.name == "tiny"
    assert b.model_file("refiner", "onnx", "fp32") == tiny_bundle / "refiner.onnx"
    assert b.precisions("refiner", "onnx") == ["fp32"]
    assert b.fx_norm == pytest.approx(0.8)
    assert b.file_sha256("coarse.onnx") == sha256_file(tiny_bundle / "coarse.onnx")


def test_missing_precision_or_format_names_what_exists(tiny_bundle):
    b = open_bundle(tiny_bundle)
    with pytest.raises(BundleError, match=r"precision 'int8'.*has: fp32"):
        b.model_file("refiner", "onnx", "int8")
    with pytest.raises(BundleError, match=r"format 'openvino'.*has: onnx"):
        b.model_file("coarse", "openvino", "fp32")


def test_bad_checksum_names_the_file(tiny_bundle_copy):
    target = tiny_bundle_copy / "refiner.onnx"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"checksum mismatch for 'refiner.onnx'"):
        open_bundle(tiny_bundle_copy)
    # Opening without verification is an explicit choice, and then it opens.
    assert open_bundle(tiny_bundle_copy, verify_files=False).name == "tiny"


def test_unknown_schema_is_refused(tiny_bundle_copy):
    m = _manifest(tiny_bundle_copy)
    m["schema"] = "edgedepth.bundle/99"
    write_manifest(tiny_bundle_copy, m)
    with pytest.raises(BundleError, match=r"unknown bundle schema 'edgedepth.bundle/99'"):
        open_bundle(tiny_bundle_copy)


def test_missing_file_names_it(tiny_bundle_copy):
    (tiny_bundle_copy / "coarse.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"'coarse.onnx'.*missing"):
        open_bundle(tiny_bundle_copy)


def test_model_file_without_checksum_is_refused(tiny_bundle_copy):
    m = _manifest(tiny_bundle_copy)
    del m["files"]["refiner.onnx"]
    write_manifest(tiny_bundle_copy, m)
    with pytest.raises(BundleError, match=r"'refiner.onnx' has no sha256"):
        open_bundle(tiny_bundle_copy)


def test_folder_model_needs_checksums_of_its_contents(tiny_bundle_copy):
    pkg = tiny_bundle_copy / "coreml" / "refiner.fp16.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Manifest.json").write_text("{}")
    (pkg / "Data" / "weights.bin").write_bytes(b"\0" * 8)
    m = _manifest(tiny_bundle_copy)
    m["refiner"]["files"]["coreml"] = {"fp16": "coreml/refiner.fp16.mlpackage"}
    m["files"]["coreml/refiner.fp16.mlpackage/Manifest.json"] = sha256_file(pkg / "Manifest.json")
    write_manifest(tiny_bundle_copy, m)
    with pytest.raises(BundleError, match=r"Data/weights.bin' has no sha256"):
        open_bundle(tiny_bundle_copy)
    m["files"]["coreml/refiner.fp16.mlpackage/Data/weights.bin"] = sha256_file(pkg / "Data" / "weights.bin")
    write_manifest(tiny_bundle_copy, m)
    assert open_bundle(tiny_bundle_copy).precisions("refiner", "coreml") == ["fp16"]


def test_paths_may_not_leave_the_bundle(tiny_bundle_copy):
    m = _manifest(tiny_bundle_copy)
    m["refiner"]["files"]["onnx"]["fp32"] = "../elsewhere.onnx"
    write_manifest(tiny_bundle_copy, m)
    with pytest.raises(BundleError, match=r"'\.\./elsewhere.onnx' must be relative and stay inside"):
        open_bundle(tiny_bundle_copy)


@pytest.mark.parametrize("section,key", [("coarse", "mean"), ("refiner", "tile_size"), ("tiling", "window"),
                                         ("camera", "fx_norm")])
def test_missing_manifest_key_is_named(tiny_bundle_copy, section, key):
    m = _manifest(tiny_bundle_copy)
    del m[section][key]
    write_manifest(tiny_bundle_copy, m)
    with pytest.raises(BundleError, match=rf"missing key {section}\.{key}"):
        open_bundle(tiny_bundle_copy)


def test_broken_json_and_missing_paths(tiny_bundle_copy, tmp_path):
    (tiny_bundle_copy / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        open_bundle(tiny_bundle_copy)
    (tiny_bundle_copy / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json is missing"):
        open_bundle(tiny_bundle_copy)
    with pytest.raises(FileNotFoundError, match="nowhere.edgedepth not found"):
        open_bundle(tmp_path / "nowhere.edgedepth")


def test_missing_default_bundle_names_its_path(monkeypatch, tmp_path):
    missing = tmp_path / "assets" / "default.edgedepth"
    monkeypatch.setattr(bundle_mod, "DEFAULT_BUNDLE", missing)
    with pytest.raises(FileNotFoundError, match=r"default bundle .*default.edgedepth is missing"):
        open_bundle(None)
