"""Corruption (in-process moto): `snapshots verify` names a flipped, truncated or missing part, and a
restore refuses a corrupt snapshot before it writes anything (the target table is never created or
changed)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from backupctl.aws import AwsContext
from backupctl.demo import create_sample_table, load_items, sample_items
from backupctl.errors import FormatError
from backupctl.restore import DynamoRestoreOptions, restore_dynamodb
from backupctl.snapshot import DynamoSnapshotOptions, snapshot_dynamodb
from backupctl.verify import verify_snapshot

SRC, DST = "us-east-1", "us-west-2"
BUCKET = "corrupt-repo"
REPO = f"s3://{BUCKET}"


@pytest.fixture
def snap() -> Iterator[dict[str, Any]]:
    with mock_aws():
        aws = AwsContext()
        create_sample_table(aws, SRC, "orders")
        load_items(aws, SRC, "orders", sample_items(200))
        r = snapshot_dynamodb(aws, DynamoSnapshotOptions(table="orders", source_region=SRC, target_region=DST,
                                                         repo_uri=REPO, part_max_bytes=4000))
        m = r.manifest
        assert len(m.parts) >= 3
        prefix = f"snapshots/dynamodb.us-east-1.orders/{m.id}/"
        yield {"aws": aws, "s3": boto3.client("s3", region_name=DST), "id": m.id, "prefix": prefix,
               "part": m.parts[1].key, "key": prefix + m.parts[1].key}


def rewrite(s: dict[str, Any], change: Any, careful: bool = False) -> None:
    """Replace the part with changed bytes; ``careful``: keep its metadata and give S3 the new bytes' SHA-256."""
    s3 = s["s3"]
    obj = s3.get_object(Bucket=BUCKET, Key=s["key"])
    body = change(bytearray(obj["Body"].read()))
    extra = {"Metadata": obj["Metadata"], "ChecksumAlgorithm": "SHA256"} if careful else {}
    s3.put_object(Bucket=BUCKET, Key=s["key"], Body=bytes(body), **extra)


def flip(b: bytearray) -> bytearray:
    b[len(b) // 2] ^= 0x01
    return b


def tables(region: str = DST) -> list[str]:
    return list(boto3.client("dynamodb", region_name=region).list_tables()["TableNames"])


def restore(s: dict[str, Any], **kw: Any) -> dict[str, Any]:
    opts = {"snapshot_id": s["id"], "table": "copy", "region": DST, "repo_uri": REPO, **kw}
    return restore_dynamodb(s["aws"], DynamoRestoreOptions(**opts))


@pytest.mark.parametrize(
    ("damage", "verify_says", "restore_says"),
    [
        ("flip", "sha256", r"has no SHA-256 checksum in S3, which backupctl wrote it with \(replaced"),
        ("flip-carefully", "sha256", r"has sha256 [0-9a-f]{16}\.\.\. in S3, the manifest says [0-9a-f]{16}\.\.\. \(corrupt"),
        ("truncate", "sha256", r"is \d+ bytes, the manifest says \d+ \(truncated or replaced\)"),
        ("delete", "is missing", r"is missing \(s3://corrupt-repo/snapshots/"),
    ],
)
def test_damaged_part_is_named_by_verify_and_refused_by_restore_before_any_write(
    snap: dict[str, Any], damage: str, verify_says: str, restore_says: str,
) -> None:
    s = snap
    if damage == "delete":
        s["s3"].delete_object(Bucket=BUCKET, Key=s["key"])
    elif damage == "truncate":
        rewrite(s, lambda b: b[:-7], careful=True)
    else:
        rewrite(s, flip, careful=damage == "flip-carefully")

    report = verify_snapshot(s["aws"], DST, s["id"], REPO)
    assert not report["ok"]
    assert [p for p in report["problems"] if p.startswith(f"part {s['part']}") and verify_says in p], report

    with pytest.raises(FormatError) as e:
        restore(s)
    msg = e.value.message
    assert msg.startswith(f"part {s['part']} of snapshot {s['id']} ") and "\n" not in msg
    assert msg.endswith("restore refused before writing anything")
    assert re.search(restore_says, msg), msg
    assert e.value.exit_code == 5
    assert "copy" not in tables()  # the table was never created


def test_corrupt_snapshot_leaves_an_existing_table_unchanged(snap: dict[str, Any]) -> None:
    s = snap
    restore(s)  # a good copy first
    ddb = boto3.client("dynamodb", region_name=DST)
    ddb.put_item(TableName="copy", Item={"pk": {"S": "extra"}, "sk": {"S": "1"}})
    rewrite(s, flip)
    for mode in ("replace", "upsert"):
        with pytest.raises(FormatError, match=f"part {s['part']} of snapshot"):
            restore(s, mode=mode, yes=True)
        assert ddb.scan(TableName="copy", Select="COUNT")["Count"] == 201  # nothing emptied, nothing written


def test_dry_run_does_not_precheck_and_intact_snapshots_pass(snap: dict[str, Any]) -> None:
    s = snap
    assert restore(s)["rows"] == 200
    assert restore(s, table="copy2", dry_run=True)["dry_run"] is True


def test_snapshots_written_before_s3_checksums_are_checked_by_their_sha256_metadata(snap: dict[str, Any]) -> None:
    s, s3 = snap, snap["s3"]
    mkey = s["prefix"] + "manifest.json"
    doc = json.loads(s3.get_object(Bucket=BUCKET, Key=mkey)["Body"].read())
    assert doc.pop("part_checksum") == "sha256"
    s3.put_object(Bucket=BUCKET, Key=mkey, Body=json.dumps(doc).encode())
    obj = s3.get_object(Bucket=BUCKET, Key=s["key"])
    s3.put_object(Bucket=BUCKET, Key=s["key"], Body=obj["Body"].read(), Metadata=obj["Metadata"])  # CRC32 only
    assert restore(s)["rows"] == 200  # the legacy path: size and sha256 metadata agree
    rewrite(s, flip)
    with pytest.raises(FormatError, match=r"was replaced: it carries no sha256, the manifest says"):
        restore(s, table="copy2")
    assert "copy2" not in tables()
