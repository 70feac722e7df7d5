"""Model registries (timm style): ``@register("encoder", "name")`` on a factory, ``list_models(kind)``."""
from __future__ import annotations

from typing import Callable, TypeVar

__all__ = ["KINDS", "register", "list_models", "get_factory"]

KINDS = ("encoder", "coarse", "refiner")
_REGISTRY: dict[str, dict[str, Callable]] = {kind: {} for kind in KINDS}

F = TypeVar("F", bound=Callable)


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")


def register(kind: str, name: str) -> Callable[[F], F]:
    """Decorator registering ``factory`` under ``name`` for ``kind``."""
    _check_kind(kind)

    def deco(factory: F) -> F:
        if name in _REGISTRY[kind]:
            raise ValueError(f"{kind} {name!r} is already registered")
        _REGISTRY[kind][name] = factory
        return factory

    return deco


def list_models(kind: str) -> list[str]:
    """Sorted names registered for ``kind`` ("encoder", "coarse" or "refiner")."""
    _check_kind(kind)
    return sorted(_REGISTRY[kind])


def get_factory(kind: str, name: str) -> Callable:
    """The factory registered as ``name``; ValueError listing the known names otherwise."""
    _check_kind(kind)
    if name not in _REGISTRY[kind]:
        raise ValueError(f"unknown {kind} model {name!r}; known: {list_models(kind)}")
    return _REGISTRY[kind][name]
