"""Helpers for integration tests against the moto server."""

from __future__ import annotations

import json
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from backupctl.aws import AwsContext
from backupctl.demo import create_sample_table, load_items, sample_items


def make_table(aws: AwsContext, region: str, table: str, items: int, provisioned: bool = True, pad: int = 0) -> None:
    create_sample_table(aws, region, table, provisioned=provisioned)
    load_items(aws, region, table, sample_items(items, pad=pad))


def scan_all(aws: AwsContext, region: str, table: str) -> list[dict[str, Any]]:
    ddb = aws.client("dynamodb", region)
    out: list[dict[str, Any]] = []
    kw: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        r = ddb.scan(**kw)
        out.extend(r["Items"])
        if "LastEvaluatedKey" not in r:
            return out
        kw["ExclusiveStartKey"] = r["LastEvaluatedKey"]


def python_items(items: list[dict[str, Any]], keys: tuple[str, ...] = ("pk", "sk")) -> dict[tuple, dict[str, Any]]:
    """Items as Python values (Decimal numbers, sets, Binary), indexed by key."""
    d = TypeDeserializer()
    out = {}
    for it in items:
        py = {k: d.deserialize(v) for k, v in it.items()}
        out[tuple(py[k] for k in keys)] = py
    return out


def one_json(text: str) -> Any:
    """stdout must be exactly one JSON document."""
    return json.loads(text)


def one_error_line(err: str) -> str:
    """stderr must be exactly one ``error: `` line (after any progress output), no traceback."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    return lines[0]
