"""MySQL incremental snapshots, chains, tombstones and verify: MariaDB at 127.0.0.1:3306 and a moto server.

Between snapshots every write stamps ``updated_at`` with the server clock
(``ON UPDATE CURRENT_TIMESTAMP(6)``) after the previous snapshot finished, and
increments run with ``--safety-lag 0``, so each change falls in exactly the
next window.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from backupctl.aws import AwsContext
from backupctl.errors import Conflict, InvalidInput, NotFound
from backupctl.restore import MySQLRestoreOptions, restore_mysql
from backupctl.snapshot import MySQLSnapshotOptions, snapshot_mysql
from backupctl.verify import verify_snapshot
from tests.integration.helpers import one_json
from tests.integration.test_mysql_cli import DST, SRC, connect, fetch, one_error_line, typed, uri

pytestmark = pytest.mark.integration

INC = ("--mode", "incremental", "--watermark-column", "updated_at", "--safety-lag", "0")

DDL = """
CREATE TABLE {name} (
  id BIGINT UNSIGNED NOT NULL,
  part SMALLINT NOT NULL,
  amount DECIMAL(20,4),
  f FLOAT,
  label VARCHAR(40) CHARACTER SET utf8mb4,
  blob_col VARBINARY(32),
  happened DATETIME(6),
  tm TIME(6),
  js JSON,
  updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  doubled BIGINT AS (id * 2) VIRTUAL,
  PRIMARY KEY (id, part),
  KEY ix_updated (updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
"""
COLS = ["id", "part", "amount", "f", "label", "blob_col", "happened", "tm", "js"]


def row(n: int, tag: str = "v") -> tuple[Any, ...]:
    return (n, n % 3, f"{n}.1250", n / 4, f"{tag}-{n} é😀", bytes([n % 256, 0, 255]),
            f"2001-02-03 04:05:{n % 60:02d}.{n:06d}", f"-{n}:00:01.5", f'{{"n": {n}, "t": "{tag}"}}')


@pytest.fixture
def dbs() -> Iterator[tuple[str, str, str]]:
    hexid = uuid.uuid4().hex[:10]
    names = (f"bk_isrc_{hexid}", f"bk_idst_{hexid}", f"bk_idst2_{hexid}")
    c = connect()
    with c.cursor() as cur:
        for n in names:
            cur.execute(f"CREATE DATABASE {n} CHARACTER SET utf8mb4")
    try:
        yield names
    finally:
        with c.cursor() as cur:
            for n in names:
                cur.execute(f"DROP DATABASE IF EXISTS {n}")
        c.close()


@pytest.fixture
def repo(name: str) -> str:
    return f"s3://{name}-repo/inc"


def sql(db: str, *statements: str, params: Any = None) -> list[tuple[Any, ...]]:
    c = connect(db)
    out: list[tuple[Any, ...]] = []
    with c.cursor() as cur:
        for s in statements:
            cur.execute(s, params)
            out = list(cur.fetchall())
    c.close()
    return out


def snap(cli, db: str, table: str, repo: str, *extra: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = cli("snapshot", "--source", uri(db), "--table", table, "--from", SRC, "--to", DST, "--repo", repo,
            "--json", *extra)
    assert r.code == 0, r.err
    return dict(one_json(r.out))


def restore(cli, sid: str, db: str, repo: str, *extra: str) -> Any:  # type: ignore[no-untyped-def]
    return cli("restore", sid, "--to", uri(db), "--region", DST, "--repo", repo, "--json", *extra)


def verify(cli, sid: str, repo: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = cli("snapshots", "verify", sid, "--repo", repo, "--json")
    assert r.code == 0, r.err
    report = dict(one_json(r.out))
    assert report["ok"] and report["problems"] == []
    return report


def same_rows(a_db: str, b_db: str, table: str) -> None:
    before, after = fetch(a_db, table), fetch(b_db, table)
    assert typed(after) == typed(before)  # values AND Python types


def test_full_plus_two_increments_restore_equal(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    src, dst, dst2 = dbs
    sql(src, DDL.format(name="t"))
    ins = f"INSERT INTO t ({', '.join(COLS)}) VALUES ({', '.join(['%s'] * len(COLS))})"
    c = connect(src)
    with c.cursor() as cur:
        cur.executemany(ins, [row(n) for n in range(1, 41)])
    c.close()
    full = snap(cli, src, "t", repo, "--chunk-rows", "15")
    assert full["mode"] == "full" and full["rows"] == 40 and full["table_rows"] == 40
    assert full["table_digest"] == full["digest"]

    # Increment 1: updates, inserts and deletes.
    sql(src, "UPDATE t SET label = 'changed-1', amount = amount + 1 WHERE id IN (2, 3)",
        "DELETE FROM t WHERE id IN (5, 6, 7)")
    c = connect(src)
    with c.cursor() as cur:
        cur.executemany(ins, [row(n, "new") for n in range(100, 105)])
    c.close()
    i1 = snap(cli, src, "t", repo, *INC, "--detect-deletes")
    assert i1["mode"] == "incremental" and i1["parent_id"] == full["snapshot_id"]
    assert i1["rows"] == 7 and i1["deleted"] == 3 and i1["table_rows"] == 42
    assert i1["window"]["column"] == "updated_at"

    # Increment 2: a deleted key comes back, an inserted row is updated then deleted, more updates.
    c = connect(src)
    with c.cursor() as cur:
        cur.execute(ins, row(5, "back"))
    c.close()
    sql(src, "UPDATE t SET js = '{\"n\": 0}', tm = '838:59:59', f = NULL WHERE id = 100",
        "UPDATE t SET label = NULL WHERE id = 40", "DELETE FROM t WHERE id IN (101, 1)")
    i2 = snap(cli, src, "t", repo, *INC, "--detect-deletes")
    assert i2["parent_id"] == i1["snapshot_id"] and i2["window"]["from"] == i1["window"]["to"]
    assert i2["rows"] == 3 and i2["deleted"] == 2 and i2["table_rows"] == 41

    # The increment verifies: data, key set and tombstones re-read.
    rep = verify(cli, i2["snapshot_id"], repo)
    assert rep["tombstones"] == {"parts": 1, "rows": 2} and rep["key_set"]["rows"] == 41

    # The chain restores into an empty database equal to the source.
    r = restore(cli, i2["snapshot_id"], dst, repo)
    assert r.code == 0, r.err
    res = one_json(r.out)
    assert res["chain"] == [full["snapshot_id"], i1["snapshot_id"], i2["snapshot_id"]]
    assert res["verification"] == "table" and res["table_rows"] == 41 and res["digest"] == i2["table_digest"]
    same_rows(src, dst, "t")

    # --only-increment onto a target holding the parent.
    r = restore(cli, i1["snapshot_id"], dst2, repo)
    assert r.code == 0, r.err
    r = restore(cli, i2["snapshot_id"], dst2, repo, "--only-increment")
    assert r.code == 0, r.err
    assert one_json(r.out)["chain"] == [i2["snapshot_id"]]
    same_rows(src, dst2, "t")

    # ... and onto a target that lost a row of the parent: the read-back catches it (exit 5).
    sql(dst2, "DELETE FROM t WHERE id = 20")
    r = restore(cli, i2["snapshot_id"], dst2, repo, "--only-increment")
    assert r.code == 5, r.err
    assert "error: restored table" in r.err and "did it hold snapshot" in r.err and "Traceback" not in r.err

    # --only-increment needs an existing table and an incremental snapshot (library: same errors, same codes).
    def only(sid: str, **kw: Any) -> MySQLRestoreOptions:
        return MySQLRestoreOptions(snapshot_id=sid, target_uri=uri(dst2), region=DST, repo_uri=repo,
                                   only_increment=True, **kw)

    with pytest.raises(NotFound, match="does not exist"):
        restore_mysql(aws, only(i2["snapshot_id"], table="absent"))
    with pytest.raises(InvalidInput, match="needs an incremental snapshot"):
        restore_mysql(aws, only(full["snapshot_id"]))
    with pytest.raises(InvalidInput, match="cannot be combined"):
        restore_mysql(aws, only(i2["snapshot_id"], mode="truncate"))


def test_row_on_the_window_boundary_is_taken_once(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    src, dst, _ = dbs
    sql(src, "CREATE TABLE b (id INT PRIMARY KEY, v VARCHAR(10), updated_at DATETIME(6) NOT NULL)")
    sql(src, "INSERT INTO b VALUES (1, 'a', '2001-01-01'), (2, 'b', '2001-01-01'), (3, 'c', '2001-01-01')")
    full = snapshot_mysql(aws, MySQLSnapshotOptions(source_uri=uri(src), table="b", source_region=SRC,
                                                    target_region=DST, repo_uri=repo)).manifest
    (now,) = sql(src, "SELECT NOW(6)")[0]
    assert isinstance(now, datetime)
    edge = now.isoformat(sep=" ", timespec="microseconds")
    sql(src, "UPDATE b SET v = 'on-edge', updated_at = %s WHERE id = 1", params=(edge,))
    sql(src, "UPDATE b SET v = 'before', updated_at = %s - INTERVAL 1 MICROSECOND WHERE id = 2", params=(edge,))
    # Increment 1 ends exactly at the stamp of row 1 (library option; the CLI ends at server clock - lag).
    opts = MySQLSnapshotOptions(source_uri=uri(src), table="b", source_region=SRC, target_region=DST, repo_uri=repo,
                                mode="incremental", watermark_column="updated_at", safety_lag_s=0,
                                window_to=now, detect_deletes=True)
    i1 = snapshot_mysql(aws, opts)
    assert i1.manifest.window == {"column": "updated_at", "from": i1.manifest.window["from"], "to": edge}
    assert i1.manifest.parent_id == full.id and i1.manifest.rows == 1  # row 2 only
    i2 = snap(cli, src, "b", repo, *INC)
    assert i2["window"]["from"] == edge and i2["rows"] == 1  # row 1 only: once, in the next window

    def ids(sid: str) -> set[int]:
        import io

        import pyarrow.parquet as pq
        bucket, prefix = repo[5:].split("/", 1)
        s3 = aws.client("s3", DST)
        base = f"{prefix}/snapshots/mysql.{SRC}.{src}.b/{sid}/data/"
        out: set[int] = set()
        for obj in s3.list_objects_v2(Bucket=bucket, Prefix=base).get("Contents", []):
            data = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out |= {r["id"] for r in pq.read_table(io.BytesIO(data)).to_pylist()}
        return out

    assert ids(i1.manifest.id) == {2} and ids(i2["snapshot_id"]) == {1}
    r = restore(cli, i2["snapshot_id"], dst, repo)
    assert r.code == 0, r.err
    same_rows(src, dst, "b")


def test_text_primary_key_chain_and_verify(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    src, dst, _ = dbs
    sql(src, "CREATE TABLE s (k VARCHAR(20) COLLATE utf8mb4_general_ci NOT NULL, n INT, "
             "updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), "
             "PRIMARY KEY (k))")
    c = connect(src)
    with c.cursor() as cur:
        cur.executemany("INSERT INTO s (k, n) VALUES (%s, %s)",
                        [(k, i) for i, k in enumerate(["b", "A", "c", "é", "Z", "y", "a b"])])
    c.close()
    full = snap(cli, src, "s", repo)
    rep = verify(cli, full["snapshot_id"], repo)  # a full MySQL snapshot verifies too
    assert rep["key_set"] == {"parts": 1, "rows": 7} and rep["rows"] == 7
    sql(src, "DELETE FROM s WHERE k IN ('A', 'y')", "UPDATE s SET n = 99 WHERE k = 'é'",
        "INSERT INTO s (k, n) VALUES ('a', 1), ('ß', 2)")
    i1 = snap(cli, src, "s", repo, *INC, "--detect-deletes")
    assert i1["rows"] == 3 and i1["deleted"] == 2 and i1["table_rows"] == 7
    r = cli("snapshots", "show", i1["snapshot_id"], "--repo", repo, "--json")
    assert r.code == 0, r.err
    m = one_json(r.out)
    assert m["mode"] == "incremental" and m["parent_id"] == full["snapshot_id"] and m["window"] == i1["window"]
    assert m["tombstones"]["rows"] == 2 and m["key_set"]["rows"] == 7 and m["table_digest"]["rows"] == 7
    r = restore(cli, i1["snapshot_id"], dst, repo)
    assert r.code == 0, r.err
    assert sorted(fetch(dst, "s")) == sorted(fetch(src, "s"))

    # verify re-reads key-set and tombstone parts and names the damaged one (exit 5).
    bucket, prefix = repo[5:].split("/", 1)
    s3 = aws.client("s3", DST)
    base = f"{prefix}/snapshots/mysql.{SRC}.{src}.s/{i1['snapshot_id']}/"
    for key in ("tombstones/part-00000-0000.parquet", "keys/part-00000-0000.parquet"):
        original = s3.get_object(Bucket=bucket, Key=base + key)["Body"].read()
        s3.put_object(Bucket=bucket, Key=base + key, Body=original[:-20] + b"\x00" * 20)
        if key.startswith("tombstones/"):
            r = cli("snapshots", "verify", i1["snapshot_id"], "--repo", repo)
            assert r.code == 5 and key in r.err, r.err
        else:
            report = verify_snapshot(aws, DST, i1["snapshot_id"], repo)
            assert not report["ok"] and any(key in p for p in report["problems"])
        s3.put_object(Bucket=bucket, Key=base + key, Body=original)
    s3.put_object(Bucket=bucket, Key=base + "keys/part-00000-0009.parquet", Body=b"stray")
    report = verify_snapshot(aws, DST, i1["snapshot_id"], repo)
    assert report["problems"] == ["unlisted object under keys/: keys/part-00000-0009.parquet"]


def test_refusals_write_nothing(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    src, _, _ = dbs
    sql(src, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10), d DATE, "
             "updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6))",
        "INSERT INTO t (id, v, d) VALUES (1, 'x', '2001-01-01')",
        "CREATE TABLE nopk (a INT, updated_at DATETIME(6))")
    bucket = repo[5:].split("/")[0]

    def bucket_exists() -> bool:
        return bucket in {b["Name"] for b in aws.client("s3", DST).list_buckets()["Buckets"]}

    def inc(table: str, column: str) -> Any:
        return cli("snapshot", "--source", uri(src), "--table", table, "--from", SRC, "--to", DST, "--repo", repo,
                   "--mode", "incremental", "--watermark-column", column)

    def lib(table: str, column: str | None) -> MySQLSnapshotOptions:
        return MySQLSnapshotOptions(source_uri=uri(src), table=table, source_region=SRC, target_region=DST,
                                    repo_uri=repo, mode="incremental", watermark_column=column)

    r = inc("t", "nope")
    assert r.code == 2 and "'nope' is not a column" in one_error_line(r.err)
    r = inc("t", "v")
    assert r.code == 2 and "must be DATETIME or TIMESTAMP" in one_error_line(r.err)
    r = inc("t", "updated_at")  # no parent
    assert r.code == 3 and "take a full snapshot first" in one_error_line(r.err)
    with pytest.raises(InvalidInput, match="must be DATETIME or TIMESTAMP"):
        snapshot_mysql(aws, lib("t", "d"))  # DATE is too coarse for windows
    with pytest.raises(InvalidInput, match="no primary key"):
        snapshot_mysql(aws, lib("nopk", "updated_at"))
    with pytest.raises(InvalidInput, match="--watermark-column"):
        snapshot_mysql(aws, lib("t", None))
    assert not bucket_exists()

    # A full snapshot of a table without a primary key warns; the repository still has no parent for t.
    r = cli("snapshot", "--source", uri(src), "--table", "nopk", "--from", SRC, "--to", DST, "--repo", repo)
    assert r.code == 0 and "warning: table nopk has no primary key" in r.err
    with pytest.raises(NotFound, match="take a full snapshot first"):
        snapshot_mysql(aws, lib("t", "updated_at"))
    # A parent whose table has changed its columns since: refused (exit 4).
    snapshot_mysql(aws, MySQLSnapshotOptions(source_uri=uri(src), table="t", source_region=SRC, target_region=DST,
                                             repo_uri=repo))
    sql(src, "ALTER TABLE t ADD COLUMN extra INT")
    with pytest.raises(Conflict, match="changed its columns"):
        snapshot_mysql(aws, lib("t", "updated_at"))
