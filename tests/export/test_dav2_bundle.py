"""Depth Anything V2 end to end (tiny, random weights): a refiner trained against the frozen ViT,
exported by one call (ONNX FP32/FP16/INT8 Q/DQ, OpenVINO FP32/FP16/INT8 with NNCF's transformer
scheme), run by Runtime and compared with the torch pipeline; the ViT's FP16/INT8 graphs checked."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgedepth import Runtime
from edgedepth.bundle import open_bundle
from edgedepth.datasets import render_scene
from edgedepth.export.exporter import ExportConfig, export_checkpoint
from edgedepth.export.quantize_qdq import WEIGHTED_OPS, activation_matmuls
from edgedepth.tiling import Tiling
from edgedepth.train.checkpoint import load_models
from edgedepth.train.config import load_config
from edgedepth.train.pipeline import refine_frame
from edgedepth.train.trainer import Trainer

CONFIG = Path(__file__).parents[1] / "train" / "configs" / "tiny-dav2-refiner.yaml"
SIZE = (84, 84)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dav2")
    cfg = load_config(CONFIG, [f"train.out_dir={tmp / 'run'}"])
    Trainer(cfg, resume="never").fit()
    return tmp / "run" / "final"


@pytest.fixture(scope="module")
def bundle(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "dav2.edgedepth"
    cfg = ExportConfig(targets=("onnx", "openvino"), calib="procedural:8", heldout="procedural:2", calib_tiles=16)
    return export_checkpoint(run, out, cfg, log=lambda _: None)


def test_the_refiner_trained_against_the_frozen_vit(run):
    coarse, refiner, meta = load_models(run)
    assert meta["coarse"]["name"] == "depth-anything-v2" and refiner is not None
    assert [c for c, _, _ in refiner.guidance] == [16] * 4  # the four DPT fusion maps
    # the coarse model is the frozen one the run started from, not retrained
    fresh = load_config(CONFIG)
    from edgedepth.train.models import create_coarse

    torch.manual_seed(fresh.train.seed)
    init = create_coarse(fresh.model.coarse, **fresh.model.coarse_kwargs)
    assert all(torch.equal(a, b) for a, b in zip(coarse.state_dict().values(), init.state_dict().values()))


def test_bundle_holds_every_precision_of_both_models(bundle):
    b = open_bundle(bundle)
    for role in ("coarse", "refiner"):
        assert sorted(b.precisions(role, "onnx")) == ["fp16", "fp32", "int8"]
        assert sorted(b.precisions(role, "openvino")) == ["fp16", "fp32", "int8"]
    assert b.manifest["coarse"]["input_size"] == [42, 56]
    assert [o["stride"] for o in b.manifest["coarse"]["outputs"][1:]] == [2, 4, 7, 14]
    parity = b.manifest["parity"]
    assert {"coarse/onnx/int8", "coarse/openvino/int8", "coarse/onnx/fp16"} <= set(parity)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-4), ("fp16", 2e-2), ("int8", 1e-1)])
def test_runtime_agrees_with_torch(bundle, run, backend, precision, tol):
    coarse, refiner, meta = load_models(run)
    tiling = Tiling.from_json(open_bundle(bundle).tiling)
    worst = 0.0
    for seed in (900, 901):
        image = render_scene(seed, *SIZE)["image"]
        want = refine_frame(coarse.eval(), refiner.eval(), image, tiling,
                            fit=open_bundle(bundle).coarse.get("fit", "squeeze")).depth
        got = Runtime(bundle, backend=backend, precision=precision, threads=1).predict(image).depth
        worst = max(worst, float(np.mean(np.abs(got - want) / want)))
    assert worst < tol, f"{backend}/{precision}: mean relative difference {worst:.2e}"


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def test_int8_vit_quantizes_weighted_layers_only(bundle):
    b = open_bundle(bundle)
    q = onnx.load(str(b.model_file("coarse", "onnx", "int8")))
    prod = _producers(q)
    inits = {i.name for i in q.graph.initializer}
    readers = [n for n in q.graph.node if any(prod.get(i) is not None and prod[i].op_type == "DequantizeLinear"
                                               and prod[i].input[0] not in inits for i in n.input)]
    assert readers, "no activation was quantized"
    assert {n.op_type for n in readers} <= set(WEIGHTED_OPS)
    attention = set(activation_matmuls(q))
    assert len(attention) == 8  # Q·Kᵀ and softmax·V of 4 blocks
    assert not attention & {n.name for n in readers}
    float_convs = [n for n in q.graph.node if "patch_embed" in n.name or "output_conv2.2" in n.name]
    assert float_convs and not {n.name for n in float_convs} & {n.name for n in readers}


def test_fp16_vit_keeps_layernorm_and_softmax_in_float32(bundle):
    b = open_bundle(bundle)
    half = onnx.load(str(b.model_file("coarse", "onnx", "fp16")))
    types = {v.name: v.type.tensor_type.elem_type for v in [*half.graph.value_info, *half.graph.input]}
    types.update({i.name: i.data_type for i in half.graph.initializer})
    prod = _producers(half)

    def dtype(name):
        node = prod.get(name)
        if node is not None and node.op_type == "Cast":
            return next(a.i for a in node.attribute if a.name == "to")
        return types.get(name)

    kept = [n for n in half.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    # one softmax per block; LayerNorms: norm1/norm2 per block and the final norm per tapped block,
    # minus those onnxsim merges (equal weights on the same input, as in a fresh model)
    assert sum(n.op_type == "Softmax" for n in kept) == 4 and sum(n.op_type == "LayerNormalization" for n in kept) >= 8
    assert all(dtype(n.input[0]) == onnx.TensorProto.FLOAT for n in kept)
    convs = [n for n in half.graph.node if n.op_type == "Conv"]
    assert any(dtype(n.input[1]) == onnx.TensorProto.FLOAT16 for n in convs)  # the rest is half


def test_coreml_fp16_converts_the_vit(run, tmp_path):
    from edgedepth.backends.coreml import read_spec

    cfg = ExportConfig(targets=("coreml",), precisions=("fp16",), heldout="procedural:1")
    out = export_checkpoint(run, tmp_path / "dav2-coreml.edgedepth", cfg, log=lambda _: None)
    spec = read_spec(out / open_bundle(out).manifest["coarse"]["files"]["coreml"]["fp16"])
    image = spec.description.input[0].type.imageType
    assert (image.height, image.width) == (42, 56)
    ops = {op.type for block in (f.block_specializations[next(iter(f.block_specializations))]
                                 for f in spec.mlProgram.functions.values()) for op in block.operations}
    assert {"layer_norm", "softmax", "matmul"} <= ops, sorted(ops)
