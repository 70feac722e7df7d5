"""Refiner stages: Noisy Pretraining, and supervised training with GPCT + BFM.

Tiles are cut from the frame exactly as the runtime cuts them (``TileGrid.from_overlap_ratio``,
DESIGN crop semantics through :mod:`edgedepth.tiling_torch`): RGB with the tile's frame box,
coarse depth and coarse features with that box scaled to each map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ..checkpoint import load_refiner_weights, read_meta
from ..config import Config
from ..data import TileLayout, crop_frames, crop_valid, normalise, scaled_boxes, whole_box
from ..losses import bfm_mask, gpct_consistency_loss, silog_loss
from .base import Stage, build_or_load_coarse, coarse_input, depth_metrics, frozen, load_prefixed, to_frame


# Depth (metres) the Noisy Pretraining heads start at: mid-range of the 0.5-80 m procedural scenes.
NOISY_HEAD_DEPTH = 10.0


@dataclass
class TileBatch:
    """Refiner inputs and targets for N tiles (n_frames groups of ``per_frame`` tiles)."""

    rgb: torch.Tensor  # (N, 3, th, tw) normalised
    coarse: torch.Tensor  # (N, 1, th, tw) metres
    guidance: list[torch.Tensor]  # (N, C_k, h_k, w_k)
    gt: torch.Tensor  # (N, 1, th, tw) metres, 0 = invalid
    valid: torch.Tensor  # (N, 1, th, tw) bool
    reliable: torch.Tensor  # (N, 1, th, tw) bool (the Sample's mask)
    boxes: torch.Tensor  # (N, 4) frame pixels
    per_frame: int


def build_refiner(cfg: Config, coarse: nn.Module, device: torch.device) -> nn.Module:
    from ..models.refiner import create_refiner

    m = cfg.model
    refiner = create_refiner(m.refiner, coarse, tile_size=m.tile_size, **m.refiner_kwargs)
    if cfg.train.stage == NoisyPretrainStage.name:
        # Zero coarse depth + zero residual heads = max(0 + 0, 0): a dead ReLU that never trains.
        refiner.init_residual_heads(pretrain_depth=NOISY_HEAD_DEPTH)
    if m.init_refiner:
        load_refiner_weights(m.init_refiner, refiner)
        if read_meta(m.init_refiner).get("train", {}).get("stage") == NoisyPretrainStage.name:
            # Pretraining taught the trunk (encoder, GDUs) to read and denoise its guidance, but its
            # heads predicted whole depth from a zero coarse map; fine-tuning predicts a residual over
            # the real coarse depth, so it starts from zero heads (refiner == coarse at step 0).
            refiner.init_residual_heads()
    return refiner.to(device)


def cut_tiles(batch: dict, coarse: nn.Module, refiner: nn.Module, tile_ids: list[list[int]],
              layout: TileLayout) -> TileBatch:
    """Run the frozen coarse model on whole frames and crop everything to the chosen tiles
    (``tile_ids[b]``: grid tile ids of frame b, the same count for every frame)."""
    images, depth = batch["image"], batch["depth"]
    frame_hw = tuple(images.shape[-2:])
    with torch.no_grad():
        cdepth, feats = coarse(coarse_input(images, coarse))
        cdepth, feats = cdepth.float(), [f.float() for f in feats]
    boxes = layout.boxes[torch.tensor(tile_ids)]  # (B, per_frame, 4) frame pixels
    size = tuple(refiner.tile_size)

    def crop(src: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
        return crop_frames(src, scaled_boxes(boxes, frame_hw, tuple(src.shape[-2:])), out)

    rgb = normalise(crop(images.float(), size), coarse.mean, coarse.std)
    guidance = []
    if refiner.uses_coarse_features:
        for (_, h, w), f in zip(refiner.guidance, (feats[i] for i in refiner.guide_indices)):
            guidance.append(crop(f, (h, w)))
    gt, valid = crop_valid(depth, boxes, size)
    reliable = crop(batch["reliable"].float(), size) > 1.0 - 1e-4
    return TileBatch(rgb, crop(cdepth, size), guidance, gt, valid, reliable,
                     boxes.reshape(-1, 4).to(images.device), boxes.shape[1])


class _RefinerStageBase(Stage):
    """Frozen coarse model + trainable refiner; checkpoints hold both."""

    def __init__(self, cfg: Config, device: torch.device) -> None:
        super().__init__(cfg, device)
        self.coarse = frozen(build_or_load_coarse(cfg, device))
        self.refiner = build_refiner(cfg, self.coarse, device)
        self.trainable = self.refiner
        self.layout = TileLayout.from_config(cfg)

    def export_models(self) -> tuple[nn.Module, Optional[nn.Module], dict]:
        return self.coarse, self.refiner, self.meta(self.coarse, self.refiner)

    def load_trainable(self, tensors: dict[str, torch.Tensor]) -> None:
        load_prefixed(self.refiner, tensors, "refiner.")

    def _loss_valid(self, tiles: TileBatch) -> torch.Tensor:
        valid = tiles.valid
        return valid & tiles.reliable if self.cfg.data.use_mask else valid

    @torch.no_grad()
    def validate_batch(self, batch: dict) -> dict[str, float]:
        """Whole frames through the full pipeline: every tile refined once and stitched, scored
        against the ground truth next to the coarse depth alone; plus the tiles' consistency error."""
        from edgedepth import tiling_torch

        b = batch["image"].shape[0]
        n_tiles = self.layout.count
        ids = [list(range(n_tiles))] * b
        tiles = cut_tiles(batch, self.coarse, self.refiner, ids, self.layout)
        pred = self.refiner(tiles.rgb, tiles.coarse, *tiles.guidance).float()
        frame_hw = tuple(batch["depth"].shape[-2:])
        per = pred.view(b, n_tiles, 1, *pred.shape[-2:])
        boxes = self.layout.boxes.to(pred.device)
        stitched = torch.stack([tiling_torch.stitch(per[i], boxes, *frame_hw, window=self.cfg.tiling.window)
                                for i in range(b)])
        cdepth, _ = self.coarse(coarse_input(batch["image"], self.coarse))
        coarse_full = to_frame(cdepth.float(), frame_hw)
        valid = (batch["depth"] > 0) & batch["reliable"]
        out = {"loss": float(silog_loss(stitched, batch["depth"], valid))}
        out.update(depth_metrics(stitched, batch["depth"], valid))
        out.update(depth_metrics(coarse_full, batch["depth"], valid, prefix="coarse_"))
        # GPCT consistency of the top-left 2x2 group of the full grid, as in training.
        if self.layout.rows >= 2 and self.layout.cols >= 2:
            sel = torch.tensor(self.layout.group(0, 0))
            out["gpct"] = float(gpct_consistency_loss(per[:, sel], boxes[sel]))
        return out


class NoisyPretrainStage(_RefinerStageBase):
    """Noisy Pretraining (PRV2): whole low-resolution frames, coarse depth zeros, coarse features
    N(0, 1) noise, SILog. Its checkpoint initialises the refiner stage (``model.init_refiner``)."""

    name = "noisy-pretrain"

    def _inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
        images, depth = batch["image"], batch["depth"]
        b = images.shape[0]
        size = tuple(self.refiner.tile_size)
        box = whole_box(*images.shape[-2:]).expand(b, 1, 4)
        rgb = normalise(crop_frames(images.float(), box, size), self.coarse.mean, self.coarse.std)
        gt, valid = crop_valid(depth, box, size)
        # Noise drawn from a generator seeded by the frame indices: reproducible across resume and ranks.
        gen = torch.Generator(device="cpu").manual_seed(int(batch["index"].sum()) * 7919 + self.cfg.train.seed)
        zeros, noise = self.refiner.noisy_inputs(b, generator=gen)
        return rgb, zeros.to(images.device), [n.to(images.device) for n in noise], gt, valid

    def train_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        rgb, zeros, noise, gt, valid = self._inputs(batch)
        pred = model(rgb, zeros, *noise).float()
        loss = self.cfg.loss.silog * silog_loss(pred, gt, valid)
        return loss, {"loss": float(loss.detach())}

    @torch.no_grad()
    def validate_batch(self, batch: dict) -> dict[str, float]:
        rgb, zeros, noise, gt, valid = self._inputs(batch)
        pred = self.refiner(rgb, zeros, *noise).float()
        out = {"loss": float(silog_loss(pred, gt, valid))}
        out.update(depth_metrics(pred, gt, valid))
        return out


def gpct_term(pred: torch.Tensor, tiles: TileBatch) -> torch.Tensor:
    """GPCT consistency of each frame's tile group: squared differences on overlaps, summed over pairs."""
    n, _, th, tw = pred.shape
    groups = n // tiles.per_frame
    return gpct_consistency_loss(pred.view(groups, tiles.per_frame, 1, th, tw),
                                 tiles.boxes.view(groups, tiles.per_frame, 4))


class RefinerStage(_RefinerStageBase):
    """Supervised refiner training with GPCT: per frame, the four tiles of a random 2x2
    neighbourhood of the runtime grid are refined in one forward/backward; loss = SILog on the
    ground truth (Bias-Free-Masked) + ``loss.gpct`` x consistency on their overlaps."""

    name = "refiner"

    def train_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        groups = [self.layout.random_group(int(i), self.cfg.train.seed) for i in batch["index"]]
        tiles = cut_tiles(batch, self.coarse, self.refiner, groups, self.layout)
        pred = model(tiles.rgb, tiles.coarse, *tiles.guidance).float()
        mask = self._loss_valid(tiles)
        if self.cfg.loss.bfm:
            mask = mask & bfm_mask(tiles.coarse, tiles.gt, mask)
        sup = silog_loss(pred, tiles.gt, mask)
        cons = gpct_term(pred, tiles)
        loss = self.cfg.loss.silog * sup + self.cfg.loss.gpct * cons
        return loss, {"loss": float(loss.detach()), "silog": float(sup.detach()), "gpct": float(cons.detach()),
                      "bfm_kept": float(mask.float().mean())}
