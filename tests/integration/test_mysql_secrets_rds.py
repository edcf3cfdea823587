"""Passwords from AWS Secrets Manager and sources named by RDS instance, through the real CLI.

MariaDB at 127.0.0.1:3306 (a user of this test with a real password),
PostgreSQL at 127.0.0.1:5432 and Secrets Manager, RDS and S3 on the moto
server. The password only ever travels inside the secret: it is never in
argv, and never in the output, the logs or any object of the repository.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pymysql
import pytest

from backupctl.aws import AwsContext
from tests.integration.helpers import one_error_line, one_json

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"
HOST, PORT = "127.0.0.1", 3306
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


def connect(db: str | None = None, user: str = "root", password: str = "") -> pymysql.connections.Connection:
    return pymysql.connect(host=HOST, port=PORT, user=user, password=password, database=db, charset="utf8mb4",
                           autocommit=True, init_command="SET time_zone = '+00:00'")


def _up() -> bool:
    try:
        connect().close()
        psycopg.connect(**PG).close()  # type: ignore[arg-type]
        return True
    except (pymysql.MySQLError, psycopg.Error):
        return False


if not _up():  # pragma: no cover
    pytest.skip("MariaDB at 127.0.0.1:3306 or PostgreSQL at 127.0.0.1:5432 is not running", allow_module_level=True)


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    """A source and a target database, and a MySQL user with a password that can use both."""
    hexid = uuid.uuid4().hex[:10]
    e = {"src": f"bk_sec_src_{hexid}", "dst": f"bk_sec_dst_{hexid}", "user": f"bk_sec_{hexid}",
         "password": f"Pw:{hexid}@/'\"x"}
    c = connect()
    with c.cursor() as cur:
        for db in (e["src"], e["dst"]):
            cur.execute(f"CREATE DATABASE {db} CHARACTER SET utf8mb4")
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (e["user"], e["password"]))
        for db in (e["src"], e["dst"]):
            cur.execute(f"GRANT ALL PRIVILEGES ON {db}.* TO %s@'%%'", (e["user"],))
        cur.execute(f"CREATE TABLE {e['src']}.t (id INT PRIMARY KEY, v VARCHAR(20))")
        cur.executemany(f"INSERT INTO {e['src']}.t VALUES (%s, %s)", [(i, f"v{i}") for i in range(1, 51)])
    try:
        yield e
    finally:
        with c.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {e['src']}")
            cur.execute(f"DROP DATABASE IF EXISTS {e['dst']}")
            cur.execute("DROP USER IF EXISTS %s@'%%'", (e["user"],))
        c.close()


def rows(db: str) -> list[tuple[Any, ...]]:
    c = connect(db)
    with c.cursor() as cur:
        cur.execute("SELECT * FROM t ORDER BY id")
        out = list(cur.fetchall())
    c.close()
    return out


def put_secret(aws: AwsContext, region: str, name: str, value: str) -> str:
    return str(aws.client("secretsmanager", region).create_secret(Name=name, SecretString=value)["ARN"])


def repo_objects(aws: AwsContext, bucket: str) -> list[bytes]:
    s3 = aws.client("s3", DST)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return [s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys]


def bucket_exists(aws: AwsContext, bucket: str) -> bool:
    return bucket in {b["Name"] for b in aws.client("s3", DST).list_buckets()["Buckets"]}


def test_secret_id_for_snapshot_and_mysql_restore(aws: AwsContext, cli, env: dict[str, str], name: str) -> None:  # type: ignore[no-untyped-def]
    src, dst, user, pw = env["src"], env["dst"], env["user"], env["password"]
    bucket, repo = f"{name}-repo", f"s3://{name}-repo"
    # In the source region, a JSON secret as RDS manages it: the URI names no user, the secret does.
    put_secret(aws, SRC, f"{name}/src", json.dumps({"username": user, "password": pw, "engine": "mysql",
                                                     "host": "elsewhere.example.com", "port": 3307}))
    # In the target region, a plain-string secret; the user is in the URI.
    put_secret(aws, DST, f"{name}/dst", pw)

    # The secret wins over a wrong MYSQL_PWD; host and port stay the URI's.
    r = cli("snapshot", "--source", f"mysql://{HOST}:{PORT}/{src}", "--table", "t", "--from", SRC, "--to", DST,
            "--repo", repo, "--secret-id", f"{name}/src", "--json", env={"MYSQL_PWD": "wrong-from-env"})
    assert r.code == 0, r.err
    snap = one_json(r.out)
    assert snap["rows"] == 50
    assert snap["source"] == {"kind": "mysql", "region": SRC, "host": HOST, "port": PORT, "database": src,
                              "table": "t"}
    r2 = cli("restore", snap["snapshot_id"], "--to", f"mysql://{user}@{HOST}:{PORT}/{dst}", "--region", DST,
             "--repo", repo, "--secret-id", f"{name}/dst", "--json")
    assert r2.code == 0, r2.err
    assert one_json(r2.out)["rows"] == 50 and one_json(r2.out)["verification"] == "table"
    assert rows(dst) == rows(src)  # the user has a password: only the secret's could have logged in

    # The password is nowhere: not in output, logs or any repository object.
    for text in (r.out, r.err, r2.out, r2.err):
        assert pw not in text
    objects = repo_objects(aws, bucket)
    assert objects and not [o for o in objects if pw.encode() in o]

    # A password file comes before the secret: a wrong one fails even with the right secret (exit 6).
    wrong = f"/tmp/{name}-pw"
    with open(wrong, "w") as f:
        f.write("wrong-from-file\n")
    r = cli("snapshot", "--source", f"mysql://{user}@{HOST}:{PORT}/{src}", "--table", "t", "--from", SRC,
            "--to", DST, "--repo", repo, "--secret-id", f"{name}/src", "--password-file", wrong)
    assert r.code == 6, r.err
    assert "access denied" in one_error_line(r.err)


def test_secret_errors(aws: AwsContext, cli, env: dict[str, str], name: str) -> None:  # type: ignore[no-untyped-def]
    src, dst, user = env["src"], env["dst"], env["user"]
    repo = f"s3://{name}-repo"
    base = ["--table", "t", "--from", SRC, "--to", DST, "--repo", repo]

    # Missing secret: exit 3 (looked up in the source region: the target region's secret does not count).
    put_secret(aws, DST, f"{name}/only-in-dst", env["password"])
    r = cli("snapshot", "--source", f"mysql://{user}@{HOST}:{PORT}/{src}", *base, "--secret-id", f"{name}/only-in-dst")
    assert r.code == 3, r.err
    assert one_error_line(r.err) == (f"error: secret '{name}/only-in-dst' (us-east-1) does not exist in "
                                     "Secrets Manager")
    # A JSON secret without a password: exit 2, naming its fields but no value.
    put_secret(aws, SRC, f"{name}/nopw", json.dumps({"username": user, "pwd": env["password"]}))
    r = cli("snapshot", "--source", f"mysql://{user}@{HOST}:{PORT}/{src}", *base, "--secret-id", f"{name}/nopw")
    assert r.code == 2, r.err
    assert one_error_line(r.err) == (f"error: secret '{name}/nopw' (us-east-1) is a JSON document without a string "
                                     "\"password\" field (fields: pwd, username)")
    # A wrong password in the secret: access denied, exit 6.
    put_secret(aws, SRC, f"{name}/wrong", "not-the-password")
    r = cli("snapshot", "--source", f"mysql://{user}@{HOST}:{PORT}/{src}", *base, "--secret-id", f"{name}/wrong")
    assert r.code == 6, r.err
    assert "access denied" in one_error_line(r.err) and "not-the-password" not in r.err
    # No user in the URI and none in a plain-string secret: exit 2.
    r = cli("restore", "20261127T013000Z-1a2b3c", "--to", f"mysql://{HOST}:{PORT}/{dst}", "--region", DST,
            "--repo", repo, "--secret-id", f"{name}/only-in-dst")
    assert r.code == 2, r.err
    assert one_error_line(r.err) == ("error: --to: no user (name it in the URI, mysql://USER@HOST[:PORT]/DB, or in "
                                     f"the JSON of secret '{name}/only-in-dst' as \"username\")")
    # --secret-id does not apply to DynamoDB.
    r = cli("snapshot", *base, "--secret-id", f"{name}/wrong")
    assert r.code == 2
    assert one_error_line(r.err) == ("error: --secret-id applies to MySQL sources (--source mysql://... or "
                                     "--rds-instance ID)")
    assert not bucket_exists(aws, f"{name}-repo")


def test_rds_instance_source(aws: AwsContext, cli, env: dict[str, str], name: str) -> None:  # type: ignore[no-untyped-def]
    src, dst, user, pw = env["src"], env["dst"], env["user"], env["password"]
    repo = f"s3://{name}-repo"
    instance = f"bk-{name}"
    rds = aws.client("rds", SRC)
    rds.create_db_instance(DBInstanceIdentifier=instance, DBInstanceClass="db.t3.micro", Engine="mysql",
                           MasterUsername=user, MasterUserPassword="not-used-by-backupctl", Port=PORT)
    address = rds.describe_db_instances(DBInstanceIdentifier=instance)["DBInstances"][0]["Endpoint"]["Address"]
    assert address == f"{instance}.aaaaaaaaaa.us-east-1.rds.amazonaws.com"  # moto's made-up address
    put_secret(aws, SRC, f"{name}/pw", pw)
    local = {"BACKUPCTL_RDS_ENDPOINT_MAP": f"{address}=127.0.0.1:{PORT}"}

    # The endpoint and (master) user come from RDS, the password from the secret.
    r = cli("snapshot", "--rds-instance", instance, "--database", src, "--table", "t", "--from", SRC, "--to", DST,
            "--repo", repo, "--secret-id", f"{name}/pw", "--json", env=local)
    assert r.code == 0, r.err
    snap = one_json(r.out)
    assert snap["rows"] == 50
    assert snap["source"] == {"kind": "mysql", "region": SRC, "rds_instance": instance, "engine": "mysql",
                              "host": address, "port": PORT, "database": src, "table": "t"}
    assert f"rds instance {instance}" in r.err and pw not in r.out + r.err
    r = cli("restore", snap["snapshot_id"], "--to", f"mysql://root@{HOST}:{PORT}/{dst}", "--region", DST,
            "--repo", repo, "--json")
    assert r.code == 0, r.err
    assert rows(dst) == rows(src)

    # Errors: one line, exit code, nothing written.
    other_repo = f"s3://{name}-other"
    base = ["--table", "t", "--from", SRC, "--to", DST, "--repo", other_repo]
    r = cli("snapshot", "--rds-instance", "nope", "--database", src, *base, env=local)
    assert r.code == 3
    assert one_error_line(r.err) == "error: RDS instance 'nope' (us-east-1) not found"
    rds.create_db_instance(DBInstanceIdentifier=f"{instance}-pg", DBInstanceClass="db.t3.micro", Engine="postgres",
                           MasterUsername="admin", MasterUserPassword="not-used-by-backupctl")
    r = cli("snapshot", "--rds-instance", f"{instance}-pg", "--database", src, *base, env=local)
    assert r.code == 2
    assert one_error_line(r.err) == (f"error: RDS instance '{instance}-pg' (us-east-1) runs postgres: "
                                     "--rds-instance takes mysql, mariadb, aurora-mysql instances")
    r = cli("snapshot", "--rds-instance", instance, "--source", f"mysql://root@{HOST}/{src}", *base)
    assert r.code == 2
    assert one_error_line(r.err) == "error: --rds-instance and --source are two ways to name the source: give one"
    # The master user has a password: without one (no secret) it is refused, exit 6.
    r = cli("snapshot", "--rds-instance", instance, "--database", src, *base, env={**local, "MYSQL_PWD": None,
                                                                                  "HOME": "/nonexistent"})
    assert r.code == 6, r.err
    assert "access denied" in one_error_line(r.err)
    assert not bucket_exists(aws, f"{name}-other")


@pytest.fixture
def pg_role() -> Iterator[tuple[str, str]]:
    """A PostgreSQL login role and a schema it owns."""
    hexid = uuid.uuid4().hex[:10]
    role, schema = f"bk_sec_{hexid}", f"bk_sec_{hexid}"
    with psycopg.connect(**PG, autocommit=True) as c:  # type: ignore[arg-type]
        c.execute(f'CREATE ROLE "{role}" LOGIN')
        c.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{role}"')
    try:
        yield role, schema
    finally:
        with psycopg.connect(**PG, autocommit=True) as c:  # type: ignore[arg-type]
            c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            c.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_secret_id_for_postgres_restore(aws: AwsContext, cli, env: dict[str, str], pg_role, name: str) -> None:  # type: ignore[no-untyped-def]
    role, schema = pg_role
    src = env["src"]
    repo = f"s3://{name}-repo"
    r = cli("snapshot", "--source", f"mysql://root@{HOST}:{PORT}/{src}", "--table", "t", "--from", SRC, "--to", DST,
            "--repo", repo, "--json")
    assert r.code == 0, r.err
    sid = one_json(r.out)["snapshot_id"]
    # A secret as Redshift manages it, in the target region; the URI names no user: the secret's is used.
    put_secret(aws, DST, f"{name}/rs", json.dumps({"username": role, "password": "pg-secret-pw",
                                                    "engine": "redshift", "dbClusterIdentifier": "c1"}))
    r = cli("restore", sid, "--to", "postgres://127.0.0.1:5432/test", "--table", f"{schema}.t", "--region", DST,
            "--repo", repo, "--secret-id", f"{name}/rs", "--json")
    assert r.code == 0, r.err
    assert one_json(r.out)["rows"] == 50 and "pg-secret-pw" not in r.out + r.err
    with psycopg.connect(**PG) as c:  # type: ignore[arg-type]
        owner = c.execute("SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 't'",
                          (schema,)).fetchone()
        assert owner == (role,)  # created by the secret's user
        assert c.execute(f'SELECT COUNT(*) FROM "{schema}".t').fetchone() == (50,)

    # A missing secret: exit 3, one line.
    r = cli("restore", sid, "--to", "postgres://127.0.0.1:5432/test", "--table", f"{schema}.t", "--region", DST,
            "--repo", repo, "--secret-id", f"{name}/missing")
    assert r.code == 3, r.err
    assert one_error_line(r.err) == f"error: secret '{name}/missing' (us-west-2) does not exist in Secrets Manager"
