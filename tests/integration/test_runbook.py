"""Restore runbooks through the real CLI against the moto server (and MariaDB for the MySQL runbook).

With --yes a runbook restores the snapshot chosen by --at, verifies the table against the snapshot's
digest and records the run (caller identity, outcome) in the repository; answering "n" on a terminal
stops before the destructive step with nothing changed and records "declined"; --dry-run and a
refused run (no terminal, no --yes) write nothing.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from backupctl.aws import AwsContext
from backupctl.snapshot import DynamoSnapshotOptions, MySQLSnapshotOptions, snapshot_dynamodb, snapshot_mysql
from tests.conftest import CliResult, _backupctl
from tests.integration.helpers import make_table, one_json, python_items, scan_all
from tests.integration.mysql_db import scratch_databases, server_up

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DDB_RUNBOOK = str(ROOT / "playbooks" / "restore-orders-dynamodb.yaml")
MYSQL_RUNBOOK = str(ROOT / "playbooks" / "restore-orders.yaml")
BUCKET = "backupctl-123456789012-us-west-2"  # the default repository of moto's account in us-west-2


def run_on_a_terminal(moto_server: str, typed: str, *args: str) -> CliResult:
    """Run backupctl with a pseudo-terminal as stdin, on which ``typed`` has been typed."""
    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "BACKUPCTL_ENDPOINT_URL": moto_server}
    try:
        p = subprocess.Popen(_backupctl() + list(args), stdin=slave, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        os.close(slave)
        os.write(master, typed.encode())
        out, err = p.communicate(timeout=120)
    finally:
        os.close(master)
    return CliResult(p.returncode, out, err)


def bucket_keys(aws: AwsContext) -> list[str]:
    s3 = aws.client("s3", "us-west-2")
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return sorted(keys)


def read_record(aws: AwsContext, uri: str) -> dict[str, Any]:
    bucket, key = uri[len("s3://"):].split("/", 1)
    return json.loads(aws.client("s3", "us-west-2").get_object(Bucket=bucket, Key=key)["Body"].read())


def snapshot_table(aws: AwsContext, table: str) -> Any:
    return snapshot_dynamodb(aws, DynamoSnapshotOptions(table=table, source_region="us-east-1",
                                                        target_region="us-west-2")).manifest


@pytest.fixture
def two_snapshots(aws: AwsContext, name: str) -> tuple[Any, Any]:
    """orders with 40 items, snapshot 1; 15 more items, snapshot 2; the target holds other data (5 items)."""
    make_table(aws, "us-east-1", name, 40)
    first = snapshot_table(aws, name)
    ddb = aws.client("dynamodb", "us-east-1")
    for i in range(15):
        ddb.put_item(TableName=name, Item={"pk": {"S": f"late-{i}"}, "sk": {"S": "x"}})
    second = snapshot_table(aws, name)
    make_table(aws, "us-west-2", name + "-live", 5)
    return first, second


def test_yes_restores_the_snapshot_at_a_time_verifies_and_records(  # type: ignore[no-untyped-def]
        aws: AwsContext, cli, name: str, two_snapshots: tuple[Any, Any]) -> None:
    first, second = two_snapshots
    assert first.created_at < second.created_at
    r = cli("runbook", "run", DDB_RUNBOOK, "--var", f"table={name}", "--var", f"target_table={name}-live",
            "--at", first.created_at, "--yes", "--json", input="", timeout=120)
    assert r.code == 0, r.err
    rec = one_json(r.out)
    assert rec["outcome"] == "succeeded" and rec["exit_code"] == 0
    assert rec["snapshot"]["snapshot_id"] == first.id and rec["snapshot"]["chosen_by"] == "time"
    assert rec["operator"]["aws"]["account"] == "123456789012" and rec["operator"]["aws"]["arn"]
    assert [(c["step"], c["answer"]) for c in rec["confirmations"]] == [("restore", "--yes")]
    st = {a["name"]: a for a in rec["activities"]}
    assert st["restore"]["status"] == "succeeded" and st["restore"]["preconditions"][0]["name"] == "snapshot_exists"
    assert st["verify"]["outputs"]["against"] == {"table": f"{name}-live", "equal": True, "rows": 40}
    # The target now holds exactly the first snapshot (the 5 other items were replaced, the 15 later ones absent).
    want = {k: v for k, v in python_items(scan_all(aws, "us-east-1", name)).items() if not k[0].startswith("late-")}
    assert len(want) == 40 and python_items(scan_all(aws, "us-west-2", f"{name}-live")) == want
    # The record is in the repository, under runs/runbooks/<runbook>/.
    assert rec["record_uri"].startswith(f"s3://{BUCKET}/runs/runbooks/restore-orders-dynamodb/")
    stored = read_record(aws, rec["record_uri"])
    assert stored["outcome"] == "succeeded" and stored["operator"] == rec["operator"]
    assert "SUCCEEDED" in r.err and "plan" in r.err


def test_answering_no_stops_before_the_destructive_step(  # type: ignore[no-untyped-def]
        aws: AwsContext, moto_server: str, name: str, two_snapshots: tuple[Any, Any]) -> None:
    before = scan_all(aws, "us-west-2", f"{name}-live")
    r = run_on_a_terminal(moto_server, "n\n", "runbook", "run", DDB_RUNBOOK, "--var", f"table={name}",
                          "--var", f"target_table={name}-live", "--json")
    assert r.code == 4, r.err
    assert "restore: replaces DynamoDBTable " in r.err and "Go ahead? [y/N]" in r.err
    rec = one_json(r.out)
    assert rec["outcome"] == "declined"
    assert {a["name"]: a["status"] for a in rec["activities"]} == {"restore": "declined", "verify": "skipped"}
    assert [(c["step"], c["answer"], c["confirmed"]) for c in rec["confirmations"]] == [("restore", "n", False)]
    assert rec["snapshot"]["snapshot_id"] == two_snapshots[1].id  # no --at: the newest
    assert scan_all(aws, "us-west-2", f"{name}-live") == before  # nothing changed
    assert read_record(aws, rec["record_uri"])["outcome"] == "declined"


def test_dry_run_and_a_refused_run_write_nothing(  # type: ignore[no-untyped-def]
        aws: AwsContext, cli, name: str, two_snapshots: tuple[Any, Any]) -> None:
    first, _ = two_snapshots
    args = ("runbook", "run", DDB_RUNBOOK, "--var", f"table={name}", "--var", f"target_table={name}-live")
    before, items = bucket_keys(aws), scan_all(aws, "us-west-2", f"{name}-live")
    r = cli(*args, "--at", first.id, "--dry-run", "--json", input="", timeout=120)
    assert r.code == 0, r.err
    plan = one_json(r.out)
    assert plan["dry_run"] is True and plan["snapshot"]["snapshot_id"] == first.id
    assert plan["snapshot"]["chosen_by"] == "id" and plan["asks"] == ["restore"]
    assert [(s["name"], s["destructive"]) for s in plan["steps"]] == [("restore", True), ("verify", False)]
    assert "dry run: nothing is changed" in r.err
    # Without a terminal and without --yes, a run whose steps would ask is refused before anything runs.
    r = cli(*args, input="y\n", timeout=120)
    assert r.code == 2
    assert r.err.strip().splitlines()[-1] == (
        "error: runbook restore-orders-dynamodb asks before restore and stdin is not a terminal: run it in a "
        "terminal, or pass --yes to confirm every step in advance")
    assert bucket_keys(aws) == before and scan_all(aws, "us-west-2", f"{name}-live") == items


def test_at_before_the_first_snapshot_is_refused(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, "us-east-1", name, 3)
    snapshot_table(aws, name)
    r = cli("runbook", "run", DDB_RUNBOOK, "--var", f"table={name}", "--at", "2020-01-01T00:00:00Z", "--yes")
    assert r.code == 3
    assert f"error: no snapshot of DynamoDBTable {name} (us-east-1) (dynamodb.us-east-1.{name}) was taken at or " \
           "before 2020-01-01T00:00:00.000000Z: the oldest," in r.err


# -- MySQL ---------------------------------------------------------------------------------------


def my() -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)


def _orders(cur: Any, src: str, dst: str) -> None:
    for db in (src, dst):
        cur.execute(f"CREATE TABLE {db}.orders (id INT PRIMARY KEY, amount DECIMAL(10,2), note VARCHAR(20))")
    cur.executemany(f"INSERT INTO {src}.orders VALUES (%s, %s, %s)", [(i, i * 1.5, f"n{i}") for i in range(120)])
    cur.executemany(f"INSERT INTO {dst}.orders VALUES (%s, %s, %s)", [(i, 0, "damaged") for i in range(7)])


@pytest.fixture
def dbs() -> Iterator[tuple[str, str]]:
    if not server_up():  # pragma: no cover
        pytest.skip("MariaDB at 127.0.0.1:3306 is not running")
    with scratch_databases("bk_rb", _orders) as pair:
        yield pair


def rows(db: str) -> list[tuple[Any, ...]]:
    with my().cursor() as cur:
        cur.execute(f"SELECT id, amount, note FROM {db}.orders ORDER BY id")
        return list(cur.fetchall())


def test_mysql_runbook_replaces_the_table_and_verifies(  # type: ignore[no-untyped-def]
        aws: AwsContext, cli, dbs: tuple[str, str]) -> None:
    src, dst = dbs
    snap = snapshot_mysql(aws, MySQLSnapshotOptions(source_uri=f"mysql://root@127.0.0.1:3306/{src}", table="orders",
                                                    source_region="us-east-1", target_region="us-west-2")).manifest
    with my().cursor() as cur:
        cur.execute(f"DELETE FROM {src}.orders WHERE id >= 100")  # after the snapshot: not restored
    r = cli("runbook", "run", MYSQL_RUNBOOK, "--var", f"source_db={src}", "--var", f"target_db={dst}",
            "--at", snap.id, "--yes", "--json", input="", timeout=120)
    assert r.code == 0, r.err
    rec = one_json(r.out)
    assert rec["outcome"] == "succeeded" and rec["snapshot"]["snapshot_id"] == snap.id
    assert rec["plan"][0]["destructive"] is True and "replaces MySQLTable orders" in rec["plan"][0]["why"]
    assert rec["operator"]["aws"]["account"] == "123456789012"
    verify = next(a for a in rec["activities"] if a["name"] == "verify")
    assert verify["outputs"]["against"]["equal"] is True and verify["outputs"]["against"]["rows"] == 120
    assert verify["outputs"]["against"]["digest"] == rec["snapshot"]["digest"]
    assert len(rows(dst)) == 120 and rows(dst)[:100] == rows(src)
    assert read_record(aws, rec["record_uri"])["runbook"] == "restore-orders"
