"""Where a run's time goes: wall seconds per stage, added up across repeated blocks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def timed(seconds: dict[str, float], key: str) -> Iterator[None]:
    """Add the wall time of the block to seconds[key]."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - t0


def timed_iter(items: Iterable[T], seconds: dict[str, float], key: str) -> Iterator[T]:
    """The items of `items`, adding the time spent producing each (not consuming it) to
    seconds[key]: for a lazy source, such as batches streaming out of an engine."""
    it = iter(items)
    while True:
        with timed(seconds, key):
            try:
                item = next(it)
            except StopIteration:
                return
        yield item
