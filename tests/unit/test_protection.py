"""Immutability and encryption (in-process moto): SSE-KMS on every object, Object Lock on every snapshot
object, prune respecting the lock, and no snapshot written into a bucket with public access."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from backupctl.aws import AwsContext
from backupctl.demo import create_sample_table, load_items, sample_items
from backupctl.errors import Conflict, InvalidInput, NotFound
from backupctl.model import parse_time
from backupctl.prune import prune
from backupctl.repository import PUBLIC_ACCESS_FLAGS, check_write_options, public_policy_statement
from backupctl.restore import DynamoRestoreOptions, restore_dynamodb
from backupctl.retention import Policy
from backupctl.snapshot import DynamoSnapshotOptions, SnapshotResult, snapshot_dynamodb

SRC, DST = "us-east-1", "us-west-2"
BUCKET = "prot-repo"
REPO = f"s3://{BUCKET}/backups"


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    with mock_aws():
        aws = AwsContext()
        create_sample_table(aws, SRC, "orders")
        load_items(aws, SRC, "orders", sample_items(200))
        yield {"aws": aws, "s3": boto3.client("s3", region_name=DST), "kms": boto3.client("kms", region_name=DST)}


def snap(aws: AwsContext, repo: str = REPO, **kw: Any) -> SnapshotResult:
    return snapshot_dynamodb(aws, DynamoSnapshotOptions(table="orders", source_region=SRC, target_region=DST,
                                                        repo_uri=repo, part_max_bytes=4000, **kw))


def keys(s3: Any, bucket: str = BUCKET, prefix: str = "") -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


def bucket_exists(s3: Any, bucket: str) -> bool:
    return bucket in {b["Name"] for b in s3.list_buckets()["Buckets"]}


def private_bucket(s3: Any, bucket: str, **kw: Any) -> None:
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": DST}, **kw)
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={f: True for f in PUBLIC_ACCESS_FLAGS})


# -- SSE-KMS -------------------------------------------------------------------------------------


def test_kms_key_encrypts_every_object_of_the_snapshot(world: dict[str, Any]) -> None:
    s3, kms = world["s3"], world["kms"]
    key = kms.create_key()["KeyMetadata"]
    kms.create_alias(AliasName="alias/backups", TargetKeyId=key["KeyId"])
    r = snap(world["aws"], kms_key_id="alias/backups")
    assert len(r.manifest.parts) > 3
    assert r.to_json()["encryption"] == {"algorithm": "aws:kms", "kms_key_id": key["Arn"]}
    prefix = f"backups/snapshots/dynamodb.us-east-1.orders/{r.manifest.id}/"
    objects = keys(s3)
    assert len([k for k in objects if k.startswith(prefix)]) == len(r.manifest.parts) + 2  # + schema, manifest
    for k in objects:  # the repository config too: every object this snapshot wrote
        head = s3.head_object(Bucket=BUCKET, Key=k)
        assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key["Arn"]), k
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=prefix + "manifest.json")["Body"].read())
    assert manifest["encryption"] == {"algorithm": "aws:kms", "kms_key_id": key["Arn"]}
    # An encrypted snapshot restores like any other.
    out = restore_dynamodb(world["aws"], DynamoRestoreOptions(snapshot_id=r.manifest.id, table="copy", region=DST,
                                                              repo_uri=REPO))
    assert out["rows"] == 200 and out["digest"] == r.manifest.content_digest


def test_kms_key_of_another_region_or_unknown_is_refused_before_anything_is_written(world: dict[str, Any]) -> None:
    s3, aws = world["s3"], world["aws"]
    east = boto3.client("kms", region_name=SRC).create_key()["KeyMetadata"]
    with pytest.raises(InvalidInput, match=r"is a key in us-east-1, but the repository is in us-west-2"):
        snap(aws, kms_key_id=east["Arn"])
    with pytest.raises(NotFound, match=r"KMS key 'alias/nope' not found in us-west-2"):
        snap(aws, kms_key_id="alias/nope")
    with pytest.raises(NotFound, match=r"KMS key '.*' not found in us-west-2"):
        snap(aws, kms_key_id=east["KeyId"])  # a bare id resolves in the repository's region only
    disabled = world["kms"].create_key()["KeyMetadata"]["KeyId"]
    world["kms"].disable_key(KeyId=disabled)
    with pytest.raises(InvalidInput, match=r"is Disabled"):
        snap(aws, kms_key_id=disabled)
    assert not bucket_exists(s3, BUCKET)


@pytest.mark.parametrize(
    ("days", "mode", "key", "message"),
    [
        (0, None, None, r"--object-lock-days 0 is out of range \[1, 36500\]"),
        (None, "governance", None, r"--object-lock-mode needs --object-lock-days N"),
        (3, "legal", None, r"--object-lock-mode legal is not one of governance, compliance"),
        (None, None, "arn:aws:kms:us-west-2:12:key/x", r"not a KMS key or alias ARN"),
        (None, None, "my key", r"invalid --kms-key-id"),
    ],
)
def test_bad_protection_options(days: int | None, mode: str | None, key: str | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_write_options(days, mode, key, DST)


# -- Object Lock ---------------------------------------------------------------------------------


def test_object_lock_retains_every_snapshot_object_and_s3_refuses_deleting_them(world: dict[str, Any]) -> None:
    s3 = world["s3"]
    r = snap(world["aws"], object_lock_days=3, object_lock_mode="compliance")
    assert s3.get_object_lock_configuration(Bucket=BUCKET)["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"].values())
    until = parse_time(r.manifest.created_at) + timedelta(days=3)
    assert r.to_json()["object_lock"]["retain_until"] == until.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    prefix = f"backups/snapshots/dynamodb.us-east-1.orders/{r.manifest.id}/"
    locked = keys(s3, prefix=prefix)
    assert sorted(k[len(prefix):] for k in locked) == sorted(
        ["schema.json", "manifest.json"] + [p.key for p in r.manifest.parts])
    for k in locked:
        head = s3.head_object(Bucket=BUCKET, Key=k)
        assert head["ObjectLockMode"] == "COMPLIANCE", k
        assert abs((head["ObjectLockRetainUntilDate"] - until).total_seconds()) < 1, k
    # Nothing else is locked (the repository config, run state are not snapshot objects).
    assert "ObjectLockMode" not in s3.head_object(Bucket=BUCKET, Key="backups/backupctl.json")
    # S3 refuses to delete a locked version (a delete without version only adds a delete marker).
    version = s3.list_object_versions(Bucket=BUCKET, Prefix=prefix + "manifest.json")["Versions"][0]["VersionId"]
    with pytest.raises(s3.exceptions.ClientError, match="AccessDenied"):
        s3.delete_object(Bucket=BUCKET, Key=prefix + "manifest.json", VersionId=version)


def test_object_lock_export_method_locks_adopted_parts(world: dict[str, Any]) -> None:
    s3 = world["s3"]
    boto3.client("dynamodb", region_name=SRC).update_continuous_backups(
        TableName="orders", PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    key = world["kms"].create_key()["KeyMetadata"]["Arn"]
    r = snap(world["aws"], method="export", object_lock_days=1, kms_key_id=key)
    prefix = f"backups/snapshots/dynamodb.us-east-1.orders/{r.manifest.id}/"
    assert r.manifest.rows == 200
    for k in keys(s3, prefix=prefix):
        head = s3.head_object(Bucket=BUCKET, Key=k)
        assert head["ObjectLockMode"] == "GOVERNANCE" and head["SSEKMSKeyId"] == key, k


def test_object_lock_needs_a_bucket_with_object_lock(world: dict[str, Any]) -> None:
    s3 = world["s3"]
    private_bucket(s3, BUCKET)
    with pytest.raises(Conflict, match=f"bucket '{BUCKET}' does not have S3 Object Lock enabled.*put-object-lock-config"):
        snap(world["aws"], object_lock_days=1)
    assert keys(s3) == []
    private_bucket(s3, "locked-repo", ObjectLockEnabledForBucket=True)  # an existing bucket with Object Lock: fine
    assert snap(world["aws"], repo="s3://locked-repo", object_lock_days=1).manifest.rows == 200


def test_prune_keeps_locked_snapshots_and_their_chain(world: dict[str, Any]) -> None:
    s3, aws = world["s3"], world["aws"]
    old = snap(aws, object_lock_days=2)
    unlocked = [snap(aws), snap(aws)]
    newest = snap(aws)
    before = keys(s3)
    plan = prune(aws, DST, REPO, Policy(keep_last=1), dry_run=True)
    reasons = {k["snapshot_id"]: k["reasons"] for k in plan["kept"]}
    assert reasons[newest.manifest.id] == ["last"]
    assert len(reasons[old.manifest.id]) == 1 and reasons[old.manifest.id][0].startswith("object lock until ")
    assert sorted(x["snapshot_id"] for x in plan["removed"]) == sorted(u.manifest.id for u in unlocked)
    assert keys(s3) == before
    result = prune(aws, DST, REPO, Policy(keep_last=1))
    assert {k["snapshot_id"] for k in result["kept"]} == {old.manifest.id, newest.manifest.id}
    left = keys(s3)
    assert [k for k in before if old.manifest.id in k] == [k for k in left if old.manifest.id in k]  # all of it
    assert not [k for k in left if any(u.manifest.id in k for u in unlocked)]


# -- public access -------------------------------------------------------------------------------


def test_new_repository_buckets_block_public_access(world: dict[str, Any]) -> None:
    snap(world["aws"])
    pab = world["s3"].get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert pab == {f: True for f in PUBLIC_ACCESS_FLAGS}


@pytest.mark.parametrize("flags", [None, {"BlockPublicAcls": True, "IgnorePublicAcls": True,
                                          "BlockPublicPolicy": False, "RestrictPublicBuckets": True}])
def test_bucket_without_public_access_block_is_refused(world: dict[str, Any], flags: dict[str, bool] | None) -> None:
    s3 = world["s3"]
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": DST})
    if flags:
        s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration=flags)
    with pytest.raises(Conflict) as e:
        snap(world["aws"])
    assert f"repository bucket '{BUCKET}'" in e.value.message
    assert ("BlockPublicPolicy off" if flags else "has no public access block") in e.value.message
    assert f"aws s3api put-public-access-block --bucket {BUCKET}" in e.value.message
    assert "\n" not in e.value.message and keys(s3) == []


def test_bucket_policy_allowing_everyone_is_refused(world: dict[str, Any]) -> None:
    s3 = world["s3"]
    private_bucket(s3, BUCKET)
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "DenyHttp", "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": f"arn:aws:s3:::{BUCKET}/*",
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        {"Sid": "PublicRead", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "s3:GetObject",
         "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}))
    with pytest.raises(Conflict, match=r"bucket policy that allows everyone \(Principal \"\*\" in statement PublicRead\)"):
        snap(world["aws"])
    assert keys(s3) == []


@pytest.mark.parametrize(
    ("statements", "found"),
    [
        ([{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}], "#0"),
        ([{"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::1:root", "*"]}}], "#0"),
        ([{"Effect": "Deny", "Principal": "*"}], None),
        ([{"Sid": "x", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"}}], None),
    ],
)
def test_public_policy_statement(statements: list[dict[str, Any]], found: str | None) -> None:
    assert public_policy_statement(json.dumps({"Statement": statements})) == found
