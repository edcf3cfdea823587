"""Unit tests of the MySQL Parquet format: type mapping, canonical row encoding, parts, key ranges."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from backupctl.errors import FormatError, InvalidInput
from backupctl.formats.parquet import (
    ParquetPartWriter,
    arrow_type,
    canonical,
    column_kind,
    iter_part_rows,
    normalize,
    row_hash,
    time_literal,
)
from backupctl.sources.mysql import chunk_select, decode_key, encode_key, key_after


def col(name: str, data_type: str, column_type: str, **kw: Any) -> dict[str, Any]:
    c = {"name": name, "data_type": data_type, "column_type": column_type, "nullable": True, **kw}
    c["kind"] = column_kind(data_type, column_type)
    return c


COLS = [
    col("id", "bigint", "bigint(20) unsigned"),
    col("d", "decimal", "decimal(65,30)", precision=65, scale=30),
    col("f", "float", "float"),
    col("t", "time", "time(6)"),
    col("ts", "timestamp", "timestamp(6)"),
    col("b", "bit", "bit(64)"),
    col("bin", "varbinary", "varbinary(10)"),
    col("s", "varchar", "varchar(10)"),
]


def test_kinds_and_arrow_types() -> None:
    assert [str(arrow_type(c)) for c in COLS] == [
        "uint64", "decimal256(65, 30)", "float", "duration[us]", "timestamp[us, tz=UTC]", "uint64", "binary", "string",
    ]
    assert column_kind("int", "int(11)") == "int" and column_kind("year", "year(4)") == "year"
    with pytest.raises(InvalidInput, match="not supported"):
        column_kind("geometry", "geometry")


def test_time_literal_handles_negative_and_long_values() -> None:
    assert time_literal(-timedelta(hours=838, minutes=59, seconds=59)) == "-838:59:59.000000"
    assert time_literal(timedelta(seconds=-1.5)) == "-0:00:01.500000"
    assert time_literal(timedelta(hours=900, microseconds=1)) == "900:00:00.000001"


def test_canonical_encoding() -> None:
    assert canonical(Decimal("1.50"), "decimal") == canonical(Decimal("1.5"), "decimal") == "15e-1"
    assert canonical(normalize(b"\x00\x05", "bit"), "bit") == "5"
    assert canonical(timedelta(seconds=-1), "time") == "-1000000"
    assert canonical('{"b": 1, "a": [1.0]}', "json") == canonical('{"a":[1], "b":1}', "json")
    assert canonical(datetime(2020, 1, 2, 3, 4, 5), "datetime") == "2020-01-02 03:04:05.000000"
    assert normalize(3.4028234663852886e38, "float32") == 3.4028234663852886e38
    with pytest.raises(FormatError):
        normalize("0000-00-00", "date")
    names, kinds = ["a", "b"], ["int", "string"]
    assert row_hash(names, kinds, (1, "x")) != row_hash(names, kinds, (1, "y"))
    assert row_hash(names, kinds, (1, None)) != row_hash(names, kinds, (1, ""))


class FakeStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.bodies: dict[str, str] = {}  # key -> "bytes" (sent from memory) or "file"
        self.metadata: dict[str, dict[str, str]] = {}

    def put(self, key: str, body: Any, metadata: dict[str, str] | None = None) -> None:
        if isinstance(body, bytes):
            self.bodies[key] = "bytes"
            self.objects[key] = body
        else:
            self.bodies[key] = "file"
            body.seek(0)
            self.objects[key] = body.read()
        self.metadata[key] = dict(metadata or {})


def test_part_round_trip_with_bounded_row_groups() -> None:
    import pyarrow.parquet as pq

    rows = [
        (18446744073709551615, Decimal("-" + "9" * 35 + "." + "9" * 30), 3.4028234663852886e38,
         -timedelta(hours=838, minutes=59, seconds=59), datetime(2038, 1, 19, 3, 14, 7, 999999), 2**64 - 1,
         b"\x00\x00x\x00", "😀"),
        (None,) * len(COLS),
        (0, Decimal("0"), -0.5, timedelta(hours=900), datetime(1970, 1, 1, 0, 0, 1), 0, b"", ""),
    ]
    store = FakeStore()
    w = ParquetPartWriter(store, "k", COLS, row_group_rows=2)  # type: ignore[arg-type]
    for r in rows:
        w.add(r)
    part = w.finish()
    assert part.rows == 3
    data = store.objects["k"]
    assert pq.ParquetFile(io.BytesIO(data)).metadata.num_row_groups == 2
    back = [r for batch in iter_part_rows(io.BytesIO(data), COLS) for r in batch]
    assert back[0][1] == rows[0][1] and back[1] == rows[1]
    names, kinds = [c["name"] for c in COLS], [c["kind"] for c in COLS]
    assert [row_hash(names, kinds, r) for r in back] == [row_hash(names, kinds, r) for r in rows]
    with pytest.raises(FormatError, match="columns"):
        list(iter_part_rows(io.BytesIO(data), COLS[:-1]))


def test_a_part_is_sent_from_memory_until_it_outgrows_the_spool(monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    import backupctl.formats.parquet as fp

    rows = [(i, Decimal(i), i / 3, timedelta(seconds=i), datetime(2020, 1, 1, 0, 0, i % 60), i, bytes([i % 256]) * 50,
             "x" * (i % 90)) for i in range(3000)]

    def write(spool: int) -> tuple[FakeStore, Any]:
        monkeypatch.setattr(fp, "PART_SPOOL_BYTES", spool)
        store = FakeStore()
        w = ParquetPartWriter(store, "k", COLS, row_group_rows=500)  # type: ignore[arg-type]
        for r in rows:
            w.add(r)
        return store, w.finish()

    mem_store, mem_part = write(64 << 20)
    disk_store, disk_part = write(4096)  # the row groups outgrow it: the part goes on in a temporary file
    assert mem_store.bodies["k"] == "bytes" and disk_store.bodies["k"] == "file"
    data = mem_store.objects["k"]
    assert disk_store.objects["k"] == data and len(data) > 4096
    assert mem_part.sha256 == disk_part.sha256 == hashlib.sha256(data).hexdigest() == mem_store.metadata["k"]["sha256"]
    assert mem_part.bytes == len(data) and mem_part.rows == 3000
    assert [r for b in iter_part_rows(io.BytesIO(data), COLS) for r in b][2999][7] == "x" * (2999 % 90)


def test_key_set_hashes_are_stored_uncompressed_and_keys_zstd() -> None:
    import hashlib

    import pyarrow.parquet as pq

    from backupctl.formats.parquet import KEY_HASH_COLUMN
    from backupctl.sources.mysql import key_part_columns

    kcols = key_part_columns([COLS[0]])
    assert kcols[-1]["name"] == KEY_HASH_COLUMN
    store = FakeStore()
    w = ParquetPartWriter(store, "keys", kcols)  # type: ignore[arg-type]
    for i in range(1000):
        w.add((i, hashlib.sha256(str(i).encode()).digest()), digest_hash=i)
    w.finish()
    meta = pq.ParquetFile(io.BytesIO(store.objects["keys"])).metadata.row_group(0)
    assert [meta.column(i).compression for i in range(2)] == ["ZSTD", "UNCOMPRESSED"]
    back = [r for b in iter_part_rows(io.BytesIO(store.objects["keys"]), kcols) for r in b]
    assert back[7] == (7, hashlib.sha256(b"7").digest())


def test_a_downloaded_part_is_kept_in_memory_up_to_the_spool_size() -> None:
    from backupctl.repository import PART_SPOOL_BYTES, part_buffer

    with part_buffer(10 << 20, "t-") as small, part_buffer(PART_SPOOL_BYTES + 1, "t-") as big, \
            part_buffer(None, "t-") as unknown:
        assert isinstance(small, io.BytesIO)
        assert not isinstance(big, io.BytesIO) and not isinstance(unknown, io.BytesIO)
        assert big.fileno() >= 0


def test_key_ranges() -> None:
    enc = encode_key((5, "a`b", b"\x00", Decimal("1.5"), datetime(2020, 1, 1), timedelta(seconds=-1)))
    assert decode_key(enc) == [5, "a`b", b"\x00", Decimal("1.5"), "2020-01-01 00:00:00.000000", "-0:00:01.000000"]
    sql, params = key_after(["a", "b"], [1, 2])
    assert sql == "((`a` > %s) OR (`a` = %s AND `b` > %s))" and params == [1, 1, 2]
    sql, params = key_after(["a", "b"], [1, 2], inclusive=True)
    assert sql == "((`a` < %s) OR (`a` = %s AND `b` <= %s))"
    sql, params = chunk_select("d", "t`x", COLS[:3], ["id"], encode_key((1,)), encode_key((9,)))
    assert sql == ("SELECT `id`, `d`, (`f` + 0e0) FROM `d`.`t``x` WHERE ((`id` > %s)) AND ((`id` <= %s)) "
                   "ORDER BY `id`")
    assert params == [1, 9]


def test_load_charset_is_binary_only_for_utf8_text() -> None:
    from backupctl.formats.parquet import load_charset, load_format

    def col(kind: str, charset: str | None = None) -> dict[str, Any]:
        return {"name": f"c_{kind}", "kind": kind, "charset": charset}

    utf8 = [col("int"), col("decimal"), col("binary"), col("bit"), col("time"), col("string", "utf8mb4"),
            col("string", "utf8mb3"), col("string", "ascii"), col("string", "UTF8MB4")]
    assert load_charset(utf8) == "binary" and load_charset([col("int")]) == "binary"
    assert load_format(utf8).startswith("CHARACTER SET binary FIELDS TERMINATED BY ','")
    assert load_charset([*utf8, col("string", "latin1")]) == "utf8mb4"  # the server converts to latin1
    assert load_charset([*utf8, col("string", None)]) == "utf8mb4"  # unknown: let the server convert
    assert load_charset([*utf8, col("json", "utf8mb4")]) == "utf8mb4"  # MySQL refuses JSON declared binary
    assert load_format([col("json")]).startswith("CHARACTER SET utf8mb4 FIELDS")
