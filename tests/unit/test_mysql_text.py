"""Text-protocol rows read raw (mysql_conn.TextRows) and split into columns (formats/mysql_text.py): every
value's exact bytes, NULLs, each length-prefix form, rows split across reads, rows longer than a packet,
an error packet mid-result, and malformed packets refused."""

from __future__ import annotations

import io
import struct
from datetime import UTC
from types import SimpleNamespace

import numpy as np
import pymysql
import pytest

from backupctl.errors import FormatError
from backupctl.formats.mysql_text import text_columns
from backupctl.mysql_conn import MAX_PACKET, TextRows


def lenenc(v: bytes | None) -> bytes:
    if v is None:
        return b"\xfb"
    n = len(v)
    if n < 251:
        head = bytes([n])
    elif n < 1 << 16:
        head = b"\xfc" + n.to_bytes(2, "little")
    elif n < 1 << 24:
        head = b"\xfd" + n.to_bytes(3, "little")
    else:
        head = b"\xfe" + n.to_bytes(8, "little")
    return head + v


def packets(payload: bytes, seq: int) -> tuple[bytes, int]:
    """A payload as the protocol sends it: 16 MiB - 1 bytes a packet, a shorter (maybe empty) one last."""
    out = b""
    while True:
        piece, payload = payload[:MAX_PACKET], payload[MAX_PACKET:]
        out += len(piece).to_bytes(3, "little") + bytes([seq % 256]) + piece
        seq += 1
        if len(piece) < MAX_PACKET:
            return out, seq


def stream(rows: list[list[bytes | None]], tail: bytes = b"\x05\x00\x00\x00\xfe\x00\x00\x22\x00") -> bytes:
    out, seq = b"", 3
    for r in rows:
        p, seq = packets(b"".join(lenenc(v) for v in r), seq)
        out += p
    return out + tail


class FakeResult:
    unbuffered_active = True
    has_next = False


def reader(data: bytes, chunk: int) -> TextRows:
    conn = SimpleNamespace(_rfile=io.BufferedReader(io.BytesIO(data), buffer_size=7), _result=FakeResult())
    rows = TextRows(conn)  # type: ignore[arg-type]
    rows.CHUNK = chunk
    return rows


def columns(rows: TextRows, ncols: int) -> list[list[bytes | None]]:
    got: list[list[bytes | None]] = []
    for data, starts in rows.chunks():
        cols = text_columns(data, starts, ncols)
        got += [list(r) for r in zip(*(c.to_pylist() for c in cols), strict=True)]
    return got


ROWS: list[list[bytes | None]] = [
    [b"1", b"", None, b"x" * 250],
    [b"-0.5", b"\x00\xff\xfb", b"y" * 251, None],
    [None, None, None, None],
    [b"9" * 65_536, b"\xfe", b"z" * 65_535, b"\n"],
]


@pytest.mark.parametrize("chunk", [1, 100, 1 << 20])
def test_rows_split_into_exact_column_values(chunk: int) -> None:
    rows = reader(stream(ROWS * 3), chunk)
    assert columns(rows, 4) == ROWS * 3
    assert rows.conn._result is None  # the EOF packet ended the result: the connection is ready again


def test_a_row_longer_than_a_packet_is_one_row() -> None:
    big = bytes(range(256)) * ((MAX_PACKET + 300) // 256)
    exact = b"e" * (MAX_PACKET - 5)  # payload exactly one full packet: an empty packet follows it
    data = [[b"a", big], [b"b", None], [b"c", exact], [b"d", b"end"]]
    assert columns(reader(stream(data), 1 << 16), 2) == data
    # the last packet of a long row looks like an EOF packet (5 bytes from 0xFE): still part of the row
    tricky: list[bytes | None] = [b"t" * (MAX_PACKET - 5), b"\xfe\x00\x00\x02\x00"]
    assert sum(len(lenenc(v)) for v in tricky) == MAX_PACKET + 5
    for chunk in (1, 1 << 20):
        assert columns(reader(stream([tricky, [b"after", b""]]), chunk), 2) == [tricky, [b"after", b""]]


def test_an_error_packet_mid_result_raises_the_servers_error() -> None:
    err = b"\xff" + (1317).to_bytes(2, "little") + b"#70100Query execution was interrupted"
    data = stream([[b"1"], [b"2"]], tail=len(err).to_bytes(3, "little") + b"\x05" + err)
    rows = reader(data, 1 << 20)
    with pytest.raises(pymysql.err.OperationalError) as e:
        columns(rows, 1)
    assert e.value.args[0] == 1317


def test_a_connection_lost_mid_result_is_error_2013() -> None:
    rows = reader(stream([[b"1"], [b"2"]])[:-12], 1 << 20)
    with pytest.raises(pymysql.err.OperationalError) as e:
        columns(rows, 1)
    assert e.value.args[0] == 2013


def test_rows_with_another_number_of_values_are_refused() -> None:
    data = stream([[b"1", b"2"], [b"3"]])
    starts = np.array([0, 4 + 2 + 2], dtype=np.int64)
    with pytest.raises(FormatError, match="column 2 of 2"):
        text_columns(data, starts, 2)
    with pytest.raises(FormatError, match="exactly 1 values"):
        text_columns(data, starts[:1], 1)


def test_the_c_split_is_the_numpy_split() -> None:
    """``text_columns`` splits rows in C (formats/_mysqltext.c, built by the install): the same arrays as
    the numpy split for random rows (every length-prefix form up to 3 bytes, NULLs, empty values), and
    the same refusals of malformed rows; ``packet_starts`` finds the packets the Python loop finds."""
    import random

    from backupctl.formats import mysql_text

    if mysql_text._mysqltext is None:  # a skip fails the run under CI=true (tests/conftest.py)
        pytest.skip("the C row splitter (backupctl/formats/_mysqltext.c) was not built")
    c = mysql_text._mysqltext
    rng = random.Random(3)
    sizes = [0, 1, 250, 251, 252, 65_535, 65_536, 70_000]
    rows = [[None if rng.random() < 0.2 else bytes(rng.getrandbits(8) for _ in range(rng.choice(sizes[:5])))
             if rng.random() < 0.9 else b"\xfb" * rng.choice(sizes) for _ in range(5)] for _ in range(400)]
    data = stream(rows, tail=b"")
    starts, pos = [], 0
    while pos < len(data):
        starts.append(pos)
        pos += 4 + int.from_bytes(data[pos:pos + 3], "little")
    arr = np.array(starts, dtype=np.int64)
    for lo, hi in ((0, 400), (0, 1), (17, 230), (399, 400)):
        sub = data[starts[lo]:starts[hi] if hi < 400 else len(data)]
        s = arr[lo:hi] - starts[lo]
        fast, slow = text_columns(sub, s, 5), mysql_text.numpy_text_columns(sub, s, 5)
        assert [a.to_pylist() for a in fast] == [a.to_pylist() for a in slow] == [list(x) for x in zip(*rows[lo:hi], strict=True)]
        assert [a.null_count for a in fast] == [a.null_count for a in slow]
    # malformed: a value cut short, a 0xFF prefix, a missing value, rows not back to back, a start outside
    one = b"\x05\x00\x00\x01" + b"\x03abc" + b"\x00"
    bad = [(b"\x05\x00\x00\x01\x09abcd", [0], 1), (b"\x02\x00\x00\x01\xff\x00", [0], 1), (one, [0], 3),
           (one + one, [0, 10], 2), (one + one, [0, 8], 2), (one, [7], 2)]
    for buf, st, ncols in bad:
        for split in (text_columns, mysql_text.numpy_text_columns):
            with pytest.raises((FormatError, IndexError)):
                split(buf, np.array(st, dtype=np.int64), ncols)
        with pytest.raises(FormatError):
            text_columns(buf, np.array(st, dtype=np.int64), ncols)
    # packet starts, with the last packet's payload not all there yet
    for cut in (len(data), len(data) - 1, 3, 0, 4):
        got: list[int] = []
        end = c.packet_starts(bytearray(data[:cut]), 0, got)
        want, p = [], 0
        while p <= cut - 4:
            want.append(p)
            p += 4 + int.from_bytes(data[p:p + 3], "little")
        assert (got, end) == (want, p)


# -- binary rows of a prepared SELECT (formats/_mysqltext.c split_binary, mysql_text.binary_batch) --------


def binary_row(values: list[bytes | None]) -> bytes:
    """A binary result row's payload: 0x00, the NULL bitmap (offset 2), the non-NULL values as given."""
    bitmap = bytearray((len(values) + 9) // 8)
    for j, v in enumerate(values):
        if v is None:
            bitmap[(j + 2) >> 3] |= 1 << ((j + 2) & 7)
    return b"\x00" + bytes(bitmap) + b"".join(v for v in values if v is not None)


def binary_packets(rows: list[list[bytes | None]]) -> tuple[bytes, np.ndarray]:
    data, starts, seq = b"", [], 3
    for r in rows:
        starts.append(len(data))
        p, seq = packets(binary_row(r), seq)
        data += p
    return data, np.array(starts, dtype=np.int64)


def col(name: str, kind: str, data_type: str, **extra: object) -> dict[str, object]:
    return {"name": name, "kind": kind, "data_type": data_type, "column_type": data_type, "nullable": True, **extra}


BINARY_COLUMNS = [
    col("ti", "int", "tinyint"), col("su", "uint", "smallint"), col("mi", "int", "mediumint"),
    col("bu", "uint", "bigint"), col("d", "float64", "double"), col("f", "float32", "float"),
    col("yr", "year", "year"), col("dd", "date", "date"), col("dt", "datetime", "datetime"),
    col("ts", "timestamp", "timestamp"), col("tm", "time", "time"),
    col("dec", "decimal", "decimal", precision=65, scale=30), col("s", "string", "varchar"),
    col("b", "binary", "varbinary"), col("bits", "bit", "bit"), col("js", "json", "json"),
]
DECLARED = [(1, 4), (2, 6), (9, 9), (8, 20), (5, 22), (5, 22), (13, 4), (10, 10), (12, 26), (7, 26), (11, 17),
            (246, 67), (253, 400), (253, 64), (16, 64), (252, 4294967295)]


def date_struct(y: int, m: int, d: int, *rest: int, micros: int | None = None) -> bytes:
    body = y.to_bytes(2, "little") + bytes([m, d, *rest]) + (micros.to_bytes(4, "little") if micros is not None else b"")
    return bytes([len(body)]) + body


def time_struct(neg: bool, days: int, h: int, m: int, s: int, micros: int | None = None) -> bytes:
    body = bytes([neg]) + days.to_bytes(4, "little") + bytes([h, m, s]) + (
        micros.to_bytes(4, "little") if micros is not None else b"")
    return bytes([len(body)]) + body


def test_binary_rows_become_the_typed_columns_text_rows_give() -> None:
    from datetime import date, datetime, timedelta
    from decimal import Decimal

    from backupctl.formats import mysql_text
    from backupctl.formats.parquet import arrow_schema

    if mysql_text._mysqltext is None:  # a skip fails the run under CI=true (tests/conftest.py)
        pytest.skip("the C row splitter (backupctl/formats/_mysqltext.c) was not built")
    codes = mysql_text.binary_codes(BINARY_COLUMNS, DECLARED)  # type: ignore[arg-type]
    assert codes == bytes([1, 2, 4, 8, 8, 8, 2]) + b"DTTM" + bytes(5)
    extreme = [
        (-128).to_bytes(1, "little", signed=True), (65535).to_bytes(2, "little"),
        (-8388608).to_bytes(4, "little", signed=True), (2**64 - 1).to_bytes(8, "little"),
        struct.pack("<d", -1.7976931348623157e308), struct.pack("<d", 3.4028234663852886e38),
        (2155).to_bytes(2, "little"),
        date_struct(9999, 12, 31), date_struct(9999, 12, 31, 23, 59, 59, micros=999999),
        date_struct(1970, 1, 1, 0, 0, 1), time_struct(True, 34, 22, 59, 59),
        lenenc(b"-99999999999999999999999999999999999.999999999999999999999999999999"),
        lenenc("é😀".encode() * 100), lenenc(b"\x00\xff"), lenenc(b"\x80\x01"), lenenc(b'{"a": 1}'),
    ]
    small = [
        b"\x7f", b"\x00\x00", (8388607).to_bytes(4, "little"), bytes(8), struct.pack("<d", -0.0),
        struct.pack("<d", 1.1754943508222875e-38), bytes(2), date_struct(1000, 1, 1),
        date_struct(2024, 2, 29), date_struct(1000, 1, 1, 0, 0, 0, micros=1), b"\x00",
        lenenc(b"0.000000000000000000000000000001"), lenenc(b""), lenenc(b""), lenenc(b"\x00"), lenenc(b"[]"),
    ]
    fraction = list(small)
    fraction[10] = time_struct(True, 0, 0, 0, 1, micros=500000)
    fraction[9] = date_struct(2001, 2, 3)  # a DATETIME of midnight comes as 4 bytes
    rows = [extreme, small, [None] * 16, fraction]
    data, starts = binary_packets(rows)
    batch = mysql_text.binary_batch(data, starts, codes, BINARY_COLUMNS, arrow_schema(BINARY_COLUMNS))  # type: ignore[arg-type]
    got = batch.to_pylist()
    assert got[0] == {
        "ti": -128, "su": 65535, "mi": -8388608, "bu": 2**64 - 1, "d": -1.7976931348623157e308,
        "f": 3.4028234663852886e38, "yr": 2155, "dd": date(9999, 12, 31),
        "dt": datetime(9999, 12, 31, 23, 59, 59, 999999), "ts": datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC),
        "tm": -timedelta(hours=838, minutes=59, seconds=59),
        "dec": Decimal("-99999999999999999999999999999999999.999999999999999999999999999999"),
        "s": "é😀" * 100, "b": b"\x00\xff", "bits": 0x8001, "js": '{"a": 1}'}
    assert got[1]["tm"] == timedelta(0) and got[1]["dt"] == datetime(2024, 2, 29)
    assert str(got[1]["d"]) == "-0.0" and got[1]["bits"] == 0 and got[1]["s"] == "" and got[1]["b"] == b""
    assert got[1]["dd"] == date(1000, 1, 1) and got[1]["ts"] == datetime(1000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    assert got[2] == {c["name"]: None for c in BINARY_COLUMNS}  # type: ignore[misc]
    assert got[3]["tm"] == -timedelta(seconds=1, microseconds=500000) and got[3]["ts"] == datetime(2001, 2, 3, tzinfo=UTC)
    # the same rows as text, through the text path, are the same batch
    text_rows = [[None if v is None else str(v).encode() for v in r] for r in (
        ["-128", "65535", "-8388608", str(2**64 - 1), "-1.7976931348623157e308", "3.4028234663852886e38", "2155",
         "9999-12-31", "9999-12-31 23:59:59.999999", "1970-01-01 00:00:01", "-838:59:59",
         "-99999999999999999999999999999999999.999999999999999999999999999999"],
        ["127", "0", "8388607", "0", "-0", "1.1754943508222875e-38", "0", "1000-01-01", "2024-02-29 00:00:00",
         "1000-01-01 00:00:00.000001", "00:00:00", "0.000000000000000000000000000001"],
        [None] * 12,
        ["127", "0", "8388607", "0", "-0", "1.1754943508222875e-38", "0", "1000-01-01", "2024-02-29 00:00:00",
         "2001-02-03 00:00:00", "-00:00:01.500000", "0.000000000000000000000000000001"])]
    text_rows = [r + [None if v is None else v[1:] if v[:1] < b"\xfb" else v[3:] for v in tail]
                 for r, tail in zip(text_rows, [extreme[12:], small[12:], [None] * 4, small[12:]], strict=True)]
    data_t = stream(text_rows)
    starts_t, pos = [], 0
    for _ in text_rows:
        starts_t.append(pos)
        pos += 4 + int.from_bytes(data_t[pos:pos + 3], "little")
    from backupctl.formats.parquet import raw_batch
    as_text = raw_batch(text_columns(data_t, np.array(starts_t, dtype=np.int64), 16), BINARY_COLUMNS,  # type: ignore[arg-type]
                        arrow_schema(BINARY_COLUMNS))  # type: ignore[arg-type]
    assert as_text.equals(batch)


def test_binary_rows_refuse_zero_dates_and_malformed_packets() -> None:
    from backupctl.formats import mysql_text
    from backupctl.formats.parquet import arrow_schema

    if mysql_text._mysqltext is None:
        pytest.skip("the C row splitter (backupctl/formats/_mysqltext.c) was not built")
    cols = [col("dd", "date", "date"), col("dt", "datetime", "datetime"), col("s", "string", "varchar")]
    schema = arrow_schema(cols)  # type: ignore[arg-type]

    def split(rows: list[list[bytes | None]]) -> object:
        data, starts = binary_packets(rows)
        return mysql_text.binary_batch(data, starts, b"DT\x00", cols, schema)  # type: ignore[arg-type]

    with pytest.raises(FormatError, match=r"^zero or invalid date value '0000-00-00' cannot be backed up$"):
        split([[date_struct(2020, 1, 1), None, None], [b"\x00", None, None]])
    with pytest.raises(FormatError, match=r"'2021-02-29 10:00:00'"):
        split([[None, date_struct(2021, 2, 29, 10, 0, 0), None]])
    with pytest.raises(FormatError, match="does not hold exactly 3 values"):
        split([[None, None, lenenc(b"abc")[:-1]]])
    with pytest.raises(FormatError, match="invalid temporal length 5"):
        split([[b"\x05" + bytes(5), None, None]])
    data, starts = binary_packets([[None, None, lenenc(b"x")]])
    with pytest.raises(FormatError, match="no row header"):
        mysql_text.binary_batch(data[:4] + b"\x01" + data[5:], starts, b"DT\x00", cols, schema)  # type: ignore[arg-type]
    # a declared type that is not the column's: no codes (the caller reads text rows)
    assert mysql_text.binary_codes(cols, [(10, 10), (7, 26), (253, 10)]) is None  # type: ignore[arg-type]
    assert mysql_text.binary_codes(cols, [(10, 10), (12, 26)]) is None  # type: ignore[arg-type]


def test_a_binary_row_longer_than_a_packet_is_one_row() -> None:
    """Binary rows share the text rows' framing (``PreparedRows`` reads them with ``TextRows.chunks``): a
    row longer than one packet is joined and split like any other, the rows around it intact."""
    from backupctl.formats import mysql_text
    from backupctl.formats.parquet import arrow_schema

    if mysql_text._mysqltext is None:
        pytest.skip("the C row splitter (backupctl/formats/_mysqltext.c) was not built")
    cols = [col("id", "int", "int"), col("b", "binary", "longblob")]
    big = bytes(range(256)) * ((MAX_PACKET + 300) // 256)
    rows = [[(1).to_bytes(4, "little"), lenenc(b"small")], [(2).to_bytes(4, "little"), lenenc(big)],
            [(3).to_bytes(4, "little"), None], [(4).to_bytes(4, "little"), lenenc(b"end")]]
    data, seq = b"", 3
    for r in rows:
        p, seq = packets(binary_row(r), seq)
        data += p
    data += b"\x05\x00\x00" + bytes([seq % 256]) + b"\xfe\x00\x00\x22\x00"
    got = []
    for chunk_data, starts in reader(data, 1 << 16).chunks():
        batch = mysql_text.binary_batch(chunk_data, starts, b"\x04\x00", cols, arrow_schema(cols))  # type: ignore[arg-type]
        got += batch.to_pylist()
    assert [r["id"] for r in got] == [1, 2, 3, 4]
    assert [r["b"] for r in got] == [b"small", big, None, b"end"]
