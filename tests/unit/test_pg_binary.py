"""The binary COPY encoding of MySQL part columns (formats/pg_binary.py): the exact bytes of a row."""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal

import pyarrow as pa
import pytest

from backupctl.formats.pg_binary import HEADER, TRAILER, BinaryCopy


def test_one_row_is_each_types_own_bytes() -> None:
    stored = [{"kind": "int"}, {"kind": "time"}, {"kind": "timestamp"}, {"kind": "uint"}, {"kind": "string"},
              {"kind": "binary"}, {"kind": "date"}]
    copy = BinaryCopy.plan(stored, ["BOOLEAN", "BIGINT", "TIMESTAMPTZ", "DECIMAL(20,0)", "VARCHAR(8)", "BYTEA",
                                    "DATE"])
    assert copy is not None
    batch = pa.record_batch([
        pa.array([2], pa.int8()),  # TINYINT(1) 2 -> true, as the staging path's (x <> 0)
        pa.array([dt.timedelta(hours=-838)], pa.duration("us")),  # TIME -> signed microseconds
        pa.array([dt.datetime(2000, 1, 1, 0, 0, 1)], pa.timestamp("us", tz="UTC")),
        pa.array([18446744073709551615], pa.uint64()),
        pa.array(["é"]),
        pa.array([b"\x00\xff"]),
        pa.array([None], pa.date32()),
    ], names=[f"x{i}" for i in range(7)])
    s = copy.stream()
    assert s.header() == HEADER
    data = s.encode(batch) + s.finish()
    assert data.endswith(TRAILER)
    row = data[:-2]
    want = struct.pack(">h", 7)
    want += struct.pack(">i?", 1, True)
    want += struct.pack(">iq", 8, -838 * 3600 * 1_000_000)
    want += struct.pack(">iq", 8, 1_000_000)  # microseconds since 2000-01-01 UTC
    # numeric: 5 base-10000 digits 1844 6744 0737 0955 1615, weight 4, positive, scale 0
    want += struct.pack(">ihhhh5h", 18, 5, 4, 0, 0, 1844, 6744, 737, 955, 1615)
    want += struct.pack(">i", 2) + "é".encode()
    want += struct.pack(">i", 2) + b"\x00\xff"
    want += struct.pack(">i", -1)  # NULL
    assert row == want


def test_casts_are_exact_or_refused() -> None:
    copy = BinaryCopy.plan([{"kind": "decimal"}, {"kind": "bit"}], ["DECIMAL(4,2)", "BIGINT"])
    assert copy is not None
    ok = pa.record_batch([pa.array([Decimal("12.34")], pa.decimal256(4, 2)), pa.array([2**63 - 1], pa.uint64())],
                         names=["a", "b"])
    s = copy.stream()
    s.header()
    assert s.encode(ok) == b""  # buffered until finish()
    assert s.finish().endswith(TRAILER)
    too_big = pa.record_batch([pa.array([Decimal("12.34")], pa.decimal256(4, 2)), pa.array([2**63], pa.uint64())],
                              names=["a", "b"])
    s = copy.stream()
    s.header()
    with pytest.raises(pa.ArrowInvalid):  # BIT(64) 2^63 does not fit BIGINT: never wrapped
        s.encode(too_big)
    assert BinaryCopy.plan([{"kind": "string"}], ["TEXT"]) is None  # not a type the stand-in plan uses
