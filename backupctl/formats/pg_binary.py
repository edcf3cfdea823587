"""PostgreSQL's binary COPY format, built from a MySQL part's Arrow record batches (docs/adr/0020).

The stand-in loads MySQL parts with ``COPY ... FROM STDIN (FORMAT binary)`` when every column's
PostgreSQL type is one this module encodes: the server then reads each value as the bytes of its
type (an int8 is 8 bytes, a timestamp microseconds since 2000-01-01, a numeric its base-10000
digits) instead of parsing text, which took it ~2.3x as long for the bench table (1.0 s vs 2.3 s
for 1M rows by ``psql \\copy``). Binary values are interpreted by the *column's* receive function,
so the format is only used when the target's column types are exactly the ones encoded (checked by
type OID against the catalog for a table that already exists); anything else travels as CSV.

The encoding itself is pgpq's (Rust, one pass over Arrow buffers, ~0.3 s per 1M bench rows); this
module only casts each part column to the Arrow type whose encoding is the target type's binary
form. A table loaded so is verified by reading it back in the same format and comparing the bytes
(``targets/redshift.py`` ``_readback_bytes_match``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

JSONB_OID = 3802
NUMERIC_OID = 1700
VARCHAR_OID = 1043
# PostgreSQL type -> (type OID, the Arrow type pgpq encodes as that type's binary form)
_FIXED: dict[str, tuple[int, pa.DataType]] = {
    "SMALLINT": (21, pa.int16()),
    "INTEGER": (23, pa.int32()),
    "BIGINT": (20, pa.int64()),
    "REAL": (700, pa.float32()),
    "DOUBLE PRECISION": (701, pa.float64()),
    "DATE": (1082, pa.date32()),
    "TIMESTAMP": (1114, pa.timestamp("us")),
    "TIMESTAMPTZ": (1184, pa.timestamp("us", tz="UTC")),
    "BOOLEAN": (16, pa.bool_()),
    "BYTEA": (17, pa.binary()),
    "JSONB": (JSONB_OID, pa.string()),
}
MAX_DECIMAL128 = 38
# The stream's fixed ends: signature, flags 0, no header extension; the trailer is a field count of -1.
HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
TRAILER = b"\xff\xff"
_DECIMAL_RE = re.compile(r"^DECIMAL\((\d+),(\d+)\)$")
_VARCHAR_RE = re.compile(r"^VARCHAR\(\d+\)$")


@functools.cache
def available() -> bool:
    """Whether pgpq imports here (a platform without its wheel installs backupctl only with Rust): else CSV."""
    try:
        import pgpq  # noqa: F401
    except ImportError:
        return False
    return True


def binary_type(pg_type: str) -> tuple[int, pa.DataType] | None:
    """(type OID, Arrow type) of a stand-in column type (``redshift_sql.pg_type``), or None: not encoded."""
    if not available():
        return None
    t = pg_type.upper()
    if t in _FIXED:
        return _FIXED[t]
    m = _DECIMAL_RE.match(t)
    if m and int(m.group(1)) <= MAX_DECIMAL128:
        return NUMERIC_OID, pa.decimal128(int(m.group(1)), int(m.group(2)))
    if _VARCHAR_RE.match(t):
        return VARCHAR_OID, pa.string()
    return None


def _from_part(arr: pa.Array, kind: str, want: pa.DataType) -> pa.Array:
    """A part column (``parquet.arrow_type``) as ``want``: exact, or an error (never a rounded value)."""
    if pa.types.is_boolean(want):  # TINYINT(1) -> BOOLEAN: as the staging path's ``(x <> 0)``
        return pc.not_equal(arr, 0)
    if kind == "time":  # duration[us] -> BIGINT microseconds (docs/adr/0006)
        arr = arr.view(pa.int64())
    elif kind == "timestamp":  # already UTC microseconds; TIMESTAMPTZ is the same int64
        return arr if arr.type == want else arr.view(want)
    if arr.type == want:
        return arr
    return pc.cast(arr, want, safe=True)


@dataclass
class BinaryCopy:
    """The binary COPY stream of MySQL parts into one column list (a staging table or the target)."""

    kinds: list[str]
    types: list[pa.DataType]
    jsonb: list[bool]

    @classmethod
    def plan(cls, stored: Sequence[dict[str, Any]], pg_types: Sequence[str]) -> BinaryCopy | None:
        """The encoder for part columns ``stored`` loaded into columns of ``pg_types``; None: use CSV."""
        kinds, types, jsonb = [], [], []
        for col, t in zip(stored, pg_types, strict=True):
            bt = binary_type(t)
            if bt is None:
                return None
            kinds.append(str(col["kind"]))
            types.append(bt[1])
            jsonb.append(bt[0] == JSONB_OID)
        return cls(kinds, types, jsonb)

    def __post_init__(self) -> None:
        self.schema = pa.schema([pa.field(f"c{i}", t) for i, t in enumerate(self.types)])

    def stream(self) -> BinaryStream:
        """A new COPY stream (one per COPY statement: pgpq's encoder buffers and ends once)."""
        from pgpq import ArrowToPostgresBinaryEncoder
        from pgpq.encoders import StringEncoderBuilder
        from pgpq.schema import Jsonb

        encoders = {f.name: (StringEncoderBuilder.new_with_output(f, Jsonb()) if self.jsonb[i]
                             else ArrowToPostgresBinaryEncoder.infer_encoder(f)) for i, f in enumerate(self.schema)}
        return BinaryStream(self, ArrowToPostgresBinaryEncoder.new_with_encoders(self.schema, encoders))


class BinaryStream:
    """The bytes of one binary COPY: ``header()``, then ``encode(batch)`` per batch, then ``finish()``.

    The encoder buffers (about 1 MiB): ``encode`` may return nothing, ``finish`` returns what is left
    and the trailer.
    """

    def __init__(self, copy: BinaryCopy, encoder: Any) -> None:
        self.copy = copy
        self._encoder = encoder

    def header(self) -> bytes:
        return bytes(self._encoder.write_header())

    def encode(self, batch: pa.RecordBatch) -> bytes:
        """The rows of ``batch`` (a part's, in ``parquet.arrow_type``) so far encoded (maybe none yet)."""
        c = self.copy
        arrays = [_from_part(batch.column(i), k, t) for i, (k, t) in enumerate(zip(c.kinds, c.types, strict=True))]
        return bytes(self._encoder.write_batch(pa.RecordBatch.from_arrays(arrays, schema=c.schema)))

    def finish(self) -> bytes:
        """The rows still buffered, then the trailer."""
        return bytes(self._encoder.finish())
