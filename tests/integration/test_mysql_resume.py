"""A MySQL snapshot killed with SIGKILL mid-way is invisible, and the same command finishes it.

MariaDB at 127.0.0.1:3306, S3 on the moto server. The first run goes through
a loopback proxy that delays every S3 request, with one worker and small
chunks, so that it can be killed after some chunks are checkpointed under
``_tasks/`` and before the manifest; the second run (the same command,
straight to moto) resumes it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from backupctl.aws import AwsContext
from tests.conftest import _backupctl
from tests.harness.fault_proxy import FaultProxy
from tests.integration.helpers import one_json
from tests.integration.mysql_db import HOST, PORT, connect, make_orders, scratch_databases, server_up

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"
ROWS, CHUNK_ROWS = 6000, 300  # ids 1..6000 cut every 300 values (19 bounds): 20 primary-key ranges, 20 tasks
TASKS = 20


if not server_up():  # pragma: no cover
    pytest.skip("MariaDB at 127.0.0.1:3306 is not running", allow_module_level=True)


@pytest.fixture
def dbs() -> Iterator[tuple[str, str]]:
    with scratch_databases("bk_rs") as pair:
        yield pair


def rows_of(db: str) -> list[tuple[Any, ...]]:
    c = connect(db)
    with c.cursor() as cur:
        cur.execute("SELECT * FROM orders ORDER BY id")
        out = list(cur.fetchall())
    c.close()
    return out


def checkpoints(aws: AwsContext, bucket: str) -> list[str]:
    s3 = aws.client("s3", DST)
    try:
        resp = s3.list_objects_v2(Bucket=bucket, Prefix="mysql/snapshots/")
    except s3.exceptions.NoSuchBucket:
        return []  # the run has not created the repository yet
    return [o["Key"] for o in resp.get("Contents", []) if "/_tasks/" in o["Key"]]


def test_sigkill_then_rerun_resumes(aws: AwsContext, cli, moto_server: str, dbs, name: str) -> None:  # type: ignore[no-untyped-def]
    src, dst = dbs
    make_orders(src, ROWS)
    bucket = f"{name}-repo"
    repo = f"s3://{bucket}/mysql"
    args = ["snapshot", "--source", f"mysql://root@{HOST}:{PORT}/{src}", "--table", "orders", "--from", SRC,
            "--to", DST, "--repo", repo, "--chunk-rows", str(CHUNK_ROWS), "--workers", "1", "--json"]

    # Every S3 request of the first run waits 0.05 s: 21 chunks take ~6 s; it is killed after 3.
    with FaultProxy(moto_server, rate=1.0, faults=("delay",), delay_s=0.05) as proxy:
        env = dict(os.environ, BACKUPCTL_ENDPOINT_URL=proxy.url)
        proc = subprocess.Popen(_backupctl() + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        try:
            while len(checkpoints(aws, bucket)) < 3:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "no checkpoint appeared"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
    done_before = len(checkpoints(aws, bucket))
    assert 3 <= done_before < TASKS

    # Nothing listed: no manifest, no snapshot.
    r = cli("snapshots", "list", "--repo", repo, "--json")
    assert r.code == 0, r.err
    assert one_json(r.out) == []

    # The same command resumes: the finished chunks are not read again.
    r = cli(*args)
    assert r.code == 0, r.err
    s = one_json(r.out)
    assert s["resumed"] is True
    assert done_before <= s["tasks_skipped"] < TASKS
    assert s["rows"] == ROWS
    assert f"{s['tasks_skipped']} of {TASKS} tasks already complete; not re-reading them" in r.err
    assert "resumed an interrupted one" in r.err

    # Run state is tidied after the commit; the snapshot verifies and restores to the exact table.
    assert checkpoints(aws, bucket) == []
    r = cli("snapshots", "verify", s["snapshot_id"], "--repo", repo)
    assert r.code == 0, r.err
    r = cli("restore", s["snapshot_id"], "--to", f"mysql://root@{HOST}:{PORT}/{dst}", "--region", DST,
            "--repo", repo, "--json")
    assert r.code == 0, r.err
    restored = one_json(r.out)
    assert (restored["rows"], restored["table_rows"], restored["verification"]) == (ROWS, ROWS, "table")
    assert rows_of(dst) == rows_of(src)
