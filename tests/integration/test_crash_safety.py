"""Crash safety (issue 7, item 2): SIGKILL at random points of snapshots and restores.

For each of a DynamoDB snapshot, a MySQL snapshot, a DynamoDB restore and a
MySQL restore, ten trials (seeded): the real ``backupctl`` console script runs
as a subprocess and is killed with SIGKILL after a random delay drawn within
the measured duration of one uninterrupted run. After every kill:

* ``snapshots list`` lists only complete snapshots (every part of every listed
  snapshot present with its manifest's size and checksum);
* the same command run again completes (a snapshot resumes the killed run),
  and ``snapshots verify`` of its snapshot passes with the source's rows and
  digest;
* a restore run again (``--mode upsert`` when the killed run left a non-empty
  table, else ``--mode new``) converges to exactly the source's content.

The re-runs, listings and verifications go through the same CLI in this
process (``tests/harness/inproc.py``) to keep the set within ~2 minutes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from backupctl.aws import AwsContext
from backupctl.embedded import EmbeddedEndpoint
from backupctl.repository import Repository
from tests.harness.cli_forker import CliForker
from tests.harness.inproc import run_cli
from tests.integration.helpers import make_table, one_json, python_items, scan_all
from tests.integration.mysql_db import HOST, PORT, connect, make_orders, scratch_databases, server_up

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"
TRIALS = 10
SEED = 20261127
DDB_ITEMS = 2000
MYSQL_ROWS, CHUNK_ROWS = 3000, 300


def timed_run(forker: CliForker, args: list[str]) -> tuple[float, Any]:
    """One uninterrupted run: (seconds, its --json output)."""
    r = forker.run(args)
    assert r.code == 0, r.err
    return r.seconds, one_json(r.out)


def delays(kind: str, duration: float) -> list[float]:
    """The kill delays of ``kind``'s trials: seeded fractions of the measured duration of one run."""
    rng = random.Random(f"{SEED}-{kind}")
    return [max(0.05, rng.random() * duration) for _ in range(TRIALS)]


class Listing:
    """``snapshots list`` after a kill: every listed snapshot has all its parts (present with the size and
    checksum its manifest says). Snapshots already checked are not checked again."""

    def __init__(self, aws: AwsContext, ep: list[str], repo: str) -> None:
        self.aws, self.ep, self.repo = aws, ep, repo
        self.checked: set[str] = set()

    def check(self) -> None:
        r = run_cli(*self.ep, "snapshots", "list", "--repo", self.repo, "--json")
        if r.code == 3:  # killed before the repository existed
            return
        assert r.code == 0, r.err
        ids = {s["snapshot_id"] for s in one_json(r.out)}
        opened = Repository.open(self.aws, DST, self.repo)
        for sid in sorted(ids - self.checked):
            prefix, manifest = opened.find_snapshot(sid)
            doc = opened.store.get_json(prefix + "manifest.json")
            parts = [p.to_dict() for p in manifest.parts] + list((doc.get("key_set") or {}).get("parts") or [])
            opened.check_parts([(prefix, parts)])  # raises on a missing, short or altered part
            self.checked.add(sid)


def verify_ok(ep: list[str], sid: str, repo: str) -> None:
    r = run_cli(*ep, "snapshots", "verify", sid, "--repo", repo, "--json")
    assert r.code == 0, r.err + r.out


def snapshot_trials(aws: AwsContext, forker: CliForker, ep: list[str], repo: str, snap: list[str],
                    rows: int) -> dict[str, Any]:
    """Ten killed runs of ``snap``, each followed by the listing check, a re-run and a verify; the reference run."""
    duration, ref = timed_run(forker, [*ep, *snap])
    assert ref["rows"] == rows
    # The first run also creates the repository and warms the servers: time the kills on a second one,
    # so that they land inside a run as long as the trials' (a CI run once had most kills land after the run had ended).
    again, _ = timed_run(forker, [*ep, *snap])
    duration = min(duration, again)
    listing = Listing(aws, ep, repo)
    outcomes, resumed = [], 0
    for delay in delays(" ".join(snap[:2]), duration):
        outcomes.append(forker.run([*ep, *snap], kill_after=delay).killed)
        listing.check()
        r = run_cli(*ep, *snap)
        assert r.code == 0, r.err
        s = one_json(r.out)
        assert (s["rows"], s["digest"]) == (rows, ref["digest"]), s
        resumed += bool(s["resumed"])
        verify_ok(ep, s["snapshot_id"], repo)
    assert resumed >= 1, outcomes  # some kill landed after the run had started its snapshot
    assert outcomes.count(True) >= 3, outcomes  # most trials were killed mid-run (others finished first)
    return dict(ref)


def restore_trials(aws: AwsContext, forker: CliForker, ep: list[str], repo: str, restore: list[str],
                   target_flag: str, prefix: str, state: Any, has_rows: Any, want: Any) -> None:
    """Ten killed restores into new targets, each run again (upsert onto what the kill left, else new).

    ``state(target)``: the target's content; ``has_rows(target)``: whether it exists and holds rows.
    """
    duration, _ = timed_run(forker, [*ep, *restore, target_flag, f"{prefix}ref"])
    assert state(f"{prefix}ref") == want
    listing = Listing(aws, ep, repo)
    outcomes = []
    for i, delay in enumerate(delays(" ".join(restore[:1] + [target_flag]), duration)):
        target = f"{prefix}r{i}"
        outcomes.append(forker.run([*ep, *restore, target_flag, target], kill_after=delay).killed)
        listing.check()
        mode = "upsert" if has_rows(target) else "new"
        r = run_cli(*ep, *restore, target_flag, target, "--mode", mode)
        assert r.code == 0, f"re-run with --mode {mode}: {r.err}"
        assert state(target) == want, f"trial {i}: {target} differs from the source"
    assert outcomes.count(True) >= 3, outcomes


def dynamodb_trials(aws: AwsContext, forker: CliForker, ep: list[str], name: str) -> None:
    make_table(aws, SRC, name, DDB_ITEMS)
    want = python_items(scan_all(aws, SRC, name))
    repo = f"s3://{name}-repo"
    ref = snapshot_trials(aws, forker, ep, repo, ["snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo,
                                          "--segments", "4", "--page-size", "500", "--json"], DDB_ITEMS)
    ddb = aws.client("dynamodb", DST)

    def has_rows(table: str) -> bool:
        try:
            return bool(ddb.scan(TableName=table, Limit=1)["Items"])
        except ddb.exceptions.ResourceNotFoundException:
            return False

    restore_trials(aws, forker, ep, repo, ["restore", ref["snapshot_id"], "--region", DST, "--repo", repo, "--json"],
                   "--to-table", f"{name}-", lambda t: python_items(scan_all(aws, DST, t)), has_rows, want)


def table_rows(db: str, table: str) -> list[tuple[Any, ...]] | None:
    """Every row of ``db.table`` in key order; None when the table does not exist or is empty."""
    c = connect(db)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                        (db, table))
            if cur.fetchone()[0] == 0:
                return None
            cur.execute(f"SELECT * FROM `{table}` ORDER BY id")
            return list(cur.fetchall()) or None
    finally:
        c.close()


def mysql_trials(aws: AwsContext, forker: CliForker, ep: list[str], name: str, src: str, dst: str) -> None:
    make_orders(src, MYSQL_ROWS)
    want = table_rows(src, "orders")
    repo = f"s3://{name}-my"
    ref = snapshot_trials(aws, forker, ep, repo, ["snapshot", "--source", f"mysql://root@{HOST}:{PORT}/{src}", "--table",
                                          "orders", "--from", SRC, "--to", DST, "--repo", repo, "--chunk-rows",
                                          str(CHUNK_ROWS), "--workers", "4", "--json"], MYSQL_ROWS)
    restore_trials(aws, forker, ep, repo, ["restore", ref["snapshot_id"], "--to", f"mysql://root@{HOST}:{PORT}/{dst}",
                                   "--region", DST, "--repo", repo, "--workers", "4", "--json"],
                   "--table", "", lambda t: table_rows(dst, t), lambda t: bool(table_rows(dst, t)), want)


@pytest.fixture
def mysql_dbs() -> Iterator[tuple[str, str]]:
    if not server_up():  # pragma: no cover
        pytest.skip("MariaDB at 127.0.0.1:3306 is not running")
    with scratch_databases("bk_crash") as (src, dst):
        yield src, dst


def test_sigkill_at_random_points(aws: AwsContext, moto_server: str, mysql_dbs: tuple[str, str], name: str) -> None:
    """The DynamoDB trials (on the session's moto server) and the MySQL trials (on a moto server of their own,
    so that the two do not queue on one server process) run side by side, each sequential in itself."""
    with EmbeddedEndpoint() as own, CliForker() as f1, CliForker() as f2, \
            ThreadPoolExecutor(2, thread_name_prefix="trials") as pool:
        jobs = [pool.submit(dynamodb_trials, aws, f1, ["--endpoint-url", moto_server], name),
                pool.submit(mysql_trials, AwsContext(endpoint_url=own.url), f2, ["--endpoint-url", own.url], name,
                            *mysql_dbs)]
        for job in jobs:
            job.result()
