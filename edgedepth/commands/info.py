"""`edgedepth info`: backends (installed, version, devices), versions, native tile engine, default bundle."""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
from typing import Any

_DISTRIBUTIONS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "openvino": ("openvino",),
                  "tensorrt": ("tensorrt",), "coreml": ("coremltools",), "torch": ("torch",)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def collect() -> dict[str, Any]:
    """Everything `edgedepth info` reports, as a dict."""
    import numpy as np

    from .. import __version__
    from ..backends import get_backend, list_backends
    from ..bundle import DEFAULT_BUNDLE, MANIFEST

    backends = {}
    for name in list_backends():
        cls = get_backend(name)
        entry: dict[str, Any] = {"available": cls.is_available(), "version": _version(_DISTRIBUTIONS.get(name, (name,)))}
        if entry["available"]:
            try:
                entry["devices"] = cls.devices()
            except Exception as err:  # a broken install should show up here, not crash the report
                entry["error"] = f"{type(err).__name__}: {err}"
        else:
            try:  # installed but unusable here (e.g. coremltools off macOS) says why, not "install it"
                cls.require()
            except ImportError as err:
                entry["why_not"] = str(err)
            entry["install"] = cls.install_hint
        backends[name] = entry
    try:
        from ..tiling import native_status

        native = native_status()
    except ImportError as err:
        native = {"error": str(err)}
    return {
        "edgedepth": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "machine": platform.machine(), "numpy": np.__version__, "backends": backends, "tile_engine": native,
        "default_bundle": {"path": str(DEFAULT_BUNDLE), "present": (DEFAULT_BUNDLE / MANIFEST).is_file()},
    }


def tile_engine_lines(status: dict[str, Any]) -> list[str]:
    """Two short lines from ``edgedepth.native.native_status()``: the CPU module and the CUDA module."""
    if "error" in status:
        return [f"unavailable: {status['error']}"]
    if status["cpu"]:
        cpu = f"CPU    native, {status['threads']} threads" + (" (ASan/UBSan build)" if status.get("cpu_sanitized") else "")
    else:
        cpu = f"CPU    numpy reference (native module not built: {status['cpu_error']})"
    if status["cuda"]:
        v = status.get("cuda_runtime")
        runtime = f"CUDA runtime {v // 1000}.{v % 1000 // 10}" if isinstance(v, int) else "CUDA runtime ?"
        n = status.get("cuda_devices") or 0
        cuda = f"CUDA   compiled ({runtime}), {n} device{'' if n == 1 else 's'}" + ("" if n else " visible")
    else:
        cuda = f"CUDA   not compiled ({status.get('cuda_error') or 'no CUDA compiler at build time'})"
    return [cpu, cuda]


def run(args: argparse.Namespace) -> int:
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"edgedepth {report['edgedepth']}  python {report['python']}  numpy {report['numpy']}  {report['platform']}")
    print("backends:")
    for name, b in report["backends"].items():
        if b["available"]:
            detail = f"{b.get('version') or '?'}  devices: {', '.join(b.get('devices', [])) or b.get('error', 'none')}"
        elif b.get("version"):
            detail = f"{b['version']}  unusable here: {b.get('why_not', b['install'])}"
        else:
            detail = f"not installed ({b['install']})"
        print(f"  {name:<12} {detail}")
    print("tile engine:")
    for line in tile_engine_lines(report["tile_engine"]):
        print(f"  {line}")
    d = report["default_bundle"]
    print(f"default bundle: {d['path']} ({'present' if d['present'] else 'MISSING'})")
    return 0
