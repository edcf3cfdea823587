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

from backupctl.formats.mysql_params import join_rows, lenenc_values, row_offsets
from backupctl.formats.parquet import _plain_decimal

MAX_PAYLOAD = 0xFFFFFF  # a row of this many bytes or more spans packets: not encoded

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


def _rows_of(matrix: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """Row i of a uint8 matrix cut to its first ``lengths[i]`` bytes, as a binary array."""
    keep = np.arange(matrix.shape[1])[None, :] < lengths[:, None]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.ascontiguousarray(matrix[keep])
    return pa.Array.from_buffers(pa.large_binary(), len(lengths),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(data.tobytes())])


def _le(matrix: np.ndarray, at: int, values: np.ndarray, width: int) -> None:
    """``values`` little-endian into ``width`` columns of ``matrix`` from column ``at``."""
    matrix[:, at:at + width] = values.astype(f"<u{width}").view(np.uint8).reshape(-1, width)


def _datetimes(arr: pa.Array, type_code: int) -> pa.Array:
    """DATE/DATETIME/TIMESTAMP values as the server's length-prefixed structs."""
    if type_code == T_DATE or pa.types.is_date(arr.type):
        days = _numbers(arr.cast(pa.date32()).view(pa.int32()), np.int64)
        us = days * 86_400_000_000
    else:
        us = _numbers(arr.view(pa.int64()), np.int64)
    day = us // 86_400_000_000
    tod = us - day * 86_400_000_000
    d = day.astype("datetime64[D]")
    y = d.astype("datetime64[Y]")
    m = d.astype("datetime64[M]")
    year = y.astype(np.int64) + 1970
    month = (m - y.astype("datetime64[M]")).astype(np.int64) + 1
    mday = (d - m.astype("datetime64[D]")).astype(np.int64) + 1
    sec, frac = tod // 1_000_000, tod % 1_000_000
    hour, minute, second = sec // 3600, sec // 60 % 60, sec % 60
    n = len(us)
    out = np.zeros((n, 12), dtype=np.uint8)
    _le(out, 1, year, 2)
    out[:, 3], out[:, 4], out[:, 5], out[:, 6], out[:, 7] = month, mday, hour, minute, second
    _le(out, 8, frac, 4)
    length = np.where(frac != 0, 11, np.where((hour | minute | second) != 0, 7, 4))
    out[:, 0] = length
    return _rows_of(out, np.where(_valid(arr), length + 1, 0))


def _times(arr: pa.Array) -> pa.Array:
    """TIME values (signed microseconds) as the server's length-prefixed structs."""
    us = _numbers(arr.view(pa.int64()), np.int64)
    mag = np.abs(us)
    sec, frac = mag // 1_000_000, mag % 1_000_000
    days, hour, minute, second = sec // 86_400, sec // 3600 % 24, sec // 60 % 60, sec % 60
    n = len(us)
    out = np.zeros((n, 13), dtype=np.uint8)
    out[:, 1] = us < 0
    _le(out, 2, days, 4)
    out[:, 6], out[:, 7], out[:, 8] = hour, minute, second
    _le(out, 9, frac, 4)
    length = np.where(frac != 0, 12, np.where((days | hour | minute | second) != 0, 8, 0))
    out[:, 0] = length
    return _rows_of(out, np.where(_valid(arr), length + 1, 0))


def _bits(arr: pa.Array, nbits: int) -> list[pa.Array]:
    """BIT(M) values as length-encoded big-endian bytes, (M + 7) // 8 of them."""
    width = max(1, (nbits + 7) // 8)
    valid = _valid(arr)
    be = _numbers(arr, np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - width:]
    out = np.concatenate([np.full((len(valid), 1), width, dtype=np.uint8), be], axis=1)
    return [_rows_of(out, np.where(valid, width + 1, 0))]


def column_values(arr: pa.Array, col: dict[str, Any], field: tuple[int, int]) -> list[pa.Array]:
    """One column's values in a binary row (a NULL's entry empty), as arrays to join per row."""
    type_code, length = field
    arr = _plain(arr)
    if type_code in INT_WIDTH:
        width = INT_WIDTH[type_code]
        signed = col["kind"] != "uint"
        values = _numbers(arr, np.int64 if signed else np.uint64).astype(f"<u{width}")
        return [_rows_of(values.view(np.uint8).reshape(-1, width), np.where(_valid(arr), width, 0))]
    if type_code in (T_FLOAT, T_DOUBLE):
        dtype = "<f4" if type_code == T_FLOAT else "<f8"
        values = _numbers(arr, np.float64).astype(dtype)
        width = values.dtype.itemsize
        return [_rows_of(values.view(np.uint8).reshape(-1, width), np.where(_valid(arr), width, 0))]
    if type_code in DATE_TYPES:
        return [_datetimes(arr, type_code)]
    if type_code == T_TIME:
        return [_times(arr)]
    if type_code == T_NEWDECIMAL:
        return lenenc_values(_plain_decimal(arr, int(col.get("scale") or 0)))
    if type_code == T_BIT:
        return _bits(arr, length)
    return lenenc_values(arr)


def row_packets(batch: pa.RecordBatch, columns: Sequence[dict[str, Any]], fields: Sequence[tuple[int, int]],
                seq: int) -> tuple[bytes, int] | None:
    """The binary row packets of ``batch`` numbered from ``seq``, and the next packet number; None when
    a column is not encoded (``encodable``) or a row would span packets."""
    n = batch.num_rows
    if not encodable(columns, fields):
        return None
    if n == 0:
        return b"", seq
    pieces: list[pa.Array] = []
    for i, col in enumerate(columns):
        pieces += column_values(batch.column(i), col, fields[i])
    nulls = np.zeros((n, len(columns) + 2), dtype=bool)
    for i in range(len(columns)):
        nulls[:, i + 2] = ~_valid(_plain(batch.column(i)))
    bitmap = np.packbits(nulls, axis=1, bitorder="little")
    # Each row's payload length from the pieces' offsets, so that the headers join the values in one pass.
    size = np.full(n, 1 + bitmap.shape[1], dtype=np.int64)
    for piece in pieces:
        size += np.diff(row_offsets(piece))
    if size.max() >= MAX_PAYLOAD:
        return None
    head = np.empty((n, 5 + bitmap.shape[1]), dtype=np.uint8)
    head[:, 0], head[:, 1], head[:, 2] = size & 0xFF, (size >> 8) & 0xFF, (size >> 16) & 0xFF
    head[:, 3] = (seq + np.arange(n)) % 256
    head[:, 4] = 0
    head[:, 5:] = bitmap
    heads = pa.Array.from_buffers(pa.binary(head.shape[1]), n, [None, pa.py_buffer(head.tobytes())])
    packets = join_rows([heads.cast(pa.large_binary()), *pieces])
    data, offsets = packets.buffers()[2], row_offsets(packets)
    return bytes(memoryview(data)[int(offsets[0]):int(offsets[-1])]), (seq + n) % 256
