"""Stage timers: blocks add up, and a lazy source is charged for producing, not consuming."""

from __future__ import annotations

import time

from loyalty_model.timing import timed, timed_iter


def test_timed_adds_up_repeated_blocks():
    seconds: dict[str, float] = {}
    for _ in range(2):
        with timed(seconds, "work"):
            time.sleep(0.01)
    assert 0.02 <= seconds["work"] < 1


def test_timed_counts_a_block_that_raises():
    seconds: dict[str, float] = {}
    try:
        with timed(seconds, "work"):
            raise ValueError
    except ValueError:
        pass
    assert "work" in seconds


def test_timed_iter_charges_the_source_not_the_consumer():
    def slow_source():
        for i in range(3):
            time.sleep(0.01)
            yield i

    seconds: dict[str, float] = {}
    got = []
    for item in timed_iter(slow_source(), seconds, "produce"):
        time.sleep(0.1)  # the consumer's own time is not the source's
        got.append(item)
    assert got == [0, 1, 2]
    assert 0.03 <= seconds["produce"] < 0.3  # consumer time included would be >= 0.33
