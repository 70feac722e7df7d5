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


# Registry models small enough for export tests: (coarse name, coarse kwargs, prv2-mobile kwargs).
TINY_LITE = ("lite", {"input_size": [32, 64], "width": 0.35, "decoder_channels": [8, 8, 16, 16]},
             {"width": 0.35, "decoder_width": 0.5})
TINY_DAV2 = ("depth-anything-v2",
             {"config": {"embed_dim": 32, "depth": 4, "num_heads": 2, "features": 16, "out_channels": [8, 16, 32, 32],
                         "layers": [0, 1, 2, 3], "pretrain_size": 28}, "input_size": [42, 56]},
             {"width": 0.25, "decoder_width": 0.25})


def save_registry_checkpoint(path, models=TINY_LITE, train=None):
    """A checkpoint folder at ``path`` of a registry coarse model + ``prv2-mobile`` (32x32 tiles),
    random weights (seed 0); ``train`` becomes model.json's "train" record when given."""
    from edgedepth.datasets import FX_NORM
    from edgedepth.train.checkpoint import save_models
    from edgedepth.train.models import create_coarse, create_refiner

    name, ckw, rkw = models
    torch.manual_seed(0)
    coarse = create_coarse(name, **ckw).eval()
    refiner = create_refiner("prv2-mobile", coarse, (32, 32), **rkw).eval()
    meta = {"coarse": {"name": name, "kwargs": ckw}, "refiner": {"name": "prv2-mobile",
            "kwargs": {"tile_size": [32, 32], **rkw}}, "camera": {"fx_norm": FX_NORM}}
    if train is not None:
        meta["train"] = train
    return save_models(path, coarse, refiner, meta)
