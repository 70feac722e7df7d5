"""Fixtures shared by several test folders (runtime, fuzz): bundles exported within the test run."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A valid bundle of tiny random-init ONNX models (runtime/tiny_models.py; read-only use: copy
    before changing it)."""
    from .runtime.tiny_models import make_tiny_bundle

    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny.edgedepth")


@pytest.fixture
def tiny_bundle_copy(tiny_bundle, tmp_path) -> Path:
    """A private copy of ``tiny_bundle`` a test may damage."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "tiny.edgedepth"))
