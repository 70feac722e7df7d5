"""Training configuration: dataclasses with working defaults, loaded from YAML.

A config file mirrors :class:`Config` (sections ``model``, ``data``, ``tiling``, ``optim``,
``loss``, ``train``). Loading checks every key and type and names the offending field
(``train.steps``) in its error; :func:`validate_config` then checks what needs the model
registry or the file system (model names, data folders, checkpoints, tile/frame shapes).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from edgedepth.tiling import UPSAMPLING, Tiling

STAGES = ("coarse", "noisy-pretrain", "refiner", "distill")
DEPTH_LOSSES = ("l1_log", "silog")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Lite encoders reduce by 32 at their deepest level; inputs must sit on that grid so every
# feature map has an integer size (and the ONNX export stays static).
MODEL_STRIDE = 32


@dataclass
class ModelConfig:
    """Which registry models to build and which checkpoints to start from."""

    coarse: str = "lite"
    coarse_kwargs: dict = field(default_factory=dict)
    # Checkpoint folder (save_models layout) whose coarse model is loaded and frozen.
    coarse_checkpoint: Optional[str] = None
    refiner: str = "prv2-mobile"
    refiner_kwargs: dict = field(default_factory=dict)
    tile_size: tuple[int, int] = (96, 128)  # refiner input (h, w) pixels
    # Checkpoint folder whose refiner weights initialise this run (Noisy Pretraining -> refiner).
    init_refiner: Optional[str] = None
    # Distillation teacher: a checkpoint folder holding coarse + refiner.
    teacher_checkpoint: Optional[str] = None


@dataclass
class DataConfig:
    """Where frames come from: ``shards`` (pre-rendered, edgedepth.train.shards) when given, else
    ``source``: ``procedural`` renders scenes on the fly from seeds, any other value names an
    ``edgedepth.datasets.open_dataset`` reader of the folder ``root``."""

    source: str = "procedural"  # "procedural" or a kind for edgedepth.datasets.open_dataset
    root: Optional[str] = None  # data folder for non-procedural sources
    shards: tuple[str, ...] = ()  # shard folders (edgedepth train-data); their frames are the training set
    train_split: Optional[str] = "train"
    val_split: Optional[str] = "val"
    frame_size: tuple[int, int] = (192, 256)  # (H, W) frame pixels rendered / expected (not with shards)
    layouts: tuple[str, ...] = ("street", "indoor")
    # Transparent panes whose synthetic ground truth is the surface behind (what BFM is for).
    unreliable: bool = True
    # Drop the frame's unreliable pixels (the generator knows them) from the training loss; False
    # leaves them to BFM, as with real synthetic data sets that do not mark them. Validation always
    # drops them.
    use_mask: bool = True
    # Depth (m) the procedural sky and anything beyond valid_max read in training: models learn to
    # put what is out of range far away (the runtime flags > valid_max invalid). 0: leave it invalid.
    far_depth: float = 120.0
    valid_max: float = 80.0  # metres: the range the models are trained and scored on
    # Refiner stages: the coarse depth is the ground truth reduced to the coarse model's input size
    # (what a perfect coarse model would give) instead of the coarse model's output. The "oracle"
    # experiment: it isolates what the refiner can learn; needs a refiner without coarse features (-dg).
    oracle_coarse: bool = False
    degrade: bool = False  # real-like images with sparse ground truth (distillation)
    # Refiner stages: the share of training frames given random shadow and paint shapes (colour
    # edges without depth edges, which procedural frames lack and photographs are full of).
    shade: float = 0.0
    shade_coarse: bool = True  # the frozen coarse model sees the shapes too (as it sees real shadows)
    hflip: bool = True
    val_samples: int = 8
    val_seed: int = 1_000  # procedural val stream seed; training uses train.seed (keep them apart)
    num_workers: int = 0


# The tile grid is the runtime's own policy (fixed rows x cols, or adaptive with ``shrink``).
TilingConfig = Tiling


@dataclass
class OptimConfig:
    """AdamW with per-module learning rates. PRV2 trains at 1.2e-4 with the encoder at x0.1 because
    its encoders come ImageNet-pretrained; ours start from scratch, so the defaults do not slow them."""

    lr: float = 2e-3
    weight_decay: float = 1e-5
    encoder_lr_mult: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "cosine"  # "cosine" or "constant", after a linear warm-up
    warmup_steps: int = 0
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0  # max global grad norm; 0 disables


@dataclass
class LossConfig:
    """Loss terms and weights. ``depth`` is the supervised term: "l1_log" (mean |ln pred - ln gt| +
    ``grad`` x multi-scale gradient matching of that error) or "silog" (with ``silog_focus``);
    ``detail`` is the scale-free part of DSD against the teacher (distill stage)."""

    depth: str = "l1_log"
    # Refiners: the ground truth is cut at scale x the tile size and the prediction upsampled to it
    # bilinearly, as the runtime's stitch upsamples tiles into the frame: the loss then sees the edges
    # the frame-resolution metrics see, not the point-sampled tile-resolution ones.
    scale: int = 1
    # How the prediction reaches the ground truth's resolution when scale > 1: "bilinear", or
    # "joint_bilateral" / "guided" (guided by the tile's colours with tiling's joint_sigma or
    # guided_* fields) for a refiner the runtime upsamples that way: its tile values then only have
    # to be right where the colour-guided upsampling reads them, instead of a blend it smears.
    upsample: str = "bilinear"
    weight: float = 1.0  # of the depth term
    grad: float = 0.5  # l1_log: weight of the gradient-matching part
    # l1_log: the share of a too-far pixel's relative error (pred / gt - 1) charged in place of its
    # ln error (losses.depth.relative_far): AbsRel's charge, under which the nearer side of an
    # uncertain depth edge is the cheaper guess.
    far: float = 0.0
    far_band: bool = False  # the far charge only within the edge band below
    # l1_log: pixels within 2 px of a ground-truth depth edge weigh 1 + edge_weight (the band where
    # blur costs most and the edge-band metrics look; elsewhere the coarse map is often right).
    # 8: oracle sweep at 600 steps, edge-band error -0 / -21 / -24 % for 0 / 4 / 8.
    edge_weight: float = 8.0
    grad_scales: int = 3
    silog_focus: float = 0.85  # silog: the share of the mean log error the loss forgives
    c2f: float = 0.5  # the same depth term on a refiner's intermediate (C2F) depth
    gpct: float = 1.0  # GPCT: mean squared ln-depth difference on the overlaps of the 2x2 tile group
    bfm: bool = False  # Bias-Free Masking (PRO) of the ground truth against the coarse map
    detail: str = "local_ssigm"  # a key of edgedepth.train.losses.DETAIL_LOSSES
    detail_weight: float = 1.0  # DSD lambda
    ssigm_window: int = 23
    ssigm_windows: int = 100


@dataclass
class RunConfig:
    """The loop: stage, steps, precision, logging and checkpoint cadence."""

    stage: str = "coarse"
    steps: int = 1000
    batch_size: int = 4  # frames per micro-batch per process
    grad_accum: int = 1
    precision: str = "auto"
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    seed: int = 0
    # torch CPU threads; 0 = one per process on a machine of up to 4 cores (torch's full team
    # busy-waits and collapses as soon as anything else runs), half the cores above that.
    threads: int = 0
    # Wall-clock budget of the loop in minutes (0 = none): the learning-rate schedule then runs on
    # max(step / steps, elapsed / budget) and the run ends when either reaches 1 (a GPU run sized
    # by time, not by a step count guessed for an unknown machine).
    max_minutes: float = 0.0
    # Convolution weights in channels-last (NHWC) memory: the layout oneDNN and tensor cores run
    # fastest (prv2-mobile forward + backward, one CPU thread: 11-17 % less time); saved checkpoints
    # are plain contiguous tensors either way.
    channels_last: bool = True
    # torch.compile (inductor) the trainable module's training forward and backward: fewer, fused
    # kernels. configs/default-refiner.yaml's step (prv2-mobile, 8 tiles of 128x224, one thread of
    # the 2-core EPYC, 2026-11-30, three runs of 6 interleaved steps): 0.42-0.44 -> 0.33-0.36 s
    # (1.23-1.30x by the minimum) after about two minutes of compiling (seconds once inductor's
    # cache holds it). On a GPU, where a step is bound by its kernel launches, not yet measured
    # (benchmarks/gpu/train_step.py --compile). Needs a C++ compiler (Triton on CUDA); off by
    # default: the shipped recipe ran eagerly.
    compile: bool = False
    log_every: int = 10
    val_every: int = 100
    ckpt_every: int = 100
    keep_checkpoints: int = 2
    out_dir: str = "runs/default"
    tensorboard: bool = True
    progress: bool = True
    fx_norm: float = 0.8  # training camera focal length / image width, recorded in model.json


@dataclass
class Config:
    name: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# dict / YAML -> dataclasses, with errors naming the field


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and origin is getattr(types, "UnionType")):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise TypeError(f"config field {where!r} must be a mapping, got {type(value).__name__}")
        return _build(tp, value, where + ".")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"config field {where!r} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"config field {where!r} must have {len(args)} items, got {list(value)!r}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"config field {where!r} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError(f"config field {where!r} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"config field {where!r} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 4e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"config field {where!r} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"config field {where!r} must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError(f"config field {where!r} must be a string, got {value!r}")
        return value
    raise TypeError(f"config field {where!r} has unsupported type {_type_name(tp)}")  # pragma: no cover


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(
            f"config field {prefix + str(unknown[0])!r} is unknown; "
            f"known fields{' of ' + prefix.rstrip('.') if prefix else ''}: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as err:  # a section's own checks (e.g. Tiling's) name no field path
        raise ValueError(f"config section {prefix.rstrip('.') or 'top level'!r}: {err}") from err


def config_from_dict(data: dict) -> Config:
    """Build a :class:`Config` from nested plain data; missing fields keep their defaults."""
    if not isinstance(data, dict):
        raise TypeError(f"a config must be a mapping of sections, got {type(data).__name__}")
    cfg = _build(Config, data)
    check_config(cfg)
    return cfg


def apply_overrides(data: dict, overrides: Iterable[str]) -> dict:
    """Apply ``section.field=value`` strings (value parsed as YAML) to nested config data."""
    import yaml

    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"override {item!r} must look like section.field=value")
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return data


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config file, apply ``section.field=value`` overrides, check it."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    with open(path, encoding="utf-8") as fh:
        try:
            data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"config file {str(path)!r} is not valid YAML: {err}") from err
    data = apply_overrides(data, overrides)
    return config_from_dict(data)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML (atomically) so a run records exactly what it trained with."""
    import yaml

    from edgedepth.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False), durable=True)


def _fail(where: str, msg: str) -> None:
    raise ValueError(f"config field {where!r} {msg}")


def _at_least(section: str, values: Any, minimum: float, *names: str) -> None:
    for name in names:
        if getattr(values, name) < minimum:
            _fail(f"{section}.{name}", f"must be >= {minimum}, got {getattr(values, name)}")


def check_config(cfg: Config) -> None:
    """Checks that need nothing but the values themselves (ranges, choices, shapes)."""
    t = cfg.train
    if t.stage not in STAGES:
        _fail("train.stage", f"must be one of {', '.join(STAGES)}, got {t.stage!r}")
    if t.precision not in PRECISIONS:
        _fail("train.precision", f"must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    _at_least("train", t, 1, "steps", "batch_size", "grad_accum", "log_every", "val_every", "ckpt_every",
              "keep_checkpoints")
    _at_least("train", t, 0, "threads", "max_minutes")
    if not t.device == "auto" and not (t.device == "cpu" or t.device.startswith("cuda")):
        _fail("train.device", f"must be auto, cpu or cuda[:N], got {t.device!r}")
    o = cfg.optim
    if o.lr <= 0:
        _fail("optim.lr", f"must be > 0, got {o.lr}")
    if o.schedule not in ("cosine", "constant"):
        _fail("optim.schedule", f"must be cosine or constant, got {o.schedule!r}")
    _at_least("optim", o, 0, "weight_decay", "encoder_lr_mult", "grad_clip", "warmup_steps", "min_lr_ratio")
    from .losses import DETAIL_LOSSES

    if cfg.loss.detail not in DETAIL_LOSSES:
        _fail("loss.detail", f"must be one of {', '.join(sorted(DETAIL_LOSSES))}, got {cfg.loss.detail!r}")
    d = cfg.data
    fh, fw = d.frame_size
    if fh < 8 or fw < 8:
        _fail("data.frame_size", f"must be at least 8x8 pixels, got {list(d.frame_size)}")
    _at_least("data", d, 1, "val_samples")
    _at_least("data", d, 0, "num_workers")
    if d.source == "procedural" and d.val_seed == t.seed:
        _fail("data.val_seed", f"must differ from train.seed ({t.seed}): validation would replay training scenes")
    if d.source == "procedural" and not d.layouts:
        _fail("data.layouts", "must name at least one procedural layout")
    th, tw = cfg.model.tile_size
    if th <= 0 or tw <= 0 or th % MODEL_STRIDE or tw % MODEL_STRIDE:
        _fail("model.tile_size", f"must be positive multiples of {MODEL_STRIDE}, got {list(cfg.model.tile_size)}")
    g = cfg.tiling
    if not 0 <= g.overlap_ratio < 0.5:
        _fail("tiling.overlap_ratio", f"must be in [0, 0.5), got {g.overlap_ratio}")
    if t.stage in ("refiner", "distill"):
        if g.overlap_ratio <= 0:
            _fail("tiling.overlap_ratio", "must be > 0: GPCT needs tiles that overlap")
        if not d.shards:  # shard frames are checked when read (every frame needs two tiles)
            try:
                grid = runtime_grid(cfg)
            except ValueError as err:
                _fail("tiling.rows", f"and tiling.cols do not give a tile grid for a {fh}x{fw} frame: {err}")
            if grid.rows < 2 and grid.cols < 2:
                _fail("tiling.rows", f"GPCT needs a grid of at least two tiles, got 1x1 for a {fh}x{fw} frame")
            if min(grid.tile_h, grid.tile_w) < 4:
                _fail("tiling.rows", f"a {grid.rows}x{grid.cols} grid does not fit a {fh}x{fw} frame")
            # The refiner must see tiles with the aspect ratio it sees at run time; a grid whose
            # boxes would be squashed into model.tile_size trains on distorted geometry.
            box_aspect, in_aspect = grid.tile_w / grid.tile_h, tw / th
            if abs(math.log(box_aspect / in_aspect)) > math.log(1.25):
                _fail(
                    "model.tile_size",
                    f"{th}x{tw} does not fit the grid: a {grid.rows}x{grid.cols} grid with overlap ratio "
                    f"{g.overlap_ratio} cuts the {fh}x{fw} frame into {grid.tile_h}x{grid.tile_w} tiles "
                    f"(aspect {box_aspect:.2f} vs {in_aspect:.2f})",
                )
    if t.stage == "distill" and not cfg.model.teacher_checkpoint:
        _fail("model.teacher_checkpoint", "is required by the distill stage")
    lo = cfg.loss
    if lo.depth not in DEPTH_LOSSES:
        _fail("loss.depth", f"must be one of {', '.join(DEPTH_LOSSES)}, got {lo.depth!r}")
    _at_least("loss", lo, 0, "weight", "grad", "edge_weight", "c2f", "gpct", "detail_weight")
    _at_least("loss", lo, 1, "scale", "grad_scales")
    if lo.upsample not in UPSAMPLING:
        _fail("loss.upsample", f"must be one of {', '.join(UPSAMPLING)}, got {lo.upsample!r}")
    for name in ("silog_focus", "far"):
        if not 0 <= getattr(lo, name) <= 1:
            _fail(f"loss.{name}", f"must be in [0, 1], got {getattr(lo, name)}")
    if (lo.far > 0 or lo.far_band) and lo.depth != "l1_log":
        _fail("loss.far", f"and loss.far_band act on loss.depth l1_log only, not {lo.depth!r}")
    if d.far_depth and d.far_depth <= d.valid_max:
        _fail("data.far_depth", f"must be 0 or beyond data.valid_max ({d.valid_max}), got {d.far_depth}")
    if d.oracle_coarse and t.stage not in ("refiner", "noisy-pretrain"):
        _fail("data.oracle_coarse", f"applies to the refiner stage only, not {t.stage!r}")
    if not 0 <= d.shade <= 1:
        _fail("data.shade", f"must be a share in [0, 1], got {d.shade}")


def runtime_grid(cfg: Config):
    """The ``edgedepth.tiling.TileGrid`` the runtime cuts a ``data.frame_size`` frame into."""
    (fh, fw) = cfg.data.frame_size
    return cfg.tiling.grid(int(fh), int(fw), cfg.model.tile_size)


def validate_config(cfg: Config) -> None:
    """Checks against the model registry and the file system; run before any training starts."""
    from .models import list_models

    check_config(cfg)
    m = cfg.model
    coarse_names = list_models("coarse")
    if m.coarse_checkpoint is None and m.coarse not in coarse_names:
        _fail("model.coarse", f"names no registered coarse model: {m.coarse!r}; known: {', '.join(coarse_names)}")
    if cfg.train.stage != "coarse":
        refiner_names = list_models("refiner")
        if m.refiner not in refiner_names:
            _fail("model.refiner", f"names no registered refiner: {m.refiner!r}; known: {', '.join(refiner_names)}")
    for key in ("coarse_checkpoint", "init_refiner", "teacher_checkpoint"):
        value = getattr(m, key)
        if value is not None:
            path = Path(value)
            if not (path / "model.json").is_file() or not (path / "model.safetensors").is_file():
                raise FileNotFoundError(
                    f"config field 'model.{key}': {str(path)!r} is not a checkpoint folder "
                    "(needs model.json and model.safetensors)"
                )
    d = cfg.data
    for k, folder in enumerate(d.shards):
        if not (Path(folder) / "meta.json").is_file():
            raise FileNotFoundError(f"config field 'data.shards[{k}]': {folder!r} is not a shard folder "
                                    "(render one with: edgedepth train-data FOLDER --count N --size WxH)")
    if d.source != "procedural" and not d.shards:
        if not d.root:
            _fail("data.root", f"is required for data.source {d.source!r}")
        if not Path(d.root).is_dir():
            raise FileNotFoundError(f"config field 'data.root': data folder {d.root!r} does not exist")
