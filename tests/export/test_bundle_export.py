"""End to end: tiny models -> bundle (ONNX, Q/DQ INT8, OpenVINO + NNCF, CoreML, fused pipeline),
read back by the runtime's own bundle reader and Runtime; errors before any work."""
from __future__ import annotations

import json
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgedepth.bundle import SCHEMA, open_bundle, sha256_file
from edgedepth.datasets import render_scene
from edgedepth.export.exporter import ExportConfig, check_models, export_bundle
from edgedepth.export.frames import prepare_frames
from edgedepth.tiling import Tiling
from edgedepth.export.parity import ParityError, check_drift, reference_row, score_refiner
from edgedepth.export.pipeline import image_tensor

from ..tiny_models import TinyRefiner

SIZE = (48, 64)
TARGETS = ("onnx", "openvino", "coreml", "tensorrt")


def _cfg(**kw):
    base = dict(targets=TARGETS, calib="procedural:16", heldout="procedural:2", frame_size=SIZE,
                pipeline_size=SIZE)
    return ExportConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def bundle(tiny_models, tmp_path_factory):
    coarse, refiner = tiny_models
    out = tmp_path_factory.mktemp("b") / "tiny.edgedepth"
    return export_bundle(coarse, refiner, {"camera": {"fx_norm": 0.8}}, out, _cfg(), log=lambda _: None)


def test_manifest_schema_checksums_and_parity(bundle):
    b = open_bundle(bundle)  # the runtime's reader verifies schema and every checksum
    m = b.manifest
    assert m["schema"] == SCHEMA and m["camera"]["fx_norm"] == 0.8
    assert m["refiner"]["files"]["onnx"] == {"fp32": "refiner.onnx", "fp16": "refiner.fp16.onnx",
                                             "int8": "refiner.int8.qdq.onnx"}
    assert set(m["refiner"]["files"]["openvino"]) == {"fp32", "fp16", "int8"}
    assert set(m["refiner"]["files"]["coreml"]) == {"fp16", "int8", "palette6"}
    assert [i["name"] for i in m["refiner"]["inputs"]] == ["rgb", "coarse_depth", "guide0"]
    assert m["refiner"]["inputs"][2] == {"name": "guide0", "shape": [-1, 8, 4, 4], "source": "feat0"}
    for rel, digest in m["files"].items():
        assert sha256_file(bundle / rel) == digest
    assert any(rel.startswith("coreml/refiner.fp16.mlpackage/") for rel in m["files"])
    for variant in ("refiner/onnx/int8", "refiner/openvino/int8", "coarse/onnx/fp16", "refiner/openvino/fp16"):
        row = m["parity"][variant]
        assert row["bytes"] > 0 and 0 <= row["absrel_vs_fp32"] < 0.01 and 0 < row["delta1"] <= 1
    assert m["parity"]["refiner/onnx/fp32"]["absrel_vs_fp32"] < 1e-5
    assert "| refiner/onnx/int8 |" in (bundle / "parity.md").read_text()
    assert not list(bundle.parent.glob(".tiny.edgedepth.tmp-*"))  # staging renamed away


def test_runtime_reproduces_the_torch_reference(bundle, tiny_models):
    """The runtime on the exported ONNX == the export layer's torch float32 reference (same crops)."""
    from edgedepth.runtime import Runtime

    coarse, refiner = tiny_models
    sample = render_scene(7, *SIZE, "indoor")
    frame = prepare_frames(coarse, refiner, [sample], Tiling())[0]
    got = Runtime(bundle, backend="onnxruntime", precision="fp32").predict(sample["image"]).depth
    np.testing.assert_allclose(got, frame.reference, rtol=1e-4, atol=1e-4)


def test_fused_pipeline_onnx_matches_modular_runtime(bundle):
    from edgedepth.runtime import Runtime

    m = open_bundle(bundle).manifest
    assert m["pipeline"]["input_size"] == list(SIZE)
    sample = render_scene(11, *SIZE, "street")
    sess = ort.InferenceSession(str(bundle / m["pipeline"]["onnx"]["fp32"]), providers=["CPUExecutionProvider"])
    fused = sess.run(None, {"image": image_tensor(sample["image"])})[0][0, 0]
    modular = Runtime(bundle, backend="onnxruntime", precision="fp32").predict(sample["image"]).depth
    assert fused.shape == modular.shape == SIZE
    np.testing.assert_allclose(fused, modular, rtol=1e-3, atol=1e-3)


def test_coreml_specs(bundle):
    from edgedepth.export.coreml_export import validate_coreml

    m = open_bundle(bundle).manifest
    ins = {"rgb": (4, 3, 16, 16), "coarse_depth": (4, 1, 16, 16), "guide0": (4, 8, 4, 4)}
    ops = {v: validate_coreml(bundle / m["refiner"]["files"]["coreml"][v], ins, ["depth"]).ops
           for v in ("fp16", "int8", "palette6")}
    assert "conv" in ops["fp16"]
    assert "constexpr_affine_dequantize" in ops["int8"] or "constexpr_blockwise_shift_scale" in ops["int8"]
    assert "constexpr_lut_to_dense" in ops["palette6"]
    spec = validate_coreml(bundle / m["pipeline"]["coreml"]["fp16"], {"image": (1, 3, *SIZE)}, ["depth"])
    assert spec.bytes > 0 and spec.specification_version >= 7
    # crops and the blend as static slices, resizes and small matmuls: nothing the Neural Engine cannot run
    assert not spec.ops & {"gather", "gather_nd", "gather_along_axis", "scatter", "scatter_nd", "scatter_along_axis",
                           "range_1d"}, sorted(spec.ops)
    assert {"slice_by_index", "upsample_bilinear", "matmul", "pad"} <= spec.ops
    with pytest.raises(ValueError, match="inputs"):
        validate_coreml(bundle / m["refiner"]["files"]["coreml"]["fp16"], {"rgb": (1, 3, 16, 16)}, ["depth"])


def _hashes(folder):
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_coreml_image_inputs_metadata_and_clean_packages(bundle, tiny_models):
    from edgedepth.backends.coreml import MEAN_KEY, STD_KEY, read_spec

    coarse, refiner = tiny_models
    m = open_bundle(bundle).manifest
    packages = [bundle / m["coarse"]["files"]["coreml"]["fp16"], bundle / m["pipeline"]["coreml"]["fp16"],
                *(bundle / rel for rel in m["refiner"]["files"]["coreml"].values())]
    before = {p: _hashes(p) for p in packages}
    specs = {p.name: read_spec(p) for p in packages}
    assert {p: _hashes(p) for p in packages} == before  # reading the spec writes nothing
    for p in packages:
        assert not (p / "executorch_debug_handle_mapping.json").exists()
        meta = specs[p.name].description.metadata
        assert meta.shortDescription and meta.author and meta.license and meta.versionString.startswith("edgedepth")
        assert meta.userDefined["com.edgedepth.depth_unit"] == "m"
        assert "metres" in specs[p.name].description.output[0].shortDescription
    for name, size in (("coarse.fp16.mlpackage", coarse.input_size), (f"pipeline_{SIZE[1]}x{SIZE[0]}.fp16.mlpackage", SIZE)):
        image = specs[name].description.input[0].type.imageType
        assert (image.height, image.width, image.colorSpace) == (*size, image.RGB)
    # The coarse model's normalisation is recorded for readers that feed normalised arrays.
    user = specs["coarse.fp16.mlpackage"].description.metadata.userDefined
    assert json.loads(user[MEAN_KEY]) == list(coarse.mean) and json.loads(user[STD_KEY]) == list(coarse.std)


def test_coreml_compression_keeps_small_tensors(bundle, tiny_models):
    """Apple's default threshold: only weights of >= 2048 elements are compressed."""
    from edgedepth.backends.coreml import read_spec

    _, refiner = tiny_models
    big = sum(p.numel() >= 2048 for p in refiner.parameters())
    assert 0 < big < len(list(refiner.parameters()))
    m = open_bundle(bundle).manifest
    for variant, op in (("int8", "constexpr_"), ("palette6", "constexpr_lut_to_dense")):
        main = read_spec(bundle / m["refiner"]["files"]["coreml"][variant]).mlProgram.functions["main"]
        ops = [o.type for o in main.block_specializations[main.opset].operations]
        assert sum(t.startswith(op) for t in ops) == big, (variant, ops)


def test_coreml_variants_listed_as_not_scored_off_macos(bundle):
    if sys.platform == "darwin":
        pytest.skip("on macOS the CoreML variants are scored, not listed as skipped")
    m = open_bundle(bundle).manifest
    report = (bundle / "parity.md").read_text()
    for variant in ("refiner/coreml/fp16", "refiner/coreml/int8", "refiner/coreml/palette6", "coarse/coreml/fp16"):
        assert f"- {variant}: Core ML predicts only on macOS" in report
        assert variant not in m["parity"]


def test_int8_drift_beyond_bound_names_the_variant(tiny_models):
    coarse, refiner = tiny_models
    frames = prepare_frames(coarse, refiner, [render_scene(3, *SIZE, "street")], Tiling())
    names = ["rgb", "coarse_depth", "guide0"]

    def biased(feeds):  # a real (badly) perturbed refiner: +20 % depth
        with torch.no_grad():
            return 1.2 * refiner(*[torch.from_numpy(feeds[n]) for n in names]).numpy()

    row = score_refiner("refiner/openvino/int8", biased, frames, "cosine", 1)
    with pytest.raises(ParityError, match="refiner/openvino/int8"):
        check_drift([row], {"refiner": reference_row("refiner", frames)}, 0.02)
    check_drift([row], {"refiner": reference_row("refiner", frames)}, 10.0)  # within a loose bound


# --- bad input: a clear error before any work ---------------------------------------------------

def _nothing_written(tmp_path):
    return not any(tmp_path.iterdir())


@pytest.mark.parametrize("kw, match", [
    ({"targets": ("onnx", "tflite")}, "unknown target"),
    ({"precisions": ("fp32", "int4")}, "unknown precision"),
    ({"calib": []}, "calibration set .* is empty"),
    ({"calib": "procedural:2"}, "INT8 needs at least 64"),
    ({"frame_size": (20, 24)}, "smaller than the refiner's 16x16"),
    ({"calib_method": "entropy"}, "unknown calibration method 'entropy': choose from minmax, percentile"),
])
def test_bad_requests_fail_before_work(tiny_models, tmp_path, kw, match):
    coarse, refiner = tiny_models
    with pytest.raises(ValueError, match=match):
        export_bundle(coarse, refiner, {}, tmp_path / "x.edgedepth", _cfg(**kw), log=lambda _: None)
    assert _nothing_written(tmp_path)


def test_mixed_resolution_calibration_refused(tiny_models, tmp_path):
    coarse, refiner = tiny_models
    frames = [render_scene(0, *SIZE), render_scene(1, 64, 80)]
    with pytest.raises(ValueError, match="resolution is 48x64"):
        export_bundle(coarse, refiner, {}, tmp_path / "x.edgedepth", _cfg(calib=frames), log=lambda _: None)


def test_missing_optional_package_names_the_extra(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "coremltools", None)  # import coremltools now fails
    with pytest.raises(ImportError, match=r"coremltools.*pip install 'edgedepth\[export\]'"):
        export_bundle(*tiny_models, {}, tmp_path / "x.edgedepth", _cfg(), log=lambda _: None)
    assert _nothing_written(tmp_path)


def test_mismatched_models_refused(tiny_models):

    coarse, _ = tiny_models
    with pytest.raises(ValueError, match="guide0 expects 5 channels, coarse feat0 has 8"):
        check_models(coarse, TinyRefiner(guide=(5, 4, 4)))
    with pytest.raises(ValueError, match="no refiner"):
        check_models(coarse, None)


def test_existing_bundle_needs_overwrite(bundle, tiny_models):
    with pytest.raises(FileExistsError, match="overwrite"):
        export_bundle(*tiny_models, {}, bundle, _cfg(), log=lambda _: None)
    assert json.loads((bundle / "manifest.json").read_text())["schema"] == SCHEMA


def test_benchmark_app_lines_time_every_openvino_ir_at_its_shapes(bundle):
    import re
    import shlex
    import shutil
    import subprocess

    import openvino as ov

    m = open_bundle(bundle).manifest
    text = (bundle / "openvino" / "benchmark_app.txt").read_text()
    lines = [shlex.split(line) for line in text.splitlines() if line.startswith("benchmark_app ")]
    irs = {rel: role for role in ("coarse", "refiner") for rel in m[role]["files"]["openvino"].values()}
    assert sorted(args[args.index("-m") + 1] for args in lines) == sorted(irs)  # both models, every precision
    tiles = len(Tiling.from_json(m["tiling"]).grid(*SIZE, m["refiner"]["tile_size"]))
    for args in lines:
        assert args[args.index("-d") + 1] == "CPU" and args[args.index("-hint") + 1] == "latency"
        rel = args[args.index("-m") + 1]
        shapes = {name: [int(d) for d in dims.split(",")]
                  for name, dims in re.findall(r"(\w+)\[([\d,]+)\]", args[args.index("-shape") + 1])}
        model = ov.Core().read_model(str(bundle / rel))
        assert set(shapes) == {p.get_any_name() for p in model.inputs}
        for port in model.inputs:
            want = [tiles if d.is_dynamic else d.get_length() for d in port.get_partial_shape()]
            assert shapes[port.get_any_name()] == want, rel
    tool = shutil.which("benchmark_app")
    if tool is None:
        pytest.skip("benchmark_app (installed with the openvino wheel) is not on PATH")
    refiner_int8 = next(args for args in lines if args[args.index("-m") + 1].endswith("refiner.int8.xml"))
    done = subprocess.run([tool, *refiner_int8[1:], "-niter", "2"], cwd=bundle, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"Latency:", done.stdout)


def test_uint8_coarse_ir_resizes_and_normalises_a_camera_frame_in_the_graph(bundle):
    """openvino/coarse.u8.xml takes a uint8 NHWC frame of any size and gives what the float IR gives
    on the runtime's own crop+resize of it."""
    import openvino as ov

    from edgedepth import tiling

    m = open_bundle(bundle).manifest
    core = ov.Core()
    u8 = core.read_model(str(bundle / "openvino" / "coarse.u8.xml"))
    (port,) = u8.inputs
    assert port.get_element_type() == ov.Type.u8 and port.get_partial_shape().to_string() == "[1,?,?,3]"
    run_u8 = core.compile_model(u8, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    run_f32 = core.compile_model(str(bundle / m["coarse"]["files"]["openvino"]["fp32"]), "CPU",
                                 {"INFERENCE_PRECISION_HINT": "f32"})
    for h, w in ((96, 128), (61, 77)):
        frame = render_scene(7, h, w)["image"]
        x = tiling.crop_resize(frame, np.array([[0.0, 0.0, h, w]]), m["coarse"]["input_size"],
                               mean=m["coarse"]["mean"], std=m["coarse"]["std"])
        got, want = run_u8(frame[None])[0], run_f32(x)[0]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_openvino_int8_quantizes_weighted_layer_inputs_only(bundle):
    """NNCF gets the Q/DQ model's placement: FakeQuantize feeds only convolutions and MatMuls."""
    import openvino as ov

    from edgedepth.export.openvino_export import OV_WEIGHTED_TYPES

    m = open_bundle(bundle).manifest
    model = ov.Core().read_model(str(bundle / m["refiner"]["files"]["openvino"]["int8"]))
    fq = [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert fq, "nothing was quantized"

    def consumers(op):
        for t in op.output(0).get_target_inputs():
            node = t.get_node()
            # weights pass through a Convert on their way to the layer
            yield from (consumers(node) if node.get_type_name() == "Convert" else [node])

    assert {c.get_type_name() for op in fq for c in consumers(op)} <= OV_WEIGHTED_TYPES
