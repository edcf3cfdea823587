"""Loading never drops items: unprocessed items are re-sent, and exhaustion fails loudly."""

from __future__ import annotations

from typing import Any
from unittest import mock

import boto3
import pytest
from moto import mock_aws

from backupctl.aws import AwsContext
from backupctl.engines import TaskContext
from backupctl.errors import DataPathError
from backupctl.retry import RetryPolicy
from backupctl.targets.dynamodb import create_request, write_batches

FAST = RetryPolicy(max_attempts=5, initial_s=0.001, max_backoff_s=0.005, deadline_s=10)


@pytest.fixture
def table() -> Any:
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-west-2")
        ddb.create_table(
            TableName="t", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST",
        )
        yield ddb


def puts(n: int) -> list[dict[str, Any]]:
    return [{"PutRequest": {"Item": {"pk": {"S": f"k{i}"}, "v": {"N": str(i)}}}} for i in range(n)]


def test_unprocessed_items_are_resent_until_written(table: Any) -> None:
    real = table.batch_write_item
    calls = []

    def flaky(RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        reqs = RequestItems["t"]
        calls.append(len(reqs))
        if len(calls) <= 2 and len(reqs) > 1:  # the first two calls write only the first item
            real(RequestItems={"t": reqs[:1]})
            return {"UnprocessedItems": {"t": reqs[1:]}}
        return real(RequestItems=RequestItems)

    with mock.patch.object(table, "batch_write_item", side_effect=flaky):
        write_batches(table, "t", puts(25), None, [1.0] * 25, "part x", TaskContext(), FAST)
    assert calls == [25, 24, 23]
    assert table.scan(TableName="t", Select="COUNT")["Count"] == 25


def test_exhausted_unprocessed_items_fail_and_count_what_was_not_written(table: Any) -> None:
    def never(RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        return {"UnprocessedItems": RequestItems}

    with mock.patch.object(table, "batch_write_item", side_effect=never):
        with pytest.raises(DataPathError, match=r"part data/part-00003-0000.json.gz: 25 items not written"):
            write_batches(table, "t", puts(25), None, [1.0] * 25, "part data/part-00003-0000.json.gz", TaskContext(), FAST)


def test_create_request_from_schema_keeps_indexes_and_capacity() -> None:
    schema = {
        "key_schema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "attribute_definitions": [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "g", "AttributeType": "N"}],
        "billing_mode": "PROVISIONED",
        "provisioned_throughput": {"ReadCapacityUnits": 7, "WriteCapacityUnits": 3},
        "global_secondary_indexes": [{"IndexName": "byg", "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                                      "Projection": {"ProjectionType": "ALL"},
                                      "ProvisionedThroughput": {"ReadCapacityUnits": 2, "WriteCapacityUnits": 2}}],
        "local_secondary_indexes": [],
        "tags": [{"Key": "a", "Value": "b"}],
        "deletion_protection": True,
    }
    req = create_request(schema, "copy")
    assert req["TableName"] == "copy"
    assert req["ProvisionedThroughput"] == {"ReadCapacityUnits": 7, "WriteCapacityUnits": 3}
    assert req["GlobalSecondaryIndexes"][0]["ProvisionedThroughput"]["ReadCapacityUnits"] == 2
    assert req["Tags"] == [{"Key": "a", "Value": "b"}] and req["DeletionProtectionEnabled"] is True
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-west-2")
        ddb.create_table(**req)
        d = ddb.describe_table(TableName="copy")["Table"]
        assert d["GlobalSecondaryIndexes"][0]["IndexName"] == "byg"


def test_aws_context_is_serialisable() -> None:
    a = AwsContext(endpoint_url="http://127.0.0.1:5000", profile=None)
    assert AwsContext.from_dict(a.to_dict()) == a
