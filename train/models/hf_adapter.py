"""Adapter for a ``transformers`` depth model saved in a local folder (Depth Anything V2, ZoeDepth, DPT).

The model runs as usual; a forward hook on its ``neck`` captures the fused neck maps, which become
the coarse features (finest first). Nothing is downloaded: the folder must hold ``config.json`` and
the weights (``save_pretrained`` output).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .coarse import IMAGENET_MEAN, IMAGENET_STD, CoarseModel, _check_size, _triple, probe_features
from .registry import register

__all__ = ["HFCoarse"]


def _neck_maps(output: Any) -> list[torch.Tensor]:
    # DPT / Depth Anything necks return a list of maps; ZoeDepth's returns (list, bottleneck).
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], (list, tuple)):
        output = output[0]
    maps = [t for t in output if isinstance(t, torch.Tensor) and t.ndim == 4]
    return sorted(maps, key=lambda t: -t.shape[-2] * t.shape[-1])


class HFCoarse(CoarseModel):
    """A ``transformers`` depth-estimation model as a CoarseModel.

    path: local folder written by ``save_pretrained``. input_size: (h, w) multiples of the ViT patch
    (default: the folder's preprocessor size, else 518 x 518). mean/std default to the folder's
    preprocessor config, else ImageNet. metric: default True for ZoeDepth and metric Depth Anything,
    False otherwise (then the output is relative inverse depth, not metres).
    """

    def __init__(self, path: str | Path, input_size: Sequence[int] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 metric: bool | None = None) -> None:
        super().__init__()
        from transformers import AutoModelForDepthEstimation

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"path must be a folder holding a transformers config.json: {folder}")
        self.model = AutoModelForDepthEstimation.from_pretrained(str(folder), local_files_only=True)
        cfg = self.model.config
        if not hasattr(self.model, "neck"):
            raise TypeError(f"{type(self.model).__name__} has no neck to take features from")
        pre = {}
        if (folder / "preprocessor_config.json").is_file():
            pre = json.loads((folder / "preprocessor_config.json").read_text())
        patch = getattr(cfg, "patch_size", None) or getattr(getattr(cfg, "backbone_config", None), "patch_size", 16)
        patch = patch[0] if isinstance(patch, (list, tuple)) else int(patch)
        if input_size is None:
            size = pre.get("size", {})
            input_size = (size.get("height", 518), size.get("width", 518)) if isinstance(size, dict) else (518, 518)
        self.input_size = _check_size(input_size, patch)
        self.mean = _triple(mean if mean is not None else pre.get("image_mean", IMAGENET_MEAN), "mean")
        self.std = _triple(std if std is not None else pre.get("image_std", IMAGENET_STD), "std")
        if metric is None:
            metric = cfg.model_type == "zoedepth" or getattr(cfg, "depth_estimation_type", "") == "metric"
        self.metric = bool(metric)
        self._captured: list[torch.Tensor] = []
        self.model.neck.register_forward_hook(self._capture)
        self.feature_channels, self.feature_strides = probe_features(self, self.input_size)

    def _capture(self, module: Any, args: Any, output: Any) -> None:
        self._captured = _neck_maps(output)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._check_input(x)
        depth = self.model(pixel_values=x).predicted_depth
        feats, self._captured = self._captured, []
        if depth.ndim == 3:
            depth = depth.unsqueeze(1)
        if tuple(depth.shape[-2:]) != tuple(x.shape[-2:]):
            depth = F.interpolate(depth, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        return depth.clamp_min(0.0), feats


@register("coarse", "hf")
def _hf(**kw: Any) -> HFCoarse:
    return HFCoarse(**kw)
