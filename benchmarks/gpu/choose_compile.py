"""Whether a GPU training run of a few minutes should use ``train.compile``, from what this
machine's benchmarks just measured (``train_step.json`` and ``train_step_compiled.json``, written
by ``benchmarks/gpu/run.sh``): compiling pays once per training stage and saves a share of every
step after it.

    python benchmarks/gpu/choose_compile.py BENCH_DIR TRAINING_MINUTES

Prints ``1`` (compile) or ``0`` (eager) on stdout and the reason on stderr; ``0`` when either
file is missing or unreadable (no GPU, a failed step). ``scripts/gpu_session.sh`` passes the
answer to ``scripts/train_default_gpu.sh`` as ``EDGEDEPTH_TRAIN_COMPILE``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

STAGES = 3  # coarse, Noisy Pretraining, refiner: each compiles its own model


def choose(eager: dict, compiled: dict, minutes: float) -> tuple[bool, str]:
    """(compile?, why) for ``minutes`` of training from the two train_step.py results."""
    saved_share = 1.0 - compiled["step_ms_min"] / eager["step_ms_min"]
    # The first three steps include the compile; the eager run's first steps are the baseline.
    overhead_s = STAGES * max(0.0, compiled["first_steps_s"] - eager["first_steps_s"])
    gain_s = 60.0 * minutes * saved_share
    why = (f"compiled step {compiled['step_ms_min']:.1f} ms vs eager {eager['step_ms_min']:.1f} ms "
           f"({100 * saved_share:+.0f} % of the step saved): {gain_s:.0f} s gained over {minutes:g} min "
           f"against {overhead_s:.0f} s of compiling")
    return gain_s > overhead_s, why


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: choose_compile.py BENCH_DIR TRAINING_MINUTES", file=sys.stderr)
        return 2
    bench = Path(args[0])
    try:
        minutes = float(args[1])
    except ValueError:
        print(f"choose_compile.py: TRAINING_MINUTES must be a number, got {args[1]!r}", file=sys.stderr)
        return 2
    try:
        eager = json.loads((bench / "train_step.json").read_text())
        compiled = json.loads((bench / "train_step_compiled.json").read_text())
        use, why = choose(eager, compiled, minutes)
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as e:
        use, why = False, f"no usable measurement in {bench} ({type(e).__name__}): eager"
    print(f"train.compile {'on' if use else 'off'}: {why}", file=sys.stderr)
    print(1 if use else 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
