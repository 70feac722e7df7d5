"""The tile engine never takes the host process down: thread limits, memory limits, another thread
changing the boxes mid-call, sizes past 32 bits. Each scenario that used to kill the process runs in
a child process, so a crash fails the test instead of the test run."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgedepth import native, tiling

needs_native = pytest.mark.skipif(native.cpu is None, reason=f"native CPU engine not built: {native.cpu_error}")


def _run_child(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=timeout)


def _report(out: subprocess.CompletedProcess) -> str:
    # A sanitizer names the fault at the top of its report and prints stacks below it.
    err = out.stderr if len(out.stderr) < 3000 else out.stderr[:1500] + "\n...\n" + out.stderr[-1500:]
    return f"exit {out.returncode}\n{out.stdout}\n{err}"


def test_thread_counts_are_capped() -> None:
    with pytest.raises(ValueError, match="n must be <= 256"):
        tiling.set_num_threads(4000)
    img, boxes = np.zeros((8, 8, 3), np.uint8), np.array([[0.0, 0, 8, 8]])
    with pytest.raises(ValueError, match="threads must be <= 256"):
        tiling.crop_resize(img, boxes, (4, 4), threads=4000)
    with pytest.raises(ValueError, match="threads must be <= 256"):
        tiling.stitch(np.zeros((1, 1, 4, 4), np.float32), boxes, 8, 8, threads=4000)
    assert tiling.get_num_threads() <= tiling.MAX_THREADS


@needs_native
def test_native_module_caps_threads_itself() -> None:
    with pytest.raises(ValueError, match="threads must be <= 256"):
        native.cpu.crop_rgb(np.zeros((8, 8, 3), np.uint8), np.array([[0.0, 0, 8, 8]]), 4, 4, [1.0] * 3, [0.0] * 3,
                            False, 4000)


# A child that limits its own address space to what it uses now plus `headroom` MiB, then runs an op
# with many threads. Thread stacks (8 MiB each) and per-thread row buffers then fail part-way: the op
# must give the single-thread result or a MemoryError, and the process must exit normally.
_LIMITED = """
import resource, sys
import numpy as np
from edgedepth import tiling

scenario, headroom = sys.argv[1], int(sys.argv[2])
if scenario == "threads":      # 64 threads, small row buffers: thread creation is what fails
    src = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    boxes, size, threads = tiling.TileGrid(1080, 1920, 4, 4, 32).boxes, (64, 64), 64
else:                          # "buffers": 8 workers with a 40 MB row buffer each: allocations fail
    src = np.random.default_rng(0).random((1, 4, 10_000_000), dtype=np.float32)
    boxes, size, threads = np.array([[0.0, 0.0, 4.0, 10_000_000.0]] * 8), (4, 4), 8
expected = tiling.crop_resize(src, boxes, size, threads=1)

def vm_size() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize"))

resource.setrlimit(resource.RLIMIT_AS, (vm_size() + (headroom << 20), resource.RLIM_INFINITY))
try:
    got = tiling.crop_resize(src, boxes, size, threads=threads)
except MemoryError:
    print("MemoryError")
else:
    print("ok" if np.array_equal(got, expected) else "WRONG")
"""


@needs_native
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc are Linux")
@pytest.mark.skipif(getattr(native.cpu, "sanitized", False),
                    reason="ASan reserves terabytes of address space; an address-space limit is fatal to it")
@pytest.mark.parametrize("scenario, headrooms", [("threads", (24, 48, 96, 192)), ("buffers", (100, 400, 1500))])
def test_thread_or_memory_exhaustion_never_aborts(scenario: str, headrooms: tuple[int, ...]) -> None:
    seen = set()
    for headroom in headrooms:
        out = _run_child(_LIMITED, scenario, str(headroom))
        assert out.returncode == 0, f"{scenario} at +{headroom} MiB: {_report(out)}"
        assert out.stdout.strip() in ("ok", "MemoryError"), _report(out)
        seen.add(out.stdout.strip())
    # The sweep must have exercised the fallback: at least one limit under which the op completed.
    assert "ok" in seen, seen


# The caller's boxes flip between valid and NaN in another thread while the engine runs. The engine
# must see one consistent, checked copy: a ValueError or the right answer, never a wild index.
_RACE = """
import sys, threading, time
import numpy as np
from edgedepth import tiling

op = sys.argv[1]
grid = tiling.TileGrid(64, 64, 8, 8, 2)
boxes = np.array(grid.boxes)
img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
tiles = np.random.default_rng(1).random((len(boxes), 1, 8, 8), dtype=np.float32)
call = {
    "crop": lambda b: tiling.crop_resize(img, b, (16, 16), threads=1),
    "stitch": lambda b: tiling.stitch(tiles, b, 64, 64, threads=1),
    "native_crop": lambda b: tiling.native.cpu.crop_rgb(img, b, 16, 16, [1.0] * 3, [0.0] * 3, False, 1),
    "native_stitch": lambda b: tiling.native.cpu.stitch(tiles, b, 64, 64, 2, 1),
}[op]
expected = call(np.array(grid.boxes))
stop = threading.Event()

def writer():
    cols = boxes[:, 1:4:2] if "stitch" in op else boxes[:, 2]
    good = cols.copy()
    while not stop.is_set():
        cols[...] = np.nan
        cols[...] = good

t = threading.Thread(target=writer)
t.start()
wrong = 0
try:
    end = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < end:
        try:
            wrong += not np.array_equal(call(boxes), expected)
        except ValueError:
            pass
finally:
    stop.set()
    t.join()
print("wrong", wrong)
"""


@needs_native
@pytest.mark.parametrize("op", ["crop", "stitch", "native_crop", "native_stitch"])
def test_boxes_changed_by_another_thread_mid_call(op: str) -> None:
    out = _run_child(_RACE, op, "1")
    assert out.returncode == 0, _report(out)
    assert out.stdout.split() == ["wrong", "0"], _report(out)


@needs_native
def test_sides_past_32_bits_are_refused_not_truncated(tmp_path: Path) -> None:
    # 2 rows of 2^32 + 64 RGB pixels, a sparse file (24 GiB of address space, a few KiB on disk).
    # Truncated to 32 bits the width reads as 64, so row 1 would be read from row 0's pixels.
    width = 2**32 + 64
    path = tmp_path / "huge.u8"
    with open(path, "wb") as fh:
        fh.truncate(2 * width * 3)
    src = np.memmap(path, dtype=np.uint8, mode="r+", shape=(2, width, 3))
    src[1, :64] = 255
    boxes = np.array([[1.0, 0.0, 1.0, 64.0]])
    with pytest.raises(ValueError, match="src"):
        tiling.crop_resize(src, boxes, (1, 4))
    with pytest.raises(ValueError, match="src width .* over the tile engine's limit"):
        native.cpu.crop_rgb(src, boxes, 1, 4, [1.0] * 3, [0.0] * 3, False, 1)
    with pytest.raises(ValueError, match="height must be <= "):
        tiling.stitch(np.zeros((1, 1, 2, 2), np.float32), np.array([[0.0, 0, 2, 2]]), 2**31 + 2, 2)
