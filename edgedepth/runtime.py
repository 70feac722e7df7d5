"""`Runtime`: metric depth for one frame, a batch or a camera stream, from a bundle and one backend.

Data flow per frame (DESIGN.md): the whole frame is resized to the coarse input (crop_resize of the
whole-frame box, normalised) -> coarse model -> coarse depth + feature maps; the TileGrid of the
frame gives tile boxes; RGB tiles, coarse-depth tiles and feature crops are cut at those boxes
(scaled to each map) -> the refiner runs batched over tiles -> tiles are stitched back with the
bundle's window -> depth is made finite and >= 0, and rescaled for the camera's focal length.

Thread safety: ``predict`` may be called from several threads at once. The runtime holds no
per-call state; backends whose engines are not re-entrant serialise their own ``run``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .backends import PRECISIONS, WEIGHT_VARIANTS, Backend, select_backend
from .bundle import Bundle, open_bundle
from .coarse_fit import CoarseFit
from .manifest import FX_RATIO_RANGE
from .stabilizer import Stabilizer, StabilizerConfig
from .streaming import pipeline
from .version import __version__

STAGES = ("preprocess", "coarse", "crop", "refine", "stitch")
#: What an array frame holds: ``color=`` of predict/stream. Never guessed (DESIGN.md, Conventions).
COLORS = ("rgb", "bgr", "gray")
# Bytes per frame pixel the runtime holds at once (see Runtime.frame_bytes): the RGB frame (3), the
# stitch accumulators (value + weight, float64 in the reference engine: 16), the output (4) and the
# validity masks finish() builds (3 bool planes).
_BYTES_PER_PIXEL = 26
DEFAULT_MEMORY_BUDGET_MB = 4096
DEFAULT_MAX_TILE_BATCH = 16


@dataclass
class DepthResult:
    """One frame's depth.

    depth: (H, W) float32 z-depth (distance along the optical axis) in metres, finite and >= 0: a
        torch tensor on the GPU when a torch/CuPy GPU tensor went in through the torch (CUDA) or
        tensorrt backend; numpy otherwise. Read it together with ``valid``.
    valid: (H, W) bool, same kind as ``depth``: False where the depth is unknown. That is where the
        model's output was not finite (repaired to 0: 0 always means "no depth", never "touching
        the lens") and where it lies beyond the bundle's valid range (``Bundle.valid_max_depth``,
        e.g. sky: the models are trained to put it far away, so such pixels are never near).
    coarse: (h, w) float32 metres, the coarse model's depth of the frame (same rescaling): the whole
        input map, or the frame's part of it when the frame kept its aspect (manifest ``coarse.fit``).
    timings: milliseconds per stage: preprocess, coarse, crop, refine, stitch (and total); in
        coarse-only mode "crop" is the upsampling, "refine" 0 and "stitch" the finishing pass (with
        joint upsampling the two are one pass, counted as "stitch"). Host time: on CUDA a stage
        returns once its kernels are queued, so the GPU's share shows in the next stage that waits
        (or in none; time the frame with ``torch.cuda.synchronize()`` around it).
    grid: the TileGrid used for this frame; None in coarse-only mode (``Runtime(refine=False)``).
    fx_scale: the factor the model's depth was multiplied by: your camera's (fx / W) / fx_norm,
        times the share of the coarse input's width the frame filled (``CoarseFit.width_share``).
    """

    depth: Any
    valid: Any
    coarse: Any
    timings: dict[str, float]
    grid: Any
    fx_scale: float = 1.0


@dataclass
class _Front:
    """What the front half of the pipeline hands to the back half."""

    frame: Any
    height: int
    width: int
    depth: Any
    features: dict[str, Any]
    fx_scale: float
    fit: CoarseFit
    timings: dict[str, float] = field(default_factory=dict)
    returns_tensor: bool = False
    intrinsics: Any = None


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "__dlpack__")


def _is_cupy_array(x: Any) -> bool:
    return type(x).__module__.startswith("cupy")


def _check_tiles(tiles: Any) -> tuple[int, int] | None:
    if tiles is None:
        return None
    if (not isinstance(tiles, (tuple, list)) or len(tiles) != 2
            or not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t >= 1 for t in tiles)):
        raise ValueError(f"tiles must be None or (rows, cols) positive integers, got {tiles!r}")
    return int(tiles[0]), int(tiles[1])


class _HostOps:
    """Tile ops on numpy arrays through edgedepth.tiling (native CPU engine or numpy reference)."""

    def __init__(self, threads: int | None) -> None:
        from . import tiling

        self.tiling = tiling
        self.threads = threads

    def crop_rgb(self, frame, boxes, size, mean, std):
        return self.tiling.crop_resize(frame, boxes, size, mean=mean, std=std, threads=self.threads)

    def crop_map(self, chw, boxes, size):
        return self.tiling.crop_resize(chw, boxes, size, threads=self.threads)

    def crop_maps(self, maps, boxes, sizes):
        return self.tiling.crop_resize_maps(maps, boxes, sizes, threads=self.threads)

    def pad_input(self, x, fit):
        """(1, 3, content_h, content_w) coarse input -> (1, 3, ch, cw), edges repeated (CoarseFit)."""
        return fit.pad_input(x)

    def content(self, depth, fit):
        """The frame's part of the (ch, cw) coarse depth, contiguous."""
        return np.ascontiguousarray(fit.content(depth))

    def concat(self, parts):
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def stitch_finish(self, tiles, boxes, height, width, window, scale: float, valid_max: float):
        """The stitched depth finished as :meth:`finish` does, in the same pass (rows in cache)."""
        return self.tiling.stitch_finish(tiles, boxes, height, width, window=window, scale=scale,
                                         valid_max=valid_max, threads=self.threads)

    def stitch_low_finish(self, tiles, boxes, frame, low_size, policy, scale: float, valid_max: float):
        """Tiles blended at ``low_size``, steps snapped (``policy.snap`` > 0), upsampled to the frame as
        ``policy.upsample`` says and finished (``tiling.stitch_low``)."""
        return self.tiling.stitch_low(tiles, boxes, frame, low_size, policy, scale=scale, valid_max=valid_max,
                                      threads=self.threads)

    def low_finish(self, depth, frame, policy, scale: float, valid_max: float):
        """A (h, w) depth map upsampled to the frame as ``policy.upsample`` says and finished."""
        return self.tiling.upsample(np.ascontiguousarray(depth, dtype=np.float32), None, frame, policy, scale,
                                    valid_max, self.threads)

    def finish(self, depth, scale: float, owned: bool = False, valid_max: float = math.inf):
        """(depth scaled, then made finite and >= 0; valid mask): see DepthResult.

        The contract is enforced after scaling, so no scale can bring back an inf (overflow) or a NaN.
        """
        # Work in place on the stitched map (ours); copy anything else (a backend's output buffer).
        depth = np.ascontiguousarray(depth, dtype=np.float32) if owned else np.array(depth, dtype=np.float32)
        return depth, self.tiling.finish(depth, scale, valid_max, self.threads)

    def to_host(self, x):
        return x


class _TorchOps:
    """The same ops on torch tensors: on CUDA through the native CUDA tile engine of edgedepth.tiling
    (the frame never leaves the GPU), on the CPU (or without the CUDA extension) through
    edgedepth.tiling_torch."""

    def __init__(self, device: str) -> None:
        import torch

        from . import tiling, tiling_torch

        self.torch = torch
        self.device = torch.device(device)
        native_cuda = self.device.type == "cuda" and tiling.native_status().get("cuda", False)
        self.tiling_torch = tiling_torch
        self.impl = tiling if native_cuda else tiling_torch

    def upload(self, frame):
        if isinstance(frame, np.ndarray):
            t = self.torch.from_numpy(np.ascontiguousarray(frame))
            if self.device.type == "cuda":
                # Pinned host memory makes the copy asynchronous on the current stream.
                t = t.pin_memory().to(self.device, non_blocking=True)
            return t
        return frame.to(self.device)

    def crop_rgb(self, frame, boxes, size, mean, std):
        return self.impl.crop_resize(frame, boxes, size, mean=mean, std=std)

    def crop_map(self, chw, boxes, size):
        return self.impl.crop_resize(chw.contiguous(), boxes, size)

    def crop_maps(self, maps, boxes, sizes):
        if self.impl is self.tiling_torch:
            return [self.crop_map(m, b, s) for m, b, s in zip(maps, boxes, sizes)]
        return self.impl.crop_resize_maps([m.contiguous() for m in maps], boxes, sizes)

    def pad_input(self, x, fit):
        return self.torch.nn.functional.pad(x, fit.torch_pad(), mode="replicate") if fit.padded else x

    def content(self, depth, fit):
        return fit.content(depth).contiguous()

    def concat(self, parts):
        return parts[0] if len(parts) == 1 else self.torch.cat(parts)

    def _stitch(self, tiles, boxes, height, width, window):
        # The CUDA engine reads float16 tiles itself (no float32 copy first) and writes float32;
        # tiling_torch returns the tiles' dtype, so its input is float32.
        if self.impl is not self.tiling_torch:
            return self.impl.stitch(tiles.contiguous(), boxes, height, width, window=window)[0]
        return self.impl.stitch(tiles.float().contiguous(), boxes, height, width, window=window)[0]

    def stitch_finish(self, tiles, boxes, height, width, window, scale: float, valid_max: float):
        return self.finish(self._stitch(tiles, boxes, height, width, window), scale, owned=True, valid_max=valid_max)

    def stitch_low_finish(self, tiles, boxes, frame, low_size, policy, scale: float, valid_max: float):
        (h, w), (height, width) = low_size, frame.shape[:2]
        bx = np.asarray(boxes, dtype=np.float64) * np.array([h / height, w / width, h / height, w / width])
        return self.low_finish(self._stitch(tiles, bx, h, w, policy.window), frame, policy, scale, valid_max)

    def low_finish(self, depth, frame, policy, scale: float, valid_max: float):
        height, width = frame.shape[:2]
        guide = self.impl.crop_resize(frame, np.array([[0.0, 0.0, height, width]]), tuple(depth.shape))[0].float()
        depth = depth.float()
        if policy.snap:  # in torch ops: the snapping has no CUDA kernel of its own yet
            depth = self.tiling_torch.snap_edges(depth, guide, policy.snap)
        if self.impl is not self.tiling_torch:  # the CUDA engine: upsampled and finished in one pass
            return self.impl.upsample(depth.contiguous(), guide, frame.contiguous(), policy, scale, valid_max)
        if policy.upsample == "guided":
            depth = self.tiling_torch.guided_upsample(depth, guide, frame, policy.guided_step, policy.guided_radius,
                                                      policy.guided_eps)
            return self.finish(depth, scale, owned=True, valid_max=valid_max)
        depth = self.tiling_torch.joint_upsample(depth, guide, frame, policy.joint_sigma)
        return self.finish(depth, scale, owned=True, valid_max=valid_max)

    def finish(self, depth, scale: float, owned: bool = False, valid_max: float = math.inf):
        if self.impl is not self.tiling_torch:  # the CUDA engine: one pass, in place on our own copy
            depth = depth.float().contiguous() if owned else depth.float().clone(memory_format=self.torch.contiguous_format)
            return depth, self.impl.finish(depth, scale, valid_max)
        valid = self.torch.isfinite(depth)
        if math.isfinite(valid_max):
            valid &= depth <= valid_max
        if scale != 1.0:
            depth = depth * scale
            valid &= self.torch.isfinite(depth)
        valid &= depth > 0
        return self.torch.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0).clamp_(min=0.0), valid

    def to_host(self, x):
        return x.detach().cpu().numpy()


class Runtime:
    """Metric depth from a bundle: ``Runtime(bundle).predict(image).depth`` -> (H, W) float32 metres.

    Args:
        bundle: path of a ``NAME.edgedepth`` folder; None = the embedded default bundle.
        backend: "auto" (tensorrt > openvino on Intel > onnxruntime), or a name from
            ``edgedepth.backends.list_backends()``.
        device: "auto", "cpu", "cuda", "gpu" (OpenVINO), as the backend understands it.
        precision: "auto" (the backend's best for the device), "fp32", "fp16", "int8", or "palette6"
            (CoreML 6-bit weights); applies to the refiner; the coarse model uses the same precision
            when the bundle has it, else fp32, else the backend's default.
        tiles: (rows, cols): a fixed grid with the bundle's overlap, window and upsampling instead of
            the bundle's grid; None = the bundle's.
        tiling: an ``edgedepth.tiling.Tiling`` policy replacing the bundle's (e.g. no overlap);
            exclusive with ``tiles``.
        threads: CPU threads for the backend and the tile engine (1..256); None = library defaults.
        memory_budget_mb: frames whose working memory (``frame_bytes``: every array the runtime
            allocates for a frame, counted before any is allocated) would exceed this are refused
            (ValueError).
        max_tile_batch: most tiles per refiner call (bounds peak memory on big grids).
        cache_dir: compiled-model / engine cache; None = $EDGEDEPTH_CACHE or ~/.cache/edgedepth.
        dla_core: tensorrt only: run on this Jetson DLA core (static tile batch, GPU fallback per layer).
        engines: tensorrt only: {"coarse": path, "refiner": path}, engines built with trtexec (the lines
            of ``edgedepth build-engines --print-trtexec``) to load instead of building; their I/O is
            checked against the manifest.
        upsample: how refined tiles become the full-resolution map, replacing the bundle's
            ``tiling.upsample``: "bilinear" (each tile resized into its box as it is blended),
            "joint_bilateral" (tiles blended at the refiner's resolution, then upsampled guided by
            the frame's colours: depth edges follow image edges) or "guided" (blended the same way,
            then upsampled by the fast guided filter: edges placed to the frame pixel; the default
            bundle's); None = the bundle's.
        refine: False = coarse-only operating point: the coarse depth upsampled to the frame (as
            ``upsample`` says: bilinear, or guided by the frame) and finished like a refined one
            (finite, valid mask, valid range, focal rescale); no tile is cut or refined. Several
            times faster, less accurate at edges (benchmarks/bench_operating_points.py).
    """

    def __init__(self, bundle: str | Path | None = None, backend: str = "auto", device: str = "auto",
                 precision: str = "auto", tiles: tuple[int, int] | None = None, threads: int | None = None,
                 *, tiling: Any = None, memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                 max_tile_batch: int = DEFAULT_MAX_TILE_BATCH, cache_dir: str | Path | None = None,
                 dla_core: int | None = None, engines: Mapping[str, str | Path] | None = None,
                 refine: bool = True, upsample: str | None = None) -> None:
        if not isinstance(backend, str):
            raise TypeError(f"backend must be a string, got {type(backend).__name__}")
        if precision != "auto" and precision not in PRECISIONS + WEIGHT_VARIANTS:
            raise ValueError(f"precision must be 'auto' or one of {', '.join(PRECISIONS + WEIGHT_VARIANTS)}, "
                             f"got {precision!r}")
        from .manifest import MAX_BATCH
        from .tiling import MAX_THREADS

        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                    or not 1 <= threads <= MAX_THREADS):
            raise ValueError(f"threads must be None or an integer in [1, {MAX_THREADS}], got {threads!r}")
        if isinstance(memory_budget_mb, bool) or not isinstance(memory_budget_mb, (int, float)) or not memory_budget_mb > 0:
            raise ValueError(f"memory_budget_mb must be a number > 0, got {memory_budget_mb!r}")
        if (not isinstance(max_tile_batch, int) or isinstance(max_tile_batch, bool)
                or not 1 <= max_tile_batch <= MAX_BATCH):
            raise ValueError(f"max_tile_batch must be an integer in [1, {MAX_BATCH}], got {max_tile_batch!r}")
        if not isinstance(refine, bool):
            raise TypeError(f"refine must be True or False, got {refine!r}")
        self.tiles = _check_tiles(tiles)
        self.threads = threads
        self.refine = refine
        self.memory_budget_mb = float(memory_budget_mb)
        self.max_tile_batch = max_tile_batch
        self.bundle: Bundle = open_bundle(bundle)

        formats = set(self.bundle.formats("refiner"))
        cls, self.backend_reason = select_backend(backend, formats)
        self.backend_name = cls.name
        self.device = self._resolve_device(cls, device)
        self.precision = self._resolve_precision(cls, precision)
        if not formats.intersection(cls.formats):
            raise ValueError(f"bundle {self.bundle.path} holds no {' or '.join(cls.formats)} model, which the {cls.name} "
                             f"backend runs (it holds {', '.join(sorted(formats))}): export one with `edgedepth export "
                             f"CHECKPOINT --targets {cls.formats[0]} --out NAME.edgedepth`, or choose another backend")
        cache = Path(cache_dir) if cache_dir is not None else None
        kwargs = dict(device=self.device, threads=threads, cache_dir=cache)
        from .tiling import Tiling

        if tiling is not None and (self.tiles is not None or not isinstance(tiling, Tiling)):
            raise ValueError("tiling must be an edgedepth.tiling.Tiling, and not given together with tiles")
        bundle_tiling = Tiling.from_json(self.bundle.tiling)
        # A (rows, cols) override fixes the grid; else the bundle's policy (possibly adaptive).
        self.tiling = tiling or (bundle_tiling if self.tiles is None else dataclasses.replace(
            bundle_tiling, rows=self.tiles[0], cols=self.tiles[1], shrink=0.0, max_side=0))
        if upsample is not None:  # checked by Tiling; snapping acts only before an upsampling from low resolution
            self.tiling = dataclasses.replace(self.tiling, upsample=upsample,
                                              snap=self.tiling.snap if upsample != "bilinear" else 0.0)
        self.rows, self.cols = self.tiling.rows, self.tiling.cols
        # A compressed refiner (int8, palette6) may come with a coarse model at one float precision only.
        coarse_precision = next((p for p in (self.precision, "fp32", cls.default_precision(self.device))
                                 if self._has(cls, "coarse", p)), "fp32")
        # role -> (precision of the bundle file to load, backend keyword arguments)
        models = {"refiner": (self.precision, {"precision": self.precision}),
                  "coarse": (coarse_precision, {"precision": coarse_precision})}
        if cls.name == "tensorrt":
            from .backends.tensorrt import runtime_engines

            # TensorRT's version picks each engine's ONNX and precision; the refiner's batch profile
            # covers the tiles this runtime sends per call.
            models = runtime_engines(self.bundle, self.precision, self.rows * self.cols, max_tile_batch,
                                     dla_core=dla_core, engines=engines)
        elif dla_core is not None or engines is not None:
            raise ValueError(f"dla_core and engines are options of the tensorrt backend, not of {cls.name!r}")
        loaded = {}
        for role, (file_precision, extra) in models.items():
            # Backends load the bytes the bundle hashed just now (Bundle.model_bytes), not the paths again.
            path, files = self._model_source(cls, role, file_precision)
            loaded[role] = cls(path, role=role, files=files, **kwargs, **extra)
        self.refiner: Backend = loaded["refiner"]
        self.coarse: Backend = loaded["coarse"]
        self._check_io()
        self.ops = _TorchOps(self.device) if self.refiner.device_tensors else _HostOps(threads)

        c, r = self.bundle.coarse, self.bundle.refiner
        self.coarse_size = (int(c["input_size"][0]), int(c["input_size"][1]))
        # How a frame fills the coarse input (coarse_fit.py): "pad" keeps other aspects' proportions.
        self.coarse_fit = str(c.get("fit", "squeeze"))
        self.mean = tuple(float(v) for v in c["mean"])
        self.std = tuple(float(v) for v in c["std"])
        self.tile_size = (int(r["tile_size"][0]), int(r["tile_size"][1]))
        # A fixed tile batch (None = dynamic); CoreML models carry their own (the Neural Engine needs fixed shapes).
        self.refiner_batch = r.get("coreml_batch") if cls.name == "coreml" else r.get("batch")
        self.window = self.tiling.window
        # In the model's own metres (before the focal-length rescale): the range it was trained on.
        self.valid_max_depth = self.bundle.valid_max_depth
        self.overlap_ratio = self.tiling.overlap_ratio
        # Frame pixels per refiner pixel in training; frames cut much finer or coarser are warned about.
        self.train_shrink = r.get("train_shrink")
        self._warned_shrink: set[tuple[int, int]] = set()
        # guideK <- featK: which coarse output each refiner guidance input is cropped from.
        # Entries: (input name, source output, channels, (h, w) of the crop).
        self.guides = [(s["name"], s.get("source", f"feat{s['name'][5:]}"), int(s["shape"][1]),
                        (int(s["shape"][2]), int(s["shape"][3])))
                       for s in r["inputs"] if s["name"].startswith("guide")]

    # --- construction helpers -------------------------------------------------------------------
    @staticmethod
    def _resolve_device(cls: type[Backend], device: str) -> str:
        available = cls.devices()
        if device == "auto":
            if not available:
                raise ValueError(f"backend {cls.name!r} finds no usable device here")
            return "cuda" if "cuda" in available else available[0]
        if device.split(":")[0].split(".")[0] not in [d.split(".")[0] for d in available]:
            raise ValueError(f"backend {cls.name!r} cannot use device {device!r} here (available: {', '.join(available)})")
        return device

    def _has(self, cls: type[Backend], role: str, precision: str) -> bool:
        return any(precision in self.bundle.precisions(r, fmt) for fmt in cls.formats
                   for r in ((role, "refiner") if fmt == "torch" else (role,)))

    def _resolve_precision(self, cls: type[Backend], precision: str) -> str:
        if precision == "auto":
            wanted = cls.default_precision(self.device)
            return wanted if self._has(cls, "refiner", wanted) else "fp32"
        if precision not in cls.supported_precisions:
            raise ValueError(f"backend {cls.name!r} cannot run precision {precision!r} "
                             f"(it runs {', '.join(cls.supported_precisions)})")
        if not self._has(cls, "refiner", precision):
            held = {fmt: self.bundle.precisions("refiner", fmt) for fmt in cls.formats}
            raise ValueError(f"bundle {self.bundle.path} has no refiner at precision {precision!r} for backend "
                             f"{cls.name!r} (it holds: {held})")
        return precision

    def _model_source(self, cls: type[Backend], role: str, precision: str) -> tuple[Path, dict[Path, bytes]]:
        """The model file and the verified bytes of every file it loads."""
        for fmt in cls.formats:
            for r in (role, "refiner") if fmt == "torch" else (role,):
                # The torch checkpoint holds both models; the manifest may list it under the refiner only.
                if precision in self.bundle.precisions(r, fmt):
                    return self.bundle.model_file(r, fmt, precision), self.bundle.model_bytes(r, fmt, precision)
        raise ValueError(f"bundle {self.bundle.path} has no {role} model for backend {cls.name!r} at {precision}")

    def _check_io(self) -> None:
        # The manifest and the loaded models must agree (names, and every size both fix), or crops
        # would feed the wrong inputs, or outputs of another size would be stitched silently.
        for backend, section in ((self.coarse, self.bundle.coarse), (self.refiner, self.bundle.refiner)):
            declared = {s["name"]: s for s in section["inputs"]}
            loaded = {s.name: s for s in backend.inputs}
            if set(declared) != set(loaded):
                raise ValueError(f"bundle {self.bundle.path}: {backend.role} model {backend.path.name} has inputs "
                                 f"{sorted(loaded)} but the manifest declares {sorted(declared)}")
            outputs = {s.name: s for s in backend.outputs}
            for spec in section["outputs"]:
                if spec["name"] not in outputs:
                    raise ValueError(f"bundle {self.bundle.path}: {backend.role} model {backend.path.name} has no "
                                     f"output {spec['name']!r} (it has {sorted(outputs)})")
            pairs = [(f"input {n}", d.get("shape"), loaded[n].shape) for n, d in declared.items()]
            pairs += [(f"output {d['name']}", d.get("shape"), outputs[d["name"]].shape) for d in section["outputs"]]
            pairs += [(f"output {d['name']}", [None, d["channels"], None, None], outputs[d["name"]].shape)
                      for d in section["outputs"] if "channels" in d]
            for what, want, got in pairs:
                if want is None or not got:
                    continue
                if len(want) != len(got) or any(w not in (-1, None) and g is not None and w != g
                                                 for w, g in zip(want, got)):
                    raise ValueError(f"bundle {self.bundle.path}: {backend.role} model {backend.path.name} {what} "
                                     f"has shape {list(got)} but the manifest declares {list(want)}")

    # --- input handling ---------------------------------------------------------------------------
    def _frame(self, image: Any, color: str = "rgb") -> tuple[Any, bool]:
        """Validated HWC uint8 RGB frame (numpy, or a torch tensor for device backends). The memory
        budget is checked on the shape, before the frame is decoded or converted."""
        device_backend = isinstance(self.ops, _TorchOps)
        if color not in COLORS:
            raise ValueError(f"color must be one of {', '.join(map(repr, COLORS))}, got {color!r}")
        if isinstance(image, (str, Path)):
            if color != "rgb":
                raise ValueError(f"color={color!r} describes an array; image files are always decoded to RGB")
            from .depth_io import read_image

            # Refused from the header, before decoding: at least _BYTES_PER_PIXEL per pixel is needed.
            room = self.memory_budget_mb * 2**20 - self.frame_bytes(0, 0)
            image = read_image(image, max_pixels=int(max(0.0, room) // _BYTES_PER_PIXEL))
        if _is_torch_tensor(image) or _is_cupy_array(image):
            if device_backend:
                import torch

                t = image if _is_torch_tensor(image) else torch.from_dlpack(image)  # zero-copy
                self._check_array(tuple(t.shape), str(t.dtype).replace("torch.", ""), "image", color)
                self._check_budget(int(t.shape[0]), int(t.shape[1]), t.element_size())
                if t.dtype.is_floating_point:
                    t = self._float_to_uint8_torch(t)
                if color == "bgr":
                    t = t.flip(-1)
                elif color == "gray":
                    t = t.reshape(t.shape[0], t.shape[1], 1).expand(-1, -1, 3).contiguous()
                return t, True
            host = image.get() if _is_cupy_array(image) else image.detach().cpu().numpy()
            image = np.asarray(host)
        if not isinstance(image, np.ndarray):
            raise TypeError(f"image must be a HWC uint8 RGB numpy array, an image path or a torch/CuPy tensor, "
                            f"got {type(image).__name__}")
        self._check_array(image.shape, image.dtype.name, "image", color)
        self._check_budget(image.shape[0], image.shape[1], image.dtype.itemsize)
        if image.dtype != np.uint8:
            image = self._float_to_uint8(image)
        return self._to_rgb(image, color), False

    @staticmethod
    def _to_rgb(image: np.ndarray, color: str) -> np.ndarray:
        """HxWx3 RGB from a checked frame of ``color`` (the only place channel order is decided)."""
        if color == "bgr":
            return np.ascontiguousarray(image[..., ::-1])
        if color == "gray":
            return np.ascontiguousarray(np.broadcast_to(image.reshape(image.shape[0], image.shape[1], 1),
                                                        (image.shape[0], image.shape[1], 3)))
        return image

    @staticmethod
    def _check_array(shape: tuple, dtype: str, name: str, color: str = "rgb") -> None:
        if color == "gray":
            if not (len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)):
                raise ValueError(f"{name} with color='gray' must have shape (H, W) or (H, W, 1), got shape {tuple(shape)}")
        elif len(shape) != 3 or shape[2] != 3:
            single = len(shape) == 2 or (len(shape) == 3 and shape[2] == 1)
            hint = " (pass color='gray' for a single-channel frame)" if single else ""
            raise ValueError(f"{name} must be HWC {color.upper()} with shape (H, W, 3), got shape {tuple(shape)}{hint}")
        if shape[0] == 0 or shape[1] == 0:
            raise ValueError(f"{name} is empty: shape {tuple(shape)}")
        if dtype not in ("uint8", "float32", "float64", "float16"):
            raise TypeError(f"{name} must be uint8 (0..255) or float in [0, 1], got dtype {dtype}")

    @staticmethod
    def _float_to_uint8(image: np.ndarray) -> np.ndarray:
        if not np.isfinite(image).all():
            raise ValueError("image contains NaN or infinite values")
        if image.min() < 0.0 or image.max() > 1.0:
            raise ValueError(f"a float image must hold RGB in [0, 1], got values in [{image.min()}, {image.max()}]")
        return np.round(image * 255.0).astype(np.uint8)

    @staticmethod
    def _float_to_uint8_torch(t: Any) -> Any:
        import torch

        if not torch.isfinite(t).all():
            raise ValueError("image contains NaN or infinite values")
        if t.min() < 0 or t.max() > 1:
            raise ValueError("a float image must hold RGB in [0, 1]")
        return (t * 255.0).round().to(torch.uint8)

    def _fx_scale(self, intrinsics: Any, width: int) -> float:
        """Metric depth scale for a camera whose focal length differs from the training camera's.

        A metric model reads distance from apparent size: an object of size S at depth Z spans
        S·fx/Z pixels. The model learnt Z = S·fx_train/pixels (in units of image width); the same
        pixel extent seen by a camera with focal length fx means Z' = S·fx/pixels, so
        Z' = Z · (fx/W) / fx_norm_train. fx/W is resize-invariant, so the resize to the coarse input
        does not change it.
        """
        if intrinsics is None:
            return 1.0
        try:
            k = np.asarray(intrinsics, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"intrinsics must be a 3x3 camera matrix or the focal length fx in pixels, "
                             f"got {type(intrinsics).__name__}") from err
        if k.shape == ():
            fx = float(k)
        elif k.shape == (3, 3):
            if not np.isfinite(k).all():
                raise ValueError("intrinsics must be finite")
            fx = float(k[0, 0])
        else:
            raise ValueError(f"intrinsics must be a 3x3 camera matrix or the focal length fx in pixels, got shape {k.shape}")
        if not math.isfinite(fx) or fx <= 0:
            raise ValueError(f"intrinsics focal length fx must be finite and > 0 pixels, got {fx}")
        # fx = 1 px (np.eye(3)) or 1e300 is a mistake, not a lens: it would rescale depth by 1e-3 or inf.
        low, high = FX_RATIO_RANGE
        if not low <= fx / width <= high:
            raise ValueError(f"intrinsics focal length fx = {fx:g} px is {fx / width:.3g} x the image width {width}; "
                             f"a camera has fx / width in [{low:g}, {high:g}] (pass fx in pixels of this image)")
        return (fx / width) / self.bundle.fx_norm

    def frame_bytes(self, height: int, width: int, itemsize: int = 1) -> int:
        """Bytes the runtime allocates for one height x width frame whose pixels have ``itemsize``
        bytes (1: uint8; a float frame is converted). Everything the runtime itself allocates is
        counted, at once (an upper bound on its peak): the frame and its conversion, the coarse input
        and outputs, the crops of every tile (all tiles are cut at once), the refiner's chunk inputs
        (padded to a fixed batch) and all tile outputs, the stitch accumulators, output and masks.
        What a backend allocates inside its model is not (it does not depend on the frame size)."""
        pixels = int(height) * int(width)
        ch, cw = self.coarse_size
        th, tw = self.tile_size
        grid = self.grid_for(height, width) if pixels else None
        tiles = len(grid) if grid is not None else self.rows * self.cols
        per_tile = (4 * th * tw + sum(c * gh * gw for _, _, c, (gh, gw) in self.guides)) * 4
        # input crop, outputs at their strides, the finished coarse depth (copy + masks)
        coarse = 3 * ch * cw * 4 + ch * cw * 7 + sum(
            int(o.get("channels", 1)) * -(-ch // int(o.get("stride", 1))) * -(-cw // int(o.get("stride", 1))) * 4
            for o in self.bundle.coarse["outputs"])
        # a chunk: padded to the fixed batch, cast by the backend, its output converted
        step = int(self.refiner_batch) if self.refiner_batch else min(tiles, self.max_tile_batch)
        convert = 2 * pixels * 3 * itemsize + pixels * 3 if itemsize > 1 else 0  # two float temporaries + a mask
        joint = 0
        if self.tiling.low_res and grid is not None:
            # tiles blended at the refiner's resolution: accumulators, the blend and its RGB guide;
            # the guided filter's pooled planes, fits and coefficients (csrc guided_upsample_cpu)
            lh, lw = grid.tile_resolution(th, tw)
            joint = lh * lw * (16 + 4 + 12)
            if self.tiling.upsample == "guided":
                joint += -(-lh // self.tiling.guided_step) * -(-lw // self.tiling.guided_step) * (5 * 8 + 5 * 4 + 4 * 4)
        return (pixels * _BYTES_PER_PIXEL + convert + coarse + tiles * per_tile + 2 * step * per_tile
                + 2 * tiles * th * tw * 4 + joint)

    def _check_budget(self, height: int, width: int, itemsize: int = 1) -> None:
        need_mb = self.frame_bytes(height, width, itemsize) / 2**20
        if need_mb > self.memory_budget_mb:
            raise ValueError(f"frame {height}x{width} needs about {need_mb:.0f} MB, over the memory budget of "
                             f"{self.memory_budget_mb:.0f} MB (Runtime(memory_budget_mb=...)); resize the frame "
                             "or use fewer tiles")

    # --- the two halves of a frame ----------------------------------------------------------------
    def grid_for(self, height: int, width: int):
        """The TileGrid used for a (height, width) frame: ``Tiling.grid`` of the bundle's tiling (fixed
        rows x cols, or adaptive to the frame size), every pixel covered; the rule export and
        training cut their tiles with."""
        grid = self.tiling.grid(int(height), int(width), self.tile_size)
        # tiles the bundle's own cap enlarges are larger by design: no warning
        if self.train_shrink and not self.tiling.capped(height, width) and (height, width) not in self._warned_shrink:
            sy, sx = grid.shrink(*self.tile_size)
            factor = math.sqrt(sy * sx) / float(self.train_shrink)
            if not 1 / 1.5 <= factor <= 1.5:
                import warnings

                self._warned_shrink.add((height, width))
                warnings.warn(f"a {height}x{width} frame cut {grid.rows}x{grid.cols} gives tiles {factor:.1f}x "
                              f"{'larger' if factor > 1 else 'smaller'} (in frame pixels per refiner pixel) than "
                              f"the refiner was trained on; depth will be less accurate. Use tiles=None (the "
                              f"bundle's adaptive grid) or a grid that keeps about {self.train_shrink:.2f} "
                              "frame px per refiner px.", RuntimeWarning, stacklevel=3)
        return grid

    def _front(self, item: tuple[Any, Any, str]) -> _Front:
        image, intrinsics, color = item
        t0 = time.perf_counter()
        frame, is_tensor = self._frame(image, color)
        height, width = int(frame.shape[0]), int(frame.shape[1])
        fit = CoarseFit.for_frame(height, width, self.coarse_size, self.coarse_fit)
        # the model sees a frame content_w / cw as wide as its input: its depth scales by that share
        scale = self._fx_scale(intrinsics, width) * fit.width_share
        if isinstance(self.ops, _TorchOps):
            frame = self.ops.upload(frame)
        whole = np.array([[0.0, 0.0, height, width]])
        x = self.ops.pad_input(self.ops.crop_rgb(frame, whole, (fit.content_h, fit.content_w), self.mean, self.std),
                               fit)
        t1 = time.perf_counter()
        out = self.coarse.run({self.coarse.inputs[0].name: x})
        self._check_coarse_outputs(out)
        t2 = time.perf_counter()
        return _Front(frame, height, width, out.pop("depth"), out, scale, fit,
                      {"preprocess": (t1 - t0) * 1e3, "coarse": (t2 - t1) * 1e3}, is_tensor, intrinsics)

    def _back(self, f: _Front) -> DepthResult:
        if not self.refine:
            return self._coarse_only(f)
        ops = self.ops
        t0 = time.perf_counter()
        grid = self.grid_for(f.height, f.width)
        feeds = {"rgb": ops.crop_rgb(f.frame, grid.boxes, self.tile_size, self.mean, self.std)}
        # The coarse depth and every guidance map in one call: on a GPU these crops are small and
        # each call costs its launches.
        names = ["coarse_depth"] + [name for name, *_ in self.guides]
        maps = [f.depth[0]] + [f.features[source][0] for _, source, _, _ in self.guides]
        sizes = [self.tile_size] + [size for *_, size in self.guides]
        boxes = [f.fit.map_boxes(grid.boxes, tuple(m.shape[-2:])) for m in maps]
        feeds.update(zip(names, ops.crop_maps(maps, boxes, sizes)))
        t1 = time.perf_counter()
        tiles = ops.concat(self._refine(feeds, len(grid.boxes)))
        t2 = time.perf_counter()
        if self.tiling.low_res:
            depth, valid = ops.stitch_low_finish(tiles, grid.boxes, f.frame, grid.tile_resolution(*self.tile_size),
                                                 self.tiling, f.fx_scale, self.valid_max_depth)
        else:
            depth, valid = ops.stitch_finish(tiles, grid.boxes, f.height, f.width, self.window, f.fx_scale,
                                             self.valid_max_depth)
        coarse, _ = ops.finish(ops.content(f.depth[0, 0], f.fit), f.fx_scale, owned=f.fit.padded)
        if not f.returns_tensor:
            depth, valid, coarse = ops.to_host(depth), ops.to_host(valid), ops.to_host(coarse)
        t3 = time.perf_counter()
        timings = {**f.timings, "crop": (t1 - t0) * 1e3, "refine": (t2 - t1) * 1e3, "stitch": (t3 - t2) * 1e3}
        timings["total"] = sum(timings[s] for s in STAGES)
        return DepthResult(depth=depth, valid=valid, coarse=coarse, timings=timings, grid=grid, fx_scale=f.fx_scale)

    def _coarse_only(self, f: _Front) -> DepthResult:
        """The back half without tiles: the coarse depth resized to the frame (the crop semantics of
        the whole coarse map), then finished as a stitched map is."""
        ops = self.ops
        t0 = time.perf_counter()
        content = ops.content(f.depth[0, 0], f.fit)  # the frame's part of the map
        if self.tiling.low_res:
            t1 = time.perf_counter()
            depth, valid = ops.low_finish(content, f.frame, dataclasses.replace(self.tiling, snap=0.0), f.fx_scale,
                                          self.valid_max_depth)
        else:
            up = ops.crop_map(content[None], np.array([[0.0, 0.0, *content.shape[-2:]]]), (f.height, f.width))[0, 0]
            t1 = time.perf_counter()
            depth, valid = ops.finish(up, f.fx_scale, owned=True, valid_max=self.valid_max_depth)
        coarse, _ = ops.finish(content, f.fx_scale, owned=f.fit.padded)
        if not f.returns_tensor:
            depth, valid, coarse = ops.to_host(depth), ops.to_host(valid), ops.to_host(coarse)
        t2 = time.perf_counter()
        timings = {**f.timings, "crop": (t1 - t0) * 1e3, "refine": 0.0, "stitch": (t2 - t1) * 1e3}
        timings["total"] = sum(timings[s] for s in STAGES)
        return DepthResult(depth=depth, valid=valid, coarse=coarse, timings=timings, grid=None, fx_scale=f.fx_scale)

    def _check_coarse_outputs(self, out: Mapping[str, Any]) -> None:
        # A model that disagrees with its manifest at run time (dynamic shapes) is named, not stitched.
        depth = out.get("depth")
        if depth is None or len(depth.shape) != 4 or tuple(depth.shape[:2]) != (1, 1) or min(depth.shape) < 1:
            raise ValueError(f"coarse model {self.coarse.path.name} returned depth of shape "
                             f"{tuple(getattr(depth, 'shape', ()))}, expected (1, 1, h, w)")
        for _, source, channels, _ in self.guides:
            feat = out.get(source)
            if feat is None or len(feat.shape) != 4 or tuple(feat.shape[:2]) != (1, channels) or min(feat.shape) < 1:
                raise ValueError(f"coarse model {self.coarse.path.name} returned {source} of shape "
                                 f"{tuple(getattr(feat, 'shape', ()))}, expected (1, {channels}, h, w)")

    def _refine(self, feeds: Mapping[str, Any], n: int) -> list[Any]:
        """Refiner over all tiles, in chunks of the model's fixed batch (padded) or max_tile_batch."""
        step = int(self.refiner_batch) if self.refiner_batch else self.max_tile_batch
        parts = []
        for start in range(0, n, step):
            chunk = {k: v[start:start + step] for k, v in feeds.items()}
            got = len(next(iter(chunk.values())))
            if self.refiner_batch and got < step:
                chunk = {k: self._pad(v, step) for k, v in chunk.items()}
            depth = self.refiner.run(chunk)["depth"]
            if tuple(depth.shape[1:]) != (1, *self.tile_size) or depth.shape[0] < got:
                raise ValueError(f"refiner model {self.refiner.path.name} returned tiles of shape {tuple(depth.shape)} "
                                 f"for {len(next(iter(chunk.values())))} tiles of {self.tile_size[0]}x{self.tile_size[1]}")
            parts.append(depth[:got])
        return parts

    def _pad(self, x: Any, size: int) -> Any:
        reps = [x] + [x[-1:]] * (size - len(x))
        return self.ops.concat(reps)

    # --- public API -------------------------------------------------------------------------------
    def predict(self, image: Any, intrinsics: Any = None, color: str = "rgb") -> DepthResult:
        """Depth of one frame.

        image: HWC uint8 numpy array (float in [0, 1] accepted) whose channels ``color`` names, an
            image path (decoded to RGB), or a torch/CuPy tensor (on the GPU: zero-copy through
            DLPack with the torch and tensorrt backends).
        intrinsics: optional 3x3 camera matrix or fx, in pixels of this image; rescales metric depth
            by (fx / width) / bundle camera fx_norm.
        color: what an array holds: "rgb" (H, W, 3; the default), "bgr" (H, W, 3 as OpenCV's
            ``cv2.imread`` / ``VideoCapture.read`` return it) or "gray" (H, W) or (H, W, 1), e.g. a mono
            camera. Never guessed: a BGR frame passed as RGB silently changes the depth.
        """
        return self._back(self._front((image, intrinsics, color)))

    def predict_batch(self, images: Sequence[Any], intrinsics: Any = None, color: str = "rgb") -> list[DepthResult]:
        """Depth of several independent frames (pipelined like ``stream``, never stabilised); results in
        input order. ``images`` and ``color`` as in ``predict``."""
        return list(self.stream(images, intrinsics, color=color, stabilize=False))

    def stream(self, frames: Iterable[Any], intrinsics: Any = None, queue_depth: int = 2, color: str = "rgb",
               stabilize: bool | StabilizerConfig = True) -> Iterator[DepthResult]:
        """Yield one DepthResult per frame of a video or camera, overlapping the coarse pass of frame t+1
        with the refinement of frame t (a two-thread pipeline with at most ``queue_depth`` frames in
        flight between them). Frames and ``color`` as in ``predict``, e.g. ``stream(cv2_frames,
        color="bgr")``; ``intrinsics`` (3x3 or fx, pixels) is the camera of every frame.

        stabilize: True (default), a ``StabilizerConfig``, or False. Consecutive frames are stabilised
            (``edgedepth.stabilizer``): flicker on static surfaces -47 %, AbsRel -5 % on six procedural
            camera trajectories (benchmarks/bench_video.py, default bundle), moving objects left as they are.
            It needs OpenCV and the camera matrix (``intrinsics``, else the bundle's training camera with
            the principal point at the centre); adds ``timings["stabilize"]``. With ``stabilize=False``
            results equal ``predict``'s; pass it for frames that are not one video (a folder of photos).
        """
        stabilizer = self._stabilizer(stabilize)
        back = self._back if stabilizer is None else (lambda f: self._stabilized(f, stabilizer))
        return pipeline(((frame, intrinsics, color) for frame in frames), self._front, back, depth=queue_depth)

    def _stabilizer(self, stabilize: bool | StabilizerConfig) -> Stabilizer | None:
        if isinstance(stabilize, StabilizerConfig):
            return Stabilizer(stabilize)
        if not isinstance(stabilize, bool):
            raise TypeError(f"stabilize must be True, False or a StabilizerConfig, got {stabilize!r}")
        return Stabilizer() if stabilize else None

    def _stabilized(self, f: _Front, stabilizer: Stabilizer) -> DepthResult:
        result = self._back(f)
        t0 = time.perf_counter()
        ops = self.ops
        depth = stabilizer(ops.to_host(f.frame), ops.to_host(result.depth), ops.to_host(result.valid),
                           self._camera(f.intrinsics, f.height, f.width))
        if f.returns_tensor:  # the caller's frames were GPU tensors: so is the depth handed back
            import torch

            depth = torch.as_tensor(depth, device=result.depth.device)
        result.depth = depth
        result.timings["stabilize"] = (time.perf_counter() - t0) * 1e3
        result.timings["total"] += result.timings["stabilize"]
        return result

    def _camera(self, intrinsics: Any, height: int, width: int) -> np.ndarray:
        """3x3 camera matrix of a frame: ``intrinsics`` (already checked by ``_fx_scale``) or the bundle's."""
        from .pointcloud import default_intrinsics

        k = default_intrinsics(height, width, self.bundle.fx_norm)
        if intrinsics is not None:
            given = np.asarray(intrinsics, dtype=np.float64)
            if given.shape == (3, 3):
                return given
            k[0, 0] = k[1, 1] = float(given)
        return k

    def warmup(self, height: int | None = None, width: int | None = None, runs: int = 1) -> None:
        """Run ``runs`` dummy frames so that lazy allocations and compilations happen now."""
        height = height or self.tile_size[0] * self.rows
        width = width or self.tile_size[1] * self.cols
        frame = np.zeros((height, width, 3), dtype=np.uint8)
        for _ in range(runs):
            self.predict(frame)

    def info(self) -> dict[str, Any]:
        """What this runtime runs: bundle, backend (and why), device, precision, models, tiling."""
        from .tiling import native_status

        return {
            "edgedepth": __version__,
            "bundle": str(self.bundle.path), "bundle_name": self.bundle.name,
            "backend": self.backend_name, "backend_reason": self.backend_reason,
            "device": self.device, "precision": self.precision,
            "models": [self.coarse.describe(), self.refiner.describe()],
            "coarse_input": list(self.coarse_size), "tile_size": list(self.tile_size),
            "tiling": self.tiling.to_json(), "refine": self.refine,
            "camera_fx_norm": self.bundle.fx_norm,
            "tile_engine": native_status(),
        }

    def __repr__(self) -> str:
        return (f"Runtime(bundle={str(self.bundle.path)!r}, backend={self.backend_name!r}, device={self.device!r}, "
                f"precision={self.precision!r}, tiles=({self.rows}, {self.cols}), refine={self.refine})")
