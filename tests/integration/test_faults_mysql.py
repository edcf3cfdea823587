"""MySQL snapshots and restores under faults (issue 7, part 1, the MySQL side).

* Reading connections killed mid-read (``KILL <id>`` from another connection
  while the server is still sending the chunk, after the chunk's first part
  was uploaded) are retried per chunk with ``--consistency none``: no row is
  lost or duplicated. With ``--consistency snapshot`` a lost session cannot be
  resumed in the same read view: the run fails with one line telling to run
  it again, lists nothing, and the same command then completes.
* A restore whose loading connection is killed while its ``LOAD DATA`` is
  inside the part (blocked on a row another transaction holds) retries the
  part and ends with exactly the source's rows; when the retries run out it
  fails, and running it again converges to the exact table.
* Snapshot and restore through the S3 fault proxy at 10% complete with exact
  counts and digests.

MariaDB at 127.0.0.1:3306 (the reads go through ``tests/harness/slow_mysql.py``,
a loopback relay that slows the server's output), S3 on the moto server.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
import pytest

from backupctl.aws import AwsContext
from tests.harness.fault_proxy import FaultProxy
from tests.harness.inproc import run_cli
from tests.harness.slow_mysql import SlowMySQL
from tests.integration.helpers import one_json
from tests.integration.mysql_db import (
    HOST,
    PORT,
    connect,
    empty_copy,
    make_orders,
    rows_of,
    scratch_databases,
    server_up,
)

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"

if not server_up():  # pragma: no cover
    pytest.skip("MariaDB at 127.0.0.1:3306 is not running", allow_module_level=True)


@pytest.fixture
def dbs() -> Iterator[tuple[str, str]]:
    with scratch_databases("bk_flt") as (src, dst):
        yield src, dst


def processlist(cur: Any, db: str, info_like: str) -> list[tuple[int, str, str, str]]:
    """(id, command, state, info) of the connections of ``db`` running a statement like ``info_like``."""
    cur.execute("SELECT ID, COMMAND, STATE, INFO FROM information_schema.PROCESSLIST "
                "WHERE DB = %s AND ID <> CONNECTION_ID() AND INFO LIKE %s", (db, info_like))
    return [(int(r[0]), str(r[1]), str(r[2] or ""), str(r[3] or "")) for r in cur.fetchall()]


class Killer(threading.Thread):
    """Polls the process list and KILLs the connections ``pick`` chooses, until ``stop()``."""

    def __init__(self, pick: Callable[[Any], list[int]]) -> None:
        super().__init__(daemon=True)
        self.pick = pick
        self.killed: list[int] = []
        self.errors: list[BaseException] = []
        self.done = threading.Event()

    def run(self) -> None:
        c = connect()
        try:
            with c.cursor() as cur:
                while not self.done.is_set():
                    for cid in self.pick(cur):
                        try:
                            cur.execute(f"KILL {int(cid)}")
                            self.killed.append(cid)
                        except pymysql.MySQLError as e:  # already gone (1094 unknown thread id)
                            if e.args[0] != 1094:
                                raise
                    time.sleep(0.005)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.errors.append(e)
        finally:
            c.close()

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=10)
        assert not self.errors, self.errors


def part_keys(aws: AwsContext, bucket: str, folder: str = "data/") -> list[str]:
    s3 = aws.client("s3", DST)
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="snapshots/")
        return [o["Key"] for page in pages for o in page.get("Contents", []) if f"/{folder}part-" in o["Key"]]
    except s3.exceptions.NoSuchBucket:
        return []


CHUNK_RE = re.compile(r"`id` > (\d+)\)")

# 16,000 rows of ~240 bytes (~3.8 MB), two chunks of 8,000: a chunk is read in two fetches (5,000 + 3,000
# rows) and its first 1 MiB part is uploaded after the first, while the server still has ~700 kB to send.
KILL_ROWS, KILL_CHUNK = 32_000, 16_000  # a chunk ~3.7 MB: its first part (1 MB) is uploaded while the rest is sent


def mid_read_picker(aws: AwsContext, bucket: str, db: str, max_kills: int,
                    kills: dict[int, tuple[int, str]]) -> Callable[[Any], list[int]]:
    """Pick a chunk's reading connection once its first part is in the repository and the server is still
    sending (command Query): once per chunk, ``max_kills`` in all. ``kills``: chunk -> (connection, state)."""

    def pick(cur: Any) -> list[int]:
        out = []
        for cid, command, state, info in processlist(cur, db, "SELECT %FROM `" + db + "`.`orders`%ORDER BY%"):
            if len(kills) >= max_kills:
                break
            if command not in ("Query", "Execute") or "OFFSET" in info:
                continue  # finished, or the planning walk of the primary key (a chunk is a prepared SELECT)
            m = CHUNK_RE.search(info)
            chunk = int(m.group(1)) // KILL_CHUNK if m else 0
            if chunk in kills:
                continue  # only the first attempt of a chunk
            if not any(k.endswith(f"/data/part-{chunk:05d}-0000.parquet") for k in part_keys(aws, bucket)):
                continue  # the client has not uploaded a part of this chunk yet
            kills[chunk] = (cid, state)
            out.append(cid)
        return out

    return pick


def test_killed_reads_are_retried_per_chunk(aws: AwsContext, cli, moto_server: str, dbs, name: str) -> None:  # type: ignore[no-untyped-def]
    src, dst = dbs
    make_orders(src, KILL_ROWS, note_bytes=200)
    bucket, repo = f"{name}-repo", f"s3://{name}-repo"
    kills: dict[int, tuple[int, str]] = {}
    with SlowMySQL(rate=1_500_000) as slow:
        assert slow.unix, "the MariaDB server's Unix socket is needed to hold a read open"
        killer = Killer(mid_read_picker(aws, bucket, src, 2, kills))
        killer.start()
        try:
            r = cli("snapshot", "--source", f"mysql://root@{HOST}:{slow.port}/{src}", "--table", "orders",
                    "--from", SRC, "--to", DST, "--repo", repo, "--chunk-rows", str(KILL_CHUNK), "--workers", "2",
                    "--consistency", "none", "--part-size-mb", "1", "--json")
        finally:
            killer.stop()
    assert r.code == 0, r.err
    # Both chunks' first reads were killed while the server was still sending (after a part was uploaded).
    assert sorted(kills) == [0, 1], kills
    assert all(state in ("Writing to net", "Sending data") for _, state in kills.values()), kills
    s = one_json(r.out)
    assert s["rows"] == KILL_ROWS
    assert s["resumed"] is False

    # Nothing lost or duplicated: the parts are exactly the manifest's, verify re-reads them, and the restore
    # (straight to the server) is the source, row for row.
    ep = ["--endpoint-url", moto_server]
    m = one_json(run_cli(*ep, "snapshots", "show", s["snapshot_id"], "--repo", repo, "--json").out)
    assert sum(p["rows"] for p in m["parts"]) == KILL_ROWS
    assert sorted(k.split("/data/")[1] for k in part_keys(aws, bucket)) == sorted(
        p["key"].split("/")[1] for p in m["parts"])
    assert {p["key"][:16] for p in m["parts"]} == {"data/part-00000-", "data/part-00001-"}
    assert all(len([p for p in m["parts"] if p["key"].startswith(f"data/part-0000{c}-")]) >= 2 for c in (0, 1))
    r = run_cli(*ep, "snapshots", "verify", s["snapshot_id"], "--repo", repo)
    assert r.code == 0, r.err
    r = run_cli(*ep, "restore", s["snapshot_id"], "--to", f"mysql://root@{HOST}:{PORT}/{dst}", "--region", DST,
                "--repo", repo, "--json")
    assert r.code == 0, r.err
    restored = one_json(r.out)
    assert (restored["rows"], restored["verification"], restored["digest"]) == (KILL_ROWS, "table", s["digest"])
    assert rows_of(dst) == rows_of(src)


def test_consistent_snapshot_cannot_survive_a_lost_session(aws: AwsContext, cli, moto_server: str, dbs,  # type: ignore[no-untyped-def]
                                                           name: str) -> None:
    src, _ = dbs
    make_orders(src, KILL_ROWS, note_bytes=200)
    bucket, repo = f"{name}-repo", f"s3://{name}-repo"
    kills: dict[int, tuple[int, str]] = {}
    with SlowMySQL(rate=1_500_000) as slow:
        args = ["snapshot", "--source", f"mysql://root@{HOST}:{slow.port}/{src}", "--table", "orders",
                "--from", SRC, "--to", DST, "--repo", repo, "--chunk-rows", str(KILL_CHUNK), "--workers", "2",
                "--part-size-mb", "1", "--json"]
        killer = Killer(mid_read_picker(aws, bucket, src, 1, kills))
        killer.start()
        try:
            r = cli(*args)
        finally:
            killer.stop()
        assert len(kills) == 1, kills
        assert r.code == 7, r.err
        lines = [ln for ln in r.err.splitlines() if ln.strip()]
        assert [ln for ln in lines if ln.startswith("error: ")] == [lines[-1]] and "Traceback" not in r.err
        assert "lost the connection holding the consistent snapshot while reading chunk" in lines[-1]
        assert "run the command again" in lines[-1] and "--consistency none" in lines[-1]
        ep = ["--endpoint-url", moto_server]
        assert one_json(run_cli(*ep, "snapshots", "list", "--repo", repo, "--json").out) == []

        # The same command resumes the run (a chunk finished before the kill is kept) and completes.
        r = cli(*args)
    assert r.code == 0, r.err
    s = one_json(r.out)
    assert s["rows"] == KILL_ROWS and s["resumed"] is True
    assert run_cli(*ep, "snapshots", "verify", s["snapshot_id"], "--repo", repo).code == 0


# -- restore with its loading connection killed ------------------------------------------------------------

RESTORE_ROWS, RESTORE_CHUNK = 4000, 1000
HELD_ID = 2500  # inside the third part: its LOAD DATA has written 499 rows when it reaches this key


def hold_row(db: str) -> pymysql.connections.Connection:
    """A transaction holding an uncommitted row with id HELD_ID: a LOAD DATA reaching it waits for its lock."""
    c = connect(db)
    with c.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("INSERT INTO orders (id, customer) VALUES (%s, 'held')", (HELD_ID,))
    return c


# What a load's statement looks like in the process list, by --load-method.
LOAD_STATEMENTS = {"load-data": ("Query", "LOAD DATA LOCAL INFILE%%"), "insert": ("Execute", "INSERT INTO%%")}


def blocked_loads(db: str, max_kills: int | None, method: str = "load-data") -> Callable[[Any], list[int]]:
    """Pick every load statement of ``db`` that waits for a row lock (``max_kills`` in all).

    InnoDB refreshes its lock tables in information_schema only when they were not read for 0.1 s, so
    they are read at most every 0.2 s, and only while a LOAD DATA has been running for 0.2 s.
    """
    n, last = [0], [0.0]

    def pick(cur: Any) -> list[int]:
        if max_kills is not None and n[0] >= max_kills:
            return []
        command, info = LOAD_STATEMENTS[method]
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND COMMAND = %s "
                    f"AND INFO LIKE '{info}' AND TIME_MS >= 200", (db, command))
        out = [int(r[0]) for r in cur.fetchall()]
        if not out or time.monotonic() - last[0] < 0.2:
            return []
        last[0] = time.monotonic()
        cur.execute("SELECT COUNT(*) FROM information_schema.INNODB_LOCK_WAITS")
        if not cur.fetchone()[0]:
            return []
        n[0] += len(out)
        return out

    return pick


def snapshot_for_restore(moto_server: str, src: str, repo: str) -> dict[str, Any]:
    make_orders(src, RESTORE_ROWS)
    r = run_cli("--endpoint-url", moto_server, "snapshot", "--source", f"mysql://root@{HOST}:{PORT}/{src}", "--table", "orders", "--from", SRC,
            "--to", DST, "--repo", repo, "--chunk-rows", str(RESTORE_CHUNK), "--json")
    assert r.code == 0, r.err
    return dict(one_json(r.out))


@pytest.mark.parametrize("method", ["load-data", "insert"])
def test_restore_with_killed_loading_connection_converges(cli, moto_server: str, dbs, name: str,  # type: ignore[no-untyped-def]
                                                          method: str) -> None:
    src, dst = dbs
    repo = f"s3://{name}-repo"
    s = snapshot_for_restore(moto_server, src, repo)
    empty_copy(src, dst, "orders")  # an empty target: --mode new loads into it
    holder = hold_row(dst)
    killer = Killer(blocked_loads(dst, 3, method))
    killer.start()
    result: dict[str, Any] = {}
    run = threading.Thread(target=lambda: result.update(r=cli(
        "restore", s["snapshot_id"], "--to", f"mysql://root@{HOST}:{PORT}/{dst}", "--region", DST, "--repo", repo,
        "--json", "--load-method", method)))
    run.start()
    try:
        deadline = time.monotonic() + 60
        while len(killer.killed) < 3 and run.is_alive():
            assert time.monotonic() < deadline, "the load never blocked on the held row"
            time.sleep(0.01)
    finally:
        holder.rollback()  # release the row: the next attempt goes through
        holder.close()
        killer.stop()
        run.join(timeout=120)
    r = result["r"]
    assert len(killer.killed) == 3, killer.killed
    assert r.code == 0, r.err
    restored = one_json(r.out)
    assert (restored["rows"], restored["verification"], restored["digest"]) == (RESTORE_ROWS, "table", s["digest"])
    assert restored["load_method"] == method
    assert rows_of(dst) == rows_of(src)


@pytest.mark.parametrize("method", ["load-data", "insert"])
def test_restore_that_runs_out_of_retries_converges_on_rerun(cli, moto_server: str, dbs, name: str,  # type: ignore[no-untyped-def]
                                                             method: str) -> None:
    src, dst = dbs
    repo = f"s3://{name}-repo"
    s = snapshot_for_restore(moto_server, src, repo)
    empty_copy(src, dst, "orders")
    holder = hold_row(dst)
    killer = Killer(blocked_loads(dst, None, method))  # every attempt of the blocked part is killed
    killer.start()
    try:
        r = cli("restore", s["snapshot_id"], "--to", f"mysql://root@{HOST}:{PORT}/{dst}", "--region", DST,
                "--repo", repo, "--json", "--load-method", method, env={"BACKUPCTL_RETRY_MAX_ATTEMPTS": "3"})
    finally:
        killer.stop()
        holder.rollback()
        holder.close()
    assert len(killer.killed) == 3, killer.killed
    assert r.code == 7, r.err
    lines = [ln for ln in r.err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in r.err
    assert "loading part data/part-00002-0000.parquet" in lines[0] and "still failing after retries" in lines[0]
    assert r.out == ""
    # The other parts were loaded; the table holds part of the snapshot. Running it again converges.
    assert 0 < len(rows_of(dst)) < RESTORE_ROWS
    r = cli("restore", s["snapshot_id"], "--to", f"mysql://root@{HOST}:{PORT}/{dst}", "--region", DST,
            "--repo", repo, "--mode", "upsert", "--json")
    assert r.code == 0, r.err
    assert rows_of(dst) == rows_of(src)


# -- S3 faults -----------------------------------------------------------------------------------------------


def test_ten_percent_s3_faults_lose_nothing(aws: AwsContext, cli, moto_server: str, dbs, name: str) -> None:  # type: ignore[no-untyped-def]
    src, dst = dbs
    make_orders(src, 3000)
    repo = f"s3://{name}-repo"
    with FaultProxy(moto_server, rate=0.10, seed=11) as proxy:
        env = {"BACKUPCTL_ENDPOINT_URL": proxy.url}
        r = cli("snapshot", "--source", f"mysql://root@{HOST}:{PORT}/{src}", "--table", "orders", "--from", SRC,
                "--to", DST, "--repo", repo, "--chunk-rows", "200", "--json", env=env)
        assert r.code == 0, r.err
        s = one_json(r.out)
        r = cli("restore", s["snapshot_id"], "--to", f"mysql://root@{HOST}:{PORT}/{dst}", "--region", DST,
                "--repo", repo, "--json", env=env)
        assert r.code == 0, r.err
        restored = one_json(r.out)
        injected = sum(v for k, v in proxy.counts.items() if k != "requests")
    assert injected >= 10, proxy.counts  # faults really happened
    assert s["rows"] == 3000 and s["parts"] == 15
    assert (restored["rows"], restored["verification"], restored["digest"]) == (3000, "table", s["digest"])
    assert rows_of(dst) == rows_of(src)
    r = run_cli("--endpoint-url", moto_server, "snapshots", "verify", s["snapshot_id"], "--repo", repo)
    assert r.code == 0, r.err
