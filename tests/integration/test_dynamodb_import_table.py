"""DynamoDB's own ImportTable reads a backupctl snapshot's data/ prefix as it is.

This proves the parts are DYNAMODB_JSON + GZIP and that nothing but data lives
under data/ (ImportTable reads every object under the prefix).
"""

from __future__ import annotations

import time

import pytest

from backupctl.aws import AwsContext
from tests.integration.helpers import make_table, one_json, python_items, scan_all

pytestmark = pytest.mark.integration


def test_import_table_loads_a_snapshot(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, "us-east-1", name, 500)
    repo = f"s3://{name}-repo/p"
    r = cli("snapshot", "--table", name, "--from", "us-east-1", "--to", "us-west-2", "--repo", repo, "--json")
    assert r.code == 0, r.err
    sid = one_json(r.out)["snapshot_id"]
    loc = one_json(cli("snapshots", "show", sid, "--repo", repo, "--json").out)["location"]
    bucket, _, prefix = loc[len("s3://"):].partition("/")
    ddb = aws.client("dynamodb", "us-west-2")
    resp = ddb.import_table(
        S3BucketSource={"S3Bucket": bucket, "S3KeyPrefix": prefix + "data/"},
        InputFormat="DYNAMODB_JSON",
        InputCompressionType="GZIP",
        TableCreationParameters={
            "TableName": name + "-imported",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"},
                                     {"AttributeName": "sk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        },
    )
    arn = resp["ImportTableDescription"]["ImportArn"]
    deadline = time.monotonic() + 60
    while True:
        d = ddb.describe_import(ImportArn=arn)["ImportTableDescription"]
        if d["ImportStatus"] not in ("IN_PROGRESS", "CANCELLING"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert d["ImportStatus"] == "COMPLETED", d
    assert python_items(scan_all(aws, "us-west-2", name + "-imported")) == python_items(scan_all(aws, "us-east-1", name))
