"""MySQL restores by prepared INSERTs and by LOAD DATA (docs/adr/0021) against the real MariaDB.

A statement never exceeds the server's packet limit (a row too long for one goes by LOAD DATA with
the rest of its batch, in the same transaction), and a server that refuses LOCAL INFILE still gets
its restore by INSERTs (``--load-method auto``), while an explicit ``load-data`` there fails with one
line and writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from backupctl.formats.parquet import arrow_schema
from backupctl.mysql_conn import MySQLSettings
from backupctl.sources.mysql import read_columns
from backupctl.targets import mysql as mysql_target
from tests.integration.helpers import one_error_line, one_json
from tests.integration.mysql_db import (
    HOST,
    PORT,
    connect,
    make_orders,
    rows_of,
    scratch_databases,
    server_up,
    uri,
)

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"

if not server_up():  # pragma: no cover
    pytest.skip("MariaDB at 127.0.0.1:3306 is not running", allow_module_level=True)


@pytest.fixture
def dbs() -> Iterator[tuple[str, str]]:
    with scratch_databases("lm") as pair:
        yield pair


def settings(db: str) -> MySQLSettings:
    s = MySQLSettings("root", HOST, PORT, db, None, None, None, None)
    s.password = ""
    return s


def test_statements_fit_the_packet_and_a_longer_row_goes_by_load_data(dbs: tuple[str, str]) -> None:
    db, _ = dbs
    c = connect(db)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE blobs (id INT AUTO_INCREMENT PRIMARY KEY, b LONGBLOB, t VARCHAR(10))")
    c.close()
    meta = connect(db)
    columns = read_columns(meta, db, "blobs")
    meta.close()
    values = [bytes([i % 256]) * 40 for i in range(50)]
    values[30] = b"\x00\xff" * 5000  # 10,000 bytes: no statement of it fits a 4 KiB packet
    batch = pa.record_batch([pa.array(range(1, 51), pa.int32()), pa.array(values, pa.binary()),
                             pa.array([f"r{i}" for i in range(50)])], schema=arrow_schema(columns))

    class Gate:  # records what runs inside it
        def __init__(self) -> None:
            self.held = False

        def __enter__(self) -> None:
            self.held = True

        def __exit__(self, *exc: object) -> None:
            self.held = False

    gate = Gate()
    conn = settings(db).connect_load()
    try:
        mysql_target.session_setup(conn)
        conn.autocommit(False)
        ins = mysql_target.PreparedInsert(conn, db, "blobs", columns, gate)
        ins.max_packet = 4096
        sent_commands: list[tuple[int, bool]] = []
        real = conn._execute_command
        conn._execute_command = lambda cmd, data: (sent_commands.append((cmd, gate.held)), real(cmd, data))[1]
        rows, warnings, sent = ins.insert(batch)
        conn._execute_command = real
        assert (rows, warnings, sent) == (30, 0, 30)  # rows 0..29, in statements of at most 4 KiB
        # statements are prepared outside the gate, executed inside it
        assert {held for cmd, held in sent_commands if cmd == 0x17} == {True}
        assert {held for cmd, held in sent_commands if cmd == 0x16} == {False}
        assert len(ins.statements) >= 2 and max(ins.statements) < 30
        conn.rollback()
        mysql_target._insert_batch(ins, mysql_target.load_sql(db, "blobs", columns), batch, columns, "test")
        conn.commit()
    finally:
        conn.close()
    assert rows_of(db, "blobs") == [(i + 1, values[i], f"r{i}") for i in range(50)]


def snapshot(cli: Any, db: str, repo: str) -> dict[str, Any]:
    r = cli("snapshot", "--source", uri(db), "--table", "orders", "--from", SRC, "--to", DST, "--repo", repo,
            "--chunk-rows", "300", "--json")
    assert r.code == 0, r.err
    return dict(one_json(r.out))


def test_load_data_is_refused_up_front_when_the_server_refuses_local_infile(cli: Any, dbs: tuple[str, str],
                                                                           name: str) -> None:
    src, dst = dbs
    make_orders(src, 1000)
    repo = f"s3://{name}-repo"
    snap = snapshot(cli, src, repo)
    base = ("restore", snap["snapshot_id"], "--to", uri(dst), "--region", DST, "--repo", repo, "--json")
    admin = connect()
    try:
        with admin.cursor() as cur:
            cur.execute("SET GLOBAL local_infile = 0")
        r = cli(*base, "--table", "by_load_data", "--load-method", "load-data")
        assert r.code == 2 and r.out == ""
        assert "refuses LOAD DATA LOCAL INFILE (local_infile is OFF)" in one_error_line(r.err)
        r = cli(*base, "--table", "by_insert")  # auto: prepared INSERTs need no LOCAL INFILE
        assert r.code == 0, r.err
        res = one_json(r.out)
        assert (res["load_method"], res["verified_by"], res["digest"]) == ("insert", "part key ranges", snap["digest"])
        assert rows_of(dst, "by_insert") == rows_of(src)
    finally:
        with admin.cursor() as cur:
            cur.execute("SET GLOBAL local_infile = 1")
        admin.close()
    with connect(dst).cursor() as cur:  # refused before anything was created
        cur.execute("SHOW TABLES LIKE 'by_load_data'")
        assert cur.fetchall() == ()


def test_load_method_is_for_mysql_targets(cli: Any) -> None:
    r = cli("restore", "20261127T013000Z-1a2b3c", "--to-table", "t", "--region", DST, "--load-method", "insert")
    assert r.code == 2 and "--load-method applies to MySQL targets" in one_error_line(r.err)


def test_a_statement_longer_than_one_protocol_packet(dbs: tuple[str, str]) -> None:
    """A 20 MB value makes a statement of two 16 MiB protocol packets; the replies after it are still
    matched (each pending reply's packet number is the one its command left)."""
    db, _ = dbs
    admin = connect()
    with admin.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.max_allowed_packet")
        before = int(cur.fetchone()[0])
        cur.execute("SET GLOBAL max_allowed_packet = 67108864")
    try:
        c = connect(db)
        with c.cursor() as cur:
            cur.execute("CREATE TABLE big (id INT PRIMARY KEY, b LONGBLOB)")
        columns = read_columns(c, db, "big")
        c.close()
        values = [b"a", bytes(range(256)) * 80_000, b"c", b"d"]  # 20,480,000 bytes in the second
        batch = pa.record_batch([pa.array([1, 2, 3, 4], pa.int32()), pa.array(values, pa.binary())],
                                schema=arrow_schema(columns))
        conn = settings(db).connect_load()
        try:
            mysql_target.session_setup(conn)
            conn.autocommit(False)
            ins = mysql_target.PreparedInsert(conn, db, "big", columns)
            assert ins.insert(batch) == (4, 0, 4)
            conn.commit()
        finally:
            conn.close()
        assert rows_of(db, "big") == [(i + 1, v) for i, v in enumerate(values)]
    finally:
        with admin.cursor() as cur:
            cur.execute(f"SET GLOBAL max_allowed_packet = {before}")
        admin.close()


def test_connections_share_one_preferred_tls_context_made_only_when_a_server_offers_tls(
        dbs: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """PyMySQL builds a TLS context for PREFERRED mode in every connection (~17 ms of CPU loading CA
    certificates it does not verify with); ours make it once per process, and only when a server
    offers TLS. Explicit options still get their own."""
    import ssl

    from pymysql.constants import CLIENT

    from backupctl import mysql_conn
    from backupctl.mysql_conn import SharedTLSConnection

    monkeypatch.setattr(mysql_conn, "_PREFERRED_TLS", None)
    db, _ = dbs
    a, b = settings(db).connect(), settings(db).connect_load()
    try:
        with a.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        if not a.server_capabilities & CLIENT.SSL:  # this server offers no TLS: no context was made
            assert mysql_conn._PREFERRED_TLS is None
            assert isinstance(a.ctx, mysql_conn._PreferredTLS) and isinstance(b.ctx, mysql_conn._PreferredTLS)
        made = [mysql_conn._preferred_tls(c.ctx.make) if isinstance(c.ctx, mysql_conn._PreferredTLS) else c.ctx
                for c in (a, b)]
        assert made[0] is made[1] is mysql_conn._PREFERRED_TLS
        assert made[0].verify_mode == ssl.CERT_NONE and not made[0].check_hostname
        later = settings(db).connect()  # once made, a new connection takes the shared context as is
        assert later.ctx is made[0]
        later.close()
    finally:
        a.close()
        b.close()
    own = SharedTLSConnection.__new__(SharedTLSConnection)._create_ssl_ctx({"verify_mode": "required"})
    assert own is not made[0] and own.verify_mode == ssl.CERT_REQUIRED


def test_prepared_inserts_declare_utf8_text_binary(dbs: tuple[str, str]) -> None:
    """Every text column UTF-8: string parameters are sent as binary (no conversion on the server), yet
    4-byte UTF-8 and non-ASCII ENUM values land as they are and invalid UTF-8 is still refused (1366,
    nothing committed). A latin1 column keeps utf8mb4, which the server converts from."""
    import pymysql

    db, _ = dbs
    c = connect(db)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE `tä` (id INT PRIMARY KEY, `café` VARCHAR(10), e ENUM('é', 'b')) CHARSET=utf8mb4")
        cur.execute("CREATE TABLE lat (id INT PRIMARY KEY, `café` VARCHAR(10) CHARACTER SET latin1)")
    utf8, lat = read_columns(c, db, "tä"), read_columns(c, db, "lat")
    c.close()

    def load(table: str, columns: list[dict[str, Any]], arrays: list[pa.Array]) -> tuple[str, Any]:
        """(the connection's character_set_client, what insert returned or the error it raised)"""
        batch = pa.record_batch(arrays, schema=arrow_schema(columns))
        conn = settings(db).connect_load()
        try:
            mysql_target.session_setup(conn)
            conn.autocommit(False)
            ins = mysql_target.PreparedInsert(conn, db, table, columns)
            with conn.cursor() as cur:
                cur.execute("SELECT @@character_set_client")
                charset = cur.fetchone()[0]
            try:
                done: Any = ins.insert(batch)
                conn.commit()
            except pymysql.MySQLError as e:
                conn.rollback()
                done = e.args[0]
            return charset, done
        finally:
            conn.close()

    ids = pa.array([1, 2], pa.int32())
    assert load("tä", utf8, [ids, pa.array(["é😀", "ÄÖÜ 𠜎"]), pa.array(["é", "b"])]) == ("binary", (2, 0, 2))
    assert rows_of(db, "tä") == [(1, "é😀", "é"), (2, "ÄÖÜ 𠜎", "b")]
    invalid = pa.array([b"fine", b"ok\xff"], pa.binary()).view(pa.string())  # not UTF-8, never validated
    assert load("tä", utf8, [pa.array([3, 4], pa.int32()), invalid, pa.array(["b", "b"])]) == ("binary", 1366)
    assert len(rows_of(db, "tä")) == 2
    assert load("lat", lat, [ids, pa.array(["é", "ü"])]) == ("utf8mb4", (2, 0, 2))
    assert rows_of(db, "lat") == [(1, "é"), (2, "ü")]


@pytest.mark.parametrize("method", ["insert", "load-data"])
def test_a_value_the_target_refuses_is_one_line_by_either_method(cli: Any, dbs: tuple[str, str], name: str,
                                                                 method: str) -> None:
    """A target whose CHECK constraint refuses a snapshot row (``--mode append``): prepared INSERTs raise
    the refusal as an error, LOAD DATA LOCAL as a warning — both end in the same one line, exit 5, and
    the refused batch is rolled back."""
    src, dst = dbs
    make_orders(src, 20)
    repo = f"s3://{name}-repo"
    snap = snapshot(cli, src, repo)
    c = connect(dst)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE checked (id INT PRIMARY KEY, customer VARCHAR(40) NOT NULL, amount DECIMAL(12,2), "
                    "placed DATETIME(6), note TEXT, CONSTRAINT small CHECK (id < 20))")
    c.close()
    r = cli("restore", snap["snapshot_id"], "--to", uri(dst), "--region", DST, "--repo", repo, "--table", "checked",
            "--mode", "append", "--load-method", method)
    assert r.code == 5 and "Traceback" not in r.err
    line = r.err.strip().splitlines()[-1]  # after the progress line
    assert line.startswith("error: ") and "the server did not take every value as it is (4025: CONSTRAINT `small` failed" in line
    assert rows_of(dst, "checked") == []


def test_every_type_goes_as_the_tables_binary_rows_and_lands_as_the_text_parameters_do(dbs: tuple[str, str]) -> None:
    """Given the table's declared column types, a batch is sent as binary rows (integers at their width,
    dates and times as structs, BIT as bytes, YEAR as SHORT: ``formats.mysql_rows.BinaryRows``) and kept
    for the key-range comparison; every value of the every-type table lands exactly as with the
    per-kind parameters (text for dates, DECIMAL and TIME), and the kept rows are the row packets the
    server sends back for the table."""
    from backupctl.formats.mysql_rows import row_packets
    from backupctl.mysql_conn import RawRows, declared_fields
    from backupctl.sources.mysql import describe_table, fetch_batches, read_back_sql
    from tests.integration.test_mysql_cli import create_types_table, fetch, typed

    src, dst = dbs
    create_types_table(src, "types", extra_rows=20)
    c = connect(src)
    info = describe_table(c, src, "types")
    columns = info.stored
    with c.cursor() as cur:
        cur.execute("SHOW CREATE TABLE types")
        ddl = str(cur.fetchone()[1])
    batches = [b for b, _n in fetch_batches(c, read_back_sql(src, "types", columns, "", info.primary_key), [], columns)]
    c.close()
    c = connect(dst)
    with c.cursor() as cur:
        cur.execute(ddl.replace("CREATE TABLE `types`", "CREATE TABLE `as_binary`", 1))
        cur.execute(ddl.replace("CREATE TABLE `types`", "CREATE TABLE `as_text`", 1))
    c.close()
    sent: dict[str, Any] = {}
    for table in ("as_binary", "as_text"):
        conn = settings(dst).connect_load()
        try:
            mysql_target.session_setup(conn)
            conn.autocommit(False)
            sql = read_back_sql(dst, table, columns, "1 = 0")
            fields = declared_fields(conn, sql) if table == "as_binary" else None
            ins = mysql_target.PreparedInsert(conn, dst, table, columns, fields=fields)
            assert (ins.fields is not None) == (table == "as_binary")
            kept = []
            for batch in batches:
                assert ins.insert(batch) == (batch.num_rows, 0, batch.num_rows)
                kept.append(ins.last)
            conn.commit()
            sent[table] = (fields, kept)
        finally:
            conn.close()
    want = typed(fetch(src, "types"))
    assert typed(fetch(dst, "as_binary")) == want and typed(fetch(dst, "as_text")) == want
    c = connect(dst)
    with c.cursor() as cur:
        cur.execute(f"CHECKSUM TABLE as_binary, as_text, `{src}`.types")
        sums = {str(r[0]).split(".")[-1]: r[1] for r in cur.fetchall()}
    c.close()
    assert sums["as_binary"] == sums["as_text"] == sums["types"]
    fields, kept = sent["as_binary"]
    assert sent["as_text"][1] == [None] * len(batches)  # no declared types: per-kind parameters, nothing kept
    # the kept rows, with headers, are what the server sends for a prepared SELECT of the table
    reader = RawRows(settings(dst).connect())
    try:
        assert reader.query(read_back_sql(dst, "as_binary", columns, "", info.primary_key), []) == fields
        seq = reader.execute()
        for rows, batch in zip(kept, batches, strict=True):
            packets = rows.packets(seq)
            assert packets == row_packets(batch, columns, fields, seq)
            assert reader.matches(packets[0])
            seq = packets[1]
        assert reader.ends(seq)
    finally:
        reader.close()
