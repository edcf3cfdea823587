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


def test_one_listing_finds_pending_runs_and_an_older_backupctls_pointer_but_no_other_sources() -> None:
    """``_find_resumable`` lists ``runs/pending/<source>`` once: the per-run records under the folder and
    the single pointer an older backupctl wrote beside it; a source whose key only starts the same is not
    this one."""
    from backupctl.snapshot import WriteOptions, _find_resumable

    plan = {"kind": "mysql", "chunks": 3}
    past = isoformat(utcnow() - timedelta(hours=1))

    class Store:
        def __init__(self, docs: dict[str, Any]) -> None:
            self.docs, self.lists = docs, []

        def list_keys(self, prefix: str) -> Iterator[str]:
            self.lists.append(prefix)
            return iter(sorted(k for k in self.docs if k.startswith(prefix)))

        def get_json(self, key: str) -> Any:
            return self.docs[key]

        def exists(self, key: str) -> bool:
            return key in self.docs

        def delete(self, keys: list[str]) -> None:
            for k in keys:
                self.docs.pop(k, None)

    class Repo:
        pending_prefix = staticmethod(Repository.pending_prefix)
        legacy_pending_key = staticmethod(Repository.legacy_pending_key)
        snapshot_prefix = staticmethod(Repository.snapshot_prefix)

        def __init__(self, docs: dict[str, Any]) -> None:
            self.store = Store(docs)

    def run(docs: dict[str, Any]) -> tuple[str | None, list[str]]:
        repo = Repo(docs)
        found = _find_resumable(repo, "mysql.us-east-1.db.t", plan, WriteOptions(), lambda _m: None)  # type: ignore[arg-type]
        return (found or {}).get("snapshot_id"), repo.store.lists

    legacy = {"runs/pending/mysql.us-east-1.db.t.json": {"snapshot_id": "S1", "created_at": "2026-01-01T00:00:00Z",
                                                         "plan": plan}}
    record = {"runs/pending/mysql.us-east-1.db.t/S2.json": {"snapshot_id": "S2", "created_at": "2026-01-02T00:00:00Z",
                                                            "plan": plan, "lease_until": past}}
    other = {"runs/pending/mysql.us-east-1.db.t2/S9.json": {"snapshot_id": "S9", "created_at": "2026-12-01T00:00:00Z",
                                                            "plan": plan, "lease_until": past},
             "runs/pending/mysql.us-east-1.db.t2.json": {"snapshot_id": "S8", "created_at": "2026-12-01T00:00:00Z",
                                                         "plan": plan}}
    assert run({**legacy, **other}) == ("S1", ["runs/pending/mysql.us-east-1.db.t"])
    assert run({**legacy, **record, **other})[0] == "S2"  # the newest dead run of this source
    assert run(other)[0] is None


def test_the_commit_sweeps_what_no_task_claims_from_one_listing(world: dict[str, Any],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Objects under the snapshot that no task wrote (a part of a crashed attempt, a staging file) are gone
    after the commit, the parts the manifest lists are there, and the commit listed the snapshot once
    (not each folder, and not again after the manifest)."""
    from backupctl.repository import S3Store

    planted: list[str] = []
    lists: list[str] = []
    put_json, list_keys = S3Store.put_json, S3Store.list_keys

    def planting_put_json(self: S3Store, key: str, doc: Any) -> str:
        if key.endswith("/schema.json"):  # the run's first write under its prefix: plant beside it
            base = key[: -len("schema.json")]
            for k in (base + "data/part-99999-0000.jsonl.gz", base + "_staging/export-1.json"):
                self.put(k, b"left over")
                planted.append(k)
        return put_json(self, key, doc)

    def counting_list_keys(self: S3Store, prefix: str) -> Iterator[str]:
        lists.append(prefix)
        return list_keys(self, prefix)

    monkeypatch.setattr(S3Store, "put_json", planting_put_json)
    monkeypatch.setattr(S3Store, "list_keys", counting_list_keys)
    result = snapshot_dynamodb(world["aws"], DynamoSnapshotOptions(table="orders", source_region=SRC,
                                                                  target_region=DST, repo_uri=REPO))
    keys = {o["Key"] for o in world["s3"].list_objects_v2(Bucket="lease-repo").get("Contents", [])}
    prefix = planted[0][: -len("data/part-99999-0000.jsonl.gz")]
    assert len(planted) == 2 and not keys & set(planted)
    assert result.manifest.parts and all(prefix + p.key in keys for p in result.manifest.parts)
    assert prefix + "manifest.json" in keys and not [k for k in keys if k.startswith(prefix + "_")]
    assert lists.count(prefix) == 1  # the commit's one listing (tasks list their own part names)
    assert not {prefix + folder for folder in ("data/", "keys/", "tombstones/", "_")} & set(lists)
