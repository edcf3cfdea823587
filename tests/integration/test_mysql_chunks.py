"""Chunk planning against the real MariaDB: dense integer keys are cut arithmetically, other keys walked,
and either way the chunks partition the table with at most ``chunk_rows`` rows each."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from backupctl.sources import mysql as mysql_source
from tests.integration.mysql_db import connect, q, scratch_databases, server_up

pytestmark = pytest.mark.integration

if not server_up():  # pragma: no cover
    pytest.skip("MariaDB at 127.0.0.1:3306 is not running", allow_module_level=True)


@pytest.fixture
def db() -> Iterator[str]:
    with scratch_databases("chunks") as (src, _dst):
        yield src


def make(db: str, name: str, key_ddl: str, keys: list[tuple[Any, ...]]) -> mysql_source.TableInfo:
    c = connect(db)
    with c.cursor() as cur:
        cur.execute(f"CREATE TABLE {q(name)} ({key_ddl}, v VARCHAR(10))")
        cols = len(keys[0]) if keys else 1
        marks = ", ".join(["%s"] * (cols + 1))
        cur.executemany(f"INSERT INTO {q(name)} VALUES ({marks})", [(*k, "x") for k in keys])
        cur.execute(f"ANALYZE TABLE {q(name)}")  # the row estimate the planner gates on
        cur.fetchall()
    info = mysql_source.describe_table(c, db, name)
    c.close()
    return info


def chunk_rows_of(db: str, info: mysql_source.TableInfo, bounds: list[Any]) -> list[int]:
    """Rows in each planned chunk, counted with the export's own chunk SELECT."""
    c = connect(db)
    out = []
    edges: list[Any] = [None, *bounds, None]
    for lo, hi in zip(edges, edges[1:], strict=False):
        sql, params = mysql_source.chunk_select(db, info.table, info.stored, info.primary_key, lo, hi)
        with c.cursor() as cur:
            cur.execute(sql, params)
            out.append(len(cur.fetchall()))
    c.close()
    return out


def plan(db: str, info: mysql_source.TableInfo, chunk_rows: int) -> tuple[list[Any], list[Any] | None]:
    c = connect(db)
    try:
        return mysql_source.chunk_bounds(c, info, chunk_rows), mysql_source.dense_int_bounds(c, info, chunk_rows)
    finally:
        c.close()


def test_dense_integer_key_is_cut_arithmetically(db: str) -> None:
    keys = [(k,) for k in range(-50, 1000) if k % 37]  # dense with gaps, negative keys
    info = make(db, "dense", "id INT PRIMARY KEY", keys)
    bounds, dense = plan(db, info, 100)
    assert dense is not None and bounds == dense
    assert bounds == [[["i", str(b)]] for b in range(49, 999, 100)]  # every 100 key values from MIN(id) = -50
    sizes = chunk_rows_of(db, info, bounds)
    assert sum(sizes) == len(keys) and max(sizes) <= 100 and min(sizes[:-1]) >= 97


def test_unsigned_bigint_key_near_the_top(db: str) -> None:
    top = 2**64 - 1
    keys = [(k,) for k in range(top - 499, top + 1)]
    info = make(db, "top", "id BIGINT UNSIGNED PRIMARY KEY", keys)
    bounds, dense = plan(db, info, 64)
    assert dense is not None and bounds == dense
    sizes = chunk_rows_of(db, info, bounds)
    assert sum(sizes) == 500 and max(sizes) == 64 and len(sizes) == 8


def test_sparse_and_composite_keys_are_walked(db: str) -> None:
    sparse = make(db, "sparse", "id BIGINT PRIMARY KEY", [(k * 1000,) for k in range(500)])
    bounds, dense = plan(db, sparse, 100)
    assert dense is None  # MIN..MAX spans 1000x the rows: cutting by value would make 5,000 tiny chunks
    assert bounds == [[["i", str(k * 1000)]] for k in (99, 199, 299, 399, 499)]  # the walk's last chunk is empty
    assert chunk_rows_of(db, sparse, bounds) == [100] * 5 + [0]

    comp = make(db, "comp", "a INT, b INT, PRIMARY KEY (a, b)", [(a, b) for a in range(10) for b in range(30)])
    bounds, dense = plan(db, comp, 50)
    assert dense is None and len(bounds) == 6
    assert chunk_rows_of(db, comp, bounds) == [50] * 6 + [0]


def test_empty_table_is_one_chunk(db: str) -> None:
    info = make(db, "empty", "id INT PRIMARY KEY", [])
    assert plan(db, info, 100)[0] == []
