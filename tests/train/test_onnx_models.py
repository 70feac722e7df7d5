"""Every registered refiner and the lite coarse model export to ONNX (TorchScript exporter, opset 17,
static shapes) and run in a real ONNX Runtime session with the same numbers as torch."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from edgedepth.train.models import create_coarse, create_refiner, list_models

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

pytestmark = pytest.mark.usefixtures("torch_single_thread")
TILE = (64, 64)


@pytest.fixture(scope="module")
def coarse():
    torch.manual_seed(0)
    return create_coarse("lite", input_size=(64, 96), width=0.35, decoder_channels=(8, 8, 16, 16)).eval()


def _randomise_zero_heads(model: torch.nn.Module) -> None:
    # The residual heads start at zero (output == coarse); give them weights so the check is not trivial.
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if torch.count_nonzero(p) == 0 and name.split(".")[-1] in {"weight", "bias"} and p.ndim in (1, 4):
            with torch.no_grad():
                p.normal_(0, 0.05)


def _export(model, args, names, outputs, path, dynamic_axes=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17, input_names=names,
                          output_names=outputs, dynamic_axes=dynamic_axes)
    # A tracer warning raised from our own code means a data-dependent branch was baked in.
    ours = [w for w in caught if issubclass(w.category, torch.jit.TracerWarning) and "/train/" in w.filename]
    assert not ours, [f"{w.filename}:{w.lineno}: {w.message}" for w in ours]
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_lite_coarse_exports(coarse, tmp_path):
    x = torch.randn(1, 3, 64, 96)
    names = ["depth"] + [f"feat{k}" for k in range(len(coarse.feature_channels))]
    sess = _export(coarse, (x,), ["image"], names, tmp_path / "coarse.onnx")
    assert [o.name for o in sess.get_outputs()] == names
    got = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        depth, feats = coarse(x)
    for a, b in zip(got, [depth, *feats]):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list_models("refiner"))
def test_refiner_exports_with_named_inputs(name, coarse, tmp_path):
    kw = {} if name == "patchrefiner" else {"width": 0.35, "decoder_width": 0.5}
    r = create_refiner(name, coarse, TILE, **kw).eval()
    _randomise_zero_heads(r)
    torch.manual_seed(2)
    rgb, cd = torch.randn(2, 3, *TILE), 1 + 10 * torch.rand(2, 1, *TILE)
    guide = [torch.randn(2, *s) for s in r.guidance]
    names = ["rgb", "coarse_depth"] + [f"guide{k}" for k in range(len(guide))]
    sess = _export(r, (rgb, cd, *guide), names, ["depth"], tmp_path / "refiner.onnx")
    assert [i.name for i in sess.get_inputs()] == names
    assert [i.shape for i in sess.get_inputs()] == [[2, 3, *TILE], [2, 1, *TILE]] + [[2, *s] for s in r.guidance]
    got = sess.run(["depth"], dict(zip(names, [t.numpy() for t in (rgb, cd, *guide)])))[0]
    with torch.no_grad():
        want = r(rgb, cd, *guide)
    assert not torch.allclose(want, cd)  # the residual is live
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


def test_refiner_exports_with_dynamic_batch(coarse, tmp_path):
    r = create_refiner("prv2-mobile", coarse, TILE, width=0.35, decoder_width=0.5).eval()
    _randomise_zero_heads(r)
    names = ["rgb", "coarse_depth"] + [f"guide{k}" for k in range(len(r.guidance))]
    args = (torch.randn(2, 3, *TILE), torch.rand(2, 1, *TILE), *[torch.randn(2, *s) for s in r.guidance])
    dyn = {n: {0: "batch"} for n in names + ["depth"]}
    sess = _export(r, args, names, ["depth"], tmp_path / "refiner_dyn.onnx", dynamic_axes=dyn)
    for batch in (1, 5):
        torch.manual_seed(batch)
        inputs = (torch.randn(batch, 3, *TILE), 5 * torch.rand(batch, 1, *TILE),
                  *[torch.randn(batch, *s) for s in r.guidance])
        got = sess.run(["depth"], dict(zip(names, [t.numpy() for t in inputs])))[0]
        with torch.no_grad():
            want = r(*inputs).numpy()
        assert got.shape == (batch, 1, *TILE)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
