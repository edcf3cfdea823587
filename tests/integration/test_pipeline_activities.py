"""AwsCli, Sql and EmrStep activities through `backupctl pipeline run`, on the moto server and real databases."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from backupctl.aws import AwsContext
from tests.integration.helpers import one_json
from tests.integration.mysql_db import connect, scratch_databases

pytestmark = pytest.mark.integration


@pytest.fixture
def mysql_db() -> Iterator[str]:
    with scratch_databases("bk_act") as (db, _):
        yield db


def mysql_rows(db: str, sql: str) -> list[tuple[object, ...]]:
    c = connect(db)
    try:
        with c.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        c.close()


def test_aws_cli_runs_against_the_run_endpoint(aws: AwsContext, cli, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("awscli")
    p = tmp_path / "p.yaml"
    p.write_text(f"""
name: cli
activities:
  mb: {{type: AwsCli, command: "s3 mb s3://{name}-cli", region: us-west-2}}
  cp: {{type: AwsCli, command: "aws s3 cp {p} s3://{name}-cli/p.yaml", region: us-west-2, depends_on: [mb]}}
  bad: {{type: AwsCli, command: "s3 ls s3://{name}-absent-bucket", region: us-west-2, depends_on: [cp],
         on_fail: continue}}
""")
    r = cli("pipeline", "run", str(p), "--json", timeout=120)
    doc = one_json(r.out)
    st = {a["name"]: a["status"] for a in doc["activities"]}
    assert st == {"mb": "succeeded", "cp": "succeeded", "bad": "failed"}, r.err
    body = aws.client("s3", "us-west-2").get_object(Bucket=f"{name}-cli", Key="p.yaml")["Body"].read().decode()
    assert body == p.read_text()
    bad = next(a for a in doc["activities"] if a["name"] == "bad")
    assert "command exited 255" in bad["error"] and "NoSuchBucket" in bad["error"]


def test_sql_on_mysql_commits_or_rolls_back_as_a_whole(cli, mysql_db: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    uri = f"mysql://root@127.0.0.1:3306/{mysql_db}"
    p = tmp_path / "p.yaml"
    p.write_text(f"""
name: sql
nodes:
  db: {{type: MySQLTable, uri: "{uri}", table: t, region: us-east-1}}
activities:
  create: {{type: Sql, node: db, sql: ["CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))",
                                      "INSERT INTO t VALUES (1, 'a'), (2, 'b')"]}}
  half: {{type: Sql, node: db, depends_on: [create], on_fail: continue,
          sql: ["UPDATE t SET v = 'changed'", "INSERT INTO t VALUES (1, 'dup')"]}}
""")
    r = cli("pipeline", "run", str(p), "--json", timeout=60)
    doc = one_json(r.out)
    acts = {a["name"]: a for a in doc["activities"]}
    assert acts["create"]["status"] == "succeeded" and acts["create"]["outputs"]["rows_affected"] == [0, 2]
    assert acts["half"]["status"] == "failed" and "Duplicate entry" in acts["half"]["error"]
    assert "rolled back" in acts["half"]["error"]
    assert mysql_rows(mysql_db, "SELECT id, v FROM t ORDER BY id") == [(1, "a"), (2, "b")]  # the UPDATE too


def test_sql_on_the_redshift_stand_in(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    schema = f"act_{uuid.uuid4().hex[:8]}"
    p = tmp_path / "p.yaml"
    p.write_text(f"""
name: pgsql
nodes:
  rs: {{type: RedshiftTable, uri: "postgres://postgres@127.0.0.1:5432/postgres", table: {schema}.t,
        region: us-west-2}}
activities:
  go: {{type: Sql, node: rs, sql: "CREATE SCHEMA {schema}; "}}
  fill: {{type: Sql, node: rs, depends_on: [go],
          sql: ["CREATE TABLE {schema}.t (id INT)", "INSERT INTO {schema}.t SELECT generate_series(1, 5)"]}}
""")
    try:
        r = cli("pipeline", "run", str(p), "--json", timeout=60)
        assert r.code == 0, r.err
        fill = next(a for a in one_json(r.out)["activities"] if a["name"] == "fill")
        assert fill["outputs"]["rows_affected"] == [0, 5]
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres") as c:
            assert c.execute(f"SELECT count(*) FROM {schema}.t").fetchone() == (5,)
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_emr_step_runs_on_the_embedded_endpoint(aws: AwsContext, cli, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The embedded endpoint runs command-runner steps: a transient cluster, a step that writes a file."""
    if shutil.which("bash") is None:  # pragma: no cover
        pytest.skip("needs bash")
    out = tmp_path / "ran.txt"
    p = tmp_path / "p.yaml"
    p.write_text(f"""
name: emr
activities:
  step: {{type: EmrStep, region: us-west-2, step: {{name: hello, args: [bash, -c, "echo ok > {out}"]}}}}
  fails: {{type: EmrStep, region: us-west-2, depends_on: [step], on_fail: continue,
           step: {{args: [bash, -c, "echo broken >&2; exit 3"]}}}}
""")
    r = cli("pipeline", "run", str(p), "--json", timeout=120, env={"BACKUPCTL_EMR_POLL_MAX_S": "1"})
    acts = {a["name"]: a for a in one_json(r.out)["activities"]}
    assert acts["step"]["status"] == "succeeded", r.err
    assert acts["step"]["outputs"]["state"] == "COMPLETED" and acts["step"]["outputs"]["transient"] is True
    assert out.read_text() == "ok\n"
    assert acts["fails"]["status"] == "failed" and "FAILED: exit code 3: broken" in acts["fails"]["error"]
    emr = aws.client("emr", "us-west-2")
    state = emr.describe_cluster(ClusterId=acts["step"]["outputs"]["cluster_id"])["Cluster"]["Status"]["State"]
    assert state == "TERMINATED"
