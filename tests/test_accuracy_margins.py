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


def test_sky_counts_flagged_or_far_and_reports_the_nearest_unflagged_reading() -> None:
    sky = np.zeros((4, 4), bool)
    sky[:2] = True  # 8 sky pixels
    depth = np.full((4, 4), 10.0, np.float32)
    depth[0] = [120.0, 120.0, 70.0, 64.0]  # beyond range (flagged), and two at or past 80 % of 80 m
    depth[1] = [63.9, 30.0, 5.0, 120.0]
    invalid = depth > ba.VALID_MAX
    invalid[1, 2] = True  # the runtime may flag a pixel it reads near (e.g. unknown): not a near reading
    got = ba.sky_scores(ba.Prediction(depth, invalid), sky)
    assert got["sky_far"] == 6 / 8  # 120, 120, 70, 64, the flagged 5 m, 120; not 63.9 or 30
    assert got["sky_nearest"] == 30.0
    unflagged = ba.sky_scores(ba.Prediction(depth), sky)  # no validity map: beyond 80 m counts as flagged
    assert unflagged["sky_far"] == 5 / 8 and unflagged["sky_nearest"] == 5.0
    assert ba.sky_scores(ba.Prediction(np.full((4, 4), 100.0, np.float32)), sky)["sky_nearest"] == float("inf")


def test_table_reports_the_worst_sky_frame() -> None:
    rows = [{"frame": "a", "abs_rel": 0.1, "sky_far": 0.99, "sky_nearest": 40.0},
            {"frame": "b", "abs_rel": 0.1, "sky_far": 0.90, "sky_nearest": 12.5}, {"frame": "c", "abs_rel": 0.1}]
    results = {"mean": {"1080p": {"r": {"abs_rel": 0.1, "sky_far": 0.945}}}, "frames": {"1080p": 3},
               "per_frame": {"1080p": {"r": rows}}}
    table = ba.table(results, [ba.Method("r", "refiner", lambda f: None)])
    assert "| 0.9450 | 0.9000 | 12.5 |" in table
