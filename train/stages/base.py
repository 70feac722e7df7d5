"""What every stage shares: the Stage interface, the supervised depth term, validation metrics."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from edgedepth import metrics as M

from ..checkpoint import build_coarse, load_tensors, read_meta
from ..config import Config
from ..losses import edge_band_mask, log_l1_loss, silog_loss


class Stage:
    """One training stage. The trainer optimises ``trainable`` on the items of ``items(source)`` and
    calls, per micro-batch, ``train_step(model, batch) -> (loss, parts)`` where ``model`` is
    ``trainable`` (possibly DDP-wrapped, so forward passes must go through it) and ``parts`` holds
    numbers for logging, floats or detached 0-dim tensors (``parts["loss"]`` the total;
    ``parts["tiles"]`` refiner tiles seen, if any): the trainer reads tensors on the host only when
    it logs, since a read per part per step would make every step wait for the device.
    ``validate_batch`` gets one whole frame (``image`` (1, H, W, 3) uint8, ``depth``, ``reliable``)."""

    name: str = ""
    trainable: nn.Module

    def __init__(self, cfg: Config, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device

    def items(self, source: Any) -> Dataset:
        raise NotImplementedError

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

    def depth_term(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The configured supervised loss (``loss.depth``) of predicted against ground-truth metres."""
        lc = self.cfg.loss
        if lc.depth == "silog":
            return silog_loss(pred, target, mask, variance_focus=lc.silog_focus)
        weight = band = None
        if lc.edge_weight > 0 or lc.far_band:
            band = edge_band_mask(target, mask)
        if lc.edge_weight > 0:
            weight = 1.0 + lc.edge_weight * band.to(pred.dtype)
        return log_l1_loss(pred, target, mask, grad=lc.grad, scales=lc.grad_scales, weight=weight,
                           far=lc.far, far_mask=band if lc.far_band else None)

    def loss_mask(self, valid: torch.Tensor, reliable: torch.Tensor) -> torch.Tensor:
        """Pixels the loss uses: valid ground truth, minus those the source marks unreliable when
        ``data.use_mask``."""
        return valid & reliable if self.cfg.data.use_mask else valid

    def frame_size(self) -> list[int]:
        """(H, W) of the frames trained on: the shards' (the first folder's size), else data.frame_size."""
        d = self.cfg.data
        if d.shards:
            from ..shards import shard_folder_meta

            return list(shard_folder_meta(d.shards[0])["frame_size"])
        return list(d.frame_size)

    def coarse_fit(self, coarse: nn.Module) -> str:
        """How validation fits frames into the coarse input: as a bundle exported from this run will
        (``edgedepth.coarse_fit.fit_for_training``)."""
        from edgedepth.coarse_fit import fit_for_training

        return fit_for_training(self.frame_size(), tuple(coarse.input_size))

    def meta(self, coarse: nn.Module, refiner: Optional[nn.Module]) -> dict:
        d = self.cfg.data
        frame_size = self.frame_size()
        out = {
            "coarse": model_spec(coarse),
            "camera": {"fx_norm": self.cfg.train.fx_norm},
            "depth": {"valid_max": d.valid_max, "far_depth": d.far_depth or None},
            "train": {"stage": self.name, "config": self.cfg.name, "frame_size": frame_size,
                      "tiling": self.cfg.tiling.to_json()},
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


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (B, C, h, w) maps covering a frame to ``size`` with the crop semantics (differentiable)."""
    from edgedepth import tiling_torch

    b, _, h, w = maps.shape
    whole = torch.tensor([[[0.0, 0.0, float(h), float(w)]]], dtype=torch.float64).expand(b, 1, 4)
    return tiling_torch.crop_resize(maps, whole, size)[:, 0]


def frame_arrays(batch: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image HxWx3 uint8, gt HxW metres, reliable HxW bool) of a one-frame validation batch."""
    return (batch["image"][0].cpu().numpy(), batch["depth"][0].cpu().numpy().astype(np.float32),
            batch["reliable"][0].cpu().numpy().astype(bool))


def frame_metrics(pred: np.ndarray, gt: np.ndarray, reliable: np.ndarray, valid_max: float,
                  prefix: str = "", edges: bool = False) -> dict[str, float]:
    """AbsRel, RMSE (m), delta1 and SILog of an (any size) prediction against HxW ground truth over
    the valid, reliable pixels within ``valid_max`` (evaluation's own formulas and resizing), plus
    the edge-band AbsRel when ``edges``. Empty dict when no pixel is valid."""
    p, valid = M.prepare(pred, gt, reliable, max_depth=valid_max + 1e-3)
    if not valid.any():
        return {}
    scores = M.pointwise_metrics(p[valid], gt[valid])
    out = {f"{prefix}{key}": scores[name] for key, name in _TRAIN_METRICS.items()}
    if edges:
        out[f"{prefix}edge_absrel"] = M.edge_band_abs_rel(p, gt, valid)
    return out


# log key -> edgedepth.metrics name (the logged keys predate the shared implementation)
_TRAIN_METRICS = {"absrel": "abs_rel", "rmse": "rmse", "delta1": "delta1", "silog": "silog"}


__all__ = ["Stage", "model_spec", "frozen", "build_or_load_coarse", "resize_maps", "frame_arrays", "frame_metrics",
           "load_prefixed"]
