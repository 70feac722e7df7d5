"""Checkpoints: model folders (docs/interfaces.md, Checkpoints) and resumable trainer state.

A checkpoint is a folder holding ``model.safetensors`` (tensors prefixed ``coarse.`` and
``refiner.``), ``model.json`` (how to rebuild the models) and, while training, ``trainer.pt``
(optimizer, scheduler, scaler, RNG states, step). Every folder and file is written under a
temporary name, fsynced and renamed (:mod:`edgedepth.atomic`), so a process killed at any
instant leaves either the previous checkpoint or the new one, never half of one.
"""
from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from edgedepth.atomic import atomic_dir, atomic_write_text, remove_temporaries

MODEL_FILE = "model.safetensors"
META_FILE = "model.json"
TRAINER_FILE = "trainer.pt"
LATEST_FILE = "latest"


def _unwrap(model: nn.Module) -> nn.Module:
    # DDP and torch.compile wrap the module; checkpoints hold the plain module's names.
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _model_tensors(coarse: Optional[nn.Module], refiner: Optional[nn.Module]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for prefix, model in (("coarse.", coarse), ("refiner.", refiner)):
        if model is None:
            continue
        for key, value in _unwrap(model).state_dict().items():
            # clone: safetensors refuses tensors that share storage (tied or viewed weights)
            tensors[prefix + key] = value.detach().to("cpu").contiguous().clone()
    return tensors


def _check_spec(meta: dict, key: str) -> None:
    spec = meta.get(key)
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("kwargs", {}), dict):
        raise ValueError(f"meta[{key!r}] must be {{'name': str, 'kwargs': dict}}, got {spec!r}")


def write_model_files(folder: Path, coarse: Optional[nn.Module], refiner: Optional[nn.Module], meta: dict) -> None:
    """Write ``model.safetensors`` and ``model.json`` into an existing (temporary) folder."""
    from safetensors.torch import save_file

    if coarse is None:
        raise ValueError("coarse model is required: every checkpoint carries the coarse model it was trained with")
    _check_spec(meta, "coarse")
    if refiner is not None:
        _check_spec(meta, "refiner")
    meta = dict(meta)
    if refiner is None:
        meta.pop("refiner", None)
    save_file(_model_tensors(coarse, refiner), str(folder / MODEL_FILE), metadata={"format": "pt"})
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")


def save_models(path: str | Path, coarse: nn.Module, refiner: Optional[nn.Module], meta: dict) -> Path:
    """Save a coarse model and optional refiner as a checkpoint folder (atomic).

    ``meta`` is the content of ``model.json``: ``{"coarse": {"name", "kwargs"}, "refiner":
    {"name", "kwargs"}, "camera": {"fx_norm"}, "train": {...}}``; the names and kwargs must
    rebuild the models through ``create_coarse`` / ``create_refiner``.
    """
    with atomic_dir(path, durable=True) as tmp:
        write_model_files(tmp, coarse, refiner, meta)
    return Path(path)


def read_meta(path: str | Path) -> dict:
    """The ``model.json`` of a checkpoint folder."""
    path = Path(path)
    meta_file = path / META_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} has no {META_FILE}")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(meta_file)!r} is not valid JSON: {err}") from err
    _check_spec(meta, "coarse")
    return meta


def _load_into(model: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, file: Path) -> None:
    own = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(own))
    unexpected = sorted(set(own) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{str(file)!r} does not match the {prefix.rstrip('.')} model: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for key, value in own.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{str(file)!r}: tensor {prefix}{key} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(own, strict=True)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder's ``model.safetensors``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = Path(path) / MODEL_FILE
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} has no {MODEL_FILE}")
    try:
        return load_file(str(file))
    except SafetensorError as err:
        raise ValueError(f"{str(file)!r} is not a readable safetensors file: {err}") from err


def build_coarse(spec: dict) -> nn.Module:
    from .models import create_coarse

    return create_coarse(spec["name"], **spec.get("kwargs", {}))


def build_refiner(spec: dict, coarse: nn.Module) -> nn.Module:
    from .models import create_refiner

    return create_refiner(spec["name"], coarse, **spec.get("kwargs", {}))


def load_models(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, Optional[nn.Module], dict]:
    """Rebuild ``(coarse, refiner, meta)`` from a checkpoint folder; refiner is None if absent.

    Models come back in eval mode on ``map_location``.
    """
    path = Path(path)
    meta = read_meta(path)
    tensors = load_tensors(path)
    file = path / MODEL_FILE
    coarse = build_coarse(meta["coarse"])
    _load_into(coarse, tensors, "coarse.", file)
    refiner = None
    if "refiner" in meta:
        _check_spec(meta, "refiner")
        refiner = build_refiner(meta["refiner"], coarse)
        _load_into(refiner, tensors, "refiner.", file)
    elif any(k.startswith("refiner.") for k in tensors):
        raise ValueError(f"{str(file)!r} holds refiner tensors but {META_FILE} names no refiner")
    for model in (coarse, refiner):
        if model is not None:
            model.to(map_location).eval()
    return coarse, refiner, meta


def load_refiner_weights(path: str | Path, refiner: nn.Module) -> None:
    """Load only the refiner tensors of a checkpoint into ``refiner`` (e.g. after Noisy Pretraining)."""
    tensors = load_tensors(path)
    _load_into(_unwrap(refiner), tensors, "refiner.", Path(path) / MODEL_FILE)


# ---------------------------------------------------------------------------------------------
# Training checkpoints: <run>/checkpoints/step_00000100/ + a `latest` pointer


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def save_training_checkpoint(
    run_dir: Path,
    step: int,
    coarse: nn.Module,
    refiner: Optional[nn.Module],
    meta: dict,
    trainer_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write a resumable checkpoint for ``step`` atomically, point ``latest`` at it, prune old ones."""
    target = step_dir(run_dir, step)
    with atomic_dir(target, durable=True) as tmp:
        write_model_files(tmp, coarse, refiner, meta)
        torch.save(trainer_state, tmp / TRAINER_FILE)
    atomic_write_text(target.parent / LATEST_FILE, target.name + "\n", durable=True)
    complete = _complete_checkpoints(target.parent)
    for old in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (MODEL_FILE, META_FILE, TRAINER_FILE))


def _complete_checkpoints(ckpt_root: Path) -> list[Path]:
    found = [p for p in ckpt_root.glob("step_*") if p.is_dir() and _complete(p)]
    return sorted(found, key=lambda p: p.name)


def latest_checkpoint(run_dir: str | Path) -> Optional[Path]:
    """The newest complete training checkpoint of a run folder, or None (read-only: safe while
    the run is still writing)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    pointer = root / LATEST_FILE
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        candidate = root / name
        # The pointer names a folder of this run, nothing else (never '..', a path or a link).
        if re.fullmatch(r"step_\d+", name) and candidate.is_dir() and not candidate.is_symlink() \
                and _complete(candidate):
            return candidate
    complete = _complete_checkpoints(root)
    return complete[-1] if complete else None


def remove_stale_temporaries(run_dir: str | Path) -> int:
    """Delete temporary checkpoint folders a killed writer left behind; call only from the
    process that owns the run (never while another process may be writing). Returns the count."""
    return remove_temporaries(Path(run_dir) / "checkpoints")


def load_trainer_state(folder: str | Path) -> dict[str, Any]:
    """The ``trainer.pt`` dictionary of a training checkpoint folder."""
    file = Path(folder) / TRAINER_FILE
    if not file.is_file():
        raise FileNotFoundError(f"checkpoint {str(folder)!r} has no {TRAINER_FILE}; it cannot be resumed")
    # weights_only: a trainer.pt is a file a user can hand over; it must not run code. Its RNG states
    # need numpy arrays and dtypes rebuilt, nothing more.
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    with torch.serialization.safe_globals([_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]):
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(f"{str(file)!r} holds more than tensors and plain data; refusing to load it ({err})") from None
