"""Leases (backupctl/leases.py): liveness, and prune keeping a snapshot a restore is reading (in-process moto)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from backupctl import prune as prune_mod
from backupctl.aws import AwsContext
from backupctl.demo import create_sample_table, load_items, sample_items
from backupctl.errors import SnapshotNotFound
from backupctl.leases import ReaderLeases, lease_alive, lease_fields, live_readers, new_owner, reader_key
from backupctl.model import isoformat, utcnow
from backupctl.prune import prune
from backupctl.repository import Repository
from backupctl.retention import Policy
from backupctl.snapshot import DynamoSnapshotOptions, snapshot_dynamodb

SRC, DST = "us-east-1", "us-west-2"
REPO = "s3://lease-repo"


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lease_liveness() -> None:
    now = utcnow()
    here = socket.gethostname()
    live = lease_fields(new_owner(), ttl=60, now=now)
    assert lease_alive(live, now)
    assert not lease_alive(live, now + timedelta(seconds=61))  # expired
    gone = {"owner": {"host": here, "pid": dead_pid(), "token": "t"}, "lease_until": live["lease_until"]}
    assert not lease_alive(gone, now)  # this host, the process no longer exists
    assert lease_alive({**gone, "owner": {**gone["owner"], "host": "elsewhere"}}, now)  # cannot tell: the TTL decides
    assert not lease_alive({"snapshot_id": "x", "created_at": isoformat(now)}, now)  # an older pointer: no lease


@pytest.fixture
def world() -> Iterator[dict[str, Any]]:
    with mock_aws():
        aws = AwsContext()
        create_sample_table(aws, SRC, "orders")
        load_items(aws, SRC, "orders", sample_items(50))
        ids = [snapshot_dynamodb(aws, DynamoSnapshotOptions(table="orders", source_region=SRC, target_region=DST,
                                                            repo_uri=REPO)).manifest.id for _ in range(2)]
        yield {"aws": aws, "ids": ids, "repo": Repository.open(aws, DST, REPO),
               "s3": boto3.client("s3", region_name=DST)}


def test_snapshot_leaves_no_pending_record(world: dict[str, Any]) -> None:
    keys = [o["Key"] for o in world["s3"].list_objects_v2(Bucket="lease-repo").get("Contents", [])]
    assert not [k for k in keys if k.startswith("runs/")]


def test_prune_keeps_a_snapshot_with_a_live_reader_lease_then_removes_it(world: dict[str, Any]) -> None:
    aws, (old, new), repo = world["aws"], world["ids"], world["repo"]
    with ReaderLeases() as readers:
        readers.hold(repo, [(old, repo.find_snapshot(old)[0])])
        assert list(repo.store.list_keys(f"runs/readers/{old}/"))
        result = prune(aws, DST, REPO, Policy(keep_last=1))
        kept = {k["snapshot_id"]: k["reasons"] for k in result["kept"]}
        assert kept[new] == ["last"]
        assert len(kept[old]) == 1 and kept[old][0].startswith("in use by a restore until ")
        assert result["removed"] == []
    assert not list(repo.store.list_keys("runs/readers/"))  # released at the end of the restore
    result = prune(aws, DST, REPO, Policy(keep_last=1))
    assert [r["snapshot_id"] for r in result["removed"]] == [old]


def test_expired_reader_lease_is_ignored_and_removed(world: dict[str, Any]) -> None:
    aws, (old, _new), repo = world["aws"], world["ids"], world["repo"]
    key = reader_key(old, "stale")
    repo.store.put_json(key, lease_fields(new_owner(), ttl=-1))
    result = prune(aws, DST, REPO, Policy(keep_last=1))
    assert [r["snapshot_id"] for r in result["removed"]] == [old]
    assert not repo.store.exists(key)


def test_lease_written_while_prune_runs_puts_the_manifest_back(world: dict[str, Any], monkeypatch: Any) -> None:
    """A restore that wrote its lease after prune read the leases: prune sees it after deleting the manifest."""
    aws, (old, _new), repo = world["aws"], world["ids"], world["repo"]
    calls: list[int] = []
    real = prune_mod.live_readers

    def late(store: Any, snapshot_id: str | None = None, **kw: Any) -> Any:
        calls.append(1)
        if snapshot_id is None:
            return real(store, **kw)  # the first read: no reader yet
        store.put_json(reader_key(old, "late"), lease_fields(new_owner()))
        return real(store, snapshot_id, **kw)

    monkeypatch.setattr(prune_mod, "live_readers", late)
    result = prune(aws, DST, REPO, Policy(keep_last=1))
    assert result["removed"] == [] and old in {k["snapshot_id"] for k in result["kept"]}
    assert repo.find_snapshot(old)[1].id == old  # the manifest is back
    assert live_readers(repo.store)[old] > utcnow()


def test_restore_of_a_pruned_snapshot_fails_before_writing(world: dict[str, Any]) -> None:
    _aws, (old, _new), repo = world["aws"], world["ids"], world["repo"]
    prefix = repo.find_snapshot(old)[0]
    repo.store.delete([prefix + "manifest.json"])  # prune got there first
    with pytest.raises(SnapshotNotFound), ReaderLeases() as readers:
        readers.hold(repo, [(old, prefix)])
    assert not list(repo.store.list_keys("runs/readers/"))


def test_own_pid_lease_is_live() -> None:
    assert lease_alive(lease_fields({"host": socket.gethostname(), "pid": os.getpid(), "token": "x"}))
