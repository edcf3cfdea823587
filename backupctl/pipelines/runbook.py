"""Restore runbooks: a playbook (``kind: runbook``) a person follows during an incident.

``backupctl runbook run FILE [--at TIME|SNAPSHOT_ID] [--yes] [--dry-run]``:

1. **Select the snapshot** (``select_snapshot``) among the snapshots of the
   runbook's ``source`` in its ``repository``: ``--at SNAPSHOT_ID`` takes that
   one (it must be a snapshot of the source), ``--at TIME`` the newest one
   taken (manifest ``created_at``) at or before TIME - a full snapshot or an
   increment, whose restore restores its whole chain -, and no ``--at`` the
   newest. Activities name it ``snapshot: selected``.
2. **Plan** (``plan_runbook``): the activities in order, what each does, its
   target, and which ask first: a destructive step (a Restore in mode
   replace/truncate - Redshift insert mode TRUNCATE - into a target that
   exists and holds data, a DropTarget, a Sql) or one marked ``confirm: true``.
3. **Run** (``run_runbook``) through the pipeline runner (preconditions,
   retries, timeouts, ``run_on: always`` clean-up). Before each step that asks,
   after its preconditions held, the target is looked at again and the
   ``Confirmer`` asks on the terminal (``--yes`` answers yes for every step). A
   "no" marks the step ``declined``: it did not run, the rest is skipped except
   clean-up, and the run's outcome is ``declined`` (exit 4).
4. **Record** (``record_run``) what ran, when, by whom (the AWS caller identity
   from STS GetCallerIdentity, the OS user and host), the answers given and the
   outcome, as ``runs/runbooks/<runbook>/<record-id>.json`` in the repository
   (also when a step failed, was declined or the run was interrupted).

A run refused before its first step (a bad ``--at``, no snapshot, questions
that no terminal can answer) changes nothing and is not recorded.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from backupctl.aws import AwsContext
from backupctl.errors import BackupctlError, InvalidInput, SnapshotNotFound
from backupctl.model import SNAPSHOT_ID_RE, Manifest, isoformat, parse_time, utcnow
from backupctl.pipelines import activities as acts
from backupctl.pipelines.model import SELECTED, Activity, Node, Playbook
from backupctl.pipelines.runner import Declined, PipelineResult, run_pipeline
from backupctl.repository import Repository

RECORD_PREFIX = "runs/runbooks/"
# Restore modes that empty or drop an existing target (per target node type).
DESTRUCTIVE_MODES = {"DynamoDBTable": ("replace",), "MySQLTable": ("replace", "truncate"),
                     "RedshiftTable": ("TRUNCATE",)}
YES_ANSWERS = ("y", "yes")


# -- choosing the snapshot ------------------------------------------------------------------

_AT_HELP = ("expected a time (2026-01-05T03:00:00Z; UTC unless it has an offset) or a snapshot id "
            "(20260105T030000Z-1a2b3c)")


def parse_at(text: str) -> str | datetime:
    """``--at``: a snapshot id (returned as is) or a time (an aware datetime; no offset means UTC)."""
    value = (text or "").strip()
    if SNAPSHOT_ID_RE.match(value):
        return value
    if not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise InvalidInput(f"--at {text!r}: {_AT_HELP}")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"--at {text!r}: {_AT_HELP}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def choose_at_time(manifests: list[Manifest], when: datetime | None, what: str) -> Manifest:
    """The newest snapshot taken (``created_at``) at or before ``when``; the newest of all for None.

    Raises SnapshotNotFound (exit 3) naming the oldest snapshot when every one is newer than ``when``.
    """
    if not manifests:
        raise SnapshotNotFound(f"no snapshot of {what} in the repository")
    ordered = sorted(manifests, key=lambda m: (parse_time(m.created_at), m.id))
    if when is None:
        return ordered[-1]
    eligible = [m for m in ordered if parse_time(m.created_at) <= when]
    if not eligible:
        first = ordered[0]
        raise SnapshotNotFound(f"no snapshot of {what} was taken at or before {isoformat(when)}: the oldest, "
                               f"{first.id}, was taken at {first.created_at}")
    return eligible[-1]


@dataclass
class Selection:
    """The snapshot a runbook run restores, and how it was chosen."""

    snapshot_id: str
    source_key: str
    created_at: str
    completed_at: str
    mode: str  # full | incremental
    rows: int  # the rows of the table the restore produces (for an increment: of the whole chain)
    digest: str  # that table's content digest
    chain: list[str]  # snapshot ids a restore applies, oldest first (one for a full snapshot)
    chosen_by: str  # latest | time | id
    at: str | None = None  # the --at time (ISO 8601 UTC) or id

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def select_snapshot(repo: Repository, source: Node, at: str | datetime | None) -> Selection:
    """The snapshot of ``source`` a runbook run restores (see the module doc). Raises before anything runs."""
    from backupctl.restore import mysql_chain

    sk = acts._source_key(source)
    what = f"{source.describe()} ({sk})"
    if isinstance(at, str):
        prefix, m = repo.find_snapshot(at)
        if m.source_key != sk:
            raise InvalidInput(f"--at {at}: snapshot {at} is a snapshot of {m.source_key}, not of the runbook's "
                               f"source {what}")
        doc = dict(repo.store.get_json(prefix + "manifest.json"))
        chosen_by = "id"
    else:
        m = choose_at_time(repo.list_snapshots(sk), at, what)
        prefix, chosen_by = repo.snapshot_prefix(sk, m.id), ("time" if at is not None else "latest")
        doc = dict(repo.store.get_json(prefix + "manifest.json"))
    chain = [link.manifest.id for link in mysql_chain(repo, prefix, m)] if m.mode == "incremental" else [m.id]
    td = doc.get("table_digest")
    rows, digest = (int(td["rows"]), str(td["value"])) if isinstance(td, dict) else (m.rows, m.content_digest)
    at_text = None if at is None else (at if isinstance(at, str) else isoformat(at))
    return Selection(snapshot_id=m.id, source_key=sk, created_at=m.created_at, completed_at=m.completed_at,
                     mode=m.mode, rows=rows, digest=digest, chain=chain, chosen_by=chosen_by, at=at_text)


# -- asking ---------------------------------------------------------------------------------


class Confirmer:
    """Asks a person before a step; ``yes`` answers every question in advance (--yes).

    Questions are shown with ``show`` (stderr) and answered on ``stdin``: ``y``
    or ``yes`` go ahead; anything else, an empty line or the end of input is no.
    Without ``yes`` and without a terminal on stdin nobody can answer: ``ask``
    raises Declined (``run_runbook``'s caller refuses such a run before it starts).
    Every answer is kept in ``answers`` for the run record.
    """

    def __init__(self, yes: bool, stdin: TextIO, show: Callable[[str], None]) -> None:
        self.yes = yes
        self.stdin = stdin
        self.show = show  # Console.ask: stderr, no newline, also when quiet
        self.answers: list[dict[str, Any]] = []

    def interactive(self) -> bool:
        try:
            return bool(self.stdin.isatty())
        except (AttributeError, ValueError):  # closed or not a file
            return False

    def can_ask(self) -> bool:
        return self.yes or self.interactive()

    def ask(self, step: str, question: str) -> bool:
        if self.yes:
            answer, ok = "--yes", True
        elif not self.interactive():
            self.answers.append({"step": step, "question": question, "answer": "not asked: stdin is not a terminal",
                                 "at": isoformat(utcnow())})
            raise Declined(f"'{step}' needs a confirmation and stdin is not a terminal (pass --yes to run unattended)")
        else:
            self.show(f"{question} [y/N] ")
            line = self.stdin.readline()
            answer = line.strip() if line else "(end of input)"
            ok = answer.lower() in YES_ANSWERS
        self.answers.append({"step": step, "question": question, "answer": answer, "confirmed": ok,
                             "at": isoformat(utcnow())})
        return ok


# -- the plan -------------------------------------------------------------------------------


def restore_mode(act: Activity, target: Node) -> str:
    opts = act.get("options") or {}
    if target.type == "RedshiftTable":
        return str(opts.get("insert_mode") or "OVERWRITE_EXISTING").upper()
    return str(opts.get("mode") or "new")


def target_state(aws: AwsContext, node: Node) -> tuple[bool, bool]:
    """(exists, empty) of a table node, read without changing anything."""
    table = str(node.get("table"))
    if node.type == "DynamoDBTable":
        from backupctl.targets import dynamodb as ddb_target

        region = str(node.get("region"))
        exists = ddb_target.table_state(aws, region, table) is not None
        return exists, (ddb_target.is_empty(aws, region, table) if exists else True)
    if node.type == "MySQLTable":
        from backupctl.mysql_conn import settings_from_uri
        from backupctl.targets import mysql as mysql_target

        settings = settings_from_uri(str(node.get("uri")), node.get("password_file"), "uri")
        conn = settings.connect()
        try:
            exists = mysql_target.target_columns(conn, settings.database, table) is not None
            return exists, (mysql_target.is_empty(conn, settings.database, table) if exists else True)
        finally:
            conn.close()
    from backupctl import pg_conn

    pgs = pg_conn.settings_from_uri(str(node.get("uri")), node.get("password_file"), "uri")
    schema, _, name = table.rpartition(".")
    ref = (pg_conn.quote_ident(schema) + "." if schema else "") + pg_conn.quote_ident(name)
    pconn = pgs.connect()
    try:
        row = pconn.execute("SELECT to_regclass(%s) IS NOT NULL", (ref,)).fetchone()
        if not (row and row[0]):
            return False, True
        return True, pconn.execute(f"SELECT 1 FROM {ref} LIMIT 1").fetchone() is None
    finally:
        pconn.close()


def classify(aws: AwsContext, pb: Playbook, act: Activity) -> tuple[bool, str | None]:
    """(destructive, why) of one step, looking at its target now."""
    if act.type == "DropTarget":
        return True, f"drops {pb.nodes[str(act.get('node'))].describe()}"
    if act.type == "Sql":
        return True, f"runs SQL on {pb.nodes[str(act.get('node'))].describe()}"
    if act.type != "Restore":
        return False, None
    target = pb.nodes[str(act.get("output"))]
    mode = restore_mode(act, target)
    if mode not in DESTRUCTIVE_MODES.get(target.type, ()):
        return False, None
    verb = {"replace": "replaces", "truncate": "truncates", "TRUNCATE": "empties"}[mode]
    try:
        exists, empty = target_state(aws, target)
    except BackupctlError as e:
        return True, f"{verb} {target.describe()} (mode {mode}); its state could not be read ({e.message})"
    if exists and not empty:
        return True, f"{verb} {target.describe()}, which holds data (mode {mode})"
    return False, f"mode {mode}, but {target.describe()} is {'empty' if exists else 'absent'}: nothing is replaced"


def describe(pb: Playbook, act: Activity, sel: Selection) -> tuple[str, str | None]:
    """(what the step does, its target) in a line each, for the plan."""
    snap = act.get("snapshot")
    sid = sel.snapshot_id if snap == SELECTED else (f"the snapshot '{snap}' takes" if snap in pb.activities else snap)
    if act.type == "Snapshot":
        return f"snapshot {pb.nodes[str(act.get('input'))].describe()}", pb.nodes[str(act.get("output"))].describe()
    if act.type == "Restore":
        tgt = pb.nodes[str(act.get("output"))]
        return f"restore {sid} (mode {restore_mode(act, tgt)})", tgt.describe()
    if act.type == "Verify":
        against = act.get("against")
        return (f"re-read every part of {sid}" + (" and compare the table with it" if against else ""),
                pb.nodes[str(against)].describe() if against else None)
    if act.type == "DropTarget":
        return "drop the scratch table", pb.nodes[str(act.get("node"))].describe()
    if act.type == "ShellCommand":
        return f"run: {act.get('command')}", None
    if act.type == "AwsCli":
        return f"aws {act.get('command')}", None
    if act.type == "EmrStep":
        return f"EMR step on {act.get('cluster') or 'a transient cluster'}", None
    if act.type == "Sql":
        return f"SQL: {act.get('sql')}", pb.nodes[str(act.get("node"))].describe()
    return act.type, None


def plan_runbook(aws: AwsContext, pb: Playbook, sel: Selection, repo: Repository) -> dict[str, Any]:
    """The plan a person sees before anything runs (``--dry-run`` prints it and stops)."""
    assert pb.runbook is not None
    steps = []
    for i, name in enumerate(pb.order()):
        act = pb.activities[name]
        what, target = describe(pb, act, sel)
        destructive, why = classify(aws, pb, act)
        steps.append({"step": i + 1, "name": name, "type": act.type, "does": what, "target": target,
                      "destructive": destructive, "why": why, "confirm": act.confirm,
                      "asks": destructive or act.confirm, "depends_on": act.depends_on, "run_on": act.run_on,
                      "preconditions": act.preconditions})
    return {"runbook": pb.name, "playbook": pb.path, "description": pb.description, "run_id": pb.run_id,
            "repository": str(repo.uri), "source": pb.nodes[pb.runbook.source].describe(),
            "snapshot": sel.to_json(), "steps": steps, "asks": [s["name"] for s in steps if s["asks"]]}


# -- running and recording ------------------------------------------------------------------


@dataclass
class RunbookRun:
    """What ``run_runbook`` returns: the runner's result and the record (written or not)."""

    result: PipelineResult
    record: dict[str, Any]
    record_uri: str | None = None
    warnings: list[str] = field(default_factory=list)


def operator(aws: AwsContext, region: str) -> dict[str, Any]:
    """Who runs the runbook: the AWS caller identity (STS GetCallerIdentity), the OS user and the host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = None
    return {"aws": aws.caller_identity(region), "os_user": user, "host": socket.gethostname()}


def run_runbook(aws: AwsContext, pb: Playbook, sel: Selection, plan: dict[str, Any], confirmer: Confirmer,
                who: dict[str, Any], invocation: dict[str, Any], say: Callable[[str], None] | None = None,
                progress_factory: Callable[[str, int | None], Any] | None = None) -> RunbookRun:
    """Run the runbook's activities through the pipeline runner, asking before destructive steps; record it."""
    say = say or (lambda _m: None)
    ctx = acts.RunContext(aws=aws, playbook=pb, say=say, progress_factory=progress_factory,
                          snapshot_id=sel.snapshot_id)
    confirmed: set[str] = set()

    def gate(act: Activity) -> None:
        destructive, why = classify(aws, pb, act)  # the target now, not at planning time
        if not destructive and not act.confirm:
            return
        what, target = describe(pb, act, sel)
        question = f"{act.name}: {why or what + (f' -> {target}' if target else '')}. Go ahead?"
        if not confirmer.ask(act.name, question):
            raise Declined("not confirmed: the step did not run and changed nothing")
        confirmed.add(act.name)

    def restore(c: acts.RunContext, a: Activity) -> dict[str, Any]:
        # The library asks again before it drops/empties a target, unless told the person said yes.
        if a.name in confirmed and pb.nodes[str(a.get("output"))].type != "RedshiftTable":
            a = dataclasses.replace(a, fields={**a.fields, "options": {**(a.get("options") or {}), "yes": True}})
        return acts.restore(c, a)

    started = utcnow()
    result = run_pipeline(aws, pb, say, progress_factory, runners={"Restore": restore}, ctx=ctx, gate=gate)
    record = run_record(pb, sel, plan, confirmer, who, invocation, result, started)
    run = RunbookRun(result, record)
    try:
        run.record_uri = record_run(aws, pb, record)
    except Exception as e:  # noqa: BLE001 - the outcome still reaches the terminal
        run.warnings.append(f"could not record the run in the repository: {e}")
    return run


def record_id(started: datetime, run_id: str) -> str:
    return started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + run_id.rsplit("-", 1)[-1]


def run_record(pb: Playbook, sel: Selection, plan: dict[str, Any], confirmer: Confirmer, who: dict[str, Any],
               invocation: dict[str, Any], result: PipelineResult, started: datetime) -> dict[str, Any]:
    try:
        sha = hashlib.sha256(Path(pb.path).read_bytes()).hexdigest()
    except OSError:
        sha = None
    first = result.first_failure()
    return {
        "record_version": 1,
        "record_id": record_id(started, pb.run_id),
        "runbook": pb.name,
        "playbook": pb.path,
        "playbook_sha256": sha,
        "run_id": pb.run_id,
        "started_at": isoformat(started),
        "finished_at": isoformat(utcnow()),
        "duration_s": round(result.duration_s, 3),
        "operator": who,
        "invocation": invocation,
        "variables": {k: v for k, v in pb.variables.items()},
        "snapshot": sel.to_json(),
        "plan": plan["steps"],
        "confirmations": confirmer.answers,
        "outcome": result.status,
        "exit_code": result.exit_code,
        "error": f"{first.name}: {first.error}" if first is not None else None,
        "activities": [a.to_json() for a in result.activities],
    }


def record_run(aws: AwsContext, pb: Playbook, record: dict[str, Any]) -> str:
    """Write the record to ``runs/runbooks/<runbook>/<record-id>.json``; returns its s3:// URI."""
    assert pb.runbook is not None
    node = pb.nodes[pb.runbook.repository]
    repo = Repository.open(aws, str(node.get("region")), node.get("uri"))
    key = f"{RECORD_PREFIX}{pb.name}/{record['record_id']}.json"
    repo.store.put_json(key, record)
    return repo.store.url(key)
