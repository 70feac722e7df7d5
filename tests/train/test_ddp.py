"""DDP through torchrun with two gloo processes equals one process accumulating two micro-batches."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from edgedepth.train.checkpoint import load_models
from edgedepth.train.config import load_config
from edgedepth.train.trainer import Trainer, read_metrics

CONFIG = Path(__file__).parent / "configs" / "tiny-coarse.yaml"
SETS = ["train.steps=3", "train.val_every=3", "train.ckpt_every=3", "train.batch_size=1"]


def test_two_process_gloo_ddp_matches_gradient_accumulation(tmp_path):
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "edgedepth.cli", "train", str(CONFIG), "--out", str(tmp_path / "ddp")]
    for s in SETS:
        args += ["--set", s]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("done:") == 1  # only rank 0 reports and writes

    cfg = load_config(CONFIG, SETS + ["train.grad_accum=2", f"train.out_dir={tmp_path / 'single'}"])
    Trainer(cfg, resume="never").fit()

    ddp, _, _ = load_models(tmp_path / "ddp" / "final")
    single, _, _ = load_models(tmp_path / "single" / "final")
    init_cfg = load_config(CONFIG)
    from edgedepth.train.models import create_coarse

    torch.manual_seed(init_cfg.train.seed)
    init = create_coarse(init_cfg.model.coarse, **init_cfg.model.coarse_kwargs)
    moved = 0.0
    for (name, a), b, c in zip(ddp.named_parameters(), single.parameters(), init.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        moved = max(moved, float((a - c).detach().abs().max()))
    assert moved > 1e-4  # both really trained
    # the logged loss is the mean over both ranks = the mean over both micro-batches
    l_ddp = [r["train/loss"] for r in read_metrics(tmp_path / "ddp" / "train.csv")]
    l_one = [r["train/loss"] for r in read_metrics(tmp_path / "single" / "train.csv")]
    torch.testing.assert_close(torch.tensor(l_ddp), torch.tensor(l_one), rtol=1e-4, atol=1e-5)
