"""backupctl.prefetch: order kept, errors re-raised in the consumer, close() stops the producer."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from backupctl.prefetch import prefetch


def test_yields_every_item_in_order() -> None:
    assert list(prefetch(iter(range(1000)), depth=3)) == list(range(1000))


def test_producer_error_is_raised_in_the_consumer_after_the_items_before_it() -> None:
    def gen() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("part data/part-00001 is corrupt")

    got: list[int] = []
    with pytest.raises(ValueError, match="part-00001 is corrupt"):
        for x in prefetch(gen()):
            got.append(x)
    assert got == [1, 2]


def test_close_stops_the_producer_and_runs_its_finally() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def gen() -> Iterator[int]:
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    p = prefetch(gen(), depth=2)
    it = iter(p)
    assert next(it) == 0
    p.close()
    assert closed.wait(5)
    assert len(produced) < 10  # bounded: at most depth items ahead of the consumer
