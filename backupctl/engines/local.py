"""The local engine: a thread pool inside the backupctl process.

Starts in milliseconds and is right for most tables: the work is I/O bound
(HTTP to DynamoDB and S3), so threads overlap the waits. The first task that
fails stops the run: tasks not yet started are cancelled, running tasks see
``ctx.stopped`` and return early, and the error is re-raised on the driver.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from backupctl.model import TaskSpec
from backupctl.retry import TokenBucket


@dataclass
class TaskContext:
    """What the engine lends a running task: shared budget, progress, stop flag."""

    limiter: TokenBucket | None = None
    progress: Any = None  # console.ProgressHandle or None
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

    def advance(self, items: int = 0, nbytes: int = 0) -> None:
        if self.progress is not None:
            self.progress.advance(items, nbytes)


TaskFn = Callable[[TaskSpec, TaskContext], dict[str, Any]]


class LocalEngine:
    name = "local"

    def __init__(self, workers: int = 8) -> None:
        self.workers = max(1, workers)

    def run(
        self,
        tasks: Sequence[TaskSpec],
        fn: TaskFn,
        ctx: TaskContext,
        on_result: Callable[[TaskSpec, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Run ``fn(spec, ctx)`` for every spec; results in spec order."""
        results: dict[int, dict[str, Any]] = {}
        if not tasks:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.workers, len(tasks)), thread_name_prefix="backupctl")
        futures: dict[Future[dict[str, Any]], int] = {}
        try:
            for i, spec in enumerate(tasks):
                futures[pool.submit(fn, spec, ctx)] = i
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                for f in done:
                    exc = f.exception()
                    if exc is not None:
                        raise exc
                    i = futures[f]
                    results[i] = f.result()
                    if on_result is not None:
                        on_result(tasks[i], results[i])
        except BaseException:
            ctx.stop.set()
            for f in futures:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return [results[i] for i in range(len(tasks))]
