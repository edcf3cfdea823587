"""Task functions the process-engine tests register (spawned workers import them by name)."""

from __future__ import annotations

import os
from typing import Any

from backupctl.engines import registry
from backupctl.errors import InvalidInput, NotFound

FUNCTIONS = {"test.square": "tests.unit.process_tasks:square", "test.fail": "tests.unit.process_tasks:fail"}


def register() -> None:
    """Worker init (a spawned worker imports the registry afresh, without the test's entries)."""
    registry.TASK_FUNCTIONS.update(FUNCTIONS)


def square(spec: dict[str, Any], ctx: Any) -> dict[str, Any]:
    ctx.advance(1, 0)
    return {"y": spec["x"] * spec["x"], "pid": os.getpid()}


def fail(spec: dict[str, Any], ctx: Any) -> dict[str, Any]:
    if spec["task_id"] == "t3":
        raise NotFound("task t3 found nothing")
    return {}


def bad_init(why: str) -> None:
    raise InvalidInput(why)
