"""Building blocks shared by the encoders, coarse decoders and refiners.

Every block keeps static shapes and has no data-dependent Python control flow, so that the models
built from them trace to plain ONNX graphs (opset 17).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "make_divisible",
    "ConvNormAct",
    "ConvBlock",
    "SqueezeExcite",
    "InvertedResidual",
    "UniversalInvertedBottleneck",
    "LayerNorm2d",
    "ConvNeXtBlock",
    "upsample2x",
]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of ``divisor`` without dropping more than 10 %."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def _act(name: str) -> nn.Module:
    acts = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish, "gelu": nn.GELU,
            "silu": nn.SiLU, "none": nn.Identity}
    if name not in acts:
        raise ValueError(f"act must be one of {sorted(acts)}, got {name!r}")
    return acts[name]()


def _norm(name: str, channels: int) -> nn.Module:
    if name == "bn":
        return nn.BatchNorm2d(channels)
    if name == "gn":
        # GroupNorm keeps tiny CPU batches (and single-tile batches) well behaved.
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if name == "ln":
        return LayerNorm2d(channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of ['bn', 'gn', 'ln', 'none'], got {name!r}")


class ConvNormAct(nn.Sequential):
    """Conv2d (same padding) -> norm -> activation."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 norm: str = "bn", act: str = "relu") -> None:
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=norm == "none"),
            _norm(norm, out_ch),
            _act(act),
        )


class ConvBlock(nn.Sequential):
    """The PRV2 ConvBlock: 3x3 conv + norm + activation, then a 1x1 conv."""

    def __init__(self, in_ch: int, out_ch: int, mid_ch: int | None = None, norm: str = "gn",
                 act: str = "relu") -> None:
        mid_ch = mid_ch or out_ch
        super().__init__(ConvNormAct(in_ch, mid_ch, 3, norm=norm, act=act), nn.Conv2d(mid_ch, out_ch, 1))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int, gate: str = "hardsigmoid") -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.expand = nn.Conv2d(reduced, channels, 1)
        self.gate = nn.Hardsigmoid() if gate == "hardsigmoid" else nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(F.relu(self.reduce(s))))


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 and EfficientNet MBConv block: expand 1x1 -> depthwise kxk -> (SE) -> project 1x1."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int, kernel: int, stride: int, se: bool,
                 act: str, se_gate: str = "hardsigmoid") -> None:
        super().__init__()
        self.expand = ConvNormAct(in_ch, mid_ch, 1, act=act) if mid_ch != in_ch else nn.Identity()
        self.dw = ConvNormAct(mid_ch, mid_ch, kernel, stride, groups=mid_ch, act=act)
        self.se = SqueezeExcite(mid_ch, make_divisible(mid_ch / 4), se_gate) if se else nn.Identity()
        self.project = ConvNormAct(mid_ch, out_ch, 1, act="none")
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class UniversalInvertedBottleneck(nn.Module):
    """MobileNetV4 UIB: optional depthwise before expansion, expand 1x1, optional depthwise, project 1x1.

    ``start_k``/``mid_k`` of 0 drop that depthwise conv; the stride sits on the middle depthwise when
    present, else on the starting one (as in MobileNetV4).
    """

    def __init__(self, in_ch: int, out_ch: int, expand: float, start_k: int, mid_k: int, stride: int) -> None:
        super().__init__()
        mid_ch = make_divisible(in_ch * expand)
        start_stride = stride if mid_k == 0 else 1
        self.start = (ConvNormAct(in_ch, in_ch, start_k, start_stride, groups=in_ch, act="none")
                      if start_k else nn.Identity())
        self.expand = ConvNormAct(in_ch, mid_ch, 1)
        self.mid = ConvNormAct(mid_ch, mid_ch, mid_k, stride, groups=mid_ch) if mid_k else nn.Identity()
        self.project = ConvNormAct(mid_ch, out_ch, 1, act="none")
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.mid(self.expand(self.start(x))))
        return x + y if self.residual else y


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (exports as ONNX LayerNormalization)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 -> LayerNorm -> 1x1 (x4) -> GELU -> 1x1, layer scale, residual."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0, layer_scale: float = 1e-6) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.dw = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = LayerNorm2d(channels, eps=1e-6)
        self.pw1 = nn.Conv2d(channels, hidden, 1)
        self.pw2 = nn.Conv2d(hidden, channels, 1)
        self.gamma = nn.Parameter(torch.full((1, channels, 1, 1), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.pw2(F.gelu(self.pw1(self.norm(self.dw(x)))))


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 upsampling (half-pixel centres, the DESIGN crop semantics for an integer ratio)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
