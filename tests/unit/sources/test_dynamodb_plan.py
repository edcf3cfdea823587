"""Planning a DynamoDB export: segment count and capacity budget."""

from __future__ import annotations

import pytest

from backupctl.aws import AwsContext
from backupctl.repository import RepoURI
from backupctl.sources.dynamodb import capacity_budget, choose_segments, plan_export, table_schema

GIB = 1 << 30


def desc(items: int = 0, size: int = 0, rcu: int = 0, wcu: int = 0, on_demand: bool = False) -> dict:
    d = {"ItemCount": items, "TableSizeBytes": size, "ProvisionedThroughput": {"ReadCapacityUnits": rcu, "WriteCapacityUnits": wcu}}
    if on_demand:
        d["BillingModeSummary"] = {"BillingMode": "PAY_PER_REQUEST"}
    return d


@pytest.mark.parametrize(
    ("d", "budget", "workers", "distributed", "expected"),
    [
        (desc(items=0), None, 8, False, 1),  # empty table
        (desc(items=5_000), 5_000, 8, False, 3),  # small table: no tiny segments
        (desc(items=100_000), None, 8, False, 8),  # fill the workers
        (desc(items=100_000), 5_000, 8, False, 8),  # local engine: budget adds no segments
        (desc(items=100_000), 5_000, 8, True, 50),  # distributed: one segment per 100 RCU of budget
        (desc(items=10_000_000, size=300 * GIB), 100, 8, False, 300),  # one per GiB
        (desc(items=10**12, size=10**6 * GIB * 2), None, 8, False, 1_000_000),  # clamped
    ],
)
def test_choose_segments(d: dict, budget: float | None, workers: int, distributed: bool, expected: int) -> None:
    assert choose_segments(d, budget, workers, distributed) == expected


def test_capacity_budget() -> None:
    assert capacity_budget(desc(rcu=1000), 0.5, None, "read") == 500
    assert capacity_budget(desc(wcu=40), 0.25, None, "write") == 10
    assert capacity_budget(desc(rcu=1000), 0.5, 123, "read") == 123  # explicit wins
    assert capacity_budget(desc(on_demand=True), 0.5, None, "read") is None  # never a made-up 40,000
    assert capacity_budget(desc(on_demand=True), 0.5, 300, "read") == 300


def test_plan_is_json_serialisable_with_deterministic_tasks() -> None:
    import json

    kw = dict(aws=AwsContext(endpoint_url="http://127.0.0.1:1"), region="us-east-1", table="t",
              repo=RepoURI("b", "p/"), repo_region="us-west-2", snapshot_prefix="snapshots/x/1/",
              segments=4, read_budget=400.0, concurrency=2)
    a, b = plan_export(**kw), plan_export(**kw)
    assert json.loads(json.dumps(a)) == a == b
    assert [t["task_id"] for t in a] == ["seg-00000", "seg-00001", "seg-00002", "seg-00003"]
    assert all(t["read_rate"] == 200.0 for t in a)


def test_schema_records_what_recreating_needs() -> None:
    d = {
        "TableName": "t", "TableArn": "arn:x", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingModeSummary": {"BillingMode": "PAY_PER_REQUEST"},
        "GlobalSecondaryIndexes": [{"IndexName": "g", "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
                                    "Projection": {"ProjectionType": "KEYS_ONLY"}}],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        "SSEDescription": {"Status": "ENABLED", "SSEType": "KMS", "KMSMasterKeyArn": "arn:k"},
        "DeletionProtectionEnabled": True,
        "_ttl": {"AttributeName": "exp", "TimeToLiveStatus": "ENABLED"},
        "_tags": [{"Key": "team", "Value": "data"}],
    }
    s = table_schema(d)
    assert s["billing_mode"] == "PAY_PER_REQUEST" and s["provisioned_throughput"] is None
    assert s["global_secondary_indexes"][0]["IndexName"] == "g"
    assert s["ttl"] == {"attribute_name": "exp", "enabled": True}
    assert s["stream_specification"]["StreamViewType"] == "NEW_IMAGE"
    assert s["sse"]["sse_type"] == "KMS" and s["deletion_protection"] is True
    assert s["tags"] == [{"Key": "team", "Value": "data"}]
