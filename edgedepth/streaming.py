"""A two-stage thread pipeline for camera streams: stage 1 of frame t+1 runs while stage 2 of frame t does.

The runtime splits one frame into a front half (validate, preprocess, coarse model) and a back half
(tile crops, refiner, stitch). Both halves are the very functions ``Runtime.predict`` calls, so a
streamed result equals a predicted one. The queue between the stages is bounded, so at most
``depth`` frames wait between them: latency stays bounded and a slow consumer back-pressures the
producer instead of filling memory.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def pipeline(items: Iterable[A], front: Callable[[A], B], back: Callable[[B], C], depth: int = 2) -> Iterator[C]:
    """Yield ``back(front(x))`` for each ``x`` in order, running ``front`` one step ahead in a thread.

    An exception in either stage or in the iteration of ``items`` is re-raised in the consumer.
    Closing the returned generator early stops the producer thread.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for x in items:
                if stop.is_set() or not put(front(x)):
                    return
        except BaseException as err:  # handed to the consumer, which re-raises it
            put(_Failure(err))
            return
        put(_DONE)

    worker = threading.Thread(target=produce, name="edgedepth-stream-front", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield back(item)
    finally:
        stop.set()
        worker.join(timeout=5)
