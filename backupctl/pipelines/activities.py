"""Activities: what one step of a playbook does, as calls of backupctl's library.

``Snapshot`` (snapshot_dynamodb / snapshot_mysql), ``Restore``
(restore_dynamodb / restore_mysql / restore_redshift), ``Verify``
(verify_snapshot, and against a live DynamoDB or MySQL table), ``ShellCommand`` (``sh -c``)
and ``DropTarget`` (drops a node marked ``scratch: true``; absent is fine, so
it is idempotent). Each returns a JSON-able dict of outputs (e.g.
``snapshot_id``) that later activities can refer to; each failure is a
``BackupctlError`` with its documented exit code. ``AwsCli`` runs the AWS
CLI (``aws`` with the run's endpoint and region), ``EmrStep`` runs one EMR
step (on ``cluster``, else on a transient cluster; engines/emr.py) and ``Sql``
runs statements in one transaction on a MySQL or Redshift/PostgreSQL node.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions

from backupctl.aws import AwsContext
from backupctl.errors import BackupctlError, InvalidInput, NotFound, VerificationFailed
from backupctl.model import source_key
from backupctl.pipelines.model import Activity, Node, Playbook
from backupctl.repository import Repository
from backupctl.retry import DEFAULT_POLICY

Say = Callable[[str], None]


class ActivityFailed(BackupctlError):
    """An activity failed with its own exit code (e.g. a ShellCommand's exit status)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class RunContext:
    """What activities of one run share: AWS access, the playbook, earlier outputs, output callbacks."""

    aws: AwsContext
    playbook: Playbook
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    say: Say = lambda _m: None  # noqa: E731
    progress_factory: Callable[[str, int | None], Any] | None = None
    snapshot_id: str | None = None  # a runbook run's selected snapshot (`snapshot: selected`)

    def node(self, name: Any) -> Node:
        return self.playbook.nodes[str(name)]

    def env(self) -> dict[str, str]:
        """Environment for shell commands: the run id, the endpoint, and every variable (BACKUPCTL_VAR_NAME)."""
        env = {"BACKUPCTL_RUN_ID": self.playbook.run_id, "BACKUPCTL_PLAYBOOK": self.playbook.name}
        if self.snapshot_id:
            env["BACKUPCTL_SNAPSHOT_ID"] = self.snapshot_id
        if self.aws.endpoint_url:
            env["BACKUPCTL_ENDPOINT_URL"] = self.aws.endpoint_url
        for k, v in self.playbook.variables.items():
            env["BACKUPCTL_VAR_" + k.upper()] = str(v)
        return env


def _options(cls: type, base: dict[str, Any], extra: dict[str, Any], what: str) -> Any:
    """Build an options dataclass from node fields plus a playbook's ``options:`` (unknown keys refused)."""
    names = {f.name for f in dataclasses.fields(cls)}
    allowed = sorted(names - set(base))
    for k in extra:
        if k not in allowed:
            raise InvalidInput(f"{what}: unknown option '{k}' (expected one of {', '.join(allowed)})")
    return cls(**base, **extra)


def _source_key(node: Node) -> str:
    if node.type == "DynamoDBTable":
        return source_key("dynamodb", str(node.get("region")), str(node.get("table")))
    from backupctl.mysql_conn import parse_mysql_uri

    db = parse_mysql_uri(str(node.get("uri")), "uri")[3]
    return source_key("mysql", str(node.get("region")), f"{db}.{node.get('table')}")


def latest_snapshot(aws: AwsContext, repo_node: Node, source: Node) -> dict[str, Any]:
    """The newest committed snapshot of ``source`` in the repository: {snapshot_id, created_at, ...}."""
    repo = Repository.open(aws, str(repo_node.get("region")), repo_node.get("uri"))
    found = [m for m in repo.list_snapshots(_source_key(source))]
    if not found:
        raise NotFound(f"no snapshot of {source.describe()} in {repo.uri}")
    m = max(found, key=lambda m: (m.created_at, m.id))
    return {"snapshot_id": m.id, "created_at": m.created_at, "rows": m.rows, "digest": m.content_digest}


def resolve_snapshot(ctx: RunContext, act: Activity) -> str:
    """The snapshot id a Restore or Verify names: an activity's output, ``latest``, ``selected`` or an id."""
    snap = str(act.get("snapshot"))
    if snap == "selected":
        if not ctx.snapshot_id:
            raise InvalidInput(f"activity '{act.name}': snapshot: selected is chosen by `backupctl runbook run`")
        return ctx.snapshot_id
    if snap in ctx.playbook.activities:
        out = ctx.outputs.get(snap) or {}
        if "snapshot_id" not in out:
            raise InvalidInput(f"activity '{act.name}': activity '{snap}' produced no snapshot_id")
        return str(out["snapshot_id"])
    if snap == "latest":
        return str(latest_snapshot(ctx.aws, ctx.node(act.get("input")), ctx.node(act.get("source")))["snapshot_id"])
    return snap


def snapshot(ctx: RunContext, act: Activity) -> dict[str, Any]:
    from backupctl.snapshot import (
        DynamoSnapshotOptions,
        MySQLSnapshotOptions,
        snapshot_dynamodb,
        snapshot_mysql,
    )

    src, repo = ctx.node(act.get("input")), ctx.node(act.get("output"))
    opts = dict(act.get("options") or {})
    base: dict[str, Any] = {"table": src.get("table"), "source_region": src.get("region"),
                            "target_region": repo.get("region"), "repo_uri": repo.get("uri")}
    what = f"activity '{act.name}'"
    if src.type == "DynamoDBTable":
        result = snapshot_dynamodb(ctx.aws, _options(DynamoSnapshotOptions, base, opts, what),
                                   ctx.progress_factory, ctx.say)
    else:
        base.update(source_uri=src.get("uri"), password_file=src.get("password_file"))
        result = snapshot_mysql(ctx.aws, _options(MySQLSnapshotOptions, base, opts, what), ctx.progress_factory,
                                ctx.say)
    out = result.to_json()
    out["created_at"] = result.manifest.created_at
    return out


def restore(ctx: RunContext, act: Activity) -> dict[str, Any]:
    from backupctl.restore import (
        DynamoRestoreOptions,
        MySQLRestoreOptions,
        RedshiftRestoreOptions,
        restore_dynamodb,
        restore_mysql,
        restore_redshift,
    )

    repo, tgt = ctx.node(act.get("input")), ctx.node(act.get("output"))
    sid = resolve_snapshot(ctx, act)
    opts = dict(act.get("options") or {})
    what = f"activity '{act.name}'"
    region = str(repo.get("region"))
    if tgt.type == "DynamoDBTable":
        if tgt.get("region") != region:
            raise InvalidInput(f"{what}: a DynamoDB target must be in the repository's region {region}, "
                               f"not {tgt.get('region')}")
        o = _options(DynamoRestoreOptions, {"snapshot_id": sid, "table": tgt.get("table"), "region": region,
                                            "repo_uri": repo.get("uri")}, opts, what)
        return restore_dynamodb(ctx.aws, o, None, ctx.progress_factory, ctx.say)
    if tgt.type == "MySQLTable":
        o = _options(MySQLRestoreOptions, {"snapshot_id": sid, "target_uri": tgt.get("uri"), "region": region,
                                           "table": tgt.get("table"), "repo_uri": repo.get("uri"),
                                           "password_file": tgt.get("password_file")}, opts, what)
        return restore_mysql(ctx.aws, o, None, ctx.progress_factory, ctx.say)
    o = _options(RedshiftRestoreOptions, {"snapshot_id": sid, "target_uri": tgt.get("uri"), "region": region,
                                          "table": tgt.get("table"), "repo_uri": repo.get("uri"),
                                          "iam_role": tgt.get("iam_role"),
                                          "password_file": tgt.get("password_file")}, opts, what)
    return restore_redshift(ctx.aws, o, ctx.progress_factory, ctx.say)


def verify(ctx: RunContext, act: Activity) -> dict[str, Any]:
    from backupctl.verify import verify_against_table, verify_snapshot

    repo = ctx.node(act.get("input"))
    sid = resolve_snapshot(ctx, act)
    region = str(repo.get("region"))
    report = verify_snapshot(ctx.aws, region, sid, repo.get("uri"))
    if not report["ok"]:
        raise VerificationFailed(f"snapshot {sid} failed verification: {'; '.join(report['problems'][:3])}")
    out: dict[str, Any] = {"snapshot_id": sid, "rows": report["rows"], "digest": report["digest"]}
    if act.get("against"):
        node = ctx.node(act.get("against"))
        if node.type == "MySQLTable":
            out["against"] = _verify_mysql_table(ctx, repo, sid, node)
            return out
        if node.type != "DynamoDBTable":
            raise InvalidInput(f"activity '{act.name}': against a {node.type} is not available yet")
        live = verify_against_table(ctx.aws, region, sid, str(node.get("table")), str(node.get("region")),
                                    repo.get("uri"))
        if not live["equal"]:
            raise VerificationFailed(
                f"table {node.get('table')} differs from snapshot {sid}: {live['table_rows']:,} items vs "
                f"{live['snapshot_rows']:,}, digest {live['table_digest'][:16]}... vs {live['snapshot_digest'][:16]}...")
        out["against"] = {"table": node.get("table"), "equal": True, "rows": live["table_rows"]}
    return out


def _verify_mysql_table(ctx: RunContext, repo_node: Node, sid: str, node: Node) -> dict[str, Any]:
    """Read a MySQL table back and compare its rows and digest with the snapshot's table digest.

    For an increment that is the digest of the whole table its chain restores.
    """
    from backupctl.mysql_conn import settings_from_uri
    from backupctl.sources.mysql import table_digest

    repo = Repository.open(ctx.aws, str(repo_node.get("region")), repo_node.get("uri"))
    prefix, m = repo.find_snapshot(sid)
    if m.source.get("kind") != "mysql":
        raise InvalidInput(f"snapshot {sid} is a {m.source.get('kind')} snapshot; {node.describe()} is a MySQL table")
    doc = repo.store.get_json(prefix + "manifest.json")
    td = doc.get("table_digest") or {"rows": m.rows, "value": m.content_digest}
    stored = [c for c in repo.read_schema(prefix, m)["columns"] if not c["generated"]]
    settings = settings_from_uri(str(node.get("uri")), node.get("password_file"), "uri")
    table = str(node.get("table"))
    live = table_digest(settings, settings.database, table, stored)
    if live.count != int(td["rows"]) or live.hexdigest() != str(td["value"]):
        raise VerificationFailed(
            f"table {settings.database}.{table} differs from snapshot {sid}: {live.count:,} rows vs "
            f"{int(td['rows']):,}, digest {live.hexdigest()[:16]}... vs {str(td['value'])[:16]}...")
    return {"table": f"{settings.database}.{table}", "equal": True, "rows": live.count, "digest": live.hexdigest()}


def shell_command(ctx: RunContext, act: Activity, timeout_s: float | None = None) -> dict[str, Any]:
    """Run ``sh -c COMMAND``; exit status 0 succeeds, any other fails with that status as the exit code.

    The command runs in a session of its own; on a timeout or a cancel
    (Ctrl-C, SIGTERM, an agent losing its lease) the whole process group is
    killed, so no child of the command goes on working after its activity ended.
    """
    return _run_process(ctx, act, ["sh", "-c", str(act.get("command"))], timeout_s)


def _run_process(ctx: RunContext, act: Activity, argv: list[str], timeout_s: float | None) -> dict[str, Any]:
    env = {**os.environ, **ctx.env(), **{str(k): str(v) for k, v in (act.get("env") or {}).items()}}
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        stdout, stderr = p.communicate(timeout=timeout_s)
    except BaseException as e:
        _kill_group(p)
        if isinstance(e, subprocess.TimeoutExpired):
            from backupctl.pipelines.runner import ActivityTimedOut

            raise ActivityTimedOut(f"activity '{act.name}' timed out after {timeout_s:g}s") from e
        raise
    for line in stderr.strip().splitlines()[-5:]:
        ctx.say(f"  {act.name}: {line}")
    out = {"exit_status": p.returncode, "stdout": stdout[-4000:]}
    if p.returncode != 0:
        last = (stderr.strip().splitlines() or [""])[-1]
        raise ActivityFailed(f"activity '{act.name}': command exited {p.returncode}" + (f": {last}" if last else ""),
                             exit_code=min(max(p.returncode, 1), 125))
    return out


def aws_cli_argv() -> list[str]:
    """How to run the AWS CLI: this interpreter's ``awscli`` module, else ``aws`` on PATH."""
    if importlib.util.find_spec("awscli") is not None:
        return [sys.executable, "-m", "awscli"]
    found = shutil.which("aws")
    if found is None:
        raise InvalidInput("AwsCli activities need the AWS CLI: pip install awscli (or put `aws` on PATH)")
    return [found]


def aws_cli(ctx: RunContext, act: Activity, timeout_s: float | None = None) -> dict[str, Any]:
    """``aws COMMAND`` with the run's endpoint (the embedded one locally) and the activity's region."""
    args = shlex.split(str(act.get("command")))
    if args and args[0] == "aws":
        args = args[1:]
    if act.get("region") and "--region" not in args:
        args += ["--region", str(act.get("region"))]
    if ctx.aws.endpoint_url and "--endpoint-url" not in args:
        args += ["--endpoint-url", ctx.aws.endpoint_url]
    return _run_process(ctx, act, aws_cli_argv() + args, timeout_s)


def _statements(act: Activity) -> list[str]:
    sql = act.get("sql")
    items = sql if isinstance(sql, list) else [sql]
    out = [str(x).strip().rstrip(";").strip() for x in items if str(x or "").strip()]
    if not out:
        raise InvalidInput(f"activity '{act.name}': sql is empty")
    return out


def sql(ctx: RunContext, act: Activity) -> dict[str, Any]:
    """Run the activity's statements in one transaction on its MySQL or Redshift/PostgreSQL node."""
    node = ctx.node(act.get("node"))
    statements = _statements(act)
    counts: list[int] = []
    where = f"activity '{act.name}' on {node.describe()}"
    if node.type == "MySQLTable":
        import pymysql

        from backupctl.mysql_conn import settings_from_uri

        settings = settings_from_uri(str(node.get("uri")), node.get("password_file"), f"nodes.{node.name}.uri")
        conn = settings.connect()
        try:
            conn.autocommit(False)
            with conn.cursor() as cur:
                for st in statements:
                    counts.append(int(cur.execute(st) or 0))
            conn.commit()
        except pymysql.MySQLError as e:
            conn.rollback()
            raise ActivityFailed(f"{where}: {e.args[-1] if e.args else e}; rolled back", exit_code=4) from e
        finally:
            conn.close()
    else:
        import psycopg

        from backupctl.pg_conn import settings_from_uri as pg_settings

        pgs = pg_settings(str(node.get("uri")), node.get("password_file"), f"nodes.{node.name}.uri")
        with pgs.connect() as pconn:
            try:
                with pconn.transaction(), pconn.cursor() as pcur:
                    for st in statements:
                        pcur.execute(st)  # type: ignore[arg-type]  # playbook SQL: the author's own statements
                        counts.append(max(0, pcur.rowcount))
            except psycopg.Error as e:
                raise ActivityFailed(f"{where}: {str(e).strip().splitlines()[0]}; rolled back", exit_code=4) from e
    ctx.say(f"{act.name}: {len(statements)} statement(s) committed on {node.describe()}")
    return {"statements": len(statements), "rows_affected": counts}


def emr_step(ctx: RunContext, act: Activity) -> dict[str, Any]:
    """One EMR step: ``step`` is AddJobFlowSteps' step (Name, HadoopJarStep with Jar/Args) or the short form
    ``{name, args, jar}``; on ``cluster`` (left running), else on a transient cluster."""
    from backupctl.engines.emr import EmrSettings, run_step

    raw = act.get("step") or {}
    if not isinstance(raw, dict):
        raise InvalidInput(f"activity '{act.name}': step must be a mapping")
    if "HadoopJarStep" in raw:
        step = dict(raw)
    else:
        args = raw.get("args") or []
        if not isinstance(args, list) or not args:
            raise InvalidInput(f"activity '{act.name}': step.args must be a non-empty list")
        step = {"Name": str(raw.get("name") or act.name),
                "HadoopJarStep": {"Jar": str(raw.get("jar") or "command-runner.jar"), "Args": [str(a) for a in args]}}
    step.setdefault("Name", act.name)
    if act.get("cluster"):
        step.setdefault("ActionOnFailure", "CONTINUE")
    region = str(act.get("region") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    settings = EmrSettings(cluster_id=str(act.get("cluster")) if act.get("cluster") else None,
                           deadline_s=act.timeout_s or EmrSettings().deadline_s)
    return run_step(ctx.aws, region, step, settings, ctx.say)


def _kill_group(p: subprocess.Popen[str]) -> None:
    """SIGKILL a command's process group, reap it, close its pipes."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    p.wait()
    for f in (p.stdout, p.stderr):
        if f is not None:
            f.close()


def drop_node(aws: AwsContext, node: Node, say: Say) -> dict[str, Any]:
    """Drop a scratch table if it exists. Idempotent. Returns {dropped: bool, target}."""
    if not node.scratch:
        raise InvalidInput(f"node '{node.name}' is not marked scratch: true; refusing to drop it")
    table = str(node.get("table"))
    if node.type == "DynamoDBTable":
        region = str(node.get("region"))
        ddb = aws.client("dynamodb", region)

        def delete() -> bool:
            try:
                ddb.delete_table(TableName=table)
                return True
            except botocore.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return False
                raise

        dropped = DEFAULT_POLICY.call(delete, f"deleting table {table}")

        def gone() -> bool | None:
            try:
                ddb.describe_table(TableName=table)
                return None
            except botocore.exceptions.ClientError as e:
                if e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                    return True
                raise

        if dropped:
            DEFAULT_POLICY.poll(gone, f"waiting for table {table} to be deleted", interval_s=0.2)
            say(f"dropped scratch table {table} ({region})")
        return {"dropped": dropped, "target": node.describe()}
    if node.type == "MySQLTable":
        from backupctl.mysql_conn import quote_ident, run_sql, settings_from_uri

        settings = settings_from_uri(str(node.get("uri")), node.get("password_file"), "uri")
        conn = settings.connect()
        try:
            exists = run_sql(conn, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema=%s "
                             "AND table_name=%s", (settings.database, table), "checking the scratch table")[0][0]
            run_sql(conn, f"DROP TABLE IF EXISTS {quote_ident(settings.database)}.{quote_ident(table)}", (),
                    f"dropping {settings.database}.{table}")
        finally:
            conn.close()
        if exists:
            say(f"dropped scratch table {settings.database}.{table}")
        return {"dropped": bool(exists), "target": f"{settings.describe()} {table}"}
    from backupctl import pg_conn

    pgs = pg_conn.settings_from_uri(str(node.get("uri")), node.get("password_file"), "uri")
    schema, _, name = table.rpartition(".")
    ref = (pg_conn.quote_ident(schema) + "." if schema else "") + pg_conn.quote_ident(name)
    pconn = pgs.connect()
    try:
        existed = pconn.execute("SELECT to_regclass(%s) IS NOT NULL", (ref,)).fetchone()
        pconn.execute(f"DROP TABLE IF EXISTS {ref}")
    finally:
        pconn.close()
    if existed and existed[0]:
        say(f"dropped scratch table {table} on {pgs.describe()}")
    return {"dropped": bool(existed and existed[0]), "target": f"{pgs.describe()} {table}"}


def drop_target(ctx: RunContext, act: Activity) -> dict[str, Any]:
    return drop_node(ctx.aws, ctx.node(act.get("node")), ctx.say)


RUNNERS: dict[str, Callable[[RunContext, Activity], dict[str, Any]]] = {
    "Snapshot": snapshot,
    "Restore": restore,
    "Verify": verify,
    "DropTarget": drop_target,
    "Sql": sql,
    "EmrStep": emr_step,
}


def run_activity(ctx: RunContext, act: Activity) -> dict[str, Any]:
    """Run one attempt of ``act``; returns its outputs or raises a BackupctlError."""
    if act.type == "ShellCommand":
        return shell_command(ctx, act, act.timeout_s)
    if act.type == "AwsCli":
        return aws_cli(ctx, act, act.timeout_s)
    fn = RUNNERS.get(act.type)
    if fn is None:
        raise InvalidInput(f"activity '{act.name}': type {act.type} is not available yet")
    return fn(ctx, act)
