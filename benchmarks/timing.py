"""Interleaved timing shared by the benchmarks: every repetition runs all cases in a shuffled order,
so a change in a shared machine's load hits every case alike; wall and this thread's CPU time
(``time.thread_time``, meaningful when the work runs on the calling thread) are both recorded."""
from __future__ import annotations

import random
import statistics
import time
from typing import Any, Callable


def time_interleaved(calls: dict[str, Callable[[], Any]], repeat: int, seed: int = 0,
                     sync: Callable[[], None] = lambda: None) -> dict[str, dict[str, list[float]]]:
    """Each call once to warm up (dropped), then ``repeat`` rounds over all calls in a shuffled order.

    ``sync`` runs after each call, inside the timed span (a device synchronise). Returns per call
    {"wall": [ms per round], "cpu": [this thread's CPU ms per round]}.
    """
    for fn in calls.values():
        fn()
        sync()
    names = list(calls)
    times: dict[str, dict[str, list[float]]] = {n: {"wall": [], "cpu": []} for n in names}
    rng = random.Random(seed)
    for _ in range(repeat):
        rng.shuffle(names)
        for name in names:
            c0, w0 = time.thread_time(), time.perf_counter()
            calls[name]()
            sync()
            times[name]["wall"].append((time.perf_counter() - w0) * 1e3)
            times[name]["cpu"].append((time.thread_time() - c0) * 1e3)
    return times


def min_median(ms: list[float]) -> dict[str, float]:
    """{"min": ..., "median": ...} of a list of milliseconds."""
    return {"min": min(ms), "median": statistics.median(ms)}
