"""tests/cuda: the CUDA tile engine and the torch backend on a GPU. They need an NVIDIA GPU visible
to torch and edgedepth._native_cuda (benchmarks/gpu/run.sh runs them there); elsewhere each test
skips with the reason."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgedepth import native

HERE = Path(__file__).resolve().parent


def _missing() -> str:
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    if native.cuda is None:
        return f"edgedepth._native_cuda not built: {native.cuda_error}"
    return ""


def pytest_collection_modifyitems(config, items):
    reason = _missing()
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.cuda)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
