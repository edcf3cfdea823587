"""--method export: a native point-in-time export adopted as a snapshot.

DynamoDB writes the export into the repository bucket in the target region;
backupctl reads each exported file once (count, digest, sha256) and copies it
to its part key. The result must be indistinguishable from a scan snapshot:
same digest, exact restore, ImportTable-compatible data/ prefix.
"""

from __future__ import annotations

from typing import Any

import pytest

from backupctl.aws import AwsContext
from tests.integration.helpers import make_table, one_json, python_items, scan_all

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"

TRICKY: list[dict[str, Any]] = [
    {"pk": {"S": "customer#x"}, "sk": {"S": "a"}, "b": {"B": b"\x00\x01\x00\xff"}, "bs": {"BS": [b"\x00", b"\xff\x00"]},
     "n": {"N": "12345678901234567890123456789012345678"}, "ns": {"NS": ["-1E-130", "9.9999999999999999999999999999999999999E+125"]},
     "deep": {"M": {"l": {"L": [{"M": {"x": {"L": [{"NULL": True}, {"BOOL": False}, {"S": "😀"}]}}}]}}},
     "empty": {"M": {}}, "el": {"L": []}, "es": {"S": ""}},
]


def enable_pitr(aws: AwsContext, table: str) -> None:
    aws.client("dynamodb", SRC).update_continuous_backups(
        TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
    )


def test_export_method_equals_scan_and_restores_exactly(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 800)
    for it in TRICKY:
        aws.client("dynamodb", SRC).put_item(TableName=name, Item=it)
    enable_pitr(aws, name)
    repo = f"s3://{name}-repo"
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--method", "export", "--json")
    assert r.code == 0, r.err
    exp = one_json(r.out)
    assert exp["rows"] == 801 and "native point-in-time export" in r.err
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--method", "scan", "--json")
    assert r.code == 0, r.err
    scan = one_json(r.out)
    assert scan["digest"] == exp["digest"] and scan["rows"] == exp["rows"]

    m = one_json(cli("snapshots", "show", exp["snapshot_id"], "--repo", repo, "--json").out)
    assert m["read"]["method"] == "export"
    # Only manifest, schema and data parts remain: the export's staging files are gone.
    s3 = aws.client("s3", DST)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=f"{name}-repo", Prefix="snapshots/")["Contents"]]
    mine = sorted(k.split(exp["snapshot_id"] + "/")[1] for k in keys if exp["snapshot_id"] in k)
    assert mine == sorted(["manifest.json", "schema.json"] + [p["key"] for p in m["parts"]])

    r = cli("snapshots", "verify", exp["snapshot_id"], "--repo", repo, "--against-table", name, "--table-region", SRC)
    assert r.code == 0, r.err
    r = cli("restore", exp["snapshot_id"], "--to-table", name + "-r", "--region", DST, "--repo", repo, "--json")
    assert r.code == 0, r.err
    assert python_items(scan_all(aws, DST, name + "-r")) == python_items(scan_all(aws, SRC, name))


def test_export_method_needs_pitr(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 5)
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", f"s3://{name}-repo", "--method", "export")
    assert r.code == 2
    assert "needs point-in-time recovery" in r.err and "Traceback" not in r.err
    names = {b["Name"] for b in aws.client("s3", DST).list_buckets()["Buckets"]}
    assert f"{name}-repo" not in names  # nothing written


def test_auto_method_exports_only_with_pitr(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 20)
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--method", "auto", "--json")
    assert r.code == 0 and "parallel scan" in r.err
    enable_pitr(aws, name)
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--method", "auto", "--json")
    assert r.code == 0 and "native point-in-time export" in r.err
    assert one_json(r.out)["rows"] == 20
