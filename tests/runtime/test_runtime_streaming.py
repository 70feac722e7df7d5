"""The two-stage stream pipeline on its own: order, overlap, errors, early close."""
from __future__ import annotations

import threading
import time

import pytest

from edgedepth.streaming import pipeline


def test_order_and_values():
    assert list(pipeline(range(10), lambda x: x * 2, lambda y: y + 1)) == [2 * x + 1 for x in range(10)]


def test_front_runs_ahead_of_back():
    # While back() works on item 0, front() must already have produced item 1.
    front_done = []
    seen_ahead = []

    def front(x):
        front_done.append(x)
        return x

    def back(x):
        deadline = time.monotonic() + 5
        while x + 1 < 4 and (x + 1) not in front_done and time.monotonic() < deadline:
            time.sleep(0.001)
        seen_ahead.append((x + 1) in front_done or x == 3)
        return x

    assert list(pipeline(range(4), front, back)) == [0, 1, 2, 3]
    assert all(seen_ahead)


@pytest.mark.parametrize("where", ["front", "back", "source"])
def test_errors_reach_the_consumer(where):
    def source():
        yield 1
        if where == "source":
            raise KeyError("source broke")
        yield 2

    def front(x):
        if where == "front" and x == 2:
            raise KeyError("front broke")
        return x

    def back(x):
        if where == "back" and x == 2:
            raise KeyError("back broke")
        return x

    it = pipeline(source(), front, back)
    assert next(it) == 1
    with pytest.raises(KeyError, match=f"{where} broke"):
        next(it)


def test_early_close_stops_the_producer():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = pipeline(endless(), lambda x: x, lambda x: x, depth=2)
    assert next(it) == 0
    it.close()
    time.sleep(0.2)
    n = len(produced)
    time.sleep(0.2)
    assert len(produced) == n <= 5
    assert not any(t.name == "edgedepth-stream-front" and t.is_alive() for t in threading.enumerate())


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        list(pipeline([1], lambda x: x, lambda x: x, depth=0))
