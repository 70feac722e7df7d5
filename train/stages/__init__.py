"""Training stages (METHODS.md): coarse model, Noisy Pretraining, supervised refiner with GPCT + BFM,
teacher -> student distillation with DSD. ``build_stage(cfg, device)`` picks ``cfg.train.stage``."""
from __future__ import annotations

import torch

from ..config import Config
from .base import Stage

STAGE_CLASSES = {
    "coarse": ("coarse", "CoarseStage"),
    "noisy-pretrain": ("refiner", "NoisyPretrainStage"),
    "refiner": ("refiner", "RefinerStage"),
    "distill": ("distill", "DistillStage"),
}


def build_stage(cfg: Config, device: torch.device) -> Stage:
    """The :class:`Stage` named by ``cfg.train.stage``, its models built on ``device``."""
    from importlib import import_module

    module, cls = STAGE_CLASSES[cfg.train.stage]
    return getattr(import_module(f".{module}", __name__), cls)(cfg, device)


__all__ = ["Stage", "build_stage", "STAGE_CLASSES"]
