"""Inference backends: one module per engine, loaded only when chosen (see registry)."""
from .base import PRECISIONS, WEIGHT_VARIANTS, Backend, BackendUnavailableError, TensorSpec
from .registry import available_backends, get_backend, list_backends, register_backend, select_backend

__all__ = [
    "PRECISIONS", "WEIGHT_VARIANTS", "Backend", "BackendUnavailableError", "TensorSpec", "available_backends",
    "get_backend", "list_backends", "register_backend", "select_backend",
]
