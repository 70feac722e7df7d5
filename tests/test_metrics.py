"""edgedepth.metrics against small cases whose expected values are worked out by hand here."""
import math

import numpy as np
import pytest

from edgedepth import metrics as M


def test_pointwise_hand_case():
    g = np.array([1.0, 2.0, 4.0])
    p = np.array([1.0, 3.0, 2.0])  # ratios 1, 1.5, 2
    m = M.pointwise_metrics(p, g)
    assert m["delta1"] == pytest.approx(1 / 3)       # only ratio 1 < 1.25
    assert m["delta2"] == pytest.approx(2 / 3)       # 1.5 < 1.5625, 2 is not
    assert m["delta3"] == pytest.approx(2 / 3)       # 2 > 1.953125
    assert m["abs_rel"] == pytest.approx((0 + 1 / 2 + 2 / 4) / 3)
    assert m["sq_rel"] == pytest.approx((0 + 1 / 2 + 4 / 4) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0 + 1 + 4) / 3))
    e = [0.0, math.log(1.5), math.log(0.5)]
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(x * x for x in e) / 3))
    assert m["log10"] == pytest.approx((math.log10(1.5) + math.log10(2)) / 3)
    mean_e = sum(e) / 3
    assert m["silog"] == pytest.approx(100 * math.sqrt(sum(x * x for x in e) / 3 - mean_e ** 2))


def test_silog_is_scale_invariant_and_rejects_nonpositive():
    g = np.array([1.0, 2.0, 5.0])
    assert M.pointwise_metrics(3 * g, g)["silog"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="pred > 0"):
        M.pointwise_metrics(np.array([0.0, 1.0, 1.0]), g)


def test_prepare_resizes_bilinearly_then_clamps():
    pred = np.array([[1.0, 3.0], [1.0, 3.0]], np.float32)
    gt = np.full((4, 4), 2.0, np.float32)
    gt[0, 0] = 0  # invalid
    gt[0, 1] = 100.0  # beyond max_depth
    p, valid = M.prepare(pred, gt, min_depth=1e-3, max_depth=2.8)
    # half-pixel sample positions x = -0.25, 0.25, 0.75, 1.25 -> clamped 0, .25, .75, 1
    np.testing.assert_allclose(p[2], [1.0, 1.5, 2.5, 2.8], rtol=1e-6)  # 3.0 clamped to 2.8
    assert valid.sum() == 14 and not valid[0, 0] and not valid[0, 1]


def test_prepare_errors():
    gt = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="NaN"):
        M.prepare(np.full((4, 4), np.nan, np.float32), gt)
    with pytest.raises(ValueError, match="HxW"):
        M.prepare(np.ones((2, 4, 4, 1), np.float32), gt)
    with pytest.raises(TypeError, match="float"):
        M.prepare(np.ones((4, 4), np.int32), gt)
    with pytest.raises(ValueError, match="mask"):
        M.prepare(gt, gt, np.ones((4, 4), np.uint8))
    with pytest.raises(ValueError, match="no valid"):
        M.compute_metrics(gt, np.zeros((4, 4), np.float32))


def test_alignment_modes_recover_gt():
    g = np.array([[1.0, 2.0], [4.0, 8.0]], np.float32)
    valid = np.ones_like(g, bool)
    np.testing.assert_allclose(M.align((g - 1) / 2, g, valid, "scale_shift"), g, rtol=1e-5)
    np.testing.assert_allclose(M.align(g / 3, g, valid, "scale"), g, rtol=1e-5)
    rel = 1.0 / (2.0 / g + 0.5)  # 1/rel = 2/g + 0.5: affine in inverse depth
    np.testing.assert_allclose(M.align(rel, g, valid, "scale_shift_disparity"), g, rtol=1e-5)
    with pytest.raises(ValueError, match="align mode"):
        M.align(g, g, valid, "median")
    with pytest.raises(ValueError, match="at least 2"):
        M.align(g, g, np.zeros_like(valid), "scale")
    m = M.compute_metrics(2 * g, g, align_mode="scale", boundary=False)
    assert m["abs_rel"] == pytest.approx(0, abs=1e-6) and m["delta1"] == 1.0


def test_soft_edge_error_hand_case():
    gt = np.array([[1.0, 1.0, 5.0, 5.0]], np.float32)
    pred = np.array([[1.0, 2.0, 4.5, 5.0]], np.float32)
    edges = M.ratio_edges(gt, 1.05)
    np.testing.assert_array_equal(edges, [[False, True, True, False]])
    # col 1: gt neighbours {1, 1, 5} vs 2 -> 1; col 2: {1, 5, 5} vs 4.5 -> 0.5
    assert M.soft_edge_error(pred, gt, edges) == pytest.approx(0.75)
    # disparity edges: fB = 10 -> disparities 10, 10, 2, 2: jump 8 > 1 px
    np.testing.assert_array_equal(M.disparity_edges(gt, 10.0), edges)
    assert math.isnan(M.soft_edge_error(pred, gt, np.zeros_like(edges)))


def _step(col, near=1.0, far=4.0, size=10):
    d = np.full((size, size), far, np.float32)
    d[:, :col] = near
    return d


def test_boundary_prf_tolerance():
    gt, pred = _step(5), _step(6)  # log-depth steps: edge pixels at col 4 and col 5
    valid = np.ones_like(gt, bool)
    e = M.canny(np.log(gt), 0.02, 0.04, valid)
    assert e[:, 4].all() and e.sum() == 10
    m1 = M.boundary_prf(pred, gt, valid, tolerance=1)
    assert (m1["b_precision"], m1["b_recall"], m1["b_f1"]) == (1.0, 1.0, 1.0)
    m0 = M.boundary_prf(pred, gt, valid, tolerance=0)
    assert (m0["b_precision"], m0["b_recall"], m0["b_f1"]) == (0.0, 0.0, 0.0)
    flat = M.boundary_prf(np.full_like(gt, 2.0), gt, valid)
    assert math.isnan(flat["b_precision"]) and flat["b_recall"] == 0.0 and flat["b_f1"] == 0.0


def test_si_boundary_f1_hand_case():
    gt = np.full((5, 5), 2.0, np.float32)
    gt[1:4, 1:4] = 1.0  # foreground square: inverse-depth ratio 2 on all four sides
    assert M.si_boundary_f1(gt, gt) == pytest.approx(1.0)
    pred = gt.copy()
    pred[1:4, 1:4] = 2.0 / 1.1  # inverse-depth ratio 1.1: found only for thresholds below 1.1
    t = np.linspace(1.05, 1.25, 10)  # 1.05, 1.0722, 1.0944, 1.1167, ...
    expected = (1.05 + (1.05 + 0.2 / 9) + (1.05 + 0.4 / 9)) / (10 * 1.15)
    assert t.sum() == pytest.approx(11.5)
    assert M.si_boundary_f1(pred, gt) == pytest.approx(expected)
    assert M.si_boundary_f1(np.full_like(gt, 3.0), gt) == 0.0


def test_ordinal_error_hand_case():
    g = np.array([[1.0, 3.0, 2.0]])
    p = np.array([[1.0, 2.0, 3.0]])
    valid = np.ones_like(g, bool)
    pairs = np.array([[0, 1], [1, 2], [0, 2]])  # orders gt: -1 +1 -1, pred: -1 -1 -1
    assert M.ordinal_error(p, g, valid, pairs=pairs) == pytest.approx(1 / 3)
    near = np.array([[1.0, 1.02, 2.0]])  # 1.02 is "equal" to 1 under tau = 0.03, 1 < 3 in gt
    assert M.ordinal_error(near, g, valid, pairs=np.array([[0, 1]])) == 1.0


def test_consistency_error_hand_case():
    a = np.array([[5.0, 2.0, 4.0]])
    b = np.array([[2.0, 2.0, 9.0]])
    boxes = [(0, 0, 1, 3), (0, 1, 1, 3)]  # overlap: frame cols 1, 2 -> a [2, 4], b [2, 2]
    # |diff| sum = 0 + 2; mean-depth sum = 2 + 3
    assert M.consistency_error([a, b], boxes) == pytest.approx(2 / 5)
    assert math.isnan(M.consistency_error([a, b], [(0, 0, 1, 3), (5, 5, 1, 3)]))
    with pytest.raises(ValueError, match="tile 1"):
        M.consistency_error([a, b[:, :2]], boxes)
    with pytest.raises(ValueError, match="integer"):
        M.consistency_error([a, b], [(0, 0.5, 1, 3), (0, 1, 1, 3)])


def test_compute_metrics_perfect_and_mean():
    gt = np.full((12, 12), 3.0, np.float32)
    gt[3:9, 3:9] = 1.5
    gt[0, :] = 0
    m = M.compute_metrics(gt, gt)
    assert m["delta1"] == 1.0 and m["abs_rel"] == 0.0 and m["see"] == 0.0
    assert m["b_f1"] == 1.0 and m["si_bf1"] == pytest.approx(1.0) and m["ord"] == 0.0
    assert m["n_valid"] == 132
    avg = M.mean_metrics([{"abs_rel": 0.1, "see": float("nan"), "n_valid": 3},
                          {"abs_rel": 0.3, "see": 2.0, "n_valid": 4}])
    assert avg == {"abs_rel": pytest.approx(0.2), "see": 2.0, "n_valid": 7}


def _step_scene(h=40, w=60):
    """Near box (2 m) on a far wall (10 m): vertical depth edges at x = 20 and x = 40."""
    gt = np.full((h, w), 10.0, np.float32)
    gt[:, 20:40] = 2.0
    return gt


def test_edge_band_abs_rel_scores_only_pixels_near_edges():
    gt = _step_scene()
    valid = gt > 0
    band = M.edge_band(gt, valid, radius=2)
    assert band[:, 18:22].all() and band[:, 38:42].all()
    assert not band[:, :17].any() and not band[:, 23:37].any()
    # Blur the edge: wrong only next to it, so the band error is large and the global error small.
    blurred = gt.copy()
    blurred[:, 19] = blurred[:, 20] = 6.0
    assert M.edge_band_abs_rel(gt, gt, valid) == 0.0
    err_band = M.edge_band_abs_rel(blurred, gt, valid)
    err_all = M.pointwise_metrics(blurred[valid], gt[valid])["abs_rel"]
    assert err_band > 5 * err_all > 0
    assert np.isnan(M.edge_band_abs_rel(np.full((8, 8), 3.0), np.full((8, 8), 3.0), np.ones((8, 8), bool)))


def test_seam_error_sees_tile_disagreement_not_scene_edges():
    h, w = 40, 64
    boxes = np.array([[0, 0, 40, 32], [0, 32, 40, 32]])
    ramp = np.tile(np.geomspace(5.0, 9.0, w).astype(np.float32), (h, 1))  # linear in log depth
    assert abs(M.seam_error(ramp, boxes)) < 1e-6  # a smooth map has no seam
    seamed = ramp.copy()
    seamed[:, 32:] *= 1.1  # the right tile reads 10 % farther
    assert M.seam_error(seamed, boxes) == pytest.approx(np.log(1.1), rel=0.05)
    # A real depth edge a few px from the border is not a seam: it sits on neither the border line
    # nor (with offset 4) the comparison lines, and a map with no border inside gives NaN.
    edge = ramp.copy()
    edge[:, 34:] *= 2.0
    assert abs(M.seam_error(edge, boxes, offset=4)) < 1e-6
    assert np.isnan(M.seam_error(ramp, np.array([[0, 0, 40, 64]])))
    with pytest.raises(ValueError, match="statistic"):
        M.seam_error(ramp, boxes, statistic="max")


def test_seam_error_median_sees_a_small_seam_behind_scene_edges():
    # A 0.5 % seam along a vertical border, and scene steps (x2) crossing the comparison lines in a
    # quarter of the rows: the means see the steps, the medians the seam.
    h, w = 64, 64
    boxes = np.array([[0, 0, h, 32], [0, 32, h, 32]])
    d = np.tile(np.geomspace(5.0, 6.0, w), (h, 1))
    d[:, 32:] *= 1.005
    d[::4, 36:] *= 2.0  # steps 4 px right of the border: on a comparison line
    assert M.seam_error(d, boxes, offset=4) < 0  # the mean reads "smoother than beside it"
    assert M.seam_error(d, boxes, offset=4, statistic="median") == pytest.approx(np.log(1.005), rel=0.05)
    smooth = np.tile(np.geomspace(5.0, 6.0, w), (h, 1))
    smooth[::4, 36:] *= 2.0
    assert abs(M.seam_error(smooth, boxes, offset=4, statistic="median")) < 1e-6


def test_hysteresis_equals_growing_the_strong_edges_through_weak_ones():
    def by_dilation(weak, strong):  # the definition: grow one pixel at a time until it stops
        edges = strong & weak
        while True:
            grown = M.dilate(edges, 1) & weak
            if (grown == edges).all():
                return edges
            edges = grown

    rng = np.random.default_rng(0)
    for _ in range(100):
        h, w = rng.integers(1, 30, 2)
        weak = rng.random((h, w)) < rng.random()
        strong = weak & (rng.random((h, w)) < 0.1)
        np.testing.assert_array_equal(M.hysteresis(weak, strong), by_dilation(weak, strong))
    spiral = np.zeros((9, 9), bool)  # one long 8-connected chain: a single component
    spiral[0, :] = spiral[:, 8] = spiral[8, :] = spiral[2:, 0] = spiral[2, :7] = True
    strong = np.zeros_like(spiral)
    strong[2, 6] = True
    np.testing.assert_array_equal(M.hysteresis(spiral, strong), spiral)
