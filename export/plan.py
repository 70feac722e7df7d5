"""What an export will build, said before any work (``edgedepth export ... --dry-run``).

The file names follow :func:`edgedepth.export.exporter.export_bundle`; a test checks the plan
against a real export's manifest, so the two cannot drift apart silently.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .exporter import ExportConfig


def planned_files(cfg: "ExportConfig", coarse_int8: bool = False) -> list[str]:
    """Bundle-relative files (an .mlpackage counts as one) that ``cfg`` (resolved) writes, but for
    ``parity.md`` and ``manifest.json``;
    ``coarse_int8``: an INT8 export quantizes the coarse model too (``exporter.plans_coarse_int8``)."""
    targets, precs = set(cfg.targets), set(cfg.precisions)
    coarse_int8 = coarse_int8 and "int8" in precs
    files = ["coarse.onnx", "refiner.onnx"]
    if targets & {"onnx", "tensorrt"}:
        files += [f"{r}.fp16.onnx" for r in ("coarse", "refiner") if "fp16" in precs]
        files += ["refiner.int8.qdq.onnx"] if "int8" in precs else []
        files += ["coarse.int8.qdq.onnx"] if coarse_int8 else []
    if "openvino" in targets:
        ir = set(cfg.ir_precisions)
        for role in ("coarse", "refiner"):
            for prec in ("fp32", "fp16"):
                if prec in ir:
                    files += [f"openvino/{role}.{prec}.xml", f"openvino/{role}.{prec}.bin"]
        files += ["openvino/refiner.int8.xml", "openvino/refiner.int8.bin"] if "int8" in ir else []
        files += ["openvino/coarse.int8.xml", "openvino/coarse.int8.bin"] if coarse_int8 and "int8" in ir else []
        files += ["openvino/coarse.u8.xml", "openvino/coarse.u8.bin"] if "fp32" in ir else []
        files += ["openvino/benchmark_app.txt"]
    if "coreml" in targets:
        variants = ["fp16"] + (["int8", "palette6"] if "int8" in precs else [])
        files += [f"coreml/refiner.{v}.mlpackage" for v in variants] + ["coreml/coarse.fp16.mlpackage"]
    if "tensorrt" in targets:
        files += ["trtexec.txt"]  # engines are built on the device; these are the lines that build them
    if "torch" in targets:
        files += ["torch/model.safetensors"]
    if cfg.pipeline_size:
        h, w = cfg.pipeline_size
        files += [f"pipeline_{w}x{h}.onnx"] if targets & {"onnx", "tensorrt", "openvino"} else []
        files += [f"coreml/pipeline_{w}x{h}.fp16.mlpackage"] if "coreml" in targets else []
    return files


def describe(cfg: "ExportConfig", coarse_int8: bool = False) -> str:
    """The plan as text: targets, precisions, tiling, frame size, frame sources, files
    (``coarse_int8`` as in :func:`planned_files`)."""
    t = cfg.tiling
    grid = f"{t.rows}x{t.cols}, overlap {t.overlap_ratio}, {t.window} window" + (f", adaptive shrink {t.shrink}" if t.shrink else "")
    h, w = cfg.frame_size
    int8 = "int8" in cfg.precisions
    lines = [f"targets:     {', '.join(cfg.targets)}",
             f"precisions:  {', '.join(cfg.precisions)}"
             + (f" (OpenVINO IR: {', '.join(cfg.ir_precisions)})" if "openvino" in cfg.targets else ""),
             f"tiling:      {grid}",
             f"frame size:  {w}x{h} (procedural frames; the CoreML refiner's fixed batch is cut from it)",
             f"calibration: {cfg.calib if int8 else '(none: no int8)'}" + (f", at least {cfg.calib_tiles} tiles, {cfg.calib_method} ranges" if int8 else ""),
             f"held-out:    {cfg.heldout} (parity report)"]
    if int8 and coarse_int8:
        lines.append("coarse INT8: yes (a ViT coarse model: most of a frame's time)")
    if int8 and cfg.accuracy_control and "openvino" in cfg.targets and "int8" in cfg.ir_precisions:
        lines.append(f"selection:   {cfg.select} (NNCF accuracy control, AbsRel bound +{100 * cfg.int8_bound:g} %)")
    if cfg.pipeline_size:
        lines.append(f"pipeline:    {cfg.pipeline_size[1]}x{cfg.pipeline_size[0]}")
    lines += ["files:"] + [f"  {f}" for f in planned_files(cfg, coarse_int8)] + ["  parity.md", "  manifest.json"]
    return "\n".join(lines)
