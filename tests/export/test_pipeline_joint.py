"""The fused pipeline with the runtime's joint bilateral upsampling (the default bundle's): its ONNX
equals the modular runtime on the same frame, and its CoreML graph has no gather or scatter."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgedepth.bundle import open_bundle
from edgedepth.datasets import render_scene
from edgedepth.export.exporter import ExportConfig, export_bundle
from edgedepth.export.pipeline import FusedPipeline, image_tensor
from edgedepth.tiling import Tiling

SIZE = (96, 160)  # a 3x5 grid of the tiny refiner's 16x16 tiles, blended at 40x66 before the upsampling
JOINT = Tiling(rows=4, cols=4, overlap_ratio=0.25, window="cosine", shrink=2.4, upsample="joint_bilateral",
               joint_sigma=0.05)


@pytest.fixture(scope="module")
def bundle(tiny_models, tmp_path_factory):
    coarse, refiner = tiny_models
    out = tmp_path_factory.mktemp("joint") / "joint.edgedepth"
    cfg = ExportConfig(targets=("onnx", "coreml"), precisions=("fp32",), calib="procedural:2",
                       heldout="procedural:1", frame_size=SIZE, tiling=JOINT, pipeline_size=SIZE)
    return export_bundle(coarse, refiner, {"camera": {"fx_norm": 0.8}}, out, cfg, log=lambda _: None)


def test_joint_pipeline_onnx_matches_modular_runtime(bundle):
    from edgedepth.runtime import Runtime

    m = open_bundle(bundle).manifest
    assert m["pipeline"]["upsample"] == "joint_bilateral" and m["tiling"]["upsample"] == "joint_bilateral"
    sess = ort.InferenceSession(str(bundle / m["pipeline"]["onnx"]["fp32"]), providers=["CPUExecutionProvider"])
    for seed, layout in ((11, "street"), (12, "indoor")):
        image = render_scene(seed, *SIZE, layout)["image"]
        fused = sess.run(None, {"image": image_tensor(image)})[0][0, 0]
        joint = Runtime(bundle, backend="onnxruntime", precision="fp32").predict(image).depth
        bilinear = Runtime(bundle, backend="onnxruntime", precision="fp32", upsample="bilinear").predict(image).depth
        assert fused.shape == joint.shape == SIZE
        np.testing.assert_allclose(fused, joint, rtol=1e-4, atol=1e-4)
        # and not the bilinear blend the pipeline made before: the upsampling is in the graph
        assert np.abs(fused - bilinear).max() > 100 * np.abs(fused - joint).max()


def test_joint_pipeline_coreml_has_no_gather(bundle):
    from edgedepth.export.coreml_export import validate_coreml

    m = open_bundle(bundle).manifest
    spec = validate_coreml(bundle / m["pipeline"]["coreml"]["fp16"], {"image": (1, 3, *SIZE)}, ["depth"])
    assert not spec.ops & {"gather", "gather_nd", "gather_along_axis", "scatter", "scatter_nd", "scatter_along_axis",
                           "range_1d"}, sorted(spec.ops)
    assert {"slice_by_index", "matmul", "pad", "select"} <= spec.ops, sorted(spec.ops)


def test_pipeline_is_built_without_snapping(tiny_models, tmp_path):
    coarse, refiner = tiny_models
    snapping = Tiling(rows=4, cols=4, shrink=2.4, upsample="joint_bilateral", snap=0.1)
    with pytest.raises(ValueError, match="snap"):
        FusedPipeline(coarse, refiner, *SIZE, snapping)
    # a bundle that snaps still gets its pipeline, without snapping, and says so
    lines = []
    cfg = ExportConfig(targets=("onnx",), precisions=("fp32",), calib="procedural:2", heldout="procedural:1",
                       frame_size=SIZE, tiling=snapping, pipeline_size=SIZE)
    path = export_bundle(coarse, refiner, {}, tmp_path / "snap.edgedepth", cfg, log=lines.append)
    m = open_bundle(path).manifest
    assert m["tiling"]["snap"] == 0.1 and m["pipeline"]["upsample"] == "joint_bilateral"
    assert any("does not snap" in line for line in lines)


def test_guided_bundle_gets_a_joint_pipeline_and_says_so(tiny_models, tmp_path):
    # float16 graphs cannot hold the guided filter's fit: the pipeline upsamples as the joint
    # bilateral runtime does, its metadata and the export log say so, the bundle keeps "guided"
    coarse, refiner = tiny_models
    import dataclasses

    from edgedepth.runtime import Runtime

    guided = dataclasses.replace(JOINT, upsample="guided")
    lines = []
    cfg = ExportConfig(targets=("onnx",), precisions=("fp32",), calib="procedural:2", heldout="procedural:1",
                       frame_size=SIZE, tiling=guided, pipeline_size=SIZE)
    path = export_bundle(coarse, refiner, {}, tmp_path / "guided.edgedepth", cfg, log=lines.append)
    m = open_bundle(path).manifest
    assert m["tiling"]["upsample"] == "guided" and m["pipeline"]["upsample"] == "joint_bilateral"
    assert any("float16 cannot hold guided" in line for line in lines)
    sess = ort.InferenceSession(str(path / m["pipeline"]["onnx"]["fp32"]), providers=["CPUExecutionProvider"])
    image = render_scene(11, *SIZE, "street")["image"]
    fused = sess.run(None, {"image": image_tensor(image)})[0][0, 0]
    joint = Runtime(path, backend="onnxruntime", precision="fp32", upsample="joint_bilateral").predict(image).depth
    np.testing.assert_allclose(fused, joint, rtol=1e-4, atol=1e-4)
