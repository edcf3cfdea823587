"""MySQL as a target: recreate a table from its captured DDL, check compatibility, load parts.

The table is created from ``SHOW CREATE TABLE`` of the source (schema.json),
so indexes, charset, collation, generated columns and constraints come back
as they were; only the table name is replaced (backtick-quoted).

A load task checks the part's sha256, then sends its rows in batches of
``LOAD_ROWS`` (one transaction each) as prepared multi-row ``INSERT``s over the
binary protocol (``PreparedInsert``, the default) or as ``LOAD DATA LOCAL
INFILE`` text (``--load-method load-data``; docs/adr/0021). Upserts use
``INSERT ... ON DUPLICATE KEY UPDATE col = VALUES(col)`` (pymysql
``executemany``, committing every ``COMMIT_ROWS`` rows).
Generated columns are never written: the server recomputes them. A dropped
connection is retried from the last committed row, so rows are neither lost
nor written twice. The session runs with ``foreign_key_checks = 0`` (parts
load in parallel, in any order) and ``time_zone = '+00:00'`` (TIMESTAMP
values are stored as UTC).
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import IO, Any, NoReturn

import pymysql

from backupctl.engines.local import TaskContext
from backupctl.errors import BackupctlError, Conflict, FormatError, Interrupted
from backupctl.formats.dynamodb_json import Digest
from backupctl.formats.mysql_params import MAX_PARAMS, ParamRows
from backupctl.formats.mysql_rows import BinaryRows, encodable, param_types, row_packets
from backupctl.formats.parquet import (
    batches_equal,
    hash_sum,
    iter_part_batches,
    iter_part_rows,
    load_charset,
    load_csv,
    load_format,
    load_targets,
    normalize,
    row_hash,
    row_hashes,
    sql_value,
)
from backupctl.model import TaskSpec
from backupctl.mysql_conn import (
    ER_DUP_ENTRY,
    ER_PARSE_ERROR,
    INFILE_NAME,
    MySQLSettings,
    RawRows,
    declared_fields,
    error_code,
    load_data,
    quote_ident,
    run_sql,
    stmt_execute,
    stmt_prepare,
    translate,
    translated,
    value_refused,
)
from backupctl.repository import part_buffer, task_store
from backupctl.retry import RetryPolicy, policy_from_env
from backupctl.sources.mysql import (
    FETCH_ROWS,
    key_after,
    key_before,
    key_range_where,
    read_back_sql,
    read_columns,
    reading_back,
    table_ref,
)

MODES = ("new", "upsert", "replace", "truncate", "append")
# A key range read back is first compared as the server's bytes (formats.mysql_rows); tests switch it off
# to cover the value comparison alone.
COMPARE_ROW_BYTES = True
# How plain (non-upsert) loads send rows: prepared multi-row INSERTs over the binary protocol, or
# LOAD DATA LOCAL INFILE (docs/adr/0021); "auto" is "insert".
LOAD_METHODS = ("auto", "insert", "load-data")


def mysql_load_workers(reading_back: bool = False) -> int:
    """Default concurrent load tasks of a MySQL restore: one per CPU core (at least 2), one more while
    each task reads its part's key range back after loading it (``reading_back``).

    LOAD DATA into one table queues on its AUTO_INCREMENT lock (innodb_autoinc_lock_mode 1, MariaDB's
    default), so many loaders add contention, not speed (1M-row bench: 8 loaders 11.3 s, 2 loaders
    10.0-10.5 s). A task reading its range back is not loading: with one loader per core the other one
    then loads alone and the server waits while it builds each next statement. Measured on 2 cores
    (1M-row verified restore, five blocks of interleaved pairs, 2 vs 3 loaders): 3 were faster in four
    blocks (medians 6.55 -> 6.36 s, 6.84 -> 6.66 s, 6.80 -> 6.35 s, 6.57 -> 6.22 s) and 0.11 s slower
    in one (6.44 vs 6.55 s), at ~70 MiB more peak RSS; 4 loaders were slower than 3. Without the read-back
    2 loaders stay best (4.83/4.92 s vs 5.02/5.05 s with 3). Prepared INSERTs (docs/adr/0021) keep the
    shape: with read-backs the loads and read-backs share ``server_gate``'s places (one per core), one
    loader encoding meanwhile; without them 2 loaders run side by side.
    """
    return max(2, os.cpu_count() or 2) + (1 if reading_back else 0)


def server_gate() -> threading.BoundedSemaphore:
    """The places on the server a verified restore's loaders share while key ranges are read back as
    parts load: one per CPU core (at least 2). A batch's INSERT statements hold one from the first
    statement sent to the last reply (not while the next batch is encoded), a part's key-range
    read-back holds one while it reads; with one loader more than places, one always encodes.

    Measured on 2 cores, 1M-row bench table, same snapshot, interleaved (docs/adr/0021 §5): one place
    for loads only (read-backs ungated) vs two shared with the read-backs, 16.2-16.5 s vs 14.7-15.5 s
    on a VM whose server spends ~13 CPU-s on the loads (its one place was the critical path); on a
    VM with a third of that server cost the two were even within noise, and three loaders without any
    gate were slower than either (6.2-6.6 s vs 5.7-5.9 s).
    """
    return threading.BoundedSemaphore(max(2, os.cpu_count() or 2))


# A part's decoded batches are kept, up to this many bytes, for its key-range comparison after the load
# (a second decode of a bench part cost ~0.4 CPU-s per 1M rows); a larger part is read again.
KEEP_DECODED_BYTES = 64 << 20
INSERT_ROWS = 5_000  # rows handed to one executemany (split further to fit max_allowed_packet)
COMMIT_ROWS = 50_000
LOAD_ROWS = 25_000  # rows per batch of a plain load: one LOAD DATA, or pipelined INSERTs (one transaction each)
MAX_STATEMENT_BYTES = 8 << 20
# Bytes of values per prepared INSERT: on the 1M-row bench table (~220 bytes a row) 250-1000 rows a
# statement cost the server 2.6-3.0 CPU-s against 4.6-4.7 with 5,000 (docs/adr/0021).
INSERT_STATEMENT_BYTES = 128 << 10

_INT_WIDTH = re.compile(r"^(tinyint|smallint|mediumint|int|integer|bigint)\(\d+\)")


def local_infile(conn: pymysql.connections.Connection) -> bool:
    """Whether the server accepts LOAD DATA LOCAL INFILE (``@@GLOBAL.local_infile``; MySQL 8.0 ships with it off)."""
    return str(run_sql(conn, "SELECT @@GLOBAL.local_infile", ())[0][0]).upper() in ("1", "ON")


def target_columns(conn: pymysql.connections.Connection, database: str, table: str) -> list[dict[str, Any]] | None:
    """The target table's columns, or None when it does not exist."""
    cols = read_columns(conn, database, table)
    return cols or None


def _shape(col: dict[str, Any]) -> tuple[Any, ...]:
    ctype = _INT_WIDTH.sub(r"\1", str(col["column_type"]).lower())
    return (col["name"], ctype, bool(col["nullable"]), bool(col["generated"]), col.get("collation"))


def check_compatible(schema: dict[str, Any], have: list[dict[str, Any]], table: str,
                     have_pk: list[str] | None = None) -> None:
    """Refuse (Conflict) a target whose columns differ from the snapshot's."""
    want = [_shape(c) for c in schema["columns"]]
    got = [_shape(c) for c in have]
    if want != got:
        diff = next(((w, g) for w, g in zip(want, got, strict=False) if w != g), None)
        detail = (f"column {diff[0][0]!r} is {diff[1][1]} in the target, {diff[0][1]} in the snapshot"
                  if diff else f"the target has {len(got)} columns, the snapshot {len(want)}")
        raise Conflict(f"table '{table}' has another schema than the snapshot ({detail}): refusing to load")
    if have_pk is not None and have_pk != list(schema.get("primary_key") or []):
        raise Conflict(f"table '{table}' has primary key {have_pk}, the snapshot {schema.get('primary_key')}: "
                       "refusing to load")


def primary_key(conn: pymysql.connections.Connection, database: str, table: str) -> list[str]:
    rows = run_sql(
        conn,
        "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
        "AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
        (database, table),
    )
    return [r[0] for r in rows]


def create_sql(schema: dict[str, Any], table: str) -> str:
    """The source's CREATE TABLE with the target table name (backtick-quoted)."""
    ddl = str(schema["create_table"])
    head = "CREATE TABLE " + "`" + str(schema["table_name"]).replace("`", "``") + "`"
    if not ddl.startswith(head):
        raise FormatError("schema.json create_table does not start with CREATE TABLE `<table_name>`")
    return "CREATE TABLE " + quote_ident(table) + ddl[len(head):].replace("%", "%%")


def session_setup(conn: pymysql.connections.Connection) -> None:
    run_sql(conn, "SET SESSION foreign_key_checks = 0", ())
    run_sql(conn, "SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_AUTO_VALUE_ON_ZERO')", ())


def create_table(conn: pymysql.connections.Connection, database: str, schema: dict[str, Any], table: str) -> None:
    session_setup(conn)
    run_sql(conn, f"USE {quote_ident(database)}", ())
    try:
        run_sql(conn, create_sql(schema, table), (), f"creating table {database}.{table}")
    except pymysql.MySQLError as e:
        if error_code(e) == ER_PARSE_ERROR:  # a schema.json whose DDL is not one CREATE TABLE statement
            raise FormatError(f"the snapshot's schema.json create_table is not a CREATE TABLE this server runs: "
                              f"{str(e.args[1])[:200] if len(e.args) > 1 else e}") from e
        raise


def drop_table(conn: pymysql.connections.Connection, database: str, table: str) -> None:
    session_setup(conn)
    run_sql(conn, f"DROP TABLE {table_ref(database, table)}", (), f"dropping {database}.{table}")


def truncate_table(conn: pymysql.connections.Connection, database: str, table: str) -> None:
    session_setup(conn)
    run_sql(conn, f"TRUNCATE TABLE {table_ref(database, table)}", (), f"truncating {database}.{table}")


def stage_name(table: str) -> str:
    """A fresh name for an append's staging table (``_backupctl_append_<table>_<hex>``, at most 51 characters)."""
    return f"_backupctl_append_{table[:24]}_{secrets.token_hex(4)}"


def create_stage(conn: pymysql.connections.Connection, database: str, table: str, stage: str) -> None:
    """``CREATE TABLE stage LIKE table``: the target's columns, keys and unique indexes (not its foreign
    keys, whose constraint names are unique in a database), empty."""
    session_setup(conn)
    run_sql(conn, f"CREATE TABLE {table_ref(database, stage)} LIKE {table_ref(database, table)}", (),
            f"creating staging table {database}.{stage}")


def append_stage(settings: MySQLSettings, database: str, stage: str, table: str, columns: list[dict[str, Any]]) -> int:
    """Every row of the staging table into the target in one ``INSERT ... SELECT`` (one transaction: a
    duplicate key or any other error leaves the target as it was); the number of rows inserted.

    Not retried: a connection lost while the statement or its commit ran leaves it unknown whether
    the rows went in, and running it again would then refuse them as duplicates (docs/adr/0023)."""
    names = ", ".join(quote_ident(c["name"]) for c in columns)
    sql = (f"INSERT INTO {table_ref(database, table)} ({names}) "
           f"SELECT {names} FROM {table_ref(database, stage)}")
    what = f"appending the staged rows to {database}.{table}"
    conn = settings.connect()
    try:
        session_setup(conn)
        with translated(what), conn.cursor() as cur:
            return int(cur.execute(sql))
    finally:
        conn.close()


def drop_stage(settings: MySQLSettings, database: str, stage: str) -> str | None:
    """Drop a staging table; None, or why it could not be dropped (the restore's own error wins)."""
    try:
        conn = settings.connect()
        try:
            run_sql(conn, f"DROP TABLE IF EXISTS {table_ref(database, stage)}", (), f"dropping {database}.{stage}")
        finally:
            conn.close()
    except (BackupctlError, pymysql.MySQLError, OSError) as e:
        return f"could not drop the staging table {database}.{stage} ({e}): drop it by hand"
    return None


GAP_PROBES_PER_STATEMENT = 200  # a snapshot of many parts sends its gap probes in several statements


def rows_outside_ranges(settings: MySQLSettings, database: str, table: str, pk: list[str],
                        ranges: list[tuple[list[Any], list[Any]]]) -> bool:
    """Whether the table holds a row outside the parts' key ranges ``[first, last]`` (SQL parameters),
    given in the snapshot's key order: index probes, one a gap (before the first range, between
    consecutive ones, after the last), ``GAP_PROBES_PER_STATEMENT`` to a statement, instead of ``COUNT(*)``
    reading every row.

    With every range read back as exactly its part's rows, no row in any gap means the table holds
    exactly the snapshot's rows. Ranges out of key order never hide a row: the first range out of
    place leaves a part's range (a part has rows) inside a probed gap, which then finds it (the caller
    counts instead)."""
    probes: list[tuple[str, list[Any]]] = []
    lo: list[Any] | None = None
    for first, last in [*ranges, (None, None)]:
        conds, params = [], []
        if lo is not None:
            w, p = key_after(pk, lo)
            conds.append(w)
            params.extend(p)
        if first is not None:
            w, p = key_before(pk, first)
            conds.append(w)
            params.extend(p)
        where = " AND ".join(conds) or "1 = 1"
        probes.append((f"(SELECT 1 FROM {table_ref(database, table)} WHERE {where} LIMIT 1)", params))
        lo = last
    conn = settings.connect()
    try:
        for i in range(0, len(probes), GAP_PROBES_PER_STATEMENT):
            batch = probes[i:i + GAP_PROBES_PER_STATEMENT]
            sql = " UNION ALL ".join(q for q, _ in batch)
            if run_sql(conn, sql, [v for _, p in batch for v in p], f"reading {database}.{table} outside the parts"):
                return True
        return False
    finally:
        conn.close()


def count_rows(settings: MySQLSettings, database: str, table: str) -> int:
    """``SELECT COUNT(*)`` of a table, on a connection of its own."""
    conn = settings.connect()
    try:
        return int(run_sql(conn, f"SELECT COUNT(*) FROM {table_ref(database, table)}", (),
                           f"counting {database}.{table}")[0][0])
    finally:
        conn.close()


def is_empty(conn: pymysql.connections.Connection, database: str, table: str) -> bool:
    return not run_sql(conn, f"SELECT 1 FROM {table_ref(database, table)} LIMIT 1", (), f"reading {database}.{table}")


def insert_sql(database: str, table: str, columns: list[dict[str, Any]], upsert: bool) -> str:
    names = [quote_ident(c["name"]) for c in columns]
    sql = (f"INSERT INTO {table_ref(database, table)} ({', '.join(names)}) "
           f"VALUES ({', '.join(['%s'] * len(names))})")
    if upsert:
        sql += " ON DUPLICATE KEY UPDATE " + ", ".join(f"{n} = VALUES({n})" for n in names)
    return sql


def plan_load(*, aws: dict[str, Any], settings: MySQLSettings, manifest_parts: list[dict[str, Any]],
              repo: dict[str, Any], snapshot_prefix: str, database: str, table: str,
              columns: list[dict[str, Any]], upsert: bool, policy: RetryPolicy | None = None,
              hash_rows: bool = True, verify_range: list[str] | None = None,
              load_method: str = "insert") -> list[TaskSpec]:
    """One task per part. Specs hold no password (the local engine passes settings in memory).

    ``hash_rows`` off: the parts' rows are not hashed as they load (the restore reads the whole
    table back and compares it with the snapshot instead, or verification is off); each part's
    sha256 and row count are still checked.

    ``verify_range`` (the primary key, for a full snapshot loaded into an empty table): once a part
    is in, the task reads its key range back from the table and compares rows and digest with the
    part's (``range_verified`` in the result), overlapping the read-back with other parts' loads.

    ``load_method`` (plain loads; upserts always use ``INSERT ... ON DUPLICATE KEY UPDATE``):
    ``insert`` for prepared multi-row INSERTs, ``load-data`` for LOAD DATA LOCAL INFILE.
    """
    return [
        {
            "kind": "mysql.load",
            "task_id": f"load-{i:05d}",
            "part": part,
            "repo": repo,
            "aws": aws,
            "mysql": settings.to_dict(),
            "snapshot_prefix": snapshot_prefix,
            "database": database,
            "table": table,
            "columns": columns,
            "upsert": upsert,
            "hash_rows": hash_rows,
            "verify_range": verify_range,
            "load_method": load_method,
            "retry": (policy or policy_from_env()).to_dict(),
        }
        for i, part in enumerate(manifest_parts)
    ]


def load_sql(database: str, table: str, columns: list[dict[str, Any]]) -> str:
    """``LOAD DATA LOCAL INFILE`` of ``load_csv`` text into ``columns`` (see ``formats.parquet.load_format``)."""
    targets, sets = load_targets(columns, quote_ident)
    return (f"LOAD DATA LOCAL INFILE '{INFILE_NAME}' INTO TABLE {table_ref(database, table)} {load_format(columns)} "
            f"{targets}{sets}")


class PreparedInsert:
    """Prepared multi-row ``INSERT``s into one table on one connection (binary protocol, docs/adr/0021).

    A batch is encoded once (``formats.mysql_params.ParamRows``) and sent as statements of up to
    ``INSERT_STATEMENT_BYTES`` of values and ``MAX_PARAMS`` placeholders; a statement is prepared
    once per row count (the server frees them with the connection). A row too long for one packet
    (``max_allowed_packet``) goes, with the rest of its batch, by LOAD DATA in the same transaction.
    ``gate`` (shared by a restore's loaders, ``server_gate``): held while a batch's statements run on
    the server, not while it is encoded.

    When every text column stores UTF-8 as it is (``formats.parquet.load_charset``, the rule of LOAD
    DATA's ``CHARACTER SET binary``), the connection's ``character_set_client`` is ``binary``: the
    server then takes each string parameter as it is instead of converting it from the client
    character set (``Item_param::convert_str_value``, ~7% of the server's CPU in a perf profile of the
    bench load); the column still checks that the bytes are valid UTF-8 (error 1366 otherwise). Any
    other character set or a JSON column keeps ``utf8mb4``, whose conversion the server must do.
    """

    def __init__(self, conn: Any, database: str, table: str, columns: list[dict[str, Any]],
                 gate: AbstractContextManager[Any] | None = None,
                 fields: list[tuple[int, int]] | None = None) -> None:
        self.conn = conn
        self.gate = gate or nullcontext()
        self.columns = columns
        # the table's declared column types: values then go in their binary-row form (BinaryRows)
        self.fields = fields if fields is not None and encodable(columns, fields) else None
        self.types = param_types(columns, self.fields) if self.fields is not None else b""
        self.last: BinaryRows | None = None  # the last batch's encoded rows (declared types only)
        # quote_ident doubles '%' for pymysql's %-formatting, which a prepared statement never gets
        self.head = (f"INSERT INTO {table_ref(database, table)} "
                     f"({', '.join(quote_ident(c['name']) for c in columns)}) VALUES ") % ()
        self.row = "(" + ", ".join(["?"] * len(columns)) + ")"
        self.max_rows = max(1, MAX_PARAMS // max(1, len(columns)))
        if load_charset(columns) == "binary":
            run_sql(conn, "SET SESSION character_set_client = binary", ())
        packet = int(run_sql(conn, "SELECT @@max_allowed_packet", ())[0][0])
        self.max_packet = packet - 1024
        self.statements: dict[int, int] = {}

    def _statement(self, k: int) -> int:
        if k not in self.statements:
            self.statements[k] = stmt_prepare(self.conn, self.head + ", ".join([self.row] * k))[0]
        return self.statements[k]

    def insert(self, batch: Any) -> tuple[int, int, int]:
        """Insert a batch: (rows inserted, warnings, first row not sent: the batch's length if all were)."""
        if self.fields is not None:
            self.last = BinaryRows(batch, self.columns, self.fields)
            rows = ParamRows.of_values(self.last.values, self.last.nulls, self.types)
        else:
            rows = ParamRows(batch, self.columns)
        n, start = batch.num_rows, 0
        avg = max(1, rows.row_bytes(0, n) // max(1, n))
        per = max(1, min(self.max_rows, INSERT_STATEMENT_BYTES // avg))
        payloads = []
        while start < n:
            k = min(per, n - start)
            while k > 1 and rows.payload_bytes(start, k) > self.max_packet:
                k //= 2
            if rows.payload_bytes(start, k) > self.max_packet:
                break
            payloads.append(rows.payload(self._statement(k), start, k))
            start += k
        with self.gate:
            done, warnings = stmt_execute(self.conn, payloads)
        return done, warnings, start


def _insert_batch(inserter: PreparedInsert, sql: str, batch: Any, columns: list[dict[str, Any]], what: str) -> None:
    """One batch by prepared INSERTs (the rest by LOAD DATA if a row is too long for a packet); any
    warning rolls back and fails, as ``_load_batch``."""
    conn = inserter.conn
    rows, warnings, sent = inserter.insert(batch)
    if not warnings and rows == sent and sent < batch.num_rows:
        _load_batch(conn, sql, batch.slice(sent), columns, what)
        return
    if warnings or rows != batch.num_rows:
        _refuse(conn, rows, batch.num_rows, what, "inserted")


def run_load_task(spec: TaskSpec, ctx: TaskContext, settings: MySQLSettings | None = None,
                  send_gate: AbstractContextManager[Any] | None = None) -> dict[str, Any]:
    """Load one part. Checks its sha256 first and its row count and digest as it is read.

    Plain inserts stream the part's Arrow batches as ``LOAD DATA LOCAL``
    text (one statement and commit per ``LOAD_ROWS`` rows); upserts use
    multi-row ``INSERT ... ON DUPLICATE KEY UPDATE``. Once every row of the part is committed its key
    range is read back (``verify_range``) and the result says how (``range_verified``, ``range_compared``)
    and between which keys (``range_keys``). ``send_gate``: see ``PreparedInsert``
    and ``server_gate``; the key-range read-back holds it too.
    """
    if spec.get("upsert"):
        return _run_upsert_task(spec, ctx, settings)
    settings = settings or MySQLSettings.from_spec(spec)
    store = task_store(spec)
    part = spec["part"]
    columns = spec["columns"]
    sql = load_sql(spec["database"], spec["table"], columns)
    state = {"committed": 0, "hashed": 0, "sum": 0}
    hash_rows = bool(spec.get("hash_rows", True))
    pk: list[str] = list(spec.get("verify_range") or [])
    key_pos = [[c["name"] for c in columns].index(k) for k in pk]
    ends: dict[str, list[Any]] = {}
    what = f"loading part {part['key']} into {spec['database']}.{spec['table']}"
    with part_buffer(int(part["bytes"]), "backupctl-load-") as tmp:
        sha = store.download_to(spec["snapshot_prefix"] + part["key"], tmp)
        if sha != part["sha256"]:
            raise FormatError(f"part {part['key']} is corrupt: sha256 {sha} != manifest {part['sha256']}")
        kept = KeptPart(tmp, columns, f"part {part['key']}")

        def attempt() -> None:
            conn = settings.connect_load()
            inserter = None
            try:
                session_setup(conn)
                conn.autocommit(False)
                if spec.get("load_method") == "insert":
                    fields = (declared_fields(conn, read_back_sql(spec["database"], spec["table"], columns, "1 = 0"))
                              if pk else None)
                    inserter = PreparedInsert(conn, spec["database"], spec["table"], columns, send_gate, fields)
                # a part loaded whole in this attempt by binary rows keeps those (its packets are then
                # only their headers away); else its decoded batches
                whole = COMPARE_ROW_BYTES and inserter is not None and state["committed"] == 0
                kept.start(inserter.fields if whole and inserter is not None else None, bool(pk))
                tmp.seek(0)
                pos = 0
                for batch in iter_part_batches(tmp, columns, LOAD_ROWS, what=f"part {part['key']}"):
                    if ctx.stopped:
                        raise Interrupted("stopped")
                    n = batch.num_rows
                    kept.add_batch(batch)
                    if key_pos and n:
                        if pos == 0:
                            ends["first"] = [batch.column(i)[0].as_py() for i in key_pos]
                        ends["last"] = [batch.column(i)[n - 1].as_py() for i in key_pos]
                    if pos >= state["hashed"]:
                        if hash_rows:
                            state["sum"] += hash_sum(row_hashes(batch, columns))
                        state["hashed"] = pos + n
                    if pos >= state["committed"]:
                        if inserter is not None:
                            _insert_batch(inserter, sql, batch, columns, what)
                            kept.add_rows(inserter.last)
                        else:
                            _load_batch(conn, sql, batch, columns, what)
                        conn.commit()
                        state["committed"] = pos + n
                        ctx.advance(n, 0)
                    pos += n
            except pymysql.MySQLError as e:
                try:
                    conn.rollback()
                except pymysql.MySQLError:
                    pass
                t = translate(e, what)
                if isinstance(t, BackupctlError):
                    raise t from e
                raise
            finally:
                conn.close()

        store.policy.call(attempt, what)
        result = _part_result(spec, state, hash_rows)
        if pk:
            with send_gate or nullcontext():  # a read-back takes a place on the server as loads do
                how = _range_matches(spec, settings, pk, ends, kept) if ends else None
            result["range_verified"] = how is not None
            result["range_compared"] = how
            result["range_keys"] = range_params(columns, pk, ends) if ends else None
    return result


class KeptPart:
    """What a part's last load attempt kept for its key-range comparison, within ``KEEP_DECODED_BYTES``:
    the binary rows it sent (``encoded``: the byte comparison needs nothing else), or else the batches
    it decoded (``batches``). Past the bound, for rows not sent in that attempt, or for the value
    comparison after binary rows were kept (a byte mismatch: rare), the part is read again from its file."""

    def __init__(self, tmp: IO[bytes], columns: list[dict[str, Any]], what: str) -> None:
        self.tmp, self.columns, self.what = tmp, columns, what
        self.fields: list[tuple[int, int]] | None = None
        self.rows: list[BinaryRows] | None = None
        self._batches: list[Any] | None = None
        self.bytes = 0

    def start(self, fields: list[tuple[int, int]] | None, keep: bool) -> None:
        """A new attempt, keeping when ``keep``: its binary rows when it sends them encoded with
        ``fields``, else its batches."""
        self.fields = fields if keep else None
        self.rows = [] if self.fields is not None else None
        self._batches = [] if keep and self.fields is None else None
        self.bytes = 0

    def _fits(self, nbytes: int) -> bool:
        self.bytes += nbytes
        return self.bytes <= KEEP_DECODED_BYTES

    def add_batch(self, batch: Any) -> None:
        if self._batches is not None:
            if self._fits(batch.nbytes):
                self._batches.append(batch)
            else:
                self._batches = None

    def add_rows(self, rows: BinaryRows | None) -> None:
        if self.rows is not None:
            if rows is not None and self._fits(rows.nbytes):
                self.rows.append(rows)
            else:
                self.rows = None

    def encoded(self, fields: list[tuple[int, int]]) -> list[BinaryRows] | None:
        """The part's rows in binary form for these declared types, when kept."""
        return self.rows if self.rows is not None and self.fields == fields else None

    def batches(self, rows: int) -> Iterator[Any]:
        """The part's batches (``rows`` each when read again)."""
        if self._batches is not None:
            return iter(self._batches)
        self.tmp.seek(0)
        return iter_part_batches(self.tmp, self.columns, rows, what=self.what)


def _part_result(spec: TaskSpec, state: dict[str, int], hash_rows: bool) -> dict[str, Any]:
    """The task's result once every row is in: rows read (and their digest) checked against the manifest."""
    part = spec["part"]
    digest = Digest(state["sum"] % (1 << 256), state["hashed"])
    if digest.count != int(part["rows"]) or (hash_rows and digest.hexdigest() != part["digest"]):
        raise FormatError(f"part {part['key']}: read {digest.count} rows (manifest says {part['rows']}) "
                          "or its content digest differs")
    return {"task_id": spec["task_id"], "rows": digest.count, "digest": digest.hexdigest() if hash_rows else None}


def range_params(columns: list[dict[str, Any]], pk: list[str], ends: dict[str, list[Any]]) -> tuple[list[Any], list[Any]]:
    """A part's first and last key (``ends``) as SQL parameters."""
    kinds = {c["name"]: c["kind"] for c in columns}

    def params(values: list[Any]) -> list[Any]:
        return [sql_value(normalize(v, kinds[k]), kinds[k]) for k, v in zip(pk, values, strict=True)]

    return params(ends["first"]), params(ends["last"])


def _range_matches(spec: TaskSpec, settings: MySQLSettings, pk: list[str], ends: dict[str, list[Any]],
                   part: KeptPart) -> str | None:
    """How the table's rows between the part's first and last key were proven exactly the part's rows
    (``"bytes"``, ``"values"``), or None when they are not.

    The range is read back in key order and compared with the part (its sha256 already matched the
    manifest's): first the server's reply byte for byte with the row packets the part's values make
    (``_range_bytes_match``, docs/adr/0021), else value for value in Arrow (``batches_equal``). The
    part's own order is the key order the snapshot read it in. Any difference, or any other row in the
    range, returns None. ``part`` gives the part's rows as the load kept them (``KeptPart``).
    """
    columns = spec["columns"]
    where, args = key_range_where(pk, *range_params(columns, pk, ends))
    if _range_bytes_match(spec, settings, pk, where, args, part):
        return "bytes"
    with reading_back(settings, spec["database"], spec["table"], columns, where, args, order_by=pk) as table_rows:
        same = batches_equal(part.batches(FETCH_ROWS), table_rows)
    return "values" if same else None


def _range_bytes_match(spec: TaskSpec, settings: MySQLSettings, pk: list[str], where: str, args: list[Any],
                       part: KeptPart) -> bool:
    """Whether the server's reply to the range's prepared SELECT is, byte for byte, the binary row
    packets of the part (``formats.mysql_rows``) and ends there. False for any difference, error or
    declared column type not encoded: the caller then compares values. The packets are the binary rows
    the load sent when it kept them for these declared types, else built from the part's batches."""
    columns = spec["columns"]
    if not COMPARE_ROW_BYTES:
        return False
    sql = read_back_sql(spec["database"], spec["table"], columns, where, pk)
    try:
        conn = settings.connect()
    except BackupctlError:
        return False
    rows = RawRows(conn)
    try:
        fields = rows.query(sql, args)
        if not encodable(columns, fields):
            return False
        seq = rows.execute()
        encoded = part.encoded(fields)
        for chunk in (encoded if encoded is not None else part.batches(LOAD_ROWS)):
            packets = (chunk.packets(seq) if isinstance(chunk, BinaryRows)
                       else row_packets(chunk, columns, fields, seq))
            if packets is None or not rows.matches(packets[0]):
                return False
            seq = packets[1]
        return rows.ends(seq)
    except (pymysql.MySQLError, OSError):
        return False
    finally:
        rows.close()


def _load_batch(conn: Any, sql: str, batch: Any, columns: list[dict[str, Any]], what: str) -> None:
    """One LOAD DATA of a batch; any warning (LOCAL turns errors into warnings) rolls back and fails."""
    rows, warnings = load_data(conn, sql, load_csv(batch, columns))
    if warnings or rows != batch.num_rows:
        _refuse(conn, rows, batch.num_rows, what, "loaded")


def _refuse(conn: Any, rows: int, expected: int, what: str, verb: str) -> NoReturn:
    """A batch the server took with warnings or short: its first warnings, rolled back, one error (a
    duplicate key is a Conflict: LOAD DATA LOCAL reports it as a warning)."""
    shown = run_sql(conn, "SHOW WARNINGS LIMIT 3", ())
    conn.rollback()
    if any(int(w[1]) == ER_DUP_ENTRY for w in shown):
        raise Conflict(f"{what}: " + "; ".join(str(w[2]) for w in shown))
    detail = "; ".join(f"{w[1]}: {w[2]}" for w in shown) or f"{rows} of {expected} rows {verb}"
    raise value_refused(what, detail)


def _run_upsert_task(spec: TaskSpec, ctx: TaskContext, settings: MySQLSettings | None = None) -> dict[str, Any]:
    """Upsert one part: multi-row ``INSERT ... ON DUPLICATE KEY UPDATE``, resumed from the last commit."""
    settings = settings or MySQLSettings.from_spec(spec)
    store = task_store(spec)
    part = spec["part"]
    columns = spec["columns"]
    kinds = [c["kind"] for c in columns]
    sql = insert_sql(spec["database"], spec["table"], columns, True)
    state = {"committed": 0, "hashed": 0, "sum": 0}
    hash_rows = bool(spec.get("hash_rows", True))
    what = f"loading part {part['key']} into {spec['database']}.{spec['table']}"

    with part_buffer(int(part["bytes"]), "backupctl-load-") as tmp:
        sha = store.download_to(spec["snapshot_prefix"] + part["key"], tmp)
        if sha != part["sha256"]:
            raise FormatError(f"part {part['key']} is corrupt: sha256 {sha} != manifest {part['sha256']}")

        def attempt() -> None:
            conn = settings.connect()
            try:
                session_setup(conn)
                packet = int(run_sql(conn, "SELECT @@max_allowed_packet", ())[0][0])
                conn.autocommit(False)
                cur = conn.cursor()
                cur.max_stmt_length = max(64 << 10, min(MAX_STATEMENT_BYTES, packet - (64 << 10)))
                tmp.seek(0)
                pos = 0
                for batch in iter_part_batches(tmp, columns, INSERT_ROWS, what=f"part {part['key']}"):
                    if ctx.stopped:
                        raise Interrupted("stopped")
                    n = batch.num_rows
                    if pos >= state["hashed"]:
                        if hash_rows:
                            state["sum"] += hash_sum(row_hashes(batch, columns))
                        state["hashed"] = pos + n
                    if pos >= state["committed"]:
                        cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
                        cur.executemany(sql, [[sql_value(normalize(v, k), k) for v, k in zip(vals, kinds, strict=True)]
                                              for vals in zip(*cols, strict=True)])
                        ctx.advance(n, 0)
                        if pos + n - state["committed"] >= COMMIT_ROWS:
                            conn.commit()
                            state["committed"] = pos + n
                    pos += n
                conn.commit()
                state["committed"] = pos
            except pymysql.MySQLError as e:
                try:
                    conn.rollback()
                except pymysql.MySQLError:
                    pass
                t = translate(e, what)
                if isinstance(t, BackupctlError):
                    raise t from e
                raise
            finally:
                conn.close()

        store.policy.call(attempt, what)
    return _part_result(spec, state, hash_rows)


# -- tombstones ------------------------------------------------------------------------

DELETE_KEYS = 500  # keys per DELETE statement


def delete_sql(database: str, table: str, pk: list[str], n: int) -> str:
    """``DELETE ... WHERE (a = %s AND b = %s) OR ...`` for ``n`` keys (an index lookup each)."""
    one = "(" + " AND ".join(f"{quote_ident(k)} = %s" for k in pk) + ")"
    return f"DELETE FROM {table_ref(database, table)} WHERE " + " OR ".join([one] * n)


def plan_delete(*, aws: dict[str, Any], settings: MySQLSettings, tombstone_parts: list[dict[str, Any]],
                repo: dict[str, Any], snapshot_prefix: str, database: str, table: str,
                key_columns: list[dict[str, Any]], policy: RetryPolicy | None = None) -> list[TaskSpec]:
    """One task per tombstone part. Specs hold no password."""
    return [
        {
            "kind": "mysql.delete",
            "task_id": f"delete-{i:05d}",
            "part": part,
            "repo": repo,
            "aws": aws,
            "mysql": settings.to_dict(),
            "snapshot_prefix": snapshot_prefix,
            "database": database,
            "table": table,
            "columns": key_columns,
            "retry": (policy or policy_from_env()).to_dict(),
        }
        for i, part in enumerate(tombstone_parts)
    ]


def run_delete_task(spec: TaskSpec, ctx: TaskContext, settings: MySQLSettings | None = None) -> dict[str, Any]:
    """Delete the keys of one tombstone part. Checks its sha256, count and digest; idempotent (retried whole)."""
    settings = settings or MySQLSettings.from_spec(spec)
    store = task_store(spec)
    part = spec["part"]
    columns = spec["columns"]
    names = [c["name"] for c in columns]
    kinds = [c["kind"] for c in columns]
    what = f"applying tombstones {part['key']} to {spec['database']}.{spec['table']}"

    with part_buffer(int(part["bytes"]), "backupctl-tomb-") as tmp:
        sha = store.download_to(spec["snapshot_prefix"] + part["key"], tmp)
        if sha != part["sha256"]:
            raise FormatError(f"part {part['key']} is corrupt: sha256 {sha} != manifest {part['sha256']}")

        def attempt() -> tuple[Digest, int]:
            digest, deleted = Digest(), 0
            conn = settings.connect()
            try:
                session_setup(conn)
                conn.autocommit(False)
                cur = conn.cursor()
                tmp.seek(0)
                for rows in iter_part_rows(tmp, columns, what=f"part {part['key']}"):
                    if ctx.stopped:
                        raise Interrupted("stopped")
                    for i in range(0, len(rows), DELETE_KEYS):
                        batch = rows[i:i + DELETE_KEYS]
                        params = [sql_value(v, k) for row in batch for v, k in zip(row, kinds, strict=True)]
                        deleted += cur.execute(delete_sql(spec["database"], spec["table"], names, len(batch)), params)
                        for row in batch:
                            digest.add_hash(row_hash(names, kinds, row))
                    conn.commit()
                    ctx.advance(len(rows), 0)
                return digest, deleted
            except pymysql.MySQLError as e:
                try:
                    conn.rollback()
                except pymysql.MySQLError:
                    pass
                t = translate(e, what)
                if isinstance(t, BackupctlError):
                    raise t from e
                raise
            finally:
                conn.close()

        digest, deleted = store.policy.call(attempt, what)
    if digest.count != int(part["rows"]) or digest.hexdigest() != part["digest"]:
        raise FormatError(f"part {part['key']}: read {digest.count} keys (manifest says {part['rows']}) "
                          "or its content digest differs")
    return {"task_id": spec["task_id"], "rows": digest.count, "digest": digest.hexdigest(), "deleted": deleted}
