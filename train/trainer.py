"""The training loop shared by every stage.

AdamW with per-module learning rates (encoder x ``optim.encoder_lr_mult``), warm-up + cosine
schedule, mixed precision where the device supports it, gradient accumulation, DDP through
torchrun, progress bar, metrics to CSV and TensorBoard, validation, and atomic resumable
checkpoints every ``train.ckpt_every`` steps. What a step computes lives in :mod:`.stages`.
"""
from __future__ import annotations

import contextlib
import csv
import math
import random
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn

from . import distributed
from .checkpoint import latest_checkpoint, load_tensors, remove_stale_temporaries, load_trainer_state, save_models, save_training_checkpoint
from .config import Config, save_config, validate_config
from .data import build_loaders, training_frames


# Item fields read on the host (crop tables, GPCT's tile pairs): on a GPU they would come back to the
# host with a synchronisation per crop and per frame, every step.
HOST_KEYS = frozenset({"boxes", "frame_hw", "coarse_boxes", "coarse_hw"})


def resolve_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``train.precision`` on ``device``; None means full fp32."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None  # CPU autocast is slower than fp32 on most CPUs; ask for bf16 explicitly
    if precision == "fp32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"config field 'train.precision': fp16 needs a CUDA device, the run is on {device}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("config field 'train.precision': bf16 is not supported by this GPU; use fp16")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def default_cpu_threads() -> int:
    """torch intra-op threads of a CPU run when ``train.threads`` is 0.

    torch's full team busy-waits at the end of each of a step's ~thousand small parallel regions;
    on a 2-core machine with anything else running, 2 threads made refiner steps 6-14x slower than 1.
    Small machines get one thread per process (run DDP processes for more); large ones half the cores.
    """
    from edgedepth.tiling import available_cores

    cores = available_cores()
    return 1 if cores <= 4 else cores // 2


def _encoder_ids(model: nn.Module) -> set[int]:
    # Refiners say which parameters are their (pretrainable) backbone; other models keep it in
    # a submodule named "encoder".
    if hasattr(model, "encoder_parameters"):
        return {id(p) for p in model.encoder_parameters()}
    return {id(p) for name, p in model.named_parameters() if "encoder" in name.split(".")}


def param_groups(model: nn.Module, lr: float, weight_decay: float, encoder_lr_mult: float) -> list[dict]:
    """AdamW groups: encoder parameters at ``lr * encoder_lr_mult``; no decay on norms and biases."""
    encoder = _encoder_ids(model)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in encoder, p.ndim <= 1), []).append(p)
    out = []
    for (enc, no_decay), params in sorted(groups.items()):
        out.append({
            "params": params,
            "lr": lr * (encoder_lr_mult if enc else 1.0),
            "weight_decay": 0.0 if no_decay else weight_decay,
            "name": ("encoder" if enc else "head") + ("/no_decay" if no_decay else ""),
        })
    return out


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float,
              time_progress: Optional[float] = None) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based). With a wall-clock
    budget, ``time_progress`` (elapsed / budget) advances the cosine too: whichever runs out first."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, max((step - warmup) / max(1, total - warmup), time_progress or 0.0))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class MetricsLog:
    """Rows of metrics in ``<run>/<name>.csv`` (+ TensorBoard), truncated to a step on resume."""

    def __init__(self, run_dir: Path, name: str, tb: Any, resume_step: Optional[int]) -> None:
        self.path = run_dir / f"{name}.csv"
        self.tb = tb
        self.columns: Optional[list[str]] = None
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            self._truncate(resume_step)

    def _truncate(self, step: int) -> None:
        # Rows written after the checkpoint we resume from (and a row cut by a kill) are replayed.
        from edgedepth.atomic import atomic_write_text

        with open(self.path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return
        header, keep = rows[0], [rows[0]]
        for row in rows[1:]:
            if len(row) == len(header):
                try:
                    if int(row[0]) <= step:
                        keep.append(row)
                except ValueError:
                    pass
        lines = [",".join(r) for r in keep]
        atomic_write_text(self.path, "\n".join(lines) + "\n", durable=True)
        self.columns = header

    def write(self, step: int, values: dict[str, float]) -> None:
        if self.columns is None:
            self.columns = ["step", *sorted(values)]
            if not self.path.exists() or self.path.stat().st_size == 0:
                with open(self.path, "w", encoding="utf-8") as fh:
                    fh.write(",".join(self.columns) + "\n")
        row = [str(step)] + [f"{values.get(c, float('nan')):.6g}" for c in self.columns[1:]]
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(",".join(row) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(key, value, step)


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a metrics CSV as dicts of floats (step included)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Runs one stage of ``cfg`` to ``cfg.train.steps`` optimizer steps, resuming if it can.

    ``resume``: "auto" continues from the newest checkpoint in ``train.out_dir`` if there is one,
    "never" starts over (an existing run folder's checkpoints are then ignored and metrics
    overwritten), or a path to a checkpoint folder.
    """

    def __init__(self, cfg: Config, resume: str = "auto") -> None:
        from .stages import build_stage

        validate_config(cfg)
        self.cfg = cfg
        t = cfg.train
        self.device = distributed.resolve_device(t.device)
        self.dist = distributed.init(self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(t.threads or default_cpu_threads())
        self.amp_dtype = resolve_precision(t.precision, self.device)
        self.run_dir = Path(t.out_dir)
        # Same seed on every rank: identical initial weights; data differs through the sampler.
        random.seed(t.seed)
        np.random.seed(t.seed)
        torch.manual_seed(t.seed)

        self.elapsed = 0.0  # seconds spent in the training loop (resumes carry it on)
        self.stage = build_stage(cfg, self.device)
        if t.channels_last:
            for module in self.stage.export_models()[:2]:
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        self.model = distributed.wrap(self.stage.trainable, self.dist, self.device)
        if t.compile:  # training steps only: validation and checkpoints use the plain modules
            self.model = torch.compile(self.model)
        o = cfg.optim
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(
            param_groups(self.stage.trainable, o.lr, o.weight_decay, o.encoder_lr_mult),
            lr=o.lr, betas=o.betas, **fused,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, t.steps, o.warmup_steps, o.schedule, o.min_lr_ratio,
                                                self.time_progress())
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.step = 0
        self.tiles_seen = 0  # refiner tile-iterations trained so far (all processes)
        self.resumed_from: Optional[Path] = None
        self._resume(resume)

    # -- resume ---------------------------------------------------------------------------------

    def _resume(self, resume: str) -> None:
        if resume == "never":
            return
        if self.dist.is_main:
            remove_stale_temporaries(self.run_dir)
        folder = latest_checkpoint(self.run_dir) if resume == "auto" else Path(resume)
        if folder is None:
            return
        state = load_trainer_state(folder)
        tensors = load_tensors(folder)
        self.stage.load_trainable(tensors)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.tiles_seen = int(state.get("tiles_seen", 0))
        self.elapsed = float(state.get("elapsed", 0.0))
        self.resumed_from = folder

    def _trainer_state(self) -> dict:
        return {
            "step": self.step,
            "tiles_seen": self.tiles_seen,
            "elapsed": self.elapsed,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(),
            "config": self.cfg.to_dict(),
        }

    # -- loop -----------------------------------------------------------------------------------

    def time_progress(self) -> Optional[float]:
        """Share of ``train.max_minutes`` spent (None without a budget). On a multi-process run the
        ranks agree on it through the all-reduce in ``_budget_spent``."""
        budget = self.cfg.train.max_minutes * 60.0
        return self.elapsed / budget if budget > 0 else None

    def _budget_spent(self) -> bool:
        progress = self.time_progress()
        if progress is None:
            return False
        spent = distributed.all_reduce_mean({"p": float(progress >= 1.0)}, self.dist, self.device)["p"]
        return spent > 0

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _micro_batches(self, loader) -> Iterator[dict]:
        for batch in loader:
            yield {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) and k not in HOST_KEYS else v)
                   for k, v in batch.items()}

    def optimizer_step(self, batches: Iterator[dict]) -> tuple[list[dict], torch.Tensor]:
        """One optimizer step over ``train.grad_accum`` micro-batches drawn from ``batches`` (already
        on the device): (each micro-batch's loss parts, the gradient norm before clipping)."""
        t = self.cfg.train
        micro_parts = []
        for a in range(t.grad_accum):
            batch = next(batches)
            sync = a == t.grad_accum - 1
            ctx = self.model.no_sync() if (self.dist.enabled and not sync) else contextlib.nullcontext()
            with ctx:
                with self._autocast():
                    loss, parts = self.stage.train_step(self.model, batch)
                self.scaler.scale(loss / t.grad_accum).backward()
            micro_parts.append(parts)
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.stage.trainable.parameters(),
                                                   self.cfg.optim.grad_clip or float("inf"))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return micro_parts, grad_norm

    def fit(self) -> dict[str, float]:
        """Train to ``train.steps``; returns the last validation metrics."""
        cfg, t = self.cfg, self.cfg.train
        main = self.dist.is_main
        resume_step = self.step if self.resumed_from is not None else None
        tb = None
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
            self._record_data()
            if t.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=resume_step)
        train_log = MetricsLog(self.run_dir, "train", tb, resume_step) if main else None
        val_log = MetricsLog(self.run_dir, "val", tb, resume_step) if main else None
        train_loader, val_loader = build_loaders(cfg, self.dist, self.stage.items, start_step=self.step)
        batches = self._micro_batches(train_loader)

        from tqdm.auto import tqdm

        # disable=None: a bar on a terminal, nothing in a log file
        bar = tqdm(total=t.steps, initial=self.step, disable=True if not (main and t.progress) else None,
                   desc=f"{cfg.name} [{t.stage}]", dynamic_ncols=True, leave=True)
        sums: dict[str, float | torch.Tensor] = {}  # on the device until a log reads them
        count = 0
        last_val: dict[str, float] = {}
        tick = time.perf_counter()
        self.stage.train_mode()
        loop_start = time.perf_counter() - self.elapsed
        # The loop ends on the step that found the run over (last_step), never on a clock read after
        # it: validation and the checkpoint take time, and a budget spent during them must still
        # leave a validated, saved last step.
        done = self.step >= t.steps or self._budget_spent()
        while not done:
            micro_parts, grad_norm = self.optimizer_step(batches)
            for parts in micro_parts:
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
            self.elapsed = time.perf_counter() - loop_start
            if t.max_minutes > 0 and self.dist.enabled:  # one clock for all ranks: one learning rate
                self.elapsed = distributed.all_reduce_mean({"e": self.elapsed}, self.dist, self.device)["e"]
            self.scheduler.step()
            self.step += 1
            bar.update(1)
            last_step = self.step == t.steps or self._budget_spent()

            if self.step % t.log_every == 0 or last_step:
                tiles = float(sums.pop("tiles", 0.0)) * self.dist.world_size  # summed, not averaged
                logs = {f"train/{k}": float(v) / count for k, v in sums.items()}
                logs = distributed.all_reduce_mean(logs, self.dist, self.device)
                elapsed = time.perf_counter() - tick
                steps = max(1, count // t.grad_accum)
                logs["train/lr"] = max(self.scheduler.get_last_lr())  # the head lr; encoder lr is x encoder_lr_mult
                logs["train/grad_norm"] = float(grad_norm)
                logs["train/sec_per_step"] = elapsed / steps
                logs["train/steps_per_sec"] = steps / max(elapsed, 1e-9)
                if tiles:
                    self.tiles_seen += int(tiles)
                    logs["train/tiles_per_sec"] = tiles / max(elapsed, 1e-9)
                    logs["train/tiles_seen"] = float(self.tiles_seen)
                if train_log is not None:
                    train_log.write(self.step, logs)
                post = {"loss": f"{logs.get('train/loss', float('nan')):.4f}", "it/s": f"{logs['train/steps_per_sec']:.2f}"}
                if "train/tiles_per_sec" in logs:
                    post["tiles/s"] = f"{logs['train/tiles_per_sec']:.1f}"
                bar.set_postfix(post)
                sums, count, tick = {}, 0, time.perf_counter()

            if self.step % t.val_every == 0 or last_step:
                last_val = self.validate(val_loader)
                if val_log is not None:
                    val_log.write(self.step, last_val)
                    bar.write(f"step {self.step}: " + "  ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in last_val.items()))

            if self.step % t.ckpt_every == 0 or last_step:
                self.save_checkpoint()
            self.elapsed = time.perf_counter() - loop_start
            done = last_step
        bar.close()
        if main:
            coarse, refiner, meta = self.stage.export_models()
            save_models(self.run_dir / "final", coarse, refiner, meta)
            if tb is not None:
                tb.close()
            if t.progress:
                seen = f", {self.tiles_seen} tile-iterations" if self.tiles_seen else ""
                print(f"{cfg.name}: {self.step} steps{seen} -> {self.run_dir / 'final'}", flush=True)
        distributed.barrier(self.dist)
        return last_val

    def _record_data(self) -> None:
        """data.json in the run folder and one line on stdout: how many frames the run trains on and
        how often it will see each (train/data.py: training_frames)."""
        data = training_frames(self.cfg)
        if data is None:
            return
        import json

        from edgedepth.atomic import atomic_write_text

        t = self.cfg.train
        per_step = t.batch_size * t.grad_accum * self.dist.world_size
        data["visits_per_frame"] = round(t.steps * per_step / max(1, data["frames"]), 1)
        atomic_write_text(self.run_dir / "data.json", json.dumps(data, indent=1), durable=True)
        parts = ", ".join(f"{p['source']} {p['frames']} at {p['frame_size'][1]}x{p['frame_size'][0]}"
                          for p in data["parts"])
        bound = "up to " if t.max_minutes > 0 else ""
        print(f"{self.cfg.name}: {data['frames']} training frames ({parts}); {bound}{t.steps} steps of {per_step} "
              f"frames visit each about {data['visits_per_frame']:g} times", flush=True)

    def save_checkpoint(self) -> Optional[Path]:
        """Write a resumable checkpoint of the current step (main process only)."""
        folder = None
        if self.dist.is_main:
            coarse, refiner, meta = self.stage.export_models()
            folder = save_training_checkpoint(
                self.run_dir, self.step, coarse, refiner, meta, self._trainer_state(), keep=self.cfg.train.keep_checkpoints
            )
        distributed.barrier(self.dist)
        return folder

    @torch.no_grad()
    def validate(self, val_loader) -> dict[str, float]:
        """Validation metrics over this process's share of the val set, averaged over processes."""
        self.stage.eval_mode()
        sums: dict[str, float] = {}
        n = 0
        for batch in self._micro_batches(val_loader):
            with self._autocast():
                metrics = self.stage.validate_batch(batch)
            size = int(batch["image"].shape[0])
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * size
            n += size
        self.stage.train_mode()
        values = {f"val/{k}": v / max(1, n) for k, v in sums.items()}
        return distributed.all_reduce_mean(values, self.dist, self.device)
