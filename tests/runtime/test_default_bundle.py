"""The shipped assets: the default bundle verifies, the sample is the scene scripts/make_default.sh
renders, and Runtime() with no arguments gives metric depth on it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgedepth import Runtime
from edgedepth.bundle import DEFAULT_BUNDLE, open_bundle
from edgedepth.datasets import render_scene
from edgedepth.depth_io import read_image
from edgedepth.metrics import compute_metrics

SAMPLE = Path(__file__).resolve().parents[2] / "edgedepth" / "assets" / "sample.png"
SAMPLE_SEED = 900004  # scripts/make_default.sh


@pytest.fixture(scope="module")
def scene():
    return render_scene(SAMPLE_SEED, 1080, 1920, layout="street")


def test_default_bundle_verifies_and_is_small():
    bundle = open_bundle(None)  # checks schema, every file's sha256
    assert bundle.path == DEFAULT_BUNDLE
    assets = sum(p.stat().st_size for p in DEFAULT_BUNDLE.parent.rglob("*") if p.is_file())
    assert assets <= 20 * 2**20, f"edgedepth/assets is {assets / 2**20:.1f} MiB, over the 20 MiB the repository allows"
    assert {"fp32", "int8"} <= set(bundle.precisions("refiner", "onnx"))


def test_sample_is_the_scripted_scene(scene):
    np.testing.assert_array_equal(read_image(SAMPLE), scene["image"])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_default_runtime_gives_metric_depth_on_the_sample(scene, precision):
    result = Runtime(precision=precision).predict(SAMPLE)
    assert result.depth.shape == (1080, 1920) and result.depth.dtype == np.float32
    m = compute_metrics(result.depth, scene["depth"])
    # Measured at export: AbsRel 0.164, delta1 0.76 (a minutes-trained model); a relative-depth or
    # broken pipeline lands far outside these bounds.
    assert m["abs_rel"] < 0.3 and m["delta1"] > 0.6, m


@pytest.fixture(scope="module")
def fp32_depth():
    return Runtime(backend="onnxruntime", precision="fp32").predict(SAMPLE).depth


@pytest.mark.parametrize("backend, precision", [("onnxruntime", "fp16"), ("onnxruntime", "int8"),
                                                ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "int8")])
def test_every_backend_and_precision_runs_the_default_bundle(fp32_depth, backend, precision):
    # OpenVINO compiles the bundle's ONNX files; an FP16 one once lost its declared input names.
    pytest.importorskip(backend)
    depth = Runtime(backend=backend, precision=precision).predict(SAMPLE).depth
    assert np.mean(np.abs(depth - fp32_depth) / np.maximum(fp32_depth, 1e-3)) < 0.03


COREML_PIPELINE = DEFAULT_BUNDLE.parent / "default_1920x1080.mlpackage"


def test_fused_coreml_default_is_shipped_beside_the_bundle():
    pytest.importorskip("coremltools", reason="coremltools reads the CoreML spec (the [export] extra)")
    from edgedepth.export.coreml_export import validate_coreml

    spec = validate_coreml(COREML_PIPELINE, {"image": (1, 3, 1080, 1920)}, ["depth"])
    assert spec.ops  # a real ML program, not an empty shell
    size = sum(f.stat().st_size for f in COREML_PIPELINE.rglob("*") if f.is_file())
    assert size < 8 * 2**20, f"the fused CoreML default is {size / 2**20:.1f} MiB"


def test_fused_coreml_default_is_made_for_apps():
    """An RGB image input (a CVPixelBuffer feeds it), metadata, and no exporter debug files."""
    pytest.importorskip("coremltools", reason="coremltools reads the CoreML spec (the [export] extra)")
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString((COREML_PIPELINE / "Data" / "com.apple.CoreML" / "model.mlmodel").read_bytes())
    (image,) = spec.description.input
    assert image.type.WhichOneof("Type") == "imageType"
    assert Model_pb2.ImageFeatureType.ColorSpace.Name(image.type.imageType.colorSpace) == "RGB"
    assert (image.type.imageType.height, image.type.imageType.width) == (1080, 1920)
    assert "metres" in spec.description.output[0].shortDescription
    assert spec.description.metadata.userDefined["com.edgedepth.depth_unit"] == "m"
    assert "1920x1080" in spec.description.metadata.shortDescription
    # it assembles the frame as the bundle's runtime does, with the joint upsampling where the bundle
    # has the guided filter (float16 cannot hold its fit: export/pipeline.py)
    tiling = json.loads((DEFAULT_BUNDLE / "manifest.json").read_text())["tiling"]
    assert tiling["upsample"] == "guided"
    assert spec.description.metadata.userDefined["com.edgedepth.upsample"] == "joint_bilateral"
    assert not list(COREML_PIPELINE.rglob("*debug*"))
    main = spec.mlProgram.functions["main"]
    ops = {op.type for op in main.block_specializations[main.opset].operations}
    assert "conv" in ops and not ops & {"gather", "scatter", "gather_nd", "scatter_nd"}  # all of it for the ANE


@pytest.mark.skipif(__import__("sys").platform != "darwin", reason="CoreML predicts on macOS only")
def test_fused_coreml_default_matches_the_runtime_on_the_sample(scene):
    import coremltools as ct

    from PIL import Image

    model = ct.models.MLModel(str(COREML_PIPELINE))
    depth = model.predict({"image": Image.fromarray(read_image(SAMPLE))})["depth"][0, 0]
    ref = Runtime(backend="onnxruntime").predict(read_image(SAMPLE)).depth
    assert np.mean(np.abs(depth - ref) / np.maximum(ref, 1e-3)) < 0.03


def test_openvino_int8_runs_nncfs_ir_within_two_percent_of_fp32(scene):
    # The Q/DQ ONNX is TensorRT's; on OpenVINO it cost the default +5 % AbsRel on held-out frames, so
    # the bundle carries NNCF's INT8 refiner as IR, and the runtime must pick it.
    pytest.importorskip("openvino")
    rt = Runtime(backend="openvino", precision="int8")
    assert rt.refiner.path.name == "refiner.int8.xml"
    fp32 = compute_metrics(Runtime(backend="openvino", precision="fp32").predict(SAMPLE).depth, scene["depth"])
    int8 = compute_metrics(rt.predict(SAMPLE).depth, scene["depth"])
    assert int8["abs_rel"] <= 1.02 * fp32["abs_rel"], (int8["abs_rel"], fp32["abs_rel"])


def test_default_bundle_upsamples_guided_by_the_image(scene, fp32_depth):
    # The shipped manifest asks for the guided-filter upsampling; on the sample it puts depth edges
    # on the image's edges, which the edge band of the ground truth measures, better than the joint
    # bilateral upsampling and bilinear stitching of the same refined tiles.
    from edgedepth import metrics as M

    rt = Runtime(backend="onnxruntime", precision="fp32")
    assert rt.tiling.upsample == "guided"
    bilinear = Runtime(backend="onnxruntime", precision="fp32", upsample="bilinear").predict(SAMPLE).depth
    joint = Runtime(backend="onnxruntime", precision="fp32", upsample="joint_bilateral").predict(SAMPLE).depth
    gt = scene["depth"]
    valid = (gt > 0) & (gt <= 80)
    band = M.dilate(M.depth_edges(gt, valid), 2) & valid

    def edge_absrel(depth):
        return float(np.mean(np.abs(depth[band] - gt[band]) / gt[band]))

    guided, by_joint, flat = edge_absrel(fp32_depth), edge_absrel(joint), edge_absrel(bilinear)
    assert guided < 0.97 * by_joint and by_joint < 0.99 * flat, (guided, by_joint, flat)  # 0.205, 0.220, 0.225
