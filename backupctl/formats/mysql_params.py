"""Arrow record batches -> the parameter section of MySQL's ``COM_STMT_EXECUTE`` (binary protocol).

A MySQL restore into a table with an AUTO_INCREMENT column on a server whose
``innodb_autoinc_lock_mode`` is below 2 (MariaDB's default, 1) cannot run
``LOAD DATA`` statements side by side: each holds the table's AUTO-INC lock
until it ends. A multi-row ``INSERT`` is a "simple insert" and takes only the
lock's mutex, but sent as SQL text the server parses every value (measured on
the 1M-row bench table: 5.9-6.1 server CPU-s vs 3.4 for LOAD DATA). Sent as a
*prepared* multi-row INSERT of ~100 KiB, the values arrive typed and need no
parsing (2.6-3.0 server CPU-s on one connection), and loads can run side by
side (docs/adr/0021).

This module builds the execute packet's payload from Arrow columns with
numpy and Arrow kernels, no Python object per value:

    stmt_id u32 | flags u8 = 0 | iterations u32 = 1 | NULL bitmap | 1 | types | values

Each parameter is one value of one row (row-major). Types per column kind:

    int, year           LONGLONG (8 bytes, little-endian)
    uint, bit           LONGLONG with the unsigned flag
    float64 / float32   DOUBLE (8 bytes) / FLOAT (4 bytes), the stored IEEE bits
    binary              BLOB, length-encoded bytes (never converted)
    every other kind    STRING, length-encoded text as LOAD DATA reads it (``load_texts``)

A NULL value has its bit set and no bytes among the values.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backupctl.formats.parquet import load_texts

MAX_PARAMS = 65_535  # the protocol counts a statement's parameters in 16 bits
MAX_PACKET = 0xFFFFFF  # a packet's 3-byte length: a payload this long continues in the next packet

TYPE_DOUBLE = 0x05
TYPE_FLOAT = 0x04
TYPE_LONGLONG = 0x08
TYPE_BLOB = 0xFC
TYPE_STRING = 0xFE
UNSIGNED = 0x80


def param_type(col: dict[str, Any]) -> tuple[int, int]:
    """(type, flags) of a column's parameters."""
    kind = col["kind"]
    if kind in ("int", "year"):
        return TYPE_LONGLONG, 0
    if kind in ("uint", "bit"):
        return TYPE_LONGLONG, UNSIGNED
    if kind == "float64":
        return TYPE_DOUBLE, 0
    if kind == "float32":
        return TYPE_FLOAT, 0
    if kind == "binary":
        return TYPE_BLOB, 0
    return TYPE_STRING, 0


def _fixed(values: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Fixed-width little-endian values as a binary array (a NULL's entry empty)."""
    width = values.dtype.itemsize
    data = np.ascontiguousarray(values[valid]).astype(values.dtype.newbyteorder("<"), copy=False)
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(np.where(valid, width, 0), out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(data.tobytes())])


def lenenc_matrix(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The length-encoded integer of every value of ``lengths``: an (n, 9) uint8 matrix whose row i
    holds it in its first ``size[i]`` bytes (1, 3, 4 or 9), and ``size``."""
    lengths = lengths.astype(np.uint64)
    size = np.where(lengths < 251, 1, np.where(lengths < 1 << 16, 3, np.where(lengths < 1 << 24, 4, 9)))
    out = np.empty((len(lengths), 9), dtype=np.uint8)
    out[:, 0] = np.where(size == 1, lengths, np.where(size == 3, 0xFC, np.where(size == 4, 0xFD, 0xFE)))
    out[:, 1:] = lengths.astype("<u8").view(np.uint8).reshape(-1, 8)
    return out, size


def rows_of(matrix: np.ndarray, keep: np.ndarray) -> pa.Array:
    """Row i of a uint8 matrix, only the bytes ``keep[i]`` marks, as a binary array."""
    offsets = np.zeros(len(matrix) + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), len(matrix),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(matrix[keep].tobytes())])


def lenenc_prefixes(lengths: np.ndarray, valid: np.ndarray) -> pa.Array:
    """The length-encoded integer before every value of ``lengths``; for a NULL nothing (the NULL
    bitmap says it)."""
    matrix, size = lenenc_matrix(lengths)
    return rows_of(matrix, np.arange(9)[None, :] < np.where(valid, size, 0)[:, None])


def lenenc_parts(arr: pa.Array, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """A text or binary column as its length prefixes (``lenenc_matrix``'s matrix, and the bytes of
    each row used: none for a NULL) and its bytes (large_binary, a NULL empty)."""
    arr = arr.cast(pa.large_binary()) if not pa.types.is_large_binary(arr.type) else arr
    matrix, size = lenenc_matrix(pc.fill_null(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False))
    return matrix, np.where(valid, size, 0), (pc.fill_null(arr, b"") if arr.null_count else arr)


def lenenc_values(arr: pa.Array) -> list[pa.Array]:
    """A text or binary column as [length prefixes, bytes], a NULL as nothing in either."""
    matrix, used, data = lenenc_parts(arr, np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=bool))
    return [rows_of(matrix, np.arange(9)[None, :] < used[:, None]), data]


def join_rows(pieces: list[pa.Array]) -> pa.Array:
    """Per-row concatenation of equal-length large_binary arrays."""
    return pc.binary_join_element_wise(*pieces, pa.scalar(b"", pa.large_binary())) if len(pieces) > 1 else pieces[0]


def row_offsets(rows: pa.Array) -> np.ndarray:
    """The int64 offsets of a large_binary array's values in its data buffer (``len(rows) + 1`` of them)."""
    return np.frombuffer(rows.buffers()[1], dtype=np.int64)[rows.offset:rows.offset + len(rows) + 1]


def column_values(arr: pa.Array, col: dict[str, Any]) -> list[pa.Array]:
    """One column's parameter values, as binary arrays to concatenate per row."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    typ, flags = param_type(col)
    if typ in (TYPE_LONGLONG, TYPE_DOUBLE, TYPE_FLOAT):
        valid = np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=bool)
        np_type = {TYPE_DOUBLE: np.float64, TYPE_FLOAT: np.float32}.get(typ, np.uint64 if flags else np.int64)
        filled = pc.fill_null(arr, 0) if arr.null_count else arr
        values = pc.cast(filled, pa.from_numpy_dtype(np_type)).to_numpy(zero_copy_only=False)
        return [_fixed(values, valid)]
    if typ == TYPE_BLOB:
        return lenenc_values(arr)
    return lenenc_values(load_texts(arr, col))


class ParamRows:
    """A record batch encoded once; ``payload(stmt_id, start, k)`` is the execute payload of rows
    [start, start + k) for a statement of k rows' placeholders."""

    def __init__(self, batch: pa.RecordBatch, columns: Sequence[dict[str, Any]]) -> None:
        pieces: list[pa.Array] = []
        for i, col in enumerate(columns):
            pieces += column_values(batch.column(i), col)
        nulls = [np.asarray(pc.is_null(batch.column(i)).to_numpy(zero_copy_only=False), dtype=bool)
                 for i in range(len(columns))]
        self._set(join_rows(pieces), np.stack(nulls, axis=1) if nulls else np.zeros((batch.num_rows, 0), dtype=bool),
                  b"".join(struct.pack("<BB", *param_type(c)) for c in columns))

    @classmethod
    def of_values(cls, values: pa.Array, nulls: np.ndarray, types: bytes) -> ParamRows:
        """Rows already encoded: ``values`` (large_binary) holds each row's parameter values side by
        side, ``nulls`` is the (rows, columns) NULL matrix, ``types`` one row's (type, flags) pairs."""
        rows = cls.__new__(cls)
        rows._set(values, nulls, types)
        return rows

    def _set(self, values: pa.Array, nulls: np.ndarray, types: bytes) -> None:
        self.num_rows, self.ncols = nulls.shape
        self._data, self._offsets = values.buffers()[2] or pa.py_buffer(b""), row_offsets(values)
        self._nulls, self._types = nulls, types

    def row_bytes(self, start: int, k: int) -> int:
        """Bytes of the values of rows [start, start + k)."""
        return int(self._offsets[start + k] - self._offsets[start])

    def payload_bytes(self, start: int, k: int) -> int:
        """Length of ``payload`` for rows [start, start + k)."""
        return 10 + (k * self.ncols + 7) // 8 + 2 * k * self.ncols + self.row_bytes(start, k)

    def payload(self, stmt_id: int, start: int, k: int) -> bytes:
        bitmap = np.packbits(self._nulls[start:start + k].ravel(), bitorder="little").tobytes()
        lo, hi = int(self._offsets[start]), int(self._offsets[start + k])
        return b"".join((struct.pack("<IBI", stmt_id, 0, 1), bitmap, b"\x01", self._types * k,
                         memoryview(self._data)[lo:hi]))
