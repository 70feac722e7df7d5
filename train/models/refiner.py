"""Tile refiners (PatchRefiner V2 style) and the heavy PatchRefiner baseline (METHODS.md §1, §2).

A refiner sees one full-resolution tile: its RGB (normalised with the coarse model's mean/std), the
coarse depth cropped and resized to the tile, and the coarse features cropped to the tile box
(``guidance``). It predicts a residual. With ``residual="log"`` (the default) the output is
``coarse * exp(residual)``: the residual is a log-depth correction, the same size for a 1 m and a
50 m surface, so one learning rate fits every depth and a scaled scene gives a scaled answer. With
``residual="metres"`` (PatchRefiner's form, kept for the ablation) it is ``max(coarse + residual, 0)``.
The coarse depth enters the network as its log, centred per tile (the tile's own depth layout,
independent of its distance).

Guidance crop sizes: a coarse feature of stride s feeds the refiner level whose stride 2**(l+1) is
nearest to s (log scale), so its crop is (C, th / 2**(l+1), tw / 2**(l+1)). Tile sides must be
multiples of 32 (the deepest encoder stride).

Noisy Pretraining (METHODS §2): ``refiner.noisy_inputs(batch)`` gives an uninformative coarse depth
(``NOISY_PRIOR_DEPTH`` everywhere; PRV2 feeds zeros, which a log residual cannot scale) and N(0, 1)
guidance of the right shapes; train ``refiner(rgb_lowres, *refiner.noisy_inputs(n))`` on whole
low-resolution images, then keep training the same module with real coarse inputs.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBlock, ConvNormAct, make_divisible, upsample2x
from .coarse import CoarseModel, CoarseSpec, _check_size, create_coarse, exporting, probe_features
from .encoders import create_encoder, widen_stem
from .registry import get_factory, register

__all__ = ["Refiner", "PRV2Refiner", "PatchRefinerBaseline", "GuidedDenoisingUnit", "create_refiner",
           "guide_level", "refiner_input_names", "guide_sources", "log_depth", "apply_residual", "RESIDUALS", "NOISY_PRIOR_DEPTH"]

LEVEL_STRIDES = (2, 4, 8, 16, 32)
BASE_DECODER_CHANNELS = (16, 24, 32, 48, 64)
RESIDUALS = ("log", "metres")
# A log residual may scale the coarse depth by at most e^4 ~ 55x either way: a bound far outside
# any real correction that keeps exp() finite in fp16 and bf16.
MAX_LOG_RESIDUAL = 4.0
# Noisy Pretraining's stand-in coarse depth (metres): mid-range of the 0.5-80 m training scenes.
NOISY_PRIOR_DEPTH = 10.0


def guide_level(stride: float) -> int:
    """Refiner level (0..4, strides 2..32) a coarse feature of ``stride`` is cropped to."""
    return min(4, max(0, round(math.log2(stride)) - 1))


def refiner_input_names(refiner: nn.Module) -> list[str]:
    """A refiner's inputs in forward order, as bundles name them: rgb, coarse_depth, guide0..guideK-1."""
    return ["rgb", "coarse_depth", *[f"guide{k}" for k in range(len(refiner.guidance))]]


def guide_sources(refiner: nn.Module) -> list[int]:
    """Index of the coarse feature map each guidance input is cropped from (``guide_indices`` when
    the refiner declares it, else guide k <- feat k)."""
    return [int(i) for i in getattr(refiner, "guide_indices", range(len(refiner.guidance)))]


def log_depth(depth: torch.Tensor) -> torch.Tensor:
    """ln(metres), with depth floored at 1 mm so that 0 (no depth) stays finite."""
    return torch.log(depth.clamp_min(1e-3))


def apply_residual(coarse: torch.Tensor, residual: torch.Tensor, kind: str) -> torch.Tensor:
    """Refined depth (metres) from the coarse depth and a residual of kind "log" or "metres"."""
    if kind == "log":
        return coarse * torch.exp(residual.clamp(-MAX_LOG_RESIDUAL, MAX_LOG_RESIDUAL))
    return F.relu(coarse + residual)


def _check_residual(kind: str) -> str:
    if kind not in RESIDUALS:
        raise ValueError(f"residual must be one of {RESIDUALS}, got {kind!r}")
    return kind


def _pool(x: torch.Tensor, level: int) -> torch.Tensor:
    k = LEVEL_STRIDES[level]
    return F.avg_pool2d(x, k, k)


def _as_spec(coarse: CoarseModel | CoarseSpec) -> CoarseSpec:
    if isinstance(coarse, CoarseSpec):
        return coarse
    if isinstance(coarse, CoarseModel):
        return coarse.spec()
    raise TypeError(f"coarse must be a CoarseModel or CoarseSpec, got {type(coarse).__name__}")


class Refiner(nn.Module):
    """Base class of all refiners; see the module docstring for shapes."""

    tile_size: tuple[int, int]
    guidance: list[tuple[int, int, int]]
    guide_indices: list[int]
    uses_coarse_features: bool
    registry_name: str | None = None
    registry_kwargs: dict[str, Any] = {}

    def _setup_guidance(self, spec: CoarseSpec, tile_size: Sequence[int], use: bool,
                        guide_indices: Sequence[int] | None) -> None:
        self.tile_size = _check_size(tile_size, 32, "tile_size")
        n = len(spec.feature_channels)
        indices = list(range(n)) if guide_indices is None else [int(i) for i in guide_indices]
        if use and any(not 0 <= i < n for i in indices):
            raise ValueError(f"guide_indices must index the coarse model's {n} features, got {indices}")
        self.uses_coarse_features = bool(use)
        self.guide_indices = indices if use else []
        th, tw = self.tile_size
        self.guide_levels = [guide_level(spec.feature_strides[i]) for i in self.guide_indices]
        self.guidance = [(spec.feature_channels[i], th // LEVEL_STRIDES[l], tw // LEVEL_STRIDES[l])
                         for i, l in zip(self.guide_indices, self.guide_levels)]

    def _check_inputs(self, rgb: torch.Tensor, coarse_depth: torch.Tensor, guidance: Sequence[torch.Tensor]) -> None:
        if exporting():
            return
        th, tw = self.tile_size
        for name, t, ch in (("rgb", rgb, 3), ("coarse_depth", coarse_depth, 1)):
            if not isinstance(t, torch.Tensor) or t.ndim != 4 or tuple(t.shape[1:]) != (ch, th, tw):
                raise ValueError(f"{name} must be (N, {ch}, {th}, {tw}), got {tuple(getattr(t, 'shape', ()))}")
        if not (torch.is_floating_point(rgb) and torch.is_floating_point(coarse_depth)):
            raise TypeError(f"rgb and coarse_depth must be floating point, got {rgb.dtype}, {coarse_depth.dtype}")
        if coarse_depth.shape[0] != rgb.shape[0]:
            raise ValueError(f"coarse_depth batch {coarse_depth.shape[0]} != rgb batch {rgb.shape[0]}")
        if len(guidance) != len(self.guidance):
            raise ValueError(f"expected {len(self.guidance)} guidance tensors {self.guidance}, got {len(guidance)}")
        for k, (g, shape) in enumerate(zip(guidance, self.guidance)):
            if not isinstance(g, torch.Tensor) or g.ndim != 4 or tuple(g.shape[1:]) != shape \
                    or g.shape[0] != rgb.shape[0]:
                raise ValueError(f"guide{k} must be (N, {', '.join(map(str, shape))}), "
                                 f"got {tuple(getattr(g, 'shape', ()))}")

    def noisy_inputs(self, batch: int, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Noisy Pretraining inputs: (uninformative coarse depth (batch, 1, th, tw) of
        ``NOISY_PRIOR_DEPTH`` metres, [N(0, 1) guidance])."""
        th, tw = self.tile_size
        prior = torch.full((batch, 1, th, tw), NOISY_PRIOR_DEPTH, device=device, dtype=dtype)
        noise = [torch.randn(batch, *shape, generator=generator, device=device, dtype=dtype)
                 for shape in self.guidance]
        return prior, noise

    def residual_heads(self) -> list[nn.Conv2d]:
        """The last convs whose outputs correct the coarse depth (the final and intermediate residuals)."""
        return [self.out]

    def init_residual_heads(self) -> None:
        """Zero the residual heads: the refiner then returns its coarse input exactly, which is how
        training starts (and restarts after Noisy Pretraining). The heads still receive gradient
        (their input features are not zero), so the first step moves them."""
        for head in self.residual_heads():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the (pretrainable) backbone: the trainer gives them a lower learning rate."""
        return self.encoder.parameters()

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """All parameters that are not ``encoder_parameters()``."""
        enc = {id(p) for p in self.encoder_parameters()}
        return (p for p in self.parameters() if id(p) not in enc)

    def forward_with_aux(self, rgb: torch.Tensor, coarse_depth: torch.Tensor,
                         *guidance: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"depth": final (N,1,th,tw), plus intermediate depths to supervise, e.g. "c2f_depth"}."""
        raise NotImplementedError

    def forward(self, rgb: torch.Tensor, coarse_depth: torch.Tensor, *guidance: torch.Tensor,
                aux: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
        """Refined depth (N, 1, th, tw) metres; with ``aux`` the dict of :meth:`forward_with_aux`
        (training goes through ``forward`` so that a DDP wrapper sees every pass)."""
        out = self.forward_with_aux(rgb, coarse_depth, *guidance)
        return out if aux else out["depth"]


class GuidedDenoisingUnit(nn.Module):
    """GDU: M = sigmoid(ConvBlock(cat(f_c, f_s))), f_d = M * f_s (METHODS §2)."""

    def __init__(self, guide_ch: int, feat_ch: int, norm: str = "gn") -> None:
        super().__init__()
        self.gate = ConvBlock(guide_ch + feat_ch, feat_ch, norm=norm)

    def forward(self, f_c: torch.Tensor, f_s: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(torch.cat([f_c, f_s], 1))) * f_s


class PRV2Refiner(Refiner):
    """PatchRefiner V2 refiner: lite encoder on RGB + coarse depth (4-channel stem), Coarse-to-Fine
    decoder with Guided Denoising Units (emits an intermediate depth), Fine-to-Coarse fusion and a
    U-Net decoder, then a full-resolution fusion with the tile's own RGB and depth; the residual
    heads start at zero, so an untrained refiner returns the coarse depth.

    Without coarse features (``use_coarse_features=False``, the depth-guided variant) the GDU guidance
    at each level comes from the pooled coarse depth alone. ``c2f=False`` drops the C2F decoder (the
    "F2C only" row of PRV2's ablation: encoder features go straight to the fusion); ``gdu=False``
    keeps C2F without its gates; ``full_res=False`` drops the full-resolution branch (PRV2 as
    published ends at stride 2); ``norm`` is the decoder's normalisation ("gn", or "bn", which
    export folds into the convolutions).
    """

    def __init__(self, coarse: CoarseModel | CoarseSpec, tile_size: Sequence[int] = (256, 256),
                 encoder: str = "mobilenetv3_small", width: float = 1.0, decoder_width: float = 1.0,
                 use_coarse_features: bool = True, guide_indices: Sequence[int] | None = None,
                 gdu: bool = True, c2f: bool = True, full_res: bool = True, residual: str = "log",
                 norm: str = "gn", pretrained: Any = False) -> None:
        super().__init__()
        spec = _as_spec(coarse)
        self._setup_guidance(spec, tile_size, use_coarse_features, guide_indices)
        self.residual = _check_residual(residual)
        self.encoder = widen_stem(create_encoder(encoder, in_chans=3, width=width, pretrained=pretrained), 4)
        enc = self.encoder.feature_info.channels()
        if decoder_width <= 0:
            raise ValueError(f"decoder_width must be > 0, got {decoder_width}")
        d = [make_divisible(c * decoder_width) for c in BASE_DECODER_CHANNELS]
        self.decoder_channels = d
        guide_in = [1] * 5  # the pooled coarse depth is guidance at every level
        for (c, _, _), lvl in zip(self.guidance, self.guide_levels):
            guide_in[lvl] += c
        self.guide_proj = nn.ModuleList(ConvBlock(guide_in[l], d[l], norm=norm) for l in range(5))
        if c2f:
            # C2F: deepest to finest, each level gated by its coarse guidance.
            self.c2f_in = nn.ModuleList(
                ConvNormAct(enc[l] + (d[l + 1] if l < 4 else 0), d[l], 3 if l < 4 else 1, norm=norm) for l in range(5))
            self.gdu = nn.ModuleList(GuidedDenoisingUnit(d[l], d[l], norm) for l in range(5)) if gdu else None
            self.c2f_head = nn.Sequential(ConvNormAct(d[0], d[0], 3, norm=norm), nn.Conv2d(d[0], 1, 3, padding=1))
        else:
            self.enc_proj = nn.ModuleList(ConvNormAct(enc[l], d[l], 1, norm=norm) for l in range(5))
        self.c2f = bool(c2f)
        # F2C: per level cat(guidance, C2F feature, depths), then fine-to-coarse and a U-Net decoder.
        self.f2c_in = nn.ModuleList(ConvBlock(2 * d[l] + 2, d[l], norm=norm) for l in range(5))
        self.f2c_down = nn.ModuleList(ConvNormAct(d[l - 1], d[l], 3, 2, norm=norm) for l in range(1, 5))
        self.unet_up = nn.ModuleList(ConvNormAct(d[l + 1] + d[l], d[l], 3, norm=norm) for l in range(4))
        # Full resolution: the stride-2 decoder cannot place an edge to the pixel on its own.
        self.full = ConvNormAct(4, d[0], 3, norm=norm) if full_res else None
        self.out_fuse = ConvNormAct(d[0] * (2 if full_res else 1) + 2, d[0], 3, norm=norm)
        self.out = nn.Conv2d(d[0], 1, 3, padding=1)
        self.init_residual_heads()

    def residual_heads(self) -> list[nn.Conv2d]:
        return [self.out, self.c2f_head[-1]] if self.c2f else [self.out]

    def forward_with_aux(self, rgb: torch.Tensor, coarse_depth: torch.Tensor,
                         *guidance: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check_inputs(rgb, coarse_depth, guidance)
        log_c = log_depth(coarse_depth)
        centre = log_c.mean((2, 3), keepdim=True)
        dfeat = log_c - centre
        stem_in = torch.cat([rgb, dfeat], 1)
        e = self.encoder(stem_in)
        per_level: list[list[torch.Tensor]] = [[_pool(dfeat, l)] for l in range(5)]
        for g, lvl in zip(guidance, self.guide_levels):
            per_level[lvl].append(g)
        f_c = [proj(torch.cat(per_level[l], 1)) for l, proj in enumerate(self.guide_proj)]

        out: dict[str, torch.Tensor] = {}
        if self.c2f:
            c2f: list[torch.Tensor] = []  # deepest first
            x = self.c2f_in[4](e[4])
            for l in range(4, -1, -1):
                if l < 4:
                    x = self.c2f_in[l](torch.cat([upsample2x(x), e[l]], 1))
                if self.gdu is not None:
                    x = self.gdu[l](f_c[l], x)
                c2f.insert(0, x)
            c2f_residual = upsample2x(self.c2f_head(c2f[0]))
            out["c2f_depth"] = apply_residual(coarse_depth, c2f_residual, self.residual)
            mid = log_depth(out["c2f_depth"]) - centre
        else:
            c2f = [proj(f) for proj, f in zip(self.enc_proj, e)]
            mid = dfeat

        h = [fuse(torch.cat([f_c[l], c2f[l], _pool(dfeat, l), _pool(mid, l)], 1))
             for l, fuse in enumerate(self.f2c_in)]
        z = [h[0]]
        for l in range(1, 5):
            z.append(h[l] + self.f2c_down[l - 1](z[-1]))
        u = z[4]
        for l in range(3, -1, -1):
            u = self.unet_up[l](torch.cat([upsample2x(u), z[l]], 1))
        parts = [upsample2x(u), dfeat, mid]
        if self.full is not None:
            parts.insert(1, self.full(stem_in))
        residual = self.out(self.out_fuse(torch.cat(parts, 1)))
        out["depth"] = apply_residual(coarse_depth, residual, self.residual)
        out["residual"] = residual
        return out


class PatchRefinerBaseline(Refiner):
    """The heavy PatchRefiner baseline: the refiner backbone is a full copy of the coarse model
    (its own depth and features on the tile's RGB), fused per level with the coarse-feature crops
    and depths by a light decoder. Its stem stays RGB: the coarse depth enters the decoder."""

    def __init__(self, coarse: CoarseModel | CoarseSpec, tile_size: Sequence[int] = (256, 256),
                 decoder_width: float = 1.0, guide_indices: Sequence[int] | None = None,
                 residual: str = "log") -> None:
        super().__init__()
        self.residual = _check_residual(residual)
        if isinstance(coarse, CoarseModel):
            backbone = copy.deepcopy(coarse)
        elif isinstance(coarse, CoarseSpec) and coarse.name and coarse.name != "module":
            backbone = create_coarse(coarse.name, **coarse.kwargs)
        else:
            raise TypeError("patchrefiner needs a CoarseModel, or a CoarseSpec with a registry name, to copy")
        spec = _as_spec(coarse)
        self._setup_guidance(spec, tile_size, True, guide_indices)
        if not self.guidance:
            raise ValueError("patchrefiner needs at least one coarse feature (guide_indices is empty)")
        self.encoder = backbone
        _, tile_strides = probe_features(backbone, self.tile_size)
        backbone_ch = backbone.feature_channels
        d = [make_divisible(c * decoder_width) for c in BASE_DECODER_CHANNELS]
        self.order = sorted(range(len(self.guidance)), key=lambda k: -self.guide_levels[k])  # coarse first
        self.fuse = nn.ModuleList(
            ConvBlock(backbone_ch[self.guide_indices[k]] + self.guidance[k][0] + 2, d[self.guide_levels[k]])
            for k in range(len(self.guidance)))
        self.up = nn.ModuleList(
            ConvNormAct(d[self.guide_levels[a]] + d[self.guide_levels[b]], d[self.guide_levels[b]], 3, norm="gn")
            for a, b in zip(self.order[:-1], self.order[1:]))
        last = d[self.guide_levels[self.order[-1]]]
        self.out_fuse = ConvNormAct(last + 2, last, 3, norm="gn")
        self.out = nn.Conv2d(last, 1, 3, padding=1)
        self.init_residual_heads()

    def forward_with_aux(self, rgb: torch.Tensor, coarse_depth: torch.Tensor,
                         *guidance: torch.Tensor) -> dict[str, torch.Tensor]:
        self._check_inputs(rgb, coarse_depth, guidance)
        tile_depth, feats = self.encoder(rgb)
        log_c = log_depth(coarse_depth)
        centre = log_c.mean((2, 3), keepdim=True)
        dfeat, tfeat = log_c - centre, log_depth(tile_depth) - centre
        fused = []
        for k, (g, fuse) in enumerate(zip(guidance, self.fuse)):
            f = F.interpolate(feats[self.guide_indices[k]], size=self.guidance[k][1:], mode="bilinear",
                              align_corners=False)
            lvl = self.guide_levels[k]
            fused.append(fuse(torch.cat([f, g, _pool(dfeat, lvl), _pool(tfeat, lvl)], 1)))
        u = fused[self.order[0]]
        for up, k in zip(self.up, self.order[1:]):
            u = F.interpolate(u, size=self.guidance[k][1:], mode="bilinear", align_corners=False)
            u = up(torch.cat([u, fused[k]], 1))
        u = F.interpolate(u, size=self.tile_size, mode="bilinear", align_corners=False)
        residual = self.out(self.out_fuse(torch.cat([u, dfeat, tfeat], 1)))
        return {"depth": apply_residual(coarse_depth, residual, self.residual), "tile_depth": tile_depth,
                "residual": residual}


def _prv2(encoder: str, use_coarse_features: bool):
    def factory(coarse: CoarseModel | CoarseSpec, tile_size: Sequence[int], **kw: Any) -> PRV2Refiner:
        kw.setdefault("encoder", encoder)
        return PRV2Refiner(coarse, tile_size, use_coarse_features=use_coarse_features, **kw)
    return factory


for _name, _enc in (("mobile", "mobilenetv3_small"), ("efficient", "efficientnet_lite0"),
                    ("convnext", "convnext_lite")):
    register("refiner", f"prv2-{_name}")(_prv2(_enc, True))
    register("refiner", f"prv2-{_name}-dg")(_prv2(_enc, False))
register("refiner", "patchrefiner")(PatchRefinerBaseline)


def create_refiner(name: str, coarse: CoarseModel | CoarseSpec, tile_size: Sequence[int] = (256, 256),
                   **kwargs: Any) -> Refiner:
    """Build a registered refiner for ``coarse`` (a model or its ``CoarseSpec``) and ``tile_size`` (h, w).

    kwargs (prv2-*): encoder, width, decoder_width, guide_indices, gdu, c2f, full_res, residual
    ("log" | "metres"), norm ("gn" | "bn"), pretrained; (patchrefiner): decoder_width, guide_indices,
    residual.
    """
    refiner = get_factory("refiner", name)(coarse, tuple(tile_size), **kwargs)
    refiner.registry_name = name
    refiner.registry_kwargs = {"tile_size": list(refiner.tile_size), **kwargs}
    return refiner
