"""The self-contained demo: seed a table in us-east-1, snapshot to us-west-2, restore, verify.

Also the home of the sample-data generator used by the demo and the benchmarks.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

from backupctl.aws import AwsContext
from backupctl.embedded import DUMMY_CREDENTIALS, EmbeddedEndpoint
from backupctl.restore import DynamoRestoreOptions, restore_dynamodb
from backupctl.retry import DEFAULT_POLICY
from backupctl.snapshot import DynamoSnapshotOptions, snapshot_dynamodb
from backupctl.targets.dynamodb import write_batches
from backupctl.verify import verify_against_table, verify_snapshot

SOURCE_REGION = "us-east-1"
TARGET_REGION = "us-west-2"


def sample_item(i: int, rng: random.Random, pad: int = 0) -> dict[str, Any]:
    """An order-like item using most DynamoDB types; ``pad`` adds a string of that many bytes."""
    item: dict[str, Any] = {
        "pk": {"S": f"customer#{i % 997:04d}"},
        "sk": {"S": f"order#{i:09d}"},
        "amount": {"N": f"{rng.randint(-10**6, 10**6)}.{rng.randint(0, 99):02d}"},
        "qty": {"N": str(rng.randint(1, 1000))},
        "paid": {"BOOL": rng.random() < 0.5},
        "tags": {"SS": sorted({rng.choice(["new", "gift", "vip", "eu", "us", "ä→✓"]) for _ in range(3)})},
        "lines": {"L": [{"M": {"sku": {"S": f"sku-{rng.randint(1, 9999)}"}, "n": {"N": str(rng.randint(1, 9))}}} for _ in range(2)]},
        "blob": {"B": rng.randbytes(16)},
        "note": {"NULL": True} if i % 7 == 0 else {"S": ""},
    }
    if pad:
        item["pad"] = {"S": "x" * pad}
    return item


def sample_items(n: int, seed: int = 42, pad: int = 0) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for i in range(n):
        yield sample_item(i, rng, pad)


def create_sample_table(aws: AwsContext, region: str, table: str, provisioned: bool = True) -> None:
    ddb = aws.client("dynamodb", region)
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
    }
    if provisioned:
        kwargs["BillingMode"] = "PROVISIONED"
        kwargs["ProvisionedThroughput"] = {"ReadCapacityUnits": 10_000, "WriteCapacityUnits": 10_000}
    else:
        kwargs["BillingMode"] = "PAY_PER_REQUEST"
    ddb.create_table(**kwargs)
    ddb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


def load_items(aws: AwsContext, region: str, table: str, items: Iterator[dict[str, Any]]) -> int:
    ddb = aws.client("dynamodb", region)
    n = 0
    batch: list[dict[str, Any]] = []
    for it in items:
        batch.append({"PutRequest": {"Item": it}})
        if len(batch) == 25:
            write_batches(ddb, table, batch, None, [1.0] * 25, f"seeding {table}", None, DEFAULT_POLICY)
            n += len(batch)
            batch = []
    if batch:
        write_batches(ddb, table, batch, None, [1.0] * len(batch), f"seeding {table}", None, DEFAULT_POLICY)
        n += len(batch)
    return n


def run_demo(
    endpoint_url: str | None,
    items: int = 5_000,
    progress_factory: Callable[[str, int | None], Any] | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Run the whole flow; start an embedded endpoint when none is given."""
    started = time.monotonic()
    with ExitStack() as stack:
        if endpoint_url is None:
            say("starting the embedded AWS endpoint (moto server) on loopback")
            endpoint_url = stack.enter_context(EmbeddedEndpoint()).url
            for k, v in DUMMY_CREDENTIALS.items():
                os.environ.setdefault(k, v)
        aws = AwsContext(endpoint_url=endpoint_url)
        table = f"demo-orders-{int(time.time())}"
        restored = f"{table}-restored"
        say(f"seeding {items:,} items into {table} in {SOURCE_REGION}")
        create_sample_table(aws, SOURCE_REGION, table)
        load_items(aws, SOURCE_REGION, table, sample_items(items))
        snap = snapshot_dynamodb(
            aws, DynamoSnapshotOptions(table=table, source_region=SOURCE_REGION, target_region=TARGET_REGION),
            progress_factory=progress_factory, on_event=say,
        )
        m = snap.manifest
        report = verify_snapshot(aws, TARGET_REGION, m.id)
        res = restore_dynamodb(
            aws, DynamoRestoreOptions(snapshot_id=m.id, table=restored, region=TARGET_REGION),
            progress_factory=progress_factory, on_event=say,
        )
        live = verify_against_table(aws, TARGET_REGION, m.id, restored, TARGET_REGION)
        source_live = verify_against_table(aws, TARGET_REGION, m.id, table, SOURCE_REGION)
        return {
            "endpoint": endpoint_url,
            "source": {"table": table, "region": SOURCE_REGION, "items": items},
            "snapshot": snap.to_json(),
            "verify": {"ok": report["ok"], "parts_checked": report["parts_checked"]},
            "restore": res,
            "restored_equals_snapshot": live["equal"],
            "source_equals_snapshot": source_live["equal"],
            "duration_s": round(time.monotonic() - started, 3),
        }
