"""train/calibration.py and scripts/calibrate_refiner.py: a refiner's constant lean measured and
folded into its residual head as an exact depth scale."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgedepth.tiling import Tiling
from edgedepth.train.calibration import fold_log_shift, frame_log_bias, measure_log_bias
from edgedepth.train.checkpoint import load_models, save_models
from edgedepth.train.models.refiner import create_refiner

from .test_checkpoint import meta_for, outputs, tiny_models

REPO = Path(__file__).resolve().parents[2]


def test_frame_log_bias_is_the_median_log_ratio_over_valid_pixels() -> None:
    gt = np.array([[1.0, 2.0, 4.0], [8.0, 0.0, 100.0]], np.float32)  # 0 and 100 m lie outside (0, 80]
    pred = gt * np.float32(math.e ** 0.1)
    pred[0, 0] = gt[0, 0] * math.e ** 0.5  # one outlier: the median keeps it out
    mask = np.ones_like(gt, bool)
    assert frame_log_bias(pred, gt, mask) == pytest.approx(0.1, abs=1e-6)
    assert math.isnan(frame_log_bias(pred, gt, np.zeros_like(mask)))
    pred[:] = np.nan
    assert math.isnan(frame_log_bias(pred, gt, mask))


def test_folded_shift_scales_every_output_exactly() -> None:
    coarse, refiner = tiny_models()
    _, before = outputs(coarse, refiner)
    fold_log_shift(refiner, 0.25)
    _, after = outputs(coarse, refiner)
    torch.testing.assert_close(after, before * math.exp(-0.25), rtol=1e-5, atol=0)


def test_fold_refuses_what_it_cannot_scale() -> None:
    coarse, _ = tiny_models()
    metres = create_refiner("prv2-mobile", coarse, (32, 32), width=0.25, decoder_width=0.25, residual="metres")
    with pytest.raises(ValueError, match="log residual"):
        fold_log_shift(metres, 0.1)
    _, refiner = tiny_models()
    with pytest.raises(ValueError, match="finite"):
        fold_log_shift(refiner, float("nan"))


def test_measured_bias_moves_by_the_folded_shift() -> None:
    coarse, refiner = tiny_models()
    rng = np.random.default_rng(0)
    frame = {"image": rng.integers(0, 255, (96, 144, 3), dtype=np.uint8),
             "depth": rng.uniform(1, 20, (96, 144)).astype(np.float32), "reliable": np.ones((96, 144), bool)}
    tiling = Tiling(rows=2, cols=2, upsample="guided")
    before = measure_log_bias(coarse, refiner, [frame], tiling)[0]
    fold_log_shift(refiner, 0.05)
    after = measure_log_bias(coarse, refiner, [frame], tiling)[0]
    assert after["refined"] == pytest.approx(before["refined"] - 0.05, abs=2e-4)
    assert after["coarse"] == before["coarse"]


def test_script_writes_a_calibrated_checkpoint(tmp_path) -> None:
    coarse, refiner = tiny_models()
    meta = meta_for(coarse, refiner)
    meta["train"]["tiling"] = {"rows": 2, "cols": 2}
    save_models(tmp_path / "ck", coarse, refiner, meta)
    cmd = [sys.executable, str(REPO / "scripts" / "calibrate_refiner.py"), str(tmp_path / "ck"), str(tmp_path / "cal"),
           "--frames", "1080p:1", "--data", str(tmp_path / "data")]
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert got.returncode == 0, got.stderr
    _, cal, cal_meta = load_models(tmp_path / "cal")
    shift = cal_meta["train"]["calibration"]["log_shift"]
    assert math.isfinite(shift) and cal_meta["train"]["calibration"]["stream"] == 1001
    assert cal.out.bias.item() == pytest.approx(refiner.out.bias.item() - shift, abs=1e-6)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # the output exists now
    assert again.returncode != 0 and "exists" in again.stderr


def test_script_refuses_bad_frames_and_a_checkpoint_without_refiner(tmp_path) -> None:
    coarse, _ = tiny_models()
    save_models(tmp_path / "coarse_only", coarse, None, meta_for(coarse, None))
    script = str(REPO / "scripts" / "calibrate_refiner.py")
    for args, says in (([str(tmp_path / "coarse_only"), str(tmp_path / "a"), "--frames", "720p:3"], "--frames"),
                       ([str(tmp_path / "coarse_only"), str(tmp_path / "b"), "--frames", "1080p:0"], "--frames"),
                       ([str(tmp_path / "coarse_only"), str(tmp_path / "c"), "--frames", "1080p:1"], "holds no refiner")):
        got = subprocess.run([sys.executable, script, *args, "--data", str(tmp_path / "data")],
                             capture_output=True, text=True, timeout=300)
        assert got.returncode != 0 and says in got.stderr, got.stderr
        assert not (tmp_path / args[1]).exists()
