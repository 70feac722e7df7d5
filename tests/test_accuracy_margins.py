"""benchmarks/bench_accuracy.py's margins over the coarse map: the change of the mean and its
bootstrap interval over frames."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import bench_accuracy as ba  # noqa: E402


def _rows(values):
    return [{"frame": f"f{i}", "abs_rel": v, "rmse": 2 * v, "edge_absrel": 3 * v} for i, v in enumerate(values)]


def test_margin_is_the_change_of_the_mean_and_its_interval_holds_it() -> None:
    base = [0.10, 0.20, 0.30, 0.40]
    better = [0.08, 0.15, 0.24, 0.37]  # means 0.25 and 0.21: -16 %
    got = ba.margins({"1080p": {"coarse": _rows(base), "r": _rows(better)}}, "coarse", ["r"])["1080p"]["r"]
    for key in ba.MARGIN_KEYS:
        change, lo, hi = got[key]
        assert abs(change - (0.21 / 0.25 - 1)) < 1e-12
        assert lo <= change <= hi < 0  # better on every frame: every resample is better too
        assert lo < hi


def test_one_frame_off_widens_the_interval_and_identical_methods_give_zero() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(0.1, 0.3, 12)
    steady = base * 0.8
    uneven = base * 0.8
    uneven[0] = base[0] * 1.6  # one frame made worse
    per = {"4K": {"coarse": _rows(base), "steady": _rows(steady), "uneven": _rows(uneven), "same": _rows(base)}}
    got = ba.margins(per, "coarse", ["steady", "uneven", "same"])["4K"]
    width = {n: got[n]["rmse"][2] - got[n]["rmse"][1] for n in ("steady", "uneven")}
    assert width["steady"] < 1e-9 < width["uneven"]  # a constant ratio leaves nothing to resample
    assert got["same"]["edge_absrel"] == [0.0, 0.0, 0.0]
    table = ba.margin_table({"margins": {"4K": got}, "margin_baseline": "coarse", "frames": {"4K": 12}})
    assert "| steady | -20.0 % (-20.0 to -20.0)" in table
