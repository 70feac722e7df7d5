"""benchmarks/gpu/run.sh where no GPU is: valid bash, and a clear refusal (exit 2, one line on
stderr, summary.json saying why) whether the driver or torch's CUDA is what is missing. Its
whole-frame and training-step parts (benchmarks/gpu/frame.py, train_step.py) run for real on the CPU
at a tiny size."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu" / "run.sh"


def _run(out: Path, path: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=120)


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="an NVIDIA driver is installed here")
def test_refuses_without_a_driver(tmp_path):
    proc = _run(tmp_path / "out", os.environ["PATH"])
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no usable NVIDIA GPU: no nvidia-smi" in proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["gpu"] is False and summary["steps"] == [] and "nvidia-smi" in summary["note"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["run.log", "summary.json"]


def test_refuses_when_torch_sees_no_cuda(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("torch sees a CUDA device here")
    # A driver that lists a GPU "quoted" (the note must stay valid JSON), and a torch without CUDA.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text('#!/bin/sh\necho \'GPU 0: "Fake" (UUID: GPU-0)\'\n')
    (fake / "nvidia-smi").chmod(0o755)
    proc = _run(tmp_path / "out", f"{fake}:{os.environ['PATH']}")
    assert proc.returncode == 2 and "torch sees no CUDA device" in proc.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["gpu"] is False


def test_frame_benchmark_runs_on_cpu_at_a_tiny_size(tmp_path):
    pytest.importorskip("torch")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "frame.py"), str(tmp_path), "--device",
                           "cpu", "--sizes", "tiny", "--repeat", "1"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads((tmp_path / "frame.json").read_text())
    tiny = figures["sizes"]["tiny"]
    assert tiny["frame"] == [144, 256] and figures["info"]["backend"] == "torch"
    assert set(tiny["variants"]) == {"bilinear fp32", "guided fp32"}  # both upsamplings by default; fp16 is CUDA's
    for up in tiny["variants"].values():
        assert 0 < up["ms_min"] <= up["ms_median"] and up["stages_ms_median"]
    assert [p.name for p in tmp_path.iterdir()] == ["frame.json"]  # the bundle went to a temporary folder


def test_training_step_benchmark_runs_on_cpu_at_a_tiny_size(tmp_path):
    pytest.importorskip("torch")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "train_step.py"), str(tmp_path), "--device",
                           "cpu", "--size", "tiny", "--batch", "2", "--workers", "0", "--steps", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads((tmp_path / "train_step.json").read_text())
    assert figures["tiles_per_step"] == 8 and figures["batch_frames"] == 2  # a 2x2 tile group per frame
    assert figures["loader_frames_per_s"] > 0 and 0 < figures["step_ms_min"] <= figures["step_ms_median"]
    assert figures["syncs_per_step"] is None  # counted on CUDA only
    assert figures["compile"] is False and figures["first_steps_s"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["train_step.json"]  # frames and models went to a temporary folder


def test_refiner_benchmark_runs_on_cpu_at_a_tiny_size(tmp_path):
    pytest.importorskip("torch")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "refiner.py"), str(tmp_path), "--device",
                           "cpu", "--batches", "2", "--repeat", "2", "--tiny"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads((tmp_path / "refiner.json").read_text())
    assert list(figures["batches"]["2"]) == ["fp32"]  # half precision, graphs and cuDNN need the GPU
    row = figures["batches"]["2"]["fp32"]
    assert 0 < row["ms_min"] <= row["ms_median"] and row["ms_per_tile_min"] == pytest.approx(row["ms_min"] / 2)
    assert 0.1 < figures["gflop_per_tile"] < 1  # prv2-mobile at 128x224: a few tenths of a GFLOP
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "refiner.py"), str(tmp_path), "--device",
                          "cpu", "--batches", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--batches" in bad.stderr


def test_compile_is_chosen_only_where_it_pays_for_itself(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))
    try:
        from choose_compile import choose, main
    finally:
        sys.path.pop(0)
    eager = {"step_ms_min": 80.0, "first_steps_s": 1.0}
    fast = {"step_ms_min": 40.0, "first_steps_s": 31.0}  # half the step, 30 s of compiling per stage
    assert choose(eager, fast, 8.0)[0]  # 240 s saved against 90 s
    assert not choose(eager, fast, 2.0)[0]  # 60 s saved against 90 s
    assert not choose(eager, {**fast, "step_ms_min": 90.0}, 60.0)[0]  # slower steps never pay
    # From files: missing ones (no GPU, a failed step) mean eager, and a bad number is a usage error.
    assert main([str(tmp_path), "8"]) == 0
    (tmp_path / "train_step.json").write_text(json.dumps(eager))
    (tmp_path / "train_step_compiled.json").write_text(json.dumps(fast))
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "choose_compile.py"), str(tmp_path), "8"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "1" and "train.compile on" in out.stderr
    (tmp_path / "train_step_compiled.json").write_text("{")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "choose_compile.py"), str(tmp_path), "8"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "0" and "no usable measurement" in out.stderr
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "choose_compile.py"), str(tmp_path), "x"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "must be a number" in bad.stderr


@pytest.mark.parametrize("bad", [["--upsample", "bilinear,nope"], ["--precision", "fp8"], ["--graphs", "on"]])
def test_frame_benchmark_refuses_a_bad_variant_list(tmp_path, bad):
    pytest.importorskip("torch")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu" / "frame.py"), str(tmp_path), "--device",
                           "cpu", "--sizes", "tiny", *bad], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"{bad[0]} takes a list from" in proc.stderr  # on the CPU graphs are off only
    assert not any(tmp_path.iterdir())  # refused before building anything
