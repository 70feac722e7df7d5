"""Fixtures for the export tests: the shared tiny models (tests/tiny_models.py)."""
from __future__ import annotations

import pytest
import torch

from ..tiny_models import TinyCoarse, TinyRefiner


@pytest.fixture(scope="session")
def tiny_models():
    torch.manual_seed(0)
    return TinyCoarse().eval(), TinyRefiner().eval()
