"""No password, secret or session token is ever written or shown (issue 7, item 7, the secrets half).

One run of every flow that handles a credential - MySQL snapshots (password
from a Secrets Manager secret, worker processes, a password file), restores
into MySQL and into PostgreSQL (password file, secret), a drill, a pipeline
with a shell command, a runbook, a schedule run by an agent, the read-only
commands, and failing runs (wrong password, with --debug; an unreadable
~/.my.cnf holding the password) - with an AWS secret key and session token in
the environment. Then everything those runs left or showed is scanned for the
MySQL password, the PostgreSQL password, the wrong password, the AWS secret key
and the session token:

* the argv of every process on the machine while the runs went on (sampled from
  /proc; the shell command and the worker processes are seen, so the sampler works);
* every version of every object in the repository (manifests, schemas, checkpoints
  and pending records deleted on commit, drill and runbook records, agent logs);
* the control table (schedules, run records and their history);
* stdout, stderr and ``--json`` of every run, and the drill report page.

MariaDB (a user with a real password) at 127.0.0.1:3306, PostgreSQL (a role with
a password; local trust authentication ignores it, it is passed all the same) at
127.0.0.1:5432, AWS on the moto server.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backupctl.aws import AwsContext
from tests.harness.cli_forker import CliForker, Run
from tests.integration.helpers import one_json
from tests.integration.mysql_db import HOST, PORT, connect, scratch_databases, server_up

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


def _pg_up() -> bool:
    try:
        psycopg.connect(**PG).close()  # type: ignore[arg-type]
        return True
    except psycopg.Error:
        return False


if not (server_up() and _pg_up()):  # pragma: no cover
    pytest.skip("MariaDB at 127.0.0.1:3306 or PostgreSQL at 127.0.0.1:5432 is not running", allow_module_level=True)


class ArgvSampler(threading.Thread):
    """Every few ms, the command line of every process on the machine (from /proc), until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: set[str] = set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue  # gone
                if raw:
                    self.seen.add(raw.replace(b"\0", b" ").decode("utf-8", "replace").strip())
            self.done.wait(0.003)

    def stop(self) -> set[str]:
        self.done.set()
        self.join(timeout=10)
        return self.seen


@pytest.fixture
def creds(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A MariaDB user and a PostgreSQL role with passwords, their files, distinctive AWS credentials."""
    hexid = uuid.uuid4().hex[:10]
    c: dict[str, Any] = {
        "user": f"bk_scan_{hexid}", "role": f"bk_scan_{hexid}", "schema": f"bk_scan_{hexid}",
        # Letters, digits and dashes only: JSON, URL or HTML escaping cannot hide a leak from the scan.
        "mysql_pw": f"MyPw-{hexid}-q7Zx", "pg_pw": f"PgPw-{hexid}-w3Rt", "wrong_pw": f"WrongPw-{hexid}-k2Lm",
        "aws_secret": f"AwsSecretKey-{hexid}-v9Gh", "aws_token": f"SessionToken-{hexid}-f4Dc",
    }
    for key, value in (("mysql_pw_file", c["mysql_pw"]), ("pg_pw_file", c["pg_pw"]), ("wrong_pw_file", c["wrong_pw"])):
        (tmp_path / key).write_text(value + "\n")
        c[key] = str(tmp_path / key)
    (tmp_path / "home").mkdir()
    c["home"] = str(tmp_path / "home")  # no ~/.my.cnf, no ~/.pgpass
    with psycopg.connect(**PG, autocommit=True) as pg:  # type: ignore[arg-type]
        pg.execute(f'CREATE ROLE "{c["role"]}" LOGIN PASSWORD \'{c["pg_pw"]}\'')
        pg.execute(f'CREATE SCHEMA "{c["schema"]}" AUTHORIZATION "{c["role"]}"')
    try:
        yield c
    finally:
        with psycopg.connect(**PG, autocommit=True) as pg:  # type: ignore[arg-type]
            pg.execute(f'DROP SCHEMA IF EXISTS "{c["schema"]}" CASCADE')
            pg.execute(f'DROP ROLE IF EXISTS "{c["role"]}"')


@pytest.fixture
def dbs(creds: dict[str, Any]) -> Iterator[tuple[str, str]]:
    user, pw = creds["user"], creds["mysql_pw"]

    def fill(cur: Any, src: str, dst: str) -> None:
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, pw))
        for db in (src, dst):
            cur.execute(f"GRANT ALL PRIVILEGES ON {db}.* TO %s@'%%'", (user,))
        cur.execute(f"CREATE TABLE {src}.orders (id INT PRIMARY KEY, note VARCHAR(40), amount DECIMAL(10,2))")
        cur.executemany(f"INSERT INTO {src}.orders VALUES (%s, %s, %s)", [(i, f"n{i}", i * 1.25) for i in range(1, 301)])

    try:
        with scratch_databases("bk_scan", fill) as pair:
            yield pair
    finally:
        c = connect()
        with c.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        c.close()


def playbooks(tmp: Path, c: dict[str, Any], src: str, dst: str, repo: str) -> dict[str, str]:
    """A drill, a pipeline (also scheduled) and a runbook; every MySQL/PostgreSQL node has its password file."""
    my = f"mysql://{c['user']}@{HOST}:{PORT}"
    nodes = f"""
nodes:
  orders: {{type: MySQLTable, uri: "{my}/{src}", table: orders, region: {SRC}, password_file: "{c['mysql_pw_file']}"}}
  repo: {{type: S3Repository, region: {DST}, uri: "{repo}"}}
  copy: {{type: MySQLTable, uri: "{my}/{dst}", table: "${{target}}", region: {DST}, password_file: "{c['mysql_pw_file']}"}}
  warehouse: {{type: RedshiftTable, uri: "postgres://{c['role']}@127.0.0.1:5432/test", table: "{c['schema']}.${{target}}",
               region: {DST}, password_file: "{c['pg_pw_file']}"}}
"""
    drill = f"""version: 1
kind: drill
name: scan-drill
nodes:
  orders: {{type: MySQLTable, uri: "{my}/{src}", table: orders, region: {SRC}, password_file: "{c['mysql_pw_file']}"}}
  repo: {{type: S3Repository, region: {DST}, uri: "{repo}"}}
  scratch: {{type: MySQLTable, uri: "{my}/{dst}", table: "drill_${{scratch_suffix}}", region: {DST}, scratch: true,
             password_file: "{c['mysql_pw_file']}"}}
drill: {{source: orders, repository: repo, target: scratch, snapshot: take, samples: 5}}
"""
    pipeline = f"""version: 1
kind: pipeline
name: scan-pipeline
variables: {{target: t_pipe}}
schedule: {{cron: "0 3 * * *", start: 2026-01-01T00:00:00Z, max_backfill: 1}}
{nodes}
activities:
  snap: {{type: Snapshot, input: orders, output: repo, options: {{consistency: none, chunk_rows: 100}}}}
  restore: {{type: Restore, input: repo, output: copy, snapshot: snap}}
  warehouse: {{type: Restore, input: repo, output: warehouse, snapshot: snap}}
  check: {{type: Verify, input: repo, snapshot: snap, against: copy, depends_on: [restore]}}
  shell: {{type: ShellCommand, command: "sleep 0.3; echo scan-shell-$BACKUPCTL_RUN_ID", depends_on: [check]}}
"""
    runbook = f"""version: 1
kind: runbook
name: scan-runbook
variables: {{target: t_runbook}}
{nodes}
runbook: {{source: orders, repository: repo}}
activities:
  restore: {{type: Restore, input: repo, output: copy, snapshot: selected, options: {{mode: new}}}}
  verify: {{type: Verify, input: repo, snapshot: selected, against: copy, depends_on: [restore]}}
"""
    out = {}
    for key, text in (("drill", drill), ("pipeline", pipeline), ("runbook", runbook)):
        (tmp / f"{key}.yaml").write_text(text)
        out[key] = str(tmp / f"{key}.yaml")
    return out


def all_object_versions(aws: AwsContext, bucket: str) -> dict[str, bytes]:
    """Every version of every object (run state deleted on commit is still there as a noncurrent version)."""
    s3 = aws.client("s3", DST)
    out = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            body = s3.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
            out[f"{v['Key']}@{v['VersionId']}"] = body
    return out


def test_no_secret_in_argv_objects_records_logs_or_output(aws: AwsContext, moto_server: str, creds, dbs,  # type: ignore[no-untyped-def]
                                                         tmp_path: Path, name: str) -> None:
    c = creds
    src, dst = dbs
    repo_bucket, repo = f"{name}-repo", f"s3://{name}-repo"
    control = f"{name}-control"
    sm_src, sm_dst = aws.client("secretsmanager", SRC), aws.client("secretsmanager", DST)
    sm_src.create_secret(Name=f"{name}/mysql", SecretString=json.dumps({"username": c["user"], "password": c["mysql_pw"]}))
    sm_dst.create_secret(Name=f"{name}/mysql", SecretString=c["mysql_pw"])
    sm_dst.create_secret(Name=f"{name}/pg", SecretString=json.dumps({"username": c["role"], "password": c["pg_pw"]}))
    sm_dst.create_secret(Name=f"{name}/wrong", SecretString=c["wrong_pw"])
    books = playbooks(tmp_path, c, src, dst, repo)
    env = {k: v for k, v in os.environ.items() if k not in ("MYSQL_PWD", "PGPASSWORD", "PGPASSFILE")}
    env.update({"HOME": c["home"], "COLUMNS": "200", "BACKUPCTL_ENDPOINT_URL": moto_server,
                "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7SCANTEST", "AWS_SECRET_ACCESS_KEY": c["aws_secret"],
                "AWS_SESSION_TOKEN": c["aws_token"], "BACKUPCTL_CONTROL_REGION": DST,
                "BACKUPCTL_CONTROL_TABLE": control})
    runs: list[tuple[list[str], Run]] = []

    def run(forker: CliForker, *args: str, code: int = 0) -> Any:
        r = forker.run(list(args), timeout=180)
        runs.append((list(args), r))
        assert r.code == code, f"backupctl {' '.join(args)}: exit {r.code}\n{r.err}"
        return one_json(r.out) if code == 0 and "--json" in args else None

    my_src, my_dst = f"mysql://{HOST}:{PORT}/{src}", f"mysql://{c['user']}@{HOST}:{PORT}/{dst}"
    sampler = ArgvSampler()
    sampler.start()
    try:
        with CliForker(env) as f:
            # Snapshots: the user and password from a JSON secret, chunks in worker processes; a password file.
            snap = run(f, "snapshot", "--source", my_src, "--table", "orders", "--from", SRC, "--to", DST,
                       "--repo", repo, "--secret-id", f"{name}/mysql", "--chunk-rows", "100", "--processes", "2",
                       "--consistency", "none", "--json")
            assert snap["rows"] == 300
            run(f, "snapshot", "--source", f"mysql://{c['user']}@{HOST}:{PORT}/{src}", "--table", "orders",
                "--from", SRC, "--to", DST, "--repo", repo, "--password-file", c["mysql_pw_file"], "--json")
            sid = snap["snapshot_id"]
            # Restores: MySQL with a plain-string secret (loads in worker processes), PostgreSQL with a password file and with a JSON secret.
            assert run(f, "restore", sid, "--to", my_dst, "--table", "t_secret", "--region", DST, "--repo", repo,
                       "--secret-id", f"{name}/mysql", "--processes", "2", "--json")["rows"] == 300
            pg = "postgres://127.0.0.1:5432/test"
            run(f, "restore", sid, "--to", f"postgres://{c['role']}@127.0.0.1:5432/test", "--table",
                f"{c['schema']}.t_file", "--region", DST, "--repo", repo, "--password-file", c["pg_pw_file"], "--json")
            run(f, "restore", sid, "--to", pg, "--table", f"{c['schema']}.t_secret", "--region", DST, "--repo", repo,
                "--secret-id", f"{name}/pg", "--json")
            # A drill, a pipeline (with a shell command), a runbook, a schedule run by an agent.
            assert run(f, "drill", "run", books["drill"], "--json")["passed"] is True
            run(f, "pipeline", "run", books["pipeline"], "--json")
            assert run(f, "runbook", "run", books["runbook"], "--yes", "--json")["outcome"] == "succeeded"
            run(f, "schedule", "add", books["pipeline"], "--var", "target=t_agent", "--region", DST, "--json")
            agent = run(f, "agent", "--once", "--region", DST, "--json")
            assert [r["state"] for r in agent["runs"]] == ["SUCCEEDED"], agent
            # Read-only commands.
            run(f, "snapshots", "list", "--repo", repo, "--json")
            run(f, "snapshots", "show", sid, "--repo", repo, "--json")
            run(f, "snapshots", "verify", sid, "--repo", repo, "--json")
            run(f, "status", "--repo", repo, "--json")
            run(f, "runs", "list", "--region", DST, "--json")
            run(f, "runs", "show", agent["runs"][0]["run_id"], "--region", DST, "--json")
            report = tmp_path / "report.html"
            run(f, "drill", "report", "--repo", repo, "--out", str(report))
            # Failures: a wrong password from a file (with --debug: a traceback) and from a secret.
            run(f, "--debug", "snapshot", "--source", f"mysql://{c['user']}@{HOST}:{PORT}/{src}", "--table", "orders",
                "--from", SRC, "--to", DST, "--repo", repo, "--password-file", c["wrong_pw_file"], code=6)
            run(f, "restore", sid, "--to", my_dst, "--table", "t_wrong", "--region", DST, "--repo", repo,
                "--secret-id", f"{name}/wrong", code=6)
        # ~/.my.cnf that configparser cannot read, holding the password: one line that does not quote it.
        Path(c["home"], ".my.cnf").write_text(f"password={c['mysql_pw']}\n")
        with CliForker(env) as f:
            for debug in ([], ["--debug"]):
                run(f, *debug, "snapshot", "--source", f"mysql://{c['user']}@{HOST}:{PORT}/{src}", "--table",
                    "orders", "--from", SRC, "--to", DST, "--repo", repo, code=2)
    finally:
        argv = sampler.stop()

    secrets = {k: c[k] for k in ("mysql_pw", "pg_pw", "wrong_pw", "aws_secret", "aws_token")}

    def leaks(text: str | bytes) -> list[str]:
        data = text if isinstance(text, bytes) else text.encode()
        return [k for k, v in secrets.items() if v.encode() in data]

    # argv: the sampler saw the runs' children (the shell command, the snapshot's worker processes).
    assert any("scan-shell-" in a and a.startswith("sh -c") for a in argv), sorted(argv)
    assert any("multiprocessing" in a for a in argv), sorted(argv)
    assert [a for a in argv if leaks(a)] == []

    # Every output; --json documents included.
    for args, r in runs:
        assert not leaks(r.out + r.err), (args, leaks(r.out + r.err), r.out, r.err)
    cnf_error = [ln for ln in runs[-2][1].err.splitlines() if ln.strip()]
    assert len(cnf_error) == 1 and ".my.cnf: line 1 is not under a [group] header" in cnf_error[0]
    # --debug really printed tracebacks (and they hold no password): the wrong one, the ~/.my.cnf one.
    assert "Traceback" in runs[-4][1].err and "Traceback" in runs[-1][1].err
    assert not leaks(report.read_bytes())

    # Every version of every repository object: manifests, schemas, checkpoints and pending records
    # (deleted on commit), drill and runbook records, the agent's log.
    objects = all_object_versions(aws, repo_bucket)
    keys = {k.split("@")[0] for k in objects}
    for prefix in ("runs/agent/", "runs/runbooks/scan-runbook/", "drills/", "runs/pending/", "runs/readers/"):
        assert any(k.startswith(prefix) for k in keys), (prefix, sorted(keys))
    assert any("/_tasks/" in k for k in keys) and any(k.endswith("/manifest.json") for k in keys)
    assert {k: leaks(v) for k, v in objects.items() if leaks(v)} == {}

    # The control table: the schedule (with its playbook), the run record and its history.
    items = []
    ddb = aws.client("dynamodb", DST)
    for page in ddb.get_paginator("scan").paginate(TableName=control):
        items += page["Items"]
    assert len(items) >= 2
    assert [i for i in items if leaks(json.dumps(i))] == []
