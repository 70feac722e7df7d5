"""ONNX export, FP16 and Q/DQ INT8 of the tiny refiner/coarse, run for real in ONNX Runtime."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgedepth.export import onnx_export as oe
from edgedepth.export.quantize_qdq import (check_qdq, float_node_names, head_nodes, input_nodes, quantize_int8_qdq,
                                           stem_nodes)


def _feeds(refiner, batch, seed):
    torch.manual_seed(seed)
    return {k: v.numpy() for k, v in zip(oe.refiner_input_names(refiner), oe.refiner_example_inputs(refiner, batch))}


def _run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.fixture(scope="module")
def exported(tiny_models, tmp_path_factory):
    coarse, refiner = tiny_models
    d = tmp_path_factory.mktemp("onnx")
    return {"refiner": oe.export_refiner(refiner, d / "refiner.onnx"), "coarse": oe.export_coarse(coarse, d / "coarse.onnx"),
            "dir": d}


def test_refiner_onnx_names_dynamic_batch_and_matches_torch(tiny_models, exported):
    _, refiner = tiny_models
    inputs, outputs = oe.io_specs(exported["refiner"])
    assert [s.name for s in inputs] == ["rgb", "coarse_depth", "guide0"]
    assert [s.name for s in outputs] == ["depth"]
    assert inputs[0].shape == (-1, 3, 16, 16) and inputs[2].shape == (-1, 8, 4, 4)
    assert onnx.load(str(exported["refiner"])).opset_import[0].version >= 17
    for batch in (1, 5):  # the dynamic tile axis serves any count
        feeds = _feeds(refiner, batch, batch)
        want = refiner(*[torch.from_numpy(v) for v in feeds.values()]).detach().numpy()
        got = _run(exported["refiner"], feeds)[0]
        assert got.shape == (batch, 1, 16, 16)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_coarse_onnx_outputs(tiny_models, exported):
    coarse, _ = tiny_models
    inputs, outputs = oe.io_specs(exported["coarse"])
    assert inputs[0].name == "image" and inputs[0].shape == (1, 3, 24, 32)
    assert [o.name for o in outputs] == ["depth", "feat0"]
    x = torch.randn(1, 3, 24, 32)
    depth, feats = coarse(x)
    got = _run(exported["coarse"], {"image": x.numpy()})
    np.testing.assert_allclose(got[0], depth.detach().numpy(), atol=1e-4)
    np.testing.assert_allclose(got[1], feats[0].detach().numpy(), atol=1e-4)


def test_fp16_variant_is_half_and_close(tiny_models, exported):
    _, refiner = tiny_models
    dst = oe.convert_fp16(exported["refiner"], exported["dir"] / "refiner.fp16.onnx")
    model = onnx.load(str(dst))
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    dtypes = {i.data_type for i in model.graph.initializer if i.name in conv_weights}
    assert dtypes == {onnx.TensorProto.FLOAT16}
    feeds = _feeds(refiner, 3, 7)
    np.testing.assert_allclose(_run(dst, feeds)[0], _run(exported["refiner"], feeds)[0], atol=2e-2, rtol=1e-2)


def test_opset_below_17_refused(tiny_models, tmp_path):
    with pytest.raises(ValueError, match="opset must be >= 17"):
        oe.export_refiner(tiny_models[1], tmp_path / "r.onnx", opset=13)


def test_qdq_int8_symmetric_per_channel_head_float(tiny_models, exported):
    _, refiner = tiny_models
    batches = [_feeds(refiner, 8, s) for s in range(8)]  # 64 tiles
    dst = exported["dir"] / "refiner.int8.qdq.onnx"
    summary = quantize_int8_qdq(exported["refiner"], dst, batches)
    model = onnx.load(str(dst))
    check_qdq(model)  # int8, zero point 0, per-channel conv weights (raises otherwise)
    # enc.2 + fuse; the head and the stem (RGB + ln depth in one tensor) stay float
    assert summary.calib_tiles == 64 and summary.quantized_weights == 2
    assert {"/head/Conv", "/enc/enc.0/Conv", "/Log"} <= set(summary.excluded)
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    for name in ("/head/Conv", "/enc/enc.0/Conv"):
        node = next(n for n in model.graph.node if n.name == name)
        assert all(producer.get(i) != "DequantizeLinear" for i in node.input)  # float weight and input
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.name not in ("/head/Conv", "/enc/enc.0/Conv")]
    assert all(producer[c.input[1]] == "DequantizeLinear" for c in convs)
    # TensorRT placement: Q/DQ feed weighted layers only (no quantized ReLU/Concat/Resize outputs)
    consumer_ops = {n.op_type for n in model.graph.node for i in n.input if producer.get(i) == "DequantizeLinear"}
    assert consumer_ops == {"Conv"}
    feeds = _feeds(refiner, 4, 99)
    fp32, int8 = _run(exported["refiner"], feeds)[0], _run(dst, feeds)[0]
    rel = np.mean(np.abs(int8 - fp32) / fp32)
    assert 0 < rel < 0.01


def test_head_and_input_nodes_found_from_graph(exported):
    model = onnx.load(str(exported["refiner"]))
    heads = head_nodes(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    assert [ops[h] for h in heads].count("Conv") == 1 and "/Add" in heads
    assert "/Log" in input_nodes(model) and all(ops[n] != "Conv" for n in input_nodes(model))


def test_too_few_calibration_tiles_refused(tiny_models, exported, tmp_path):
    batches = [_feeds(tiny_models[1], 8, 0)]
    with pytest.raises(ValueError, match="at least 64 tiles, got 8"):
        quantize_int8_qdq(exported["refiner"], tmp_path / "q.onnx", batches)
    assert not (tmp_path / "q.onnx").exists()


def test_check_qdq_rejects_nonzero_zero_point(tiny_models, exported, tmp_path):
    from onnx import numpy_helper

    batches = [_feeds(tiny_models[1], 8, s) for s in range(8)]
    dst = quantize_int8_qdq(exported["refiner"], tmp_path / "q.onnx", batches).path
    model = onnx.load(str(dst))
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    zp = next(i for i in model.graph.initializer if i.name == q.input[2])
    zp.CopyFrom(numpy_helper.from_array(np.array(3, dtype=np.int8), zp.name))
    with pytest.raises(ValueError, match="zero point must be int8 0"):
        check_qdq(model)


def test_every_residual_head_of_a_prv2_refiner_stays_float(tmp_path):
    """The C2F head's output reaches the graph output only through later convolutions, so walking
    back from the output alone cannot find it; every place a residual meets the coarse depth can."""
    from edgedepth.train.models import create_coarse, create_refiner

    torch.manual_seed(0)
    coarse = create_coarse("lite", input_size=(32, 64), width=0.35, decoder_channels=(8, 8, 16, 16)).eval()
    refiner = create_refiner("prv2-mobile", coarse, (32, 64), width=0.35, decoder_width=0.5).eval()
    for head in refiner.residual_heads():
        torch.nn.init.normal_(head.weight, std=0.05)
    src = oe.export_refiner(refiner, tmp_path / "r.onnx")
    model = onnx.load(str(src))
    # the two heads, then the two convs that read RGB + ln depth: the encoder stem, the full-res branch
    heads = ["/out/Conv", "/c2f_head/c2f_head.1/Conv", "/encoder/stages.0/stages.0.0/Conv", "/full/full.0/Conv"]
    assert set(heads[:2]) <= set(head_nodes(model)) and sorted(stem_nodes(model)) == sorted(heads[2:])
    assert set(heads) <= set(float_node_names(model))
    weighted_float = [n.name for n in model.graph.node if n.op_type == "Conv" and n.name in float_node_names(model)]
    assert sorted(weighted_float) == sorted(heads)  # and no other conv
    feeds = [_feeds(refiner, 8, s) for s in range(8)]
    q = onnx.load(str(quantize_int8_qdq(src, tmp_path / "q.onnx", feeds).path))
    producer = {o: n for n in q.graph.node for o in n.output}
    for node in q.graph.node:
        if node.name in heads:
            assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in node.input), \
                f"{node.name} reads quantized tensors"
    quantized = {n.name for n in q.graph.node
                 if any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input)}
    convs = {n.name for n in q.graph.node if n.op_type == "Conv"}
    ops = {n.name: n.op_type for n in q.graph.node}
    assert {n for n in quantized if ops[n] == "Conv"} == convs - set(heads)  # every other conv is INT8 ...
    assert {ops[n] for n in quantized} <= {"Conv", "Add"}  # ... and besides at most residual adds (TensorRT fuses them)


def _activation_scales(path) -> dict[str, float]:
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def test_percentile_calibration_clips_the_activation_ranges_minmax_takes_whole(tiny_models, exported, tmp_path):
    _, refiner = tiny_models
    batches = [_feeds(refiner, 8, s) for s in range(8)]
    for name in batches[0]:  # one outlier pixel in 64 tiles: minmax spends the INT8 range on it
        batches[0][name][0, :, 0, 0] *= 50
    scales = {}
    for method in ("minmax", "percentile"):
        quantize_int8_qdq(exported["refiner"], tmp_path / f"{method}.onnx", batches, calib_method=method)
        check_qdq(onnx.load(str(tmp_path / f"{method}.onnx")))
        scales[method] = _activation_scales(tmp_path / f"{method}.onnx")
    assert scales["minmax"].keys() == scales["percentile"].keys() and scales["minmax"]
    # percentile drops the 0.001 % largest |x|: never a wider range, and the outlier stops setting it
    assert all(scales["percentile"][k] <= scales["minmax"][k] * (1 + 1e-6) for k in scales["minmax"])
    assert any(scales["percentile"][k] < 0.95 * scales["minmax"][k] for k in scales["minmax"])


def test_unknown_calibration_method_is_named(tiny_models, exported, tmp_path):
    batches = [_feeds(tiny_models[1], 8, s) for s in range(8)]
    with pytest.raises(ValueError, match="calib_method must be one of minmax, percentile, got 'entropy'"):
        quantize_int8_qdq(exported["refiner"], tmp_path / "q.onnx", batches, calib_method="entropy")
    assert not (tmp_path / "q.onnx").exists()
