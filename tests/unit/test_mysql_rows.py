"""The text-protocol row packets of a batch (formats/mysql_rows.py): exact bytes, as a server sends them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa

from backupctl.formats.mysql_rows import encodable, row_packets

COLUMNS = [{"name": "i", "kind": "int", "column_type": "bigint(20)"},
           {"name": "dec", "kind": "decimal", "column_type": "decimal(10,3)", "scale": 3},
           {"name": "d", "kind": "float64", "column_type": "double"},
           {"name": "f", "kind": "float32", "column_type": "float"},
           {"name": "dt0", "kind": "datetime", "column_type": "datetime"},
           {"name": "ts3", "kind": "timestamp", "column_type": "timestamp(3)"},
           {"name": "tm", "kind": "time", "column_type": "time(6)"},
           {"name": "y", "kind": "year", "column_type": "year(4)"},
           {"name": "dd", "kind": "date", "column_type": "date"},
           {"name": "s", "kind": "string", "column_type": "varchar(300)"},
           {"name": "b", "kind": "binary", "column_type": "varbinary(8)"}]


def lenenc(b: bytes) -> bytes:
    return (bytes([len(b)]) if len(b) < 251 else b"\xfc" + len(b).to_bytes(2, "little")) + b


def packet(seq: int, values: list[bytes | None]) -> bytes:
    payload = b"".join(b"\xfb" if v is None else lenenc(v) for v in values)
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def test_rows_are_the_packets_a_server_sends() -> None:
    batch = pa.record_batch([
        pa.array([-5, None], pa.int64()),
        pa.array([Decimal("-12.050"), Decimal("0.000")], pa.decimal256(10, 3)),
        pa.array([1e16, -4165.12275502563], pa.float64()),
        pa.array([0.1, None], pa.float32()),
        pa.array([dt.datetime(2020, 1, 2, 3, 4, 5), None], pa.timestamp("us")),
        pa.array([dt.datetime(1970, 1, 1, 0, 0, 1, 500000), None], pa.timestamp("us", tz="UTC")),
        pa.array([dt.timedelta(seconds=-1.5), dt.timedelta(hours=838, minutes=59, seconds=59)], pa.duration("us")),
        pa.array([0, 2155], pa.int16()),
        pa.array([dt.date(1000, 1, 1), None], pa.date32()),
        pa.array(["é😀", "x" * 260]),
        pa.array([b"\x00\xff", b""], pa.binary()),
    ], names=[c["name"] for c in COLUMNS])
    got, nxt = row_packets(batch, COLUMNS, 255)
    want = packet(255, [b"-5", b"-12.050", b"1e16", b"0.10000000149011612", b"2020-01-02 03:04:05",
                        b"1970-01-01 00:00:01.500", b"-00:00:01.500000", b"0000", b"1000-01-01", "é😀".encode(),
                        b"\x00\xff"])
    want += packet(0, [None, b"0.000", b"-4165.12275502563", None, None, None, b"838:59:59.000000", b"2155", None,
                       b"x" * 260, b""])
    assert got == want and nxt == 1


def test_bit_columns_are_not_encoded() -> None:
    assert encodable(COLUMNS)
    assert not encodable([*COLUMNS, {"name": "b1", "kind": "bit", "column_type": "bit(1)"}])
