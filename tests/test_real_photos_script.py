"""benchmarks/bench_real_photos.py: the depth encodings it decodes, its metric, and one run end to end
on photographs written here (a smooth ramp and a frame of the sample scene) with the default bundle."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgedepth.depth_io import read_image, write_image, write_png16

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_real_photos as brp  # noqa: E402


def _encode(metres: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "mm":
        return np.round(metres * 1000).astype(np.uint16)
    if fmt == "tum":
        return np.round(metres * 5000).astype(np.uint16)
    mm = np.round(metres * 1000).astype(np.uint32)  # SUN RGB-D stores mm rotated left by 3 bits
    return (((mm << 3) | (mm >> 13)) & 0xFFFF).astype(np.uint16)


@pytest.mark.parametrize("fmt", ["mm", "tum", "sun"])
def test_decodes_each_encoding(fmt) -> None:
    metres = np.array([[0.0, 0.5, 1.234], [3.0, 7.5, 8.191]], np.float32)
    got = brp.decode_depth(_encode(metres, fmt), fmt)
    np.testing.assert_allclose(got, metres, atol=1e-3)
    with pytest.raises(ValueError, match="format"):
        brp.decode_depth(_encode(metres, fmt), "cm")


def test_absrel_is_scale_free_and_skips_missing_depth() -> None:
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 5, (40, 50)).astype(np.float32)
    gt[:5] = 0  # no measurement
    pred = gt * 3.7
    pred[:5] = 123.0
    assert brp.absrel_median_scaled(pred, gt) < 1e-6
    noisy = pred * rng.uniform(0.9, 1.1, pred.shape)
    assert 0.02 < brp.absrel_median_scaled(noisy, gt) < 0.06
    with pytest.raises(ValueError, match="100 pixels"):
        brp.absrel_median_scaled(pred, np.zeros_like(gt))


def test_runs_on_a_folder_of_photographs(tmp_path: Path) -> None:
    image = read_image(REPO / "edgedepth" / "assets" / "sample.png")[::4, ::4][:120, :160]
    h, w = image.shape[:2]
    ramp = np.broadcast_to(np.linspace(1.0, 6.0, h, dtype=np.float32)[:, None], (h, w)).copy()
    entries = []
    for i, fmt in enumerate(("mm", "sun")):
        write_image(tmp_path / f"c{i}.png", image)
        write_png16(tmp_path / f"d{i}.png", _encode(ramp, fmt))
        entries.append({"name": f"p{i}", "color": f"c{i}.png", "depth": f"d{i}.png", "format": fmt})
    (tmp_path / "photos.json").write_text(json.dumps(entries))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_real_photos.py"), "--photos", str(tmp_path),
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads((out / "figures.json").read_text())["default"]
    assert set(figures) == {"p0", "p1"}
    # The same photograph in two encodings scores the same.
    assert figures["p0"]["refined"] == pytest.approx(figures["p1"]["refined"], rel=1e-3)
    assert all(0 < v["coarse"] < 10 and 0 < v["refined"] < 10 for v in figures.values())
    panels = read_image(out / "p0.png")
    assert panels.shape == (h, 4 * w, 3)  # frame, ground truth, coarse, refined
    assert "refined worse than coarse on" in (out / "table.md").read_text()


def test_refuses_a_folder_without_its_listing(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_real_photos.py"), "--photos", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "photos.json" in proc.stderr and "Traceback" not in proc.stderr
