"""engines/processes.py: results in order, progress, errors with their class and exit code, init failures."""

from __future__ import annotations

import sys
import threading
from typing import Any

import pytest

from backupctl.engines import processes, registry
from backupctl.engines.local import TaskContext
from backupctl.engines.processes import ProcessEngine, WorkerSetup
from backupctl.errors import InvalidInput, NotFound
from tests.unit.process_tasks import FUNCTIONS


class Progress:
    def __init__(self) -> None:
        self.items = 0

    def advance(self, items: int = 0, nbytes: int = 0) -> None:
        self.items += items


REGISTER = WorkerSetup(init="tests.unit.process_tasks:register")


@pytest.fixture(autouse=True)
def _test_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, target in FUNCTIONS.items():  # in the driver; the workers register them in their init
        monkeypatch.setitem(registry.TASK_FUNCTIONS, name, target)


def specs(kind: str, n: int) -> list[dict[str, Any]]:
    return [{"task_id": f"t{i}", "kind": kind, "x": i} for i in range(n)]


def test_results_in_task_order_with_progress() -> None:
    seen: list[str] = []
    progress = Progress()
    out = ProcessEngine(workers=4, processes=2, setup=REGISTER).run(
        specs("test.square", 7), lambda s, c: {}, TaskContext(progress=progress),
        on_result=lambda spec, r: seen.append(spec["task_id"]))
    assert [r["y"] for r in out] == [i * i for i in range(7)]
    assert sorted(seen) == [f"t{i}" for i in range(7)]
    assert progress.items == 7


def test_a_task_error_keeps_its_class_and_exit_code() -> None:
    with pytest.raises(NotFound, match="task t3 found nothing") as info:
        ProcessEngine(workers=2, processes=2, setup=REGISTER).run(specs("test.fail", 5), lambda s, c: {}, TaskContext())
    assert info.value.exit_code == NotFound.exit_code


def test_an_init_failure_stops_before_any_task_and_runs_after() -> None:
    held: list[Any] = []
    setup = WorkerSetup(init="tests.unit.process_tasks:bad_init", kwargs={"why": "no LOCK TABLES privilege"},
                        before=lambda: "lock", after=held.append)
    with pytest.raises(InvalidInput, match="no LOCK TABLES privilege"):
        ProcessEngine(workers=2, processes=2, setup=setup).run(specs("test.square", 3), lambda s, c: {},
                                                              TaskContext())
    assert held == ["lock"]  # the driver's lock is released even when a worker cannot start


def test_warm_workers_are_used_once_and_extra_ones_exit() -> None:
    from backupctl.engines.processes import WarmWorkers

    warm = WarmWorkers(3)
    setup = WorkerSetup(init="tests.unit.process_tasks:register", warm=warm)
    out = ProcessEngine(workers=2, processes=2, setup=setup).run(specs("test.square", 6), lambda s, c: {},
                                                                TaskContext())
    assert [r["y"] for r in out] == [i * i for i in range(6)]
    assert {r["pid"] for r in out} <= {p.pid for p in warm.procs[:2]}  # the warm processes did the work
    assert warm.taken
    for p in warm.procs:
        p.join(timeout=10)
        assert not p.is_alive()  # the two used were shut down by the run, the third exited on None
    # a second run with the same setup starts fresh workers (warm ones are used once)
    again = ProcessEngine(workers=2, processes=2, setup=setup).run(specs("test.square", 2), lambda s, c: {},
                                                                  TaskContext())
    assert [r["y"] for r in again] == [0, 1]
    assert not {r["pid"] for r in again} & {p.pid for p in warm.procs}


def test_warm_workers_no_run_took_are_stopped_by_close() -> None:
    from backupctl.engines.processes import WarmWorkers

    warm = WarmWorkers(2)
    warm.close()
    for p in warm.procs:
        p.join(timeout=10)
        assert not p.is_alive() and p.exitcode == 0
    warm.close()  # idempotent


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_both_start_methods_run_the_same_tasks(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing as mp

    monkeypatch.setattr(processes, "mp_context", lambda: mp.get_context(method))
    out = ProcessEngine(workers=2, processes=2, setup=REGISTER).run(specs("test.square", 5), lambda s, c: {},
                                                                   TaskContext())
    assert [r["y"] for r in out] == [0, 1, 4, 9, 16]
    with pytest.raises(NotFound, match="task t3 found nothing"):
        ProcessEngine(workers=2, processes=2, setup=REGISTER).run(specs("test.fail", 5), lambda s, c: {},
                                                                  TaskContext())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is chosen on Linux only")
def test_fork_only_while_the_process_runs_one_thread() -> None:
    if threading.active_count() == 1:
        assert processes.mp_context().get_start_method() == "fork"
    release = threading.Event()
    t = threading.Thread(target=release.wait, daemon=True)
    t.start()
    try:  # a lock that thread holds would stay held in a forked child
        assert processes.mp_context().get_start_method() == "spawn"
    finally:
        release.set()
        t.join()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is chosen on Linux only")
def test_a_forked_worker_makes_its_own_aws_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing as mp

    from backupctl import aws

    parent = aws.AwsContext(endpoint_url="http://127.0.0.1:9").client("s3", "us-east-1")
    assert len(aws._clients) >= 1
    monkeypatch.setattr(processes, "mp_context", lambda: mp.get_context("fork"))
    out = ProcessEngine(workers=1, processes=1, setup=REGISTER).run(specs("test.aws_clients", 1), lambda s, c: {},
                                                                   TaskContext())
    # the cache the child inherited was dropped at the fork: no HTTP connection shared with the parent
    assert out[0]["before"] == 0 and out[0]["after"] == 1
    assert aws.AwsContext(endpoint_url="http://127.0.0.1:9").client("s3", "us-east-1") is parent
