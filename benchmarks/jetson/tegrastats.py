"""tegrastats, read: one parsed line (:func:`parse_line`), a sampler running ``tegrastats`` beside a
benchmark (:class:`Sampler`), and power and energy over a window (:func:`power_summary`).

tegrastats prints one line per interval; its fields changed across releases (tested on real lines in
tests/test_tegrastats.py):
* JetPack 4 (L4T R32): no timestamp, rails as ``VDD_IN 5297/5297`` (mW implied, instant/average);
* JetPack 5 (R35): a timestamp first, ``VDD_GPU_SOC 2399mW/2399mW``; AGX Orin has no board-input
  rail (``VDD_GPU_SOC``, ``VDD_CPU_CV``, ``VIN_SYS_5V0``, ``VDDQ_VDD2_1V8AO``), ``NC`` rails unwired;
* JetPack 6 (R36): Orin NX/Nano report ``VDD_IN`` (board input), ``VDD_CPU_GPU_CV``, ``VDD_SOC``;
  temperatures lower-case (``cpu@45.5C``); later releases add a third value (``.../.../...``).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

_STAMP = re.compile(r"^(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d) ")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_GPU = re.compile(r"\bGR3D_FREQ (\d+)%")
_TEMP = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
# A rail: NAME instant[mW]/average[mW][/...], then a space or the end (RAM 1/2MB is not one).
_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?(?:/\d+(?:mW)?)+(?=\s|$)")
# Rails that measure the whole board input, best first; without one (AGX Orin) the rails are summed.
BOARD_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
# tegrastats reports a powered-down sensor as -256 C.
_SENSOR_OFF_C = -200.0


@dataclass(frozen=True)
class Sample:
    """One tegrastats line: memory in MB, loads in percent, temperatures in C, rails in mW (instant)."""

    stamp: Optional[str]
    ram_used_mb: int
    ram_total_mb: int
    swap_used_mb: Optional[int] = None
    cpu_load: tuple[Optional[int], ...] = ()   # per core; None = core off
    gpu_load: Optional[int] = None
    temps_c: dict[str, float] = field(default_factory=dict)
    rails_mw: dict[str, int] = field(default_factory=dict)

    def board_power_mw(self) -> tuple[Optional[int], str]:
        """(milliwatts, which): the board-input rail when the module has one, else the sum of its rails."""
        for rail in BOARD_INPUT_RAILS:
            if rail in self.rails_mw:
                return self.rails_mw[rail], rail
        if self.rails_mw:
            return sum(self.rails_mw.values()), "sum of " + "+".join(self.rails_mw)
        return None, "no power rails in the line"


def parse_line(line: str) -> Sample:
    """The fields of one tegrastats line; ValueError for a line that is not one (no RAM field)."""
    line = line.strip()
    ram = _RAM.search(line)
    if not ram:
        raise ValueError(f"not a tegrastats line (no RAM field): {line[:80]!r}")
    stamp = _STAMP.match(line)
    swap = _SWAP.search(line)
    cpu = _CPU.search(line)
    cores = tuple(None if c.strip() == "off" else int(c.split("%")[0]) for c in cpu.group(1).split(",")) if cpu else ()
    gpu = _GPU.search(line)
    temps = {name: float(v) for name, v in _TEMP.findall(line) if float(v) > _SENSOR_OFF_C}
    rails = {name: int(mw) for name, mw in _RAIL.findall(line) if name not in ("NC", "RAM", "SWAP")}
    return Sample(stamp.group(1) if stamp else None, int(ram.group(1)), int(ram.group(2)),
                  int(swap.group(1)) if swap else None, cores, int(gpu.group(1)) if gpu else None, temps, rails)


def power_summary(samples: list[Sample], seconds: float, frames: int) -> dict:
    """Mean board power (W) over the samples of a window of ``seconds`` that processed ``frames``
    frames, and the energy per frame (J) it implies; what is missing is said, not guessed."""
    readings = [s.board_power_mw() for s in samples]
    values = [mw for mw, _ in readings if mw is not None]
    if not values:
        return {"power_w": None, "energy_per_frame_j": None,
                "why": readings[0][1] if readings else "no tegrastats samples in the measured window"}
    mean_w = sum(values) / len(values) / 1000.0
    rails = sorted({s for s in samples[0].rails_mw})
    return {"power_w": round(mean_w, 3), "measured_as": readings[0][1], "samples": len(values),
            "energy_per_frame_j": round(mean_w * seconds / frames, 4) if frames else None,
            "rails_mean_w": {r: round(sum(s.rails_mw.get(r, 0) for s in samples) / len(samples) / 1000.0, 3)
                             for r in rails}}


class Sampler:
    """Runs ``tegrastats --interval MS`` for the duration of a ``with`` block and keeps its parsed lines
    with their arrival time (``time.perf_counter``). Off a Jetson ``available`` is False and ``why``
    says what is missing; the block still runs."""

    def __init__(self, interval_ms: int = 100, command: str = "tegrastats") -> None:
        self.interval_ms = interval_ms
        self.path = shutil.which(command)
        self.available = self.path is not None
        self.why = "" if self.available else f"{command} not found (not a Jetson, or not on PATH): no power figures"
        self.samples: list[tuple[float, Sample]] = []
        self._proc: Optional[subprocess.Popen] = None
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "Sampler":
        if self.available:
            self._proc = subprocess.Popen([self.path, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                          stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self.samples.append((time.perf_counter(), parse_line(line)))
            except ValueError:
                continue  # a header or a partial line

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            if self._thread is not None:
                self._thread.join(timeout=10)

    def between(self, start: float, stop: float) -> list[Sample]:
        """The samples that arrived between two ``time.perf_counter`` readings."""
        return [s for t, s in self.samples if start <= t <= stop]
