"""engines/processes.py: results in order, progress, errors with their class and exit code, init failures."""

from __future__ import annotations

from typing import Any

import pytest

from backupctl.engines import registry
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
