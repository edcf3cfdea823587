"""The binary-protocol row packets of a batch (formats/mysql_rows.py): exact bytes, as a server sends them
for a prepared SELECT (the expected bytes here are packed value by value with ``struct``)."""

from __future__ import annotations

import datetime as dt
import struct
from decimal import Decimal

import pyarrow as pa

from backupctl.formats import mysql_rows as mr
from backupctl.formats.mysql_rows import encodable, row_packets

COLUMNS = [{"name": "i", "kind": "int", "column_type": "bigint(20)"},
           {"name": "t", "kind": "int", "column_type": "tinyint(4)"},
           {"name": "u", "kind": "uint", "column_type": "mediumint(8) unsigned"},
           {"name": "dec", "kind": "decimal", "column_type": "decimal(10,3)", "scale": 3},
           {"name": "d", "kind": "float64", "column_type": "double"},
           {"name": "f", "kind": "float32", "column_type": "float"},
           {"name": "dt0", "kind": "datetime", "column_type": "datetime"},
           {"name": "ts3", "kind": "timestamp", "column_type": "timestamp(3)"},
           {"name": "tm", "kind": "time", "column_type": "time(6)"},
           {"name": "y", "kind": "year", "column_type": "year(4)"},
           {"name": "dd", "kind": "date", "column_type": "date"},
           {"name": "s", "kind": "string", "column_type": "varchar(300)"},
           {"name": "b", "kind": "binary", "column_type": "varbinary(8)"},
           {"name": "bit", "kind": "bit", "column_type": "bit(10)"}]
FIELDS = [(mr.T_LONGLONG, 20), (mr.T_TINY, 4), (mr.T_INT24, 8), (mr.T_NEWDECIMAL, 12), (mr.T_DOUBLE, 22),
          (mr.T_DOUBLE, 22), (mr.T_DATETIME, 19), (mr.T_TIMESTAMP, 23), (mr.T_TIME, 17), (mr.T_YEAR, 4),
          (mr.T_DATE, 10), (253, 1200), (253, 8), (mr.T_BIT, 10)]


def lenenc(b: bytes) -> bytes:
    return (bytes([len(b)]) if len(b) < 251 else b"\xfc" + len(b).to_bytes(2, "little")) + b


def packet(seq: int, values: list[bytes | None]) -> bytes:
    nulls = 0
    for i, v in enumerate(values):
        if v is None:
            nulls |= 1 << (i + 2)
    bitmap = nulls.to_bytes((len(values) + 9) // 8, "little")
    payload = b"\x00" + bitmap + b"".join(v for v in values if v is not None)
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def test_rows_are_the_packets_a_server_sends() -> None:
    batch = pa.record_batch([
        pa.array([-5, None, 9223372036854775807], pa.int64()),
        pa.array([-128, 127, None], pa.int8()),
        pa.array([16777215, 0, 1], pa.uint32()),
        pa.array([Decimal("-12.050"), Decimal("0.000"), None], pa.decimal256(10, 3)),
        pa.array([1e16, -0.0, None], pa.float64()),
        pa.array([0.1, None, -3.5], pa.float32()),
        pa.array([dt.datetime(2020, 1, 2, 3, 4, 5), dt.datetime(1000, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59)],
                 pa.timestamp("us")),
        pa.array([dt.datetime(1970, 1, 1, 0, 0, 1, 500000), None, dt.datetime(1969, 12, 31, 23, 59, 59, 1000)],
                 pa.timestamp("us", tz="UTC")),
        pa.array([dt.timedelta(seconds=-1.5), dt.timedelta(hours=838, minutes=59, seconds=59), dt.timedelta(0)],
                 pa.duration("us")),
        pa.array([0, 2155, None], pa.int16()),
        pa.array([dt.date(1000, 1, 1), None, dt.date(9999, 12, 31)], pa.date32()),
        pa.array(["é😀", "x" * 260, ""]),
        pa.array([b"\x00\xff", b"", None], pa.binary()),
        pa.array([1023, 0, None], pa.uint64()),
    ], names=[c["name"] for c in COLUMNS])
    got, nxt = row_packets(batch, COLUMNS, FIELDS, 254)  # type: ignore[misc]
    want = packet(254, [struct.pack("<q", -5), struct.pack("<b", -128), struct.pack("<I", 16777215),
                        lenenc(b"-12.050"), struct.pack("<d", 1e16), struct.pack("<d", float(pa.scalar(0.1, pa.float32()).as_py())),
                        b"\x07" + struct.pack("<HBBBBB", 2020, 1, 2, 3, 4, 5),
                        b"\x0b" + struct.pack("<HBBBBBI", 1970, 1, 1, 0, 0, 1, 500000),
                        b"\x0c" + struct.pack("<BIBBBI", 1, 0, 0, 0, 1, 500000),
                        struct.pack("<H", 0), b"\x04" + struct.pack("<HBB", 1000, 1, 1),
                        lenenc("é😀".encode()), lenenc(b"\x00\xff"), lenenc(b"\x03\xff")])
    want += packet(255, [None, struct.pack("<b", 127), struct.pack("<I", 0), lenenc(b"0.000"),
                         struct.pack("<d", -0.0), None, b"\x04" + struct.pack("<HBB", 1000, 1, 1), None,
                         b"\x08" + struct.pack("<BIBBB", 0, 34, 22, 59, 59), struct.pack("<H", 2155), None,
                         lenenc(b"x" * 260), lenenc(b""), lenenc(b"\x00\x00")])
    want += packet(0, [struct.pack("<q", 9223372036854775807), None, struct.pack("<I", 1), None, None,
                       struct.pack("<d", -3.5), b"\x07" + struct.pack("<HBBBBB", 9999, 12, 31, 23, 59, 59),
                       b"\x0b" + struct.pack("<HBBBBBI", 1969, 12, 31, 23, 59, 59, 1000), b"\x00", None,
                       b"\x04" + struct.pack("<HBB", 9999, 12, 31), lenenc(b""), None, None])
    assert got == want and nxt == 1


def test_a_declared_type_not_encoded_or_not_the_kind_is_none() -> None:
    assert encodable(COLUMNS, FIELDS)
    geometry = [*FIELDS[:-1], (255, 0)]
    assert not encodable(COLUMNS, geometry)
    assert row_packets(pa.record_batch([pa.array([1], pa.int64())], names=["i"]), COLUMNS[:1], [(253, 20)], 1) is None
    assert not encodable(COLUMNS, FIELDS[:-1])  # one definition short


def test_civil_dates_match_the_calendar_over_the_whole_mysql_range() -> None:
    import numpy as np

    first, last = dt.date(1000, 1, 1), dt.date(9999, 12, 31)
    epoch = dt.date(1970, 1, 1)
    days = np.arange((first - epoch).days, (last - epoch).days + 1, dtype=np.int64)
    year, month, day = mr._civil(days)
    d = days.astype("datetime64[D]")
    assert (year == d.astype("datetime64[Y]").astype(np.int64) + 1970).all()
    assert (month == d.astype("datetime64[M]").astype(np.int64) % 12 + 1).all()
    assert (day == (d - d.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1).all()
    for probe in (first, dt.date(1582, 10, 15), dt.date(1600, 2, 29), dt.date(1900, 3, 1), dt.date(2000, 2, 29), last):
        i = (probe - first).days
        assert (int(year[i]), int(month[i]), int(day[i])) == (probe.year, probe.month, probe.day)
