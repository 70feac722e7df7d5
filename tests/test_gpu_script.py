"""scripts/train_default_gpu.sh on its CPU path with tiny budgets (EDGEDEPTH_TINY=1): it renders,
trains all three stages, exports, and leaves a bundle that runs plus curves in OUT_DIR, within the
device tool's limits on what comes back (at most 8 files, none over 16 MiB)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_training_script_cpu_path(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxsim")
    out = tmp_path / "out"
    scratch = tmp_path / "tmp"  # where its mktemp folders go; it must remove them (torch keeps caches here)
    scratch.mkdir()
    env = {**os.environ, "EDGEDEPTH_TINY": "1", "EDGEDEPTH_DATA": str(tmp_path / "data"), "TMPDIR": str(scratch),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    script = str(REPO / "scripts" / "train_default_gpu.sh")
    # From nothing: the refiner's frames render beside the first two stages.
    proc = subprocess.run(["bash", script, str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:] + (out / "train.log").read_text()[-3000:]
    assert "beside the first two stages" in proc.stderr
    rendered = {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("shard_*")}
    assert {p.parent.name for p in rendered} == {"coarse512", "train1080", "train2160"}
    # Rendering alone (what a GPU run overlaps with its benchmarks) finds every frame there: no training,
    # nothing rendered again.
    render = subprocess.run(["bash", script, str(tmp_path / "render")], env={**env, "EDGEDEPTH_RENDER_ONLY": "1"},
                            capture_output=True, text=True, timeout=300)
    assert render.returncode == 0, render.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "render").iterdir()) == ["render.log"]
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "data").rglob("shard_*")} == rendered
    assert not list(scratch.glob("tmp.*")), sorted(p.name for p in scratch.iterdir())
    files = sorted(p.name for p in out.iterdir())
    assert files == ["checkpoint.tar", "curves.json", "curves.png", "default.edgedepth.tar", "summary.json",
                     "train.log"]
    assert all(p.stat().st_size < 16 * 2**20 for p in out.iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert all(summary[s]["steps"] > 0 for s in ("coarse", "noisy", "refiner"))
    assert summary["refiner"]["tiles_seen"] > 0 and "absrel" in " ".join(summary["refiner"]["val"])
    with tarfile.open(out / "checkpoint.tar") as tar:  # the bundle's models: the refiner's lean taken off
        meta = json.load(tar.extractfile("final/model.json"))
    assert meta["train"]["calibration"]["frames"] == {"1080p": 1}
    with tarfile.open(out / "default.edgedepth.tar") as tar:
        tar.extractall(tmp_path, filter="data")
    from edgedepth import Runtime

    result = Runtime(tmp_path / "default.edgedepth", backend="onnxruntime").predict(
        np.random.default_rng(0).integers(0, 256, (288, 512, 3), dtype=np.uint8))
    assert result.depth.shape == (288, 512) and np.isfinite(result.depth).all()


@pytest.mark.slow
def test_gpu_session_script_cpu_path(tmp_path):
    # scripts/gpu_session.sh where no GPU is: run.sh refuses, the frames render, training takes what
    # the deadline leaves, and two files come back.
    pytest.importorskip("torch")
    pytest.importorskip("onnxsim")
    out = tmp_path / "out"
    env = {**os.environ, "EDGEDEPTH_TINY": "1", "PYTHON": sys.executable,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_session.sh"), str(out), "150"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.tar", "results.tgz"]
    with tarfile.open(out / "results.tgz") as tar:
        names = set(tar.getnames())
        summary = json.loads(tar.extractfile("./bench/summary.json").read())
    assert summary["gpu"] is False  # the refusal is recorded, not an error
    assert {"./session.log", "./render/render.log", "./train/curves.png", "./train/summary.json"} <= names
    assert not any(n.startswith("./data") for n in names)  # frames are not shipped back
    assert "training for" in proc.stderr
    assert "train.compile off" in proc.stderr  # no step benchmarks without a GPU: eager training


def test_gpu_training_script_render_only_needs_a_data_folder(tmp_path):
    # frames rendered into a temporary folder would be removed with it: refused, in one line
    env = {k: v for k, v in os.environ.items() if k != "EDGEDEPTH_DATA"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "train_default_gpu.sh"), str(tmp_path / "out")],
                          env={**env, "EDGEDEPTH_RENDER_ONLY": "1", "TMPDIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "needs EDGEDEPTH_DATA" in proc.stderr
    assert not list(tmp_path.glob("tmp.*"))
