"""Engines run a list of TaskSpecs: ``local`` (a thread pool), ``spark`` (one Spark partition per task).

An engine never interprets a task: it calls the task's function with the spec
and hands the result back to the driver, which commits. ``emr`` is planned
(issue 4, next increment); ``auto`` is ``local`` until its rule is measured
(docs/SCALING.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from backupctl.engines.local import LocalEngine, TaskContext, TaskFn
from backupctl.model import TaskSpec

__all__ = ["ENGINES", "Engine", "LocalEngine", "TaskContext", "configure", "get_engine"]

ENGINES = ("local", "spark", "emr", "auto")


class Engine(Protocol):
    name: str

    def run(
        self,
        tasks: Sequence[TaskSpec],
        fn: TaskFn,
        ctx: TaskContext,
        on_result: Callable[[TaskSpec, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]: ...


# Process-wide engine settings the CLI sets from its options (``--spark-master``).
_settings: dict[str, Any] = {"spark_master": None}


def configure(spark_master: str | None = None) -> None:
    """Set the Spark master later ``get_engine("spark", ...)`` calls use (None: local[*])."""
    if spark_master is not None:
        from backupctl.engines.spark import check_master

        check_master(spark_master)
    _settings["spark_master"] = spark_master


def get_engine(name: str, workers: int, spark_master: str | None = None) -> Engine:
    from backupctl.errors import InvalidInput

    if name in ("local", "auto"):
        return LocalEngine(workers=workers)
    if name == "spark":
        from backupctl.engines.spark import DEFAULT_MASTER, SparkEngine

        return SparkEngine(master=spark_master or _settings["spark_master"] or DEFAULT_MASTER, workers=workers)
    if name == "emr":
        raise InvalidInput("engine 'emr' is not available yet (available: local, spark, auto)")
    raise InvalidInput(f"engine '{name}' is not available (available: local, spark, auto)")
