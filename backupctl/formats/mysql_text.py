"""Text-protocol row packets, read raw (``mysql_conn.TextRows``) -> one Arrow binary array per column.

A snapshot reads a table as the server's text rows. Fetched through a driver, each value becomes a
Python object first (mysqlclient: ~1.5-2 us a row of the bench table, then ~0.75 us into Arrow). Here
the packets stay one buffer: a row packet is

    3-byte length | packet number | per column: length-encoded string of its text, or 0xFB for NULL

and with every row's start known, the columns are walked for all rows at once (numpy: the prefix
byte, the 2-, 3- or 8-byte length after 0xFC/0xFD/0xFE). The buffer is then cut into segments at
every value's start and end — [header and first prefix][value 0][prefix 1][value 1]... — and each
column's values are taken from those segments by index (``pc.take``: Arrow copies them in C++).
The arrays hold the server's bytes exactly; ``parquet.raw_column`` turns them into typed columns as
before (docs/adr/0022).

Where the C module is built, bulk reads take a prepared SELECT's binary rows instead (``binary_codes``,
``binary_batch``; docs/adr/0025): the server sends integers, doubles, dates and times as stored, and
those become column buffers without a text cast. The text path is the fallback.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backupctl.errors import FormatError
from backupctl.formats.mysql_params import MAX_PACKET
from backupctl.formats.parquet import arrow_type, raw_column

_mysqltext: ModuleType | None
try:  # the same split in one C pass (formats/_mysqltext.c, docs/adr/0024)
    from backupctl.formats import _mysqltext
except ImportError:  # not built: numpy below
    _mysqltext = None

NULL = 0xFB
BINARY_SPLIT = _mysqltext is not None  # binary rows are split in C only (the text rows are the fallback)


def packet_starts(buf: bytearray, pos: int, starts: list[int]) -> int:
    """Append to ``starts`` the start of every whole packet header from ``pos`` (while ``pos <= len - 4``);
    the position after the last one (past the end when its payload has not all arrived)."""
    if _mysqltext is not None:  # the same loop in C (formats/_mysqltext.c)
        return _mysqltext.packet_starts(buf, pos, starts)
    limit = len(buf) - 4
    while pos <= limit:
        starts.append(pos)
        pos += 4 + (buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16)
    return pos


def text_columns(data: bytes, starts: np.ndarray, ncols: int) -> list[pa.Array]:
    """The binary array of each of ``ncols`` columns of the row packets starting at ``starts`` in
    ``data`` (NULLs null). A row whose values do not end where its packet does is a FormatError.
    A row longer than a packet comes alone, its payloads joined (``mysql_conn.TextRows``)."""
    if _mysqltext is not None and ncols > 0:
        try:
            split = _mysqltext.split_columns(data, np.ascontiguousarray(starts, dtype=np.int64), ncols)
        except ValueError as e:
            raise FormatError(str(e)) from e
        n = len(starts)
        return [pa.Array.from_buffers(pa.binary(), n, [None if validity is None else pa.py_buffer(validity),
                                                       pa.py_buffer(offsets), pa.py_buffer(values)],
                                      null_count=nulls)
                for validity, nulls, offsets, values in split]
    return numpy_text_columns(data, starts, ncols)


# A prepared SELECT's result column types (``FIELD_TYPE`` codes) -> ``split_binary``'s code for the column.
_VAR_TYPES = frozenset({0, 15, 16, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254})  # sent as length-encoded bytes
_INT_TYPES = {1: (1,), 2: (2,), 4: (3, 9), 8: (8,)}  # width -> TINY; SHORT; LONG, INT24; LONGLONG
_FIXED_KINDS = {"float64": (8, (5,)), "float32": (8, (5,)), "year": (2, (13,))}  # FLOAT is read as ``col + 0e0``
_TEMPORAL_KINDS = {"date": (b"D", (10, 14)), "datetime": (b"T", (12,)), "timestamp": (b"T", (7,)), "time": (b"M", (11,))}
_VAR_KINDS = frozenset({"decimal", "string", "json", "binary", "bit"})


def binary_codes(columns: list[dict[str, Any]], declared: list[tuple[int, int]]) -> bytes | None:
    """``split_binary``'s code for each column, from its kind and the type the server declared for it in
    the prepare reply; None when one is not the type expected (the caller reads text rows instead)."""
    if _mysqltext is None or len(columns) != len(declared) or not columns:
        return None
    codes = bytearray()
    for col, (code, _length) in zip(columns, declared, strict=True):
        kind = col["kind"]
        if kind in _VAR_KINDS and code in _VAR_TYPES:
            codes.append(0)
        elif kind in ("int", "uint") and code in _INT_TYPES.get(width := arrow_type(col).bit_width // 8, ()):
            codes.append(width)
        elif kind in _FIXED_KINDS and code in _FIXED_KINDS[kind][1]:
            codes.append(_FIXED_KINDS[kind][0])
        elif kind in _TEMPORAL_KINDS and code in _TEMPORAL_KINDS[kind][1]:
            codes += _TEMPORAL_KINDS[kind][0]
        else:
            return None
    return bytes(codes)


def binary_batch(data: bytes, starts: np.ndarray, codes: bytes, columns: list[dict[str, Any]],
                 schema: pa.Schema) -> pa.RecordBatch:
    """The typed record batch of the binary row packets starting at ``starts`` (``split_binary``, C only):
    fixed-size values are the column's buffer as they arrive, length-encoded ones are typed like text."""
    assert _mysqltext is not None
    try:
        split = _mysqltext.split_binary(data, np.ascontiguousarray(starts, dtype=np.int64), codes)
    except ValueError as e:
        raise FormatError(str(e)) from e
    n = len(starts)
    arrays = []
    for col, (validity, nulls, offsets, values) in zip(columns, split, strict=True):
        bits = None if validity is None else pa.py_buffer(validity)
        if offsets is not None:
            raw = pa.Array.from_buffers(pa.binary(), n, [bits, pa.py_buffer(offsets), pa.py_buffer(values)],
                                        null_count=nulls)
            arrays.append(raw_column(raw, col))
        elif col["kind"] == "float32":  # the double of ``col + 0e0``, exactly the FLOAT
            doubles = pa.Array.from_buffers(pa.float64(), n, [bits, pa.py_buffer(values)], null_count=nulls)
            arrays.append(pc.cast(doubles, pa.float32(), safe=False))
        else:
            arrays.append(pa.Array.from_buffers(arrow_type(col), n, [bits, pa.py_buffer(values)], null_count=nulls))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def numpy_text_columns(data: bytes, starts: np.ndarray, ncols: int) -> list[pa.Array]:
    """``text_columns`` with numpy (where the C module is not built; the reference its tests compare with)."""
    n = len(starts)
    buf = np.frombuffer(data, dtype=np.uint8)
    lengths = buf[starts] | buf[starts + 1].astype(np.int64) << 8 | buf[starts + 2].astype(np.int64) << 16
    # a header saying MAX_PACKET is a long row's (mysql_conn.TextRows joins its packets): the whole chunk
    ends = np.where(lengths == MAX_PACKET, len(data), starts + 4 + lengths)
    bounds = np.empty((n, 2 * ncols), dtype=np.int64)  # per row: each value's prefix start, value start
    valid: list[np.ndarray] = []
    pos = starts + 4
    for j in range(ncols):
        if (pos >= ends).any():
            raise FormatError(f"a row packet of the result ends before its column {j + 1} of {ncols}")
        first = buf[pos].astype(np.int64)
        size = np.ones(n, dtype=np.int64)
        length = np.where(first < 0xFB, first, 0)
        for marker, width in ((0xFC, 2), (0xFD, 3), (0xFE, 8)):
            sel = np.flatnonzero(first == marker)
            if len(sel):
                at = pos[sel] + 1
                value = np.zeros(len(sel), dtype=np.int64)
                for b in range(width):
                    value |= buf[at + b].astype(np.int64) << (8 * b)
                length[sel], size[sel] = value, 1 + width
        if (first == 0xFF).any():
            raise FormatError(f"a row packet of the result has an invalid length in column {j + 1}")
        bounds[:, 2 * j] = pos
        bounds[:, 2 * j + 1] = pos + size
        valid.append(first != NULL)
        pos = pos + size + length
    if (pos != ends).any():
        raise FormatError(f"a row packet of the result does not hold exactly {ncols} values")
    # Segments: [row start, value 0 start), [value 0 start, prefix 1 start), ... the last value to
    # its row's end; the next row's first segment starts there.
    bounds[:, 0] = starts
    offsets = np.empty(n * 2 * ncols + 1, dtype=np.int32)  # a chunk is far below 2 GiB (max_allowed_packet <= 1 GiB)
    offsets[:-1] = bounds.ravel()
    offsets[-1] = ends[-1] if n else 0
    if n > 1 and (starts[1:] != ends[:-1]).any():  # rows are back to back in the buffer
        raise FormatError("row packets of the result are not contiguous")
    segments = pa.Array.from_buffers(pa.binary(), n * 2 * ncols,
                                     [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    base = np.arange(n, dtype=np.int64) * (2 * ncols)
    out = []
    for j in range(ncols):
        values = segments.take(pa.array(base + 2 * j + 1))
        ok = valid[j]
        if not ok.all():
            b = values.buffers()
            values = pa.Array.from_buffers(pa.binary(), n, [pa.py_buffer(np.packbits(ok, bitorder="little")),
                                                            b[1], b[2]], null_count=int(n - ok.sum()))
        out.append(values)
    return out
