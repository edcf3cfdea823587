"""Arrow record batches -> the binary-protocol row packets a MySQL server sends for them.

A restore proves each part's key range by reading it back (docs/adr/0015). Fetched through the
driver, 1M rows cost ~1.4 client CPU-s: a Python object per value, those objects into Arrow, text
parsed into typed arrays. The server's reply is a byte stream fixed by the values, so the restore
builds that stream from the part's own batches with numpy and Arrow kernels and compares it with the
bytes read off the socket (``mysql_conn.RawRows``): equal streams, then the reply's end, mean the
range holds exactly the part's rows (docs/adr/0021).

The range is read with a prepared ``SELECT`` (``COM_STMT_EXECUTE``), whose rows are binary: the
server sends integers, doubles, dates and times as fixed little-endian fields instead of formatting
each as text. Read back whole, the 1M-row bench table cost the server 1.65-1.8 CPU-s that way vs
3.2-3.45 as text (docs/adr/0021 §8). A row packet is

    3-byte length | packet number | 0x00 | NULL bitmap (bit i + 2 for column i) | values

and each value's encoding follows the type the server declares for its column (``fields``: the
column definitions of the prepared statement, type code and length):

    TINY, SHORT, YEAR, LONG, INT24, LONGLONG   1, 2, 2, 4, 4, 8 bytes (two's complement)
    FLOAT, DOUBLE                             the IEEE bits, 4 or 8 bytes (FLOAT columns are read
                                              as ``col + 0e0``, a DOUBLE)
    DATE, DATETIME, TIMESTAMP                 length 4, 7 or 11 (none after the day, the
                                              seconds or the microseconds when they are zero), then
                                              year u16, month, day, hour, minute, second, us u32
    TIME                                      length 8 or 12 (0 for 00:00:00), negative flag,
                                              days u32, hour (< 24), minute, second, us u32
    NEWDECIMAL                                length-encoded plain text, ``scale`` digits after the point
    strings, JSON, ENUM, SET, blobs           length-encoded bytes as stored
    BIT(M)                                    length-encoded, (M + 7) // 8 bytes, big-endian

TIMESTAMPs are sent in the session time zone, UTC on every backupctl connection. A column whose
declared type is not above, or does not fit the part's kind, makes ``row_packets`` return None (the
restore then compares values); a form the server sends otherwise only makes the streams differ, with
the same outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backupctl.formats.mysql_params import (
    MAX_PACKET,
    TYPE_BLOB,
    TYPE_STRING,
    UNSIGNED,
    join_rows,
    lenenc_parts,
    row_offsets,
    rows_of,
)
from backupctl.formats.parquet import _plain_decimal

# Column type codes of the protocol (include/mysql_com.h: enum_field_types).
T_NEWDECIMAL, T_TINY, T_SHORT, T_LONG, T_FLOAT, T_DOUBLE = 246, 1, 2, 3, 4, 5
T_TIMESTAMP, T_LONGLONG, T_INT24, T_DATE, T_TIME, T_DATETIME, T_YEAR = 7, 8, 9, 10, 11, 12, 13
T_BIT = 16
INT_WIDTH = {T_TINY: 1, T_SHORT: 2, T_YEAR: 2, T_LONG: 4, T_INT24: 4, T_LONGLONG: 8}
BYTE_TYPES = {15, 245, 247, 248, 249, 250, 251, 252, 253, 254}  # VARCHAR, JSON, ENUM, SET, blobs, strings
DATE_TYPES = {T_DATE, T_DATETIME, T_TIMESTAMP}

# The column kinds (formats/parquet.py) each declared type may carry.
_KINDS = {**{t: {"int", "uint", "year"} for t in INT_WIDTH}, T_FLOAT: {"float32"}, T_DOUBLE: {"float32", "float64"},
          T_NEWDECIMAL: {"decimal"}, T_DATE: {"date"}, T_DATETIME: {"datetime", "timestamp"},
          T_TIMESTAMP: {"datetime", "timestamp"}, T_TIME: {"time"}, T_BIT: {"bit"},
          **{t: {"string", "json", "binary"} for t in BYTE_TYPES}}


def encodable(columns: Sequence[dict[str, Any]], fields: Sequence[tuple[int, int]]) -> bool:
    """Whether every column's declared type (``fields``: (type code, length) a column) is encoded here
    for its kind."""
    return len(columns) == len(fields) and all(
        c["kind"] in _KINDS.get(t, ()) for c, (t, _length) in zip(columns, fields, strict=True))


def _plain(arr: pa.Array) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.dictionary_decode() if pa.types.is_dictionary(arr.type) else arr


def _valid(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=bool)


def _numbers(arr: pa.Array, dtype: Any) -> np.ndarray:
    """The values as a numpy array of ``dtype`` (NULLs 0)."""
    filled = pc.fill_null(arr, 0) if arr.null_count else arr
    return np.asarray(filled.to_numpy(zero_copy_only=False)).astype(dtype, copy=False)


class Block:
    """Bytes of a run of fixed-size fields: row i is the first ``used[i]`` bytes of ``matrix[i]``."""

    def __init__(self, matrix: np.ndarray, used: np.ndarray) -> None:
        self.matrix, self.used = matrix, used

    def keep(self) -> np.ndarray:
        return np.arange(self.matrix.shape[1])[None, :] < self.used[:, None]


def _binary(blocks: list[Block]) -> pa.Array:
    """Blocks side by side, row by row, as one binary array (only the bytes each row uses)."""
    if len(blocks) == 1:
        return rows_of(blocks[0].matrix, blocks[0].keep())
    return rows_of(np.concatenate([b.matrix for b in blocks], axis=1), np.concatenate([b.keep() for b in blocks], axis=1))


def _le(matrix: np.ndarray, at: int, values: np.ndarray, width: int) -> None:
    """``values`` little-endian into ``width`` columns of ``matrix`` from column ``at``."""
    matrix[:, at:at + width] = values.astype(f"<u{width}").view(np.uint8).reshape(-1, width)


def _civil(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, month, day) of days since 1970-01-01, proleptic Gregorian (H. Hinnant's civil_from_days)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (month <= 2), month, day


def _datetimes(arr: pa.Array, type_code: int, valid: np.ndarray) -> Block:
    """DATE/DATETIME/TIMESTAMP values as the server's length-prefixed structs."""
    if type_code == T_DATE or pa.types.is_date(arr.type):
        day = _numbers(arr.cast(pa.date32()).view(pa.int32()), np.int64)
        tod = np.zeros_like(day)
    else:
        us = _numbers(arr.view(pa.int64()), np.int64)
        day = us // 86_400_000_000
        tod = us - day * 86_400_000_000
    year, month, mday = _civil(day)
    sec, frac = tod // 1_000_000, tod % 1_000_000
    hour, minute, second = sec // 3600, sec // 60 % 60, sec % 60
    out = np.zeros((len(day), 12), dtype=np.uint8)
    _le(out, 1, year, 2)
    out[:, 3], out[:, 4], out[:, 5], out[:, 6], out[:, 7] = month, mday, hour, minute, second
    _le(out, 8, frac, 4)
    length = np.where(frac != 0, 11, np.where((hour | minute | second) != 0, 7, 4))
    out[:, 0] = length
    return Block(out, np.where(valid, length + 1, 0))


def _times(arr: pa.Array, valid: np.ndarray) -> Block:
    """TIME values (signed microseconds) as the server's length-prefixed structs."""
    us = _numbers(arr.view(pa.int64()), np.int64)
    mag = np.abs(us)
    sec, frac = mag // 1_000_000, mag % 1_000_000
    days, hour, minute, second = sec // 86_400, sec // 3600 % 24, sec // 60 % 60, sec % 60
    out = np.zeros((len(us), 13), dtype=np.uint8)
    out[:, 1] = us < 0
    _le(out, 2, days, 4)
    out[:, 6], out[:, 7], out[:, 8] = hour, minute, second
    _le(out, 9, frac, 4)
    length = np.where(frac != 0, 12, np.where((days | hour | minute | second) != 0, 8, 0))
    out[:, 0] = length
    return Block(out, np.where(valid, length + 1, 0))


def _bits(arr: pa.Array, nbits: int, valid: np.ndarray) -> Block:
    """BIT(M) values as length-encoded big-endian bytes, (M + 7) // 8 of them."""
    width = max(1, (nbits + 7) // 8)
    be = _numbers(arr, np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - width:]
    out = np.concatenate([np.full((len(valid), 1), width, dtype=np.uint8), be], axis=1)
    return Block(out, np.where(valid, width + 1, 0))


def _lenenc(arr: pa.Array, valid: np.ndarray) -> tuple[Block, pa.Array]:
    """A text or binary column as its length prefixes (a block) and its bytes (NULLs empty)."""
    matrix, used, data = lenenc_parts(arr, valid)
    return Block(matrix, used), data


def column_bytes(arr: pa.Array, col: dict[str, Any], field: tuple[int, int],
                  valid: np.ndarray) -> tuple[Block, pa.Array | None]:
    """One column's bytes in a binary row: a block of fixed-size fields (a NULL's row empty), and the
    variable bytes after it (length-encoded columns), or None."""
    type_code, length = field
    if type_code in INT_WIDTH:
        width = INT_WIDTH[type_code]
        values = _numbers(arr, np.uint64 if col["kind"] == "uint" else np.int64).astype(f"<u{width}")
        return Block(values.view(np.uint8).reshape(-1, width), np.where(valid, width, 0)), None
    if type_code in (T_FLOAT, T_DOUBLE):
        values = _numbers(arr, np.float64).astype("<f4" if type_code == T_FLOAT else "<f8")
        width = values.dtype.itemsize
        return Block(values.view(np.uint8).reshape(-1, width), np.where(valid, width, 0)), None
    if type_code in DATE_TYPES:
        return _datetimes(arr, type_code, valid), None
    if type_code == T_TIME:
        return _times(arr, valid), None
    if type_code == T_BIT:
        return _bits(arr, length, valid), None
    if type_code == T_NEWDECIMAL:
        arr = _plain_decimal(arr, int(col.get("scale") or 0))
    return _lenenc(arr, valid)


class BinaryRows:
    """A batch's rows as the binary protocol carries their values: each row's non-NULL values side by
    side (``values``, large_binary) and the (rows, columns) NULL matrix (``nulls``).

    The same bytes are a binary result row's values and a ``COM_STMT_EXECUTE``'s parameter values
    (``param_types`` says which parameter type carries each declared column type): a restore encodes
    a batch once, sends it as prepared INSERTs (``mysql_params.ParamRows.of_values``) and, to prove the
    part's key range, puts only the row packets' headers and NULL bitmaps in front (``packets``).
    ``columns`` must be ``encodable`` with ``fields``.

    Fixed-size fields next to each other (integers, dates, a text's length prefix) are laid out as one
    uint8 matrix and cut per row with one mask; only the texts' bytes are joined in between
    (``join_rows``): fewer, larger pieces to join.
    """

    def __init__(self, batch: pa.RecordBatch, columns: Sequence[dict[str, Any]],
                 fields: Sequence[tuple[int, int]]) -> None:
        n = batch.num_rows
        arrays = [_plain(batch.column(i)) for i in range(len(columns))]
        valid = [_valid(a) for a in arrays]
        self.nulls = ~np.stack(valid, axis=1) if valid else np.zeros((n, 0), dtype=bool)
        runs: list[list[Block] | pa.Array] = []
        for i, col in enumerate(columns):
            block, data = column_bytes(arrays[i], col, fields[i], valid[i])
            run = runs[-1] if runs else None
            if isinstance(run, list):
                run.append(block)
            else:
                runs.append([block])
            if data is not None:
                runs.append(data)
        pieces = [_binary(run) if isinstance(run, list) else run for run in runs]
        self.values = join_rows(pieces) if pieces else pa.array([b""] * n, pa.large_binary())
        self.nbytes = int(self.values.nbytes + self.nulls.nbytes)

    def packets(self, seq: int) -> tuple[bytes, int] | None:
        """The row packets numbered from ``seq``, and the next packet number; None when a row would
        span packets."""
        n, ncols = self.nulls.shape
        if n == 0:
            return b"", seq
        nulls = np.zeros((n, ncols + 2), dtype=bool)
        nulls[:, 2:] = self.nulls
        bitmap = np.packbits(nulls, axis=1, bitorder="little")
        size = 1 + bitmap.shape[1] + np.diff(row_offsets(self.values))
        if size.max() >= MAX_PACKET:  # a row that would span packets: not encoded
            return None
        width = 5 + bitmap.shape[1]
        head = np.empty((n, width), dtype=np.uint8)
        head[:, 0], head[:, 1], head[:, 2] = size & 0xFF, (size >> 8) & 0xFF, (size >> 16) & 0xFF
        head[:, 3] = (seq + np.arange(n)) % 256
        head[:, 4] = 0
        head[:, 5:] = bitmap
        heads = pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(np.arange(n + 1, dtype=np.int64) * width),
                                                             pa.py_buffer(head.tobytes())])
        rows = join_rows([heads, self.values])
        data, offsets = rows.buffers()[2], row_offsets(rows)
        return bytes(memoryview(data)[int(offsets[0]):int(offsets[-1])]), (seq + n) % 256


def param_types(columns: Sequence[dict[str, Any]], fields: Sequence[tuple[int, int]]) -> bytes:
    """One row's (parameter type, flags) pairs for ``BinaryRows`` values: the type whose encoding is
    the declared column type's (an INT24 or YEAR value is a LONG or SHORT one; BIT(M) goes as bytes,
    stored as a bit value; texts are STRING, converted from the client character set, bytes BLOB)."""
    out = bytearray()
    for col, (type_code, _length) in zip(columns, fields, strict=True):
        flags = 0
        if type_code in INT_WIDTH:
            code = {1: T_TINY, 2: T_SHORT, 4: T_LONG, 8: T_LONGLONG}[INT_WIDTH[type_code]]
            flags = UNSIGNED if col["kind"] == "uint" else 0
        elif type_code in (T_FLOAT, T_DOUBLE, T_NEWDECIMAL, T_TIME) or type_code in DATE_TYPES:
            code = type_code
        elif type_code == T_BIT or col["kind"] == "binary":
            code = TYPE_BLOB
        else:
            code = TYPE_STRING
        out += bytes((code, flags))
    return bytes(out)


def row_packets(batch: pa.RecordBatch, columns: Sequence[dict[str, Any]], fields: Sequence[tuple[int, int]],
                seq: int) -> tuple[bytes, int] | None:
    """The binary row packets of ``batch`` numbered from ``seq``, and the next packet number; None when
    a column is not encoded (``encodable``) or a row would span packets."""
    if not encodable(columns, fields):
        return None
    return BinaryRows(batch, columns, fields).packets(seq)
