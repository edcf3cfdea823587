"""`backupctl iam-policy` lists exactly the IAM actions the code needs.

Every AWS call backupctl makes is recorded (a botocore event hook on every
client ``AwsContext.client`` hands out) while snapshots, restores and verifies
run against moto in-process; the calls are mapped to IAM actions with
``backupctl.iam.actions_for_call`` and compared with the ``snapshot`` and
``restore`` policies: no more, no fewer. The scenarios cover every statement:
DynamoDB scan and native export snapshots with --kms-key-id and
--object-lock-days into a new and an existing bucket, a MySQL snapshot of an
RDS instance with --secret-id, DynamoDB restores (new table with tags and TTL,
replace) of an encrypted snapshot, a MySQL restore with --secret-id.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pymysql
import pytest
from moto import mock_aws

import backupctl.aws as aws_module
from backupctl import iam
from backupctl.aws import AwsContext
from backupctl.demo import create_sample_table, load_items, sample_items
from backupctl.errors import InvalidInput
from backupctl.restore import DynamoRestoreOptions, MySQLRestoreOptions, restore_dynamodb, restore_mysql
from backupctl.snapshot import DynamoSnapshotOptions, MySQLSnapshotOptions, snapshot_dynamodb, snapshot_mysql
from backupctl.verify import verify_snapshot

SRC, DST = "us-east-1", "us-west-2"
REPO = "s3://iam-test-repo"
ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """Every API call of every backupctl client, as (service, operation, IAM actions)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, frozenset[str]]] = []
        self.lock = threading.Lock()
        self.clients: set[int] = set()

    def attach(self, client: Any) -> None:
        if id(client) in self.clients:
            return
        self.clients.add(id(client))
        sid = client.meta.service_model.service_id

        def before(params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
            context["_recorded_params"] = dict(params)
            self._add(sid, model.name, iam.actions_for_call(sid, model.name, params))

        def after(parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
            params = context.get("_recorded_params", {})
            self._add(sid, model.name, iam.actions_for_call(sid, model.name, params, parsed))

        client.meta.events.register("before-parameter-build", before)
        client.meta.events.register("after-call", after)

    def _add(self, sid: str, op: str, actions: set[str]) -> None:
        with self.lock:
            self.calls.append((sid, op, frozenset(actions)))

    def take(self) -> set[str]:
        """The IAM actions of the calls recorded since the last take."""
        with self.lock:
            out = {a for _s, _o, acts in self.calls for a in acts}
            self.calls.clear()
        return out


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    rec = Recorder()
    monkeypatch.setattr(aws_module, "_clients", {})  # fresh clients, each one recorded
    original = AwsContext.client

    def client(self: AwsContext, service: str, region: str) -> Any:
        c = original(self, service, region)
        rec.attach(c)
        return c

    monkeypatch.setattr(AwsContext, "client", client)
    for var in ("MYSQL_PWD", "BACKUPCTL_RDS_ENDPOINT_MAP"):
        monkeypatch.delenv(var, raising=False)
    with mock_aws():
        yield rec


def _source_table(aws: AwsContext) -> None:
    create_sample_table(aws, SRC, "orders")
    load_items(aws, SRC, "orders", sample_items(120))
    ddb = boto3.client("dynamodb", region_name=SRC)
    arn = ddb.describe_table(TableName="orders")["Table"]["TableArn"]
    ddb.tag_resource(ResourceArn=arn, Tags=[{"Key": "team", "Value": "shop"}])
    ddb.update_time_to_live(TableName="orders", TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    ddb.update_continuous_backups(TableName="orders",
                                  PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})


def _mysql_user() -> tuple[str, str, str, str]:
    """A source and a target database and a user with a password (MariaDB at 127.0.0.1:3306)."""
    hexid = uuid.uuid4().hex[:8]
    src, dst, user, pw = f"bk_iam_src_{hexid}", f"bk_iam_dst_{hexid}", f"bk_iam_{hexid}", f"pw-{hexid}"
    c = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with c.cursor() as cur:
        for db in (src, dst):
            cur.execute(f"CREATE DATABASE {db}")
            cur.execute(f"GRANT ALL PRIVILEGES ON {db}.* TO %s@'%%' IDENTIFIED BY %s", (user, pw))
        cur.execute(f"CREATE TABLE {src}.t (id INT PRIMARY KEY, v VARCHAR(20))")
        cur.executemany(f"INSERT INTO {src}.t VALUES (%s, %s)", [(i, f"v{i}") for i in range(1, 21)])
    c.close()
    return src, dst, user, pw


def _drop_mysql(src: str, dst: str, user: str) -> None:
    c = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    with c.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {src}")
        cur.execute(f"DROP DATABASE IF EXISTS {dst}")
        cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
    c.close()


def _mariadb_up() -> bool:
    try:
        pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=3).close()
        return True
    except pymysql.MySQLError:
        return False


@pytest.mark.skipif(not _mariadb_up(), reason="MariaDB at 127.0.0.1:3306 is not running")
def test_policies_list_exactly_the_actions_the_code_calls(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    aws = AwsContext()
    _source_table(aws)
    key = boto3.client("kms", region_name=DST).create_key()["KeyMetadata"]["KeyId"]
    recorder.take()  # the setup's calls are not backupctl's

    # -- snapshot ----------------------------------------------------------------------------
    protect = {"kms_key_id": key, "object_lock_days": 1}
    scan = snapshot_dynamodb(aws, DynamoSnapshotOptions(
        table="orders", source_region=SRC, target_region=DST, repo_uri=REPO, part_max_bytes=2000, **protect))
    snapshot_dynamodb(aws, DynamoSnapshotOptions(  # into the now existing bucket
        table="orders", source_region=SRC, target_region=DST, repo_uri=REPO, method="export", **protect))
    snapshot_actions = recorder.take()
    src, dst, user, pw = _mysql_user()
    try:
        rds = boto3.client("rds", region_name=SRC)
        rds.create_db_instance(DBInstanceIdentifier="shop-db", DBInstanceClass="db.t3.micro", Engine="mysql",
                               MasterUsername=user, MasterUserPassword="unused", Port=3306)
        address = rds.describe_db_instances(DBInstanceIdentifier="shop-db")["DBInstances"][0]["Endpoint"]["Address"]
        monkeypatch.setenv("BACKUPCTL_RDS_ENDPOINT_MAP", f"{address}=127.0.0.1:3306")
        sm_src, sm_dst = (boto3.client("secretsmanager", region_name=r) for r in (SRC, DST))
        sm_src.create_secret(Name="shop/backup", SecretString=pw)
        sm_dst.create_secret(Name="shop/restore", SecretString=pw)
        mysql_snap = snapshot_mysql(aws, MySQLSnapshotOptions(
            source_uri=None, rds_instance="shop-db", database=src, table="t", source_region=SRC,
            target_region=DST, repo_uri=REPO, secret_id="shop/backup"))
        snapshot_actions |= recorder.take()

        # -- restore and verify ---------------------------------------------------------------
        for mode in ("new", "replace"):
            restore_dynamodb(aws, DynamoRestoreOptions(snapshot_id=scan.manifest.id, table="orders-copy", region=DST,
                                                       repo_uri=REPO, mode=mode, yes=True))
        restore_mysql(aws, MySQLRestoreOptions(
            snapshot_id=mysql_snap.manifest.id, target_uri=f"mysql://{user}@127.0.0.1:3306/{dst}", region=DST,
            repo_uri=REPO, secret_id="shop/restore"))
        restore_actions = recorder.take()
        assert verify_snapshot(aws, DST, scan.manifest.id, REPO)["ok"]
        verify_actions = recorder.take()
    finally:
        _drop_mysql(src, dst, user)

    assert snapshot_actions == iam.command_actions("snapshot"), (
        f"policy lacks {sorted(snapshot_actions - iam.command_actions('snapshot'))}, "
        f"lists uncalled {sorted(iam.command_actions('snapshot') - snapshot_actions)}")
    assert restore_actions == iam.command_actions("restore", include_aws_only=False), (
        f"policy lacks {sorted(restore_actions - iam.command_actions('restore'))}, "
        f"lists uncalled {sorted(iam.command_actions('restore', include_aws_only=False) - restore_actions)}")
    # What only a real Redshift cluster reaches (the COPY manifests backupctl writes) is named, not guessed.
    aws_only = {sid: iam.STATEMENTS[sid].actions for sid in iam.COMMANDS["restore"] if iam.STATEMENTS[sid].aws_only}
    assert aws_only == {"RedshiftCopyManifests": ("s3:PutObject",)}
    assert verify_actions and verify_actions <= iam.command_actions("restore")
    # A drill snapshots and restores; the agent runs drills.
    assert iam.command_actions("snapshot") | iam.command_actions("restore") <= iam.command_actions("drill")
    assert iam.command_actions("drill") <= iam.command_actions("agent")


def test_control_table_statement_matches_the_calls_of_control_py() -> None:
    text = (ROOT / "backupctl/pipelines/control.py").read_text()
    ops = set(re.findall(r"self\.ddb\.([a-z_]+)\(", text))
    called = {"dynamodb:" + "".join(w.capitalize() for w in op.split("_")) for op in ops}
    assert called == set(iam.STATEMENTS["ControlTable"].actions)


def test_policy_document_scoping_and_bad_input() -> None:
    doc = iam.policy("snapshot", repo="s3://my-backups/prod", table="orders")
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert doc["Version"] == "2012-10-17"
    assert by_sid["RepositoryBucket"]["Resource"] == "arn:aws:s3:::my-backups"
    assert by_sid["RepositoryObjects"]["Resource"] == "arn:aws:s3:::my-backups/prod/*"
    assert by_sid["ReadSourceTable"]["Resource"] == ["arn:aws:dynamodb:*:*:table/orders",
                                                     "arn:aws:dynamodb:*:*:table/orders/export/*"]
    assert all(s["Effect"] == "Allow" and s["Action"] == sorted(s["Action"]) for s in doc["Statement"])
    assert iam.policy("restore")["Statement"][0]["Resource"] == "arn:aws:s3:::backupctl-*"
    with pytest.raises(InvalidInput, match="--for backup is not one of snapshot, restore, drill, agent"):
        iam.policy("backup")
    with pytest.raises(InvalidInput, match="invalid --repo"):
        iam.policy("restore", repo="http://x")
    with pytest.raises(InvalidInput, match="invalid --table"):
        iam.policy("restore", table="a*")
    json.dumps(iam.policy("agent"))  # serialisable


@pytest.mark.parametrize(
    ("service", "op", "params", "response", "actions"),
    [
        ("S3", "HeadBucket", {}, None, {"s3:ListBucket"}),
        ("S3", "HeadObject", {"ChecksumMode": "ENABLED"}, {"SSEKMSKeyId": "k"}, {"s3:GetObject", "kms:Decrypt"}),
        ("S3", "PutObject", {"ObjectLockMode": "GOVERNANCE", "SSEKMSKeyId": "k"}, None,
         {"s3:PutObject", "s3:PutObjectRetention", "kms:GenerateDataKey"}),
        ("S3", "CreateBucket", {"ObjectLockEnabledForBucket": True}, None,
         {"s3:CreateBucket", "s3:PutBucketObjectLockConfiguration", "s3:PutBucketVersioning"}),
        ("S3", "DeleteObjects", {}, None, {"s3:DeleteObject"}),
        ("DynamoDB", "CreateTable", {"Tags": [{"Key": "a", "Value": "b"}]}, None,
         {"dynamodb:CreateTable", "dynamodb:TagResource"}),
        ("STS", "GetCallerIdentity", {}, None, set()),
        ("Secrets Manager", "GetSecretValue", {}, None, {"secretsmanager:GetSecretValue"}),
    ],
)
def test_actions_for_call(service: str, op: str, params: dict[str, Any], response: dict[str, Any] | None,
                          actions: set[str]) -> None:
    assert iam.actions_for_call(service, op, params, response) == actions
