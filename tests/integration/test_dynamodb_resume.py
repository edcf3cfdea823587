"""A snapshot killed with SIGKILL mid-way is invisible, and the same command finishes it.

The run is slowed with a small read budget, one worker and small pages so that
it can be killed after some segments are checkpointed and before the manifest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from backupctl.aws import AwsContext
from tests.conftest import _backupctl
from tests.integration.helpers import make_table, one_json, python_items, scan_all

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"


def checkpoints(aws: AwsContext, bucket: str) -> list[str]:
    s3 = aws.client("s3", DST)
    try:
        resp = s3.list_objects_v2(Bucket=bucket, Prefix="snapshots/")
    except s3.exceptions.NoSuchBucket:
        return []  # the run has not created the repository yet
    return [o["Key"] for o in resp.get("Contents", []) if "/_tasks/" in o["Key"]]


def test_sigkill_then_rerun_resumes_without_rereading(aws: AwsContext, cli, moto_server: str, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 3000)
    repo = f"s3://{name}-repo"
    args = ["snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo,
            "--segments", "6", "--workers", "1", "--json"]
    env = dict(os.environ, BACKUPCTL_ENDPOINT_URL=moto_server)
    # 3,000 items at 0.125 RCU each = 375 RCU; at 60 RCU/s with pages of 50 items that is ~6 s.
    proc = subprocess.Popen(_backupctl() + args + ["--max-rcu", "60", "--page-size", "50"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while len(checkpoints(aws, f"{name}-repo")) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    done_before = len(checkpoints(aws, f"{name}-repo"))
    assert 2 <= done_before < 6

    # Nothing listed: no manifest, no snapshot.
    r = cli("snapshots", "list", "--repo", repo, "--json")
    assert r.code == 0, r.err
    assert one_json(r.out) == []

    # The same command (without the slow-down) resumes and skips the finished segments.
    r = cli(*args)
    assert r.code == 0, r.err
    s = one_json(r.out)
    assert s["resumed"] is True
    assert s["tasks_skipped"] >= done_before
    assert s["rows"] == 3000
    assert "not re-reading them" in r.err

    # Run state is tidied after the commit, the snapshot verifies, and restores exactly.
    assert checkpoints(aws, f"{name}-repo") == []
    r = cli("snapshots", "verify", s["snapshot_id"], "--repo", repo, "--against-table", name, "--table-region", SRC)
    assert r.code == 0, r.err
    r = cli("restore", s["snapshot_id"], "--to-table", name + "-r", "--region", DST, "--repo", repo, "--json")
    assert r.code == 0, r.err
    assert python_items(scan_all(aws, DST, name + "-r")) == python_items(scan_all(aws, SRC, name))
    listed = one_json(cli("snapshots", "list", "--repo", repo, "--json").out)
    assert [x["snapshot_id"] for x in listed] == [s["snapshot_id"]]
    assert json.loads(json.dumps(listed))[0]["rows"] == 3000
