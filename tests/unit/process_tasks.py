"""Task functions the process-engine tests register (spawned workers import them by name)."""

from __future__ import annotations

import os
from typing import Any

from backupctl.engines import registry
from backupctl.errors import InvalidInput, NotFound

FUNCTIONS = {"test.square": "tests.unit.process_tasks:square", "test.fail": "tests.unit.process_tasks:fail",
             "test.aws_clients": "tests.unit.process_tasks:aws_clients"}


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


def aws_clients(spec: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """How many cached AWS clients this worker holds before and after making its own."""
    from backupctl import aws

    before = len(aws._clients)
    client = aws.AwsContext(endpoint_url="http://127.0.0.1:9").client("s3", "us-east-1")
    return {"before": before, "client_id": id(client), "after": len(aws._clients), "pid": os.getpid()}
