"""``backupctl status``: duration parsing for --max-age, freshness per source, the last drill (moto mock_aws)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import click
import pytest
from click.testing import CliRunner
from moto import mock_aws

from backupctl.aws import AwsContext
from backupctl.cli.main import cli
from backupctl.cli.status import Duration
from backupctl.model import isoformat, utcnow
from backupctl.repository import Repository
from backupctl.status import source_status, stale_line


@pytest.mark.parametrize(("text", "seconds"), [
    ("90m", 5400.0), ("24h", 86400.0), ("7d", 604800.0), ("1s", 1.0), ("250ms", 0.25), ("45", 45.0),
    (" 2h ", 7200.0), ("1.5h", 5400.0),
])
def test_duration(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5 weeks", "-1h", "0s", "1y", "h"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(click.BadParameter, match="invalid duration"):
        Duration().convert(text, None, None)


def test_bad_max_age_is_usage_error_before_any_aws_call() -> None:
    r = CliRunner().invoke(cli, ["status", "--region", "us-west-2", "--max-age", "soon"])
    assert r.exit_code == 2 and "invalid duration 'soon'" in r.output


def manifest(sid: str, sk: str, source: dict, created: str) -> dict:
    return {"format_version": "1.0", "id": sid, "source": source, "source_key": sk, "mode": "full",
            "created_at": created, "completed_at": created, "engine": "local", "parts": [],
            "totals": {"parts": 0, "rows": 0, "bytes": 0},
            "content_digest": {"algorithm": "multiset-sha256-v1", "value": "0" * 64}}


@pytest.fixture
def repo() -> Iterator[Repository]:
    with mock_aws():
        yield Repository.open(AwsContext(), "us-west-2", "s3://status-test-repo", create=True)


def put_snapshot(repo: Repository, sk: str, source: dict, age: timedelta, pending: bool = False) -> str:
    t = utcnow() - age
    sid = t.strftime("%Y%m%dT%H%M%SZ") + "-abcdef"
    prefix = repo.snapshot_prefix(sk, sid)
    repo.store.put_json(prefix + "schema.json", {})
    if not pending:
        repo.store.put_json(prefix + "manifest.json", manifest(sid, sk, source, isoformat(t)))
    return sid


DDB = {"kind": "dynamodb", "region": "us-east-1", "table": "orders"}
MY = {"kind": "mysql", "region": "us-east-1", "host": "db-a", "port": 3306, "database": "shop", "table": "items"}


def test_newest_committed_snapshot_age_and_last_drill(repo: Repository) -> None:
    put_snapshot(repo, "dynamodb.us-east-1.orders", DDB, timedelta(days=3))
    fresh = put_snapshot(repo, "dynamodb.us-east-1.orders", DDB, timedelta(hours=2))
    put_snapshot(repo, "dynamodb.us-east-1.orders", DDB, timedelta(minutes=1), pending=True)  # not committed
    old = put_snapshot(repo, "mysql.us-east-1.shop.items", MY, timedelta(days=2))
    for i, passed in ((1, True), (2, False)):
        repo.store.put_json(f"drills/dynamodb.us-east-1.orders/r2026112{i}t030000-00000{i}.json",
                            {"drill_id": f"d{i}", "passed": passed, "started_at": f"2026-11-2{i}T03:00:00.000000Z",
                             "rto_s": 10.0 * i, "rpo_s": 100.0 * i, "problems": [] if passed else ["copy differs"]})
    repo.store.put_json("drills/mysql.us-east-1.gone.t/r20261120t030000-000001.json",
                        {"drill_id": "d0", "passed": True, "source": "MySQLTable t (us-east-1)"})
    st = {e["source_key"]: e for e in source_status(repo, max_age_s=86400)}
    assert sorted(st) == ["dynamodb.us-east-1.orders", "mysql.us-east-1.gone.t", "mysql.us-east-1.shop.items"]
    o = st["dynamodb.us-east-1.orders"]
    assert o["snapshot"]["snapshot_id"] == fresh and 7100 < o["snapshot"]["age_s"] < 7300 and o["stale"] is False
    assert o["source"] == "DynamoDB orders (us-east-1)"
    assert o["last_drill"]["drill_id"] == "d2" and o["last_drill"]["passed"] is False
    assert o["last_drill"]["reason"] == "copy differs" and o["last_drill"]["rto_s"] == 20.0
    m = st["mysql.us-east-1.shop.items"]
    assert m["snapshot"]["snapshot_id"] == old and m["stale"] is True and m["last_drill"] is None
    assert m["source"] == "MySQL db-a:3306/shop.items (us-east-1)"
    assert "is 2d 00h old (max 1d 00h)" in stale_line(m, 86400)
    g = st["mysql.us-east-1.gone.t"]
    assert g["snapshot"] is None and g["stale"] is True and g["source"] == "MySQLTable t (us-east-1)"
    assert stale_line(g, 86400).endswith("no committed snapshot")
    # Without --max-age nothing is judged stale.
    assert {e["stale"] for e in source_status(repo)} == {None}
