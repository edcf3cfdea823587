"""Unit tests of MySQL incrementals: the window predicate, watermark checks, key-set merges, part keys."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest

from backupctl.errors import FormatError, InvalidInput
from backupctl.formats.parquet import column_kind
from backupctl.sources.mysql import (
    KeyEntry,
    Spool,
    TableInfo,
    check_mysql_part_key,
    check_watermark,
    key_scan_select,
    merge_key_sets,
    ordered_stream,
    watermark_param,
    watermark_value,
    window_predicate,
    window_select,
)


def col(name: str, data_type: str, column_type: str, **kw: Any) -> dict[str, Any]:
    c = {"name": name, "data_type": data_type, "column_type": column_type, "nullable": True, "generated": False,
         **kw}
    c["kind"] = column_kind(data_type, column_type)
    return c


def info(*cols: dict[str, Any]) -> TableInfo:
    return TableInfo("db", "t", list(cols), ["id"], "CREATE TABLE `t` (...)", 0, "10.11")


# -- the window ------------------------------------------------------------------------


def test_window_predicate_is_half_open() -> None:
    sql, params = window_predicate("updated_at", "timestamp", "2026-01-01 00:00:00.000000",
                                   "2026-01-01 00:00:05.000000")
    assert sql == "(`updated_at` >= %s AND `updated_at` < %s)"
    assert params == ["2026-01-01 00:00:00.000000", "2026-01-01 00:00:05.000000"]


def _in_window(value: Any, lo: Any, hi: Any) -> bool:
    """The predicate's semantics, evaluated in Python (>= lo AND < hi)."""
    sql, _ = window_predicate("c", "decimal", "0", "0")
    assert ">= %s" in sql and "< %s" in sql and "<=" not in sql and "> %s" not in sql
    return bool(lo <= value < hi)


@pytest.mark.parametrize("stamp", ["1.0", "5.0", "5.000001", "4.999999", "10.0"])
def test_a_row_on_a_boundary_is_in_exactly_one_window(stamp: str) -> None:
    bounds = ["1.0", "5.0", "10.0", "15.0"]
    windows = list(zip(bounds, bounds[1:], strict=False))
    hits = [(lo, hi) for lo, hi in windows
            if _in_window(Decimal(stamp), watermark_param(lo, "decimal"), watermark_param(hi, "decimal"))]
    assert len(hits) == 1
    if stamp in bounds:
        assert hits[0][0] == stamp  # a row stamped exactly at `to` belongs to the NEXT window


def test_window_select_orders_by_primary_key_and_quotes() -> None:
    cols = [col("id", "int", "int(11)"), col("f", "float", "float"), col("u`p", "datetime", "datetime(6)")]
    sql, params = window_select("d`b", "t%", cols, ["id"], "u`p", "datetime", "a", "b")
    assert sql == ("SELECT `id`, (`f` + 0e0), `u``p` FROM `d``b`.`t%%` WHERE (`u``p` >= %s AND `u``p` < %s) "
                   "ORDER BY `id`")
    assert params == ["a", "b"]


def test_key_scan_is_index_only_in_key_order() -> None:
    cols = [col("a", "int", "int(11)"), col("b", "varchar", "varchar(5)")]
    assert key_scan_select("db", "t", cols) == "SELECT `a`, `b` FROM `db`.`t` FORCE INDEX (PRIMARY) ORDER BY `a`, `b`"


def test_watermark_values() -> None:
    dt = datetime(2026, 11, 27, 1, 2, 3, 456789)
    assert watermark_value(dt, "timestamp") == "2026-11-27 01:02:03.456789"
    assert watermark_value(dt, "datetime") == "2026-11-27 01:02:03.456789"
    epoch = watermark_value(dt, "int")
    assert Decimal(epoch) == Decimal((dt - datetime(1970, 1, 1)).total_seconds()).quantize(Decimal("0.000001"))
    assert watermark_param(epoch, "uint") == Decimal(epoch)
    assert watermark_param("2026-11-27 01:02:03.456789", "datetime") == "2026-11-27 01:02:03.456789"


def test_watermark_column_checks() -> None:
    t = info(col("id", "int", "int(11)"), col("v", "varchar", "varchar(5)"), col("d", "date", "date"),
             col("ts", "timestamp", "timestamp(6)"), col("e", "bigint", "bigint(20)"),
             col("f", "float", "float"))
    assert check_watermark(t, "ts")["kind"] == "timestamp"
    assert check_watermark(t, "e")["kind"] == "int"
    with pytest.raises(InvalidInput, match="not a column"):
        check_watermark(t, "nope")
    for bad in ("v", "d", "f"):
        with pytest.raises(InvalidInput, match="must be DATETIME or TIMESTAMP"):
            check_watermark(t, bad)


# -- key sets --------------------------------------------------------------------------


def entries(pairs: list[tuple[Any, Any]], kinds: list[str]) -> Any:
    return ordered_stream(iter([((k,), v) for k, v in pairs]), kinds)


def run_merge(parent: list[tuple[Any, int]], changed: list[tuple[Any, int]], current: list[Any] | None,
              kinds: list[str]) -> tuple[dict[Any, int], list[Any]]:
    cur = entries([(k, None) for k in current], kinds) if current is not None else None
    keep: dict[Any, int] = {}
    deleted: list[Any] = []
    for action, key, h in merge_key_sets(entries(parent, kinds), entries(changed, kinds), cur):
        if action == "keep":
            assert key[0] not in keep and h is not None
            keep[key[0]] = h
        else:
            deleted.append(key[0])
    return keep, deleted


def test_merge_with_deletes_detected() -> None:
    parent = [(1, 10), (2, 20), (3, 30), (5, 50)]
    changed = [(2, 21), (4, 40)]        # 2 updated, 4 inserted inside the window
    current = [1, 2, 4, 6]              # 3 and 5 deleted; 6 inserted after the window
    keep, deleted = run_merge(parent, changed, current, ["int"])
    assert keep == {1: 10, 2: 21, 4: 40}
    assert deleted == [3, 5]


def test_merge_without_delete_detection_keeps_parent_keys() -> None:
    keep, deleted = run_merge([(1, 10), (3, 30)], [(2, 20), (3, 31)], None, ["int"])
    assert keep == {1: 10, 2: 20, 3: 31} and deleted == []


def test_merge_of_empty_streams() -> None:
    assert run_merge([], [], [], ["int"]) == ({}, [])
    assert run_merge([(1, 1)], [], [], ["int"]) == ({}, [1])
    assert run_merge([], [(1, 1)], [1], ["int"]) == ({1: 1}, [])


def test_text_keys_are_sorted_on_disk_by_their_bytes() -> None:
    # Server order of a case-insensitive collation is not Python's: the streams arrive "unsorted".
    parent = [("b", 2), ("A", 1), ("a", 3), ("é", 4)]
    changed = [("é", 40), ("c", 5)]
    current = ["c", "é", "A", "b"]      # "a" deleted
    keep, deleted = run_merge(parent, changed, current, ["string"])
    assert keep == {"A": 1, "b": 2, "c": 5, "é": 40}
    assert deleted == ["a"]
    ordered: list[KeyEntry] = list(entries([("b", 0), ("a", 0)], ["string"]))
    assert [e[1] for e in ordered] == [("a",), ("b",)]


def test_composite_and_temporal_keys_merge_in_value_order() -> None:
    kinds = ["datetime", "decimal"]
    a = ((datetime(2026, 1, 1), Decimal("1.50")), 1)
    b = ((datetime(2026, 1, 1), Decimal("2.00")), 2)
    c = ((datetime(2026, 1, 2), Decimal("0.00")), 3)
    parent = ordered_stream(iter([a, b, c]), kinds)
    changed = ordered_stream(iter([(b[0], 22)]), kinds)
    current = ordered_stream(iter([(a[0], None), (b[0], None)]), kinds)
    out = list(merge_key_sets(parent, changed, current))
    assert out == [("keep", a[0], 1), ("keep", b[0], 22), ("delete", c[0], None)]


def test_spool_round_trips_in_order() -> None:
    s = Spool()
    items = [((1, "x", b"\x00"), 5), ((Decimal("1.5"), datetime(2026, 1, 1)), 2 ** 255)]
    for it in items:
        s.add(it)
    assert list(s) == items and list(s) == items
    s.close()


@pytest.mark.parametrize("key", ["keys/part-00000-0000.parquet", "tombstones/part-00001-0002.parquet"])
def test_mysql_part_keys(key: str) -> None:
    assert check_mysql_part_key({"key": key, "rows": 3, "bytes": 100})["key"] == key


@pytest.mark.parametrize("counts", [{}, {"rows": -1, "bytes": 100}, {"rows": 3, "bytes": 2 ** 64},
                                    {"rows": "3", "bytes": 100}, {"rows": 3.0, "bytes": 100}])
def test_mysql_part_counts_refused(counts: dict[str, Any]) -> None:
    with pytest.raises(FormatError, match="not a count"):
        check_mysql_part_key({"key": "keys/part-00000-0000.parquet", **counts})


@pytest.mark.parametrize("key", ["data/part-00000-0000.parquet", "keys/../x", "keys/part-0-0.parquet", None,
                                 "tombstones/part-00000-0000.json.gz"])
def test_mysql_part_keys_refused(key: Any) -> None:
    with pytest.raises(FormatError):
        check_mysql_part_key({"key": key})
