"""Stage "coarse": train a coarse model (frame -> metric depth) on whole frames."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data import WholeFrameItems
from ..pipeline import coarse_depth
from .base import Stage, build_or_load_coarse, frame_arrays, frame_metrics, load_prefixed, resize_maps


class CoarseStage(Stage):
    """The whole frame resized to the model's input (the runtime's whole-frame crop); the loss
    compares the predicted depth, resized to twice the input size, with the ground truth reduced to
    that size (only samples whose neighbours are all valid). Validation scores whole frames at full
    resolution."""

    name = "coarse"

    def __init__(self, cfg: Any, device: torch.device) -> None:
        super().__init__(cfg, device)
        self.coarse = build_or_load_coarse(cfg, device)
        self.trainable = self.coarse

    def items(self, source: Any) -> Dataset:
        h, w = self.coarse.input_size
        return WholeFrameItems(source, (h, w), (2 * h, 2 * w), self.coarse.mean, self.coarse.std,
                               hflip=self.cfg.data.hflip, seed=self.cfg.train.seed)

    def train_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        depth, _ = model(batch["image"])
        pred = resize_maps(depth.float(), tuple(batch["depth"].shape[-2:]))
        loss = self.cfg.loss.weight * self.depth_term(pred, batch["depth"], self.loss_mask(batch["valid"],
                                                                                           batch["reliable"]))
        return loss, {"loss": loss.detach()}

    def validate_batch(self, batch: dict) -> dict[str, float]:
        image, gt, reliable = frame_arrays(batch)
        depth = coarse_depth(self.coarse, image, self.coarse_fit(self.coarse))
        return frame_metrics(depth, gt, reliable, self.cfg.data.valid_max, edges=True)

    def export_models(self) -> tuple[nn.Module, Optional[nn.Module], dict]:
        return self.coarse, None, self.meta(self.coarse, None)

    def load_trainable(self, tensors: dict[str, torch.Tensor]) -> None:
        load_prefixed(self.coarse, tensors, "coarse.")
