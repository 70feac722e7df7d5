"""What a Jetson benchmark ran on: L4T / JetPack release, nvpmodel power mode, jetson_clocks state,
TensorRT and CUDA versions. Each fact is read from its source when present and otherwise reported as
missing with the reason (off a Jetson every one is missing, and the benchmark still runs)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
# L4T major release -> JetPack major (NVIDIA's release notes pair them one to one).
_JETPACK = {32: "4", 34: "5 (developer preview)", 35: "5", 36: "6", 38: "7"}


def l4t_release(path: Path = NV_TEGRA_RELEASE) -> dict[str, Any]:
    """L4T and JetPack from ``/etc/nv_tegra_release`` (first line e.g. ``# R36 (release), REVISION: 3.0, ...``)."""
    try:
        first = path.read_text(errors="ignore").splitlines()[0]
    except (OSError, IndexError):
        return {"l4t": None, "jetpack": None, "why": f"{path} not found: not a Jetson"}
    match = re.match(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", first)
    if not match:
        return {"l4t": None, "jetpack": None, "why": f"{path}: unrecognised first line {first[:60]!r}"}
    major = int(match[1])
    return {"l4t": f"R{major}.{match[2]}", "jetpack": _JETPACK.get(major)}


def _run(argv: list[str]) -> tuple[Optional[str], str]:
    """(stdout, why not) of a command that may be absent or need root."""
    if shutil.which(argv[0]) is None:
        return None, f"{argv[0]} not found"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"{' '.join(argv)}: {err}"
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        return None, f"{' '.join(argv)} exited {done.returncode}: {reason[0] if reason else 'no message'}"
    return done.stdout, ""


def nvpmodel_mode() -> dict[str, Any]:
    """The power mode ``nvpmodel -q`` reports (its ``NV Power Mode: NAME`` line and the mode id)."""
    out, why = _run(["nvpmodel", "-q"])
    if out is None:
        return {"mode": None, "why": why}
    name = re.search(r"NV Power Mode:\s*(\S+)", out)
    ids = [line.strip() for line in out.splitlines() if line.strip().isdigit()]
    return {"mode": name.group(1) if name else None, "id": int(ids[0]) if ids else None}


def jetson_clocks_state() -> dict[str, Any]:
    """Whether ``jetson_clocks`` pinned the clocks: in ``jetson_clocks --show`` every CPU/GPU/EMC line
    then has MinFreq equal to MaxFreq. Usually needs root; without it the reason is reported."""
    out, why = _run(["jetson_clocks", "--show"])
    if out is None:
        return {"pinned": None, "why": why}
    pairs = re.findall(r"MinFreq=(\d+)\s+MaxFreq=(\d+)", out)
    if not pairs:
        return {"pinned": None, "why": "jetson_clocks --show printed no MinFreq/MaxFreq lines"}
    return {"pinned": all(lo == hi for lo, hi in pairs), "domains": len(pairs)}


def versions() -> dict[str, Any]:
    """TensorRT (the Python package), CUDA (torch's build, else the toolkit's version.json)."""
    out: dict[str, Any] = {}
    try:
        import tensorrt

        out["tensorrt"] = tensorrt.__version__
    except ImportError:
        out["tensorrt"], out["tensorrt_why"] = None, "tensorrt is not installed"
    cuda = None
    try:
        import torch

        cuda = torch.version.cuda
    except ImportError:
        pass
    if cuda is None:
        try:
            cuda = json.loads(Path("/usr/local/cuda/version.json").read_text())["cuda"]["version"]
        except (OSError, KeyError, ValueError):
            out["cuda_why"] = "no CUDA build of torch and no /usr/local/cuda/version.json"
    out["cuda"] = cuda
    return out


def describe() -> dict[str, Any]:
    """Every fact above, in one dict for figures.json."""
    return {"release": l4t_release(), "nvpmodel": nvpmodel_mode(), "jetson_clocks": jetson_clocks_state(),
            "versions": versions()}
