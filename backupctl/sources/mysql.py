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
import hashlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pymysql
import pymysql.cursors

from backupctl.aws import AwsContext
from backupctl.engines.local import TaskContext
from backupctl.errors import BackupctlError, DataPathError, Interrupted, InvalidInput, NotFound
from backupctl.formats.dynamodb_json import DIGEST_ALGORITHM, Digest
from backupctl.formats.parquet import (
    CHUNKABLE_KINDS,
    ROW_ENCODING,
    ROW_GROUP_ROWS,
    ParquetPartWriter,
    arrow_type,
    column_kind,
    normalize_row,
    row_hash,
    select_expr,
    time_literal,
)
from backupctl.model import PartResult, TaskSpec, part_key
from backupctl.mysql_conn import MySQLSettings, quote_ident, run_sql, translate
from backupctl.repository import RepoURI
from backupctl.retry import RetryPolicy, is_retryable, policy_from_env
from backupctl.sources.dynamodb import task_store

CHUNK_ROWS = 100_000
PART_MAX_BYTES = 256 << 20
FETCH_ROWS = 2_000
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


def _after(pk: list[str], values: list[Any], inclusive: bool = False) -> tuple[str, list[Any]]:
    """SQL for ``(pk) > (values)`` (or ``<=`` its negation with ``inclusive``), index-friendly OR form."""
    terms, params = [], []
    for i, col in enumerate(pk):
        eqs = [f"{quote_ident(c)} = %s" for c in pk[:i]]
        last = i == len(pk) - 1
        op = (("<=" if last else "<") if inclusive else ">")
        terms.append("(" + " AND ".join([*eqs, f"{quote_ident(col)} {op} %s"]) + ")")
        params.extend(values[: i + 1])
    return "(" + " OR ".join(terms) + ")", params


def chunkable(info: TableInfo) -> bool:
    kinds = {c["name"]: c["kind"] for c in info.columns}
    return bool(info.primary_key) and all(kinds.get(k) in CHUNKABLE_KINDS for k in info.primary_key)


def chunk_bounds(conn: pymysql.connections.Connection, info: TableInfo, chunk_rows: int,
                 ctx_stop: Callable[[], bool] | None = None) -> list[list[list[str]]]:
    """Inclusive upper bounds of every chunk but the last (which is open-ended).

    One index walk of ``chunk_rows`` keys per boundary; a table without a
    usable primary key is a single chunk.
    """
    if not chunkable(info):
        return []
    pk = info.primary_key
    cols = ", ".join(quote_ident(c) for c in pk)
    bounds: list[list[list[str]]] = []
    last: list[Any] | None = None
    while True:
        if ctx_stop is not None and ctx_stop():
            raise Interrupted("stopped")
        where, params = ("", []) if last is None else _after(pk, last)
        sql = (f"SELECT {cols} FROM {table_ref(info.database, info.table)}"
               + (f" WHERE {where}" if where else "")
               + f" ORDER BY {cols} LIMIT 1 OFFSET {int(chunk_rows) - 1}")
        rows = run_sql(conn, sql, params, f"planning chunks of {info.database}.{info.table}")
        if not rows:
            return bounds
        enc = encode_key(tuple(rows[0]))
        bounds.append(enc)
        last = decode_key(enc)


def chunk_select(database: str, table: str, columns: list[dict[str, Any]], pk: list[str],
                 lo: list[list[str]] | None, hi: list[list[str]] | None) -> tuple[str, list[Any]]:
    """The SELECT of one chunk: ``lo < pk <= hi``, in key order."""
    exprs = ", ".join(select_expr(c, quote_ident(c["name"])) for c in columns)
    where, params = [], []
    if lo is not None:
        w, p = _after(pk, decode_key(lo))
        where.append(w)
        params.extend(p)
    if hi is not None:
        w, p = _after(pk, decode_key(hi), inclusive=True)
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

    def open(self) -> None:
        if not self.consistent:
            return
        locker = self.settings.connect()
        try:
            run_sql(locker, f"LOCK TABLES {table_ref(self.database, self.table)} READ", (),
                    f"locking {self.database}.{self.table} to start consistent reads "
                    "(needs the LOCK TABLES privilege; or use --consistency none)")
            try:
                for _ in range(self.size):
                    conn = self.settings.connect()
                    self._all.append(conn)
                    run_sql(conn, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", ())
                    run_sql(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", (),
                            "starting a consistent snapshot")
                    self._pool.put(conn)
            finally:
                run_sql(locker, "UNLOCK TABLES", ())
        except BaseException:
            self.close()
            raise
        finally:
            locker.close()

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


def _export_chunk(spec: TaskSpec, ctx: TaskContext, conn: pymysql.connections.Connection) -> list[PartResult]:
    store = task_store(spec)
    prefix, index = spec["snapshot_prefix"], int(spec["index"])
    columns = spec["columns"]
    kinds = [c["kind"] for c in columns]
    sql, params = chunk_select(spec["database"], spec["table"], columns, spec["primary_key"], spec["lo"], spec["hi"])
    parts: list[PartResult] = []
    writer: ParquetPartWriter | None = None
    chunk = 0
    cur = conn.cursor(pymysql.cursors.SSCursor)
    try:
        cur.execute(sql, tuple(params))
        while True:
            if ctx.stopped:
                raise Interrupted("stopped")
            rows = cur.fetchmany(FETCH_ROWS)
            if not rows:
                break
            nbytes = 0
            for row in rows:
                if writer is None:
                    writer = ParquetPartWriter(store, prefix + part_key(index, chunk, "parquet"), columns,
                                               int(spec.get("row_group_rows") or ROW_GROUP_ROWS))
                nbytes += writer.add(normalize_row(row, kinds))
                if writer.raw_bytes >= int(spec["part_max_bytes"]):
                    parts.append(_relative(writer.finish(), prefix))
                    writer = None
                    chunk += 1
            ctx.advance(len(rows), nbytes)
        if writer is not None:
            parts.append(_relative(writer.finish(), prefix))
            writer = None
    except pymysql.MySQLError as e:
        t = translate(e, f"reading {spec['database']}.{spec['table']} chunk {index}")
        if t is not e:
            raise t from e
        raise
    finally:
        if writer is not None:
            writer.abort()
        cur.close()
    return parts


def run_export_task(spec: TaskSpec, ctx: TaskContext, sessions: ReadSessions | None = None) -> dict[str, Any]:
    """Export one primary-key range into Parquet parts. Idempotent: same spec, same part keys.

    ``sessions`` comes from the driver (the local engine); without it the task
    connects with the settings in its spec (password re-read from its source).
    """
    if sessions is None:
        sessions = ReadSessions(MySQLSettings.from_dict(spec["mysql"]), spec["database"], spec["table"], "none", 1)
    store = task_store(spec)
    index = int(spec["index"])

    def attempt() -> list[PartResult]:
        assert sessions is not None
        conn = sessions.acquire(ctx)
        broken = True
        try:
            parts = _export_chunk(spec, ctx, conn)
            broken = False
            return parts
        finally:
            sessions.release(conn, broken)

    if sessions.consistent:
        try:
            parts = attempt()
        except BaseException as e:
            if is_retryable(e):
                raise DataPathError(
                    f"lost the connection holding the consistent snapshot while reading chunk {index} ({e}); "
                    "run the command again (finished chunks are kept) or use --consistency none"
                ) from e
            raise
    else:
        parts = store.policy.call(attempt, f"reading chunk {index} of {spec['database']}.{spec['table']}")
    prefix = spec["snapshot_prefix"]
    written = {prefix + p.key for p in parts}
    stale = [k for k in store.list_keys(prefix + f"data/part-{index:05d}-") if k not in written]
    if stale:
        store.delete(stale)
    total = Digest()
    for p in parts:
        total.merge(Digest.from_hex(p.digest, p.rows))
    return {
        "task_id": spec["task_id"],
        "parts": [p.to_dict() for p in parts],
        "rows": total.count,
        "bytes": sum(p.bytes for p in parts),
        "digest": total.hexdigest(),
        "digest_algorithm": DIGEST_ALGORITHM,
    }


def table_digest(settings: MySQLSettings, database: str, table: str, columns: list[dict[str, Any]],
                 progress: Any = None) -> Digest:
    """The content digest of a live table: one streaming SELECT of the stored columns."""
    names = [c["name"] for c in columns]
    kinds = [c["kind"] for c in columns]
    sql, params = chunk_select(database, table, columns, [], None, None)
    d = Digest()
    conn = settings.connect()
    try:
        cur = conn.cursor(pymysql.cursors.SSCursor)
        try:
            cur.execute(sql, tuple(params))
            while rows := cur.fetchmany(FETCH_ROWS):
                for row in rows:
                    d.add_hash(row_hash(names, kinds, normalize_row(row, kinds)))
                if progress is not None:
                    progress.advance(len(rows), 0)
        finally:
            cur.close()
    except pymysql.MySQLError as e:
        t = translate(e, f"reading back {database}.{table}")
        if isinstance(t, BackupctlError):
            raise t from e
        raise
    finally:
        conn.close()
    return d
