"""Concurrency (issue #7 item 3): two snapshots of one table at once, and prune during a restore."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from backupctl.aws import AwsContext
from tests.conftest import _backupctl
from tests.integration.helpers import make_table, one_json, python_items, scan_all

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"


def test_two_snapshots_of_one_table_at_once_both_commit(aws: AwsContext, cli, moto_server: str, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 3000)
    repo = f"s3://{name}-repo"
    assert cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--json").code == 0
    env = dict(os.environ, BACKUPCTL_ENDPOINT_URL=moto_server)
    # 375 RCU at 150 RCU/s: each run takes ~2.5 s, so the two overlap.
    args = ["snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--segments", "4",
            "--max-rcu", "150", "--page-size", "100", "--json"]
    procs = [subprocess.Popen(_backupctl() + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    results = [one_json(out) for out, _err in outs]
    ids = {r["snapshot_id"] for r in results}
    assert len(ids) == 2 and not any(r["resumed"] for r in results)
    assert all(r["rows"] == 3000 for r in results)

    listed = one_json(cli("snapshots", "list", "--repo", repo, "--json").out)
    assert ids <= {m["snapshot_id"] for m in listed} and len(listed) == 3
    r = cli("snapshots", "verify", "--all", "--repo", repo, "--json")
    assert r.code == 0, r.err
    report = one_json(r.out)
    assert report["ok"] and report["checked"] == 3 and report["failed"] == 0
    keys = [o["Key"] for o in aws.client("s3", DST).list_objects_v2(Bucket=f"{name}-repo")["Contents"]]
    assert not [k for k in keys if k.startswith("runs/pending/")]  # both runs removed their records


def test_verify_all_fails_when_one_snapshot_is_damaged(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 100)
    repo = f"s3://{name}-repo"
    ids = []
    for _ in range(2):
        r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--json")
        ids.append(one_json(r.out)["snapshot_id"])
    s3 = aws.client("s3", DST)
    part = next(o["Key"] for o in s3.list_objects_v2(Bucket=f"{name}-repo")["Contents"]
                if ids[0] in o["Key"] and "/data/" in o["Key"])
    s3.delete_object(Bucket=f"{name}-repo", Key=part)
    r = cli("snapshots", "verify", "--all", "--repo", repo, "--json")
    assert r.code == 5
    report = one_json(r.out)
    assert not report["ok"] and report["failed"] == 1
    assert {s["snapshot_id"]: s["ok"] for s in report["snapshots"]} == {ids[0]: False, ids[1]: True}
    r = cli("snapshots", "verify", "--all", "--repo", repo)
    assert r.code == 5 and "FAILED" in r.err and ids[0] in r.err  # tables go to stderr


def test_prune_during_a_restore_keeps_the_snapshot_it_reads(aws: AwsContext, cli, moto_server: str, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 300)
    repo = f"s3://{name}-repo"
    ids = []
    for _ in range(2):
        r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--json")
        assert r.code == 0, r.err
        ids.append(one_json(r.out)["snapshot_id"])
    old = ids[0]
    target = f"{name}-restored"
    env = dict(os.environ, BACKUPCTL_ENDPOINT_URL=moto_server)
    # 300 items at 1 WCU each, 50 WCU/s: ~6 s of writing.
    proc = subprocess.Popen(_backupctl() + ["restore", old, "--to-table", target, "--region", DST, "--repo", repo,
                                            "--max-wcu", "50", "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    s3 = aws.client("s3", DST)
    deadline = time.monotonic() + 60
    try:
        while not s3.list_objects_v2(Bucket=f"{name}-repo", Prefix=f"runs/readers/{old}/").get("Contents"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no reader lease appeared"
            time.sleep(0.05)
        r = cli("snapshots", "prune", "--keep-last", "1", "--repo", repo, "--json")
        assert r.code == 0, r.err
        plan = one_json(r.out)
        kept = {k["snapshot_id"]: k["reasons"] for k in plan["kept"]}
        assert plan["removed"] == [] and kept[ids[1]] == ["last"]
        assert [x.split(" until ")[0] for x in kept[old]] == ["in use by a restore"]
        r = cli("snapshots", "prune", "--keep-last", "1", "--repo", repo)  # the table shows the reason too
        assert r.code == 0 and "in use by a restore" in r.err
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert one_json(out)["rows"] == 300
    assert python_items(scan_all(aws, DST, target)) == python_items(scan_all(aws, SRC, name))
    assert not s3.list_objects_v2(Bucket=f"{name}-repo", Prefix="runs/readers/").get("Contents")

    r = cli("snapshots", "prune", "--keep-last", "1", "--repo", repo, "--json")
    assert r.code == 0, r.err
    assert [x["snapshot_id"] for x in one_json(r.out)["removed"]] == [old]
    assert [m["snapshot_id"] for m in one_json(cli("snapshots", "list", "--repo", repo, "--json").out)] == [ids[1]]
