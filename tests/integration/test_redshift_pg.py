"""Restores into Redshift's local stand-in, PostgreSQL at 127.0.0.1:5432 (+ MariaDB and a moto server).

The stand-in runs the same staging + merge statements as Redshift in one
transaction, with the COPY done client-side. Every insert mode, the type
mapping, MySQL chains with tombstones, DynamoDB items (38-digit numbers),
idempotent re-runs, and failures in the middle of the load (a bad row, a
killed connection) that leave the target exactly as it was.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pymysql
import pytest

from backupctl.aws import AwsContext
from backupctl.errors import DataPathError, InvalidInput, VerificationFailed
from backupctl.restore import RedshiftRestoreOptions, restore_redshift
from backupctl.snapshot import MySQLSnapshotOptions, snapshot_mysql
from tests.integration.helpers import one_json

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}
PG_URI = "postgres://postgres@127.0.0.1:5432/test"


def pg() -> psycopg.Connection[Any]:
    return psycopg.connect(**PG, autocommit=True)  # type: ignore[arg-type]


def my(db: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=db, charset="utf8mb4",
                           autocommit=True, init_command="SET time_zone = '+00:00'")


def _up() -> bool:
    try:
        pg().close()
        my().close()
        return True
    except (psycopg.Error, pymysql.MySQLError):
        return False


if not _up():  # pragma: no cover
    pytest.skip("PostgreSQL at 127.0.0.1:5432 or MariaDB at 127.0.0.1:3306 is not running", allow_module_level=True)


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def schema() -> Iterator[str]:
    """A PostgreSQL schema of this test (a hostile-ish name), dropped afterwards."""
    name = f'bk rs"{uuid.uuid4().hex[:8]}'
    q = '"' + name.replace('"', '""') + '"'
    with pg() as c:
        c.execute(f"CREATE SCHEMA {q}")
    try:
        yield name
    finally:
        with pg() as c:
            c.execute(f"DROP SCHEMA {q} CASCADE")


@pytest.fixture
def srcdb() -> Iterator[str]:
    db = f"bk_rs_{uuid.uuid4().hex[:10]}"
    c = my()
    with c.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db} CHARACTER SET utf8mb4")
    try:
        yield db
    finally:
        with c.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db}")
        c.close()


@pytest.fixture
def repo(name: str) -> str:
    return f"s3://{name}-repo/rs"


def mysql_sql(db: str, *statements: str, params: Any = None, many: list[tuple[Any, ...]] | None = None) -> None:
    c = my(db)
    with c.cursor() as cur:
        for s in statements:
            if many is not None:
                cur.executemany(s, many)
            else:
                cur.execute(s, params)
    c.close()


def snapshot(aws: AwsContext, db: str, table: str, repo: str, **kw: Any) -> dict[str, Any]:
    """A MySQL snapshot through the library (the CLI's snapshot command is tested elsewhere)."""
    opts = MySQLSnapshotOptions(source_uri=f"mysql://root@127.0.0.1:3306/{db}", table=table, source_region=SRC,
                                target_region=DST, repo_uri=repo, **kw)
    return snapshot_mysql(aws, opts).to_json()


def ref(schema: str, table: str) -> str:
    return '"' + schema.replace('"', '""') + '"."' + table.replace('"', '""') + '"'


def rows(schema: str, table: str, order: str = "1") -> list[tuple[Any, ...]]:
    with pg() as c:
        return list(c.execute(f"SELECT * FROM {ref(schema, table)} ORDER BY {order}").fetchall())


def restore(aws: AwsContext, sid: str, repo: str, schema: str, table: str, **kw: Any) -> dict[str, Any]:
    opts = RedshiftRestoreOptions(snapshot_id=sid, target_uri=PG_URI, region=DST, repo_uri=repo,
                                  table=f"{schema}.{table}", **kw)
    return restore_redshift(aws, opts)


TYPES_DDL = """
CREATE TABLE types (
  id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  flag TINYINT(1), ti TINYINT, su SMALLINT UNSIGNED, mi MEDIUMINT, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
  d38 DECIMAL(38,10), d10 DECIMAL(10,2), f FLOAT, d DOUBLE,
  dt DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL, dd DATE, tm TIME(6), yr YEAR,
  vc VARCHAR(10), ch CHAR(3), lat VARCHAR(5) CHARACTER SET latin1, txt TEXT, js JSON,
  bin BINARY(4), vb VARBINARY(16), bl BLOB, b9 BIT(9), e ENUM('s','m','large'),
  gen BIGINT AS (bi * 2) VIRTUAL
) DEFAULT CHARSET=utf8mb4
"""
TYPES_COLS = ["id", "flag", "ti", "su", "mi", "iu", "bi", "bu", "d38", "d10", "f", "d", "dt", "ts", "dd", "tm", "yr",
              "vc", "ch", "lat", "txt", "js", "bin", "vb", "bl", "b9", "e"]
TYPES_ROWS = [
    (18446744073709551615, 1, -128, 65535, -8388608, 4294967295, -9223372036854775808, 18446744073709551615,
     "-9999999999999999999999999999.9999999999", "-12345678.91", "3.4028234663852886e38", "1.7976931348623157e308",
     "9999-12-31 23:59:59.999999", "2038-01-19 03:14:07.999999", "1000-01-01", "-838:59:59.000000", 2155,
     "😀😀😀😀😀😀😀😀😀😀", "äöü", "café", "emoji 😀 𝄞", '{"b": [1, 2.50], "a": "é"}',
     b"\x00\x01\x00\xff", b"\x00nul\x00", bytes(range(256)), 511, "large"),
    (2, 0, 127, 0, 8388607, 0, 9223372036854775807, 0, "0.0000000001", "0.01", "1.1754943508222875e-38",
     "4.9406564584124654e-324", "1970-01-01 00:00:00.000001", "1970-01-01 00:00:01.000000", "9999-12-31",
     "25:00:00.000001", 1901, "", "", "", "", "[]", b"\x00" * 4, b"", b"", 0, "s"),
    (3,) + (None,) * (len(TYPES_COLS) - 1),
]


def test_types_modes_and_idempotent_reruns(aws: AwsContext, cli, srcdb: str, schema: str, repo: str) -> None:  # type: ignore[no-untyped-def]
    mysql_sql(srcdb, TYPES_DDL)
    mysql_sql(srcdb, f"INSERT INTO types ({', '.join(TYPES_COLS)}) VALUES ({', '.join(['%s'] * len(TYPES_COLS))})",
              many=TYPES_ROWS)
    snap = snapshot(aws, srcdb, "types", repo)
    base = ("restore", snap["snapshot_id"], "--to", PG_URI, "--region", DST, "--repo", repo,
            "--table", f"{schema}.copy", "--json")
    r = cli(*base)
    assert r.code == 0, r.err
    res = one_json(r.out)
    assert {"snapshot_id", "target", "rows", "digest", "duration_s", "insert_mode"} <= set(res)
    assert res["insert_mode"] == "OVERWRITE_EXISTING" and res["rows"] == 3 and res["table_rows"] == 3
    assert res["verification"] == "table" and res["digest"] == snap["digest"]  # read back, same mysql-row-v1 digest
    assert res["verified_by"] == "bytes compared"  # every type reads back as the bytes sent (docs/adr/0020)
    assert res["copy_format"] == "binary"  # every column type has a binary encoding
    assert res["target"]["kind"] == "postgres" and res["target"]["schema"] == schema

    with pg() as c:
        types = dict(c.execute(
            "SELECT column_name, CASE WHEN data_type IN ('character varying', 'numeric') THEN "
            "data_type || '(' || COALESCE(character_maximum_length, numeric_precision) || ',' || "
            "COALESCE(numeric_scale, 0) || ')' ELSE data_type END FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = 'copy'", (schema,)).fetchall())
    assert types == {
        "id": "numeric(20,0)", "flag": "boolean", "ti": "smallint", "su": "integer", "mi": "integer",
        "iu": "bigint", "bi": "bigint", "bu": "numeric(20,0)", "d38": "numeric(38,10)", "d10": "numeric(10,2)",
        "f": "real", "d": "double precision", "dt": "timestamp without time zone",
        "ts": "timestamp with time zone", "dd": "date", "tm": "bigint", "yr": "smallint",
        "vc": "character varying(40,0)", "ch": "character varying(12,0)", "lat": "character varying(15,0)",
        "txt": "character varying(65535,0)", "js": "character varying(65535,0)", "bin": "bytea", "vb": "bytea",
        "bl": "bytea", "b9": "bigint", "e": "character varying(84,0)",
    }  # no generated column; VARCHAR lengths in bytes (utf8mb4 x4, latin1 x3); MariaDB's JSON is LONGTEXT
    got = {r[0]: r for r in rows(schema, "copy")}
    top = got[18446744073709551615]
    assert top[1] is True and top[7] == 18446744073709551615 and top[8] == Decimal(TYPES_ROWS[0][8])
    assert top[15] == -(838 * 3600 + 59 * 60 + 59) * 1_000_000  # TIME as signed microseconds
    assert top[21] == TYPES_ROWS[0][21]  # MariaDB JSON is text: kept verbatim (MySQL's JSON type becomes SUPER)
    assert top[24] == bytes(range(256)) and top[22] == b"\x00\x01\x00\xff" and top[25] == 511
    assert got[3][1:] == (None,) * (len(TYPES_COLS) - 1)
    want = rows(schema, "copy")

    # Re-running KEEP_EXISTING / OVERWRITE_EXISTING / TRUNCATE leaves the same table; APPEND adds every row.
    for mode in ("OVERWRITE_EXISTING", "KEEP_EXISTING", "TRUNCATE"):
        res = restore(aws, snap["snapshot_id"], repo, schema, "copy", insert_mode=mode)
        assert res["insert_mode"] == mode and res["table_rows"] == 3
        assert res["verification"] == ("table" if mode == "TRUNCATE" else "parts")
        assert rows(schema, "copy") == want, mode
    r = cli(*base, "--insert-mode", "append")  # the CLI takes the mode in any case
    assert r.code == 0, r.err
    assert one_json(r.out)["table_rows"] == 6 and len(rows(schema, "copy")) == 6

    # An empty target of the user's making whose types differ from the plan's (SMALLINT -> INTEGER):
    # binary values would be read as the wrong type, so its COPY is CSV and the server converts.
    with pg() as c:
        c.execute(f"CREATE TABLE {ref(schema, 'mine')} (LIKE {ref(schema, 'copy')})")
        c.execute(f"ALTER TABLE {ref(schema, 'mine')} ALTER COLUMN ti TYPE INTEGER, ALTER COLUMN yr TYPE INTEGER")
    r = cli(*base[:-3], "--table", f"{schema}.mine", "--json")
    assert r.code == 0, r.err
    res = one_json(r.out)
    assert res["copy_format"] == "csv" and res["verification"] == "table" and res["digest"] == snap["digest"]
    assert rows(schema, "mine") == want

    # DECIMAL wider than Redshift's 38 digits is refused before anything is written (exit 2).
    mysql_sql(srcdb, "CREATE TABLE wide (id INT PRIMARY KEY, d DECIMAL(65,30))")
    wide = snapshot(aws, srcdb, "wide", repo)
    r = cli("restore", wide["snapshot_id"], "--to", PG_URI, "--region", DST, "--repo", repo, "--table",
            f"{schema}.wide")
    assert r.code == 2 and "DECIMAL(65,30)" in one_error_line(r.err)
    with pg() as c:
        assert c.execute("SELECT to_regclass(%s)", (ref(schema, "wide"),)).fetchone() == (None,)


def test_insert_mode_semantics(aws: AwsContext, cli, srcdb: str, schema: str, repo: str) -> None:  # type: ignore[no-untyped-def]
    mysql_sql(srcdb, "CREATE TABLE t (a INT NOT NULL, b VARCHAR(3) NOT NULL, v VARCHAR(20), PRIMARY KEY (a, b))")
    mysql_sql(srcdb, "INSERT INTO t VALUES (%s, %s, %s)", many=[(n, "k", f"v{n}") for n in range(1, 6)])
    sid = snapshot(aws, srcdb, "t", repo)["snapshot_id"]
    snap_rows = [(n, "k", f"v{n}") for n in range(1, 6)]

    def reset() -> None:
        restore(aws, sid, repo, schema, "t", insert_mode="TRUNCATE")
        with pg() as c:
            c.execute(f"UPDATE {ref(schema, 't')} SET v = 'changed' WHERE a = 1")
            c.execute(f"DELETE FROM {ref(schema, 't')} WHERE a = 2")
            c.execute(f"INSERT INTO {ref(schema, 't')} VALUES (99, 'k', 'other')")

    reset()
    res = restore(aws, sid, repo, schema, "t", insert_mode="KEEP_EXISTING")  # only keys that are new
    assert rows(schema, "t") == [(1, "k", "changed"), *snap_rows[1:], (99, "k", "other")]
    assert res["table_rows"] == 6 and res["verification"] == "parts"
    reset()
    restore(aws, sid, repo, schema, "t", insert_mode="OVERWRITE_EXISTING")  # matching keys replaced, rest added
    assert rows(schema, "t") == [*snap_rows, (99, "k", "other")]
    reset()
    restore(aws, sid, repo, schema, "t", insert_mode="TRUNCATE")  # emptied, then loaded
    assert rows(schema, "t") == snap_rows
    restore(aws, sid, repo, schema, "t", insert_mode="APPEND")  # every row added (Redshift keys are not enforced)
    assert rows(schema, "t", "1, 2, 3") == sorted(snap_rows * 2)
    restore(aws, sid, repo, schema, "t", insert_mode="OVERWRITE_EXISTING")  # duplicates collapse to one row per key
    assert rows(schema, "t") == snap_rows

    # A target with other columns is refused (exit 4) and left alone; a missing schema is exit 3.
    with pg() as c:
        c.execute(f"CREATE TABLE {ref(schema, 'other')} (a INT, x TEXT)")
    r = cli("restore", sid, "--to", PG_URI, "--region", DST, "--repo", repo, "--table", f"{schema}.other")
    assert r.code == 4 and "refusing to load" in one_error_line(r.err)
    r = cli("restore", sid, "--to", PG_URI, "--region", DST, "--repo", repo, "--table", "bk_no_such_schema.t")
    assert r.code == 3 and "does not exist" in one_error_line(r.err)


INC = {"mode": "incremental", "watermark_column": "updated_at", "safety_lag_s": 0, "detect_deletes": True}


def test_chain_with_tombstones_and_bad_row_rolls_back(aws: AwsContext, cli, srcdb: str, schema: str,  # type: ignore[no-untyped-def]
                                                      repo: str) -> None:
    mysql_sql(srcdb, "CREATE TABLE c (id INT PRIMARY KEY, v VARCHAR(20), big MEDIUMTEXT, "
                     "updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), "
                     "KEY (updated_at))")
    mysql_sql(srcdb, "INSERT INTO c (id, v) VALUES (%s, %s)", many=[(n, f"v{n}") for n in range(1, 11)])
    full = snapshot(aws, srcdb, "c", repo, chunk_rows=4)
    mysql_sql(srcdb, "UPDATE c SET v = 'changed' WHERE id IN (1, 2)", "DELETE FROM c WHERE id IN (3, 4)")
    mysql_sql(srcdb, "INSERT INTO c (id, v) VALUES (%s, %s)", many=[(11, "new"), (12, "new")])
    inc = snapshot(aws, srcdb, "c", repo, **INC)
    assert inc["deleted"] == 2 and inc["parent_id"] == full["snapshot_id"]

    def source() -> list[tuple[Any, ...]]:
        c = my(srcdb)
        with c.cursor() as cur:
            cur.execute("SELECT id, v, big, updated_at FROM c ORDER BY id")
            out = [(r[0], r[1], r[2], r[3]) for r in cur.fetchall()]
        c.close()
        return out

    def target() -> list[tuple[Any, ...]]:
        return [(r[0], r[1], r[2], r[3].replace(tzinfo=None)) for r in rows(schema, "c")]

    r = cli("restore", inc["snapshot_id"], "--to", PG_URI, "--region", DST, "--repo", repo, "--table",
            f"{schema}.c", "--json")
    assert r.code == 0, r.err
    res = one_json(r.out)
    assert res["chain"] == [full["snapshot_id"], inc["snapshot_id"]] and res["deleted"] == 2
    assert res["table_rows"] == 10 and res["verification"] == "table" and res["digest"] == inc["table_digest"]
    assert target() == source()
    # Idempotent: the same chain again (OVERWRITE_EXISTING, then TRUNCATE) gives the same table.
    for mode in ("OVERWRITE_EXISTING", "TRUNCATE"):
        assert restore(aws, inc["snapshot_id"], repo, schema, "c", insert_mode=mode)["table_rows"] == 10
        assert target() == source()
    for mode in ("APPEND", "KEEP_EXISTING"):
        with pytest.raises(InvalidInput, match="cannot apply increments"):
            restore(aws, inc["snapshot_id"], repo, schema, "c", insert_mode=mode)

    # A second increment carries a row Redshift cannot hold (70,000 bytes > VARCHAR(65535)).
    mysql_sql(srcdb, "UPDATE c SET v = 'third' WHERE id = 5")
    mysql_sql(srcdb, "UPDATE c SET big = %s WHERE id = 6", params=("x" * 70_000,))
    bad = snapshot(aws, srcdb, "c", repo, **INC)
    with pg() as c:
        c.execute(f"UPDATE {ref(schema, 'c')} SET v = 'local edit' WHERE id = 1")
    before = rows(schema, "c")
    r = cli("restore", bad["snapshot_id"], "--to", PG_URI, "--region", DST, "--repo", repo, "--table",
            f"{schema}.c")
    assert r.code == 4, r.err
    line = r.err.strip().splitlines()[-1]  # after the progress output: one error line, no traceback
    assert line.startswith("error: ") and "Traceback" not in r.err
    assert "data/part-00000-0000.parquet" in line and "row 2" in line and "'big'" in line
    assert bad["snapshot_id"] in line and "nothing was committed" in line
    assert rows(schema, "c") == before  # the full snapshot and first increment, re-applied in the failed run, rolled back


def test_connection_killed_mid_load_leaves_target_unchanged(aws: AwsContext, cli, srcdb: str, schema: str,  # type: ignore[no-untyped-def]
                                                           repo: str) -> None:
    mysql_sql(srcdb, "CREATE TABLE k (id INT PRIMARY KEY, v VARCHAR(20))")
    mysql_sql(srcdb, "INSERT INTO k VALUES (%s, %s)", many=[(n, f"v{n}") for n in range(1, 301)])
    sid = snapshot(aws, srcdb, "k", repo, chunk_rows=100)["snapshot_id"]
    restore(aws, sid, repo, schema, "k")
    with pg() as c:
        c.execute(f"UPDATE {ref(schema, 'k')} SET v = 'edited' WHERE id <= 150")
    before = rows(schema, "k")
    pid: list[int] = []
    loads: list[str] = []

    def on_event(msg: str) -> None:
        if "backend pid" in msg:
            pid.append(int(msg.rsplit(" ", 1)[1].rstrip(")")))
        if "loading data part" in msg:
            loads.append(msg)
            if len(loads) == 2:  # the first part is in staging; kill the session from another connection
                with pg() as c:
                    assert c.execute("SELECT pg_terminate_backend(%s)", (pid[0],)).fetchone() == (True,)

    opts = RedshiftRestoreOptions(snapshot_id=sid, target_uri=PG_URI, region=DST, repo_uri=repo,
                                  table=f"{schema}.k", insert_mode="TRUNCATE")
    with pytest.raises(DataPathError) as ei:
        restore_redshift(aws, opts, on_event=on_event)
    assert "connection lost" in ei.value.message and "nothing was committed" in ei.value.message
    assert "part-00001-0000.parquet" in ei.value.message
    assert rows(schema, "k") == before
    # The same command afterwards succeeds.
    assert restore(aws, sid, repo, schema, "k", insert_mode="TRUNCATE")["table_rows"] == 300


def test_dynamodb_items_keep_38_digit_numbers(aws: AwsContext, cli, name: str, schema: str, repo: str) -> None:  # type: ignore[no-untyped-def]
    ddb = aws.client("dynamodb", SRC)
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "n", "KeyType": "RANGE"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "n", "AttributeType": "N"}])
    big = "12345678901234567890123456789012345678"
    items = [
        {"pk": {"S": "a 😀"}, "n": {"N": big}, "price": {"N": "-0.00000000000000000000000000000000000001"},
         "blob": {"B": b"\x00\xff"}, "tags": {"SS": ["x", "y"]}, "nums": {"NS": ["1", big]},
         "m": {"M": {"deep": {"L": [{"N": "1.50"}, {"NULL": True}, {"BOOL": False}]}}}},
        {"pk": {"S": "b"}, "n": {"N": "1"}},
    ]
    for it in items:
        ddb.put_item(TableName=name, Item=it)
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--json")
    assert r.code == 0, r.err
    snap = one_json(r.out)
    r = cli("restore", snap["snapshot_id"], "--to", PG_URI, "--region", DST, "--repo", repo,
            "--table", f"{schema}.items", "--json")
    assert r.code == 0, r.err
    res = one_json(r.out)
    assert res["rows"] == 2 and res["verification"] == "table" and res["digest"] == snap["digest"]
    with pg() as c:
        got = c.execute(f"SELECT pk, n, item->'n'->>'N', item->'price'->>'N', CAST(item AS TEXT) "
                        f"FROM {ref(schema, 'items')} ORDER BY pk").fetchall()
        types = dict(c.execute("SELECT column_name, data_type FROM information_schema.columns "
                               "WHERE table_schema = %s AND table_name = 'items'", (schema,)).fetchall())
    assert types == {"pk": "character varying", "n": "character varying", "item": "jsonb"}
    assert got[0][:4] == ("a 😀", big, big, "-0.00000000000000000000000000000000000001")
    doc = json.loads(got[0][4])
    assert doc["blob"] == {"B": "AP8="} and doc["nums"]["NS"] == ["1", big] and doc["m"]["M"]["deep"]["L"][0] == {"N": "1.50"}
    # idempotent
    r = cli("restore", snap["snapshot_id"], "--to", PG_URI, "--region", DST, "--repo", repo,
            "--table", f"{schema}.items", "--insert-mode", "KEEP_EXISTING", "--json")
    assert r.code == 0, r.err and one_json(r.out)["table_rows"] == 2


def test_redshift_dry_run_plan_and_unreachable_cluster(aws: AwsContext, cli, srcdb: str, repo: str) -> None:  # type: ignore[no-untyped-def]
    import sqlglot
    from sqlglot import exp

    mysql_sql(srcdb, "CREATE TABLE o (id BIGINT UNSIGNED PRIMARY KEY, js JSON, flag TINYINT(1), amount DECIMAL(12,2))")
    mysql_sql(srcdb, "INSERT INTO o VALUES (1, '{}', 1, 1.50), (2, NULL, 0, NULL)")
    sid = snapshot(aws, srcdb, "o", repo, chunk_rows=1)["snapshot_id"]
    host = "dr-cluster.abc123xyz.us-west-2.redshift.amazonaws.com"
    role = "arn:aws:iam::123456789012:role/RedshiftCopy"
    base = ("restore", sid, "--to", f"redshift://admin@{host}:5439/dev", "--region", DST, "--repo", repo,
            "--table", "analytics.orders", "--iam-role", role)
    r = cli(*base, "--dry-run", "--json")
    assert r.code == 0, r.err
    plan = one_json(r.out)
    assert plan["dry_run"] and plan["dialect"] == "redshift" and plan["insert_mode"] == "OVERWRITE_EXISTING"
    bucket, prefix = repo[5:].split("/", 1)
    mkey = f"s3://{bucket}/{prefix}/runs/redshift/{sid}/copy.manifest"
    manifest = plan["copy_manifests"][mkey]
    assert len(manifest["entries"]) == 2 and all(e["mandatory"] and e["meta"]["content_length"] > 0
                                                 and e["url"].endswith(".parquet") and "/data/part-" in e["url"]
                                                 for e in manifest["entries"])
    script = plan["script"]
    assert f"COPY \"backupctl_stage_0\" FROM '{mkey}' IAM_ROLE '{role}' FORMAT AS PARQUET MANIFEST;" in script
    assert 'DISTKEY ("id")' in script and '"flag" BOOLEAN' in script and '("backupctl_stage_0"."flag" <> 0)' in script
    for stmt in plan["sql"]:
        for tree in sqlglot.parse(stmt, read="redshift"):
            assert tree is not None and not isinstance(tree, exp.Command), stmt
    # Dry run writes nothing (no manifest in the repository).
    listed = aws.client("s3", DST).list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/runs/redshift/")
    assert listed.get("KeyCount", 0) == 0
    # Human dry run prints the SQL too.
    r = cli(*base, "--dry-run")
    assert r.code == 0 and "FORMAT AS PARQUET MANIFEST" in r.err and "COMMIT;" in r.err

    # Without a reachable cluster: one error line, exit 7 (or 6), never a traceback.
    r = cli(*base, env={"PGCONNECT_TIMEOUT": "3"}, timeout=60)
    assert r.code in (6, 7), r.err
    assert "connecting to redshift://admin@" in one_error_line(r.err)
    # Refusals before anything else (exit 2): library ...
    for uri, iam, text in [(f"redshift://admin@{host}/dev", None, "--iam-role"),
                           ("redshift://admin@c.x.eu-west-1.redshift.amazonaws.com/dev", role,
                            "the cluster is in eu-west-1")]:
        with pytest.raises(InvalidInput, match=text):
            restore_redshift(aws, RedshiftRestoreOptions(snapshot_id=sid, target_uri=uri, region=DST, repo_uri=repo,
                                                         iam_role=iam, dry_run=True))
    # ... and CLI.
    for args, text in [
        (("restore", sid, "--to", f"redshift://admin:pw@{host}/dev", "--region", DST, "--repo", repo,
          "--iam-role", role), "contains a password"),
        ((*base, "--mode", "upsert"), "--insert-mode"),
        (("restore", sid, "--to-table", "x", "--region", DST, "--insert-mode", "APPEND"), "apply to Redshift"),
    ]:
        r = cli(*args)
        assert r.code == 2, (args, r.err)
        line = one_error_line(r.err)
        assert text in line and ":pw@" not in line


def test_library_refusals(aws: AwsContext, cli, srcdb: str, schema: str, repo: str) -> None:  # type: ignore[no-untyped-def]
    mysql_sql(srcdb, "CREATE TABLE nopk (a INT, b TEXT)", "INSERT INTO nopk VALUES (1, 'x'), (1, 'x')")
    sid = snapshot(aws, srcdb, "nopk", repo)["snapshot_id"]
    with pytest.raises(InvalidInput, match="no primary key"):
        restore(aws, sid, repo, schema, "nopk")
    res = restore(aws, sid, repo, schema, "nopk", insert_mode="APPEND")
    assert res["table_rows"] == 2 and rows(schema, "nopk") == [(1, "x"), (1, "x")]


def test_threads_do_not_share_state(aws: AwsContext, cli, srcdb: str, schema: str, repo: str) -> None:  # type: ignore[no-untyped-def]
    """Two restores of one snapshot into two tables at once: each is its own transaction."""
    mysql_sql(srcdb, "CREATE TABLE p (id INT PRIMARY KEY)")
    mysql_sql(srcdb, "INSERT INTO p VALUES (%s)", many=[(n,) for n in range(50)])
    sid = snapshot(aws, srcdb, "p", repo)["snapshot_id"]
    out: dict[str, Any] = {}
    ts = [threading.Thread(target=lambda t=t: out.__setitem__(t, restore(aws, sid, repo, schema, t)))
          for t in ("p1", "p2")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert out["p1"]["table_rows"] == out["p2"]["table_rows"] == 50


def test_read_back_hashed_in_worker_processes(aws: AwsContext, srcdb: str, schema: str, repo: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A big table's read-back is hashed in worker processes (here forced, and in small chunks so several are
    in flight): the same digest as the snapshot; a tampered target still fails verification and rolls back."""
    import backupctl.targets.redshift as rs

    monkeypatch.setattr(rs, "COMPARE_READBACK", False)  # the hashing read-back (chains, and the comparison's fallback)
    monkeypatch.setattr(rs, "READBACK_PROCESS_MIN_ROWS", 0)
    monkeypatch.setattr(rs, "READBACK_BYTES", 2000)
    mysql_sql(srcdb, TYPES_DDL)
    mysql_sql(srcdb, f"INSERT INTO types ({', '.join(TYPES_COLS)}) VALUES ({', '.join(['%s'] * len(TYPES_COLS))})",
              many=TYPES_ROWS + [(i,) + TYPES_ROWS[1][1:] for i in range(10, 200)])
    snap = snapshot(aws, srcdb, "types", repo)
    res = restore(aws, snap["snapshot_id"], repo, schema, "pooled")
    assert res["verification"] == "table" and res["digest"] == snap["digest"] and res["table_rows"] == 193
    assert res["verified_by"] == "table read-back"
    nv = restore(aws, snap["snapshot_id"], repo, schema, "pooled_nv", verify=False)
    assert nv["verification"] == "skipped" and nv["table_rows"] == 193
    assert rows(schema, "pooled_nv") == rows(schema, "pooled")
    # a read-back whose digest differs (one chunk's sum off by one) fails and rolls the new table back
    with pg() as c:
        c.execute(f"DROP TABLE {ref(schema, 'pooled')}")
    calls: list[int] = []
    real = rs.hash_csv_chunk

    def tampered(data: bytes, stored: list[dict[str, Any]]) -> tuple[int, int]:
        calls.append(1)
        s, n = real(data, stored)
        return s + 1, n

    monkeypatch.setattr(rs, "READBACK_PROCESS_MIN_ROWS", 10**9)  # driver path: the patched function is used
    monkeypatch.setattr(rs, "hash_csv_chunk", tampered)
    with pytest.raises(VerificationFailed, match="nothing was committed"):
        restore(aws, snap["snapshot_id"], repo, schema, "pooled")
    assert calls
    with pg() as c:
        assert c.execute("SELECT to_regclass(%s)", (ref(schema, "pooled"),)).fetchone()[0] is None


def many_parts_of_every_type(aws: AwsContext, srcdb: str, repo: str) -> dict[str, Any]:
    """A snapshot of 193 rows of every type (both TYPES_ROWS shapes repeated) in parts of 50 rows."""
    mysql_sql(srcdb, TYPES_DDL)
    mysql_sql(srcdb, f"INSERT INTO types ({', '.join(TYPES_COLS)}) VALUES ({', '.join(['%s'] * len(TYPES_COLS))})",
              many=TYPES_ROWS + [(i,) + TYPES_ROWS[i % 2][1:] for i in range(10, 200)])
    snap = snapshot(aws, srcdb, "types", repo, chunk_rows=50)
    assert snap["parts"] > 1
    return snap


def test_read_back_compared_with_the_parts(aws: AwsContext, srcdb: str, schema: str, repo: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A full snapshot COPYed into an empty table is read back in storage order and compared with its parts
    (batches of other sizes on the two sides); read back in another order it is hashed instead (same
    transaction, same digest); a value read back differently fails and rolls the new table back."""
    import backupctl.targets.redshift as rs

    monkeypatch.setattr(rs, "COMPARE_BYTES", False)  # the comparison with the parts (JSONB columns, fallback)
    monkeypatch.setattr(rs, "READBACK_BYTES", 3000)
    monkeypatch.setattr(rs, "CSV_BATCH_ROWS", 7)
    snap = many_parts_of_every_type(aws, srcdb, repo)
    res = restore(aws, snap["snapshot_id"], repo, schema, "cmp")
    assert res["verification"] == "table" and res["verified_by"] == "parts compared"
    assert res["digest"] == snap["digest"] and res["table_rows"] == 193
    nv = restore(aws, snap["snapshot_id"], repo, schema, "cmp_nv", verify=False)
    assert nv["verification"] == "skipped" and rows(schema, "cmp_nv") == rows(schema, "cmp")

    real_sql = rs._readback_sql

    def reversed_sql(plan: Any, stored: list[dict[str, Any]]) -> str:
        sql = real_sql(plan, stored)
        return sql.replace(f" FROM {plan.ref})", f" FROM {plan.ref} ORDER BY 1 DESC)")

    monkeypatch.setattr(rs, "_readback_sql", reversed_sql)
    events: list[str] = []
    opts = RedshiftRestoreOptions(snapshot_id=snap["snapshot_id"], target_uri=PG_URI, region=DST, repo_uri=repo,
                                  table=f"{schema}.cmp_rev")
    res = restore_redshift(aws, opts, on_event=events.append)
    assert res["verified_by"] == "table read-back" and res["digest"] == snap["digest"]
    assert any("did not read back as the parts" in e for e in events)
    assert rows(schema, "cmp_rev") == rows(schema, "cmp")
    monkeypatch.setattr(rs, "_readback_sql", real_sql)

    real_batch = rs.readback_batch

    def one_value_off(data: bytes, stored: list[dict[str, Any]]) -> Any:
        batch = real_batch(data, stored)
        i = batch.schema.get_field_index("d10")
        col = batch.column(i).to_pylist()
        if col and col[0] is not None:
            col[0] += Decimal("0.01")
        return batch.set_column(i, batch.schema.field(i), pa.array(col, batch.column(i).type))

    monkeypatch.setattr(rs, "readback_batch", one_value_off)
    with pytest.raises(VerificationFailed, match="nothing was committed"):
        restore(aws, snap["snapshot_id"], repo, schema, "cmp_bad")
    with pg() as c:
        assert c.execute("SELECT to_regclass(%s)", (ref(schema, "cmp_bad"),)).fetchone()[0] is None


def test_read_back_compared_with_the_bytes_sent(aws: AwsContext, srcdb: str, schema: str, repo: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A full snapshot COPYed in binary into an empty table reads back (binary, storage order) as the very
    bytes sent; a table that reads back otherwise falls back to the parts' comparison, then to hashing,
    which decide: a row another statement changed in the same transaction fails and rolls back."""
    import backupctl.targets.redshift as rs

    monkeypatch.setattr(rs, "CSV_BATCH_ROWS", 7)  # many batches, pgpq buffering across them
    snap = many_parts_of_every_type(aws, srcdb, repo)
    res = restore(aws, snap["snapshot_id"], repo, schema, "b")
    assert res["verification"] == "table" and res["verified_by"] == "bytes compared"
    assert res["copy_format"] == "binary" and res["digest"] == snap["digest"] and res["table_rows"] == 193
    restore(aws, snap["snapshot_id"], repo, schema, "b_nv", verify=False)
    assert rows(schema, "b_nv") == rows(schema, "b")

    # The rows as loaded, then one moved to the end of the heap (same values): not the bytes sent, but
    # the same rows -> compared with the parts (in order: no), then hashed: verified.
    real_run = rs._run

    def then(sql: str) -> Any:
        def run(conn: Any, settings: Any, steps: Any, plan: Any, *a: Any, **kw: Any) -> Any:
            loaded = real_run(conn, settings, steps, plan, *a, **kw)
            conn.execute(sql.format(t=plan.ref))
            return loaded
        return run

    events: list[str] = []
    monkeypatch.setattr(rs, "_run", then("UPDATE {t} SET d10 = d10 WHERE id = 10"))
    opts = RedshiftRestoreOptions(snapshot_id=snap["snapshot_id"], target_uri=PG_URI, region=DST, repo_uri=repo,
                                  table=f"{schema}.b_moved")
    res = restore_redshift(aws, opts, on_event=events.append)
    assert res["verified_by"] == "table read-back" and res["digest"] == snap["digest"]
    assert any("did not read back as the bytes sent" in e for e in events)
    assert any("did not read back as the parts" in e for e in events)
    assert rows(schema, "b_moved") == rows(schema, "b")

    # A value changed after the load: every comparison fails, the digest differs, nothing is committed.
    monkeypatch.setattr(rs, "_run", then("UPDATE {t} SET d10 = d10 + 0.01 WHERE id = 10"))
    with pytest.raises(VerificationFailed, match="nothing was committed"):
        restore(aws, snap["snapshot_id"], repo, schema, "b_bad")
    with pg() as c:
        assert c.execute("SELECT to_regclass(%s)", (ref(schema, "b_bad"),)).fetchone()[0] is None


def test_binary_copy_of_json_into_jsonb(schema: str) -> None:
    """MySQL's JSON type becomes JSONB: its binary COPY form is a version byte and the text, parsed by the
    server as JSON input (a bad document fails naming its row); JSONB reads back in PostgreSQL's own form,
    which is why a table with a JSONB column is verified by comparing values, not bytes."""
    from backupctl.formats.pg_binary import BinaryCopy
    from backupctl.targets.redshift import Step, _sent_hash
    from backupctl.targets.redshift_sql import Column, TablePlan

    copy = BinaryCopy.plan([{"kind": "json"}, {"kind": "int"}], ["JSONB", "INTEGER"])
    assert copy is not None
    docs = ['{"b": 1, "a": [1, 2.50, "\\u00e9"]}', "null", None]
    batch = pa.record_batch([pa.array(docs), pa.array([1, 2, 3], pa.int32())], names=["j", "n"])
    s = copy.stream()
    data = s.header() + s.encode(batch) + s.finish()
    t = ref(schema, "jb")
    with pg() as c:
        c.execute(f"CREATE TABLE {t} (j JSONB, n INTEGER)")
        with c.cursor() as cur, cur.copy(f"COPY {t} (j, n) FROM STDIN WITH (FORMAT binary)") as cp:
            cp.write(data)
        got = c.execute(f"SELECT CAST(j AS TEXT), n FROM {t} ORDER BY n").fetchall()
        assert got == [('{"a": [1, 2.50, "é"], "b": 1}', 1), ("null", 2), (None, 3)]
        bad = pa.record_batch([pa.array(['{"ok": 1}', "{not json"]), pa.array([4, 5], pa.int32())], names=["j", "n"])
        s = copy.stream()
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as e:
            with c.cursor() as cur, cur.copy(f"COPY {t} (j, n) FROM STDIN WITH (FORMAT binary)") as cp:
                cp.write(s.header() + s.encode(bad) + s.finish())
        assert "line 2, column j" in (e.value.diag.context or "")
        assert c.execute(f"SELECT COUNT(*) FROM {t}").fetchone() == (3,)
    plan = TablePlan("s", "t", [Column("j", "SUPER", "VARCHAR(65535)", convert="json", kind="json"),
                                Column("n", "INTEGER", "INTEGER", kind="int")], ["n"])
    steps = [Step("COPY ...", kind="copy", direct=True, binary=True)]
    assert _sent_hash(steps, plan) is None  # compared with the parts instead
    plan.columns = plan.columns[1:]
    assert _sent_hash(steps, plan) is not None
