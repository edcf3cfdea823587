"""Text-protocol rows read raw (mysql_conn.TextRows) and split into columns (formats/mysql_text.py): every
value's exact bytes, NULLs, each length-prefix form, rows split across reads, rows longer than a packet,
an error packet mid-result, and malformed packets refused."""

from __future__ import annotations

import io
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
