"""Bulk reads as a prepared SELECT's binary rows (mysql_conn.PreparedRows, formats/_mysqltext.c split_binary,
docs/adr/0025) against the real MariaDB: the every-type table gives the same Arrow batches as the text
rows, every prepared statement is closed, and a zero date is refused with one line by both."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from backupctl.aws import AwsContext
from backupctl.errors import FormatError
from backupctl.formats import mysql_text
from backupctl.mysql_conn import PreparedRows
from backupctl.sources import mysql as mysql_source
from tests.integration.mysql_db import connect, scratch_databases, server_up, uri
from tests.integration.test_mysql_cli import DST, SRC, create_types_table

pytestmark = pytest.mark.integration

if not server_up():  # pragma: no cover
    pytest.skip("MariaDB at 127.0.0.1:3306 is not running", allow_module_level=True)


@pytest.fixture
def db() -> Iterator[str]:
    with scratch_databases("bin") as (src, _dst):
        yield src


@pytest.fixture(autouse=True)
def c_splitter() -> None:
    if not mysql_text.BINARY_SPLIT:  # a skip fails the run under CI=true (tests/conftest.py)
        pytest.skip("the C row splitter (backupctl/formats/_mysqltext.c) was not built")


def stmt_counts(conn: object) -> tuple[int, int]:
    with conn.cursor() as cur:  # type: ignore[attr-defined]
        cur.execute("SHOW SESSION STATUS WHERE Variable_name IN ('Com_stmt_prepare', 'Com_stmt_close')")
        got = dict(cur.fetchall())
    return int(got["Com_stmt_prepare"]), int(got["Com_stmt_close"])


def read(conn: object, db: str, table: str, binary: bool, monkeypatch: pytest.MonkeyPatch) -> pa.Table:
    monkeypatch.setattr(mysql_source, "BINARY_READS", binary)
    info = mysql_source.describe_table(conn, db, table)  # type: ignore[arg-type]
    sql, params = mysql_source.chunk_select(db, table, info.stored, info.primary_key, None, None)
    batches = [b for b, _n in mysql_source.fetch_batches(conn, sql, params, info.stored)]
    return pa.Table.from_batches(batches, schema=mysql_source.arrow_schema(info.stored))


def test_every_type_reads_the_same_as_binary_rows_and_as_text_rows(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    create_types_table(db, "types", extra_rows=3000)
    conn = connect(db)
    info = mysql_source.describe_table(conn, db, "types")
    sql, params = mysql_source.chunk_select(db, "types", info.stored, info.primary_key, None, None)
    rows = PreparedRows(conn)
    assert mysql_text.binary_codes(info.stored, rows.prepare(sql, params)) is not None  # every column taken
    rows.close_statement()
    before = stmt_counts(conn)
    as_binary = read(conn, db, "types", True, monkeypatch)
    after = stmt_counts(conn)
    as_text = read(conn, db, "types", False, monkeypatch)
    assert after[0] - before[0] == 1 and after[1] - before[1] == 1  # prepared once, closed once
    assert stmt_counts(conn) == (after[0], after[1])  # the text read prepares nothing
    assert as_binary.num_rows == 3004
    assert as_binary.equals(as_text)
    assert as_binary.column("bu").to_pylist()[-1] == 18446744073709551615  # the greatest key's row is last
    conn.close()


def test_a_zero_date_is_refused_by_binary_and_text_reads_and_by_the_cli(
        db: str, monkeypatch: pytest.MonkeyPatch, aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    conn = connect(db)
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = ''")
        cur.execute("CREATE TABLE z (id INT PRIMARY KEY, d DATE, note VARCHAR(10))")
        cur.execute("INSERT INTO z VALUES (1, '2020-01-01', 'a'), (2, '0000-00-00', 'b'), (3, '2020-01-02', 'c')")
    for binary in (True, False):
        with pytest.raises(FormatError, match=r"^zero or invalid date value '0000-00-00' cannot be backed up$"):
            read(conn, db, "z", binary, monkeypatch)
        conn.close()
        conn = connect(db)  # the read stopped mid-result: that connection is not reused
    conn.close()
    monkeypatch.setattr(mysql_source, "BINARY_READS", True)
    r = cli("snapshot", "--source", uri(db), "--table", "z", "--from", SRC, "--to", DST,
            "--repo", f"s3://{name}-repo/mysql", "--json")
    assert r.code == 5, r.err
    assert r.out == ""
    assert r.err.strip().splitlines()[-1] == "error: zero or invalid date value '0000-00-00' cannot be backed up"
    assert "Traceback" not in r.err
