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
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import ModuleType
from typing import IO, Any, overload

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from backupctl.errors import FormatError, InvalidInput
from backupctl.formats.dynamodb_json import Digest, canonical_number
from backupctl.model import PartResult
from backupctl.repository import PART_SPOOL_BYTES, PartSink, S3Store

_rowhash: ModuleType | None
try:  # the documents joined and hashed in one C loop (docs/adr/0024)
    from backupctl.formats import _rowhash
except ImportError:  # not built (no C compiler at install) or no libcrypto: joined by Arrow, hashed by hashlib
    _rowhash = None

ROW_ENCODING = "mysql-row-v1"
COMPRESSION = "zstd"
ROW_GROUP_ROWS = 50_000
ROW_GROUP_BYTES = 64 << 20
# A key-set part's row hashes (SHA-256: random bytes) are stored uncompressed: zstd finds nothing to
# take from them and cost ~45% of writing the part (100,000 keys: 18 -> 10 ms, the part 6% larger).
KEY_HASH_COLUMN = "__backupctl_row_sha256"
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


# Dictionary encoding only where values repeat by nature. On high-cardinality columns Arrow builds a
# dictionary, overflows it and falls back to plain pages: twice the encoding time for a larger file
# (a 1M-row table of mixed types: 0.76 vs 0.36 us a row, 11.1 vs 9.9 MB per 100k rows).
DICTIONARY_DATA_TYPES = {"tinyint", "smallint", "year", "enum", "set", "bit", "date"}


def dictionary_columns(columns: Sequence[dict[str, Any]]) -> list[str]:
    """The columns of a part written with dictionary encoding (by declared type)."""
    return [c["name"] for c in columns if str(c.get("data_type") or "").lower() in DICTIONARY_DATA_TYPES]


def _value_size(v: Any) -> int:
    if isinstance(v, (str, bytes)):
        return len(v)
    return 8


class ParquetPartWriter:
    """Writes one zstd Parquet part in bounded row groups (in memory, or a temporary file past
    ``PART_SPOOL_BYTES``: ``repository.PartSink``), then uploads it."""

    def __init__(self, store: S3Store, key: str, columns: Sequence[dict[str, Any]],
                 row_group_rows: int = ROW_GROUP_ROWS) -> None:
        self.store = store
        self.key = key
        self.columns = list(columns)
        self.names = [c["name"] for c in columns]
        self.kinds = [c["kind"] for c in columns]
        self.schema = arrow_schema(columns)
        self.row_group_rows = max(1, row_group_rows)
        self.hf = PartSink(PART_SPOOL_BYTES)
        compression = {n: "none" if n == KEY_HASH_COLUMN else COMPRESSION for n in self.names}
        self.writer = pq.ParquetWriter(self.hf, self.schema, compression=compression,
                                       use_dictionary=dictionary_columns(columns))
        self.buf: list[tuple[Any, ...]] = []
        self.buf_bytes = 0
        self.rows = 0
        self.raw_bytes = 0
        self.digest = Digest()
        self.last_hash = 0
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.pending_bytes = 0

    def add(self, row: tuple[Any, ...], digest_hash: int | None = None) -> int:
        """Add one normal row; returns its estimated raw size.

        The part's digest sums each row's ``row_hash`` (kept in ``last_hash``),
        or ``digest_hash`` when given (key-set parts sum the hashes they store).
        """
        if self.pending:
            self._flush_pending(final=True)
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

    def add_batch(self, batch: pa.RecordBatch, hashes: Sequence[bytes] | None = None,
                  raw_bytes: int | None = None) -> Sequence[bytes]:
        """Add a record batch of normal values (this part's schema); returns the rows' ``mysql-row-v1`` hashes.

        The same part, digest and row groups as ``add`` row by row, one Arrow
        column at a time. ``hashes`` (key-set parts) are summed instead of computed.
        """
        if batch.num_rows == 0:
            return []
        self._flush_rows()
        hs = row_hashes(batch, self.columns) if hashes is None else hashes
        self.digest.merge(Digest(hash_sum(hs) % (1 << 256), len(hs)))
        self.last_hash = int.from_bytes(hs[-1], "big")
        self.rows += batch.num_rows
        self.raw_bytes += pc.sum(value_sizes(batch)).as_py() if raw_bytes is None else raw_bytes
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.pending_bytes += batch.nbytes
        if self.pending_bytes >= ROW_GROUP_BYTES:
            self._flush_pending(final=True)
        elif self.pending_rows >= self.row_group_rows:
            self._flush_pending(final=False)
        return hs

    def _flush_pending(self, final: bool) -> None:
        if not self.pending:
            return
        table = pa.Table.from_batches(self.pending, schema=self.schema)
        start, n = 0, table.num_rows
        while n - start >= self.row_group_rows or (final and start < n):
            size = min(self.row_group_rows, n - start)
            self.writer.write_table(table.slice(start, size), row_group_size=size)
            start += size
        rest = table.slice(start).combine_chunks().to_batches() if start < n else []
        self.pending = [b for b in rest if b.num_rows]
        self.pending_rows = n - start
        self.pending_bytes = sum(b.nbytes for b in self.pending)

    def _flush(self) -> None:
        self._flush_pending(final=True)
        self._flush_rows()

    def _flush_rows(self) -> None:
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
        try:
            self.store.put(self.key, self.hf.body(), metadata={"sha256": sha, "rows": str(self.rows)})
        finally:
            self.hf.discard()
        return PartResult(key=self.key, rows=self.rows, bytes=size, sha256=sha, digest=self.digest.hexdigest())

    def abort(self) -> None:
        try:
            self.writer.close()
        finally:
            self.hf.discard()


# -- reading parts ------------------------------------------------------------------


def iter_part_batches(f: IO[bytes], columns: Sequence[dict[str, Any]], batch_rows: int = 5_000,
                      what: str = "part") -> Iterator[pa.RecordBatch]:
    """Record batches of a Parquet part, its columns checked against ``columns`` (names, order, Arrow types)."""
    try:
        pf = pq.ParquetFile(f)
    except (pa.ArrowException, OSError) as e:
        raise FormatError(f"{what} is not a valid Parquet file: {e}") from e
    names = [c["name"] for c in columns]
    have = pf.schema_arrow.names
    if have != names:
        raise FormatError(f"{what} has columns {have}, schema.json lists {names}")
    for i, field in enumerate(pf.schema_arrow):
        want = arrow_type(columns[i])
        if not field.type.equals(want):
            raise FormatError(f"{what} column {field.name!r} is {field.type}, expected {want}")
    try:
        yield from pf.iter_batches(batch_size=batch_rows, use_threads=False)
    except (pa.ArrowException, OSError) as e:
        raise FormatError(f"{what} cannot be read: {e}") from e


def batches_equal(a: Iterable[pa.RecordBatch], b: Iterable[pa.RecordBatch]) -> bool:
    """Whether two streams of record batches hold the same rows in the same order, value for value.

    Batch sizes may differ (slices are compared, zero-copy); types must be equal; floats compare bit for
    bit (``-0.0`` is not ``0.0``, as in the canonical row text). Used where a restore proves a key range
    of the table equal to the part it loaded (docs/adr/0015): C++ comparisons instead of a SHA-256 a row.
    """
    ia = (x for x in a if x.num_rows)
    ib = (y for y in b if y.num_rows)
    x, y = next(ia, None), next(ib, None)
    while x is not None and y is not None:
        n = min(x.num_rows, y.num_rows)
        if not _same_rows(x.slice(0, n), y.slice(0, n)):
            return False
        x = x.slice(n) if x.num_rows > n else next(ia, None)
        y = y.slice(n) if y.num_rows > n else next(ib, None)
    return x is None and y is None


def _same_rows(x: pa.RecordBatch, y: pa.RecordBatch) -> bool:
    if x.num_columns != y.num_columns:
        return False
    for cx, cy in zip(x.columns, y.columns, strict=True):
        if not cx.type.equals(cy.type):
            return False
        if pa.types.is_floating(cx.type):
            bits = {16: pa.int16(), 32: pa.int32(), 64: pa.int64()}[cx.type.bit_width]
            cx, cy = cx.view(bits), cy.view(bits)
        if not cx.equals(cy):
            return False
    return True


def iter_part_rows(f: IO[bytes], columns: Sequence[dict[str, Any]], batch_rows: int = 5_000,
                   what: str = "part") -> Iterator[list[tuple[Any, ...]]]:
    """Batches of normal rows of a Parquet part, in ``columns`` order."""
    kinds = [c["kind"] for c in columns]
    for batch in iter_part_batches(f, columns, batch_rows, what):
        try:
            cols = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
        except (pa.ArrowException, OSError) as e:
            raise FormatError(f"{what} cannot be read: {e}") from e
        yield [tuple(normalize(v, k) for v, k in zip(vals, kinds, strict=True)) for vals in zip(*cols, strict=True)]


# -- column-at-a-time (Arrow) paths: the same values and digest, without per-row Python ---------
#
# Everything below computes exactly what the row-at-a-time functions above
# compute (tests/unit/test_mysql_fast.py checks them against each other on
# tricky values), but one Arrow column at a time: the canonical JSON text of
# ``mysql-row-v1`` is assembled with Arrow string kernels, and only the SHA-256
# of each row's bytes is a (C-level) call per row.

_CTRL_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
_PY_CANONICAL_KINDS = {"json"}


# Any byte that orjson escapes in a JSON string is below 0x20, '"' or '\\'. A string array's whole
# data buffer is searched at once (numpy, C speed); a match there (even in bytes outside a sliced
# array) only means taking the per-value path below, so false positives cost time, never correctness.
def _needs_escape(text: pa.Array) -> bool:
    data = text.buffers()[2] if len(text.buffers()) > 2 else None
    if data is None or data.size == 0:
        return False
    u8 = np.frombuffer(data, dtype=np.uint8)
    return bool((u8 < 0x20).any() or (u8 == 0x22).any() or (u8 == 0x5C).any())


def _json_escaped(text: pa.Array) -> pa.Array:
    """The inside of ``"text"`` as orjson writes a JSON string (``\\``, ``"`` and control characters escaped)."""
    if _needs_escape(text):
        text = pc.replace_substring(text, "\\", "\\\\")
        text = pc.replace_substring(text, '"', '\\"')
        if pc.any(pc.match_substring_regex(text, "[\\x00-\\x1f]")).as_py():
            for i in range(0x20):
                text = pc.replace_substring(text, chr(i), _CTRL_ESCAPES.get(i, f"\\u{i:04x}"))
    return text


def _decimal_canonical(arr: pa.Array, scale: int) -> pa.Array:
    """``canonical_number`` of every value of a decimal array (its unscaled integer, then the scale)."""
    unscaled = pc.cast(arr.view(pa.decimal256(76, 0)), pa.string())
    neg = pc.starts_with(unscaled, "-")
    digits = pc.utf8_ltrim(pc.utf8_ltrim(unscaled, "-"), "0")
    stripped = pc.utf8_rtrim(digits, "0")
    exp = pc.subtract(pc.subtract(pc.binary_length(digits), pc.binary_length(stripped)), scale)
    text = pc.binary_join_element_wise(pc.if_else(neg, "-", ""), stripped, "e", pc.cast(exp, pa.string()), "")
    return pc.if_else(pc.equal(digits, ""), "0", text)


# Arrow writes a double with the same shortest round-trip digits as Python's ``repr``, in positional
# notation for 1e-4 <= |v| < 1e15 (the range checked below; Python's is up to 1e16), but without
# ``repr``'s ".0" on integral values. Values outside that range (and any Arrow text holding an
# exponent) take ``repr`` one at a time; tests compare both ways over random bit patterns.
_REPR_POSITIONAL = (1e-4, 1e15)


def _float_reprs(f: pa.Array) -> pa.Array:
    """``repr`` of every value of a float64 array (nulls stay null), vectorised where Arrow agrees."""
    if len(f) == 0:
        return pa.array([], pa.string())
    text = pc.cast(f, pa.string())
    mag = pc.abs(f)
    inside = pc.and_(pc.greater_equal(mag, _REPR_POSITIONAL[0]), pc.less(mag, _REPR_POSITIONAL[1]))
    inside = pc.and_(pc.or_(inside, pc.equal(mag, 0.0)), pc.invert(pc.match_substring(text, "e")))
    integral = pc.invert(pc.match_substring(text, "."))
    text = pc.if_else(pc.and_(inside, integral), pc.binary_join_element_wise(text, ".0", ""), text)
    outside = pc.fill_null(pc.invert(inside), False)
    if pc.any(outside).as_py():
        idx = pc.indices_nonzero(outside)
        reprs = pa.array([repr(v) for v in pc.take(f, idx).to_pylist()], pa.string())
        text = pc.replace_with_mask(text, outside, reprs)
    return text


_B64_ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", dtype=np.uint8)


def base64_texts(arr: pa.Array) -> pa.Array:
    """Standard base64 (``=`` padded, no newline) of every value of a binary array, as a string array
    (nulls stay null): ``binascii.b2a_base64(v, newline=False)`` with numpy instead of a call per value
    (the bench table's VARBINARY(32) column took ~1 CPU-s a 1M rows that way).

    Each value is copied to a buffer padded with zero bytes to a multiple of 3, every 3 bytes become 4
    characters, and the last one or two characters of a value whose length is not a multiple of 3
    become ``=``.
    """
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_binary(arr.type):
        arr = arr.cast(pa.binary())
    offsets, data, validity = _flat(arr)
    offsets = offsets.astype(np.int64)
    lengths = np.diff(offsets)
    groups = (lengths + 2) // 3
    padded_at = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(groups * 3, out=padded_at[1:])
    padded = np.zeros(int(padded_at[-1]), dtype=np.uint8)
    if len(data):
        padded[np.arange(len(data), dtype=np.int64) + np.repeat(padded_at[:-1] - offsets[:-1], lengths)] = data
    t = padded.reshape(-1, 3)
    out = np.empty((len(t), 4), dtype=np.uint8)
    out[:, 0] = t[:, 0] >> 2
    out[:, 1] = ((t[:, 0] & 3) << 4) | (t[:, 1] >> 4)
    out[:, 2] = ((t[:, 1] & 15) << 2) | (t[:, 2] >> 6)
    out[:, 3] = t[:, 2] & 63
    text = _B64_ALPHABET[out.reshape(-1)]
    ends = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(groups * 4, out=ends[1:])
    rest = lengths % 3
    text[ends[1:][rest == 1] - 2] = ord("=")
    text[ends[1:][rest != 0] - 1] = ord("=")
    if ends[-1] >= 1 << 31:
        return pa.Array.from_buffers(pa.large_string(), len(arr), [validity, pa.py_buffer(ends), pa.py_buffer(text)])
    return pa.Array.from_buffers(pa.string(), len(arr), [validity, pa.py_buffer(ends.astype(np.int32)),
                                                         pa.py_buffer(text)])


def canonical_texts(arr: pa.Array, col: dict[str, Any]) -> pa.Array:
    """``canonical`` of every value of a column (nulls stay null), as a string array."""
    kind = col["kind"]
    if kind in ("int", "uint", "year", "bit", "date", "datetime", "string"):
        return arr if kind == "string" else pc.cast(arr, pa.string())
    if kind == "timestamp":
        return pc.cast(arr.view(pa.timestamp("us")), pa.string())
    if kind == "time":
        return pc.cast(arr.view(pa.int64()), pa.string())
    if kind == "decimal":
        return _decimal_canonical(arr, int(col.get("scale") or 0))
    if kind in ("float32", "float64"):
        return _float_reprs(pc.cast(arr, pa.float64()))
    if kind == "binary":
        return base64_texts(arr)
    assert kind in _PY_CANONICAL_KINDS
    return pa.array([canonical(v, kind) for v in arr.to_pylist()], pa.string())


class RowHashes(Sequence[bytes]):
    """Row hashes as one buffer of 32-byte SHA-256 digests (what the C loop returns), read as a sequence
    of ``bytes``; ``hash_sum`` and ``hashes_array`` take the buffer as it is."""

    __slots__ = ("blob",)

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __len__(self) -> int:
        return len(self.blob) // 32

    @overload
    def __getitem__(self, i: int) -> bytes: ...

    @overload
    def __getitem__(self, i: slice) -> RowHashes: ...

    def __getitem__(self, i: int | slice) -> bytes | RowHashes:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step == 1:
                return RowHashes(self.blob[32 * start: 32 * max(start, stop)])
            return RowHashes(b"".join(self.blob[32 * j: 32 * j + 32] for j in range(start, stop, step)))
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("row hash index out of range")
        return self.blob[32 * i: 32 * i + 32]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


# The C loop's field kinds (formats/_rowhash.c): canonical text as it is, text to JSON-escape, bytes to
# base64, decimal256 to canonical_number, integers, date32 and timestamp[us] to Arrow's text of them.
_C_TEXT, _C_JSON_TEXT, _C_BASE64, _C_FLOAT_TEXT, _C_DECIMAL, _C_INT, _C_UINT, _C_DATE, _C_MICROS = 0, 1, 2, 3, 4, 5, 6, 7, 8
_C_DAYS = (-719162, 2932896)  # 0001-01-01 and 9999-12-31, days from 1970-01-01: the years the loop writes
_C_MICROS_RANGE = (_C_DAYS[0] * 86_400_000_000, (_C_DAYS[1] + 1) * 86_400_000_000 - 1)


def _within(values: pa.Array, bounds: tuple[int, int]) -> bool:
    got = pc.min_max(values)
    lo, hi = got["min"].as_py(), got["max"].as_py()
    return lo is None or (bounds[0] <= lo and hi <= bounds[1])


def _c_field(head: str, arr: pa.Array, col: dict[str, Any]) -> tuple[bytes, int, Any, Any, Any, int, int] | None:
    """The C loop's field for one column, or None when its arrays are not ones the loop reads (64-bit
    offsets, decimal128): the Python path then hashes the batch."""
    kind = col["kind"]
    if kind == "binary" and pa.types.is_binary(arr.type):
        c_kind, values, scale = _C_BASE64, arr, 0
    elif kind == "decimal" and isinstance(arr.type, pa.Decimal256Type):
        c_kind, values, scale = _C_DECIMAL, arr, int(col.get("scale") or 0)
    elif kind in ("int", "uint", "year", "bit") and pa.types.is_integer(arr.type):
        c_kind = _C_INT if pa.types.is_signed_integer(arr.type) else _C_UINT
        values, scale = arr, arr.type.bit_width // 8
    elif kind == "time" and pa.types.is_duration(arr.type) and arr.type.unit == "us":
        c_kind, values, scale = _C_INT, arr.view(pa.int64()), 8
    elif kind == "date" and pa.types.is_date32(arr.type) and _within(arr.view(pa.int32()), _C_DAYS):
        c_kind, values, scale = _C_DATE, arr, 0
    elif (kind in ("datetime", "timestamp") and pa.types.is_timestamp(arr.type) and arr.type.unit == "us"
          and _within(arr.view(pa.int64()), _C_MICROS_RANGE)):
        c_kind, values, scale = _C_MICROS, arr, 0
    elif kind in ("float32", "float64") and pa.types.is_floating(arr.type):
        # Arrow's shortest round-trip text; the C loop lays it out as repr() does (``_float_reprs`` in Python)
        c_kind, values, scale = _C_FLOAT_TEXT, pc.cast(pc.cast(arr, pa.float64()), pa.string()), 0
    else:
        values = canonical_texts(arr, col)
        if not (pa.types.is_string(values.type) or pa.types.is_binary(values.type)):
            return None
        c_kind, scale = (_C_JSON_TEXT if kind in ("string", "json") else _C_TEXT), 0
    bufs = values.buffers()
    if c_kind in (_C_DECIMAL, _C_INT, _C_UINT, _C_DATE, _C_MICROS):
        offsets, data = None, bufs[1]
    else:
        offsets, data = bufs[1], bufs[2] or pa.py_buffer(b"")
    return (head.encode(), c_kind, offsets, data, bufs[0] if values.null_count else None, values.offset, scale)


def row_hashes(batch: pa.RecordBatch | pa.Table, columns: Sequence[dict[str, Any]]) -> Sequence[bytes]:
    """The ``mysql-row-v1`` SHA-256 of every row (32 bytes each), as ``row_hash`` computes it one row at a time."""
    n = batch.num_rows
    if n == 0:
        return []
    order = sorted(range(len(columns)), key=lambda i: columns[i]["name"])
    if not columns:
        return [hashlib.sha256(b"{}").digest()] * n
    arrays: list[tuple[str, pa.Array, dict[str, Any]]] = []  # ('{"name":' or ',"name":', values, column)
    for i in order:
        arr = batch.column(i)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        arrays.append((("{" if not arrays else ",") + orjson.dumps(columns[i]["name"]).decode() + ":", arr, columns[i]))
    if _rowhash is not None:
        fields = [_c_field(head, arr, col) for head, arr, col in arrays]
        if all(f is not None for f in fields):
            return RowHashes(_rowhash.sha256_docs(n, fields, b"}"))
    # One join of literal pieces and column texts makes every row's document; a column without
    # nulls gets its quotes from the literal pieces, one with nulls is quoted first, then "null" filled.
    pieces: list[Any] = []
    quote = ""
    for head, arr, col in arrays:
        text = canonical_texts(arr, col)
        if col["kind"] in ("string", "json"):
            text = _json_escaped(text)
        if text.null_count:
            pieces += [quote + head, pc.fill_null(pc.binary_join_element_wise('"', text, '"', ""), "null")]
            quote = ""
        else:
            pieces += [quote + head + '"', text]
            quote = '"'
    pieces.append(quote + "}")
    doc = pc.cast(pc.binary_join_element_wise(*pieces, ""), pa.binary())
    sha = hashlib.sha256
    return [sha(b).digest() for b in doc.to_pylist()]


def hash_sum(hashes: Sequence[bytes]) -> int:
    """The sum of row hashes (big-endian 256-bit integers), not yet reduced modulo 2^256.

    Summed as eight 32-bit limbs in uint64 (exact below 2^32 hashes), then carried in Python.
    """
    if not hashes:
        return 0
    limbs = np.frombuffer(_hash_bytes(hashes), dtype=">u4").reshape(-1, 8).sum(axis=0, dtype=np.uint64)
    total = 0
    for limb in limbs.tolist():
        total = (total << 32) + int(limb)
    return total


def _hash_bytes(hashes: Sequence[bytes]) -> bytes:
    """Row hashes as one buffer (a ``RowHashes`` already is one)."""
    return hashes.blob if isinstance(hashes, RowHashes) else b"".join(hashes)


def joined_hashes(runs: Sequence[Sequence[bytes]]) -> Sequence[bytes]:
    """Runs of row hashes as one sequence (one buffer when every run is one)."""
    if len(runs) == 1:
        return runs[0]
    if all(isinstance(r, RowHashes) for r in runs):
        return RowHashes(b"".join(_hash_bytes(r) for r in runs))
    return [h for r in runs for h in r]


def hashes_array(hashes: Sequence[bytes]) -> pa.Array:
    """Row hashes (32 bytes each) as an Arrow binary array, built from one buffer."""
    n = len(hashes)
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(_hash_bytes(hashes))])


def value_sizes(batch: pa.RecordBatch) -> pa.Array:
    """Every row's estimated raw size (int64), as ``ParquetPartWriter.add`` counts it (text/bytes length, else 8)."""
    total: pa.Array | None = None
    fixed = 0
    for i in range(batch.num_columns):
        arr = batch.column(i)
        if pa.types.is_string(arr.type):
            size = pc.fill_null(pc.utf8_length(arr), 8)
        elif pa.types.is_binary(arr.type):
            size = pc.fill_null(pc.binary_length(arr), 8)
        else:
            fixed += 8
            continue
        size = pc.cast(size, pa.int64())
        total = size if total is None else pc.add(total, size)
    if total is None:
        return pa.array([fixed] * batch.num_rows, pa.int64())
    return pc.add(total, fixed) if fixed else total


# -- raw driver text -> Arrow -------------------------------------------------------------


def _raw_text(values: pa.Array) -> pa.Array:
    return pc.cast(values, pa.string())


def _zero_date(values: pa.Array, e: Exception) -> FormatError:
    for v in values.to_pylist():
        if v is not None:
            try:
                datetime.fromisoformat(v.decode() if isinstance(v, bytes) else v)
            except ValueError:
                return FormatError(f"zero or invalid date value {v.decode(errors='replace')!r} cannot be backed up")
    return FormatError(f"invalid date value: {e}")


def _time_from_text(v: bytes) -> timedelta:
    text = v.decode()
    neg = text.startswith("-")
    h, m, s = text.lstrip("-").split(":")
    sec, _, frac = s.partition(".")
    us = ((int(h) * 60 + int(m)) * 60 + int(sec)) * 1_000_000 + int((frac + "000000")[:6])
    return timedelta(microseconds=-us if neg else us)


def _times_from_text(values: pa.Array) -> pa.Array:
    """TIME texts (``[-]H..H:MM:SS[.f..f]``) as duration[us], column-wise (~0.9 us a value; ``_time_from_text``
    one value at a time took ~2.5 us and stays the reference of the tests)."""
    text = pc.fill_null(pc.cast(values, pa.string()), "00:00:00")  # NULLs set back at the end
    parts = pc.extract_regex(text, r"^(?P<neg>-?)(?P<h>\d+):(?P<m>\d+):(?P<s>\d+)(?:\.(?P<f>\d*))?$")
    if parts.null_count:
        raise pa.ArrowInvalid("a TIME value is not [-]H:MM:SS[.ffffff]")
    i64 = pa.int64()
    h, m, sec = (pc.cast(parts.field(k), i64) for k in ("h", "m", "s"))
    frac = pc.cast(pc.utf8_slice_codeunits(pc.utf8_rpad(parts.field("f"), 6, "0"), 0, 6), i64)
    us = pc.add(pc.multiply(pc.add(pc.multiply(pc.add(pc.multiply(h, 60), m), 60), sec), 1_000_000), frac)
    us = pc.if_else(pc.equal(parts.field("neg"), "-"), pc.negate(us), us)
    return pc.if_else(pc.is_null(values), pa.scalar(None, i64), us).cast(pa.duration("us"))


def _bits_from_bytes(values: pa.Array) -> pa.Array:
    """BIT(n) values (big-endian bytes, up to 8) as uint64, column-wise (numpy: each value right-aligned
    in 8 bytes, read big-endian)."""
    offsets, data, validity = _flat(values)
    offsets = offsets.astype(np.int64)
    lengths = np.diff(offsets)
    if lengths.max(initial=0) > 8:
        raise pa.ArrowInvalid("a BIT value is longer than 8 bytes")
    padded = np.zeros((len(lengths), 8), dtype=np.uint8)
    if len(data):
        row = np.repeat(np.arange(len(lengths)), lengths)
        col = np.arange(len(data)) - np.repeat(offsets[:-1], lengths) + np.repeat(8 - lengths, lengths)
        padded[row, col] = data
    out = padded.view(">u8").reshape(-1).astype(np.uint64)
    return pa.Array.from_buffers(pa.uint64(), len(lengths), [validity, pa.py_buffer(out)])


def raw_column(values: Sequence[Any] | pa.Array, col: dict[str, Any]) -> pa.Array:
    """An Arrow array of one column from the text protocol's raw bytes (None = NULL), exact as ``normalize``."""
    kind, typ = col["kind"], arrow_type(col)
    if not isinstance(values, pa.Array):
        values = pa.array(values, pa.binary())
    try:
        if kind == "binary":
            return values
        if kind in ("string", "json"):
            return _raw_text(values)
        if kind in ("int", "uint", "year", "decimal", "float64", "date", "datetime", "timestamp"):
            text = _raw_text(values)
            if kind == "timestamp":
                return pc.cast(text, pa.timestamp("us")).view(typ)
            if kind in ("date", "datetime"):
                try:
                    return pc.cast(text, typ)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise _zero_date(values, e) from e
            return pc.cast(text, typ)
        if kind == "float32":
            return pc.cast(pc.cast(_raw_text(values), pa.float64()), typ, safe=False)
        if kind == "bit":
            return _bits_from_bytes(values)
        if kind == "time":
            return _times_from_text(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
        raise FormatError(f"column {col['name']!r}: cannot store value as {typ}: {e}") from e
    raise FormatError(f"column {col['name']!r}: unsupported kind {kind}")  # pragma: no cover


def raw_batch(values: Sequence[pa.Array], columns: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """A record batch of the text protocol's raw values, one binary array a column (``formats.mysql_text``)."""
    return pa.RecordBatch.from_arrays([raw_column(v, c) for v, c in zip(values, columns, strict=True)], schema=schema)


def driver_batch(rows: Sequence[Sequence[Any]], columns: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """A record batch of driver rows (pymysql values), through ``normalize``."""
    kinds = [c["kind"] for c in columns]
    arrays = []
    for i, f in enumerate(schema):
        try:
            arrays.append(pa.array([normalize(r[i], kinds[i]) for r in rows], type=f.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            raise FormatError(f"column {f.name!r}: cannot store value as {f.type}: {e}") from e
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# -- binary <-> hex text (bytea on the PostgreSQL stand-in) ------------------------------

_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_HEX_PAIRS = np.stack([_HEX_DIGITS[np.arange(256) >> 4], _HEX_DIGITS[np.arange(256) & 15]], axis=1)
_UNHEX = np.full(256, 255, dtype=np.uint8)
_UNHEX[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
_UNHEX[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16, dtype=np.uint8)


def _flat(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, Any]:
    """(offsets from 0, data bytes, validity buffer) of a binary/string array, at offset 0."""
    if arr.offset:
        arr = pa.concat_arrays([arr])
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32)[: len(arr) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return offsets - offsets[0], data[offsets[0]:offsets[-1]], bufs[0]


def hex_texts(arr: pa.Array, prefix: str = "") -> pa.Array:
    """Lower-case hex of every value of a binary array, after ``prefix`` (nulls stay null), without a Python loop."""
    n = len(arr)
    if n == 0:
        return pa.array([], pa.string())
    offsets, data, validity = _flat(arr)
    hexed = _HEX_PAIRS[data].reshape(-1)
    text = pa.Array.from_buffers(pa.string(), n, [validity, pa.py_buffer((offsets * 2).astype(np.int32)),
                                                  pa.py_buffer(hexed)], null_count=arr.null_count)
    return pc.binary_join_element_wise(prefix, text, "") if prefix else text


def unhex_binary(arr: pa.Array) -> pa.Array:
    """The bytes of every hex text of a string array; bad hex raises FormatError."""
    n = len(arr)
    if n == 0:
        return pa.array([], pa.binary())
    offsets, data, validity = _flat(arr)
    nibbles = _UNHEX[data]
    if (offsets & 1).any() or (nibbles == 255).any():
        raise FormatError("a binary value read back is not hex text")
    raw = (nibbles[0::2] << 4) | nibbles[1::2]
    return pa.Array.from_buffers(pa.binary(), n, [validity, pa.py_buffer((offsets // 2).astype(np.int32)),
                                                  pa.py_buffer(raw.astype(np.uint8))], null_count=arr.null_count)


# -- Arrow -> LOAD DATA text --------------------------------------------------------------

# LOAD DATA ... FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '"' ESCAPED BY '' LINES TERMINATED BY '\n':
# every value is quoted ("" inside), NULL is the bare word NULL; binary values travel verbatim
# (docs/adr/0016), BIT as a decimal number (CAST AS UNSIGNED), everything else as the text MySQL parses
# back exactly.
LOAD_FIELDS = "FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\"' ESCAPED BY '' LINES TERMINATED BY '\\n'"

# Column character sets that store a value as the very UTF-8 bytes ``load_csv`` writes for it.
_UTF8_CHARSETS = frozenset({"utf8mb4", "utf8mb3", "utf8", "ascii"})


def load_charset(columns: Sequence[dict[str, Any]]) -> str:
    """The CHARACTER SET a LOAD DATA of ``load_csv`` text into ``columns`` declares.

    ``binary`` when every text column's character set stores the UTF-8 bytes as they are: the server
    then neither converts nor re-validates the text (the values come from a column of the same
    character set, and a verified restore compares them afterwards). Measured on the 1M-row bench
    table, 40 statements one after another: 11.27 s vs 12.18 s median with ``utf8mb4`` (7 interleaved
    pairs, 6 faster). ``utf8mb4`` otherwise — another character set (latin1, ...) needs the server's
    conversion — and for a JSON column (MySQL refuses JSON text declared binary).
    """
    for c in columns:
        if c["kind"] == "json" or (c["kind"] == "string" and str(c.get("charset") or "").lower() not in _UTF8_CHARSETS):
            return "utf8mb4"
    return "binary"


def load_format(columns: Sequence[dict[str, Any]]) -> str:
    """Everything of LOAD DATA between the table and the column list (see ``load_csv``)."""
    return f"CHARACTER SET {load_charset(columns)} {LOAD_FIELDS}"


def _plain_decimal(arr: pa.Array, scale: int) -> pa.Array:
    """Decimal values as plain text (``-12.50``), never Arrow's scientific notation."""
    unscaled = pc.cast(arr.view(pa.decimal256(76, 0)), pa.string())
    if scale == 0:
        return unscaled
    neg = pc.starts_with(unscaled, "-")
    digits = pc.utf8_lpad(pc.utf8_ltrim(unscaled, "-"), scale + 1, "0")
    whole = pc.utf8_slice_codeunits(digits, 0, -scale)
    frac = pc.utf8_slice_codeunits(digits, -scale)
    return pc.binary_join_element_wise(pc.if_else(neg, "-", ""), whole, ".", frac, "")


def _bytes_as_text(arr: pa.Array) -> pa.Array:
    """A binary array's bytes as they are, typed as text for the CSV writer (zero-copy, never validated).

    LOAD DATA takes them verbatim inside the enclosing quotes (``"`` doubled by the writer): a binary
    column stores the field's bytes without conversion, and the multi-byte reader only joins bytes into
    one character when they form a valid one, which never contains ``"``, ``,`` or a newline.
    Measured against hex with ``SET col = UNHEX(@v)``: the server spent ~15% less CPU on the same
    1M-row load (docs/adr/0016).
    """
    if pa.types.is_fixed_size_binary(arr.type):
        arr = arr.cast(pa.binary())
    if pa.types.is_large_binary(arr.type):
        return arr.view(pa.large_string())
    return arr.view(pa.string())


def load_texts(arr: pa.Array, col: dict[str, Any]) -> pa.Array:
    """One column as the text LOAD DATA reads back into the same value (nulls stay null)."""
    kind = col["kind"]
    if kind in ("string", "json"):
        return arr
    if kind == "binary":
        return _bytes_as_text(arr)
    if kind == "decimal":
        return _plain_decimal(arr, int(col.get("scale") or 0))
    if kind == "timestamp":
        return pc.cast(arr.view(pa.timestamp("us")), pa.string())
    if kind == "time":
        return pa.array([None if v is None else time_literal(v) for v in arr.to_pylist()], pa.string())
    if kind == "float32":  # the shortest text of the widened double: MySQL rounds it back to the same float
        return pc.cast(pc.cast(arr, pa.float64()), pa.string())
    return pc.cast(arr, pa.string())


def load_csv(batch: pa.RecordBatch, columns: Sequence[dict[str, Any]]) -> bytes:
    """The LOAD DATA text of a batch (see ``load_format``)."""
    import pyarrow.csv as pacsv

    arrays = [load_texts(batch.column(i), c) for i, c in enumerate(columns)]
    table = pa.Table.from_arrays(arrays, names=[f"c{i}" for i in range(len(arrays))])
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False, quoting_style="all_valid",
                                                   null_string="NULL", batch_size=8192))
    return bytes(sink.getvalue())


def load_targets(columns: Sequence[dict[str, Any]], quote: Any) -> tuple[str, str]:
    """The column list and SET clause of LOAD DATA for ``columns`` (user variables where converted)."""
    targets, sets = [], []
    for i, c in enumerate(columns):
        if c["kind"] == "bit":
            targets.append(f"@v{i}")
            sets.append(f"{quote(c['name'])} = CAST(@v{i} AS UNSIGNED)")
        else:
            targets.append(quote(c["name"]))
    return "(" + ", ".join(targets) + ")", (" SET " + ", ".join(sets)) if sets else ""
