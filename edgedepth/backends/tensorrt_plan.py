"""How a TensorRT engine is built, decided from the TensorRT version: which ONNX of the bundle, which
builder flags, which optimisation profile, and the equivalent ``trtexec`` line. Pure Python (no
``tensorrt`` import), shared by the builder (:mod:`edgedepth.backends.tensorrt`), ``edgedepth
build-engines`` and the export layer, so all three build the same engine.

Up to TensorRT 10.11 networks are *weakly typed*: the builder picks each layer's precision within
what the flags allow (``BuilderFlag.FP16``/``INT8``; trtexec ``--fp16 --int8``). FP16 is then built
from the FP32 ONNX plus the flag (the FP16 ONNX would pin its Casts), INT8 from the Q/DQ ONNX plus
both flags, so layers outside INT8 run in FP16. Those flags are deprecated from 10.12 and removed in
TensorRT 11, which builds *strongly typed* networks (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``;
trtexec ``--stronglyTyped``): every tensor keeps the ONNX's type, so the precision is the ONNX chosen
(FP16 ONNX for fp16, Q/DQ ONNX for int8). JetPack 5 (TensorRT 8.5) and 6 (10.3) are weakly typed.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

from .base import PRECISIONS

#: First TensorRT (major, minor) whose builds are strongly typed here.
STRONGLY_TYPED_FROM = (10, 12)
ROLES = ("coarse", "refiner")


@dataclass(frozen=True)
class BuildOptions:
    """How an engine is built. Batch sizes bound the optimisation profile of a dynamic tile axis
    (inputs whose first dimension is -1); static models ignore them."""

    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 4            # rows x cols of the default 2x2 tiling
    max_batch: int = 16           # the runtime's default max_tile_batch (tiles per refiner call)
    workspace_mib: int = 1024     # 8 GB Jetsons share memory with the CPU: keep this modest
    dla_core: Optional[int] = None  # Jetson DLA core; layers the DLA cannot run fall back to the GPU

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("min_batch", "opt_batch", "max_batch", "workspace_mib"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got "
                             f"{self.min_batch}, {self.opt_batch}, {self.max_batch}")
        if self.workspace_mib < 1:
            raise ValueError(f"workspace_mib must be >= 1, got {self.workspace_mib}")
        if self.dla_core is not None:
            if isinstance(self.dla_core, bool) or not isinstance(self.dla_core, int) or self.dla_core < 0:
                raise ValueError(f"dla_core must be None or an int >= 0, got {self.dla_core!r}")
            if self.precision == "fp32":
                raise ValueError("dla_core needs precision 'fp16' or 'int8': the DLA has no FP32 kernels")

    @classmethod
    def for_tiles(cls, precision: str, tiles: int, max_tile_batch: int = 16, *,
                  dla_core: Optional[int] = None, workspace_mib: int = 1024) -> "BuildOptions":
        """Options for a runtime that refines ``tiles`` tiles per frame in calls of at most
        ``max_tile_batch``: profile 1 / min(tiles, max_tile_batch) / max_tile_batch."""
        if isinstance(tiles, bool) or not isinstance(tiles, int) or tiles < 1:
            raise ValueError(f"tiles must be an int >= 1, got {tiles!r}")
        return cls(precision, 1, min(tiles, max_tile_batch), max_tile_batch, workspace_mib, dla_core)

    def profile(self) -> tuple[int, int, int]:
        """(min, opt, max) tile batch of the engine. The DLA runs static shapes only, so with a DLA
        core all three are ``opt_batch`` (the backend splits and pads calls to it)."""
        if self.dla_core is not None:
            return (self.opt_batch,) * 3
        return self.min_batch, self.opt_batch, self.max_batch

    def key_fields(self) -> dict[str, Any]:
        """The options that change the engine, as they enter the cache key. The workspace is left
        out: it only caps the builder's scratch memory, and keying on it would make a runtime and an
        exporter with different caps rebuild each other's engines."""
        return {"precision": self.precision, "batch": list(self.profile()), "dla_core": self.dla_core}


def parse_version(text: str) -> tuple[int, int]:
    """(major, minor) of a TensorRT version string such as ``tensorrt.__version__`` ("10.3.0.30")."""
    match = re.match(r"^\s*(\d+)\.(\d+)", str(text))
    if not match:
        raise ValueError(f"not a TensorRT version: {text!r} (expected MAJOR.MINOR[.PATCH], e.g. 10.3.0)")
    return int(match[1]), int(match[2])


def strongly_typed(trt_version: str) -> bool:
    """True when engines for ``trt_version`` are built strongly typed (10.12 on, TensorRT 11)."""
    return parse_version(trt_version) >= STRONGLY_TYPED_FROM


@dataclass(frozen=True)
class EnginePlan:
    """One model's engine: what it runs at, which of the bundle's ONNX files it is built from, and how."""

    role: str
    precision: str             # what the engine computes in (the cache key's precision)
    onnx_precision: str        # the bundle's ONNX file it is built from
    strongly_typed: bool
    flags: tuple[str, ...]     # BuilderFlag names (weakly typed builds only)
    note: str = ""             # why the plan differs from what was asked, if it does


def _flags(precision: str) -> tuple[str, ...]:
    return {"fp32": (), "fp16": ("FP16",), "int8": ("FP16", "INT8")}[precision]


def plan_engines(precision: str, trt_version: str,
                 onnx_precisions: Mapping[str, Iterable[str]]) -> dict[str, EnginePlan]:
    """The coarse and refiner engines for a run at ``precision`` (the refiner's) with ``trt_version``.

    ``onnx_precisions``: role -> the ONNX precisions the bundle holds. The refiner runs at
    ``precision``; the coarse model at the same, except that an INT8 run keeps it in FP16 (the
    bundle quantizes only the refiner; FP32 would waste the GPU). A strongly typed build needs the
    ONNX of that precision: the refiner without one is an error naming the export to run, the coarse
    model falls back to FP32 with a note.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    strong = strongly_typed(trt_version)
    held = {role: set(onnx_precisions.get(role, ())) for role in ROLES}
    plans = {}
    for role in ROLES:
        if not held[role]:
            raise ValueError(f"the bundle has no {role} ONNX model (TensorRT builds from ONNX): export with --targets onnx")
        want, note = precision, ""
        if role == "coarse" and precision == "int8" and "int8" not in held[role]:
            want, note = "fp16", "INT8 run: the coarse model (not quantized in the bundle) runs in FP16"
        if want == "int8":
            if "int8" not in held[role]:
                raise ValueError(f"precision 'int8' needs the bundle's {role} Q/DQ ONNX (export with --precision "
                                 f"int8); it holds {', '.join(sorted(held[role]))}")
            source = "int8"
        elif want == "fp16" and strong:
            if "fp16" in held[role]:
                source = "fp16"
            elif role == "coarse":
                want = source = "fp32"
                note = (f"TensorRT {trt_version} builds strongly typed and the bundle has no coarse FP16 ONNX: "
                        "the coarse model runs in FP32 (export with --precision fp16)")
            else:
                raise ValueError(f"TensorRT {trt_version} builds strongly typed networks, so precision 'fp16' "
                                 "needs the bundle's refiner FP16 ONNX (export with --precision fp16)")
        else:
            source = "fp32"  # FP32, or weakly typed FP16: the FP32 ONNX + the FP16 flag
            if "fp32" not in held[role]:
                raise ValueError(f"the bundle has no {role} FP32 ONNX to build {want} from")
        plans[role] = EnginePlan(role, want, source, strong, () if strong else _flags(want), note)
    return plans


def trtexec_command(onnx: str, engine: str, options: BuildOptions, input_shapes: Mapping[str, Sequence[int]], *,
                    strongly_typed: bool = False, timing_cache: Optional[str] = None) -> str:
    """The ``trtexec`` line that builds the engine :func:`edgedepth.backends.tensorrt.build_engine`
    builds with ``options`` from ``onnx`` (an ONNX whose precision matches the plan).

    ``input_shapes``: the model's inputs, -1 for the dynamic tile axis (as the manifest declares
    them); those get min/opt/max shapes from ``options.profile()``.
    """
    args = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}"]
    if strongly_typed:
        args.append("--stronglyTyped")
    else:
        args += [f"--{flag.lower()}" for flag in _flags(options.precision)]
    dynamic = {}
    for name, shape in input_shapes.items():
        if shape and shape[0] == -1:
            if -1 in shape[1:]:
                raise ValueError(f"{onnx}: input {name!r} has dynamic axes beyond the batch: {list(shape)}")
            dynamic[name] = tuple(shape[1:])
    if dynamic:
        for flag, batch in zip(("--minShapes", "--optShapes", "--maxShapes"), options.profile()):
            args.append(flag + "=" + ",".join(f"{n}:{'x'.join(map(str, (batch, *rest)))}" for n, rest in dynamic.items()))
    args.append(f"--memPoolSize=workspace:{options.workspace_mib}M")
    if timing_cache is not None:
        args.append(f"--timingCacheFile={timing_cache}")
    if options.dla_core is not None:
        args += [f"--useDLACore={options.dla_core}", "--allowGPUFallback"]
    return shlex.join(args)


# Versions the saved lines are written for: the two build modes, each with a release users run.
_MODES = (("10.3", "TensorRT up to 10.11 (JetPack 5, JetPack 6): weakly typed, --fp16/--int8"),
          ("10.12", "TensorRT 10.12 and later (TensorRT 11): strongly typed, precision from the ONNX"))


def trtexec_text(onnx_files: Mapping[str, Mapping[str, str]], input_shapes: Mapping[str, Mapping[str, Sequence[int]]],
                 tiles: int, max_tile_batch: int = 16, dla_core: Optional[int] = None) -> str:
    """The ``trtexec`` lines for both models at every precision the bundle can run, for both build modes.

    ``onnx_files``: role -> precision -> ONNX file name inside the bundle; ``input_shapes``: role ->
    input name -> shape (-1 = tile axis). Engines are named ``<role>.<precision>.engine``: the names
    ``Runtime(..., engines={"coarse": ..., "refiner": ...})`` is then given.
    """
    held = {role: list(onnx_files.get(role, {})) for role in ROLES}
    lines = ["# trtexec lines that build the engines edgedepth builds (`edgedepth build-engines` does the same in",
             "# Python, into the engine cache). Run them on the device, in the bundle folder, then pass the engines:",
             '#   Runtime(bundle, backend="tensorrt", precision=P, engines={"coarse": "coarse.P.engine", "refiner": "refiner.P.engine"})',
             f"# Tile-batch profile: {tiles} tile(s) per frame, at most {max_tile_batch} per refiner call"
             + (f"; DLA core {dla_core} (static shapes)" if dla_core is not None else "") + "."]
    for version, title in _MODES:
        lines += ["", f"## {title}"]
        for precision in PRECISIONS:
            if precision not in held["refiner"] and not (precision == "fp16" and not strongly_typed(version)):
                continue
            if dla_core is not None and precision == "fp32":
                continue
            try:
                plans = plan_engines(precision, version, held)
            except ValueError as err:
                lines.append(f"# {precision}: not buildable from this bundle: {err}")
                continue
            lines.append(f"# {precision}")
            for role in ROLES:
                plan = plans[role]
                options = BuildOptions.for_tiles(plan.precision, tiles, max_tile_batch, dla_core=dla_core)
                if plan.note:
                    lines.append(f"# {plan.note}")
                lines.append(trtexec_command(onnx_files[role][plan.onnx_precision], f"{role}.{precision}.engine",
                                             options, input_shapes[role], strongly_typed=plan.strongly_typed))
    return "\n".join(lines) + "\n"
