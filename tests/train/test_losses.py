"""edgedepth.train.losses: each loss's defining property, its masks, and empty-mask behaviour."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from edgedepth.train import losses as L
from edgedepth.train.config import config_from_dict
from edgedepth.train.stages.base import Stage

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _scene(b=2, h=48, w=64, seed=0):
    """Smooth positive depth with a step edge, plus an unrelated positive map."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, h).view(1, 1, h, 1)
    x = torch.linspace(0, 1, w).view(1, 1, 1, w)
    depth = 2 + 6 * y + 3 * torch.sin(3 * x) + 4 * (x > 0.5)
    depth = depth * (1 + 0.5 * torch.rand(b, 1, 1, 1, generator=g))
    other = 1 + 5 * torch.rand(b, 1, h, w, generator=g)
    return depth.expand(b, 1, h, w).contiguous(), other


def test_silog_zero_at_target_and_scale_invariant_with_full_variance_focus():
    gt, other = _scene()
    assert L.silog_loss(gt, gt).item() < 1e-4
    assert L.silog_loss(other, gt).item() > 1
    per_sample_scale = torch.tensor([3.0, 0.2]).view(2, 1, 1, 1)
    torch.testing.assert_close(L.silog_loss(other * per_sample_scale, gt, variance_focus=1.0),
                               L.silog_loss(other, gt, variance_focus=1.0), rtol=1e-4, atol=1e-5)
    assert L.silog_loss(gt * 2, gt).item() > 1  # lambda 0.85 keeps part of the scale error
    with pytest.raises(ValueError, match="variance_focus"):
        L.silog_loss(gt, gt, variance_focus=1.5)


def test_ssi_is_invariant_to_affine_changes_of_the_prediction():
    gt, other = _scene()
    base = L.ssi_loss(other, gt)
    assert base.item() > 0.1
    for a, b in ((3.0, 2.0), (-0.5, 10.0), (1e-2, -1.0)):
        torch.testing.assert_close(L.ssi_loss(a * other + b, gt), base, rtol=1e-4, atol=1e-5)
    assert L.ssi_loss(0.3 * gt - 1.0, gt).item() < 1e-4


def test_fit_scale_shift_recovers_the_affine_map_and_handles_constant_input():
    gt, _ = _scene()
    mask = torch.ones_like(gt, dtype=torch.bool)
    s, t = L.fit_scale_shift((gt - 4) / 2, gt, mask)
    torch.testing.assert_close(s.flatten(), torch.full((2,), 2.0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(t.flatten(), torch.full((2,), 4.0), rtol=1e-4, atol=1e-3)
    s, t = L.fit_scale_shift(torch.ones_like(gt), gt, mask)
    assert torch.all(s == 0) and torch.allclose(t.flatten(), gt.mean((1, 2, 3)))


def test_masks_exclude_pixels_and_invalid_ground_truth():
    gt, other = _scene()
    garbage = other.clone()
    mask = torch.rand_like(gt) > 0.3
    sparse = torch.where(mask, gt, torch.zeros_like(gt))  # 0 = no ground truth
    garbage[~mask] = 1e6  # whatever the prediction does where there is no ground truth is ignored
    for fn in (L.silog_loss, L.ssi_loss, L.ssigm_loss):
        torch.testing.assert_close(fn(garbage, sparse), fn(torch.where(mask, other, gt), sparse))
        torch.testing.assert_close(fn(garbage, gt, mask), fn(garbage, sparse))
    with pytest.raises(ValueError, match="same shape"):
        L.silog_loss(gt[:, :, :10], gt)
    with pytest.raises(ValueError, match="mask"):
        L.ssi_loss(gt, gt, mask[:, :, :10])
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        L.ssi_loss(gt.expand(2, 3, 48, 64), gt.expand(2, 3, 48, 64))


def test_ssigm_global_is_affine_invariant_and_penalises_detail_errors():
    gt, other = _scene()
    assert L.ssigm_loss(-2 * gt + 7, gt).item() < 1e-5
    assert L.ssigm_loss(torch.sqrt(gt), gt).item() > 1e-3  # non-affine
    assert L.ssigm_loss(other, gt, scales=3).item() > L.ssigm_loss(other, gt, scales=1).item() * 0.5
    with pytest.raises(ValueError, match="scales"):
        L.ssigm_loss(gt, gt, scales=0)


def test_local_ssigm_is_zero_for_any_per_window_affine_change():
    gt, _ = _scene(h=46, w=69)
    win = 23
    # A different scale and shift in each grid cell: no single global fit explains it.
    cells = torch.arange(6, dtype=torch.float32).view(1, 1, 2, 3)
    scale = (1 + cells).repeat_interleave(win, 2).repeat_interleave(win, 3)
    shift = (5 * cells).repeat_interleave(win, 2).repeat_interleave(win, 3)
    pred = scale * gt + shift
    assert L.local_ssigm_loss(pred, gt, window=win, layout="grid").item() < 1e-4
    assert L.ssigm_loss(pred, gt).item() > 0.1
    assert L.local_ssigm_loss(torch.sqrt(gt), gt, window=win, layout="grid").item() > 1e-3
    # Random windows: N windows of side l; an affine change of the whole map is free everywhere.
    gen = torch.Generator().manual_seed(0)
    assert L.local_ssigm_loss(3 * gt + 1, gt, window=win, num_windows=100, generator=gen).item() < 1e-4
    corners = L.sample_windows(2, 46, 69, win, 100, generator=torch.Generator().manual_seed(0))
    assert corners.shape == (2, 100, 2) and corners.min() >= 0
    assert corners[..., 0].max() <= 46 - win and corners[..., 1].max() <= 69 - win
    with pytest.raises(ValueError, match="window"):
        L.local_ssigm_loss(gt, gt, window=50)
    with pytest.raises(ValueError, match="windows must lie inside"):
        L.local_ssigm_loss(gt, gt, window=win, windows=torch.full((2, 1, 2), 40))
    with pytest.raises(ValueError, match="layout"):
        L.local_ssigm_loss(gt, gt, window=win, layout="spiral")


def test_ranking_loss_prefers_the_right_order_and_ignores_target_scale():
    gt, _ = _scene()
    image = torch.cat([gt / gt.max()] * 3, 1)

    def rank(pred, target, **kw):
        return L.edge_guided_ranking_loss(pred, target, generator=torch.Generator().manual_seed(0), **kw)

    right, wrong = rank(gt, gt), rank(1 / gt, gt)
    assert right.item() < wrong.item()
    torch.testing.assert_close(rank(gt, 7.5 * gt), right)
    assert rank(gt ** 20, gt).item() < right.item()  # larger log-gaps in the right order: lower loss
    assert rank(gt, gt, image=image).item() < rank(1 / gt, gt, image=image).item()
    with pytest.raises(ValueError, match="image"):
        rank(gt, gt, image=image[:, :, :10])


def test_dsd_composite_is_silog_plus_scale_free_detail():
    gt, other = _scene()
    sparse = torch.where(torch.rand_like(gt) > 0.95, gt, torch.zeros_like(gt))  # real-like sparse GT
    pseudo = gt ** 1.2  # dense teacher output with its own scale

    def kw(detail):  # the sampled losses draw from a fresh, equally seeded generator each call
        seeded = {"generator": torch.Generator().manual_seed(0)}
        return {"local_ssigm": {"window": 16, **seeded}, "ranking": seeded}.get(detail, {})

    for detail in ("ssi", "ssigm", "local_ssigm", "ranking"):
        total = L.dsd_loss(other, sparse, pseudo, lam=0.5, detail=detail, **kw(detail))
        detail_term = L.DETAIL_LOSSES[detail](other, pseudo, **kw(detail))
        torch.testing.assert_close(total, L.silog_loss(other, sparse) + 0.5 * detail_term)
        if detail == "ranking":
            continue
        # Disentangling: rescaling/shifting the prediction moves only the SILog (scale) term.
        moved = L.dsd_loss(3 * other + 2, sparse, pseudo, lam=0.5, detail=detail, **kw(detail))
        torch.testing.assert_close(moved - L.silog_loss(3 * other + 2, sparse), 0.5 * detail_term,
                                   rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(L.dsd_loss(other, sparse, pseudo + 4, lam=0.5, detail=detail, **kw(detail)),
                                   total, rtol=1e-4, atol=1e-4)
    # The right metric scale with the teacher's detail is (almost) free.
    assert L.dsd_loss(gt, sparse, 2 * gt + 1).item() < 1e-3
    with pytest.raises(ValueError, match="detail"):
        L.dsd_loss(other, sparse, pseudo, detail="l2")


def _tiles(frame, boxes, size=None):
    out = []
    for y0, x0, h, w in boxes.long().tolist():
        t = frame[..., y0:y0 + h, x0:x0 + w]
        if size is not None:
            t = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
        out.append(t)
    return torch.stack(out, 1)


def test_gpct_is_zero_when_overlaps_agree_and_sees_only_overlaps():
    frame, _ = _scene(h=48, w=64)
    boxes = torch.tensor([[0, 0, 32, 40], [0, 24, 32, 40], [16, 0, 32, 40], [16, 24, 32, 40]], dtype=torch.float64)
    tiles = _tiles(frame, boxes)  # (B, 4, 1, 32, 40)
    assert L.gpct_consistency_loss(tiles, boxes).item() < 1e-10
    assert len(L.overlap_pairs(boxes)) == 6
    outside = tiles.clone()
    outside[:, 0, :, :14, :22] += 5  # tile 0 only, in pixels no other tile covers
    assert L.gpct_consistency_loss(outside, boxes).item() < 1e-10
    inside = tiles.clone()
    inside[:, 0, :, 20:, 30:] += 1  # the centre, shared by all four tiles
    loss = L.gpct_consistency_loss(inside, boxes)
    assert loss.item() > 0.01
    mask = torch.ones_like(inside, dtype=torch.bool)
    mask[:, 0, :, 20:, 30:] = False
    assert L.gpct_consistency_loss(inside, boxes, mask).item() < 1e-10
    per_sample = torch.stack([boxes, boxes + torch.tensor([0.0, 0.0, 0.0, 0.0])])
    torch.testing.assert_close(L.gpct_consistency_loss(inside, per_sample), loss)
    with pytest.raises(ValueError, match="boxes"):
        L.gpct_consistency_loss(tiles, boxes[:3])
    with pytest.raises(ValueError, match="depths"):
        L.gpct_consistency_loss(tiles[:, 0], boxes)


def test_gpct_with_tiles_resized_from_larger_boxes():
    h, w = 64, 96
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    frame = (3 + 0.1 * yy + 0.05 * xx)[None, None]  # linear: bilinear resampling is exact
    boxes = torch.tensor([[0, 0, 48, 64], [0, 32, 48, 64], [16, 0, 48, 64], [16, 32, 48, 64]], dtype=torch.float64)
    tiles = _tiles(frame, boxes, size=(24, 32))  # each tile half its box
    assert L.gpct_consistency_loss(tiles, boxes).item() < 1e-8
    assert L.gpct_consistency_loss(tiles + torch.arange(4.0).view(1, 4, 1, 1, 1), boxes).item() > 0.5


def test_bfm_masks_disagreeing_pixels_but_keeps_agreed_edges():
    h, w = 32, 48
    x = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(1, 1, h, w)
    coarse = 1 + 9 * x + 10 * (x > 0.5)  # a step both maps share
    gt = coarse.clone()
    gt[..., 4:12, 4:12] *= 4  # a "transparent" patch: gt reads the background far behind
    gt[..., :, 24] = coarse[..., :, 23]  # the step one pixel late in gt: ratio > 2 there, but an agreed edge
    keep = L.bfm_mask(coarse, gt)
    assert not keep[..., 6:10, 6:10].any()
    assert keep[..., 20:, 30:].all() and keep[..., 20:, :20].all()
    assert keep[..., :, 24].all()
    assert not L.bfm_mask(coarse, gt, edge_threshold=1e9)[..., :, 24].any()  # no edge rescue -> masked
    invalid = gt.clone()
    invalid[..., :2, :] = 0
    assert not L.bfm_mask(coarse, invalid)[..., :2, :].any()
    with pytest.raises(ValueError, match="ratio"):
        L.bfm_mask(coarse, gt, ratio=1.0)


def test_bfm_keeps_correct_ground_truth_at_the_normalised_minimum():
    """PRO's ratio with a vanishing floor divides ~0 by ~0 at each tile's nearest pixels: a coarse
    map that is merely 5 % off there lost them all. The floor keeps correct ground truth."""
    g = torch.Generator().manual_seed(0)
    gt = 2 + 18 * torch.rand(4, 1, 32, 48, generator=g)
    coarse = gt * (1 + 0.05 * torch.randn(4, 1, 32, 48, generator=g))
    keep = L.bfm_mask(coarse, gt)
    near = gt < torch.quantile(gt.flatten(1), 0.1, dim=1).view(4, 1, 1, 1)
    assert keep[near].float().mean() > 0.95 and keep.float().mean() > 0.97
    with pytest.raises(ValueError, match="floor"):
        L.bfm_mask(coarse, gt, floor=0.0)


def test_log_l1_loss_is_metric_and_matches_gradients():
    d, _ = _scene(b=2, h=24, w=32)
    assert L.log_l1_loss(d, d).item() < 1e-6
    d = d.clone()
    # a 10 % scale error costs ln 1.1 (metric) and nothing in the gradient term
    torch.testing.assert_close(L.log_l1_loss(1.1 * d, d), torch.tensor(math.log(1.1)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(L.log_l1_loss(1.1 * d, d, grad=0.0), L.log_l1_loss(1.1 * d, d), rtol=1e-5, atol=1e-6)
    blurred = torch.nn.functional.avg_pool2d(d, 5, 1, 2, count_include_pad=False)
    assert L.log_l1_loss(blurred, d, grad=1.0) > L.log_l1_loss(blurred, d, grad=0.0) > 0
    empty = L.log_l1_loss(d.clone().requires_grad_(), torch.zeros_like(d))
    assert empty.item() == 0.0
    empty.backward()


def test_relative_far_charges_too_far_pixels_their_relative_error():
    e = torch.tensor([-2.0, -1e-3, 0.0, 1e-3, math.log(6.0), 3.0, 4.0], requires_grad=True)
    cost = L.relative_far(e)
    torch.testing.assert_close(cost[:4], torch.tensor([2.0, 1e-3, 0.0, 1e-3]), rtol=1e-3, atol=1e-6)
    assert cost[4].item() == pytest.approx(5.0, rel=1e-5)  # read 6x too far: 500 % wrong, not ln 6
    # past e = 3 it grows linearly with the slope it has there, so one far pixel cannot swamp a batch
    assert (cost[6] - cost[5]).item() == pytest.approx(math.exp(3.0), rel=1e-5)
    cost.sum().backward()
    assert torch.isfinite(e.grad).all() and e.grad[0].item() == -1.0


def test_log_l1_loss_far_relative_prefers_the_near_side_of_an_ambiguous_edge():
    # a tile half at 5 m and half at 30 m predicted flat: L1 on ln depth charges the near and the far
    # guess alike; with over-estimates charged relatively the near guess is the cheaper one
    gt = torch.full((1, 1, 8, 8), 5.0)
    gt[..., 4:] = 30.0
    near, far = torch.full_like(gt, 5.0), torch.full_like(gt, 30.0)
    assert L.log_l1_loss(near, gt, grad=0.0).item() == pytest.approx(L.log_l1_loss(far, gt, grad=0.0).item())
    near_cost = L.log_l1_loss(near, gt, grad=0.0, far=1.0).item()
    far_cost = L.log_l1_loss(far, gt, grad=0.0, far=1.0).item()
    assert near_cost == pytest.approx(0.5 * math.log(6.0), rel=1e-5) and far_cost == pytest.approx(2.5, rel=1e-5)
    # a share of it: half way between the two charges
    half = L.log_l1_loss(far, gt, grad=0.0, far=0.5).item()
    assert half == pytest.approx(0.5 * (2.5 + 0.5 * math.log(6.0)), rel=1e-5)
    # limited to a mask: only its pixels pay the relative charge
    left = torch.zeros_like(gt, dtype=torch.bool)
    left[..., :2] = True
    assert L.log_l1_loss(far, gt, grad=0.0, far=1.0, far_mask=~left & (gt < 10)).item() == pytest.approx(
        0.25 * 5.0 + 0.25 * math.log(6.0), rel=1e-5)
    assert L.log_l1_loss(far, gt, grad=0.0, far=1.0, far_mask=torch.zeros_like(left)).item() == pytest.approx(
        0.5 * math.log(6.0), rel=1e-5)
    # small errors cost what they cost under L1 on ln depth
    d, _ = _scene(b=2, h=24, w=32)
    torch.testing.assert_close(L.log_l1_loss(1.01 * d, d, far=1.0), L.log_l1_loss(1.01 * d, d), rtol=1e-2, atol=0)
    with pytest.raises(ValueError, match="far"):
        L.log_l1_loss(d, d, far=1.5)


EMPTY_CASES = {
    "silog": lambda p, t: L.silog_loss(p, t),
    "ssi": lambda p, t: L.ssi_loss(p, t),
    "ssigm": lambda p, t: L.ssigm_loss(p, t),
    "local_ssigm": lambda p, t: L.local_ssigm_loss(p, t, window=8, num_windows=5),
    "ranking": lambda p, t: L.edge_guided_ranking_loss(p, t, num_edge_samples=10, num_random_pairs=10),
    "dsd": lambda p, t: L.dsd_loss(p, t, t),
    "gpct": lambda p, t: L.gpct_consistency_loss(p.unsqueeze(1).expand(-1, 2, -1, -1, -1),
                                                 torch.tensor([[0.0, 0, 16, 16], [0, 32, 16, 16]])),
}


@pytest.mark.parametrize("name", sorted(EMPTY_CASES))
def test_empty_mask_gives_zero_not_nan(name):
    pred = (1 + torch.rand(2, 1, 16, 16)).requires_grad_()
    loss = EMPTY_CASES[name](pred, torch.zeros(2, 1, 16, 16))
    assert torch.isfinite(loss) and loss.item() == 0
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    keep = L.bfm_mask(pred.detach(), torch.zeros(2, 1, 16, 16))
    assert not keep.any()


def test_edge_band_mask_and_weighted_log_l1():
    d = torch.full((1, 1, 10, 12), 10.0)
    d[..., 6:] = 2.0  # a step between columns 5 and 6
    band = L.edge_band_mask(d, d > 0, radius=2)
    assert band[0, 0, :, 3:9].all() and not band[0, 0, :, :3].any() and not band[0, 0, :, 9:].any()
    assert not L.edge_band_mask(torch.full((1, 1, 8, 8), 5.0), torch.ones(1, 1, 8, 8, dtype=torch.bool)).any()
    # a uniform error is the same mean whatever the weights; an error only off the band is down-weighted
    torch.testing.assert_close(L.log_l1_loss(1.1 * d, d, weight=1 + 4 * band.float()), L.log_l1_loss(1.1 * d, d))
    off_band = torch.where(band, d, 1.1 * d)
    assert L.log_l1_loss(off_band, d, grad=0.0, weight=1 + 4 * band.float()) < L.log_l1_loss(off_band, d, grad=0.0)


def test_the_stage_depth_term_takes_the_configured_far_charge():
    gt = torch.full((1, 1, 8, 8), 5.0)
    gt[..., 4:] = 30.0
    far, mask = torch.full_like(gt, 30.0), torch.ones_like(gt, dtype=torch.bool)

    def term(share, band=False):
        loss = {"far": share, "far_band": band, "edge_weight": 0.0, "grad": 0.0}
        return Stage.depth_term(SimpleNamespace(cfg=config_from_dict({"loss": loss})), far, gt, mask).item()

    assert term(0.0) == pytest.approx(0.5 * math.log(6.0), rel=1e-5)
    assert term(1.0) == pytest.approx(2.5, rel=1e-5)
    # within the edge band only: the near pixels there cost 5, the others ln 6
    band = L.edge_band_mask(gt, mask)
    near = gt < 10
    assert 0 < (band & near).sum() < near.sum()
    expected = torch.where(band & near, 5.0, torch.where(near, math.log(6.0), 0.0)).mean().item()
    assert term(1.0, band=True) == pytest.approx(expected, rel=1e-5)
