"""Stage "distill": teacher -> student on real-like data with sparse ground truth (PatchRefiner DSD).

The teacher (a coarse + refiner checkpoint trained on synthetic data) refines the same tile boxes
the student sees, at its own tile size; its output, resized to the student's tiles, is the dense
pseudo-label. The student's loss is the DSD composite (SILog against the sparse ground truth for
scale + ``loss.detail_weight`` x a scale-free detail loss against the pseudo-label) + GPCT.

The student refines the teacher's coarse model unless ``model.coarse_checkpoint`` names another
(it must take the same input size: both see the same coarse input).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..checkpoint import load_models
from ..config import Config
from ..losses import dsd_loss
from .base import build_or_load_coarse, frozen, resize_maps
from .refiner import RefinerStage, at_gt, gpct_term


class DistillStage(RefinerStage):
    name = "distill"

    def __init__(self, cfg: Config, device: torch.device) -> None:
        t_coarse, t_refiner, _ = load_models(cfg.model.teacher_checkpoint, map_location=device)
        if t_refiner is None:
            raise ValueError(f"config field 'model.teacher_checkpoint': {cfg.model.teacher_checkpoint!r} holds no refiner")
        self.teacher_coarse, self.teacher = frozen(t_coarse), frozen(t_refiner)
        own = build_or_load_coarse(cfg, device) if cfg.model.coarse_checkpoint else None
        if own is not None and tuple(own.input_size) != tuple(t_coarse.input_size):
            raise ValueError(f"config field 'model.coarse_checkpoint': its input size {tuple(own.input_size)} differs "
                             f"from the teacher's coarse model {tuple(t_coarse.input_size)}; both see one coarse input")
        # The student is built against the coarse model it will refine (the teacher's by default).
        super().__init__(cfg, device, coarse=own if own is not None else t_coarse)

    def items(self, source: Any) -> Dataset:
        sizes = [tuple(self.refiner.tile_size)]
        if tuple(self.teacher.tile_size) != sizes[0]:
            sizes.append(tuple(self.teacher.tile_size))
        return self.tile_items(source, sizes)

    def _detail_kwargs(self, pred: torch.Tensor, rgb: torch.Tensor, generator: torch.Generator) -> dict:
        lc = self.cfg.loss
        if lc.detail == "local_ssigm":
            return {"window": min(lc.ssigm_window, *pred.shape[-2:]), "num_windows": lc.ssigm_windows,
                    "generator": generator}
        if lc.detail == "ranking":  # the tiles' colours where the loss looks (at_gt is for depth)
            return {"image": resize_maps(rgb, tuple(pred.shape[-2:])), "generator": generator}
        return {}

    def train_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        tiles = self.cut_tiles(batch)
        with torch.no_grad():
            teacher_key = "rgb1" if "rgb1" in batch else "rgb0"
            t_tiles = self.cut_tiles(batch, self.teacher_coarse, self.teacher, teacher_key)
            pseudo = self.teacher(t_tiles.rgb, t_tiles.coarse, *t_tiles.guidance).float()
            if tuple(pseudo.shape[-2:]) != tuple(tiles.gt.shape[-2:]):
                pseudo = resize_maps(pseudo, tuple(tiles.gt.shape[-2:]))
        pred = model(tiles.rgb, tiles.coarse, *tiles.guidance).float()
        # Window positions / pair samples follow the frame indices: reproducible on resume and ranks.
        gen = torch.Generator(device="cpu").manual_seed(int(batch["index"].sum()) * 7919 + self.cfg.train.seed)
        lc = self.cfg.loss
        pred_gt = at_gt(pred, tiles)
        dsd = dsd_loss(pred_gt, tiles.gt, pseudo, self.loss_mask(tiles.valid, tiles.reliable), lam=lc.detail_weight,
                       detail=lc.detail, **self._detail_kwargs(pred_gt, tiles.rgb, gen))
        cons = gpct_term(pred, tiles)
        loss = lc.weight * dsd + lc.gpct * cons
        return loss, {"dsd": dsd.detach(), "gpct": cons.detach(), "loss": loss.detach(),
                      "tiles": float(pred.shape[0])}
