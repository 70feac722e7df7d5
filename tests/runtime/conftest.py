"""Fixtures for the runtime tests: bundles exported within the test run (nothing downloaded).

* ``tiny_bundle`` / ``tiny_bundle_copy`` (tests/conftest.py, shared with the fuzz suite): hand-written
  manifest over tiny ONNX models (tiny_models.py) — for the bundle checks and the runtime internals,
  independent of the export layer.
* ``exported_bundle``: real registry models (edgedepth.train.models, random init) exported through
  edgedepth.export to ONNX, OpenVINO and the torch checkpoint the torch backend loads.
"""
from __future__ import annotations

from pathlib import Path

import pytest

FX_NORM = 0.8


@pytest.fixture(scope="session")
def exported_models():
    """Tiny random-init registry models (coarse "lite", refiner "prv2-mobile") and their meta."""
    torch = pytest.importorskip("torch")
    from edgedepth.train.models import create_coarse, create_refiner

    torch.manual_seed(0)
    ckw = {"input_size": (64, 96), "width": 0.35, "decoder_channels": (8, 8, 16, 16)}
    rkw = {"width": 0.35, "decoder_width": 0.5}
    coarse = create_coarse("lite", **ckw).eval()
    refiner = create_refiner("prv2-mobile", coarse, (64, 64), **rkw).eval()
    meta = {"coarse": {"name": "lite", "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in ckw.items()}},
            "refiner": {"name": "prv2-mobile", "kwargs": {"tile_size": [64, 64], **rkw}},
            "camera": {"fx_norm": FX_NORM}}
    return coarse, refiner, meta


@pytest.fixture(scope="session")
def exported_bundle(tmp_path_factory, exported_models) -> Path:
    """The models exported by edgedepth.export: ONNX + OpenVINO fp32 and the torch checkpoint."""
    pytest.importorskip("openvino")
    from edgedepth.export.exporter import ExportConfig, export_bundle
    from edgedepth.tiling import Tiling

    coarse, refiner, meta = exported_models
    cfg = ExportConfig(targets=("onnx", "openvino", "torch"), precisions=("fp32",), calib="procedural:1",
                       heldout="procedural:1", frame_size=(144, 176), tiling=Tiling(2, 2, 0.25, "cosine"))
    return export_bundle(coarse, refiner, meta, tmp_path_factory.mktemp("exported") / "e2e.edgedepth", cfg,
                         log=lambda _: None)
