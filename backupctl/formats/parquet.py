"""MySQL rows <-> Parquet parts, exact types, and the canonical row encoding of the digest.

Every MySQL column gets a *kind* from its declared type (information_schema,
never the driver's guess) and a fixed Arrow type::

    tinyint..bigint          int8/16/32/32/64  (unsigned: uint8/16/32/32/64)
    decimal(p,s)             decimal256(p, s)  (declared precision and scale)
    float / double           float32 / float64
    date                     date32
    datetime(n)              timestamp[us]
    timestamp(n)             timestamp[us, tz=UTC] (read and written in session time zone +00:00)
    time(n)                  duration[us]      (negative and > 24 h kept)
    year                     int16
    bit(n)                   uint64
    char/varchar/text/enum/set/uuid/inet  string (utf8)
    json (MySQL)             string
    binary/varbinary/blob    binary

A value moves through three forms: the *driver* value pymysql returns, the
*normal* value (what ``pyarrow`` holds and ``to_pylist`` gives back; see
``normalize``), and the *canonical* string the digest hashes (``canonical``).
The normal form is the one both sides of every comparison are brought to, so
a snapshot's digest (computed from the source rows), a part's digest
(recomputed from Parquet on restore) and a restored table's digest (read back
with the same SELECT) are comparable.

Row encoding ``mysql-row-v1`` (docs/REPOSITORY_FORMAT.md, "MySQL parts"): a
JSON object ``{column name: canonical value or null}`` of the non-generated
columns, keys sorted, no whitespace; its SHA-256 is summed modulo 2^256 like
DynamoDB items (``formats.dynamodb_json.Digest``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import tempfile
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import IO, Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from backupctl.errors import FormatError, InvalidInput
from backupctl.formats.dynamodb_json import Digest, canonical_number
from backupctl.model import PartResult
from backupctl.repository import S3Store

ROW_ENCODING = "mysql-row-v1"
COMPRESSION = "zstd"
ROW_GROUP_ROWS = 50_000
ROW_GROUP_BYTES = 64 << 20
SCHEMA_META_KEY = b"backupctl.mysql.columns"
ENCODING_META_KEY = b"backupctl.row_encoding"

_INTS = {"tinyint": 8, "smallint": 16, "mediumint": 32, "int": 32, "integer": 32, "bigint": 64}
_STRINGS = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set", "uuid", "inet4", "inet6"}
_BINARIES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}

# Kinds whose values compare in SQL exactly as they round-trip through the
# driver, so primary-key ranges can be split on them.
CHUNKABLE_KINDS = {"int", "uint", "decimal", "date", "datetime", "timestamp", "time", "year", "string", "binary"}


def column_kind(data_type: str, column_type: str) -> str:
    """The kind of a column from information_schema DATA_TYPE / COLUMN_TYPE."""
    dt = data_type.lower()
    if dt in _INTS:
        return "uint" if "unsigned" in column_type.lower() else "int"
    if dt in ("decimal", "numeric"):
        return "decimal"
    if dt == "float":
        return "float32"
    if dt in ("double", "real", "double precision"):
        return "float64"
    if dt in ("date", "datetime", "timestamp", "time", "year", "bit", "json"):
        return dt
    if dt in _STRINGS:
        return "string"
    if dt in _BINARIES:
        return "binary"
    raise InvalidInput(f"MySQL column type '{column_type}' is not supported yet")


def arrow_type(col: dict[str, Any]) -> pa.DataType:
    kind = col["kind"]
    if kind in ("int", "uint"):
        bits = _INTS[col["data_type"].lower()]
        return getattr(pa, f"{kind}{bits}")()  # type: ignore[no-any-return]
    if kind == "decimal":
        return pa.decimal256(int(col["precision"]), int(col["scale"] or 0))
    simple: dict[str, pa.DataType] = {
        "float32": pa.float32(),
        "float64": pa.float64(),
        "date": pa.date32(),
        "datetime": pa.timestamp("us"),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "time": pa.duration("us"),
        "year": pa.int16(),
        "bit": pa.uint64(),
        "json": pa.string(),
        "string": pa.string(),
        "binary": pa.binary(),
    }
    return simple[kind]


def arrow_schema(columns: Sequence[dict[str, Any]]) -> pa.Schema:
    """The Arrow schema of a part: one field per stored column, MySQL type info in metadata."""
    fields = [
        pa.field(
            c["name"], arrow_type(c), nullable=True,
            metadata={b"mysql.column_type": c["column_type"].encode(), b"mysql.data_type": c["data_type"].encode(),
                      b"mysql.nullable": b"true" if c["nullable"] else b"false"},
        )
        for c in columns
    ]
    meta = {
        SCHEMA_META_KEY: json.dumps([{k: c[k] for k in ("name", "data_type", "column_type", "nullable", "kind")}
                                     for c in columns]).encode(),
        ENCODING_META_KEY: ROW_ENCODING.encode(),
    }
    return pa.schema(fields, metadata=meta)


# -- driver value -> normal value ---------------------------------------------------


def select_expr(col: dict[str, Any], ident: str) -> str:
    """The SELECT expression that reads a column exactly.

    FLOAT travels as text with 6 significant digits (lossy); ``+ 0e0`` makes the
    server send the exact float32 value as a double instead.
    """
    return f"({ident} + 0e0)" if col["kind"] == "float32" else ident


def normalize(value: Any, kind: str) -> Any:
    """A driver value in its normal form (what Arrow stores for the kind)."""
    if value is None:
        return None
    if kind == "bit":
        return int.from_bytes(value, "big") if isinstance(value, (bytes, bytearray)) else int(value)
    if kind == "float32":
        return struct.unpack("<f", struct.pack("<f", float(value)))[0]
    if kind in ("date", "datetime", "timestamp"):
        if isinstance(value, str):
            raise FormatError(f"zero or invalid date value {value!r} cannot be backed up")
        if isinstance(value, datetime) and value.tzinfo is not None:
            return value.astimezone(UTC).replace(tzinfo=None)
        return value
    if kind == "binary":
        return bytes(value)
    if kind in ("string", "json") and isinstance(value, (set, frozenset)):
        return ",".join(sorted(value))
    return value


def normalize_row(row: Sequence[Any], kinds: Sequence[str]) -> tuple[Any, ...]:
    return tuple(normalize(v, k) for v, k in zip(row, kinds, strict=True))


# -- canonical encoding and digest ------------------------------------------------


def _canon_json(v: Any) -> Any:
    if isinstance(v, dict):
        return ["o", [[k, _canon_json(x)] for k, x in sorted(v.items())]]
    if isinstance(v, list):
        return ["a", [_canon_json(x) for x in v]]
    if isinstance(v, bool):
        return ["b", v]
    if isinstance(v, (int, float, Decimal)):
        return ["n", canonical_number(str(v))]
    if v is None:
        return ["z"]
    return ["s", v]


def canonical(value: Any, kind: str) -> str | None:
    """The canonical string of a normal value (``mysql-row-v1``)."""
    if value is None:
        return None
    if kind in ("int", "uint", "year", "bit"):
        return str(int(value))
    if kind == "decimal":
        return canonical_number(str(value))
    if kind in ("float32", "float64"):
        return repr(float(value))
    if kind == "date":
        return str(value.isoformat())
    if kind in ("datetime", "timestamp"):
        return str(value.isoformat(sep=" ", timespec="microseconds"))
    if kind == "time":
        return str(time_micros(value))
    if kind == "binary":
        return base64.b64encode(value).decode("ascii")
    if kind == "json":
        try:
            doc = json.loads(value, parse_float=Decimal)
        except ValueError:
            return str(value)
        return orjson.dumps(_canon_json(doc)).decode()
    return str(value)


def row_hash(names: Sequence[str], kinds: Sequence[str], row: Sequence[Any]) -> int:
    doc = {n: canonical(v, k) for n, k, v in zip(names, kinds, row, strict=True)}
    return int.from_bytes(hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).digest(), "big")


def time_micros(td: timedelta) -> int:
    return (td.days * 86_400 + td.seconds) * 1_000_000 + td.microseconds


def time_literal(td: timedelta) -> str:
    """A TIME value as MySQL text, e.g. ``-838:59:59.000000`` (pymysql's escape mangles negatives)."""
    us = time_micros(td)
    sign = "-" if us < 0 else ""
    us = abs(us)
    secs, frac = divmod(us, 1_000_000)
    return f"{sign}{secs // 3600}:{secs // 60 % 60:02d}:{secs % 60:02d}.{frac:06d}"


def sql_value(value: Any, kind: str) -> Any:
    """A normal value as a pymysql parameter for INSERT."""
    if value is None:
        return None
    if kind == "time":
        return time_literal(value)
    if kind in ("datetime", "timestamp") and isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


# -- writing parts ------------------------------------------------------------------


class _HashingFile:
    """A write-only file wrapper hashing and counting what passes through."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0
        self.closed = False

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.h.update(data)
        self.n += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()

    def tell(self) -> int:
        return self.n

    def close(self) -> None:
        self.closed = True


def _value_size(v: Any) -> int:
    if isinstance(v, (str, bytes)):
        return len(v)
    return 8


class ParquetPartWriter:
    """Writes one zstd Parquet part to a temporary file in bounded row groups, then uploads it."""

    def __init__(self, store: S3Store, key: str, columns: Sequence[dict[str, Any]],
                 row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self.store = store
        self.key = key
        self.columns = list(columns)
        self.names = [c["name"] for c in columns]
        self.kinds = [c["kind"] for c in columns]
        self.schema = arrow_schema(columns)
        self.row_group_rows = max(1, row_group_rows)
        self.tmp = tempfile.TemporaryFile(prefix="backupctl-part-")
        self.hf = _HashingFile(self.tmp)
        self.writer = pq.ParquetWriter(self.hf, self.schema, compression=COMPRESSION)
        self.buf: list[tuple[Any, ...]] = []
        self.buf_bytes = 0
        self.rows = 0
        self.raw_bytes = 0
        self.digest = Digest()
        self.last_hash = 0

    def add(self, row: tuple[Any, ...], digest_hash: int | None = None) -> int:
        """Add one normal row; returns its estimated raw size.

        The part's digest sums each row's ``row_hash`` (kept in ``last_hash``),
        or ``digest_hash`` when given (key-set parts sum the hashes they store).
        """
        size = sum(_value_size(v) for v in row)
        self.buf.append(row)
        self.buf_bytes += size
        self.rows += 1
        self.raw_bytes += size
        h = row_hash(self.names, self.kinds, row) if digest_hash is None else digest_hash
        self.last_hash = h
        self.digest.add_hash(h)
        if len(self.buf) >= self.row_group_rows or self.buf_bytes >= ROW_GROUP_BYTES:
            self._flush()
        return size

    def _flush(self) -> None:
        if not self.buf:
            return
        arrays = []
        for i, f in enumerate(self.schema):
            try:
                arrays.append(pa.array([r[i] for r in self.buf], type=f.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
                raise FormatError(f"column {f.name!r}: cannot store value as {f.type}: {e}") from e
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema), row_group_size=len(self.buf))
        self.buf = []
        self.buf_bytes = 0

    def finish(self) -> PartResult:
        self._flush()
        self.writer.close()
        sha, size = self.hf.h.hexdigest(), self.hf.n
        self.store.put(self.key, self.tmp, metadata={"sha256": sha, "rows": str(self.rows)})
        self.tmp.close()
        return PartResult(key=self.key, rows=self.rows, bytes=size, sha256=sha, digest=self.digest.hexdigest())

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.tmp.close()


# -- reading parts ------------------------------------------------------------------


def iter_part_rows(f: IO[bytes], columns: Sequence[dict[str, Any]], batch_rows: int = 5_000,
                   what: str = "part") -> Iterator[list[tuple[Any, ...]]]:
    """Batches of normal rows of a Parquet part, in ``columns`` order."""
    try:
        pf = pq.ParquetFile(f)
    except (pa.ArrowException, OSError) as e:
        raise FormatError(f"{what} is not a valid Parquet file: {e}") from e
    names = [c["name"] for c in columns]
    kinds = [c["kind"] for c in columns]
    have = pf.schema_arrow.names
    if have != names:
        raise FormatError(f"{what} has columns {have}, schema.json lists {names}")
    for i, field in enumerate(pf.schema_arrow):
        want = arrow_type(columns[i])
        if not field.type.equals(want):
            raise FormatError(f"{what} column {field.name!r} is {field.type}, expected {want}")
    try:
        for batch in pf.iter_batches(batch_size=batch_rows, use_threads=False):
            cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
            yield [tuple(normalize(v, k) for v, k in zip(vals, kinds, strict=True)) for vals in zip(*cols, strict=True)]
    except (pa.ArrowException, OSError) as e:
        raise FormatError(f"{what} cannot be read: {e}") from e
