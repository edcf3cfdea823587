"""Prepared-INSERT parameters (formats/mysql_params.py): the exact COM_STMT_EXECUTE payload of rows."""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal

import pyarrow as pa
import pytest

from backupctl.formats.mysql_params import ParamRows, lenenc_prefixes


def lenenc(b: bytes) -> bytes:
    n = len(b)
    if n < 251:
        return bytes([n]) + b
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n) + b
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3] + b
    return b"\xfe" + struct.pack("<Q", n) + b


COLUMNS = [{"name": "i", "kind": "int"}, {"name": "u", "kind": "uint"}, {"name": "d", "kind": "float64"},
           {"name": "f", "kind": "float32"}, {"name": "dec", "kind": "decimal", "scale": 3},
           {"name": "s", "kind": "string"}, {"name": "b", "kind": "binary"}, {"name": "dd", "kind": "date"},
           {"name": "dt", "kind": "datetime"}, {"name": "ts", "kind": "timestamp"}, {"name": "tm", "kind": "time"},
           {"name": "bit", "kind": "bit"}, {"name": "y", "kind": "year"}]


def batch() -> pa.RecordBatch:
    return pa.record_batch([
        pa.array([-5, None], pa.int32()),
        pa.array([18446744073709551615, 0], pa.uint64()),
        pa.array([-1.7976931348623157e308, None], pa.float64()),
        pa.array([3.4028234663852886e38, 0.1], pa.float32()),
        pa.array([Decimal("-12.050"), None], pa.decimal256(10, 3)),
        pa.array(["é😀", ""]),
        pa.array([b"\x00'\"\\", None], pa.binary()),
        pa.array([dt.date(1000, 1, 1), dt.date(9999, 12, 31)], pa.date32()),
        pa.array([dt.datetime(2020, 1, 2, 3, 4, 5, 6), None], pa.timestamp("us")),
        pa.array([dt.datetime(1970, 1, 1, 0, 0, 1), None], pa.timestamp("us", tz="UTC")),
        pa.array([dt.timedelta(hours=-838, minutes=-59, seconds=-59), dt.timedelta(hours=25)], pa.duration("us")),
        pa.array([None, 255], pa.uint64()),
        pa.array([1901, 0], pa.int16()),
    ], names=[c["name"] for c in COLUMNS])


def test_rows_are_each_types_own_bytes_and_nulls_are_bits() -> None:
    rows = ParamRows(batch(), COLUMNS)
    payload = rows.payload(7, 0, 2)
    head = struct.pack("<IBI", 7, 0, 1)
    # parameters row-major: row 0's 13 then row 1's; NULLs: row 0 bit (11), row 1 i (13+0), d (13+2),
    # dec (13+4), b (13+6), dt (13+8), ts (13+9)
    nulls = [11, 13, 15, 17, 19, 21, 22]
    bits = bytearray(4)
    for i in nulls:
        bits[i // 8] |= 1 << (i % 8)
    types = bytes([8, 0, 8, 0x80, 5, 0, 4, 0, 0xFE, 0, 0xFE, 0, 0xFC, 0, 0xFE, 0, 0xFE, 0, 0xFE, 0, 0xFE, 0,
                   8, 0x80, 8, 0]) * 2
    row0 = (struct.pack("<q", -5) + struct.pack("<Q", 18446744073709551615) + struct.pack("<d", -1.7976931348623157e308)
            + struct.pack("<f", 3.4028234663852886e38) + lenenc(b"-12.050") + lenenc("é😀".encode())
            + lenenc(b"\x00'\"\\") + lenenc(b"1000-01-01") + lenenc(b"2020-01-02 03:04:05.000006")
            + lenenc(b"1970-01-01 00:00:01.000000") + lenenc(b"-838:59:59.000000") + struct.pack("<q", 1901))
    row1 = (struct.pack("<Q", 0) + struct.pack("<f", 0.1) + lenenc(b"") + lenenc(b"9999-12-31")
            + lenenc(b"25:00:00.000000") + struct.pack("<Q", 255) + struct.pack("<q", 0))
    assert payload == head + bytes(bits) + b"\x01" + types + row0 + row1
    assert rows.payload_bytes(0, 2) == len(payload)
    # a statement of the second row alone
    one = rows.payload(9, 1, 1)
    bits1 = bytearray(2)
    for i in (0, 2, 4, 6, 8, 9):
        bits1[i // 8] |= 1 << (i % 8)
    assert one == struct.pack("<IBI", 9, 0, 1) + bytes(bits1) + b"\x01" + types[:26] + row1


@pytest.mark.parametrize("n", [0, 1, 250, 251, 65535, 65536, (1 << 24) - 1, 1 << 24])
def test_length_prefixes_are_mysql_length_encoded_integers(n: int) -> None:
    import numpy as np

    got = lenenc_prefixes(np.array([n, 3], dtype=np.int64), np.array([True, True])).to_pylist()
    assert got == [lenenc(b"x" * n)[: len(lenenc(b"x" * n)) - n], b"\x03"]
    assert lenenc_prefixes(np.array([n], dtype=np.int64), np.array([False])).to_pylist() == [b""]
