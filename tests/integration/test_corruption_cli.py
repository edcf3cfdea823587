"""Corrupt snapshots through the real CLI: `snapshots verify` names the part, and every restore target
(DynamoDB, MySQL, Redshift's PostgreSQL stand-in) refuses the snapshot before it writes anything.

A "flipped byte" is the hardest case: the part is rewritten with the same size, the same metadata and a
correct S3 SHA-256 of the new bytes, so only the comparison with the manifest can tell.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pymysql
import pytest

from backupctl.aws import AwsContext
from tests.integration.helpers import make_table, one_json
from tests.integration.mysql_db import scratch_databases

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"
PG_URI = "postgres://postgres@127.0.0.1:5432/test"


def my(db: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=db, autocommit=True)


def pg() -> psycopg.Connection:  # type: ignore[type-arg]
    return psycopg.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", autocommit=True)


def _up() -> bool:
    try:
        my().close()
        pg().close()
        return True
    except (pymysql.MySQLError, psycopg.Error):
        return False


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("error: ")
    return lines[0]


def flip_byte(aws: AwsContext, bucket: str, key: str) -> None:
    """Rewrite the object with one bit changed: same size, same metadata, a correct S3 checksum of the new bytes."""
    s3 = aws.client("s3", DST)
    obj = s3.get_object(Bucket=bucket, Key=key)
    body = bytearray(obj["Body"].read())
    body[len(body) // 2] ^= 0x01
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body), Metadata=obj["Metadata"], ChecksumAlgorithm="SHA256")


def test_dynamodb_flipped_and_missing_part(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 200)
    bucket, repo = f"{name}-repo", f"s3://{name}-repo"
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--json")
    assert r.code == 0, r.err
    sid = one_json(r.out)["snapshot_id"]
    key = f"snapshots/dynamodb.us-east-1.{name}/{sid}/data/part-00000-0000.json.gz"
    flip_byte(aws, bucket, key)

    r = cli("snapshots", "verify", sid, "--repo", repo)
    assert r.code == 5
    assert "error: part data/part-00000-0000.json.gz: sha256 " in r.err
    r = cli("restore", sid, "--to-table", f"{name}-copy", "--region", DST, "--repo", repo)
    assert r.code == 5
    line = one_error_line(r.err)
    assert line.startswith(f"error: part data/part-00000-0000.json.gz of snapshot {sid} has sha256 ")
    assert line.endswith("(corrupt or replaced); restore refused before writing anything")
    assert f"{name}-copy" not in aws.client("dynamodb", DST).list_tables()["TableNames"]

    aws.client("s3", DST).delete_object(Bucket=bucket, Key=key)
    r = cli("restore", sid, "--to-table", f"{name}-copy", "--region", DST, "--repo", repo)
    assert r.code == 5
    assert f"of snapshot {sid} is missing (s3://{bucket}/{key})" in one_error_line(r.err)
    assert f"{name}-copy" not in aws.client("dynamodb", DST).list_tables()["TableNames"]


@pytest.fixture
def dbs() -> Iterator[tuple[str, str]]:
    if not _up():  # pragma: no cover
        pytest.skip("MariaDB at 127.0.0.1:3306 or PostgreSQL at 127.0.0.1:5432 is not running")

    def fill(cur: Any, src: str, dst: str) -> None:
        cur.execute(f"CREATE TABLE {src}.t (id INT PRIMARY KEY, v VARCHAR(20))")
        cur.executemany(f"INSERT INTO {src}.t VALUES (%s, %s)", [(i, f"v{i}") for i in range(1, 101)])
        cur.execute(f"CREATE TABLE {dst}.kept LIKE {src}.t")
        cur.execute(f"INSERT INTO {dst}.kept VALUES (1, 'mine'), (2, 'mine too')")

    with scratch_databases("bk_cor", fill) as (src, dst):
        try:
            yield src, dst
        finally:
            with pg() as p:
                p.execute(f"DROP TABLE IF EXISTS public.{src}_t")


def test_mysql_and_redshift_targets_refuse_a_corrupt_snapshot(aws: AwsContext, cli, name: str,  # type: ignore[no-untyped-def]
                                                              dbs: tuple[str, str]) -> None:
    src, dst = dbs
    bucket, repo = f"{name}-repo", f"s3://{name}-repo"
    r = cli("snapshot", "--source", f"mysql://root@127.0.0.1:3306/{src}", "--table", "t", "--from", SRC, "--to", DST,
            "--repo", repo, "--json")
    assert r.code == 0, r.err
    sid = one_json(r.out)["snapshot_id"]
    key = f"snapshots/mysql.us-east-1.{src}.t/{sid}/data/part-00000-0000.parquet"
    flip_byte(aws, bucket, key)
    to = f"mysql://root@127.0.0.1:3306/{dst}"

    def table_exists(table: str) -> bool:
        c = my(dst)
        with c.cursor() as cur:
            found = cur.execute("SHOW TABLES LIKE %s", (table,))
        c.close()
        return bool(found)

    # A new table is never created; an existing one is neither dropped nor changed.
    r = cli("restore", sid, "--to", to, "--table", "t", "--region", DST, "--repo", repo)
    assert r.code == 5
    assert f"part data/part-00000-0000.parquet of snapshot {sid} has sha256 " in one_error_line(r.err)
    assert not table_exists("t")
    r = cli("restore", sid, "--to", to, "--table", "kept", "--region", DST, "--repo", repo, "--mode", "replace",
            "--yes")
    assert r.code == 5 and "restore refused before writing anything" in one_error_line(r.err)
    c = my(dst)
    with c.cursor() as cur:
        cur.execute("SELECT * FROM kept ORDER BY id")
        assert cur.fetchall() == ((1, "mine"), (2, "mine too"))
    c.close()
    # The Redshift target (PostgreSQL stand-in) refuses it the same way.
    r = cli("restore", sid, "--to", PG_URI, "--table", f"public.{src}_t", "--region", DST, "--repo", repo)
    assert r.code == 5 and f"part data/part-00000-0000.parquet of snapshot {sid}" in one_error_line(r.err)
    with pg() as p:
        assert p.execute("SELECT to_regclass(%s)", (f"public.{src}_t",)).fetchone() == (None,)

    aws.client("s3", DST).delete_object(Bucket=bucket, Key=key)
    r = cli("restore", sid, "--to", to, "--table", "t", "--region", DST, "--repo", repo)
    assert r.code == 5 and "is missing" in one_error_line(r.err)
    assert not table_exists("t")
