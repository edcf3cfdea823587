"""MySQL full snapshots and restores through the real CLI: MariaDB at 127.0.0.1:3306 and a moto server.

Every supported type round-trips exactly (values and Python types from the
driver, and ``SHOW CREATE TABLE``), a hostile table name is handled safely,
chunks run in parallel, restore modes behave, and bad input gives one error
line with the documented exit code and writes nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from backupctl.aws import AwsContext
from tests.integration.helpers import one_error_line, one_json
from tests.integration.mysql_db import HOST, PORT, connect, q, scratch_databases, server_up, uri

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"
HOSTILE = "x`; DROP TABLE y; --"


if not server_up():  # pragma: no cover
    pytest.skip("MariaDB at 127.0.0.1:3306 is not running", allow_module_level=True)


@pytest.fixture
def dbs() -> Iterator[tuple[str, str]]:
    """A source and a target database (the target plays the instance in region B)."""
    with scratch_databases("bk") as pair:
        yield pair


TYPES_DDL = """
CREATE TABLE {name} (
  id BIGINT UNSIGNED NOT NULL,
  part SMALLINT NOT NULL,
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
  bi BIGINT, bu BIGINT UNSIGNED,
  dec65 DECIMAL(65,30), dec10 DECIMAL(10,2), dec0 DECIMAL(20,0) UNSIGNED,
  f FLOAT, d DOUBLE,
  dt DATETIME(6), dt0 DATETIME, ts TIMESTAMP(6) NULL DEFAULT NULL, dd DATE, tm TIME(6), tm0 TIME, yr YEAR,
  js JSON,
  bin BINARY(8), vb VARBINARY(64), bl BLOB, lb LONGBLOB,
  b1 BIT(1), b64 BIT(64), b10 BIT(10),
  e ENUM('small','medium','large'), st SET('a','b','c'),
  txt TEXT, vc VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci, ch CHAR(5),
  lat VARCHAR(20) CHARACTER SET latin1,
  gen_v BIGINT AS (i * 2) VIRTUAL,
  gen_s VARCHAR(200) AS (CONCAT(vc, '!')) STORED,
  PRIMARY KEY (id, part),
  KEY ix_vc (vc),
  UNIQUE KEY ux_i (i, part)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci COMMENT='types'
"""

COLS = ["id", "part", "ti", "tiu", "si", "mi", "miu", "i", "iu", "bi", "bu", "dec65", "dec10", "dec0", "f", "d",
        "dt", "dt0", "ts", "dd", "tm", "tm0", "yr", "js", "bin", "vb", "bl", "lb", "b1", "b64", "b10", "e", "st",
        "txt", "vc", "ch", "lat"]

EXTREME = (
    18446744073709551615, 1, -128, 255, -32768, -8388608, 16777215, -2147483648, 4294967295,
    -9223372036854775808, 18446744073709551615,
    "-99999999999999999999999999999999999.999999999999999999999999999999", "-12345678.91", "99999999999999999999",
    "3.4028234663852886e38", "1.7976931348623157e308",
    "9999-12-31 23:59:59.999999", "1000-01-01 00:00:00", "2038-01-19 03:14:07.999999", "1000-01-01",
    "-838:59:59.000000", "838:59:59", 2155,
    '{"b": [1, 2.50, {"z": null}], "a": "\\u00e9\\ud83d\\ude00"}',
    b"\x00\x01\x00\xff\x00\x00\x00\x00", b"\x00\x00nul\x00", b"\x00" * 10 + b"blob\x00", bytes(range(256)) * 40,
    1, 18446744073709551615, 1023, "large", "a,c",
    "emoji 😀 𝄞 𠜎 and ä", "ÄÖÜ 😀", "ab", "café",
)
OTHER = (
    2, 7, 127, 0, 32767, 8388607, 0, 2147483647, 0, 9223372036854775807, 0,
    "99999999999999999999999999999999999.000000000000000000000000000001", "0.01", "0",
    "1.1754943508222875e-38", "4.9406564584124654e-324",
    "1970-01-01 00:00:00.000001", "2024-02-29 12:34:56", "1970-01-01 00:00:01.000000", "9999-12-31",
    "-00:00:01.500000", "123:00:00", 1901,
    "[]", b"\x00" * 8, b"", b"", b"", 0, 0, 0, "small", "", "", "", "     ", "",
)
NULLS = (3, 0) + (None,) * (len(COLS) - 2)
MIDDLE = (
    4, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, "1.5", "2.25", "12", "-1.5", "-0.1", "2001-02-03 04:05:06.789", "2001-02-03 04:05:06",
    "2001-02-03 04:05:06.5", "2001-02-03", "25:00:00.000001", "-1:02:03", 2001,
    '{"k": 1}', b"12345678", b"\xff\xfe", b"\x00", b"x", 0, 1 << 63, 512, "medium", "b",
    "plain", "x", "y", "z",
)


def create_types_table(db: str, name: str, extra_rows: int = 0) -> None:
    c = connect(db)
    with c.cursor() as cur:
        cur.execute(TYPES_DDL.format(name=q(name)))
        ins = f"INSERT INTO {q(name)} ({', '.join(COLS)}) VALUES ({', '.join(['%s'] * len(COLS))})"
        cur.executemany(ins, [EXTREME, OTHER, NULLS, MIDDLE])
        if extra_rows:
            rows = []
            for n in range(extra_rows):
                r = list(MIDDLE)
                r[0], r[1], r[7] = 1000 + n // 3, n % 3, 10_000 + n
                rows.append(tuple(r))
            cur.executemany(ins, rows)
    c.close()


def fetch(db: str, name: str) -> list[tuple[Any, ...]]:
    c = connect(db)
    with c.cursor() as cur:
        cur.execute(f"SELECT * FROM {q(name)}")
        rows = sorted(cur.fetchall(), key=lambda r: tuple((v is None, repr(v)) for v in r[:2]))
    c.close()
    return rows


def show_create(db: str, name: str) -> str:
    c = connect(db)
    with c.cursor() as cur:
        cur.execute(f"SHOW CREATE TABLE {q(name)}")
        ddl = str(cur.fetchone()[1])
    c.close()
    return ddl


def typed(rows: list[tuple[Any, ...]]) -> list[list[tuple[str, Any]]]:
    return [[(type(v).__name__, v) for v in r] for r in rows]


@pytest.fixture
def repo(name: str) -> str:
    return f"s3://{name}-repo/mysql"


def snapshot(cli, db: str, table: str, repo: str, *extra: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    r = cli("snapshot", "--source", uri(db), "--table", table, "--from", SRC, "--to", DST, "--repo", repo,
            "--json", *extra)
    assert r.code == 0, r.err
    return dict(one_json(r.out))


def test_every_type_round_trips_exactly(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    src, dst = dbs
    create_types_table(src, "types", extra_rows=200)
    snap = snapshot(cli, src, "types", repo, "--chunk-rows", "50", "--workers", "4")
    assert {"snapshot_id", "rows", "bytes", "parts", "digest", "duration_s"} <= set(snap)
    assert snap["rows"] == 204 and snap["parts"] >= 4 and len(snap["digest"]) == 64

    # The manifest names the source without any secret; schema.json keeps the DDL and columns.
    r = cli("snapshots", "show", snap["snapshot_id"], "--repo", repo, "--json")
    assert r.code == 0, r.err
    m = one_json(r.out)
    assert m["source"] == {"kind": "mysql", "region": SRC, "host": HOST, "port": PORT, "database": src,
                           "table": "types"}
    assert m["source_key"] == f"mysql.{SRC}.{src}.types"
    assert all(p["key"].endswith(".parquet") for p in m["parts"])

    r = cli("restore", snap["snapshot_id"], "--to", uri(dst), "--region", DST, "--repo", repo, "--json")
    assert r.code == 0, r.err
    res = one_json(r.out)
    assert {"snapshot_id", "target", "rows", "digest", "duration_s"} <= set(res)
    assert res["rows"] == 204 and res["digest"] == snap["digest"] and res["verification"] == "table"
    assert res["verified_by"] == "part key ranges"  # composite key (id, part): every part's range read back
    assert res["load_method"] == "insert"  # auto: prepared INSERTs (docs/adr/0021)

    before, after = fetch(src, "types"), fetch(dst, "types")
    assert typed(after) == typed(before)  # values AND Python types, generated columns recomputed
    assert show_create(dst, "types") == show_create(src, "types")
    # The same through LOAD DATA LOCAL INFILE, read back and compared value for value.
    r = cli("restore", snap["snapshot_id"], "--to", uri(dst), "--table", "types_ld", "--region", DST, "--repo", repo,
            "--json", "--load-method", "load-data")
    assert r.code == 0, r.err
    ld = one_json(r.out)
    assert (ld["load_method"], ld["verified_by"], ld["digest"]) == ("load-data", "part key ranges", snap["digest"])
    assert typed(fetch(dst, "types_ld")) == typed(before)
    # --no-verify: no read-back and no row hashing (docs/adr/0015), the same table; parts' sha256 still checked
    r = cli("restore", snap["snapshot_id"], "--to", uri(dst), "--table", "types_nv", "--region", DST, "--repo", repo,
            "--json", "--no-verify")
    assert r.code == 0, r.err
    nv = one_json(r.out)
    assert nv["verification"] == "skipped" and nv["rows"] == 204 and nv["digest"] == snap["digest"]
    assert nv["load_method"] == "insert"
    assert typed(fetch(dst, "types_nv")) == typed(before)
    # JSON compares semantically too (MariaDB keeps the text verbatim).
    js = COLS.index("js")
    extreme = next(r for r in after if r[0] == EXTREME[0])
    assert json.loads(extreme[js]) == json.loads(str(EXTREME[js]))
    # Floats at the extremes are bit-exact.
    c = connect(dst)
    with c.cursor() as cur:
        cur.execute("SELECT f + 0e0, d FROM types WHERE id = %s AND part = 1", (EXTREME[0],))
        assert cur.fetchone() == (3.4028234663852886e38, 1.7976931348623157e308)
    c.close()


def types_table_without(db: str, table: str, extra_rows: int, *dropped: str) -> None:
    """The every-type table without some of its columns."""
    create_types_table(db, table, extra_rows=extra_rows)
    c = connect(db)
    with c.cursor() as cur:
        cur.execute(f"ALTER TABLE {q(table)} " + ", ".join(f"DROP COLUMN {q(col)}" for col in dropped))
    c.close()


@pytest.mark.parametrize("method", ["load-data", "insert"])
def test_every_type_in_utf8_columns_loads_as_binary_text(aws: AwsContext, cli, dbs, repo: str,  # type: ignore[no-untyped-def]
                                                         method: str) -> None:
    """Without the latin1 and JSON columns every text column is UTF-8, so LOAD DATA declares CHARACTER SET binary
    and prepared INSERTs run with character_set_client binary (``formats.parquet.load_charset``): ENUM, SET,
    BIT, TIME, DECIMAL, binary and 4-byte text still round-trip."""
    from backupctl.formats.parquet import load_charset

    src, dst = dbs
    types_table_without(src, "utf8only", 30, "js", "lat")
    snap = snapshot(cli, src, "utf8only", repo, "--chunk-rows", "10")
    r = cli("restore", snap["snapshot_id"], "--to", uri(dst), "--region", DST, "--repo", repo, "--json",
            "--load-method", method)
    assert r.code == 0, r.err
    res = one_json(r.out)
    assert res["rows"] == 34 and res["digest"] == snap["digest"] and res["verified_by"] == "part key ranges"
    assert res["load_method"] == method
    assert typed(fetch(dst, "utf8only")) == typed(fetch(src, "utf8only"))
    assert show_create(dst, "utf8only") == show_create(src, "utf8only")
    conn = connect(src)
    try:
        from backupctl.sources.mysql import describe_table

        columns = [c for c in describe_table(conn, src, "utf8only").columns if not c["generated"]]
    finally:
        conn.close()
    assert load_charset(columns) == "binary"


def test_key_ranges_are_compared_as_the_servers_bytes(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    """Every column kind has its binary-protocol form built from the part (formats/mysql_rows.py): each
    part's key range is proven by comparing the server's reply to a prepared SELECT with it byte for byte
    (docs/adr/0021) — extremes, NULLs, 4-byte UTF-8, latin1, JSON, negative and over-24-hour TIME,
    DATETIME/TIMESTAMP/TIME of 0 and 6 digits and BIT(1/10/64) included. With the byte comparison off,
    or a value the server stores otherwise, ranges are compared as values."""
    from backupctl.targets import mysql as mysql_target

    src, dst = dbs
    types_table_without(src, "nobit", 60, "b1", "b64", "b10")
    snap = snapshot(cli, src, "nobit", repo, "--chunk-rows", "16")
    r = cli("restore", snap["snapshot_id"], "--to", uri(dst), "--region", DST, "--repo", repo, "--json")
    assert r.code == 0, r.err
    res = one_json(r.out)
    assert res["verified_by"] == "part key ranges" and res["digest"] == snap["digest"]
    assert res["ranges_compared"] == {"bytes": snap["parts"], "values": 0}, res["ranges_compared"]
    assert typed(fetch(dst, "nobit")) == typed(fetch(src, "nobit"))
    # the every-type table with its BIT columns, over several parts
    create_types_table(src, "withbit", extra_rows=40)
    snap2 = snapshot(cli, src, "withbit", repo, "--chunk-rows", "16")
    r = cli("restore", snap2["snapshot_id"], "--to", uri(dst), "--region", DST, "--repo", repo, "--json")
    assert r.code == 0, r.err
    assert snap2["parts"] > 1 and one_json(r.out)["ranges_compared"] == {"bytes": snap2["parts"], "values": 0}
    assert typed(fetch(dst, "withbit")) == typed(fetch(src, "withbit"))
    old = mysql_target.COMPARE_ROW_BYTES
    mysql_target.COMPARE_ROW_BYTES = False
    try:
        from backupctl.restore import MySQLRestoreOptions, restore_mysql

        res = restore_mysql(aws, MySQLRestoreOptions(snapshot_id=snap["snapshot_id"], target_uri=uri(dst), region=DST,
                                                     repo_uri=repo, table="nobit_values"))
    finally:
        mysql_target.COMPARE_ROW_BYTES = old
    assert res["ranges_compared"] == {"bytes": 0, "values": snap["parts"]} and res["digest"] == snap["digest"]
    # a value the server stores otherwise (a trigger): the bytes differ, then the values, then the table
    c = connect(dst)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE nobit_changed LIKE nobit")
        cur.execute("CREATE TRIGGER bump_nobit BEFORE INSERT ON nobit_changed FOR EACH ROW "
                    "SET NEW.dec10 = IF(NEW.id = 1010 AND NEW.part = 0, NEW.dec10 + 0.01, NEW.dec10)")
    c.close()
    r = cli("--quiet", "restore", snap["snapshot_id"], "--to", uri(dst), "--table", "nobit_changed", "--region", DST,
            "--repo", repo, "--mode", "append", "--json")
    assert r.code == 5 and "nobit_changed has 64 rows with digest" in one_error_line(r.err), r.err
    assert "Exception ignored" not in r.err  # the connection left mid-result is closed quietly


def test_parquet_parts_have_exact_types(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    import io

    import pyarrow.parquet as pq

    src, _ = dbs
    create_types_table(src, "types")
    snap = snapshot(cli, src, "types", repo)
    bucket, prefix = repo[5:].split("/", 1)
    s3 = aws.client("s3", DST)
    base = f"{prefix}/snapshots/mysql.{SRC}.{src}.types/{snap['snapshot_id']}/"
    schema = json.loads(s3.get_object(Bucket=bucket, Key=base + "schema.json")["Body"].read())
    assert schema["create_table"].startswith("CREATE TABLE `types`")
    gen = {c["name"]: c["generated"] for c in schema["columns"]}
    assert gen["gen_v"] and gen["gen_s"] and not gen["id"]
    assert schema["stored_columns"] == COLS and schema["primary_key"] == ["id", "part"]
    data = s3.get_object(Bucket=bucket, Key=base + "data/part-00000-0000.parquet")["Body"].read()
    pf = pq.ParquetFile(io.BytesIO(data))
    t = {f.name: str(f.type) for f in pf.schema_arrow}
    assert t["dec65"] == "decimal256(65, 30)" and t["bu"] == "uint64" and t["dt"] == "timestamp[us]"
    assert t["ts"] == "timestamp[us, tz=UTC]" and t["dd"] == "date32[day]" and t["tm"] == "duration[us]"
    assert t["f"] == "float" and t["d"] == "double" and t["bl"] == "binary" and t["b64"] == "uint64"
    assert "gen_v" not in t and "gen_s" not in t
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
    assert pf.schema_arrow.field("dec65").metadata[b"mysql.column_type"] == b"decimal(65,30)"
    row = next(r for r in pf.read().to_pylist() if r["id"] == EXTREME[0])
    assert row["dec65"] == Decimal(str(EXTREME[COLS.index("dec65")]))
    assert row["bu"] == 18446744073709551615 and row["lb"] == bytes(range(256)) * 40


def test_hostile_identifier(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    src, dst = dbs
    c = connect(src)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE y (a INT PRIMARY KEY)")
        cur.execute(f"CREATE TABLE {q(HOSTILE)} ({q('c`%s')} INT PRIMARY KEY, {q('v%')} VARCHAR(10))")
        cur.executemany(f"INSERT INTO {q(HOSTILE)} VALUES (%s, %s)", [(n, f"v{n}") for n in range(25)])
    c.close()
    snap = snapshot(cli, src, HOSTILE, repo, "--chunk-rows", "10")
    assert snap["rows"] == 25
    for method in ("load-data", "insert"):  # both build statements from quoted identifiers only
        c = connect(dst)
        with c.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {q(HOSTILE)}")
        c.close()
        r = cli("restore", snap["snapshot_id"], "--to", uri(dst), "--region", DST, "--repo", repo, "--json",
                "--load-method", method)
        assert r.code == 0, r.err
        assert one_json(r.out)["load_method"] == method
        assert fetch(dst, HOSTILE) == fetch(src, HOSTILE)
        assert show_create(dst, HOSTILE) == show_create(src, HOSTILE)
    c = connect(src)
    with c.cursor() as cur:
        cur.execute("SHOW TABLES")
        assert {r[0] for r in cur.fetchall()} == {"y", HOSTILE}
    c.close()


def hostile_bytes() -> list[bytes]:
    """Binary values that would end a LOAD DATA field early if the server read them as text: quotes and
    separators after UTF-8 lead bytes, truncated multi-byte sequences at the end, the word NULL, CR/LF."""
    import random

    lead = [b"\xc3", b"\xe2", b"\xe2\x80", b"\xf0", b"\xf0\x9f", b"\xf0\x9f\x98", b"\xff", b"\x80", b"\xed\xa0"]
    tricky = [b'"', b'""', b",", b"\n", b"\r\n", b"\\", b"\x00", b"'", b"\t"]
    vals = [lp + t for lp in lead for t in tricky] + [t + lp for lp in lead for t in tricky]
    vals += [b"NULL", b"\\N", b'"NULL"', b"", b'"', b"," * 64, bytes(range(256))[:64], bytes(range(192, 256))]
    rng = random.Random(11)
    vals += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 65))) for _ in range(300)]
    return vals


def test_binary_values_load_verbatim(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    """Restores hand binary columns to LOAD DATA as raw bytes (docs/adr/0016): every byte sequence comes back
    exactly, and the text column after it keeps its own value (no field boundary moved)."""
    src, dst = dbs
    vals = hostile_bytes()
    c = connect(src)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE bins (id INT PRIMARY KEY, vb VARBINARY(64), bl BLOB, fb BINARY(4), "
                    "after_text VARCHAR(20) CHARACTER SET utf8mb4) DEFAULT CHARSET=utf8mb4")
        cur.executemany("INSERT INTO bins VALUES (%s, %s, %s, %s, %s)",
                        [(i, v, v * 3, v[:4], f"row {i} é😀") for i, v in enumerate(vals)] + [(10_000, None, None, None, None)])
    c.close()
    snap = snapshot(cli, src, "bins", repo, "--chunk-rows", "100")
    assert snap["rows"] == len(vals) + 1
    for method, table in (("load-data", "bins"), ("insert", "bins_ins")):  # BLOB parameters: never converted
        r = cli("restore", snap["snapshot_id"], "--to", uri(dst), "--table", table, "--region", DST, "--repo", repo,
                "--json", "--load-method", method)
        assert r.code == 0, r.err
        assert one_json(r.out)["verified_by"] == "part key ranges"
        got = fetch(dst, table)
        assert typed(got) == typed(fetch(src, "bins"))
        assert [r[1] for r in sorted(got, key=lambda r: r[0])][: len(vals)] == vals


def test_restore_modes(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    src, dst = dbs
    create_types_table(src, "types", extra_rows=30)
    snap = snapshot(cli, src, "types", repo, "--consistency", "none")
    sid, want = snap["snapshot_id"], fetch(src, "types")
    base = ("restore", sid, "--to", uri(dst), "--region", DST, "--repo", repo, "--table", "copy")

    assert cli(*base).code == 0
    assert fetch(dst, "copy") == want
    # new into a non-empty table: refused, nothing changed.
    r = cli(*base)
    assert r.code == 4 and "not empty" in one_error_line(r.err)

    # upsert: existing keys updated, other rows kept.
    c = connect(dst)
    with c.cursor() as cur:
        cur.execute("UPDATE copy SET vc = 'changed' WHERE id = 2")
        cur.execute("INSERT INTO copy (id, part, i) VALUES (999999, 0, -5)")
    r = cli(*base, "--mode", "upsert", "--json")
    assert r.code == 0, r.err
    assert one_json(r.out)["verification"] == "parts"
    got = fetch(dst, "copy")
    assert len(got) == len(want) + 1 and [g for g in got if g[0] != 999999] == want

    # append of the same rows: duplicate keys -> conflict, by either load method, nothing written.
    for method in ("auto", "insert", "load-data"):
        r = cli(*base, "--mode", "append", "--load-method", method)
        assert r.code == 4 and "Traceback" not in r.err
        assert r.err.strip().splitlines()[-1].startswith("error: ") and "Duplicate entry" in r.err
        assert len(fetch(dst, "copy")) == len(want) + 1

    # truncate / replace need confirmation without a terminal.
    r = cli(*base, "--mode", "truncate")
    assert r.code == 4 and "not confirmed" in one_error_line(r.err)
    r = cli(*base, "--mode", "truncate", "--yes", "--json")
    assert r.code == 0, r.err
    assert one_json(r.out)["verification"] == "table" and fetch(dst, "copy") == want
    r = cli(*base, "--mode", "replace", "--yes", "--json")
    assert r.code == 0, r.err
    assert fetch(dst, "copy") == want

    # dry run writes nothing.
    r = cli("restore", sid, "--to", uri(dst), "--region", DST, "--repo", repo, "--table", "dry", "--dry-run",
            "--json")
    assert r.code == 0, r.err
    assert one_json(r.out)["dry_run"] is True
    c = connect(dst)
    with c.cursor() as cur:
        cur.execute("SHOW TABLES LIKE 'dry'")
        assert cur.fetchall() == ()
    c.close()


def staging_tables(db: str) -> list[str]:
    c = connect(db)
    with c.cursor() as cur:
        cur.execute("SHOW TABLES LIKE '\\_backupctl\\_append\\_%'")
        names = [r[0] for r in cur.fetchall()]
    c.close()
    return names


def test_append_into_a_table_with_rows_is_all_or_nothing(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    """``--mode append`` into a table that holds rows loads a staging copy, then inserts every row in one
    statement: a key already in the target, even one of the last part's, leaves the target exactly as it
    was (by either load method), and no staging table stays behind; without a conflict every row is added."""
    src, dst = dbs
    create_types_table(src, "types", extra_rows=100)
    snap = snapshot(cli, src, "types", repo, "--chunk-rows", "20")
    assert snap["parts"] >= 3
    want = fetch(src, "types")
    base = ("--quiet", "restore", snap["snapshot_id"], "--to", uri(dst), "--region", DST, "--repo", repo,
            "--table", "copy")
    assert cli(*base).code == 0
    c = connect(dst)
    with c.cursor() as cur:  # keep only the snapshot's greatest key: the conflict comes with the last part
        cur.execute("DELETE FROM copy WHERE (id, part) <> (SELECT * FROM (SELECT id, part FROM copy "
                    "ORDER BY id DESC, part DESC LIMIT 1) AS last_key)")
        cur.execute("UPDATE copy SET vc = 'kept' WHERE 1 = 1")
    c.close()
    before = fetch(dst, "copy")
    assert len(before) == 1 and before[0][:2] == max(r[:2] for r in want if r[0] is not None)

    r = cli(*base, "--mode", "append", "--dry-run", "--json")
    assert r.code == 0, r.err
    assert any("staging table" in a for a in one_json(r.out)["actions"])
    for method in ("insert", "load-data"):
        r = cli(*base, "--mode", "append", "--load-method", method)
        assert r.code == 4 and "Traceback" not in r.err, r.err
        line = one_error_line(r.err)
        assert "appending the staged rows to" in line and "Duplicate entry" in line, line
        assert fetch(dst, "copy") == before
        assert staging_tables(dst) == []

    c = connect(dst)
    with c.cursor() as cur:
        cur.execute("DELETE FROM copy")
        cur.execute("INSERT INTO copy (id, part, i) VALUES (999999, 0, -5)")
    c.close()
    other = fetch(dst, "copy")
    r = cli(*base, "--mode", "append", "--json")
    assert r.code == 0, r.err
    out = one_json(r.out)
    assert (out["rows"], out["verification"], out["digest"]) == (snap["rows"], "parts", snap["digest"])
    got = fetch(dst, "copy")
    assert [g for g in got if g[0] != 999999] == want and [g for g in got if g[0] == 999999] == other
    assert staging_tables(dst) == []


def test_other_schema_in_upsert_and_append_is_refused(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    src, dst = dbs
    c = connect(src)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
        cur.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    c.close()
    c = connect(dst)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))")
        cur.execute("INSERT INTO t VALUES (5, 'x')")
    c.close()
    sid = snapshot(cli, src, "t", repo)["snapshot_id"]
    for mode in ("upsert", "append"):
        r = cli("restore", sid, "--to", uri(dst), "--region", DST, "--repo", repo, "--mode", mode)
        assert r.code == 4, r.err
        assert "another schema" in one_error_line(r.err)
    assert fetch(dst, "t") == [(5, "x")]


def test_password_sources_and_bad_input(aws: AwsContext, cli, dbs, repo: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, dst = dbs
    c = connect(src)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        cur.execute("INSERT INTO t VALUES (1)")
    c.close()
    bucket = repo[5:].split("/")[0]

    def bucket_exists() -> bool:
        return bucket in {b["Name"] for b in aws.client("s3", DST).list_buckets()["Buckets"]}

    # A password in the URI is refused before anything else.
    r = cli("snapshot", "--source", f"mysql://root:secret@{HOST}:{PORT}/{src}", "--table", "t", "--from", SRC,
            "--to", DST, "--repo", repo)
    assert r.code == 2
    line = one_error_line(r.err)
    assert "password" in line and "secret" not in line

    # Wrong password from a password file: exit 6.
    pw = tmp_path / "pw"
    pw.write_text("definitely-wrong\n")
    r = cli("snapshot", "--source", uri(src), "--table", "t", "--from", SRC, "--to", DST, "--repo", repo,
            "--password-file", str(pw))
    assert r.code == 6, r.err
    assert "access denied" in one_error_line(r.err)
    # ... and from MYSQL_PWD.
    r = cli("snapshot", "--source", uri(src), "--table", "t", "--from", SRC, "--to", DST, "--repo", repo,
            env={"MYSQL_PWD": "also-wrong"})
    assert r.code == 6 and "definitely-wrong" not in r.err

    # Unknown database and unknown table: exit 3.
    r = cli("snapshot", "--source", uri("bk_no_such_db_x"), "--table", "t", "--from", SRC, "--to", DST, "--repo", repo)
    assert r.code == 3, r.err
    one_error_line(r.err)
    r = cli("snapshot", "--source", uri(src), "--table", "nope", "--from", SRC, "--to", DST, "--repo", repo)
    assert r.code == 3 and "'nope' not found" in one_error_line(r.err)
    assert not bucket_exists()

    # Restore: password in --to URI refused; DynamoDB restore still needs --to-table.
    r = cli("restore", "20261127T013000Z-1a2b3c", "--to", f"mysql://root:pw@{HOST}/{dst}", "--region", DST)
    assert r.code == 2 and "password" in one_error_line(r.err)
    r = cli("restore", "20261127T013000Z-1a2b3c", "--region", DST)
    assert r.code == 2 and "--to-table is required" in one_error_line(r.err)

    # The right (empty) password from a file works, and nothing written holds it.
    ok = tmp_path / "ok"
    ok.write_text("")
    snap = snapshot(cli, src, "t", repo, "--password-file", str(ok))
    assert snap["rows"] == 1
    r = cli("snapshots", "show", snap["snapshot_id"], "--repo", repo, "--json")
    assert "definitely-wrong" not in r.out and "password" not in json.dumps(one_json(r.out)["source"])


def test_option_file_password(aws: AwsContext, cli, dbs, repo: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, _ = dbs
    c = connect(src)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    c.close()
    (tmp_path / ".my.cnf").write_text("[client]\npassword = \"wrong-from-cnf\"\n")
    r = cli("snapshot", "--source", uri(src), "--table", "t", "--from", SRC, "--to", DST, "--repo", repo,
            env={"HOME": str(tmp_path), "MYSQL_PWD": None})
    assert r.code == 6, r.err
    assert "wrong-from-cnf" not in r.err


def test_table_without_primary_key_and_empty_table(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    src, dst = dbs
    c = connect(src)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE nopk (a INT, b VARCHAR(5)) DEFAULT CHARSET=latin1")
        cur.executemany("INSERT INTO nopk VALUES (%s, %s)", [(1, "x"), (1, "x"), (2, None)])  # duplicates kept
        cur.execute("CREATE TABLE empty_t (id INT PRIMARY KEY)")
    c.close()
    for table, rows in (("nopk", 3), ("empty_t", 0)):
        snap = snapshot(cli, src, table, repo, "--chunk-rows", "1")
        assert snap["rows"] == rows
        r = cli("restore", snap["snapshot_id"], "--to", uri(dst), "--region", DST, "--repo", repo, "--json")
        assert r.code == 0, r.err
        assert sorted(fetch(dst, table), key=repr) == sorted(fetch(src, table), key=repr)
        assert show_create(dst, table) == show_create(src, table)


def test_worker_processes_give_the_same_snapshot_and_restore(aws: AwsContext, cli, dbs, repo: str) -> None:  # type: ignore[no-untyped-def]
    """--processes 2: chunks read by two worker processes (each with its own consistent session) and loaded by
    two: the same digest and parts as threads, and every type restored exactly."""
    src, dst = dbs
    create_types_table(src, "types", extra_rows=300)
    threads = snapshot(cli, src, "types", repo, "--chunk-rows", "60")
    procs = snapshot(cli, src, "types", repo, "--chunk-rows", "60", "--processes", "2", "--no-resume")
    assert procs["rows"] == threads["rows"] == 304 and procs["parts"] == threads["parts"] > 2
    assert procs["digest"] == threads["digest"]
    r = cli("restore", procs["snapshot_id"], "--to", uri(dst), "--region", DST, "--repo", repo, "--json",
            "--processes", "2")
    assert r.code == 0, r.err
    assert one_json(r.out)["digest"] == threads["digest"]
    assert typed(fetch(dst, "types")) == typed(fetch(src, "types"))
    r = cli("snapshot", "--source", uri(src), "--table", "types", "--from", SRC, "--to", DST, "--repo", repo,
            "--processes", "0")
    assert r.code == 2 and "--processes must be at least 1" in one_error_line(r.err)


def test_worker_sessions_opened_under_the_driver_lock_see_one_point_in_time(dbs) -> None:  # type: ignore[no-untyped-def]
    """What --processes relies on for --consistency snapshot: sessions started while the driver holds
    LOCK TABLES ... READ all see the table as it was then, whatever is written after the unlock."""
    from backupctl.mysql_conn import settings_from_uri
    from backupctl.sources import mysql as mysql_source

    src, _ = dbs
    c = connect(src)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY)")
        cur.executemany("INSERT INTO t VALUES (%s)", [(i,) for i in range(10)])
    settings = settings_from_uri(uri(src), None, "--source")
    locker = mysql_source.lock_table(settings, src, "t")
    sessions = [mysql_source.ReadSessions(settings, src, "t", "snapshot", 1) for _ in range(2)]
    try:
        for s in sessions:
            s.open(lock=False)
    finally:
        mysql_source.unlock_table(locker)
    with c.cursor() as cur:
        cur.execute("INSERT INTO t VALUES (100)")
    try:
        for s in sessions:
            conn = s.acquire(mysql_source.TaskContext())
            with conn.cursor() as cur:
                cur.execute(f"SELECT COUNT(*) FROM {q(src)}.t")
                assert int(cur.fetchone()[0]) == 10  # a raw session: values as text
            s.release(conn, broken=False)
    finally:
        for s in sessions:
            s.close()
        c.close()


def test_engine_auto_shows_its_choice_and_uses_processes_for_big_tables(
        aws: AwsContext, dbs, repo: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import backupctl.engines as engines
    from backupctl.snapshot import MySQLSnapshotOptions, snapshot_mysql

    src, _ = dbs
    create_types_table(src, "types", extra_rows=200)
    said: list[str] = []
    opts = MySQLSnapshotOptions(source_uri=uri(src), table="types", source_region=SRC, target_region=DST,
                                repo_uri=repo, chunk_rows=50, engine="auto")
    small = snapshot_mysql(aws, opts, on_event=said.append)
    assert any(m.startswith("engine auto:") and "threads" in m for m in said), said
    monkeypatch.setattr(engines, "AUTO_PROCESS_MIN_ROWS", 100)  # "big" for this test
    said.clear()
    big = snapshot_mysql(aws, dataclasses.replace(opts, resume=False), on_event=said.append)
    assert any(m.startswith("engine auto:") and "worker processes" in m for m in said), said
    assert big.manifest.content_digest == small.manifest.content_digest and big.manifest.engine == "local"


def test_range_verification_falls_back_to_the_table_and_catches_a_changed_row(  # type: ignore[no-untyped-def]
        aws: AwsContext, cli, dbs, repo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part whose key range does not read back as the part sends the restore to the whole-table read-back
    (which passes when the table is right); a row the server changes on insert fails verification (exit 5)."""
    from backupctl.restore import MySQLRestoreOptions, restore_mysql
    from backupctl.targets import mysql as mysql_target

    src, dst = dbs
    create_types_table(src, "types", extra_rows=100)
    snap = snapshot(cli, src, "types", repo, "--chunk-rows", "40")
    assert snap["parts"] >= 3
    calls: list[str] = []

    def first_range_fails(spec, settings, pk, ends, part_file):  # type: ignore[no-untyped-def]
        calls.append(spec["task_id"])
        return None if spec["task_id"] == "load-00001" else "values"

    monkeypatch.setattr(mysql_target, "_range_matches", first_range_fails)
    res = restore_mysql(aws, MySQLRestoreOptions(snapshot_id=snap["snapshot_id"], target_uri=uri(dst), region=DST,
                                                 repo_uri=repo, table="fallback"))
    assert len(calls) == snap["parts"]
    assert res["verification"] == "table" and res["verified_by"] == "table read-back"
    assert res["digest"] == snap["digest"]
    monkeypatch.undo()

    # A trigger that rewrites one value on insert: that part's range no longer reads back as the part,
    # and neither does the table, so the restore fails verification (exit 5) naming the digests.
    c = connect(dst)
    with c.cursor() as cur:
        cur.execute(f"CREATE TABLE changed LIKE {q('fallback')}")
        cur.execute("CREATE TRIGGER bump BEFORE INSERT ON changed FOR EACH ROW "
                    "SET NEW.vc = IF(NEW.id = 1010 AND NEW.part = 0, 'changed', NEW.vc)")
    c.close()
    r = cli("--quiet", "restore", snap["snapshot_id"], "--to", uri(dst), "--table", "changed", "--region", DST,
            "--repo", repo, "--mode", "append", "--json")
    assert r.code == 5, r.err
    assert "changed has 104 rows with digest" in one_error_line(r.err)


def test_no_row_outside_the_parts_ranges_is_proven_by_index_probes_and_an_intruder_fails_verification(  # type: ignore[no-untyped-def]
        aws: AwsContext, cli, dbs, repo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Range verification ends with index probes of the gaps between the parts' key ranges (no COUNT(*)
    scan): a row another writer adds before the first range, between two ranges or after the last is
    found, counted, and sends the restore to the whole-table read-back, which fails (exit 5). Ranges
    given out of key order never pass the probes."""
    from backupctl.errors import VerificationFailed
    from backupctl.restore import MySQLRestoreOptions, restore_mysql
    from backupctl.targets import mysql as mysql_target

    src, dst = dbs
    create_types_table(src, "types", extra_rows=100)
    snap = snapshot(cli, src, "types", repo, "--chunk-rows", "30")  # chunks end at (1008, 2), (1018, 2), ...
    counts: list[str] = []
    real_count, real_probe = mysql_target.count_rows, mysql_target.rows_outside_ranges
    probed: list[list[tuple[list[Any], list[Any]]]] = []
    intruder: dict[str, tuple[int, int]] = {}

    def count(settings, database, table):  # type: ignore[no-untyped-def]
        counts.append(table)
        return real_count(settings, database, table)

    def probe(settings, database, table, pk, ranges):  # type: ignore[no-untyped-def]
        probed.append(ranges)
        if table in intruder:
            c = connect(database)
            with c.cursor() as cur:
                cur.execute(f"INSERT INTO {q(table)} (id, part, vc) VALUES (%s, %s, 'intruder')", intruder[table])
            c.close()
        return real_probe(settings, database, table, pk, ranges)

    monkeypatch.setattr(mysql_target, "count_rows", count)
    monkeypatch.setattr(mysql_target, "rows_outside_ranges", probe)

    def restore(table: str) -> dict[str, Any]:
        return restore_mysql(aws, MySQLRestoreOptions(snapshot_id=snap["snapshot_id"], target_uri=uri(dst),
                                                      region=DST, repo_uri=repo, table=table))

    res = restore("counted")
    assert res["verified_by"] == "part key ranges" and res["table_rows"] == 104
    assert counts == []  # no COUNT(*)
    ranges = probed[0]
    assert len(ranges) == snap["parts"] >= 3
    assert ranges[0][0] == [2, 7] and ranges[-1][1] == [18446744073709551615, 1]  # first and last keys
    # a key between two consecutive ranges (the first pair whose ids differ: (a, b + 1) lies between)
    a, b = next(r[1] for r, nxt in zip(ranges[:-1], ranges[1:], strict=True) if nxt[0][0] > r[1][0])
    intruder.update(before=(1, 0), between=(a, b + 1), after=(18446744073709551615, 2))
    for table in intruder:
        with pytest.raises(VerificationFailed, match=f"{table} has 105 rows"):
            restore(table)
    assert counts == ["before", "between", "after"]  # found by the probes, then counted
    # the correctly restored table, probed with its ranges out of order: rows "outside" are found
    settings = mysql_target.MySQLSettings(user="root", host=HOST, port=PORT, database=dst)
    assert real_probe(settings, dst, "counted", ["id", "part"], ranges) is False
    assert real_probe(settings, dst, "counted", ["id", "part"], [ranges[1], ranges[0], *ranges[2:]]) is True
    assert real_probe(settings, dst, "counted", ["id", "part"], ranges[::-1]) is True
    assert real_probe(settings, dst, "counted", ["id", "part"], ranges[1:]) is True  # a range left out
    monkeypatch.setattr(mysql_target, "GAP_PROBES_PER_STATEMENT", 2)  # the probes of many parts, in several statements
    assert real_probe(settings, dst, "counted", ["id", "part"], ranges) is False
    assert real_probe(settings, dst, "counted", ["id", "part"], ranges[::-1]) is True
    assert real_probe(settings, dst, "counted", ["id", "part"], ranges[:-1]) is True  # the last range's rows


def test_loads_and_key_range_read_backs_share_the_servers_places(  # type: ignore[no-untyped-def]
        aws: AwsContext, cli, dbs, repo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verified restore by INSERTs: every batch's statements and every part's key-range read-back hold
    one of ``server_gate``'s places, and never more run at once than it has (docs/adr/0021 §5)."""
    import threading

    from backupctl.restore import MySQLRestoreOptions, restore_mysql
    from backupctl.targets import mysql as mysql_target

    src, dst = dbs
    create_types_table(src, "types", extra_rows=100)
    snap = snapshot(cli, src, "types", repo, "--chunk-rows", "20")

    class Places:  # a two-place gate that records who holds it
        def __init__(self) -> None:
            self.sem, self.lock = threading.BoundedSemaphore(2), threading.Lock()
            self.holders: list[int] = []
            self.most = self.entries = 0

        def __enter__(self) -> None:
            self.sem.acquire()
            with self.lock:
                self.holders.append(threading.get_ident())
                self.most, self.entries = max(self.most, len(self.holders)), self.entries + 1

        def __exit__(self, *exc: object) -> None:
            with self.lock:
                self.holders.remove(threading.get_ident())
            self.sem.release()

    places = Places()
    monkeypatch.setattr(mysql_target, "server_gate", lambda: places)
    real = mysql_target._range_matches
    read_back_holds: list[bool] = []

    def range_matches(*args, **kwargs):  # type: ignore[no-untyped-def]
        with places.lock:
            read_back_holds.append(threading.get_ident() in places.holders)
        return real(*args, **kwargs)

    monkeypatch.setattr(mysql_target, "_range_matches", range_matches)
    res = restore_mysql(aws, MySQLRestoreOptions(snapshot_id=snap["snapshot_id"], target_uri=uri(dst), region=DST,
                                                 repo_uri=repo, table="placed"))
    assert (res["verified_by"], res["load_method"], res["digest"]) == ("part key ranges", "insert", snap["digest"])
    assert res["parts"] == snap["parts"] > 2
    assert read_back_holds == [True] * snap["parts"]
    assert places.entries == 2 * snap["parts"] and places.most <= 2  # one batch a part, one read-back a part


@pytest.mark.parametrize("keep_bytes", [64 << 20, 0])
def test_key_ranges_are_compared_with_the_batches_the_load_decoded(  # type: ignore[no-untyped-def]
        aws: AwsContext, cli, dbs, repo: str, monkeypatch: pytest.MonkeyPatch, keep_bytes: int) -> None:
    """A part small enough (``KEEP_DECODED_BYTES``) is decoded once: its key range is compared with the
    batches its load decoded; a larger one is read again for the comparison. Both prove every range,
    by bytes and (byte comparison off) by values."""
    from backupctl.restore import MySQLRestoreOptions, restore_mysql
    from backupctl.targets import mysql as mysql_target

    src, dst = dbs
    create_types_table(src, "types", extra_rows=100)
    monkeypatch.setattr(mysql_target, "KEEP_DECODED_BYTES", keep_bytes)
    real = mysql_target.iter_part_batches
    decoded: list[str] = []

    def counting(f, columns, rows=5_000, what="part"):  # type: ignore[no-untyped-def]
        decoded.append(what)
        return real(f, columns, rows, what)

    monkeypatch.setattr(mysql_target, "iter_part_batches", counting)
    snap = snapshot(cli, src, "types", repo, "--chunk-rows", "40")
    for compared in ("values", "bytes"):
        monkeypatch.setattr(mysql_target, "COMPARE_ROW_BYTES", compared == "bytes")
        decoded.clear()
        table = f"types_{compared}_{keep_bytes}"
        res = restore_mysql(aws, MySQLRestoreOptions(snapshot_id=snap["snapshot_id"], target_uri=uri(dst),
                                                     region=DST, repo_uri=repo, table=table))
        assert (res["verified_by"], res["digest"]) == ("part key ranges", snap["digest"])
        assert res["ranges_compared"] == {"bytes": 0, "values": 0, compared: snap["parts"]}
        assert len(decoded) == snap["parts"] * (1 if keep_bytes else 2)  # the load's decode, and again if not kept
        assert typed(fetch(dst, table)) == typed(fetch(src, "types"))
