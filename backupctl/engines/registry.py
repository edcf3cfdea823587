"""Task functions by name: what an engine outside the backupctl process runs for a spec.

The local engine calls the function object the driver hands it (often a
closure holding driver state: MySQL settings with the password in memory,
the consistent-read sessions). An engine that ships tasks to other processes
(``spark``, later ``emr``) cannot ship that state; it ships the spec and a
*name* from this table, and the executor runs the registered function, which
rebuilds everything it needs from the spec (a MySQL password is re-read from
its source on the executor, see ``MySQLSettings.from_dict``).

A spec's ``kind`` is its function's name here, so a job spec needs no other
field. Entries are ``module:function`` strings, imported on first use, so
importing this module costs nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from backupctl.errors import InvalidInput
from backupctl.model import TaskSpec

TASK_FUNCTIONS: dict[str, str] = {
    "dynamodb.export": "backupctl.sources.dynamodb:run_export_task",
    "dynamodb.adopt": "backupctl.sources.dynamodb:run_adopt_task",
    "dynamodb.load": "backupctl.targets.dynamodb:run_load_task",
    "mysql.export": "backupctl.sources.mysql:run_export_task",
    "mysql.increment": "backupctl.sources.mysql:run_increment_task",
    "mysql.digest": "backupctl.sources.mysql:run_digest_task",
    "mysql.load": "backupctl.targets.mysql:run_load_task",
    "mysql.delete": "backupctl.targets.mysql:run_delete_task",
}

TaskFunction = Callable[[TaskSpec, Any], dict[str, Any]]


def resolve(name: str) -> TaskFunction:
    """The registered task function ``name`` (e.g. ``dynamodb.export``)."""
    target = TASK_FUNCTIONS.get(name)
    if target is None:
        raise InvalidInput(f"unknown task function '{name}' (known: {', '.join(sorted(TASK_FUNCTIONS))})")
    module, attr = target.split(":")
    fn: TaskFunction = getattr(importlib.import_module(module), attr)
    return fn


def name_of(fn: Callable[..., Any]) -> str | None:
    """The registered name of ``fn``, or None for a function that is not registered (e.g. a closure)."""
    qual = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"
    for name, target in TASK_FUNCTIONS.items():
        if target == qual:
            return name
    return None


def function_name(spec: TaskSpec, fn: Callable[..., Any] | None = None) -> str:
    """The name an executor runs ``spec`` with: ``fn``'s if registered, else the spec's ``kind``."""
    name = name_of(fn) if fn is not None else None
    name = name or spec.get("kind")
    if not isinstance(name, str) or name not in TASK_FUNCTIONS:
        raise InvalidInput(
            f"task {spec.get('task_id')!r} of kind {spec.get('kind')!r} has no registered task function: "
            "it can run only on the local engine"
        )
    return name
