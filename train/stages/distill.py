"""Stage "distill": teacher -> student on real-like data with sparse ground truth (PatchRefiner DSD).

The teacher (coarse + refiner checkpoint trained on synthetic data) refines the same tiles the
student sees; its output is the dense pseudo-label. The student's loss is the DSD composite
(SILog against the sparse ground truth for scale + ``loss.detail_weight`` x a scale-free detail
loss against the pseudo-label) + GPCT consistency over the tile group + optionally the SDDR
edge-guided gradient loss against self-distilled edge pseudo-labels.
"""
from __future__ import annotations

import torch
from torch import nn

from ..checkpoint import load_models
from ..config import Config
from ..losses import dsd_loss, edge_guided_gradient_loss, self_distilled_edges
from .base import frozen
from .refiner import RefinerStage, cut_tiles, gpct_term


class DistillStage(RefinerStage):
    name = "distill"

    def __init__(self, cfg: Config, device: torch.device) -> None:
        t_coarse, t_refiner, _ = load_models(cfg.model.teacher_checkpoint, map_location=device)
        if t_refiner is None:
            raise ValueError(f"config field 'model.teacher_checkpoint': {cfg.model.teacher_checkpoint!r} holds no refiner")
        super().__init__(cfg, device)
        self.teacher = frozen(t_refiner)
        # Without its own model.coarse_checkpoint the student refines the teacher's coarse model.
        self.shared_coarse = not cfg.model.coarse_checkpoint
        if self.shared_coarse:
            self.coarse = frozen(t_coarse)
        self.teacher_coarse = self.coarse if self.shared_coarse else frozen(t_coarse)

    def _detail_kwargs(self, pred: torch.Tensor, image: torch.Tensor, generator: torch.Generator) -> dict:
        lc = self.cfg.loss
        if lc.detail == "local_ssigm":
            return {"window": min(lc.ssigm_window, *pred.shape[-2:]), "num_windows": lc.ssigm_windows,
                    "generator": generator}
        if lc.detail == "ranking":
            return {"image": image, "generator": generator}
        return {}

    def train_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        groups = [self.layout.random_group(int(i), self.cfg.train.seed) for i in batch["index"]]
        tiles = cut_tiles(batch, self.coarse, self.refiner, groups, self.layout)
        with torch.no_grad():
            t_tiles = tiles if self.shared_coarse else cut_tiles(batch, self.teacher_coarse, self.teacher, groups, self.layout)
            pseudo = self.teacher(t_tiles.rgb, t_tiles.coarse, *t_tiles.guidance).float()
        pred = model(tiles.rgb, tiles.coarse, *tiles.guidance).float()
        # Window positions / pair samples follow the frame indices: reproducible on resume and ranks.
        gen = torch.Generator(device="cpu").manual_seed(int(batch["index"].sum()) * 7919 + self.cfg.train.seed)
        lc = self.cfg.loss
        dsd = dsd_loss(pred, tiles.gt, pseudo, self._loss_valid(tiles), lam=lc.detail_weight, detail=lc.detail,
                       **self._detail_kwargs(pred, tiles.rgb, gen))
        cons = gpct_term(pred, tiles)
        loss = lc.silog * dsd + lc.gpct * cons
        parts = {"dsd": float(dsd.detach()), "gpct": float(cons.detach())}
        if lc.edge_grad > 0:
            # SDDR: the coarse tile's edges, updated with the student's own (detached) prediction.
            edges = self_distilled_edges(tiles.coarse, [pred.detach()], [lc.ssigm_window])
            edge = edge_guided_gradient_loss(pred, edges, pseudo > 0)
            loss = loss + lc.edge_grad * edge
            parts["edge_grad"] = float(edge.detach())
        parts["loss"] = float(loss.detach())
        return loss, parts
