"""Coarse models: frame -> metric depth + multi-level features (docs/interfaces.md, "Models").

* ``LiteCoarse`` ("lite"): a lite encoder + FPN decoder trainable on CPU; the decoder maps at
  strides (4, 8, 16, 32) are the features the refiners crop as guidance.
* ``ModuleCoarse`` ("module"): wraps any ``nn.Module`` that returns ``(depth, features)``.
* ``HFCoarse`` ("hf", in ``hf_adapter``): a ``transformers`` depth model from a local folder.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Sequence

import torch
from torch import nn

from .blocks import ConvNormAct, upsample2x
from .encoders import create_encoder
from .registry import get_factory, register

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "CoarseSpec", "CoarseModel", "LiteCoarse", "ModuleCoarse",
           "create_coarse", "exporting"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def exporting() -> bool:
    """True while tracing for ONNX/TorchScript: shape checks would only bake in constants then."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


@dataclass
class CoarseSpec:
    """What a refiner needs to know about a coarse model without holding it (e.g. when loading).

    ``name``/``kwargs`` say how ``create_coarse`` rebuilds the model (None for a wrapped module).
    """

    input_size: tuple[int, int]
    feature_channels: list[int]
    feature_strides: list[int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    metric: bool = True
    name: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.feature_channels) != len(self.feature_strides):
            raise ValueError(f"feature_channels {self.feature_channels} and feature_strides "
                             f"{self.feature_strides} must have the same length")
        if any(s <= 0 for s in self.feature_strides) or any(c <= 0 for c in self.feature_channels):
            raise ValueError("feature_channels and feature_strides must be positive")


class CoarseModel(nn.Module):
    """Base class: subclasses set the attributes below and implement ``forward``.

    forward(x (B, 3, h, w) normalised with mean/std) -> (depth (B, 1, h, w) metres >= 0,
    [features (B, C_k, h/s_k, w/s_k)] finest first).
    """

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_channels: list[int]
    feature_strides: list[int]
    metric: bool
    registry_name: str | None = None
    registry_kwargs: dict[str, Any] = {}

    def spec(self) -> CoarseSpec:
        return CoarseSpec(tuple(self.input_size), list(self.feature_channels), list(self.feature_strides),
                          tuple(self.mean), tuple(self.std), self.metric, self.registry_name,
                          dict(self.registry_kwargs))

    def _check_input(self, x: torch.Tensor) -> None:
        if exporting():
            return
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be a (B, 3, h, w) tensor, got {tuple(getattr(x, 'shape', ()))}")
        if not torch.is_floating_point(x):
            raise TypeError(f"x must be a floating-point tensor, got {x.dtype}")


def _check_size(input_size: Sequence[int], multiple: int, name: str = "input_size") -> tuple[int, int]:
    size = tuple(int(v) for v in input_size)
    if len(size) != 2 or any(v <= 0 or v % multiple for v in size):
        raise ValueError(f"{name} must be (h, w) with both sides positive multiples of {multiple}, "
                         f"got {tuple(input_size)}")
    return size  # type: ignore[return-value]


class LiteCoarse(CoarseModel):
    """Lite encoder + FPN decoder + sigmoid depth head (depth = max_depth * sigmoid, as Depth Anything
    V2's metric head), so the output is metric, positive and bounded by ``max_depth`` metres."""

    def __init__(self, encoder: str = "mobilenetv3_small", width: float = 1.0,
                 input_size: Sequence[int] = (192, 256), decoder_channels: Sequence[int] = (32, 48, 64, 96),
                 max_depth: float = 80.0, init_depth: float = 10.0) -> None:
        super().__init__()
        if len(decoder_channels) != 4:
            raise ValueError(f"decoder_channels must give 4 widths (strides 4..32), got {decoder_channels}")
        if not 0 < init_depth < max_depth:
            raise ValueError(f"need 0 < init_depth < max_depth, got {init_depth}, {max_depth}")
        self.input_size = _check_size(input_size, 32)
        self.mean, self.std, self.metric = IMAGENET_MEAN, IMAGENET_STD, True
        self.max_depth = float(max_depth)
        self.encoder = create_encoder(encoder, width=width)
        enc = self.encoder.feature_info.channels()
        d = list(decoder_channels)
        self.lateral = ConvNormAct(enc[4], d[3], 1, norm="gn")
        self.fuse = nn.ModuleList(ConvNormAct(d[k + 1] + enc[k + 1], d[k], 3, norm="gn") for k in (2, 1, 0))
        head_ch = max(8, d[0] // 2)
        self.head = nn.Sequential(ConvNormAct(d[0] + enc[0], head_ch, 3, norm="gn"))
        self.out = nn.Conv2d(head_ch, 1, 3, padding=1)
        # Start near init_depth metres so early training sees sensible log-depth errors.
        nn.init.zeros_(self.out.weight)
        nn.init.constant_(self.out.bias, math.log(init_depth / (max_depth - init_depth)))
        self.feature_channels = d
        self.feature_strides = [4, 8, 16, 32]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._check_input(x)
        e = self.encoder(x)
        p = self.lateral(e[4])
        feats = [p]
        for k, fuse in zip((3, 2, 1), self.fuse):
            p = fuse(torch.cat([upsample2x(p), e[k]], 1))
            feats.insert(0, p)
        h = self.head(torch.cat([upsample2x(p), e[0]], 1))
        depth = self.max_depth * torch.sigmoid(self.out(upsample2x(h)))
        return depth, feats


class ModuleCoarse(CoarseModel):
    """Wrap any module ``f(x) -> (depth (B,1,h,w), [features])``; channels and strides are measured
    once with a zero frame of ``input_size``."""

    def __init__(self, module: nn.Module, input_size: Sequence[int], mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, metric: bool = True) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        self.module = module
        self.input_size = _check_size(input_size, 1)
        self.mean, self.std, self.metric = _triple(mean, "mean"), _triple(std, "std"), bool(metric)
        self.feature_channels, self.feature_strides = probe_features(self, self.input_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._check_input(x)
        out = self.module(x)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError(f"the wrapped module must return (depth, features), got {type(out).__name__}")
        return out[0], list(out[1])


def _triple(v: Sequence[float], name: str) -> tuple[float, float, float]:
    t = tuple(float(a) for a in v)
    if len(t) != 3:
        raise ValueError(f"{name} must have 3 values (RGB), got {v}")
    return t  # type: ignore[return-value]


def probe_features(model: nn.Module, input_size: tuple[int, int]) -> tuple[list[int], list[int]]:
    """Run a zero frame; check the outputs follow the CoarseModel contract; return (channels, strides).

    Strides are ``round(h / h_k)`` (a ViT neck at 14-px patches gives e.g. 2, 4, 7, 14).
    """
    h, w = input_size
    param = next(model.parameters(), None)
    x = torch.zeros(1, 3, h, w, device=param.device if param is not None else None)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(x)
    model.train(was_training)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise TypeError("a coarse module must return (depth, features)")
    depth, feats = out
    if not isinstance(depth, torch.Tensor) or tuple(depth.shape) != (1, 1, h, w):
        raise ValueError(f"coarse depth must be (B, 1, {h}, {w}) for input_size {input_size}, "
                         f"got {tuple(getattr(depth, 'shape', ()))}")
    if not isinstance(feats, (list, tuple)) or not all(isinstance(f, torch.Tensor) and f.ndim == 4 for f in feats):
        raise TypeError("coarse features must be a list of (B, C, h, w) tensors")
    return [int(f.shape[1]) for f in feats], [max(1, round(h / f.shape[2])) for f in feats]


@register("coarse", "lite")
def _lite(**kw: Any) -> LiteCoarse:
    return LiteCoarse(**kw)


@register("coarse", "module")
def _module(**kw: Any) -> ModuleCoarse:
    return ModuleCoarse(**kw)


def create_coarse(name: str, **kwargs: Any) -> CoarseModel:
    """Build a registered coarse model ("lite", "depth-anything-v2-small|base|large", "hf", "module");
    records name/kwargs for ``spec()``."""
    model = get_factory("coarse", name)(**kwargs)
    model.registry_name = name
    # What rebuilds the architecture for a checkpoint: not modules, and not a weights file — the
    # checkpoint holds the tensors, and the user's file may not exist where it is loaded.
    model.registry_kwargs = {k: asdict(v) if is_dataclass(v) else v for k, v in kwargs.items()
                             if not isinstance(v, nn.Module) and k != "weights"}
    return model
