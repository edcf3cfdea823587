"""Engines run a list of TaskSpecs: ``local`` (a thread pool), ``spark`` (one Spark partition per task).

An engine never interprets a task: it calls the task's function with the spec
and hands the result back to the driver, which commits. ``emr`` runs the
same job as a ``spark-submit`` step on an EMR cluster (``engines/emr.py``);
``auto`` picks by the measured rule in ``auto_choice`` (docs/SCALING.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from backupctl.engines.local import LocalEngine, TaskContext, TaskFn
from backupctl.model import TaskSpec

__all__ = ["ENGINES", "Engine", "LocalEngine", "TaskContext", "configure", "configure_emr", "get_engine",
           "local_or_processes"]

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


# Process-wide engine settings the CLI sets from its options (``--spark-master``, the EMR options).
_settings: dict[str, Any] = {"spark_master": None, "emr": None, "on_event": None, "processes": None}


def configure(spark_master: str | None = None) -> None:
    """Set the Spark master later ``get_engine("spark", ...)`` calls use (None: local[*])."""
    if spark_master is not None:
        from backupctl.engines.spark import check_master

        check_master(spark_master)
    _settings["spark_master"] = spark_master


def configure_emr(settings: Any = None, on_event: Callable[[str], None] | None = None) -> None:
    """Set the EMR settings (``EmrSettings``, None: defaults) and where its progress lines go."""
    _settings["emr"] = settings.check() if settings is not None else None
    _settings["on_event"] = on_event


def get_engine(name: str, workers: int, spark_master: str | None = None) -> Engine:
    from backupctl.errors import InvalidInput

    if name in ("local", "auto"):
        return LocalEngine(workers=workers)
    if name == "spark":
        from backupctl.engines.spark import DEFAULT_MASTER, SparkEngine

        return SparkEngine(master=spark_master or _settings["spark_master"] or DEFAULT_MASTER, workers=workers)
    if name == "emr":
        from backupctl.engines.emr import EmrEngine, EmrSettings

        return EmrEngine(_settings["emr"] or EmrSettings(), workers=workers, on_event=_settings["on_event"])
    raise InvalidInput(f"engine '{name}' is not available (available: {', '.join(ENGINES)})")


def local_or_processes(name: str, workers: int, processes: int, tasks: int, setup: Any = None) -> Engine:
    """``get_engine(name)``, except that the local engine runs ``processes`` worker processes when asked
    (``--processes N``) and there are at least two tasks (engines/processes.py)."""
    if name in ("local", "auto") and processes > 1 and tasks > 1:
        from backupctl.engines.processes import ProcessEngine

        return ProcessEngine(workers, processes, setup)
    return get_engine(name, workers)


def configure_processes(processes: int | None) -> None:
    """The ``--processes`` later snapshots/restores use when their options say None (None: the auto rule)."""
    _settings["processes"] = None if processes is None else max(1, int(processes))


# --engine auto (docs/SCALING.md, measured with bench/engines.py on 2 cores):
# * A MySQL snapshot is CPU-bound Python per row: worker processes beat threads (by ~10% on 2 cores
#   shared with the database and moto; more with more cores) once a table is big enough to pay for
#   starting them (a fork when the driver runs one thread, else ~1 s of spawn + imports: ADR 0017);
#   below that, threads. A MySQL restore ("mysql-load") gained
#   nothing from processes on 2 cores (its read-back verification runs in the driver), so it keeps threads
#   unless --processes asks.
# * DynamoDB on one machine is I/O-bound (and capacity-bound): threads.
# * Spark on the same machine adds a JVM start (~8-14 s) and no cores: only a Spark *cluster*
#   (a non-local --spark-master) is worth it, for tables whose local run would take many minutes.
AUTO_PROCESS_MIN_ROWS = 300_000
AUTO_SPARK_MIN_ROWS = 20_000_000


def auto_choice(kind: str, rows: int | None, tasks: int) -> tuple[str, int, str]:
    """(engine, processes, why) for ``--engine auto`` given the planned work."""
    import os

    n = int(rows or 0)
    master = _settings["spark_master"]
    if master and not (master == "local" or master.startswith("local[")) and n >= AUTO_SPARK_MIN_ROWS:
        return "spark", 1, f"~{n:,} rows >= {AUTO_SPARK_MIN_ROWS:,} and a Spark cluster (--spark-master {master})"
    cores = os.cpu_count() or 1
    if kind == "mysql" and n >= AUTO_PROCESS_MIN_ROWS and tasks >= 2 and cores > 1:
        procs = min(cores, tasks, 8)
        return "local", procs, (f"~{n:,} rows >= {AUTO_PROCESS_MIN_ROWS:,}: local engine, {procs} worker processes "
                                "(CPU-bound rows)")
    why = ("I/O-bound" if kind == "dynamodb" else "restore" if kind == "mysql-load"
           else f"~{n:,} rows < {AUTO_PROCESS_MIN_ROWS:,}")
    return "local", 1, f"{why}: local engine, threads"


def explicit_processes(processes: int | None) -> int | None:
    """The worker processes a run was asked for: ``processes`` if given, else ``--processes``, else None."""
    return processes if processes is not None else _settings["processes"]


def resolve_engine(engine: str, processes: int | None, kind: str, rows: int | None,
                   tasks: int) -> tuple[str, int, str | None]:
    """(engine, worker processes, why auto chose) for a run: ``--engine auto`` resolved by ``auto_choice``;
    the local engine's processes from ``processes``, else ``--processes``, else the same rule (worker
    processes for big MySQL tables, threads otherwise)."""
    auto_name, auto_procs, auto_why = auto_choice(kind, rows, tasks)
    name, why = (auto_name, auto_why) if engine == "auto" else (engine, None)
    explicit = explicit_processes(processes)
    procs = explicit if explicit is not None else auto_procs
    return name, (procs if name == "local" and tasks > 1 else 1), why
