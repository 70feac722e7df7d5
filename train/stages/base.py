"""What every stage shares: the Stage interface, frame -> coarse input, validation metrics."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from edgedepth.metrics import MIN_DEPTH, pointwise_metrics

from ..checkpoint import build_coarse, load_tensors, read_meta
from ..config import Config
from ..data import crop_frames, normalise, scaled_boxes, whole_box


class Stage:
    """One training stage. The trainer optimises ``trainable`` and calls, per micro-batch,
    ``train_step(model, batch) -> (loss, parts)`` where ``model`` is ``trainable`` (possibly
    DDP-wrapped, so forward passes must go through it) and ``parts`` holds floats for logging
    (``parts["loss"]`` the total)."""

    name: str = ""
    trainable: nn.Module

    def __init__(self, cfg: Config, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device

    def train_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def validate_batch(self, batch: dict) -> dict[str, float]:
        raise NotImplementedError

    def export_models(self) -> tuple[nn.Module, Optional[nn.Module], dict]:
        """(coarse, refiner or None, model.json meta) for a checkpoint of the current weights."""
        raise NotImplementedError

    def load_trainable(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the trainable weights from a checkpoint's tensors (resume)."""
        raise NotImplementedError

    def train_mode(self) -> None:
        self.trainable.train()

    def eval_mode(self) -> None:
        self.trainable.eval()

    def meta(self, coarse: nn.Module, refiner: Optional[nn.Module]) -> dict:
        out = {
            "coarse": model_spec(coarse),
            "camera": {"fx_norm": self.cfg.train.fx_norm},
            "train": {"stage": self.name, "config": self.cfg.name, "frame_size": list(self.cfg.data.frame_size),
                      "tiling": {"rows": self.cfg.tiling.rows, "cols": self.cfg.tiling.cols,
                                 "overlap_ratio": self.cfg.tiling.overlap_ratio, "window": self.cfg.tiling.window}},
        }
        if refiner is not None:
            out["refiner"] = model_spec(refiner)
        return out


def _jsonable(value):
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def model_spec(model: nn.Module) -> dict:
    """{"name", "kwargs"} that rebuild ``model`` through the registry (recorded by create_*)."""
    name = getattr(model, "registry_name", None)
    if not name:
        raise ValueError(f"{type(model).__name__} was not built by the registry; it cannot be checkpointed by name")
    kwargs = {k: v for k, v in getattr(model, "registry_kwargs", {}).items() if k not in ("coarse",)}
    return {"name": name, "kwargs": _jsonable(kwargs)}


def load_prefixed(model: nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    model.load_state_dict(own, strict=True)


def frozen(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_or_load_coarse(cfg: Config, device: torch.device) -> nn.Module:
    """The coarse model of ``model.coarse_checkpoint`` (weights loaded), else a new registry model."""
    m = cfg.model
    if m.coarse_checkpoint:
        meta = read_meta(m.coarse_checkpoint)
        coarse = build_coarse(meta["coarse"])
        load_prefixed(coarse, load_tensors(m.coarse_checkpoint), "coarse.")
    else:
        from ..models import create_coarse

        coarse = create_coarse(m.coarse, **m.coarse_kwargs)
    return coarse.to(device)


def coarse_input(images: torch.Tensor, coarse: nn.Module) -> torch.Tensor:
    """Frames (B, 3, H, W) uint8 -> the coarse model's input: crop of the whole-frame box, normalised."""
    b, _, h, w = images.shape
    boxes = whole_box(h, w).expand(b, 1, 4)
    return normalise(crop_frames(images.float(), boxes, tuple(coarse.input_size)), coarse.mean, coarse.std)


def to_frame(maps: torch.Tensor, frame_hw: tuple[int, int]) -> torch.Tensor:
    """Resize (B, C, h, w) maps covering the frame to the frame size with the crop semantics."""
    b, _, h, w = maps.shape
    return crop_frames(maps, whole_box(h, w).expand(b, 1, 4), frame_hw)


# log key -> edgedepth.metrics name (the logged keys predate the shared implementation)
_TRAIN_METRICS = {"absrel": "abs_rel", "rmse": "rmse", "delta1": "delta1", "silog": "silog"}


def depth_metrics(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, prefix: str = "") -> dict[str, float]:
    """AbsRel, RMSE (m), delta1 and SILog over the valid pixels of a batch (pooled), prediction
    clamped to >= ``MIN_DEPTH``; gt > 0 where ``valid``.

    The formulas are evaluation's own (:func:`edgedepth.metrics.pointwise_metrics`), so train and
    eval score alike. Validation is not the hot path and the trainer turns every value into a
    Python float before its DDP all-reduce anyway, so the valid pixels go to numpy once a batch.
    """
    p = pred[valid].double().clamp_min(MIN_DEPTH)
    g = gt[valid].double()
    if g.numel() == 0:
        return {}
    scores = pointwise_metrics(p.cpu().numpy(), g.cpu().numpy())
    return {f"{prefix}{key}": scores[name] for key, name in _TRAIN_METRICS.items()}


__all__ = ["Stage", "model_spec", "frozen", "build_or_load_coarse", "coarse_input", "to_frame", "depth_metrics",
           "load_prefixed", "scaled_boxes"]
