"""The shipped MySQL drills (MySQL -> MySQL, MySQL -> PostgreSQL stand-in) pass end to end and tear down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from backupctl.aws import AwsContext
from backupctl.pipelines.drill import run_drill
from backupctl.pipelines.model import load_playbook
from tests.integration.mysql_db import scratch_databases

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def my() -> pymysql.connections.Connection:
    return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)


try:
    my().close()
except pymysql.MySQLError:  # pragma: no cover
    pytest.skip("MariaDB at 127.0.0.1:3306 is not running", allow_module_level=True)


def _orders(cur: Any, src: str, _dst: str) -> None:
    cur.execute(f"CREATE TABLE {src}.orders (id INT PRIMARY KEY, amount DECIMAL(10,2), note VARCHAR(20))")
    cur.executemany(f"INSERT INTO {src}.orders VALUES (%s, %s, %s)", [(i, i * 1.5, f"n{i}") for i in range(150)])


@pytest.fixture
def dbs() -> Iterator[tuple[str, str]]:
    with scratch_databases("bk_d", _orders) as pair:
        yield pair


def test_mysql_drill(aws: AwsContext, dbs: tuple[str, str]) -> None:
    pb = load_playbook(ROOT / "playbooks" / "mysql-dr-drill.yaml", {"source_db": dbs[0], "drill_db": dbs[1]})
    rep = run_drill(aws, pb)
    assert rep["passed"], rep["problems"]
    assert rep["rows"] == {"snapshot": 150, "restored": 150} and rep["samples"]["checked"] == 20
    assert rep["digest"]["snapshot"] == rep["digest"]["restored"] and rep["teardown"] == "succeeded"
    with my().cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema=%s", (dbs[1],))
        assert cur.fetchone()[0] == 0


def test_mysql_to_postgres_drill(aws: AwsContext, dbs: tuple[str, str]) -> None:
    psycopg = pytest.importorskip("psycopg")
    pb = load_playbook(ROOT / "playbooks" / "mysql-redshift-dr-drill.yaml", {"source_db": dbs[0]})
    try:
        rep = run_drill(aws, pb)
    except psycopg.Error:  # pragma: no cover
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not running")
    assert rep["passed"], rep["problems"]
    assert rep["rows"] == {"snapshot": 150, "restored": 150} and rep["teardown"] == "succeeded"
