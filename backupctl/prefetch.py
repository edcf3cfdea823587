"""Running a generator one step ahead in a background thread (bounded), so producing and consuming overlap.

Used where the producer is CPU work that releases the GIL for long stretches (Arrow kernels,
Parquet decoding, S3 downloads) and the consumer waits on a socket (COPY to a database).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetch(Generic[T]):
    """Iterate ``source`` in a daemon thread, at most ``depth`` items ahead; exceptions re-raise here.

    ``close()`` (also on garbage collection of the consumer's loop via ``with``/``finally``) stops the
    producer at its next item and closes the generator, so its ``finally`` blocks run.
    """

    def __init__(self, source: Iterator[T], depth: int = 2) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._source = source
        self._thread = threading.Thread(target=self._produce, name="backupctl-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            self._put(_Failure(e))
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        while True:
            item = self._q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def prefetch(source: Iterator[T], depth: int = 2) -> Prefetch[T]:
    return Prefetch(source, depth)
