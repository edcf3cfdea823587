"""The local MariaDB for integration tests: connections, scratch databases, URIs (one copy for every test file)."""

from __future__ import annotations

import contextlib
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
