"""Engines run a list of TaskSpecs: ``local`` (a thread pool) here; Spark and EMR later.

An engine never interprets a task: it calls the task's function with the spec
and hands the result back to the driver, which commits.
"""

from backupctl.engines.local import LocalEngine, TaskContext

__all__ = ["LocalEngine", "TaskContext", "get_engine"]


def get_engine(name: str, workers: int) -> LocalEngine:
    from backupctl.errors import InvalidInput

    if name in ("local", "auto"):
        return LocalEngine(workers=workers)
    raise InvalidInput(f"engine '{name}' is not available yet (available: local)")
