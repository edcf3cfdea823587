"""The local engine with worker processes, for CPU-bound tasks (``--processes N``).

A MySQL chunk is CPU work in Python - driver rows to Arrow, the ``mysql-row-v1``
hash of every row, Parquet encoding - and threads share one GIL: on a 2-core
machine two processes export a table ~1.5x faster than eight threads (measured,
docs/BENCHMARKS.md). This engine runs the same registered task functions as the
spark engine (``backupctl.engines.registry``; specs are plain data) in N
processes fed from a queue (forked when that is safe, see ``mp_context``); results, progress and errors come back
on another queue, and the driver commits as with every engine.

A task that needs per-worker state gets it from a ``WorkerSetup``: ``before``
runs on the driver before the workers start (e.g. ``LOCK TABLES ... READ``), each
worker runs ``init`` once (e.g. opens its consistent-snapshot transaction while
the lock holds), and ``after`` runs on the driver once every worker is ready (or
failed) - so N processes read one MySQL table at one point in time, as the
threads of the local engine do.

The first task error stops the run: workers are told to stop, then terminated;
the error is re-raised on the driver with its class, message and exit code.
Capacity limits are per task (``read_rate``/``write_rate`` in the spec), not a
shared token bucket: use threads (the default) for throttled DynamoDB work.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import multiprocessing as mp
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from backupctl.engines import registry
from backupctl.engines.local import TaskContext, TaskFn
from backupctl.errors import DataPathError, Interrupted
from backupctl.model import TaskSpec

READY_TIMEOUT_S = 120.0
PROGRESS_EVERY_S = 0.1


def mp_context() -> Any:
    """``fork`` on Linux when this process runs one thread, else ``spawn``.

    A forked worker starts with the driver's modules already imported; a spawned
    one imports pyarrow, boto3 and backupctl again (~0.4 s of CPU per worker on an
    idle 2-core machine, more while the driver competes for it; ADR 0017). A fork copies only the calling
    thread, so a lock another thread held (a boto3 pool, a progress display, a
    queue's feeder) would stay held in the child: with any other thread alive,
    spawn. The AWS client caches are dropped in a forked child (``aws.py``); the
    driver's open database connections are never used there.
    """
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return mp.get_context("fork")
    return mp.get_context("spawn")


@contextmanager
def light_main() -> Iterator[None]:
    """Processes spawned inside this block do not re-import the driver's ``__main__``.

    A spawned child runs the parent's main script again (as ``__mp_main__``) unless the parent's
    ``__main__.__spec__`` names a ``*.__main__`` module; for the ``backupctl`` console script that
    means importing the whole CLI (~0.5-0.8 s of CPU per worker) for nothing: workers look their
    task functions up by ``module:function`` name (``engines.registry``) and pickle nothing
    defined in ``__main__``.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = getattr(main, "__spec__", None)
    main.__spec__ = importlib.machinery.ModuleSpec("backupctl.__main__", None)
    try:
        yield
    finally:
        main.__spec__ = saved


@dataclass
class WorkerSetup:
    """Per-worker state for a run: driver ``before``/``after`` around every worker's ``init``."""

    init: str | None  # "module:function", called in each worker as function(**kwargs) before its first task
    kwargs: dict[str, Any] = field(default_factory=dict)
    before: Callable[[], Any] | None = None
    after: Callable[[Any], None] | None = None
    warm: WarmWorkers | None = None  # processes started ahead of the run, used instead of new ones


class WarmWorkers:
    """Worker processes started ahead of a run, each waiting for its init on a queue of its own.

    A spawned worker takes ~0.4 s or more to import backupctl (a forked one, ``mp_context``, ~5 ms); a driver
    that knows early that it will run worker processes starts them here, then
    does its own preparation (table statistics, chunk bounds, the repository)
    meanwhile. A ``ProcessEngine`` run whose ``WorkerSetup.warm`` holds them
    uses them (once); ``close`` stops any that no run took.
    """

    def __init__(self, n: int) -> None:
        mpc = mp_context()
        self.tasks, self.out, self.stop = mpc.Queue(), mpc.Queue(), mpc.Event()
        self.init_qs = [mpc.SimpleQueue() for _ in range(max(1, n))]
        self.procs = [mpc.Process(target=_worker_main, name=f"backupctl-worker-{i}", daemon=True,
                                  args=(self.tasks, self.out, self.stop, None, {}, q))
                      for i, q in enumerate(self.init_qs)]
        self.taken = False
        with light_main():
            for p in self.procs:
                p.start()

    def take(self, n: int, init: str | None, kwargs: dict[str, Any]) -> tuple[Any, Any, Any, list[Any]]:
        """(tasks queue, results queue, stop event, processes) for a run of ``n`` workers, each sent its init."""
        self.taken = True
        for q in self.init_qs[n:]:
            q.put(None)  # not needed: exits
        for q in self.init_qs[:n]:
            q.put((init, kwargs))
        return self.tasks, self.out, self.stop, self.procs[:n]

    def close(self) -> None:
        """Stop the workers if no run took them (a run shuts down the ones it took)."""
        if self.taken:
            return
        self.taken = True
        for q in self.init_qs:
            q.put(None)
        ProcessEngine._shutdown(self.procs, grace_s=5.0)


class _QueueProgress:
    """A worker's progress, sent to the driver at most every ``PROGRESS_EVERY_S`` (and before each
    result): a message per batch (~5,000 rows) woke the queue's feeder thread, which then took the
    GIL from the worker's own work, hundreds of times a table."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.items = self.nbytes = 0
        self.sent = time.monotonic()

    def advance(self, items: int = 0, nbytes: int = 0) -> None:
        self.items += items
        self.nbytes += nbytes
        if time.monotonic() - self.sent >= PROGRESS_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self.items or self.nbytes:
            self.out.put(("progress", self.items, self.nbytes))
            self.items = self.nbytes = 0
        self.sent = time.monotonic()

    def note(self, text: str) -> None:
        pass


def _worker_main(tasks: Any, out: Any, stop: Any, init: str | None, kwargs: dict[str, Any],
                 init_q: Any = None) -> None:
    """One worker process: init, then tasks until the None sentinel (or ``stop``).

    A warm worker (``init_q`` given) first waits there for (init, kwargs), or None: exit.
    """
    from backupctl.engines.spark import describe_error

    # A forked worker inherits the driver's handlers (an agent's stop handler, say): back to Python's own,
    # so that terminate() ends it and Ctrl-C interrupts it as it does a spawned one.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if init_q is not None:
        got = init_q.get()
        if got is None:
            return
        init, kwargs = got
    try:
        if init:
            module, attr = init.split(":")
            getattr(importlib.import_module(module), attr)(**kwargs)
        out.put(("ready", None, None))
    except BaseException as e:  # noqa: BLE001 - reported to the driver, which stops the run
        out.put(("init-error", None, describe_error(e)))
        return
    progress = _QueueProgress(out)
    ctx = TaskContext(progress=progress, stop=stop)
    while not stop.is_set():
        item = tasks.get()
        if item is None:
            return
        index, name, spec = item
        try:
            result = registry.resolve(name)(spec, ctx)
            progress.flush()
            out.put(("done", index, result))
        except BaseException as e:  # noqa: BLE001
            progress.flush()
            out.put(("error", index, describe_error(e)))
            return


class ProcessEngine:
    name = "local"

    def __init__(self, workers: int, processes: int, setup: WorkerSetup | None = None) -> None:
        self.workers = max(1, workers)
        self.processes = max(1, processes)
        self.setup = setup

    def run(
        self,
        tasks: Sequence[TaskSpec],
        fn: TaskFn,
        ctx: TaskContext,
        on_result: Callable[[TaskSpec, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        from backupctl.engines.spark import rebuild_error

        if not tasks:
            return []
        names = [registry.function_name(s, fn) for s in tasks]
        n = min(self.processes, len(tasks))
        setup = self.setup
        warm = setup.warm if setup and setup.warm and not setup.warm.taken and len(setup.warm.procs) >= n else None
        if warm is None:
            mpc = mp_context()
            task_q, out_q, stop = mpc.Queue(), mpc.Queue(), mpc.Event()
            procs = [mpc.Process(target=_worker_main, name=f"backupctl-worker-{i}", daemon=True,
                                 args=(task_q, out_q, stop, setup.init if setup else None,
                                       setup.kwargs if setup else {}))
                     for i in range(n)]
        held = setup.before() if setup and setup.before else None
        results: dict[int, dict[str, Any]] = {}
        try:
            try:
                if warm is not None and setup is not None:
                    task_q, out_q, stop, procs = warm.take(n, setup.init, setup.kwargs)
                else:
                    with light_main():
                        for p in procs:
                            p.start()
                self._wait_ready(out_q, procs, n)
            finally:
                if setup and setup.after:
                    setup.after(held)
            for i, (name, spec) in enumerate(zip(names, tasks, strict=True)):
                task_q.put((i, name, spec))
            for _ in procs:
                task_q.put(None)
            while len(results) < len(tasks):
                if ctx.stopped:
                    raise Interrupted("stopped")
                try:
                    kind, index, payload = out_q.get(timeout=0.5)
                except queue.Empty:
                    if not any(p.is_alive() for p in procs):
                        raise DataPathError(f"every worker process exited with {len(tasks) - len(results)} tasks "
                                            "unfinished (exit codes "
                                            f"{sorted({p.exitcode for p in procs}, key=str)})") from None
                    continue
                if kind == "progress":
                    ctx.advance(int(index or 0), int(payload or 0))
                elif kind == "done":
                    results[index] = payload
                    if on_result is not None:
                        on_result(tasks[index], payload)
                elif kind == "error":
                    raise rebuild_error(payload)
        except BaseException:
            stop.set()
            self._shutdown(procs, grace_s=2.0)
            raise
        self._shutdown(procs, grace_s=10.0)
        return [results[i] for i in range(len(tasks))]

    @staticmethod
    def _wait_ready(out_q: Any, procs: list[Any], n: int) -> None:
        from backupctl.engines.spark import rebuild_error

        ready = 0
        deadline = time.monotonic() + READY_TIMEOUT_S
        while ready < n:
            try:
                kind, _index, payload = out_q.get(timeout=0.5)
            except queue.Empty:
                if time.monotonic() > deadline or not any(p.is_alive() for p in procs):
                    raise DataPathError(f"{n - ready} of {n} worker processes did not start") from None
                continue
            if kind == "ready":
                ready += 1
            elif kind == "init-error":
                raise rebuild_error(payload)

    @staticmethod
    def _shutdown(procs: list[Any], grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
