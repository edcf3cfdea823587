"""Arrow record batches -> the text-protocol row packets a MySQL server sends for them.

A restore proves each part's key range by reading it back (docs/adr/0015). Fetched through the
driver, 1M rows cost ~1.4 client CPU-s: a Python object per value (0.73 s), those objects into
Arrow (0.5 s), text parsed into typed arrays (0.2 s). The server's reply is a byte stream fixed by
the values: one packet per row (3-byte length, packet number), each value as a length-encoded
string of its text form, 0xFB for NULL. ``row_packets`` builds that stream from the part's own
batches with Arrow kernels and numpy; the restore compares it with the bytes read off the socket
(``mysql_conn.RawRows``) — equal streams, then the reply's end, mean the range holds exactly the
part's rows (docs/adr/0021).

The text forms (connection character set utf8mb4, session time zone UTC; the SELECT is
``parquet.select_expr``'s):

    int, uint            decimal digits
    year                 four digits
    decimal(p,s)         plain, s digits after the point
    float32, float64     shortest round-trip digits (Arrow's), exponent without '+' (FLOAT is
                         selected as ``col + 0e0``, a double)
    date                 YYYY-MM-DD
    datetime/timestamp(n), time(n)   n fraction digits, none and no point for n = 0
    string, json         the UTF-8 text
    binary               the bytes

A form the server prints otherwise (a year before 1000, an exponent Arrow writes differently, JSON
a MySQL server normalises) only makes the streams differ: the restore then compares values as
before. BIT columns (raw bytes of the value) are not encoded: ``encodable`` is False.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backupctl.formats.mysql_params import join_rows, lenenc_values, row_offsets
from backupctl.formats.parquet import _plain_decimal

STREAM_KINDS = {"int", "uint", "year", "decimal", "float32", "float64", "date", "datetime", "timestamp", "time",
                "string", "json", "binary"}
MAX_PAYLOAD = 0xFFFFFF  # a row of this many bytes or more spans packets: not encoded
NULL = 0xFB

_FRACTION = re.compile(r"\((\d)\)")


def encodable(columns: Sequence[dict[str, Any]]) -> bool:
    """Whether every column's server text form is encoded here."""
    return all(c["kind"] in STREAM_KINDS for c in columns)


def _fraction_digits(col: dict[str, Any]) -> int:
    m = _FRACTION.search(str(col.get("column_type") or ""))
    return int(m.group(1)) if m else 0


def _cut_fraction(text: pa.Array, col: dict[str, Any]) -> pa.Array:
    """Texts ending in 6 fraction digits cut to the column's declared digits (no point for none)."""
    n = _fraction_digits(col)
    return text if n == 6 else pc.utf8_slice_codeunits(text, 0, -(6 - n) if n else -7)


def _time_texts(arr: pa.Array) -> pa.Array:
    """TIME values as ``[-]HH:MM:SS.ffffff`` (hours at least two digits, up to 838)."""
    us = pc.cast(arr.view(pa.int64()), pa.int64())
    mag = pc.abs(us)
    sec = pc.divide(mag, 1_000_000)

    def two(v: pa.Array) -> pa.Array:
        return pc.utf8_lpad(pc.cast(v, pa.string()), 2, "0")

    hours, minutes, seconds = pc.divide(sec, 3600), pc.remainder(pc.divide(sec, 60), 60), pc.remainder(sec, 60)
    frac = pc.utf8_lpad(pc.cast(pc.remainder(mag, 1_000_000), pa.string()), 6, "0")
    sign = pc.if_else(pc.less(us, 0), "-", "")
    return pc.binary_join_element_wise(sign, two(hours), ":", two(minutes), ":", two(seconds), ".", frac, "")


def server_texts(arr: pa.Array, col: dict[str, Any]) -> pa.Array:
    """One column's values as the server's text forms (binary; nulls stay null)."""
    kind = col["kind"]
    if kind in ("int", "uint"):
        text = pc.cast(arr, pa.string())
    elif kind == "year":
        text = pc.utf8_lpad(pc.cast(arr, pa.string()), 4, "0")
    elif kind == "decimal":
        text = _plain_decimal(arr, int(col.get("scale") or 0))
    elif kind in ("float32", "float64"):
        text = pc.replace_substring(pc.cast(pc.cast(arr, pa.float64()), pa.string()), "e+", "e")
    elif kind == "date":
        text = pc.cast(arr, pa.string())
    elif kind in ("datetime", "timestamp"):
        text = _cut_fraction(pc.cast(arr.view(pa.timestamp("us")), pa.string()), col)
    elif kind == "time":
        text = _cut_fraction(_time_texts(arr), col)
    elif kind in ("string", "json", "binary"):
        text = arr
    else:
        raise ValueError(f"no server text form for kind {kind}")
    return text.cast(pa.large_binary())


def row_packets(batch: pa.RecordBatch, columns: Sequence[dict[str, Any]], seq: int) -> tuple[bytes, int] | None:
    """The row packets of ``batch`` numbered from ``seq``, and the next packet number; None when a row
    would span packets."""
    n = batch.num_rows
    if n == 0:
        return b"", seq
    pieces: list[pa.Array] = []
    for i, col in enumerate(columns):
        pieces += lenenc_values(server_texts(batch.column(i), col), NULL)
    # Each row's payload length from the pieces' offsets, so that the packet headers join the values
    # in one pass (a second join of the whole payload cost ~0.3 CPU-s per 1M rows).
    size = np.zeros(n, dtype=np.int64)
    for piece in pieces:
        size += np.diff(row_offsets(piece))
    if size.max() >= MAX_PAYLOAD:
        return None
    head = np.empty((n, 4), dtype=np.uint8)
    head[:, 0], head[:, 1], head[:, 2] = size & 0xFF, (size >> 8) & 0xFF, (size >> 16) & 0xFF
    head[:, 3] = (seq + np.arange(n)) % 256
    heads = pa.Array.from_buffers(pa.binary(4), n, [None, pa.py_buffer(head.tobytes())]).cast(pa.large_binary())
    packets = join_rows([heads, *pieces])
    data, offsets = packets.buffers()[2], row_offsets(packets)
    return bytes(memoryview(data)[int(offsets[0]):int(offsets[-1])]), (seq + n) % 256
