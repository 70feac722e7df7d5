"""Shared fixtures of the training-package tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def torch_single_thread():
    """Run a module's tiny models on one intra-op thread: on a shared 2-core CI machine OpenMP
    workers of several processes oversubscribe the cores and tiny ops slow down several-fold."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
