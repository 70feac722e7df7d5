"""Tiny real torch models that follow the docs/interfaces.md Models contract.

Real convs, resizes and a residual head, small enough that ONNX export, quantization, NNCF and
CoreML conversion of them take seconds on 2 cores. The export and runtime tests share them; the
registry models are exercised through checkpoints elsewhere.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyCoarse(nn.Module):
    """Metric coarse model: depth at input resolution + one stride-4 feature map."""

    def __init__(self, input_size=(24, 32), channels=8) -> None:
        super().__init__()
        self.input_size = input_size
        self.mean = (0.485, 0.456, 0.406)
        self.std = (0.229, 0.224, 0.225)
        self.feature_channels = [channels]
        self.feature_strides = [4]
        self.metric = True
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, x):
        feat = self.stem(x)
        depth = F.interpolate(self.head(feat), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return 2.0 + 3.0 * torch.sigmoid(depth) + 2.0 * x[:, 2:3].sigmoid(), [feat]


class TinyRefiner(nn.Module):
    """Residual refiner: RGB + log coarse depth + one guidance crop -> max(coarse + residual, 0)."""

    def __init__(self, tile_size=(16, 16), guide=(8, 4, 4), width=12) -> None:
        super().__init__()
        self.tile_size = tile_size
        self.guidance = [guide]
        self.uses_coarse_features = True
        self.enc = nn.Sequential(nn.Conv2d(4, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.fuse = nn.Sequential(nn.Conv2d(width + guide[0], width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, rgb, coarse_depth, *guidance):
        x = self.enc(torch.cat([rgb, torch.log(coarse_depth.clamp_min(1e-3))], 1))
        g = F.interpolate(guidance[0], size=x.shape[-2:], mode="bilinear", align_corners=False)
        residual = self.head(self.fuse(torch.cat([x, g], 1)))
        return torch.relu(coarse_depth + 0.1 * residual)
