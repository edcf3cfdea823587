"""MySQL as a source: describe a table, split it by primary key, export one chunk to Parquet.

Planning walks the primary-key index once on the driver
(``SELECT pk ... WHERE pk > last ORDER BY pk LIMIT 1 OFFSET chunk_rows-1``) to
find chunk boundaries, so chunks hold ``chunk_rows`` rows each whatever the key
distribution. Each chunk is one task (task index = chunk number, so part keys
are deterministic) that streams its key range through an unbuffered cursor
(``SSCursor``) into Parquet row groups of bounded size: memory per worker is
one fetch batch plus one row group, independent of the table size.

Consistency (docs/adr/0004-mysql-full-snapshots.md):

* ``snapshot`` (default): ``ReadSessions`` opens one connection per worker,
  each in ``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY``, all
  started while a separate connection briefly holds ``LOCK TABLES t READ``.
  No write to the table can commit in between, so every read view sees the
  same state of the table. Tasks borrow these connections. A lost connection
  loses its read view: the task fails (rerun resumes finished chunks).
* ``none``: every task opens its own connection and reads the latest
  committed data; lost connections are retried by restarting the chunk.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import pickle
import queue
import re
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pymysql
import pymysql.cursors

from backupctl.aws import AwsContext
from backupctl.engines.local import TaskContext
from backupctl.errors import BackupctlError, DataPathError, FormatError, Interrupted, InvalidInput, NotFound
from backupctl.formats.dynamodb_json import DIGEST_ALGORITHM, Digest
from backupctl.formats.mysql_text import BINARY_SPLIT, binary_batch, binary_codes, text_columns
from backupctl.formats.parquet import (
    CHUNKABLE_KINDS,
    KEY_HASH_COLUMN,
    ROW_ENCODING,
    ROW_GROUP_ROWS,
    ParquetPartWriter,
    arrow_schema,
    arrow_type,
    canonical,
    column_kind,
    hash_sum,
    hashes_array,
    iter_part_rows,
    joined_hashes,
    normalize_row,
    raw_batch,
    row_hashes,
    select_expr,
    time_literal,
    value_sizes,
)
from backupctl.model import PartResult, TaskSpec, check_count
from backupctl.mysql_conn import (
    MySQLSettings,
    PreparedRows,
    TextRows,
    quote_ident,
    run_sql,
    translate,
)
from backupctl.repository import RepoURI, S3Store, task_store
from backupctl.retry import RetryPolicy, is_retryable, policy_from_env

CHUNK_ROWS = 100_000
PART_MAX_BYTES = 256 << 20
FETCH_ROWS = 5_000
BINARY_READS = BINARY_SPLIT  # bulk reads as a prepared SELECT's binary rows where the C splitter is built
CONSISTENCY = ("snapshot", "none")


@dataclass
class TableInfo:
    database: str
    table: str
    columns: list[dict[str, Any]]  # every column, in ordinal order
    primary_key: list[str]
    create_table: str
    rows_estimate: int
    server_version: str

    @property
    def stored(self) -> list[dict[str, Any]]:
        """The columns a part holds: every non-generated column."""
        return [c for c in self.columns if not c["generated"]]




def table_ref(database: str, table: str) -> str:
    return f"{quote_ident(database)}.{quote_ident(table)}"


def read_columns(conn: pymysql.connections.Connection, database: str, table: str) -> list[dict[str, Any]]:
    """Column descriptions from information_schema (empty when the table does not exist)."""
    rows = run_sql(
        conn,
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY, EXTRA, NUMERIC_PRECISION, "
        "NUMERIC_SCALE, DATETIME_PRECISION, CHARACTER_SET_NAME, COLLATION_NAME, ORDINAL_POSITION "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (database, table),
        f"describing {database}.{table}",
    )
    cols = []
    for name, dt, ct, nullable, key, extra, prec, scale, dtp, cs, coll, pos in rows:
        extra = (extra or "").upper()
        generated = "GENERATED" in extra and "DEFAULT_GENERATED" not in extra
        col = {
            "name": name,
            "data_type": str(dt).lower(),
            "column_type": str(ct),
            "nullable": nullable == "YES",
            "generated": generated,
            "key": key or "",
            "precision": int(prec) if prec is not None else None,
            "scale": int(scale) if scale is not None else None,
            "datetime_precision": int(dtp) if dtp is not None else None,
            "charset": cs,
            "collation": coll,
            "ordinal": int(pos),
        }
        col["kind"] = column_kind(col["data_type"], col["column_type"]) if not generated else _kind_or_none(col)
        if col["kind"] is not None and not generated:
            col["arrow_type"] = str(arrow_type(col))
        cols.append(col)
    return cols


def _kind_or_none(col: dict[str, Any]) -> str | None:
    try:
        return column_kind(col["data_type"], col["column_type"])
    except InvalidInput:
        return None  # a generated column of an unsupported type is not stored anyway


def describe_table(conn: pymysql.connections.Connection, database: str, table: str) -> TableInfo:
    """Everything a snapshot needs to know about ``database.table``; NotFound if absent."""
    kinds = run_sql(
        conn,
        "SELECT TABLE_TYPE, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
        (database, table),
        f"describing {database}.{table}",
    )
    if not kinds:
        raise NotFound(f"MySQL table '{table}' not found in database '{database}'")
    if kinds[0][0] != "BASE TABLE":
        raise InvalidInput(f"'{database}.{table}' is a {kinds[0][0]}, not a table")
    columns = read_columns(conn, database, table)
    pk_rows = run_sql(
        conn,
        "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
        "AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
        (database, table),
        f"describing {database}.{table}",
    )
    ddl = run_sql(conn, f"SHOW CREATE TABLE {table_ref(database, table)}", (), f"describing {database}.{table}")
    version = run_sql(conn, "SELECT VERSION()", ())
    return TableInfo(
        database=database,
        table=table,
        columns=columns,
        primary_key=[r[0] for r in pk_rows],
        create_table=str(ddl[0][1]),
        rows_estimate=int(kinds[0][1] or 0),
        server_version=str(version[0][0]),
    )


def table_schema(info: TableInfo) -> dict[str, Any]:
    """schema.json of a MySQL snapshot."""
    return {
        "kind": "mysql",
        "database": info.database,
        "table_name": info.table,
        "create_table": info.create_table,
        "columns": [
            {k: c.get(k) for k in ("name", "data_type", "column_type", "nullable", "generated", "key", "precision",
                                   "scale", "datetime_precision", "charset", "collation", "kind", "arrow_type")}
            for c in info.columns
        ],
        "stored_columns": [c["name"] for c in info.stored],
        "primary_key": info.primary_key,
        "row_encoding": ROW_ENCODING,
        "part_format": "parquet",
        "row_count_estimate": info.rows_estimate,
        "server_version": info.server_version,
    }


# -- primary-key ranges -----------------------------------------------------------


def encode_key(values: tuple[Any, ...]) -> list[list[str]]:
    """A primary-key tuple as JSON (task specs are JSON-serialisable)."""
    out: list[list[str]] = []
    for v in values:
        if isinstance(v, bool) or v is None:
            raise InvalidInput(f"cannot use primary-key value {v!r} as a chunk boundary")
        if isinstance(v, int):
            out.append(["i", str(v)])
        elif isinstance(v, Decimal):
            out.append(["d", str(v)])
        elif isinstance(v, str):
            out.append(["s", v])
        elif isinstance(v, (bytes, bytearray)):
            out.append(["b", base64.b64encode(bytes(v)).decode()])
        elif isinstance(v, datetime):
            out.append(["dt", v.isoformat(sep=" ", timespec="microseconds")])
        elif isinstance(v, date):
            out.append(["da", v.isoformat()])
        elif isinstance(v, timedelta):
            out.append(["t", time_literal(v)])
        else:
            raise InvalidInput(f"cannot use primary-key value of type {type(v).__name__} as a chunk boundary")
    return out


def decode_key(values: list[list[str]]) -> list[Any]:
    """SQL parameters of an encoded key (temporal values as MySQL literals)."""
    out: list[Any] = []
    for tag, text in values:
        if tag == "i":
            out.append(int(text))
        elif tag == "d":
            out.append(Decimal(text))
        elif tag == "b":
            out.append(base64.b64decode(text))
        else:
            out.append(text)
    return out


def _key_compare(pk: list[str], values: list[Any], strict: str, last_op: str) -> tuple[str, list[Any]]:
    """SQL comparing the tuple ``(pk)`` with ``values`` in key order, index-friendly OR form: equal on
    a prefix, then ``strict`` on the next column, or ``last_op`` on the last one."""
    terms, params = [], []
    for i, col in enumerate(pk):
        eqs = [f"{quote_ident(c)} = %s" for c in pk[:i]]
        op = last_op if i == len(pk) - 1 else strict
        terms.append("(" + " AND ".join([*eqs, f"{quote_ident(col)} {op} %s"]) + ")")
        params.extend(values[: i + 1])
    return "(" + " OR ".join(terms) + ")", params


def key_after(pk: list[str], values: list[Any], inclusive: bool = False) -> tuple[str, list[Any]]:
    """SQL for ``(pk) > (values)`` (or ``<=`` its negation with ``inclusive``)."""
    return _key_compare(pk, values, "<", "<=") if inclusive else _key_compare(pk, values, ">", ">")


def key_before(pk: list[str], values: list[Any]) -> tuple[str, list[Any]]:
    """SQL for ``(pk) < (values)``."""
    return _key_compare(pk, values, "<", "<")


def key_range_where(pk: list[str], first: list[Any], last: list[Any]) -> tuple[str, list[Any]]:
    """SQL for ``first <= (pk) <= last`` in key order (index-friendly OR forms)."""
    below, p_below = key_after(pk, first)  # (pk) > first
    eq = "(" + " AND ".join(f"{quote_ident(c)} = %s" for c in pk) + ")"
    upto, p_upto = key_after(pk, last, inclusive=True)  # (pk) <= last
    return f"(({below} OR {eq}) AND {upto})", [*p_below, *first, *p_upto]


# Key kinds whose values, as read from a part, go back to the server as parameters comparing exactly
RANGE_KEY_KINDS = {"int", "uint", "decimal", "date", "datetime", "string", "binary"}


def chunkable(info: TableInfo) -> bool:
    kinds = {c["name"]: c["kind"] for c in info.columns}
    return bool(info.primary_key) and all(kinds.get(k) in CHUNKABLE_KINDS for k in info.primary_key)


def chunk_bounds(conn: pymysql.connections.Connection, info: TableInfo, chunk_rows: int,
                 ctx_stop: Callable[[], bool] | None = None) -> list[list[list[str]]]:
    """Inclusive upper bounds of every chunk but the last (which is open-ended).

    A dense single-column integer key is cut arithmetically (``dense_int_bounds``); any other key gets
    one index walk of ``chunk_rows`` keys per boundary; a table without a usable primary key is a
    single chunk. Either way every chunk holds at most ``chunk_rows`` rows at planning time.
    """
    if not chunkable(info):
        return []
    pk = info.primary_key
    dense = dense_int_bounds(conn, info, chunk_rows)
    if dense is not None:
        return dense
    cols = ", ".join(quote_ident(c) for c in pk)
    bounds: list[list[list[str]]] = []
    last: list[Any] | None = None
    while True:
        if ctx_stop is not None and ctx_stop():
            raise Interrupted("stopped")
        where, params = ("", []) if last is None else key_after(pk, last)
        sql = (f"SELECT {cols} FROM {table_ref(info.database, info.table)}"
               + (f" WHERE {where}" if where else "")
               + f" ORDER BY {cols} LIMIT 1 OFFSET {int(chunk_rows) - 1}")
        rows = run_sql(conn, sql, params, f"planning chunks of {info.database}.{info.table}")
        if not rows:
            return bounds
        enc = encode_key(tuple(rows[0]))
        bounds.append(enc)
        last = decode_key(enc)


# An integer key is cut arithmetically when MIN..MAX spans at most this many times the rows the server
# estimates (the estimate can be off by ~2x either way; beyond it the table is sparse and is walked).
DENSE_KEY_SPAN = 2.0


def dense_int_bounds(conn: pymysql.connections.Connection, info: TableInfo,
                     chunk_rows: int) -> list[list[list[str]]] | None:
    """Bounds every ``chunk_rows`` key values from MIN(key) for a dense single-column integer key, or None.

    Two index dives instead of a walk of the whole clustered index (0.7 s of server time for 1M rows,
    before the first chunk could start). Keys are unique integers, so a chunk of ``chunk_rows``
    consecutive values holds at most ``chunk_rows`` rows; on a dense key it holds about that many.
    The bounds depend only on MIN, MAX and ``chunk_rows`` (a resumed run on an unchanged table plans
    the same chunks).
    """
    pk = info.primary_key
    kinds = {c["name"]: c["kind"] for c in info.columns}
    if len(pk) != 1 or kinds.get(pk[0]) not in ("int", "uint") or not info.rows_estimate:
        return None
    ident = quote_ident(pk[0])
    lo, hi = run_sql(conn, f"SELECT MIN({ident}), MAX({ident}) FROM {table_ref(info.database, info.table)}", (),
                     f"planning chunks of {info.database}.{info.table}")[0]
    if lo is None:
        return []
    lo, hi = int(lo), int(hi)
    if hi - lo + 1 > DENSE_KEY_SPAN * max(info.rows_estimate, chunk_rows):
        return None
    return [encode_key((b,)) for b in range(lo + chunk_rows - 1, hi, chunk_rows)]


def chunk_select(database: str, table: str, columns: list[dict[str, Any]], pk: list[str],
                 lo: list[list[str]] | None, hi: list[list[str]] | None) -> tuple[str, list[Any]]:
    """The SELECT of one chunk: ``lo < pk <= hi``, in key order."""
    exprs = ", ".join(select_expr(c, quote_ident(c["name"])) for c in columns)
    where, params = [], []
    if lo is not None:
        w, p = key_after(pk, decode_key(lo))
        where.append(w)
        params.extend(p)
    if hi is not None:
        w, p = key_after(pk, decode_key(hi), inclusive=True)
        where.append(w)
        params.extend(p)
    sql = f"SELECT {exprs} FROM {table_ref(database, table)}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if pk:
        sql += " ORDER BY " + ", ".join(quote_ident(c) for c in pk)
    return sql, params


def bounds_fingerprint(bounds: list[list[list[str]]]) -> str:
    return hashlib.sha256(orjson.dumps(bounds)).hexdigest()


# -- sessions -------------------------------------------------------------------


class ReadSessions:
    """Where export tasks get their connections (see the module docstring)."""

    def __init__(self, settings: MySQLSettings, database: str, table: str, consistency: str, size: int) -> None:
        self.settings = settings
        self.database = database
        self.table = table
        self.consistency = consistency
        self.size = max(1, size)
        self._pool: queue.Queue[pymysql.connections.Connection] = queue.Queue()
        self._all: list[pymysql.connections.Connection] = []
        self._lock = threading.Lock()

    @property
    def consistent(self) -> bool:
        return self.consistency == "snapshot"

    def open(self, lock: bool = True) -> None:
        """Open ``size`` consistent-snapshot sessions; under a table lock taken here unless ``lock`` is False
        (a worker process whose driver holds the lock: ``lock_table``)."""
        if not self.consistent:
            return
        locker = lock_table(self.settings, self.database, self.table) if lock else None
        try:
            try:
                for _ in range(self.size):
                    conn = self.settings.connect()
                    self._all.append(conn)
                    run_sql(conn, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", ())
                    run_sql(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", (),
                            "starting a consistent snapshot")
                    self._pool.put(conn)
            finally:
                unlock_table(locker)
        except BaseException:
            self.close()
            raise

    def acquire(self, ctx: TaskContext) -> pymysql.connections.Connection:
        if not self.consistent:
            return self.settings.connect()
        while True:
            if ctx.stopped:
                raise Interrupted("stopped")
            try:
                return self._pool.get(timeout=0.5)
            except queue.Empty:
                continue

    def release(self, conn: pymysql.connections.Connection, broken: bool) -> None:
        if self.consistent and not broken:
            self._pool.put(conn)
            return
        try:
            conn.close()
        except pymysql.MySQLError:
            pass

    def close(self) -> None:
        for conn in self._all:
            try:
                conn.close()
            except pymysql.MySQLError:
                pass
        self._all = []


def lock_table(settings: MySQLSettings, database: str, table: str) -> Any:
    """A session holding ``LOCK TABLES t READ``: writers wait while readers start their snapshots."""
    locker = settings.connect()
    try:
        run_sql(locker, f"LOCK TABLES {table_ref(database, table)} READ", (),
                f"locking {database}.{table} to start consistent reads "
                "(needs the LOCK TABLES privilege; or use --consistency none)")
    except BaseException:
        locker.close()
        raise
    return locker


def unlock_table(locker: Any) -> None:
    if locker is None:
        return
    try:
        run_sql(locker, "UNLOCK TABLES", ())
    finally:
        locker.close()


# A worker process's own session (engines/processes.py): opened once by ``open_worker_session``
# while the driver holds the table lock, then used by every chunk the worker reads.
_worker_sessions: ReadSessions | None = None


def open_worker_session(settings: dict[str, Any], database: str, table: str, consistency: str,
                        aws: dict[str, Any] | None = None) -> None:
    """Worker-process init: one consistent-snapshot session (the driver holds ``lock_table``).

    ``aws`` (the driver's ``AwsContext.to_dict()``: endpoint, profile) reaches a --secret-id's secret.
    """
    global _worker_sessions
    sessions = ReadSessions(MySQLSettings.from_dict(settings, AwsContext.from_dict(aws)), database, table,
                            consistency, 1)
    sessions.open(lock=False)
    _worker_sessions = sessions


# -- tasks ----------------------------------------------------------------------


def plan_export(
    *,
    aws: AwsContext,
    settings: MySQLSettings,
    info: TableInfo,
    bounds: list[list[list[str]]],
    repo: RepoURI,
    repo_region: str,
    snapshot_prefix: str,
    part_max_bytes: int = PART_MAX_BYTES,
    row_group_rows: int = ROW_GROUP_ROWS,
    policy: RetryPolicy | None = None,
) -> list[TaskSpec]:
    """One task per primary-key range; task index = chunk number. Specs hold no password."""
    policy = policy or policy_from_env()
    edges: list[list[list[str]] | None] = [None, *bounds, None]
    return [
        {
            "kind": "mysql.export",
            "task_id": f"chunk-{i:05d}",
            "index": i,
            "mysql": settings.to_dict(),
            "database": info.database,
            "table": info.table,
            "columns": info.stored,
            "primary_key": info.primary_key,
            "lo": edges[i],
            "hi": edges[i + 1],
            "aws": aws.to_dict(),
            "repo": {"bucket": repo.bucket, "prefix": repo.prefix, "region": repo_region},
            "snapshot_prefix": snapshot_prefix,
            "part_max_bytes": part_max_bytes,
            "row_group_rows": row_group_rows,
            "retry": policy.to_dict(),
        }
        for i in range(len(bounds) + 1)
    ]


def _relative(p: PartResult, prefix: str) -> PartResult:
    return PartResult(key=p.key[len(prefix):], rows=p.rows, bytes=p.bytes, sha256=p.sha256, digest=p.digest)


class RollingPartWriter:
    """Parts ``<folder>/part-IIIII-CCCC.parquet`` of one task, a new one every ``max_bytes`` raw bytes."""

    def __init__(self, store: S3Store, prefix: str, folder: str, index: int, columns: list[dict[str, Any]],
                 max_bytes: int, row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self.store, self.prefix, self.folder, self.index = store, prefix, folder, index
        self.columns, self.max_bytes, self.row_group_rows = columns, max_bytes, row_group_rows
        self.writer: ParquetPartWriter | None = None
        self.chunk = 0
        self.parts: list[PartResult] = []
        self.last_hash = 0
        self.raw_bytes_total = 0

    def add(self, row: tuple[Any, ...], digest_hash: int | None = None) -> int:
        if self.writer is None:
            key = self.prefix + f"{self.folder}/part-{self.index:05d}-{self.chunk:04d}.parquet"
            self.writer = ParquetPartWriter(self.store, key, self.columns, self.row_group_rows)
        n = self.writer.add(row, digest_hash)
        self.last_hash = self.writer.last_hash
        if self.writer.raw_bytes >= self.max_bytes:
            self._cut()
        return n

    def add_batch(self, batch: pa.RecordBatch, hashes: Sequence[bytes] | None = None) -> Sequence[bytes]:
        """Add a record batch; parts are cut at the same rows as ``add`` would cut them. Returns the row hashes."""
        runs: list[Sequence[bytes]] = []
        done = 0
        while batch.num_rows:
            if self.writer is None:
                key = self.prefix + f"{self.folder}/part-{self.index:05d}-{self.chunk:04d}.parquet"
                self.writer = ParquetPartWriter(self.store, key, self.columns, self.row_group_rows)
            room = self.max_bytes - self.writer.raw_bytes
            sizes = value_sizes(batch)
            total = pc.sum(sizes).as_py()
            if total < room:
                take, nbytes = batch.num_rows, total
            else:  # the row whose running size reaches the room closes the part (as ``add`` would)
                cum = pc.cumulative_sum(sizes)
                take = max(1, min(batch.num_rows, pc.sum(pc.less(cum, room)).as_py() + 1))
                nbytes = cum[take - 1].as_py()
            part = batch.slice(0, take)
            before = self.writer.raw_bytes
            hs = self.writer.add_batch(part, None if hashes is None else hashes[done:done + take], nbytes)
            self.raw_bytes_total += self.writer.raw_bytes - before
            runs.append(hs)
            done += take
            self.last_hash = self.writer.last_hash
            if self.writer.raw_bytes >= self.max_bytes:
                self._cut()
            batch = batch.slice(take)
        return joined_hashes(runs) if runs else []

    def _cut(self) -> None:
        assert self.writer is not None
        self.parts.append(_relative(self.writer.finish(), self.prefix))
        self.writer = None
        self.chunk += 1

    def finish(self) -> list[PartResult]:
        if self.writer is not None:
            self._cut()
        return self.parts

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def key_positions(columns: list[dict[str, Any]], pk: list[str]) -> list[int] | None:
    """Where the primary-key columns sit among the stored columns (None: no usable key set)."""
    names = [c["name"] for c in columns]
    if not pk or any(k not in names for k in pk):
        return None
    return [names.index(k) for k in pk]


def _open_rows(conn: Any, sql: str, params: list[Any], columns: list[dict[str, Any]]) -> tuple[TextRows, bytes | None]:
    """The running SELECT's raw rows and, for binary rows, ``split_binary``'s codes (None: text rows)."""
    if BINARY_READS:
        prepared = PreparedRows(conn)
        codes = binary_codes(columns, prepared.prepare(sql, params))
        if codes is not None:
            prepared.execute()
            return prepared, codes
        prepared.close_statement()  # a column of a type split_binary does not take: text rows
    rows = TextRows(conn)
    if rows.query(sql, params) != len(columns):
        raise FormatError(f"the SELECT returned another number of columns than the {len(columns)} expected")
    return rows, None


def fetch_batches(conn: Any, sql: str, params: list[Any], columns: list[dict[str, Any]],
                  ctx: TaskContext | None = None) -> Generator[tuple[pa.RecordBatch, int], None, None]:
    """(record batch of normal values, rows) of a streaming SELECT of ``columns``.

    The rows are read raw off the socket, no Python object per value: where the C splitter is built,
    a prepared SELECT's binary rows (``mysql_conn.PreparedRows``, docs/adr/0025) cut into typed column
    buffers (``formats.mysql_text.binary_batch``); else, or when a result column's declared type is not
    one it takes, the text protocol's rows (``mysql_conn.TextRows``) split into one binary array per
    column and typed one Arrow column at a time (``raw_column``, docs/adr/0022). Both give the same
    arrays. A batch holds the rows of what arrived (up to ~1 MiB), at most ``FETCH_ROWS``.
    """
    schema = arrow_schema(columns)
    rows, codes = _open_rows(conn, sql, params, columns)
    done = False
    try:
        for data, starts in rows.chunks():
            if ctx is not None and ctx.stopped:
                raise Interrupted("stopped")
            for lo in range(0, len(starts), FETCH_ROWS):
                part = starts[lo:lo + FETCH_ROWS]
                if codes is not None:
                    yield binary_batch(data, part, codes, columns, schema), len(part)
                else:
                    yield raw_batch(text_columns(data, part, len(columns)), columns, schema), len(part)
        done = True
    finally:
        if not done:
            rows.abandon()


def _export_chunk(spec: TaskSpec, ctx: TaskContext, conn: Any) -> tuple[list[PartResult], list[PartResult]]:
    store = task_store(spec)
    prefix, index = spec["snapshot_prefix"], int(spec["index"])
    columns = spec["columns"]
    sql, params = chunk_select(spec["database"], spec["table"], columns, spec["primary_key"], spec["lo"], spec["hi"])
    max_bytes, rg = int(spec["part_max_bytes"]), int(spec.get("row_group_rows") or ROW_GROUP_ROWS)
    data = RollingPartWriter(store, prefix, "data", index, columns, max_bytes, rg)
    pos = key_positions(columns, spec["primary_key"]) if spec.get("key_set", True) else None
    kcols = [columns[i] for i in pos] if pos is not None else []
    keys = (RollingPartWriter(store, prefix, "keys", index, key_part_columns(kcols), max_bytes, rg)
            if pos is not None else None)
    kschema = arrow_schema(key_part_columns(kcols)) if pos is not None else None
    try:
        for batch, n in fetch_batches(conn, sql, params, columns, ctx):
            before = data.raw_bytes_total
            hs = data.add_batch(batch)
            if keys is not None and pos is not None and kschema is not None:
                kb = pa.RecordBatch.from_arrays([*(batch.column(i) for i in pos), hashes_array(hs)],
                                                schema=kschema)
                keys.add_batch(kb, hashes=hs)
            ctx.advance(n, data.raw_bytes_total - before)
        parts = data.finish()
        key_parts = keys.finish() if keys is not None else []
    except pymysql.MySQLError as e:
        t = translate(e, f"reading {spec['database']}.{spec['table']} chunk {index}")
        if t is not e:
            raise t from e
        raise
    finally:
        data.abort()
        if keys is not None:
            keys.abort()
    return parts, key_parts


def sweep_stale(store: S3Store, prefix: str, index: int, written: list[PartResult],
                folders: tuple[str, ...] = ("data", "keys", "tombstones")) -> None:
    """Delete parts of task ``index`` an earlier attempt left behind (more chunks than this one)."""
    keep = {prefix + p.key for p in written}
    stale = [k for f in folders for k in store.list_keys(prefix + f"{f}/part-{index:05d}-") if k not in keep]
    if stale:
        store.delete(stale)


def run_export_task(spec: TaskSpec, ctx: TaskContext, sessions: ReadSessions | None = None) -> dict[str, Any]:
    """Export one primary-key range into Parquet parts. Idempotent: same spec, same part keys.

    ``sessions`` comes from the driver (the local engine); without it the task
    connects with the settings in its spec (password re-read from its source).
    """
    if sessions is None:
        sessions = _worker_sessions or ReadSessions(MySQLSettings.from_spec(spec), spec["database"], spec["table"],
                                                    "none", 1)
    store = task_store(spec)
    index = int(spec["index"])

    def attempt() -> tuple[list[PartResult], list[PartResult]]:
        assert sessions is not None
        conn = sessions.acquire(ctx)
        broken = True
        try:
            out = _export_chunk(spec, ctx, conn)
            broken = False
            return out
        finally:
            sessions.release(conn, broken)

    if sessions.consistent:
        try:
            parts, key_parts = attempt()
        except BaseException as e:
            if is_retryable(e):
                raise DataPathError(
                    f"lost the connection holding the consistent snapshot while reading chunk {index} ({e}); "
                    "run the command again (finished chunks are kept) or use --consistency none"
                ) from e
            raise
    else:
        parts, key_parts = store.policy.call(attempt, f"reading chunk {index} of {spec['database']}.{spec['table']}")
    sweep_stale(store, spec["snapshot_prefix"], index, parts + key_parts, ("data", "keys"))
    total = Digest()
    for p in parts:
        total.merge(Digest.from_hex(p.digest, p.rows))
    return {
        "task_id": spec["task_id"],
        "parts": [p.to_dict() for p in parts],
        "keys": [p.to_dict() for p in key_parts],
        "rows": total.count,
        "bytes": sum(p.bytes for p in parts),
        "digest": total.hexdigest(),
        "digest_algorithm": DIGEST_ALGORITHM,
    }


READ_BACK_STREAMS = 2  # connections reading a table back for its digest (integer primary keys)
READ_BACK_SPLIT_ROWS = 200_000  # below this many rows one stream
# From this many rows a read-back runs in worker processes (one per stream), not threads: it is
# CPU-bound Python (driver rows -> Arrow -> row hashes) and threads share one GIL.
READ_BACK_PROCESS_MIN_ROWS = 300_000


def _digest_ranges(conn: Any, database: str, table: str, columns: list[dict[str, Any]], streams: int,
                   min_split_rows: int = READ_BACK_SPLIT_ROWS) -> tuple[list[tuple[str, list[Any]]], int]:
    """WHERE clauses splitting a table by the leading column of its primary key, when an integer, into
    ``streams`` value ranges, and its rows (-1 when not counted)."""
    pk = [r[0] for r in run_sql(
        conn, "SELECT COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
        "AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX", (database, table))]
    kinds = {c["name"]: c["kind"] for c in columns}
    # ranges of the leading key column split any key that starts with an integer (disjoint, and together all rows)
    if not pk or kinds.get(_text(pk[0])) not in ("int", "uint") or streams < 2:
        return [("", [])], -1
    ident = quote_ident(_text(pk[0]))
    lo, hi, n = run_sql(conn, f"SELECT MIN({ident}), MAX({ident}), COUNT(*) FROM {table_ref(database, table)}", ())[0]
    if lo is None or int(n) < min_split_rows:
        return [("", [])], int(n)
    lo, hi = int(lo), int(hi)
    cuts = [lo + (hi - lo) * i // streams for i in range(1, streams)]
    out = [(f"{ident} < %s", [cuts[0]])]
    out += [(f"{ident} >= %s AND {ident} < %s", [a, b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    out.append((f"{ident} >= %s", [cuts[-1]]))
    return out, int(n)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)


def run_digest_task(spec: TaskSpec, ctx: TaskContext, settings: MySQLSettings | None = None) -> dict[str, Any]:
    """Read one key range of a table back (a streaming SELECT of the stored columns) and sum its row hashes."""
    settings = settings or MySQLSettings.from_spec(spec)
    columns = spec["columns"]
    total, count = 0, 0
    with reading_back(settings, spec["database"], spec["table"], columns, spec["where"], list(spec["params"]),
                      ctx=ctx) as batches:
        for batch in batches:
            total += hash_sum(row_hashes(batch, columns))
            count += batch.num_rows
            ctx.advance(batch.num_rows, 0)
    return {"task_id": spec["task_id"], "sum": format(total % (1 << 256), "064x"), "rows": count}


def read_back_sql(database: str, table: str, columns: list[dict[str, Any]], where: str,
                  order_by: list[str] | None = None) -> str:
    """``SELECT columns FROM table [WHERE where] [ORDER BY order_by]``, each column read exactly (``select_expr``)."""
    exprs = ", ".join(select_expr(c, quote_ident(c["name"])) for c in columns)
    return (f"SELECT {exprs} FROM {table_ref(database, table)}" + (f" WHERE {where}" if where else "")
            + (f" ORDER BY {', '.join(quote_ident(k) for k in order_by)}" if order_by else ""))


@contextlib.contextmanager
def reading_back(settings: MySQLSettings, database: str, table: str, columns: list[dict[str, Any]], where: str,
                 params: list[Any], order_by: list[str] | None = None,
                 ctx: TaskContext | None = None) -> Iterator[Iterator[pa.RecordBatch]]:
    """The record batches of ``SELECT columns FROM table [WHERE where] [ORDER BY order_by]`` on a connection
    of its own, streamed (``fetch_batches``); driver errors as one line. A reader may stop early: the
    connection, mid-result, is closed."""
    sql = read_back_sql(database, table, columns, where, order_by)
    conn = settings.connect()
    fetched = fetch_batches(conn, sql, params, columns, ctx)
    try:
        yield (batch for batch, _n in fetched)
    except pymysql.MySQLError as e:
        t = translate(e, f"reading back {database}.{table}")
        if isinstance(t, BackupctlError):
            raise t from e
        raise
    finally:
        try:
            fetched.close()
        finally:
            conn.close()


def read_back_processes(rows: int, processes: int | None) -> int:
    """How many worker processes ``table_digest`` uses for a table of about ``rows`` rows (1: threads)."""
    if processes is not None:
        return max(1, processes)
    return READ_BACK_STREAMS if rows >= READ_BACK_PROCESS_MIN_ROWS else 1


def table_digest(settings: MySQLSettings, database: str, table: str, columns: list[dict[str, Any]],
                 progress: Any = None, aws: AwsContext | None = None, processes: int | None = None,
                 warm: Any = None) -> Digest:
    """The content digest of a live table: streaming SELECTs of the stored columns, hashed column-wise.

    A table with an integer primary key is read as ``READ_BACK_STREAMS``
    key ranges on as many connections at once; the digest is a sum, so the
    parts add up whatever the split. From ``READ_BACK_PROCESS_MIN_ROWS`` rows
    (or when ``processes`` > 1 asks) the ranges run in worker processes
    (``warm``: ``engines.processes.WarmWorkers`` started earlier, if any).
    """
    streams = max(READ_BACK_STREAMS, processes or 0)
    conn = settings.connect()
    try:
        # --processes N (N > 1) asks for N streams whatever the size; otherwise small tables are one stream
        ranges, rows = _digest_ranges(conn, database, table, columns, streams,
                                      0 if (processes or 0) > 1 else READ_BACK_SPLIT_ROWS)
    finally:
        conn.close()
    specs: list[TaskSpec] = [
        {"kind": "mysql.digest", "task_id": f"digest-{i:03d}", "mysql": settings.to_dict(),
         "aws": aws.to_dict() if aws is not None else None, "database": database, "table": table,
         "columns": columns, "where": where, "params": params}
        for i, (where, params) in enumerate(ranges)
    ]
    ctx = TaskContext(progress=progress)
    if len(specs) > 1 and read_back_processes(rows, processes) > 1:
        from backupctl.engines.processes import ProcessEngine, WorkerSetup

        setup = WorkerSetup(init=None, warm=warm) if warm is not None else None
        results = ProcessEngine(len(specs), len(specs), setup).run(specs, run_digest_task, ctx)
    elif len(specs) == 1:
        results = [run_digest_task(specs[0], ctx, settings)]
    else:
        with ThreadPoolExecutor(max_workers=len(specs), thread_name_prefix="backupctl-readback") as pool:
            results = list(pool.map(lambda sp: run_digest_task(sp, ctx, settings), specs))
    return Digest(sum(int(r["sum"], 16) for r in results) % (1 << 256), sum(int(r["rows"]) for r in results))


# -- key sets, watermarks and increments (docs/adr/0005-mysql-incrementals.md) ----------

DEFAULT_SAFETY_LAG_S = 5.0
# Watermark kinds: a date-time, or a number holding Unix epoch seconds.
WATERMARK_KINDS = ("datetime", "timestamp", "int", "uint", "decimal", "float64")
TEMPORAL_WATERMARKS = ("datetime", "timestamp")
# Key kinds whose Python order (of the normal values) is the server's ORDER BY order:
# key streams of these are merged directly; other keys (text with a collation,
# floats) are first sorted on disk by their canonical bytes.
ORDERED_KEY_KINDS = {"int", "uint", "decimal", "date", "datetime", "timestamp", "time", "year", "bit", "binary"}
FUTURE_SLACK_S = 86_400
_EPOCH = datetime(1970, 1, 1)


_MYSQL_PART_RE = re.compile(r"^(keys|tombstones)/part-\d{5}-\d{4}\.parquet$")


def check_mysql_part_key(part: Any) -> dict[str, Any]:
    """A key-set or tombstone part entry of a manifest, whose key cannot point outside its folder."""
    key = part.get("key") if isinstance(part, dict) else None
    if not isinstance(key, str) or not _MYSQL_PART_RE.match(key):
        raise FormatError(f"manifest names an invalid part key {key!r}")
    check_count(part.get("rows"), f"part {key} rows")
    check_count(part.get("bytes"), f"part {key} bytes")
    return part


def key_part_columns(pk_columns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Columns of a key-set part: the primary-key columns, then the row's SHA-256 (mysql-row-v1)."""
    return [*pk_columns, {"name": KEY_HASH_COLUMN, "data_type": "binary", "column_type": "binary(32)",
                          "nullable": False, "kind": "binary"}]


def pk_columns(columns: list[dict[str, Any]], pk: list[str]) -> list[dict[str, Any]]:
    by_name = {c["name"]: c for c in columns}
    return [by_name[k] for k in pk]


def check_watermark(info: TableInfo, column: str) -> dict[str, Any]:
    """The watermark column's description; InvalidInput (exit 2) when it cannot be one."""
    col = next((c for c in info.columns if c["name"] == column), None)
    if col is None:
        raise InvalidInput(f"--watermark-column '{column}' is not a column of {info.database}.{info.table}")
    if col["kind"] not in WATERMARK_KINDS:
        raise InvalidInput(
            f"--watermark-column '{column}' is {col['column_type']}: it must be DATETIME or TIMESTAMP "
            "(or a number of Unix epoch seconds: an integer, DECIMAL or DOUBLE)"
        )
    return col


def server_now(conn: pymysql.connections.Connection) -> datetime:
    """The server clock (UTC: every session runs with time_zone '+00:00'), to the microsecond."""
    value = run_sql(conn, "SELECT NOW(6)", ())[0][0]
    if not isinstance(value, datetime):  # pragma: no cover - NOW(6) is always a DATETIME
        raise DataPathError(f"the server returned {value!r} for NOW(6)")
    return value


def datetime_text(dt: datetime) -> str:
    return dt.isoformat(sep=" ", timespec="microseconds")


def watermark_value(dt: datetime, kind: str) -> str:
    """A point in time as a window bound of a watermark of ``kind`` (text, as in the manifest)."""
    if kind in TEMPORAL_WATERMARKS:
        return datetime_text(dt)
    us = (dt - _EPOCH) // timedelta(microseconds=1)
    return str(Decimal(us).scaleb(-6))


def watermark_param(text: str, kind: str) -> Any:
    """A manifest window bound as a SQL parameter."""
    return text if kind in TEMPORAL_WATERMARKS else Decimal(text)


def window_predicate(column: str, kind: str, lo: str, hi: str) -> tuple[str, list[Any]]:
    """SQL for the half-open window ``lo <= column < hi``: a row on a boundary belongs to exactly one window."""
    ident = quote_ident(column)
    return f"({ident} >= %s AND {ident} < %s)", [watermark_param(lo, kind), watermark_param(hi, kind)]


def window_select(database: str, table: str, columns: list[dict[str, Any]], pk: list[str], column: str,
                  kind: str, lo: str, hi: str) -> tuple[str, list[Any]]:
    """The SELECT of an increment: the rows stamped in ``[lo, hi)``, in primary-key order."""
    exprs = ", ".join(select_expr(c, quote_ident(c["name"])) for c in columns)
    where, params = window_predicate(column, kind, lo, hi)
    order = ", ".join(quote_ident(c) for c in pk)
    return f"SELECT {exprs} FROM {table_ref(database, table)} WHERE {where} ORDER BY {order}", params


def key_scan_select(database: str, table: str, pk_cols: list[dict[str, Any]]) -> str:
    """An index-only walk of the primary key, in key order."""
    cols = ", ".join(select_expr(c, quote_ident(c["name"])) for c in pk_cols)
    order = ", ".join(quote_ident(c["name"]) for c in pk_cols)
    return f"SELECT {cols} FROM {table_ref(database, table)} FORCE INDEX (PRIMARY) ORDER BY {order}"


def check_future_stamps(conn: pymysql.connections.Connection, info: TableInfo, column: str, kind: str,
                        now: datetime) -> None:
    """Refuse a numeric watermark that is not epoch seconds (milliseconds look a million years ahead)."""
    if kind in TEMPORAL_WATERMARKS:
        return
    limit = watermark_param(watermark_value(now + timedelta(seconds=FUTURE_SLACK_S), kind), kind)
    rows = run_sql(conn, f"SELECT 1 FROM {table_ref(info.database, info.table)} WHERE {quote_ident(column)} > %s "
                   "LIMIT 1", (limit,), f"checking {info.database}.{info.table}.{column}")
    if rows:
        raise InvalidInput(
            f"--watermark-column '{column}' holds values more than a day ahead of the server clock as Unix "
            "epoch seconds (milliseconds?): a numeric watermark must be epoch seconds"
        )


class Spool:
    """An append-only sequence of picklable items on a temporary file (bounded memory)."""

    def __init__(self) -> None:
        self.f = tempfile.TemporaryFile(prefix="backupctl-spool-")
        self.n = 0

    def add(self, item: Any) -> None:
        pickle.dump(item, self.f, protocol=pickle.HIGHEST_PROTOCOL)
        self.n += 1

    def __iter__(self) -> Iterator[Any]:
        self.f.seek(0)
        for _ in range(self.n):
            yield pickle.load(self.f)

    def close(self) -> None:
        self.f.close()


KeyEntry = tuple[Any, tuple[Any, ...], Any]  # (sort key, key values, payload)


def key_bytes(key: tuple[Any, ...], kinds: list[str]) -> bytes:
    """A key's canonical bytes: equal exactly when the values are equal."""
    return orjson.dumps([canonical(v, k) for v, k in zip(key, kinds, strict=True)])


def ordered_stream(pairs: Iterator[tuple[tuple[Any, ...], Any]], kinds: list[str]) -> Iterator[KeyEntry]:
    """(sort key, key, payload) in one total order shared by every stream of these key kinds.

    Streams of ``ORDERED_KEY_KINDS`` keys arrive in server ORDER BY order, which
    is Python's order of the values: they pass through. Others are sorted by
    their canonical bytes in a temporary SQLite file (disk, not memory).
    """
    if all(k in ORDERED_KEY_KINDS for k in kinds):
        for key, payload in pairs:
            yield key, key, payload
        return
    with tempfile.TemporaryDirectory(prefix="backupctl-keys-") as d:
        db = sqlite3.connect(os.path.join(d, "keys.db"))
        try:
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.execute("CREATE TABLE k (b BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")
            batch: list[tuple[bytes, bytes]] = []
            for key, payload in pairs:
                batch.append((key_bytes(key, kinds), pickle.dumps((key, payload))))
                if len(batch) >= 10_000:
                    db.executemany("INSERT OR REPLACE INTO k VALUES (?, ?)", batch)
                    batch = []
            db.executemany("INSERT OR REPLACE INTO k VALUES (?, ?)", batch)
            for b, v in db.execute("SELECT b, v FROM k ORDER BY b"):
                key, payload = pickle.loads(v)
                yield b, key, payload
        finally:
            db.close()


def merge_key_sets(parent: Iterator[KeyEntry], changed: Iterator[KeyEntry], current: Iterator[KeyEntry] | None,
                   ) -> Iterator[tuple[str, tuple[Any, ...], int | None]]:
    """Walk three sorted streams once: ("keep", key, hash) for the new key set, ("delete", key, None) for tombstones.

    ``parent``: the parent's key set (key, row hash); ``changed``: the rows of
    the window (key, new row hash); ``current``: the table's keys now, or None
    when deletes are not detected. A changed row replaces its parent entry; a
    parent key absent from ``current`` is a tombstone; a key only in
    ``current`` (stamped after the window) is neither.
    """
    p, c = next(parent, None), next(changed, None)
    k = next(current, None) if current is not None else None
    while p is not None or c is not None:
        m = min(x[0] for x in (p, c) if x is not None)
        while current is not None and k is not None and k[0] < m:
            k = next(current, None)
        present = current is None or (k is not None and k[0] == m)
        if c is not None and c[0] == m:
            yield "keep", c[1], c[2]
            c = next(changed, None)
            if p is not None and p[0] == m:
                p = next(parent, None)
        else:
            assert p is not None
            if present:
                yield "keep", p[1], p[2]
            else:
                yield "delete", p[1], None
            p = next(parent, None)


def iter_key_parts(store: S3Store, prefix: str, parts: list[dict[str, Any]], columns: list[dict[str, Any]],
                   ) -> Iterator[tuple[tuple[Any, ...], int]]:
    """(key, row hash) of a stored key set, part by part, each checked against its sha256 and count."""
    for part in parts:
        with tempfile.TemporaryFile(prefix="backupctl-keys-") as tmp:
            sha = store.download_to(prefix + part["key"], tmp)
            if sha != part["sha256"]:
                raise FormatError(f"key-set part {prefix}{part['key']} is corrupt: sha256 differs from its manifest")
            n = 0
            for rows in iter_part_rows(tmp, columns, what=f"key-set part {part['key']}"):
                for row in rows:
                    n += 1
                    yield tuple(row[:-1]), int.from_bytes(row[-1], "big")
            if n != int(part["rows"]):
                raise FormatError(f"key-set part {prefix}{part['key']} holds {n} keys, its manifest says {part['rows']}")


def _stream_select(conn: pymysql.connections.Connection, sql: str, params: list[Any], kinds: list[str],
                   ctx: TaskContext) -> Iterator[tuple[Any, ...]]:
    cur = conn.cursor(pymysql.cursors.SSCursor)
    try:
        cur.execute(sql, tuple(params))
        while rows := cur.fetchmany(FETCH_ROWS):
            if ctx.stopped:
                raise Interrupted("stopped")
            for row in rows:
                yield normalize_row(row, kinds)
    finally:
        cur.close()


def plan_increment(*, aws: AwsContext, settings: MySQLSettings, info: TableInfo, repo: RepoURI, repo_region: str,
                   snapshot_prefix: str, window: dict[str, Any], watermark_kind: str, detect_deletes: bool,
                   parent_prefix: str, parent_keys: list[dict[str, Any]],
                   part_max_bytes: int = PART_MAX_BYTES, row_group_rows: int = ROW_GROUP_ROWS,
                   policy: RetryPolicy | None = None) -> list[TaskSpec]:
    """One task: the window's rows, the new key set, the tombstones - all from one read view."""
    return [{
        "kind": "mysql.increment",
        "task_id": "increment",
        "index": 0,
        "mysql": settings.to_dict(),
        "database": info.database,
        "table": info.table,
        "columns": info.stored,
        "primary_key": info.primary_key,
        "window": window,
        "watermark_kind": watermark_kind,
        "detect_deletes": detect_deletes,
        "parent_prefix": parent_prefix,
        "parent_keys": parent_keys,
        "aws": aws.to_dict(),
        "repo": {"bucket": repo.bucket, "prefix": repo.prefix, "region": repo_region},
        "snapshot_prefix": snapshot_prefix,
        "part_max_bytes": part_max_bytes,
        "row_group_rows": row_group_rows,
        "retry": (policy or policy_from_env()).to_dict(),
    }]


def _increment(spec: TaskSpec, ctx: TaskContext, settings: MySQLSettings) -> dict[str, Any]:
    store = task_store(spec)
    prefix = spec["snapshot_prefix"]
    columns, pk = spec["columns"], spec["primary_key"]
    kinds = [c["kind"] for c in columns]
    pos = key_positions(columns, pk)
    assert pos is not None
    kcols = pk_columns(columns, pk)
    kkinds = [c["kind"] for c in kcols]
    max_bytes, rg = int(spec["part_max_bytes"]), int(spec.get("row_group_rows") or ROW_GROUP_ROWS)
    w = spec["window"]
    data = RollingPartWriter(store, prefix, "data", 0, columns, max_bytes, rg)
    keys = RollingPartWriter(store, prefix, "keys", 0, key_part_columns(kcols), max_bytes, rg)
    tombs = RollingPartWriter(store, prefix, "tombstones", 0, kcols, max_bytes, rg)
    changed = Spool()
    conn = settings.connect()
    try:
        run_sql(conn, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", ())
        run_sql(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", (), "starting a consistent snapshot")
        sql, params = window_select(spec["database"], spec["table"], columns, pk, w["column"], spec["watermark_kind"],
                                    w["from"], w["to"])
        rows, nbytes = 0, 0
        for row in _stream_select(conn, sql, params, kinds, ctx):
            nbytes += data.add(row)
            changed.add((tuple(row[i] for i in pos), data.last_hash))
            rows += 1
            if rows % FETCH_ROWS == 0:
                ctx.advance(FETCH_ROWS, nbytes)
                nbytes = 0
        ctx.advance(rows % FETCH_ROWS, nbytes)
        parts = data.finish()
        parent = ordered_stream(iter_key_parts(store, spec["parent_prefix"], spec["parent_keys"],
                                               key_part_columns(kcols)), kkinds)
        current = (ordered_stream(((k, None) for k in _stream_select(
            conn, key_scan_select(spec["database"], spec["table"], kcols), [], kkinds, ctx)), kkinds)
            if spec["detect_deletes"] else None)
        table = Digest()
        for action, key, h in merge_key_sets(parent, ordered_stream(iter(changed), kkinds), current):
            if action == "keep":
                assert h is not None
                keys.add((*key, h.to_bytes(32, "big")), digest_hash=h)
                table.add_hash(h)
            else:
                tombs.add(key)
        key_parts, tomb_parts = keys.finish(), tombs.finish()
        run_sql(conn, "COMMIT", ())
    except pymysql.MySQLError as e:
        t = translate(e, f"reading the increment of {spec['database']}.{spec['table']}")
        if t is not e:
            raise t from e
        raise
    finally:
        for wr in (data, keys, tombs):
            wr.abort()
        changed.close()
        conn.close()
    total = Digest()
    for p in parts:
        total.merge(Digest.from_hex(p.digest, p.rows))
    return {
        "task_id": spec["task_id"],
        "parts": [p.to_dict() for p in parts],
        "keys": [p.to_dict() for p in key_parts],
        "tombstones": [p.to_dict() for p in tomb_parts],
        "rows": total.count,
        "bytes": sum(p.bytes for p in parts),
        "digest": total.hexdigest(),
        "digest_algorithm": DIGEST_ALGORITHM,
        "deleted": sum(p.rows for p in tomb_parts),
        "table_rows": table.count,
        "table_digest": table.hexdigest(),
    }


def run_increment_task(spec: TaskSpec, ctx: TaskContext, settings: MySQLSettings | None = None) -> dict[str, Any]:
    """Read one increment. Idempotent (same part keys); a dropped connection restarts it in a new read view."""
    settings = settings or MySQLSettings.from_spec(spec)
    store = task_store(spec)
    result = store.policy.call(lambda: _increment(spec, ctx, settings),
                               f"reading the increment of {spec['database']}.{spec['table']}")
    written = [PartResult(**p) for p in result["parts"] + result["keys"] + result["tombstones"]]
    sweep_stale(store, spec["snapshot_prefix"], 0, written)
    return result
