"""The DynamoDB flow through the real CLI against a moto server over HTTP.

snapshot -> snapshots list/show/verify -> restore (new, upsert, replace,
dry-run), the --json contract, and one clear line + documented exit code for
every kind of bad input, with nothing written.
"""

from __future__ import annotations

import pytest

from backupctl.aws import AwsContext
from tests.integration.helpers import make_table, one_json, python_items, scan_all

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"


def bucket_exists(aws: AwsContext, bucket: str) -> bool:
    names = {b["Name"] for b in aws.client("s3", DST).list_buckets()["Buckets"]}
    return bucket in names


def table_exists(aws: AwsContext, region: str, table: str) -> bool:
    return table in aws.client("dynamodb", region).list_tables()["TableNames"]


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def snap(aws: AwsContext, cli, name: str):  # type: ignore[no-untyped-def]
    """A 1,200-item table in us-east-1 and a snapshot of it in a fresh repository."""
    repo = f"s3://{name}-repo/backups"
    make_table(aws, SRC, name, 1200)
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--json")
    assert r.code == 0, r.err
    return {"table": name, "repo": repo, "json": one_json(r.out)}


def test_snapshot_json_contract_and_listing(aws: AwsContext, cli, snap) -> None:  # type: ignore[no-untyped-def]
    s = snap["json"]
    assert {"snapshot_id", "rows", "bytes", "parts", "digest", "duration_s"} <= set(s)
    assert s["rows"] == 1200 and s["parts"] >= 1 and s["bytes"] > 0 and len(s["digest"]) == 64

    r = cli("snapshots", "list", "--repo", snap["repo"], "--json")
    assert r.code == 0, r.err
    listed = one_json(r.out)
    assert [x["snapshot_id"] for x in listed] == [s["snapshot_id"]]
    assert listed[0]["rows"] == 1200 and listed[0]["digest"] == s["digest"]

    r = cli("snapshots", "list", "--repo", snap["repo"], "--table", "no-such-table", "--json")
    assert r.code == 0 and one_json(r.out) == []

    r = cli("snapshots", "show", s["snapshot_id"], "--repo", snap["repo"], "--json")
    assert r.code == 0, r.err
    m = one_json(r.out)
    assert m["format_version"] == "1.0" and m["source"]["table"] == snap["table"]
    assert m["totals"]["rows"] == 1200 and len(m["parts"]) == s["parts"]
    assert m["location"].startswith(snap["repo"] + "/snapshots/dynamodb.us-east-1.")

    # The snapshot's folder holds schema.json, manifest.json and data/ parts only.
    s3 = aws.client("s3", DST)
    bucket = snap["repo"][5:].split("/")[0]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="backups/snapshots/")["Contents"]]
    rel = sorted(k.split(s["snapshot_id"] + "/")[1] for k in keys)
    assert rel == sorted(["manifest.json", "schema.json"] + [p["key"] for p in m["parts"]])
    # The repository bucket is created private, encrypted and versioned.
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(pab.values())
    enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert enc["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_verify_reads_parts_and_compares_with_live_table(aws: AwsContext, cli, snap) -> None:  # type: ignore[no-untyped-def]
    sid = snap["json"]["snapshot_id"]
    r = cli("snapshots", "verify", sid, "--repo", snap["repo"], "--against-table", snap["table"], "--table-region", SRC)
    assert r.code == 0, r.err
    assert "equal" in r.err
    # Change one item of the source: verify against the table must now fail with exit 5.
    aws.client("dynamodb", SRC).put_item(
        TableName=snap["table"], Item={"pk": {"S": "customer#0000"}, "sk": {"S": "order#000000000"}, "x": {"S": "y"}}
    )
    r = cli("snapshots", "verify", sid, "--repo", snap["repo"], "--against-table", snap["table"], "--table-region", SRC)
    assert r.code == 5
    assert "differs from snapshot" in r.err


def test_restore_new_is_exact_and_refuses_a_non_empty_target(aws: AwsContext, cli, snap) -> None:  # type: ignore[no-untyped-def]
    sid, target = snap["json"]["snapshot_id"], snap["table"] + "-r"
    r = cli("restore", sid, "--to-table", target, "--region", DST, "--repo", snap["repo"], "--json")
    assert r.code == 0, r.err
    res = one_json(r.out)
    assert {"snapshot_id", "target", "rows", "digest", "duration_s"} <= set(res)
    assert res["rows"] == 1200 and res["digest"] == snap["json"]["digest"]
    assert python_items(scan_all(aws, DST, target)) == python_items(scan_all(aws, SRC, snap["table"]))
    # Key schema and capacity come from schema.json.
    d = aws.client("dynamodb", DST).describe_table(TableName=target)["Table"]
    assert [k["AttributeName"] for k in d["KeySchema"]] == ["pk", "sk"]
    assert d["ProvisionedThroughput"]["ReadCapacityUnits"] == 10_000

    # Again into the same, now non-empty table without a mode: refused, exit 4, nothing changed.
    aws.client("dynamodb", DST).put_item(TableName=target, Item={"pk": {"S": "extra"}, "sk": {"S": "x"}})
    r = cli("restore", sid, "--to-table", target, "--region", DST, "--repo", snap["repo"])
    assert r.code == 4
    assert "not empty" in one_error_line(r.err)
    assert len(scan_all(aws, DST, target)) == 1201


def test_restore_upsert_and_replace(aws: AwsContext, cli, snap) -> None:  # type: ignore[no-untyped-def]
    sid, target = snap["json"]["snapshot_id"], snap["table"] + "-u"
    ddb = aws.client("dynamodb", DST)
    ddb.create_table(
        TableName=target,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName=target, Item={"pk": {"S": "extra"}, "sk": {"S": "x"}})
    r = cli("restore", sid, "--to-table", target, "--region", DST, "--repo", snap["repo"], "--mode", "upsert", "--json")
    assert r.code == 0, r.err
    assert len(scan_all(aws, DST, target)) == 1201  # upsert never deletes

    # replace without --yes and without a terminal: refused, nothing deleted.
    r = cli("restore", sid, "--to-table", target, "--region", DST, "--repo", snap["repo"], "--mode", "replace")
    assert r.code == 4 and "not confirmed" in r.err
    assert len(scan_all(aws, DST, target)) == 1201

    r = cli("restore", sid, "--to-table", target, "--region", DST, "--repo", snap["repo"], "--mode", "replace", "--yes", "--json")
    assert r.code == 0, r.err
    assert python_items(scan_all(aws, DST, target)) == python_items(scan_all(aws, SRC, snap["table"]))


def test_restore_dry_run_prints_the_plan_and_writes_nothing(aws: AwsContext, cli, snap) -> None:  # type: ignore[no-untyped-def]
    sid, target = snap["json"]["snapshot_id"], snap["table"] + "-d"
    r = cli("restore", sid, "--to-table", target, "--region", DST, "--repo", snap["repo"], "--dry-run", "--json")
    assert r.code == 0, r.err
    plan = one_json(r.out)
    assert plan["dry_run"] is True and plan["rows"] == 1200 and plan["table_exists"] is False
    assert plan["table_definition"]["KeySchema"][0]["AttributeName"] == "pk"
    assert len(plan["parts"]) == snap["json"]["parts"]
    assert plan["write_budget_wcu_per_s"] == 5000
    assert not table_exists(aws, DST, target)
    r = cli("restore", sid, "--to-table", target, "--region", DST, "--repo", snap["repo"], "--dry-run")
    assert r.code == 0 and "nothing written" in r.err and r.out == ""


def test_on_demand_table_with_max_rcu(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 300, provisioned=False)
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--max-rcu", "50", "--json")
    assert r.code == 0, r.err
    assert one_json(r.out)["rows"] == 300


def test_default_repository_is_per_account_and_region(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 30)
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--json")
    assert r.code == 0, r.err
    sid = one_json(r.out)["snapshot_id"]
    assert bucket_exists(aws, "backupctl-123456789012-us-west-2")
    r = cli("snapshots", "list", "--region", DST, "--table", name, "--json")
    assert [x["snapshot_id"] for x in one_json(r.out)] == [sid]


# -- bad input: one clear line, documented exit code, nothing written --------------


def test_unknown_table(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("snapshot", "--table", "nope-" + name, "--from", SRC, "--to", DST, "--repo", f"s3://{name}-x")
    assert r.code == 3
    assert "table 'nope-" in one_error_line(r.err)
    assert not bucket_exists(aws, f"{name}-x")


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--from", "us-east-1", "--to", "mars-north-7"], 2, "invalid --to region 'mars-north-7'"),
        (["--from", "US_EAST", "--to", "us-west-2"], 2, "invalid --from region 'US_EAST'"),
        (["--from", "us-east-1", "--to", "us-west-2", "--repo", "bucket-without-scheme"], 2, "invalid --repo"),
        (["--from", "us-east-1", "--to", "us-west-2", "--repo", "s3://Bad_Bucket"], 2, "not a valid S3 bucket name"),
        (["--from", "us-east-1", "--to", "us-west-2", "--read-percent", "7"], 2, "--read-percent"),
    ],
)
def test_invalid_arguments(aws: AwsContext, cli, name: str, args: list[str], code: int, fragment: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("snapshot", "--table", name, *args)
    assert r.code == code, r.err
    assert fragment in one_error_line(r.err)


def test_repository_bucket_in_the_wrong_region(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 10)
    aws.client("s3", SRC).create_bucket(Bucket=f"{name}-east")
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", f"s3://{name}-east")
    assert r.code == 2
    assert "is in us-east-1, not us-west-2" in one_error_line(r.err)
    assert aws.client("s3", SRC).list_objects_v2(Bucket=f"{name}-east").get("KeyCount", 0) == 0


def test_unknown_and_malformed_snapshot_ids(cli, snap) -> None:  # type: ignore[no-untyped-def]
    r = cli("restore", "20200101T000000Z-abcdef", "--to-table", "xyz", "--region", DST, "--repo", snap["repo"])
    assert r.code == 3 and "snapshot 20200101T000000Z-abcdef not found" in one_error_line(r.err)
    r = cli("snapshots", "show", "latest", "--repo", snap["repo"])
    assert r.code == 2 and "invalid snapshot id 'latest'" in one_error_line(r.err)
    r = cli("snapshots", "verify", "20200101T000000Z-abcdef", "--repo", snap["repo"])
    assert r.code == 3


def test_missing_credentials(cli, name: str) -> None:  # type: ignore[no-untyped-def]
    env = {
        "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None,
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None,
    }
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, env=env)
    assert r.code == 6
    assert "no AWS credentials" in one_error_line(r.err)


def test_unknown_profile(cli, name: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("--profile", "nope", "snapshot", "--table", name, "--from", SRC, "--to", DST,
            env={"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"})
    assert r.code == 6 and "profile 'nope' not found" in one_error_line(r.err)


def test_missing_repository_for_readers(cli, name: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("snapshots", "list", "--repo", f"s3://{name}-none", "--region", DST)
    assert r.code == 3 and "not found" in one_error_line(r.err)


def test_help_lists_exit_codes(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("restore", "--help", endpoint=False)
    assert r.code == 0 and "Exit codes:" in r.out and "verification failed" in r.out


def test_empty_table_round_trip(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 0)
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--json")
    assert r.code == 0, r.err
    s = one_json(r.out)
    assert (s["rows"], s["parts"]) == (0, 0)
    r = cli("restore", s["snapshot_id"], "--to-table", name + "-r", "--region", DST, "--json")
    assert r.code == 0, r.err
    assert one_json(r.out)["rows"] == 0
    assert table_exists(aws, DST, name + "-r") and scan_all(aws, DST, name + "-r") == []
    r = cli("snapshots", "verify", s["snapshot_id"], "--region", DST, "--against-table", name + "-r")
    assert r.code == 0, r.err
