"""Lightweight encoders written here (timm cannot live beside the pinned torch).

Each returns five feature maps at strides (2, 4, 8, 16, 32), like timm's ``features_only``, and
exposes ``feature_info.channels()`` / ``feature_info.reductions()``. Layouts follow MobileNetV3-Small,
MobileNetV4-Conv-Small, EfficientNet-Lite0 and a ConvNeXt-Atto-like design; ``width`` scales every
channel count. ``in_chans`` sets the stem; ``widen_stem`` turns a trained 3-channel stem into a
4-channel one whose new input channel starts at zero (the refiner's RGB + coarse-depth input).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .blocks import (ConvNeXtBlock, ConvNormAct, InvertedResidual, LayerNorm2d,
                     UniversalInvertedBottleneck, make_divisible)
from .registry import get_factory, register

__all__ = ["FeatureInfo", "Encoder", "create_encoder", "widen_stem", "first_conv"]

STRIDES = (2, 4, 8, 16, 32)


@dataclass(frozen=True)
class FeatureInfo:
    """Channels and strides (reductions) of the feature maps an encoder returns, finest first."""

    channels_: tuple[int, ...]
    reductions_: tuple[int, ...] = STRIDES

    def channels(self) -> list[int]:
        return list(self.channels_)

    def reductions(self) -> list[int]:
        return list(self.reductions_)


class Encoder(nn.Module):
    """Five stages; stage k outputs the feature at stride 2**(k+1). Input sides must divide by 32."""

    def __init__(self, stages: list[nn.Module], channels: list[int], in_chans: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.feature_info = FeatureInfo(tuple(channels))
        self.in_chans = in_chans

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, in_chans, H, W) -> [(B, C_k, H/s_k, W/s_k)] for s_k in (2, 4, 8, 16, 32)."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def first_conv(module: nn.Module) -> tuple[nn.Module, str, nn.Conv2d]:
    """(parent, attribute name, conv) of the first ``nn.Conv2d`` of ``module`` (its stem)."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d):
            parent_name, _, attr = name.rpartition(".")
            return module.get_submodule(parent_name) if parent_name else module, attr, sub
    raise TypeError(f"{type(module).__name__} holds no nn.Conv2d to use as a stem")


def widen_stem(module: nn.Module, in_chans: int) -> nn.Module:
    """Give ``module``'s stem conv ``in_chans`` inputs in place; returns ``module``.

    The existing input channels keep their weights and the added ones start at exactly zero, so the
    widened network computes the same function as before until the new channels are trained.
    """
    parent, attr, conv = first_conv(module)
    old = conv.in_channels
    if in_chans < old:
        raise ValueError(f"in_chans must be >= the stem's {old} input channels, got {in_chans}")
    if in_chans == old:
        return module
    if conv.groups != 1:
        raise ValueError("widen_stem needs a stem conv with groups=1")
    new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, bias=conv.bias is not None, padding_mode=conv.padding_mode)
    new = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :old] = conv.weight
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    setattr(parent, attr, new)
    if hasattr(module, "in_chans"):
        module.in_chans = in_chans
    return module


def _ch(width: float) -> Callable[[float], int]:
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    return lambda c: make_divisible(c * width)


@register("encoder", "mobilenetv3_small")
def mobilenetv3_small(in_chans: int = 3, width: float = 1.0) -> Encoder:
    """MobileNetV3-Small layout; features (16, 16, 24, 48, 576) x width."""
    c = _ch(width)
    ir = InvertedResidual
    stages = [
        ConvNormAct(in_chans, c(16), 3, 2, act="hardswish"),
        ir(c(16), c(16), c(16), 3, 2, True, "relu"),
        nn.Sequential(ir(c(16), c(72), c(24), 3, 2, False, "relu"), ir(c(24), c(88), c(24), 3, 1, False, "relu")),
        nn.Sequential(ir(c(24), c(96), c(40), 5, 2, True, "hardswish"),
                      ir(c(40), c(240), c(40), 5, 1, True, "hardswish"),
                      ir(c(40), c(240), c(40), 5, 1, True, "hardswish"),
                      ir(c(40), c(120), c(48), 5, 1, True, "hardswish"),
                      ir(c(48), c(144), c(48), 5, 1, True, "hardswish")),
        nn.Sequential(ir(c(48), c(288), c(96), 5, 2, True, "hardswish"),
                      ir(c(96), c(576), c(96), 5, 1, True, "hardswish"),
                      ir(c(96), c(576), c(96), 5, 1, True, "hardswish"),
                      ConvNormAct(c(96), c(576), 1, act="hardswish")),
    ]
    return Encoder(stages, [c(16), c(16), c(24), c(48), c(576)], in_chans)


def _fused_ib(in_ch: int, mid_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    return nn.Sequential(ConvNormAct(in_ch, mid_ch, 3, stride), ConvNormAct(mid_ch, out_ch, 1, act="none"))


@register("encoder", "mobilenetv4_small")
def mobilenetv4_small(in_chans: int = 3, width: float = 1.0) -> Encoder:
    """MobileNetV4-Conv-Small layout (fused IB early, UIB later); features (32, 32, 64, 96, 960) x width."""
    c = _ch(width)
    uib = UniversalInvertedBottleneck
    stages = [
        ConvNormAct(in_chans, c(32), 3, 2),
        _fused_ib(c(32), c(32), c(32), 2),
        _fused_ib(c(32), c(96), c(64), 2),
        nn.Sequential(uib(c(64), c(96), 3.0, 5, 5, 2), *[uib(c(96), c(96), 2.0, 0, 3, 1) for _ in range(4)]),
        nn.Sequential(uib(c(96), c(128), 6.0, 3, 3, 2), uib(c(128), c(128), 4.0, 5, 5, 1),
                      uib(c(128), c(128), 4.0, 0, 5, 1), uib(c(128), c(128), 3.0, 0, 5, 1),
                      uib(c(128), c(128), 4.0, 0, 3, 1), uib(c(128), c(128), 4.0, 0, 3, 1),
                      ConvNormAct(c(128), c(960), 1)),
    ]
    return Encoder(stages, [c(32), c(32), c(64), c(96), c(960)], in_chans)


@register("encoder", "efficientnet_lite0")
def efficientnet_lite0(in_chans: int = 3, width: float = 1.0) -> Encoder:
    """EfficientNet-Lite0 layout (MBConv, ReLU6, no SE); features (16, 24, 40, 112, 320) x width."""
    c = _ch(width)

    def mb(i: int, o: int, k: int, s: int, e: int = 6) -> InvertedResidual:
        return InvertedResidual(c(i), c(i) * e if e > 1 else c(i), c(o), k, s, False, "relu6")

    stages = [
        nn.Sequential(ConvNormAct(in_chans, c(32), 3, 2, act="relu6"), mb(32, 16, 3, 1, e=1)),
        nn.Sequential(mb(16, 24, 3, 2), mb(24, 24, 3, 1)),
        nn.Sequential(mb(24, 40, 5, 2), mb(40, 40, 5, 1)),
        nn.Sequential(mb(40, 80, 3, 2), mb(80, 80, 3, 1), mb(80, 80, 3, 1),
                      mb(80, 112, 5, 1), mb(112, 112, 5, 1), mb(112, 112, 5, 1)),
        nn.Sequential(mb(112, 192, 5, 2), mb(192, 192, 5, 1), mb(192, 192, 5, 1), mb(192, 192, 5, 1),
                      mb(192, 320, 3, 1)),
    ]
    return Encoder(stages, [c(16), c(24), c(40), c(112), c(320)], in_chans)


@register("encoder", "convnext_lite")
def convnext_lite(in_chans: int = 3, width: float = 1.0, depths: tuple[int, ...] = (2, 2, 6, 2)) -> Encoder:
    """ConvNeXt-Atto-like: conv stem at stride 2, then 2x2 patchify downsampling and ConvNeXt blocks;
    features (24, 40, 80, 160, 320) x width."""
    if len(depths) != 4 or min(depths) < 1:
        raise ValueError(f"depths must be 4 positive block counts, got {depths}")
    c = _ch(width)
    dims = [c(40), c(80), c(160), c(320)]
    stem = ConvNormAct(in_chans, c(24), 3, 2, norm="ln", act="gelu")
    stages: list[nn.Module] = [stem]
    prev = c(24)
    for dim, depth in zip(dims, depths):
        down = nn.Sequential(LayerNorm2d(prev, eps=1e-6), nn.Conv2d(prev, dim, 2, 2))
        stages.append(nn.Sequential(down, *[ConvNeXtBlock(dim) for _ in range(depth)]))
        prev = dim
    return Encoder(stages, [c(24), *dims], in_chans)


def create_encoder(name: str, in_chans: int = 3, width: float = 1.0, pretrained: bool | str | Path = False,
                   **kwargs) -> Encoder:
    """Build a registered encoder.

    pretrained: False, or the path of a ``.safetensors`` state dict of the same encoder; a 3-channel
    stem in the file loads into a wider stem (extra channels zero). No weights ship with edgedepth.
    """
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
    encoder = get_factory("encoder", name)(in_chans=in_chans, width=width, **kwargs)
    if pretrained is True:
        raise ValueError("pretrained=True: no encoder weights ship with edgedepth; pass a .safetensors path")
    if pretrained:
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {path}")
        from safetensors.torch import load_file

        state = load_file(str(path))
        _, _, stem = first_conv(encoder)
        stem_key = next(k for k, p in encoder.named_parameters() if p is stem.weight)
        if stem_key in state and state[stem_key].shape[1] < in_chans:
            widened = torch.zeros_like(stem.weight)
            widened[:, : state[stem_key].shape[1]] = state[stem_key]
            state[stem_key] = widened
        own = encoder.state_dict()
        wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected or wrong:
            raise ValueError(f"pretrained file {path} does not match encoder {name!r}: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
        encoder.load_state_dict(state)
    return encoder
