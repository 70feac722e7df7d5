"""Checkpoint → bundle: every requested target and precision, parity-checked, written atomically.

Order of work: validate everything that can be validated without work (targets, precisions,
optional packages, model/config consistency, calibration and held-out frames), then export ONNX,
quantize, convert per target, score every variant on held-out frames, fail on INT8 drift, and
publish the bundle. See :func:`export_bundle` and :func:`export_checkpoint`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from torch import nn

from . import onnx_export
from .bundle import BundleWriter
from edgedepth.coarse_fit import fit_for_training
from edgedepth.runtime import DEFAULT_MAX_TILE_BATCH
from edgedepth.tiling import Tiling

from edgedepth.train.models.refiner import guide_sources
from edgedepth.train.pipeline import coarse_input

from .frames import calibration_batches, check_frames, load_frames, prepare_frames
from .optional import available, missing
from .parity import DEFAULT_INT8_BOUND, ParityRow, check_drift, markdown, reference_row, score_coarse, score_refiner

TARGETS = ("onnx", "openvino", "coreml", "tensorrt", "torch")
# Targets converted from the ONNX export (CoreML and torch bundles convert from the modules).
ONNX_BASED = frozenset({"onnx", "tensorrt", "openvino"})
MIN_COARSE_CALIB_FRAMES = 4
PRECISIONS = ("fp32", "fp16", "int8")
# Python packages each target needs on the export host (TensorRT builds on the device).
TARGET_PACKAGES = {
    "onnx": ["onnx", "onnxsim", "onnxruntime"],
    "tensorrt": ["onnx", "onnxsim", "onnxruntime"],
    "openvino": ["onnx", "onnxsim", "openvino", "nncf"],
    "coreml": ["coremltools"],
    "torch": ["safetensors"],
}


@dataclass
class ExportConfig:
    """What to export. Frame sets are ``"procedural:N"``, a data-set folder, or a list of samples;
    calibration frames need no depth, so ``calib`` may also be a folder of images or a video."""

    targets: Sequence[str] = ("onnx",)
    precisions: Sequence[str] = ("fp32", "fp16", "int8")
    calib: Any = "procedural:16"
    heldout: Any = "procedural:4"
    # Frames NNCF accuracy control selects its INT8 model on: not the held-out ones, which report it.
    select: Any = "procedural:4"
    # (H, W) of procedural frames and the bundle's tiling; None: what the checkpoint trained with
    # (model.json "train"), else 384x512 and Tiling().
    frame_size: Optional[tuple[int, int]] = None
    tiling: Optional[Tiling] = None
    calib_tiles: int = 64                       # minimum INT8 calibration tiles
    calib_method: str = "minmax"                # Q/DQ activation ranges: minmax or percentile
    int8_bound: float = DEFAULT_INT8_BOUND      # relative AbsRel rise allowed for INT8
    accuracy_control: bool = True               # OpenVINO INT8 by NNCF accuracy control (else plain PTQ)
    pipeline_size: Optional[tuple[int, int]] = None  # (H, W) of the fused pipeline; None = none
    # INT8 for the coarse model too (ONNX Q/DQ, OpenVINO); None: only for a ViT coarse model, which
    # is most of a frame's time (a lite CNN coarse model costs little and stays float).
    coarse_int8: Optional[bool] = None
    # Precisions written as OpenVINO IR (None: all of ``precisions``). The runtime's OpenVINO backend
    # compiles the bundle's ONNX files where no IR is held, so a bundle that must stay small can ship
    # the INT8 IR alone: NNCF's INT8 is what the ONNX Q/DQ file cannot give OpenVINO.
    openvino_precisions: Optional[Sequence[str]] = None
    overwrite: bool = False

    @property
    def ir_precisions(self) -> tuple[str, ...]:
        """Precisions of the OpenVINO IR an export with ``openvino`` among its targets writes."""
        chosen = self.precisions if self.openvino_precisions is None else self.openvino_precisions
        return tuple(p for p in PRECISIONS if p in chosen)

    def resolved(self, meta: dict) -> "ExportConfig":
        """A copy whose ``frame_size`` and ``tiling`` default to the checkpoint's training ones."""
        train = meta.get("train", {})
        tiling = self.tiling or (Tiling.from_json(train["tiling"]) if "tiling" in train else Tiling())
        size = self.frame_size or tuple(train.get("frame_size", (384, 512)))
        return dataclasses.replace(self, tiling=tiling, frame_size=(int(size[0]), int(size[1])))

    def validate(self) -> None:
        """Raise ValueError / ImportError before any work when the request cannot be honoured."""
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or not self.targets:
            raise ValueError(f"unknown target(s) {bad or '(none)'}: choose from {', '.join(TARGETS)}")
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise ValueError(f"unknown precision(s) {bad or '(none)'}: choose from {', '.join(PRECISIONS)}")
        need = sorted({m for t in self.targets for m in TARGET_PACKAGES[t]}
                      | ({"onnx", "onnxsim"} if self.pipeline_size else set()))
        absent = missing(need)
        if absent:
            raise ImportError(f"export targets {', '.join(self.targets)} need the optional package(s) "
                              f"{', '.join(absent)}: pip install 'edgedepth[export]'")
        from .quantize_qdq import CALIB_METHODS

        if self.calib_method not in CALIB_METHODS:
            raise ValueError(f"unknown calibration method {self.calib_method!r}: choose from {', '.join(CALIB_METHODS)}")
        if self.calib_tiles < 1:
            raise ValueError(f"calib_tiles must be >= 1, got {self.calib_tiles}")
        if not self.int8_bound >= 0:
            raise ValueError(f"int8_bound must be >= 0, got {self.int8_bound}")
        if self.openvino_precisions is not None:
            bad = [p for p in self.openvino_precisions if p not in self.precisions]
            if bad or not self.openvino_precisions:
                raise ValueError(f"OpenVINO IR precision(s) {bad or '(none)'} not among the exported precisions "
                                 f"{', '.join(self.precisions)}")
            if "openvino" not in self.targets:
                raise ValueError("OpenVINO IR precisions given but 'openvino' is not among the targets")


def check_models(coarse: nn.Module, refiner: Optional[nn.Module]) -> None:
    """ValueError unless the refiner consumes what the coarse model produces (interfaces.md)."""
    if refiner is None:
        raise ValueError("the checkpoint has no refiner: a bundle needs a coarse model and a refiner")
    for attr in ("input_size", "mean", "std", "feature_channels", "feature_strides", "metric"):
        if not hasattr(coarse, attr):
            raise ValueError(f"coarse model {type(coarse).__name__} lacks {attr!r} (docs/interfaces.md, Models)")
    for attr in ("tile_size", "guidance"):
        if not hasattr(refiner, attr):
            raise ValueError(f"refiner {type(refiner).__name__} lacks {attr!r} (docs/interfaces.md, Models)")
    sources = guide_sources(refiner)
    for k, ((c, _, _), src) in enumerate(zip(refiner.guidance, sources)):
        if not 0 <= src < len(coarse.feature_channels):
            raise ValueError(f"refiner guide{k} reads coarse feat{src} but the coarse model gives "
                             f"{len(coarse.feature_channels)} feature maps: the checkpoint's models do not match")
        if c != coarse.feature_channels[src]:
            raise ValueError(f"refiner guide{k} expects {c} channels, coarse feat{src} has "
                             f"{coarse.feature_channels[src]}: the checkpoint's models do not match")


def _onnx_runner(path: Path) -> Callable:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda feeds: sess.run(None, feeds if isinstance(feeds, dict) else {"image": feeds})[0]


def export_bundle(coarse: nn.Module, refiner: nn.Module, meta: dict, out: str | Path,
                  cfg: ExportConfig = ExportConfig(), *, log: Callable[[str], None] = print) -> Path:
    """Export ``coarse`` + ``refiner`` to the bundle folder ``out`` (``NAME.edgedepth``) and return it."""
    from .coreml_export import folder_bytes

    cfg = cfg.resolved(meta)
    cfg.validate()
    check_models(coarse, refiner)
    coarse, refiner = coarse.eval().float(), refiner.eval().float()
    int8 = "int8" in cfg.precisions
    calib = load_frames(cfg.calib, size=cfg.frame_size, seed=0, what="calibration", labeled=False)
    heldout = load_frames(cfg.heldout, size=cfg.frame_size, seed=100_000, what="held-out")
    # NNCF picks its INT8 model on frames of its own: scoring it on the same ones would flatter it.
    select = (load_frames(cfg.select, size=cfg.frame_size, seed=200_000, what="selection")
              if int8 and cfg.accuracy_control and "openvino" in cfg.targets and "int8" in cfg.ir_precisions else [])
    check_frames(calib, refiner.tile_size, cfg.tiling, "calibration", labeled=False)
    check_frames(heldout, refiner.tile_size, cfg.tiling, "held-out")
    if select:
        check_frames(select, refiner.tile_size, cfg.tiling, "selection")
    if int8:
        per_frame = [len(cfg.tiling.grid(*s["image"].shape[:2], refiner.tile_size)) for s in calib]
        if sum(per_frame) < cfg.calib_tiles:
            raise ValueError(f"the calibration set gives {sum(per_frame)} tiles ({len(calib)} frames x "
                             f"{per_frame[0]}); INT8 needs at least {cfg.calib_tiles}: "
                             "add frames or lower --calib-tiles")
        if quantize_coarse(cfg, coarse) and len(calib) < MIN_COARSE_CALIB_FRAMES:
            raise ValueError(f"INT8 of the coarse model calibrates on whole frames: it needs at least "
                             f"{MIN_COARSE_CALIB_FRAMES}, the calibration set has {len(calib)}")

    with BundleWriter(out, overwrite=cfg.overwrite) as w:
        log(f"preparing {len(calib)} calibration and {len(heldout)} held-out frames")
        # how the runtime will feed the coarse model: as training did (coarse_fit.fit_for_training)
        fit = fit_for_training(meta.get("train", {}).get("frame_size"), tuple(coarse.input_size))
        calib_frames = prepare_frames(coarse, refiner, calib, cfg.tiling, reference=False, fit=fit) if int8 else []
        # The coarse model calibrates on whole frames: images only, no depth needed.
        coarse_calib = ([{"image": coarse_input(s["image"], coarse, fit)} for s in calib]
                        if int8 and quantize_coarse(cfg, coarse) else [])
        frames = prepare_frames(coarse, refiner, heldout, cfg.tiling, fit=fit)
        coarse_inputs = [coarse_input(s["image"], coarse, fit) for s in heldout]
        files: dict[str, dict[str, dict[str, str]]] = {"coarse": {}, "refiner": {}}
        rows: list[ParityRow] = []
        baselines = {"coarse": reference_row("coarse", frames), "refiner": reference_row("refiner", frames)}

        skipped: list[tuple[str, str]] = []  # (variant, why it could not be scored here)

        def add(role: str, fmt: str, prec: str, path: Path, run: Optional[Callable], why_not: str = "") -> None:
            files[role].setdefault(fmt, {})[prec] = w.rel(path)
            variant = f"{role}/{fmt}/{prec}"
            if run is None:
                if why_not:
                    skipped.append((variant, why_not))
                    log(f"  {variant}: not scored: {why_not}")
                return
            size = folder_bytes(path) + (folder_bytes(path.with_suffix(".bin")) if path.suffix == ".xml" else 0)
            row = (score_refiner(variant, run, frames, cfg.tiling.window, size) if role == "refiner"
                   else score_coarse(variant, run, coarse_inputs, frames, size))
            rows.append(row)
            log(f"  {variant}: AbsRel vs fp32 {row.absrel_vs_fp32:.2e}, vs GT {row.absrel_vs_gt:.4f}")

        # ONNX only where a target is made from it (a GPU machine may lack onnxsim, and a DA-V2 export
        # costs minutes).
        onnx_files: dict[str, dict[str, Path]] = {"coarse": {}, "refiner": {}}
        if ONNX_BASED & set(cfg.targets):
            log("exporting ONNX")
            onnx_files = {"coarse": {"fp32": onnx_export.export_coarse(coarse, w.file("coarse.onnx"))},
                          "refiner": {"fp32": onnx_export.export_refiner(refiner, w.file("refiner.onnx"))}}
        want_onnx = {"onnx", "tensorrt"} & set(cfg.targets)
        if "fp16" in cfg.precisions and want_onnx:
            for role in ("coarse", "refiner"):
                onnx_files[role]["fp16"] = onnx_export.convert_fp16(onnx_files[role]["fp32"], w.file(f"{role}.fp16.onnx"))
        if int8 and want_onnx:
            from .quantize_qdq import quantize_int8_qdq

            log("quantizing the refiner to INT8 (Q/DQ)")
            quantize_int8_qdq(onnx_files["refiner"]["fp32"], w.file("refiner.int8.qdq.onnx"),
                              calibration_batches(calib_frames), min_tiles=cfg.calib_tiles,
                              calib_method=cfg.calib_method)
            onnx_files["refiner"]["int8"] = w.file("refiner.int8.qdq.onnx")
            if coarse_calib:
                log("quantizing the coarse model to INT8 (Q/DQ; attention, norms and the depth head float)")
                quantize_int8_qdq(onnx_files["coarse"]["fp32"], w.file("coarse.int8.qdq.onnx"), coarse_calib,
                                  min_tiles=MIN_COARSE_CALIB_FRAMES, role="coarse", calib_method=cfg.calib_method)
                onnx_files["coarse"]["int8"] = w.file("coarse.int8.qdq.onnx")
        for role, table in onnx_files.items():
            for prec, path in table.items():
                if want_onnx and (prec in cfg.precisions or prec == "fp32"):
                    add(role, "onnx", prec, path, _onnx_runner(path))
        if "tensorrt" in cfg.targets:
            _tensorrt_notes(onnx_files, cfg, w, log)

        if "openvino" in cfg.targets:
            from . import openvino_export as ove

            log("converting to OpenVINO IR")
            ir_files: dict[str, dict[str, Path]] = {"coarse": {}, "refiner": {}}
            ir_precs = cfg.ir_precisions
            for role in ("coarse", "refiner"):
                for prec in ("fp32", "fp16"):
                    if prec in ir_precs:
                        xml = ove.to_openvino(onnx_files[role]["fp32"], w.file(f"openvino/{role}.{prec}.xml"), prec)
                        add(role, "openvino", prec, xml, ove.runner(xml))
                        ir_files[role][prec] = xml
            if "int8" in ir_precs:
                # With accuracy control the shipped INT8 IR is the one NNCF proved within the bound.
                batches, dst = calibration_batches(calib_frames), w.file("openvino/refiner.int8.xml")
                if cfg.accuracy_control:
                    xml = ove.quantize_openvino_accuracy_control(onnx_files["refiner"]["fp32"], dst, batches,
                                                                 prepare_frames(coarse, refiner, select, cfg.tiling, reference=False, fit=fit),
                                                                 cfg.tiling.window, max_drop=cfg.int8_bound)
                else:
                    xml = ove.quantize_openvino(onnx_files["refiner"]["fp32"], dst, batches, min_tiles=cfg.calib_tiles)
                add("refiner", "openvino", "int8", xml, ove.runner(xml))
                ir_files["refiner"]["int8"] = xml
                if coarse_calib:
                    xml = ove.quantize_openvino(onnx_files["coarse"]["fp32"], w.file("openvino/coarse.int8.xml"), coarse_calib,
                                                min_tiles=MIN_COARSE_CALIB_FRAMES, role="coarse",
                                                transformer=is_transformer(coarse))
                    add("coarse", "openvino", "int8", xml, ove.runner(xml))
                    ir_files["coarse"]["int8"] = xml
            if "fp32" in ir_precs:
                # For callers of OpenVINO itself (not the runtime): uint8 frames in, resize and mean/std in the graph.
                ove.to_openvino_uint8(onnx_files["coarse"]["fp32"], w.file("openvino/coarse.u8.xml"), coarse.mean, coarse.std)
            # The refiner's batch: one export-size frame's tiles, in chunks of at most the runtime's default.
            tiles = min(coreml_batch(cfg, refiner), DEFAULT_MAX_TILE_BATCH)
            names = {role: {prec: w.rel(xml) for prec, xml in table.items()} for role, table in ir_files.items()}
            w.file("openvino/benchmark_app.txt").write_text(ove.benchmark_app_text(ir_files, names, tiles), encoding="utf-8")

        if "coreml" in cfg.targets:
            from .coreml_export import export_models

            log("converting to CoreML")
            variants = ["fp16"] + (["int8", "palette6"] if int8 else [])
            # Fixed batch (the Neural Engine needs fixed shapes): the tiles of one frame.
            for role, variant, path, (run, why_not) in export_models(coarse, refiner, meta, coreml_batch(cfg, refiner),
                                                                     variants, w.file):
                add(role, "coreml", variant, path, run, why_not)

        if "torch" in cfg.targets:  # the runtime's torch backend (development, GPU tests)
            from edgedepth.train.checkpoint import write_model_files

            write_model_files(w.file("torch/model.safetensors").parent, coarse, refiner, meta)
            # One fp32 file: the backend casts it to half on load, on CUDA only (fp16 is its default there).
            files["refiner"]["torch"] = {p: "torch/model.safetensors" for p in ("fp32", "fp16")
                                         if p == "fp32" or p in cfg.precisions}

        check_drift(rows, baselines, cfg.int8_bound)
        pipeline = _pipeline(coarse, refiner, meta, cfg, fit, w, log) if cfg.pipeline_size else None
        manifest = _manifest(coarse, refiner, meta, cfg, fit, files, rows, baselines, pipeline)
        report = "# Parity report\n\n" + markdown([baselines["coarse"], baselines["refiner"], *rows], skipped)
        w.file("parity.md").write_text(report, encoding="utf-8")
        path = w.commit(manifest)
    log(report)
    log(f"bundle written: {path}")
    return path


def _tensorrt_notes(onnx_files: dict[str, dict[str, Path]], cfg: ExportConfig, w: BundleWriter, log) -> None:
    """Write ``trtexec.txt`` (both models, every precision, both TensorRT build modes: what the
    runtime and ``edgedepth build-engines`` build on the device) and say where it is."""
    from .tensorrt import trtexec_text

    w.file("trtexec.txt").write_text(trtexec_text(onnx_files, cfg.tiling), encoding="utf-8")
    log("TensorRT: engines are built on the device (edgedepth build-engines BUNDLE); "
        "the equivalent trtexec lines are in the bundle's trtexec.txt")
    if not available("tensorrt"):
        log("tensorrt is not installed here: engines are built on the device from the bundle's ONNX")


def _pipeline(coarse, refiner, meta: dict, cfg: ExportConfig, fit: str, w: BundleWriter, log) -> dict:
    from .pipeline import FusedPipeline, export_pipeline_coreml, export_pipeline_onnx

    h, wd = cfg.pipeline_size
    log(f"building the fused {wd}x{h} pipeline ({cfg.tiling.upsample} upsampling)")
    tiling_cfg = cfg.tiling
    if tiling_cfg.snap:
        log("  the fused pipeline does not snap depth steps (tiling.snap): built without")
        tiling_cfg = dataclasses.replace(tiling_cfg, snap=0.0)
    pipe = FusedPipeline(coarse, refiner, h, wd, tiling_cfg, fit=fit)
    if pipe.upsample != tiling_cfg.upsample:
        log(f"  the fused pipeline upsamples with {pipe.upsample} (float16 cannot hold {tiling_cfg.upsample})")
    out: dict[str, Any] = {"input_size": [h, wd], "upsample": pipe.upsample}
    if ONNX_BASED & set(cfg.targets):
        path = export_pipeline_onnx(pipe, w.file(f"pipeline_{wd}x{h}.onnx"))
        out["onnx"] = {"fp32": w.rel(path)}
    if "coreml" in cfg.targets:
        from .coreml_export import validate_coreml

        path = export_pipeline_coreml(pipe, w.file(f"coreml/pipeline_{wd}x{h}.fp16.mlpackage"), meta=meta)
        validate_coreml(path, {"image": (1, 3, h, wd)}, ["depth"])
        out["coreml"] = {"fp16": w.rel(path)}
    return out


def _manifest(coarse, refiner, meta, cfg, fit: str, files, rows, baselines, pipeline) -> dict:
    ch, cw = coarse.input_size
    th, tw = refiner.tile_size
    feat_out = [{"name": f"feat{k}", "channels": int(c), "stride": int(s)}
                for k, (c, s) in enumerate(zip(coarse.feature_channels, coarse.feature_strides))]
    guides = [{"name": f"guide{k}", "shape": [-1, int(c), int(h), int(w)], "source": f"feat{src}"}
              for k, ((c, h, w), src) in enumerate(zip(refiner.guidance, guide_sources(refiner)))]
    manifest = {
        "coarse": {
            "name": meta.get("coarse", {}).get("name", type(coarse).__name__),
            "input_size": [ch, cw], "mean": list(map(float, coarse.mean)), "std": list(map(float, coarse.std)),
            "metric": bool(coarse.metric),
            "fit": fit,  # how export's own frames were fed
            "inputs": [{"name": "image", "shape": [1, 3, ch, cw]}],
            "outputs": [{"name": "depth", "channels": 1, "stride": 1}, *feat_out],
            "files": files["coarse"],
        },
        "refiner": {
            "name": meta.get("refiner", {}).get("name", type(refiner).__name__),
            "tile_size": [th, tw], "batch": None,
            # CoreML models have the default grid's tile count fixed (the Neural Engine needs it).
            "coreml_batch": coreml_batch(cfg, refiner) if "coreml" in files["refiner"] else None,
            "train_shrink": train_shrink(meta, refiner),
            "inputs": [{"name": "rgb", "shape": [-1, 3, th, tw]}, {"name": "coarse_depth", "shape": [-1, 1, th, tw]},
                       *guides],
            "outputs": [{"name": "depth", "shape": [-1, 1, th, tw]}],
            "files": files["refiner"],
        },
        "tiling": cfg.tiling.to_json(),
        "camera": {"fx_norm": float(meta.get("camera", {}).get("fx_norm", _default_fx_norm()))},
        # z-depth in metres; output beyond valid_max (where training put the sky) is flagged invalid.
        "depth": {"unit": "m", "kind": "z", "valid_max": meta.get("depth", {}).get("valid_max")},
        "parity": {r.variant: r.to_json() for r in [*baselines.values(), *rows]},
    }
    if pipeline:
        manifest["pipeline"] = pipeline
    return manifest


def is_transformer(coarse: nn.Module) -> bool:
    """True for a ViT coarse model (Depth Anything V2, or a transformers model)."""
    from edgedepth.train.models import DepthAnythingV2, HFCoarse

    return isinstance(coarse, (DepthAnythingV2, HFCoarse))


def quantize_coarse(cfg: ExportConfig, coarse: nn.Module) -> bool:
    """Whether an INT8 export quantizes the coarse model too (``cfg.coarse_int8``, auto: a ViT)."""
    return is_transformer(coarse) if cfg.coarse_int8 is None else bool(cfg.coarse_int8)


# Registry names of the coarse models is_transformer() answers True for (DepthAnythingV2, HFCoarse).
TRANSFORMER_COARSE = ("depth-anything-v2", "hf")


def plans_coarse_int8(cfg: ExportConfig, meta: dict) -> bool:
    """:func:`quantize_coarse` from the checkpoint's ``model.json`` alone, for ``--dry-run`` (which
    builds no model): a ViT is a coarse model registered as ``depth-anything-v2[-SIZE]`` or ``hf``."""
    if cfg.coarse_int8 is not None:
        return bool(cfg.coarse_int8)
    name = str(meta.get("coarse", {}).get("name", ""))
    return any(name == n or name.startswith(n + "-") for n in TRANSFORMER_COARSE)


def coreml_batch(cfg: ExportConfig, refiner: nn.Module) -> int:
    """Tiles of a ``cfg.frame_size`` frame: the fixed batch of the CoreML refiner."""
    return len(cfg.tiling.grid(*cfg.frame_size, refiner.tile_size))


def train_shrink(meta: dict, refiner: nn.Module) -> Optional[float]:
    """Frame pixels per refiner pixel the refiner was trained at (geometric mean of y and x), from
    the checkpoint's training frame size and tiling; None when the checkpoint does not say."""
    train = meta.get("train", {})
    if "tiling" not in train or "frame_size" not in train:
        return None
    grid = Tiling.from_json(train["tiling"]).grid(*train["frame_size"], refiner.tile_size)
    sy, sx = grid.shrink(*refiner.tile_size)
    return round(float((sy * sx) ** 0.5), 4)


def _default_fx_norm() -> float:
    from edgedepth.datasets import FX_NORM  # the procedural camera the models are trained on

    return FX_NORM


def export_checkpoint(checkpoint: str | Path, out: str | Path, cfg: ExportConfig = ExportConfig(), *,
                      log: Callable[[str], None] = print) -> Path:
    """Load a checkpoint folder (``edgedepth.train.checkpoint``) and export it with ``cfg``."""
    cfg.validate()  # before loading: a bad target should not wait for a large checkpoint
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        raise FileNotFoundError(f"checkpoint {checkpoint} not found (expected a folder with model.safetensors "
                                "and model.json)")
    from edgedepth.train.checkpoint import load_models

    coarse, refiner, meta = load_models(checkpoint)
    return export_bundle(coarse, refiner, meta, out, cfg, log=log)
