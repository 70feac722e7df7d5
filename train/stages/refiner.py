"""Refiner stages: Noisy Pretraining, and supervised training with GPCT (+ optional BFM).

Tiles are cut from the frame exactly as the runtime cuts them (:class:`edgedepth.tiling.Tiling`'s
grid, the DESIGN crop semantics of the native tile engine) by :class:`..data.TileItems`; here the
frozen coarse model runs on the items' coarse input and its depth and features are cropped at the
same boxes (scaled to each map) with :mod:`edgedepth.tiling_torch`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from edgedepth import metrics as M
from edgedepth import tiling_torch

from ..checkpoint import load_refiner_weights, read_meta
from ..config import Config
from ..data import TileItems, WholeFrameItems
from ..losses import bfm_mask, gpct_consistency_loss
from ..models.refiner import log_depth
from ..pipeline import coarse_depth, refine_frame
from .base import Stage, build_or_load_coarse, frame_arrays, frame_metrics, frozen, load_prefixed


@dataclass
class TileBatch:
    """Refiner inputs and targets for N = B x G tiles (B frames, G tiles of a 2x2 group each)."""

    rgb: torch.Tensor  # (N, 3, th, tw) normalised
    coarse: torch.Tensor  # (N, 1, th, tw) metres
    guidance: list[torch.Tensor]  # (N, C_k, h_k, w_k)
    gt: torch.Tensor  # (N, 1, th, tw) metres, 0 = invalid
    valid: torch.Tensor  # (N, 1, th, tw) bool
    reliable: torch.Tensor  # (N, 1, th, tw) bool (the source's mask)
    boxes: torch.Tensor  # (B, G, 4) frame pixels
    per_frame: int
    # With loss.upsample joint_bilateral or guided: the runtime's upsampling from the tile size to
    # the ground truth's, guided by the tiles' colours (``apply`` takes depth in metres).
    upsample: Optional[tiling_torch.JointWeights | tiling_torch.GuidedFit] = None


def build_refiner(cfg: Config, coarse: nn.Module, device: torch.device) -> nn.Module:
    from ..models.refiner import create_refiner

    m = cfg.model
    refiner = create_refiner(m.refiner, coarse, tile_size=m.tile_size, **m.refiner_kwargs)
    if m.init_refiner:
        load_refiner_weights(m.init_refiner, refiner)
        if read_meta(m.init_refiner).get("train", {}).get("stage") == NoisyPretrainStage.name:
            # Pretraining taught the trunk (encoder, GDUs) to read and denoise its guidance, but its
            # heads predicted whole depth from a flat prior; fine-tuning predicts a residual over
            # the real coarse depth, so it starts from zero heads (refiner == coarse at step 0).
            refiner.init_residual_heads()
    return refiner.to(device)


def crop_maps(maps: torch.Tensor, boxes: torch.Tensor, frame_hw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop (B, C, h, w) maps covering frames of ``frame_hw`` (B, 2) at ``boxes`` (B, G, 4) frame
    pixels, scaled to the maps: -> (B * G, C, *size)."""
    h, w = maps.shape[-2:]
    fh, fw = frame_hw[:, 0].double(), frame_hw[:, 1].double()
    scale = torch.stack([h / fh, w / fw, h / fh, w / fw], 1)[:, None, :]
    out = tiling_torch.crop_resize(maps, (boxes.double().cpu() * scale.cpu()), size)
    return out.reshape(-1, *out.shape[2:])


def at_gt(maps: torch.Tensor, tiles: TileBatch) -> torch.Tensor:
    """Tile maps (N, C, th, tw) at the ground truth's resolution when ``loss.scale`` > 1: upsampled
    bilinearly (half-pixel centres, the stitch's resize of a tile into its box), or guided by the
    tiles' colours as the runtime's joint bilateral or guided-filter upsampling does (``loss.upsample``)."""
    size = tuple(tiles.gt.shape[-2:])
    if tuple(maps.shape[-2:]) == size:
        return maps
    if tiles.upsample is not None:
        return tiles.upsample.apply(maps)
    return torch.nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def gpct_term(pred: torch.Tensor, tiles: TileBatch) -> torch.Tensor:
    """GPCT consistency of each frame's tile group, on ln depth: squared differences on the overlaps,
    summed over tile pairs (a 10 % disagreement costs the same near and far)."""
    n, _, th, tw = pred.shape
    groups = n // tiles.per_frame
    return gpct_consistency_loss(log_depth(pred).view(groups, tiles.per_frame, 1, th, tw), tiles.boxes.cpu())


class _RefinerStageBase(Stage):
    """Frozen coarse model + trainable refiner; checkpoints hold both."""

    def __init__(self, cfg: Config, device: torch.device, coarse: Optional[nn.Module] = None) -> None:
        super().__init__(cfg, device)
        self.coarse = frozen(coarse if coarse is not None else build_or_load_coarse(cfg, device))
        self.refiner = build_refiner(cfg, self.coarse, device)
        self.trainable = self.refiner
        if cfg.data.oracle_coarse and self.refiner.uses_coarse_features:
            raise ValueError("config field 'data.oracle_coarse' needs a refiner without coarse features "
                             f"(a -dg variant); {cfg.model.refiner!r} reads them")

    def export_models(self) -> tuple[nn.Module, Optional[nn.Module], dict]:
        return self.coarse, self.refiner, self.meta(self.coarse, self.refiner)

    def load_trainable(self, tensors: dict[str, torch.Tensor]) -> None:
        load_prefixed(self.refiner, tensors, "refiner.")

    def grid_fn(self):
        return partial(self.cfg.tiling.grid, tile_size=tuple(self.refiner.tile_size))

    def tile_items(self, source: Any, tile_sizes: list[tuple[int, int]]) -> TileItems:
        k = self.cfg.loss.scale
        return TileItems(source, tuple(self.coarse.input_size), tile_sizes, self.grid_fn(), self.coarse.mean,
                         self.coarse.std, hflip=self.cfg.data.hflip, seed=self.cfg.train.seed,
                         oracle=self.cfg.data.oracle_coarse, gt_size=(k * tile_sizes[0][0], k * tile_sizes[0][1]),
                         gt_image=self.colour_loss, shade=self.cfg.data.shade,
                         shade_coarse=self.cfg.data.shade_coarse, fit=self.coarse_fit(self.coarse))

    @property
    def colour_loss(self) -> bool:
        """Whether the loss sees the prediction through one of the runtime's colour-guided upsamplings."""
        return self.cfg.loss.scale > 1 and self.cfg.loss.upsample in ("joint_bilateral", "guided")

    def cut_tiles(self, batch: dict, coarse: Optional[nn.Module] = None, refiner: Optional[nn.Module] = None,
                  rgb_key: str = "rgb0") -> TileBatch:
        """Run the frozen coarse model on the items' coarse inputs (or take the oracle map) and crop
        its depth and features at the items' boxes."""
        coarse, refiner = coarse or self.coarse, refiner or self.refiner
        rgb = batch[rgb_key]
        b, g = rgb.shape[:2]
        size = tuple(refiner.tile_size)
        boxes, frame_hw = batch["boxes"], batch["frame_hw"]
        if "oracle" in batch:
            cdepth, feats = batch["oracle"].float(), []
        else:
            with torch.no_grad():
                cdepth, feats = coarse(batch["coarse_image"])
                cdepth, feats = cdepth.float(), [f.float() for f in feats]
        # the coarse maps cover the coarse input, where a frame of another aspect is padded (TileItems)
        cboxes, chw = batch["coarse_boxes"], batch["coarse_hw"]
        guidance = [crop_maps(feats[i], cboxes, chw, (h, w))
                    for (_, h, w), i in zip(refiner.guidance, refiner.guide_indices)]
        flat = lambda t: t.reshape(b * g, *t.shape[2:])
        tiles = TileBatch(flat(rgb), crop_maps(cdepth, cboxes, chw, size), guidance, flat(batch["gt"]),
                          flat(batch["valid"]), flat(batch["reliable"]), boxes, g)
        if "image_gt" in batch:
            mean = tiling_torch.host_to_device(self.coarse.mean, rgb.device, torch.float32).view(1, 3, 1, 1)
            std = tiling_torch.host_to_device(self.coarse.std, rgb.device, torch.float32).view(1, 3, 1, 1)
            colours, t = tiles.rgb * std + mean, self.cfg.tiling
            tiles.upsample = (tiling_torch.GuidedFit(colours, flat(batch["image_gt"]), t.guided_step, t.guided_radius,
                                                     t.guided_eps)
                              if self.cfg.loss.upsample == "guided" else
                              tiling_torch.joint_weights(colours, flat(batch["image_gt"]), t.joint_sigma))
        return tiles

    @torch.no_grad()
    def validate_batch(self, batch: dict) -> dict[str, float]:
        """A whole frame through the runtime's pipeline (every tile refined once and stitched), scored
        against the ground truth next to the coarse depth alone, plus the tiles' consistency error."""
        image, gt, reliable = frame_arrays(batch)
        fit = self.coarse_fit(self.coarse)
        oracle = None
        if self.cfg.data.oracle_coarse:
            from ..data import log_area_reduce

            oracle = log_area_reduce(gt, tuple(self.coarse.input_size))
            coarse_map = oracle
        else:
            coarse_map = coarse_depth(self.coarse, image, fit)
        out = refine_frame(self.coarse, self.refiner, image, self.cfg.tiling, coarse_depth=oracle, fit=fit)
        vmax = self.cfg.data.valid_max
        scores = frame_metrics(out.depth, gt, reliable, vmax, edges=True)
        scores.update(frame_metrics(coarse_map, gt, reliable, vmax, prefix="coarse_", edges=True))
        boxes = out.grid.boxes
        if np.all(boxes == np.round(boxes)):
            from edgedepth import tiling

            tiles = [tiling.crop_resize(t, [[0, 0, *t.shape[-2:]]], (int(bh), int(bw)))[0, 0]
                     for t, (_, _, bh, bw) in zip(out.tiles, boxes)]
            scores["consistency"] = M.consistency_error(tiles, boxes)
        return scores


class NoisyPretrainStage(_RefinerStageBase):
    """Noisy Pretraining (PRV2): whole low-resolution frames with an uninformative coarse depth and
    N(0, 1) coarse features. Its checkpoint initialises the refiner stage (``model.init_refiner``)."""

    name = "noisy-pretrain"

    def items(self, source: Any) -> Dataset:
        size = tuple(self.refiner.tile_size)
        return WholeFrameItems(source, size, size, self.coarse.mean, self.coarse.std, hflip=self.cfg.data.hflip,
                               seed=self.cfg.train.seed)

    def _noise(self, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # Drawn from a generator seeded by the frame indices: reproducible across resume and ranks.
        gen = torch.Generator(device="cpu").manual_seed(int(batch["index"].sum()) * 7919 + self.cfg.train.seed)
        prior, noise = self.refiner.noisy_inputs(batch["image"].shape[0], generator=gen)
        device = batch["image"].device
        return prior.to(device), [n.to(device) for n in noise]

    def train_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        prior, noise = self._noise(batch)
        pred = model(batch["image"], prior, *noise).float()
        loss = self.cfg.loss.weight * self.depth_term(pred, batch["depth"], self.loss_mask(batch["valid"],
                                                                                           batch["reliable"]))
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def validate_batch(self, batch: dict) -> dict[str, float]:
        image, gt, reliable = frame_arrays(batch)
        size = tuple(self.refiner.tile_size)
        source = _ListSource([{"image": image, "depth": gt, "reliable": reliable, "index": 0}])
        x = WholeFrameItems(source, size, size, self.coarse.mean, self.coarse.std)[0]
        prior, noise = self.refiner.noisy_inputs(1, generator=torch.Generator().manual_seed(0))
        param = next(self.refiner.parameters())
        pred = self.refiner(x["image"][None].to(param.device), prior.to(param.device),
                            *[n.to(param.device) for n in noise])
        return frame_metrics(pred[0, 0].float().cpu().numpy(), gt, reliable, self.cfg.data.valid_max)


class _ListSource(list):
    """A frame source over a list of frames."""

    def frame(self, index: int) -> dict:
        return self[index]


class RefinerStage(_RefinerStageBase):
    """Supervised refiner training with GPCT: per frame, the four tiles of a random 2x2
    neighbourhood of the runtime grid are refined in one forward/backward; loss = the depth term on
    the ground truth (+ on the C2F intermediate depth) + ``loss.gpct`` x consistency on the overlaps.
    With ``loss.bfm`` the ground truth is Bias-Free-Masked against the coarse tile first."""

    name = "refiner"

    def items(self, source: Any) -> Dataset:
        return self.tile_items(source, [tuple(self.refiner.tile_size)])

    def train_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        tiles = self.cut_tiles(batch)
        out = model(tiles.rgb, tiles.coarse, *tiles.guidance, aux=True)
        pred = out["depth"].float()
        mask = self.loss_mask(tiles.valid, tiles.reliable)
        lc = self.cfg.loss
        parts: dict[str, float | torch.Tensor] = {}
        if lc.bfm:
            keep = bfm_mask(at_gt(tiles.coarse, tiles), tiles.gt, tiles.valid)
            # How BFM does its job where the source knows the truth: the share of unreliable pixels
            # it drops (it exists for them) and of reliable ones it drops (correct ground truth lost).
            unreliable, reliable = tiles.valid & ~tiles.reliable, tiles.valid & tiles.reliable
            if bool(unreliable.any()):
                parts["bfm_unreliable_dropped"] = (~keep & unreliable).sum() / unreliable.sum()
            parts["bfm_reliable_dropped"] = (~keep & reliable).sum() / reliable.sum().clamp_min(1)
            mask = mask & keep
        sup = self.depth_term(at_gt(pred, tiles), tiles.gt, mask)
        loss = lc.weight * sup
        parts.update(depth=sup.detach(), kept=mask.float().mean())
        if lc.c2f > 0 and "c2f_depth" in out:
            c2f = self.depth_term(at_gt(out["c2f_depth"].float(), tiles), tiles.gt, mask)
            loss = loss + lc.c2f * c2f
            parts["c2f"] = c2f.detach()
        if lc.gpct > 0:
            cons = gpct_term(pred, tiles)
            loss = loss + lc.gpct * cons
            parts["gpct"] = cons.detach()
        parts["loss"] = loss.detach()
        parts["tiles"] = float(pred.shape[0])
        return loss, parts
