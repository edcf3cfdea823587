"""The local MariaDB for integration tests: connections, scratch databases, URIs (one copy for every test file)."""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pymysql

HOST, PORT = "127.0.0.1", 3306


def connect(db: str | None = None, user: str = "root", password: str = "", utc: bool = True,
            **kw: Any) -> pymysql.connections.Connection:
    """An autocommit utf8mb4 connection (session time zone UTC unless ``utc`` is False)."""
    if utc:
        kw.setdefault("init_command", "SET time_zone = '+00:00'")
    return pymysql.connect(host=HOST, port=PORT, user=user, password=password, database=db, charset="utf8mb4",
                           autocommit=True, **kw)


def server_up() -> bool:
    try:
        connect().close()
        return True
    except pymysql.MySQLError:
        return False


def q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def uri(db: str, user: str = "root") -> str:
    return f"mysql://{user}@{HOST}:{PORT}/{db}"


@contextlib.contextmanager
def scratch_databases(prefix: str, fill: Callable[[Any, str, str], None] | None = None) -> Iterator[tuple[str, str]]:
    """A source and a target database (``<prefix>_src_<hex>``, ``<prefix>_dst_<hex>``), dropped afterwards;
    ``fill(cursor, src, dst)`` creates what the test starts from."""
    hexid = uuid.uuid4().hex[:10]
    src, dst = f"{prefix}_src_{hexid}", f"{prefix}_dst_{hexid}"
    c = connect()
    try:
        with c.cursor() as cur:
            cur.execute(f"CREATE DATABASE {src} CHARACTER SET utf8mb4")
            cur.execute(f"CREATE DATABASE {dst} CHARACTER SET utf8mb4")
            if fill is not None:
                fill(cur, src, dst)
        yield src, dst
    finally:
        with c.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {src}")
            cur.execute(f"DROP DATABASE IF EXISTS {dst}")
        c.close()


def make_orders(db: str, rows: int, note_bytes: int = 0) -> None:
    """``db.orders``: ids 1..rows, mixed types; ``note_bytes`` of incompressible text per row."""
    rng = random.Random(rows)
    c = connect(db)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(40) NOT NULL, amount DECIMAL(12,2), "
                    "placed DATETIME(6), note TEXT)")
        batch = []
        for i in range(1, rows + 1):
            note = rng.randbytes(note_bytes // 2).hex() if note_bytes else (None if i % 7 == 0 else "é😀" * (i % 5))
            batch.append((i, f"customer-{i % 97}", f"{i * 3}.{i % 100:02d}",
                          f"2024-01-{1 + i % 28:02d} 12:{i % 60:02d}:00.{i % 1000000:06d}", note))
            if len(batch) == 2000:
                cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s)", batch)
                batch = []
        if batch:
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s)", batch)
    c.close()


def rows_of(db: str, table: str = "orders", order: str = "id") -> list[tuple[Any, ...]]:
    """Every row of ``db.table`` ordered by ``order`` (column names, comma-separated)."""
    c = connect(db)
    with c.cursor() as cur:
        cur.execute(f"SELECT * FROM {q(table)} ORDER BY {order}")
        out = list(cur.fetchall())
    c.close()
    return out


def empty_copy(src: str, dst: str, table: str) -> None:
    """``dst.table``, an empty table LIKE ``src.table``."""
    c = connect()
    with c.cursor() as cur:
        cur.execute(f"CREATE TABLE {q(dst)}.{q(table)} LIKE {q(src)}.{q(table)}")
    c.close()
