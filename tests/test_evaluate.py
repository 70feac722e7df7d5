"""The evaluation loop and `edgedepth eval`: predictions folder, bundle and checkpoint paths."""
import json

import numpy as np
import pytest

from edgedepth.cli import main as cli_main
from edgedepth.datasets import iter_scenes, open_dataset, write_dataset
from edgedepth.evaluate import checkpoint_predictor, evaluate, folder_predictor


@pytest.fixture(scope="module")
def indoor_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("indoor")
    write_dataset(root, iter_scenes(11, 24, 32, "indoor", count=3), depth_format="npy", progress=False)
    return root


def test_evaluate_perfect_and_doubled(indoor_set, tmp_path):
    ds = open_dataset("folder", indoor_set)
    perfect = evaluate(lambda s: s["depth"], ds, tmp_path / "perfect", max_png=2, progress=False)
    m = perfect["metrics"]
    assert perfect["count"] == 3 and m["delta1"] == 1.0 and m["abs_rel"] == 0.0 and m["rmse"] == 0.0
    # indoor depth < 80 m, so 2x survives the clamp: AbsRel = |2g - g| / g = 1, no pixel within 1.25
    doubled = evaluate(lambda s: 2 * s["depth"], ds, None, progress=False)["metrics"]
    assert doubled["abs_rel"] == pytest.approx(1.0) and doubled["delta1"] == 0.0
    assert doubled["silog"] == pytest.approx(0.0, abs=1e-3)
    aligned = evaluate(lambda s: 2 * s["depth"], ds, None, align_mode="scale", progress=False)["metrics"]
    assert aligned["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    saved = json.loads((tmp_path / "perfect" / "metrics.json").read_text())
    assert saved["metrics"]["delta1"] == 1.0 and len(saved["per_sample"]) == 3
    assert "| delta1 |" in (tmp_path / "perfect" / "metrics.md").read_text()
    pngs = sorted(p.name for p in (tmp_path / "perfect" / "png").iterdir())
    assert len(pngs) == 6 and all(n.endswith(("_depth.png", "_error.png", "_edges.png")) for n in pngs)


def test_evaluate_errors(indoor_set, tmp_path):
    ds = open_dataset("folder", indoor_set)
    with pytest.raises(ValueError, match="shape"):
        evaluate(lambda s: np.ones((2, 3, 4), np.float32), ds, None, progress=False)
    with pytest.raises(ValueError, match="at least one"):
        evaluate(lambda s: s["depth"], ds, None, limit=0, progress=False)
    with pytest.raises(FileNotFoundError, match="prediction folder"):
        folder_predictor(tmp_path / "absent")
    predict = folder_predictor(tmp_path)
    with pytest.raises(FileNotFoundError, match=ds[0]["name"]):
        predict(ds[0])


def test_eval_cli_on_prediction_folder(indoor_set, tmp_path, capsys):
    ds = open_dataset("folder", indoor_set)
    preds = tmp_path / "pred"
    preds.mkdir()
    for s in ds:  # half-resolution predictions, 10 % too far: resized and scored
        np.save(preds / f"{s['name']}.npy", (s["depth"][::2, ::2] * 1.1).astype(np.float32))
    out = tmp_path / "out"
    assert cli_main(["eval", "folder", str(indoor_set), "--pred", str(preds), "--out", str(out), "--png", "1"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["count"] == 3 and 0.05 < result["metrics"]["abs_rel"] < 0.3
    assert len(list((out / "png").iterdir())) == 3
    assert "abs_rel=" in capsys.readouterr().out


def test_bundle_path_matches_independent_reference(indoor_set, tmp_path):
    pytest.importorskip("edgedepth.runtime", reason="edgedepth.runtime not written yet")
    pytest.importorskip("onnx", reason="building the tiny bundle needs onnx")
    try:
        from .runtime.tiny_models import make_tiny_bundle, reference_depth
    except ImportError as err:
        pytest.skip(f"tests/runtime/tiny_models.py unavailable: {err}")
    from edgedepth.evaluate import bundle_predictor

    bundle = make_tiny_bundle(tmp_path / "tiny.edgedepth")
    ds = open_dataset("folder", indoor_set)
    predict = bundle_predictor(bundle, backend="onnxruntime")
    got = predict(ds[0])  # the sample's camera has the bundle's fx_norm (0.8): no rescale
    want, _ = reference_depth(ds[0]["image"])
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    result = evaluate(predict, ds, tmp_path / "b", progress=False, max_png=0)
    assert np.isfinite(result["metrics"]["abs_rel"])


def test_checkpoint_path(indoor_set, tmp_path):
    torch = pytest.importorskip("torch", reason="the checkpoint path needs torch")
    try:
        from edgedepth.train.checkpoint import save_models
        from edgedepth.train.models import create_coarse
        from edgedepth.train.models.refiner import create_refiner
        from edgedepth.train.stages.base import model_spec
    except ImportError as err:
        pytest.skip(f"edgedepth.train not available: {err}")
    import torch.nn.functional as F

    torch.manual_seed(0)
    coarse = create_coarse("lite", encoder="mobilenetv3_small", width=0.25, input_size=(64, 96),
                           decoder_channels=(8, 8, 16, 16)).eval()
    ds = open_dataset("folder", indoor_set)
    sample = ds[0]
    # coarse only: the 4:3 frame resized to 64x85 inside the 3:2 input (aspect kept, 5 + 6 edge
    # columns repeated), the frame's part of the depth resized back (align_corners=False), times
    # the share of the input's width it fills (85/96)
    save_models(tmp_path / "c", coarse, None, {"coarse": model_spec(coarse), "camera": {"fx_norm": 0.4}})
    got = checkpoint_predictor(tmp_path / "c")(sample)
    x = torch.from_numpy(sample["image"]).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(64, 85), mode="bilinear", align_corners=False)
    x = (x - torch.tensor(coarse.mean).view(1, 3, 1, 1)) / torch.tensor(coarse.std).view(1, 3, 1, 1)
    x = F.pad(x, (5, 6, 0, 0), mode="replicate")
    with torch.no_grad():
        d = coarse(x)[0][..., 5:90] * (85 / 96)
        d = F.interpolate(d, size=(24, 32), mode="bilinear", align_corners=False)[0, 0].numpy()
    # the sample camera has fx/W = 0.8, the checkpoint's 0.4: depth scales by 2
    np.testing.assert_allclose(got, np.maximum(2 * d, 0), rtol=1e-4, atol=1e-5)
    # with a refiner: runs the tile pipeline end to end and scores
    refiner = create_refiner("prv2-mobile", coarse, (32, 32), width=0.25, decoder_width=0.25).eval()
    save_models(tmp_path / "r", coarse, refiner, {"coarse": model_spec(coarse), "refiner": model_spec(refiner),
                                                  "camera": {"fx_norm": 0.8}})
    predict = checkpoint_predictor(tmp_path / "r", tiles=(2, 2))
    out = predict(sample)
    assert out.shape == (24, 32) and np.isfinite(out).all() and (out >= 0).all()
    result = evaluate(predict, ds, None, limit=1, progress=False)
    assert result["count"] == 1
