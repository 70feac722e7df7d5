"""`python -m benchmarks.jetson`, run for real on this CPU (onnxruntime, a tiny bundle): off a Jetson it
measures what it can and names what is missing; with a `tegrastats` on PATH it reports power."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from ..test_tegrastats import JP6_ORIN_NX

ROOT = Path(__file__).resolve().parents[2]


def _bench(bundle: Path, out: Path, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.jetson", str(bundle), "--backend", "onnxruntime",
                           "--frames", "4", "--warmup", "1", "--size", "96x64", "--interval-ms", "50",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    assert done.returncode == 0, done.stderr
    return done, json.loads((out / "figures.json").read_text())


def test_off_a_jetson_it_measures_and_says_what_is_missing(tiny_bundle, tmp_path):
    done, fig = _bench(tiny_bundle, tmp_path / "out", {"PATH": str(Path(sys.executable).parent)})
    lat = fig["latency_ms"]
    assert fig["frames"] == 4 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
    assert set(fig["stage_ms_median"]) >= {"preprocess", "coarse", "crop", "refine", "stitch", "total"}
    assert fig["placement"] == {"coarse": "onnxruntime on cpu", "refiner": "onnxruntime on cpu"}
    assert fig["peak_rss_mb"] > 10 and fig["start_s"] > 0
    assert fig["power"]["power_w"] is None and "tegrastats not found" in fig["power"]["why"]
    if not Path("/etc/nv_tegra_release").exists():
        assert any(m.startswith("JetPack: ") for m in fig["missing"])
        assert "missing: power: tegrastats not found" in done.stdout


def test_power_and_energy_come_from_tegrastats(tiny_bundle, tmp_path):
    # A stand-in for the device's tegrastats (it cannot run here): prints a real JetPack 6 line per interval.
    tools = tmp_path / "bin"
    tools.mkdir()
    script = tools / "tegrastats"
    script.write_text(f"#!/bin/sh\nwhile true; do echo '{JP6_ORIN_NX}'; sleep 0.05; done\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    done, fig = _bench(tiny_bundle, tmp_path / "out", {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"})
    power = fig["power"]
    assert power["power_w"] == 17.946 and power["measured_as"] == "VDD_IN" and power["samples"] >= 1
    frame_s = 4 / fig["fps"]
    assert abs(power["energy_per_frame_j"] - 17.946 * frame_s / 4) < 1e-3
    assert "J/frame" in done.stdout
