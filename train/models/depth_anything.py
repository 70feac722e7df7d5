"""Depth Anything V2 as a coarse model: the published architectures, with or without their weights.

A DINOv2 ViT (patch 14, LayerScale, no registers) and the DPT head of Depth Anything V2
(github.com/DepthAnything/Depth-Anything-V2, ``depth_anything_v2/dpt.py``), module for module, so
the original checkpoints (``depth_anything_v2_vits.pth``, ``depth_anything_v2_metric_hypersim_vitl.pth``)
load by their own keys; ``transformers`` folders (``save_pretrained``) load through a key map.
No weights are downloaded: ``weights=None`` gives the exact shapes with random values.

Outputs, per the CoarseModel contract: depth (B, 1, h, w) in metres and the four DPT fusion maps
(``features`` channels at strides 1.75, 3.5, 7 and 14 px of the input, finest first), which the
refiner crops as guidance. Metric models end in ``max_depth * sigmoid`` (Hypersim: 20 m, Virtual
KITTI: 80 m). Relative models predict affine-invariant disparity; a metric pipeline needs the
camera-specific ``scale_shift=(s, t)`` with depth = 1 / (s * disparity + t), fitted on frames with
known depth (:func:`fit_scale_shift`) — the model refuses to pretend disparity is metres.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .coarse import IMAGENET_MEAN, IMAGENET_STD, CoarseModel, _check_size
from .registry import register

__all__ = ["DAV2Config", "DAV2_PRESETS", "DepthAnythingV2", "dav2_input_size", "fit_scale_shift",
           "load_dav2_weights", "PATCH"]

PATCH = 14
# The pretrained position embedding covers a 518 x 518 image (37 x 37 patches); other sizes
# interpolate it, as DINOv2 does.
PRETRAIN_SIZE = 518


@dataclass(frozen=True)
class DAV2Config:
    """Architecture of one Depth Anything V2 model (the published ``model_configs``)."""

    embed_dim: int
    depth: int
    num_heads: int
    features: int
    out_channels: tuple[int, int, int, int]
    layers: tuple[int, int, int, int]          # blocks whose outputs feed the DPT head
    mlp_ratio: float = 4.0
    pretrain_size: int = PRETRAIN_SIZE

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} must divide into num_heads {self.num_heads}")
        if len(self.layers) != 4 or not all(0 <= i < self.depth for i in self.layers):
            raise ValueError(f"layers must be 4 block indices below depth {self.depth}, got {self.layers}")
        if len(self.out_channels) != 4 or self.features < 2 or self.pretrain_size % PATCH:
            raise ValueError("out_channels needs 4 widths, features >= 2, pretrain_size a multiple of 14")


#: Small (24.8 M parameters, Apache-2.0), Base (97.5 M) and Large (335.3 M) (CC-BY-NC-4.0).
DAV2_PRESETS: dict[str, DAV2Config] = {
    "small": DAV2Config(384, 12, 6, 64, (48, 96, 192, 384), (2, 5, 8, 11)),
    "base": DAV2Config(768, 12, 12, 128, (96, 192, 384, 768), (2, 5, 8, 11)),
    "large": DAV2Config(1024, 24, 16, 256, (256, 512, 1024, 1024), (4, 11, 17, 23)),
}


def dav2_input_size(frame_h: int, frame_w: int, short: int = PRETRAIN_SIZE) -> tuple[int, int]:
    """Coarse input (h, w) for a camera: ``short`` px on the short side, the frame's aspect ratio,
    both sides multiples of 14 (1080p -> (518, 924); 640x480 -> (518, 686))."""
    if frame_h <= 0 or frame_w <= 0 or short < PATCH or short % PATCH:
        raise ValueError(f"need a positive frame size and short a multiple of {PATCH}, got "
                         f"{frame_h}x{frame_w}, short={short}")
    scale = short / min(frame_h, frame_w)
    return tuple(max(PATCH, round(s * scale / PATCH) * PATCH) for s in (frame_h, frame_w))  # type: ignore[return-value]


# --- DINOv2 ------------------------------------------------------------------------------------

@lru_cache(maxsize=16)  # a bundle runs one input size: built once, not on every frame
def _bicubic_matrix(n_out: int, n_in: int, scale_factor: float, a: float = -0.75) -> np.ndarray:
    """(n_out, n_in) float32 weights of PyTorch's 1-D bicubic resize (align_corners=False, border
    samples clamped, Keys' a = -0.75) by ``scale_factor``: ``resized = W @ x``. Read-only (cached)."""
    src = (np.arange(n_out) + 0.5) / scale_factor - 0.5
    base = np.floor(src)
    t = (src - base)[:, None] + np.array([1.0, 0.0, -1.0, -2.0])  # distance to taps base-1 .. base+2
    d = np.abs(t)
    weights = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a)
    taps = np.clip(base[:, None] + np.arange(-1, 3), 0, n_in - 1).astype(int)
    out = np.zeros((n_out, n_in))
    np.add.at(out, (np.repeat(np.arange(n_out), 4), taps.ravel()), weights.ravel())
    out = out.astype(np.float32)
    out.flags.writeable = False
    return out


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _Attention(nn.Module):
    # Written out (not scaled_dot_product_attention) so ONNX gets MatMul/Softmax/MatMul, the
    # pattern FP16 and INT8 exports keep in float by op type.
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))  # DA-V2 builds DINOv2 with init_values=1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1, self.attn, self.ls1 = nn.LayerNorm(dim, eps=1e-6), _Attention(dim, heads), _LayerScale(dim)
        self.norm2, self.mlp, self.ls2 = nn.LayerNorm(dim, eps=1e-6), _Mlp(dim, int(dim * mlp_ratio)), _LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DINOv2(nn.Module):
    """DINOv2 ViT-S/B/L/14 as Depth Anything V2 uses it (no registers, LayerScale 1.0)."""

    def __init__(self, cfg: DAV2Config) -> None:
        super().__init__()
        dim, grid = cfg.embed_dim, cfg.pretrain_size // PATCH
        self.patch_embed = _PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused at inference; in every checkpoint
        self.blocks = nn.ModuleList(_Block(dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self._matrices: dict[tuple, torch.Tensor] = {}  # bicubic resize matrices per grid, device, dtype
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def _resize_matrix(self, k: int, m: int) -> torch.Tensor:
        # Kept on the weights' device: a copy from host memory on every forward would wait for the
        # GPU each frame and cannot be captured in a CUDA graph (the torch backend's way on CUDA).
        key = (k, m, self.pos_embed.device, self.pos_embed.dtype)
        if key not in self._matrices:
            # A plain tensor even when first made under inference_mode: training reuses it.
            with torch.inference_mode(False):
                self._matrices[key] = torch.tensor(_bicubic_matrix(k, m, (k + 0.1) / m)).to(self.pos_embed.detach())
        return self._matrices[key]

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        n = self.pos_embed.shape[1] - 1
        m = int(math.isqrt(n))
        if h == w == m:
            return self.pos_embed
        # DINOv2's bicubic resize of the position grid (scale factor with its historical +0.1
        # offset, which the published weights were evaluated with), written as two constant
        # matrices: the same numbers as F.interpolate to 1e-5, and a MatMul every exporter converts
        # (CoreML has no bicubic resize).
        rows, cols = (self._resize_matrix(k, m) for k in (h, w))
        patch = self.pos_embed[:, 1:].reshape(m, m, -1)
        patch = torch.einsum("hi,ijc,wj->hwc", rows, patch, cols).reshape(1, h * w, -1)
        return torch.cat([self.pos_embed[:, :1], patch], 1)

    def intermediate(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Normalised patch tokens (B, h*w, dim) after each block in ``layers``."""
        # int(): the ONNX export is static in shape, so the grid (and the interpolated position
        # embedding, folded into a constant) is fixed per bundle.
        h, w = int(x.shape[-2]) // PATCH, int(x.shape[-1]) // PATCH
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], 1) + self._pos_embed(h, w)
        out = []
        for i, block in enumerate(self.blocks[:max(layers) + 1]):
            t = block(t)
            if i in layers:
                out.append(self.norm(t)[:, 1:])
        return out


# --- DPT head ----------------------------------------------------------------------------------

class _ResidualConvUnit(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class _FusionBlock(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = _ResidualConvUnit(features)
        self.resConfUnit2 = _ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None,
                size: Optional[Sequence[int]] = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Scratch(nn.Module):
    def __init__(self, cfg: DAV2Config, metric: bool) -> None:
        super().__init__()
        f = cfg.features
        for k, c in enumerate(cfg.out_channels, 1):
            setattr(self, f"layer{k}_rn", nn.Conv2d(c, f, 3, padding=1, bias=False))
        for k in range(1, 5):
            setattr(self, f"refinenet{k}", _FusionBlock(f))
        self.output_conv1 = nn.Conv2d(f, f // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(nn.Conv2d(f // 2, 32, 3, padding=1), nn.ReLU(True),
                                          nn.Conv2d(32, 1, 1), nn.Sigmoid() if metric else nn.ReLU(True))


class DPTHead(nn.Module):
    """Depth Anything V2's DPT head (no BatchNorm, no class token)."""

    def __init__(self, cfg: DAV2Config, metric: bool) -> None:
        super().__init__()
        oc = cfg.out_channels
        self.projects = nn.ModuleList(nn.Conv2d(cfg.embed_dim, c, 1) for c in oc)
        self.resize_layers = nn.ModuleList([nn.ConvTranspose2d(oc[0], oc[0], 4, 4), nn.ConvTranspose2d(oc[1], oc[1], 2, 2),
                                            nn.Identity(), nn.Conv2d(oc[3], oc[3], 3, 2, 1)])
        self.scratch = _Scratch(cfg, metric)

    def forward(self, tokens: list[torch.Tensor], h: int, w: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """tokens: 4 x (B, h*w, dim) -> (head output (B, 1, 14h, 14w), fusion maps finest first)."""
        s = self.scratch
        layers = []
        for k, t in enumerate(tokens):
            x = t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)
            x = self.resize_layers[k](self.projects[k](x))
            layers.append(getattr(s, f"layer{k + 1}_rn")(x))
        p4 = s.refinenet4(layers[3], size=layers[2].shape[2:])
        p3 = s.refinenet3(p4, layers[2], size=layers[1].shape[2:])
        p2 = s.refinenet2(p3, layers[1], size=layers[0].shape[2:])
        p1 = s.refinenet1(p2, layers[0])
        out = F.interpolate(s.output_conv1(p1), size=(h * PATCH, w * PATCH), mode="bilinear", align_corners=True)
        return s.output_conv2(out), [p1, p2, p3, p4]


# --- the coarse model ----------------------------------------------------------------------------

class DepthAnythingV2(CoarseModel):
    """Depth Anything V2 (``create_coarse("depth-anything-v2-small" | "-base" | "-large")``).

    input_size: (h, w) multiples of 14 (:func:`dav2_input_size` keeps a camera's aspect ratio).
    metric: the metric head (depth = max_depth * sigmoid, metres); False for the relative models,
    which then need ``scale_shift``. weights: None (random), a ``.pth``/``.safetensors`` file in
    the original key layout, or a ``transformers`` folder.
    """

    def __init__(self, config: DAV2Config | dict | str = "small", input_size: Sequence[int] = (518, 518),
                 metric: bool = True, max_depth: float = 20.0, scale_shift: Optional[Sequence[float]] = None,
                 weights: str | Path | None = None) -> None:
        super().__init__()
        if isinstance(config, str):
            if config not in DAV2_PRESETS:
                raise ValueError(f"unknown Depth Anything V2 size {config!r}; known: {sorted(DAV2_PRESETS)}")
            config = DAV2_PRESETS[config]
        elif isinstance(config, dict):
            config = DAV2Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
        self.config = config
        self.input_size = _check_size(input_size, PATCH)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.relative = not metric
        if metric:
            if scale_shift is not None:
                raise ValueError("scale_shift is for relative (disparity) models; a metric model outputs metres")
            if not 0 < max_depth < 1e4:
                raise ValueError(f"max_depth must be in (0, 1e4) metres, got {max_depth}")
        elif scale_shift is None or len(scale_shift) != 2 or not all(math.isfinite(v) for v in scale_shift):
            raise ValueError("a relative (disparity) Depth Anything V2 needs scale_shift=(s, t), depth = "
                             "1 / (s * disparity + t) in metres, fitted on frames with known depth (fit_scale_shift)")
        self.max_depth = float(max_depth)
        self.scale_shift = None if scale_shift is None else (float(scale_shift[0]), float(scale_shift[1]))
        self.metric = True  # the output is metres either way: relative models through scale_shift
        self.pretrained = DINOv2(config)
        self.depth_head = DPTHead(config, metric)
        self.feature_channels = [config.features] * 4
        # The fusion maps sit at 4x, 2x, 1x and 1/2 x the patch grid (strides 3.5, 7, 14 and 28)
        # after refinenet1's 2x upsampling halves the finest: 1.75, 3.5, 7, 14, rounded for the contract.
        h = self.input_size[0]
        grid = h // PATCH
        self.feature_strides = [max(1, round(h / (grid * m))) for m in (8, 4, 2, 1)]
        if weights is not None:
            load_dav2_weights(self, weights)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._check_input(x)
        h, w = int(x.shape[-2]) // PATCH, int(x.shape[-1]) // PATCH
        tokens = self.pretrained.intermediate(x, self.config.layers)
        out, feats = self.depth_head(tokens, h, w)
        if self.scale_shift is None:
            depth = out * self.max_depth
        else:
            s, t = self.scale_shift
            # Disparity 0 (the sky) maps to 1/t; the floor keeps a bad fit from dividing by <= 0.
            depth = 1.0 / (s * out + t).clamp_min(1e-4)
        if depth.shape[-2:] != x.shape[-2:]:  # an input that is not a multiple of 14 (tracing only)
            depth = F.interpolate(depth, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        return depth, feats


def fit_scale_shift(disparity: torch.Tensor, depth: torch.Tensor, valid: Optional[torch.Tensor] = None) -> tuple[float, float]:
    """Least-squares (s, t) with 1 / depth ~ s * disparity + t over valid pixels (MiDaS alignment).

    disparity: a relative model's output; depth: metres (0 = invalid); any equal shapes.
    """
    mask = depth > 0 if valid is None else (valid.bool() & (depth > 0))
    d, y = disparity[mask].double(), 1.0 / depth[mask].double()
    if d.numel() < 2 or float(d.std()) == 0.0:
        raise ValueError("fit_scale_shift needs at least two valid pixels with different disparities")
    a = torch.stack([d, torch.ones_like(d)], 1)
    s, t = torch.linalg.lstsq(a, y.unsqueeze(1)).solution.squeeze(1).tolist()
    return float(s), float(t)


# --- weights -------------------------------------------------------------------------------------

def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in (".pth", ".pt", ".bin"):
        # weights_only: a restricted unpickler that builds tensors and plain containers only, so a
        # checkpoint someone hands over cannot run code.
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path}: expected a state dict of tensors")
        return state
    raise ValueError(f"{path}: weights must be .pth/.pt/.bin/.safetensors or a transformers folder")


def _hf_to_original(hf: dict[str, torch.Tensor], cfg: DAV2Config) -> dict[str, torch.Tensor]:
    """Key map of transformers' DepthAnythingForDepthEstimation onto the original layout (the inverse
    of transformers' convert_depth_anything_to_hf.py)."""
    out: dict[str, torch.Tensor] = {}
    emb = "backbone.embeddings."
    out["pretrained.cls_token"] = hf[emb + "cls_token"]
    out["pretrained.mask_token"] = hf[emb + "mask_token"].reshape(1, -1)
    out["pretrained.pos_embed"] = hf[emb + "position_embeddings"]
    for p in ("weight", "bias"):
        out[f"pretrained.patch_embed.proj.{p}"] = hf[f"{emb}patch_embeddings.projection.{p}"]
        out[f"pretrained.norm.{p}"] = hf[f"backbone.layernorm.{p}"]
    for i in range(cfg.depth):
        src, dst = f"backbone.encoder.layer.{i}.", f"pretrained.blocks.{i}."
        att = src + "attention.attention."
        for p in ("weight", "bias"):
            out[f"{dst}attn.qkv.{p}"] = torch.cat([hf[f"{att}{n}.{p}"] for n in ("query", "key", "value")], 0)
            out[f"{dst}attn.proj.{p}"] = hf[f"{src}attention.output.dense.{p}"]
            for n in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                out[f"{dst}{n}.{p}"] = hf[f"{src}{n}.{p}"]
        out[dst + "ls1.gamma"] = hf[src + "layer_scale1.lambda1"]
        out[dst + "ls2.gamma"] = hf[src + "layer_scale2.lambda1"]
    head = {"output_conv1": "conv1", "output_conv2.0": "conv2", "output_conv2.2": "conv3"}
    for p in ("weight", "bias"):
        for k in range(4):
            out[f"depth_head.projects.{k}.{p}"] = hf[f"neck.reassemble_stage.layers.{k}.projection.{p}"]
            if k != 2:
                out[f"depth_head.resize_layers.{k}.{p}"] = hf[f"neck.reassemble_stage.layers.{k}.resize.{p}"]
            # the fusion stage runs deepest first: its layer j is refinenet(4 - j)
            f_src, f_dst = f"neck.fusion_stage.layers.{k}.", f"depth_head.scratch.refinenet{4 - k}."
            out[f"{f_dst}out_conv.{p}"] = hf[f"{f_src}projection.{p}"]
            for unit, layer in (("resConfUnit1", "residual_layer1"), ("resConfUnit2", "residual_layer2")):
                for c in (1, 2):
                    out[f"{f_dst}{unit}.conv{c}.{p}"] = hf[f"{f_src}{layer}.convolution{c}.{p}"]
        for ours, theirs in head.items():
            out[f"depth_head.scratch.{ours}.{p}"] = hf[f"head.{theirs}.{p}"]
    for k in range(4):
        out[f"depth_head.scratch.layer{k + 1}_rn.weight"] = hf[f"neck.convs.{k}.weight"]
    return out


def _check_hf_config(folder: Path, cfg: DAV2Config, metric: bool) -> None:
    conf = json.loads((folder / "config.json").read_text())
    back = conf.get("backbone_config") or {}
    got = {"embed_dim": back.get("hidden_size"), "depth": back.get("num_hidden_layers"),
           "num_heads": back.get("num_attention_heads"), "features": conf.get("fusion_hidden_size"),
           "out_channels": tuple(conf.get("neck_hidden_sizes") or ())}
    want = {k: v for k, v in asdict(cfg).items() if k in got}
    diff = {k: (got[k], want[k]) for k in got if got[k] is not None and got[k] != want[k]}
    if diff:
        raise ValueError(f"{folder}: config.json does not match the requested architecture "
                         f"(field: folder vs model): {diff}")
    folder_metric = conf.get("depth_estimation_type", "relative") == "metric"
    if folder_metric != metric:
        raise ValueError(f"{folder} holds a {'metric' if folder_metric else 'relative'} model; "
                         f"create it with metric={folder_metric}")


def load_dav2_weights(model: DepthAnythingV2, weights: str | Path) -> None:
    """Load original-layout tensors (``.pth``/``.safetensors``) or a ``transformers`` folder into
    ``model``; every tensor must be present with its shape (ValueError naming the first mismatch)."""
    path = Path(weights)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not (path / "config.json").is_file() or not files:
            raise FileNotFoundError(f"{path}: a transformers folder needs config.json and *.safetensors weights")
        _check_hf_config(path, model.config, not model.relative)
        hf: dict[str, torch.Tensor] = {}
        for f in files:
            hf.update(_read_tensors(f))
        try:
            state = _hf_to_original(hf, model.config)
        except KeyError as e:
            raise ValueError(f"{path}: not a Depth Anything V2 checkpoint (missing {e.args[0]})") from None
    elif path.is_file():
        state = _read_tensors(path)
    else:
        raise FileNotFoundError(f"Depth Anything V2 weights not found: {path}")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{path}: {len(missing)} tensors missing, first {missing[0]!r} "
                         "(is this the right model size?)")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(f"{path}: {k} has shape {tuple(state[k].shape)}, the model needs {tuple(v.shape)} "
                             "(is this the right model size?)")
    model.load_state_dict({k: state[k] for k in own}, strict=True)


def _factory(size: Optional[str]):
    def build(**kw: Any) -> DepthAnythingV2:
        if size is not None:
            if "config" in kw:
                raise ValueError(f"depth-anything-v2-{size} has a fixed architecture; use 'depth-anything-v2' with config=")
            kw["config"] = size
        return DepthAnythingV2(**kw)
    return build


for _size in DAV2_PRESETS:
    register("coarse", f"depth-anything-v2-{_size}")(_factory(_size))
register("coarse", "depth-anything-v2")(_factory(None))
