"""Stage "coarse": train a coarse model (frame -> metric depth) with SILog on whole frames."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..config import Config
from ..losses import silog_loss
from .base import Stage, build_or_load_coarse, coarse_input, depth_metrics, load_prefixed, to_frame


class CoarseStage(Stage):
    """The whole frame, resized to the model's input with the crop of the whole-frame box; the
    predicted depth is resized back to the frame and scored against the full-resolution truth."""

    name = "coarse"

    def __init__(self, cfg: Config, device: torch.device) -> None:
        super().__init__(cfg, device)
        self.coarse = build_or_load_coarse(cfg, device)
        self.trainable = self.coarse

    def _loss_mask(self, batch: dict) -> torch.Tensor:
        valid = batch["depth"] > 0
        return valid & batch["reliable"] if self.cfg.data.use_mask else valid

    def train_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        depth, _ = model(coarse_input(batch["image"], self.coarse))
        pred = to_frame(depth.float(), tuple(batch["depth"].shape[-2:]))
        loss = self.cfg.loss.silog * silog_loss(pred, batch["depth"], self._loss_mask(batch))
        return loss, {"loss": float(loss.detach())}

    def validate_batch(self, batch: dict) -> dict[str, float]:
        depth, _ = self.coarse(coarse_input(batch["image"], self.coarse))
        pred = to_frame(depth.float(), tuple(batch["depth"].shape[-2:]))
        valid = (batch["depth"] > 0) & batch["reliable"]
        out = {"loss": float(silog_loss(pred, batch["depth"], valid))}
        out.update(depth_metrics(pred, batch["depth"], valid))
        return out

    def export_models(self) -> tuple[nn.Module, Optional[nn.Module], dict]:
        return self.coarse, None, self.meta(self.coarse, None)

    def load_trainable(self, tensors: dict[str, torch.Tensor]) -> None:
        load_prefixed(self.coarse, tensors, "coarse.")
