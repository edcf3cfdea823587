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
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pyarrow as pa

from backupctl.errors import FormatError
from backupctl.formats.mysql_params import MAX_PACKET

_mysqltext: ModuleType | None
try:  # the same split in one C pass (formats/_mysqltext.c, docs/adr/0024)
    from backupctl.formats import _mysqltext
except ImportError:  # not built: numpy below
    _mysqltext = None

NULL = 0xFB


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
