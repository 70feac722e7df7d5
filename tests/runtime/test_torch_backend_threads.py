"""The torch backend on the CPU keeps torch's intra-op team small enough for the runtime's own concurrency.

With as many OpenMP threads as cores, torch stalled at every op barrier whenever another thread
wanted a core (the other stream() stage, the tile engine, another process): refine took seconds
where one thread took tens of milliseconds (benchmarks/bench_runtime.py). These tests observe the
thread count inside the models' forward, in predict and in both threads of stream().
"""
from __future__ import annotations

import numpy as np
import pytest

from edgedepth import Runtime

torch = pytest.importorskip("torch")
from edgedepth.backends.torch import cpu_threads_default  # noqa: E402
from edgedepth.tiling import available_cores  # noqa: E402


@pytest.fixture
def torch_threads():
    """Restore torch's process-wide thread count after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _record_threads(rt: Runtime) -> tuple[list[int], list]:
    seen: list[int] = []
    hooks = [b.module.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
             for b in (rt.coarse, rt.refiner)]
    return seen, hooks


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (72, 96, 3), dtype=np.uint8) for _ in range(n)]


def test_default_caps_intra_op_threads_in_predict_and_stream(exported_bundle, torch_threads):
    torch.set_num_threads(available_cores())  # torch's own default: one thread per core
    rt = Runtime(exported_bundle, backend="torch", device="cpu")
    seen, hooks = _record_threads(rt)
    try:
        rt.predict(_frames(1)[0])
        list(rt.stream(_frames(3)))  # coarse runs in the stream's front thread, refine in this one
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == 2 + 2 * 3
    assert set(seen) == {cpu_threads_default()}
    assert cpu_threads_default() == max(1, available_cores() // 2)


def test_explicit_threads_are_honoured(exported_bundle, torch_threads):
    torch.set_num_threads(1)
    rt = Runtime(exported_bundle, backend="torch", device="cpu", threads=2)
    seen, hooks = _record_threads(rt)
    try:
        rt.predict(_frames(1)[0])
    finally:
        for h in hooks:
            h.remove()
    assert seen == [2, 2]


def test_default_never_raises_a_lower_setting(exported_bundle, torch_threads):
    # A process that chose fewer torch threads keeps its choice.
    torch.set_num_threads(1)
    Runtime(exported_bundle, backend="torch", device="cpu")
    assert torch.get_num_threads() == 1
