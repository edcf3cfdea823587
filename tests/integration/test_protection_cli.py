"""Immutability, encryption, public buckets and `iam-policy` through the real CLI on the moto server."""

from __future__ import annotations

import json

import pytest

from backupctl import iam
from backupctl.aws import AwsContext
from tests.integration.helpers import make_table, one_json

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("error: ")
    return lines[0]


def keys(aws: AwsContext, bucket: str, prefix: str = "") -> list[str]:
    return [o["Key"] for o in aws.client("s3", DST).list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def test_kms_and_object_lock_snapshot_then_prune_respects_the_lock(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 300)
    bucket, repo = f"{name}-repo", f"s3://{name}-repo"
    key = aws.client("kms", DST).create_key(Description=name)["KeyMetadata"]["Arn"]
    base = ["snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--json"]
    r = cli(*base, "--kms-key-id", key, "--object-lock-days", "2", "--object-lock-mode", "compliance",
            "--part-size-mb", "1")
    assert r.code == 0, r.err
    locked = one_json(r.out)
    assert locked["encryption"] == {"algorithm": "aws:kms", "kms_key_id": key}
    assert locked["object_lock"]["mode"] == "COMPLIANCE" and locked["object_lock"]["days"] == 2
    s3 = aws.client("s3", DST)
    for k in keys(aws, bucket):  # every object the snapshot wrote
        head = s3.head_object(Bucket=bucket, Key=k)
        assert (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) == ("aws:kms", key), k
        if locked["snapshot_id"] in k:
            assert head["ObjectLockMode"] == "COMPLIANCE", k
    plain = [one_json(cli(*base).out)["snapshot_id"] for _ in range(2)]

    r = cli("snapshots", "prune", "--keep-last", "1", "--repo", repo, "--json")
    assert r.code == 0, r.err
    out = one_json(r.out)
    kept = {k["snapshot_id"]: k["reasons"] for k in out["kept"]}
    assert kept[plain[1]] == ["last"]
    assert kept[locked["snapshot_id"]] == [f"object lock until {locked['object_lock']['retain_until']}"]
    assert [x["snapshot_id"] for x in out["removed"]] == [plain[0]]
    left = keys(aws, bucket, "snapshots/")
    assert not [k for k in left if plain[0] in k]
    assert len([k for k in left if locked["snapshot_id"] in k]) == locked["parts"] + 2  # all of it


def test_refusals_write_nothing(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 10)
    s3 = aws.client("s3", DST)
    base = ["snapshot", "--table", name, "--from", SRC, "--to", DST]
    east_key = aws.client("kms", SRC).create_key()["KeyMetadata"]["Arn"]
    cases = [  # (the other option checks are unit tests: tests/unit/test_protection.py)
        (["--repo", f"s3://{name}-a", "--kms-key-id", east_key], 2, "is a key in us-east-1, but the repository is in"),
        (["--repo", f"s3://{name}-a", "--kms-key-id", "alias/none"], 3, "KMS key 'alias/none' not found in us-west-2"),
    ]
    for args, code, fragment in cases:
        r = cli(*base, *args)
        assert r.code == code, (args, r.err)
        assert fragment in one_error_line(r.err)
    assert f"{name}-a" not in {b["Name"] for b in s3.list_buckets()["Buckets"]}

    # An existing bucket that does not block public access, then one without Object Lock.
    s3.create_bucket(Bucket=f"{name}-b", CreateBucketConfiguration={"LocationConstraint": DST})
    r = cli(*base, "--repo", f"s3://{name}-b")
    assert r.code == 4
    line = one_error_line(r.err)
    assert f"repository bucket '{name}-b' has no public access block" in line
    assert f"aws s3api put-public-access-block --bucket {name}-b" in line
    s3.put_public_access_block(Bucket=f"{name}-b", PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    r = cli(*base, "--repo", f"s3://{name}-b", "--object-lock-days", "1")
    assert r.code == 4 and "does not have S3 Object Lock enabled" in one_error_line(r.err)
    assert keys(aws, f"{name}-b") == []


def test_iam_policy_command(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("iam-policy", "--for", "restore", "--repo", "s3://my-backups/prod", "--table", "orders", endpoint=False)
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    assert doc == iam.policy("restore", repo="s3://my-backups/prod", table="orders")
    assert "ReadRepositoryObjects" in r.err  # the human listing of what each statement is for
    r = cli("iam-policy", "--for", "snapshot", "--json", endpoint=False)
    assert r.code == 0, r.err
    out = one_json(r.out)
    assert out["command"] == "snapshot" and set(out["actions"]) == iam.command_actions("snapshot")
    assert [s["sid"] for s in out["statements"]] == [s["Sid"] for s in out["policy"]["Statement"]]
    r = cli("iam-policy", "--for", "backup", endpoint=False)
    assert r.code == 2 and "--for backup is not one of snapshot, restore, drill, agent" in one_error_line(r.err)
