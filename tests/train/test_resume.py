"""SIGKILL a real training process after a checkpoint, resume it, and get the same loss curve."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgedepth.train.checkpoint import latest_checkpoint
from edgedepth.train.config import load_config
from edgedepth.train.trainer import Trainer, read_metrics

CONFIG = Path(__file__).parent / "configs" / "tiny-coarse.yaml"
SETS = ["train.steps=20", "train.ckpt_every=4", "train.val_every=10", "train.log_every=1"]


def launch(out: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "edgedepth.cli", "train", str(CONFIG), "--out", str(out)]
    for s in SETS:
        args += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def test_sigkill_and_resume_reproduces_the_loss_curve(tmp_path):
    # uninterrupted reference
    cfg = load_config(CONFIG, SETS + [f"train.out_dir={tmp_path / 'ref'}"])
    Trainer(cfg, resume="never").fit()
    ref = read_metrics(tmp_path / "ref" / "train.csv")

    run = tmp_path / "killed"
    proc = launch(run)
    deadline = time.monotonic() + 120
    while latest_checkpoint(run) is None:
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = int(latest_checkpoint(run).name.split("_")[1])
    assert killed_at < 20
    partial = read_metrics(run / "train.csv") if (run / "train.csv").exists() else []
    assert len(partial) < 20

    proc = launch(run)
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out
    assert f"resuming from" in out and f"step {killed_at}" in out
    resumed = read_metrics(run / "train.csv")
    assert [r["step"] for r in resumed] == [r["step"] for r in ref] == list(range(1, 21))
    np.testing.assert_allclose([r["train/loss"] for r in resumed], [r["train/loss"] for r in ref], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([r["train/lr"] for r in resumed], [r["train/lr"] for r in ref], rtol=1e-6)
    val_ref, val_res = read_metrics(tmp_path / "ref" / "val.csv"), read_metrics(run / "val.csv")
    np.testing.assert_allclose([r["val/absrel"] for r in val_res], [r["val/absrel"] for r in val_ref], rtol=1e-4)
