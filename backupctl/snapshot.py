"""Taking a snapshot: plan on the driver, run tasks on an engine, commit the manifest.

``run_export`` is source-agnostic: a source contributes an ``ExportPlan``
(schema, tasks, task function) and this module owns the repository protocol
around it - the leased pending-run record that makes a crashed run resumable
(``runs/pending/<source-key>/<id>.json``, backupctl/leases.py), the
per-task checkpoints, the orphan sweep of ``data/``, and the manifest written
last. ``snapshot_dynamodb`` is the DynamoDB front end, ``snapshot_mysql`` the
MySQL one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from backupctl.aws import AwsContext, validate_region
from backupctl.engines import TaskContext, auto_choice, local_or_processes, resolve_engine
from backupctl.engines.processes import WarmWorkers, WorkerSetup
from backupctl.errors import Conflict, InvalidInput, NotFound
from backupctl.formats.dynamodb_json import DIGEST_ALGORITHM, combine_hex
from backupctl.leases import Lease, describe_owner, lease_alive
from backupctl.model import (
    Manifest,
    PartResult,
    TaskSpec,
    isoformat,
    new_snapshot_id,
    parse_time,
    source_key,
    utcnow,
)
from backupctl.mysql_conn import (
    MySQLSettings,
    check_identifier,
    make_settings,
    parse_mysql_uri,
    settings_from_uri,
)
from backupctl.passwords import SecretRef
from backupctl.repository import PART_CHECKSUM, Repository, WriteOptions, check_write_options, parse_repo_uri
from backupctl.retry import TokenBucket
from backupctl.sources import dynamodb as ddb_source
from backupctl.sources import mysql as mysql_source


@dataclass
class ExportPlan:
    """What a source hands the snapshot protocol."""

    kind: str
    source: dict[str, Any]
    source_key: str
    schema: dict[str, Any]
    build_tasks: Callable[[str], list[TaskSpec]]  # snapshot prefix -> tasks
    task_fn: Callable[[TaskSpec, TaskContext], dict[str, Any]]
    plan_params: dict[str, Any]  # must match for a resume to reuse a pending run
    estimate_rows: int | None = None
    limiter: TokenBucket | None = None
    read: dict[str, Any] = field(default_factory=dict)
    mode: str = "full"
    parent_id: str | None = None
    window: dict[str, Any] | None = None
    # (repository, snapshot prefix, task results in task order) -> extra top-level manifest fields
    # (repo, prefix, results in task order, every key under prefix once the tasks are done) -> manifest fields
    finish: Callable[[Repository, str, list[dict[str, Any]], list[str]], dict[str, Any]] | None = None
    # --engine local with worker processes (CPU-bound sources): how many, and their per-worker setup
    processes: int = 1
    worker_setup: Any = None


@dataclass
class SnapshotResult:
    manifest: Manifest
    repo: str
    duration_s: float
    resumed: bool
    tasks_skipped: int
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific fields of to_json()
    protection: dict[str, Any] = field(default_factory=dict)  # the manifest's encryption / object_lock fields

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "snapshot_id": m.id,
            "source": m.source,
            "repository": self.repo,
            "mode": m.mode,
            "rows": m.rows,
            "bytes": m.bytes,
            "parts": len(m.parts),
            "digest": m.content_digest,
            "duration_s": round(self.duration_s, 3),
            "resumed": self.resumed,
            "tasks_skipped": self.tasks_skipped,
            "engine": m.engine,
            **self.protection,
            **self.extra,
        }


def _checkpoint_key(prefix: str, task_id: str) -> str:
    return f"{prefix}_tasks/{task_id}.json"


def _task_done(repo: Repository, prefix: str, task_id: str) -> dict[str, Any] | None:
    """A task's recorded result if every part it lists is present and intact."""
    try:
        result = repo.store.get_json(_checkpoint_key(prefix, task_id))
    except NotFound:
        return None
    for p in result.get("parts", []) + result.get("keys", []) + result.get("tombstones", []):
        # Present with the recorded size and S3 SHA-256 (parts of an older backupctl, without one, are redone).
        if repo.part_problem(prefix, p, require_checksum=True) is not None:
            return None
    return dict(result)


def run_export(
    repo: Repository,
    plan: ExportPlan,
    *,
    engine_name: str = "local",
    workers: int = 8,
    resume: bool = True,
    progress: Any = None,
    on_event: Callable[[str], None] | None = None,
) -> SnapshotResult:
    """Run a planned export into ``repo`` and commit it. Returns the manifest.

    Resumable: a pending run of the same source with the same plan parameters
    whose lease is dead (its process is gone) is continued, skipping tasks
    whose checkpoint and parts are intact. A pending run with a live lease is
    another run at work: this one takes its own snapshot next to it.
    """
    started = time.monotonic()
    say = on_event or (lambda _m: None)
    # SSE-KMS and Object Lock are part of the plan: a resume never mixes protected and unprotected parts.
    write = repo.store.write
    plan_params = {**plan.plan_params, **write.plan_params()}
    pending = _find_resumable(repo, plan.source_key, plan_params, write, say) if resume else None
    if pending:
        snapshot_id, created_at = pending["snapshot_id"], pending["created_at"]
        say(f"resuming snapshot {snapshot_id}")
    else:
        now = utcnow()
        snapshot_id, created_at = new_snapshot_id(now), isoformat(now)
    # Every object of the snapshot is locked until created_at + the lock days (the same date on a resume).
    write = repo.store.write = write.for_snapshot(created_at)
    # This run's pending record, leased (renewed in the background) until the commit deletes it.
    pending_key = repo.pending_key(plan.source_key, snapshot_id)
    lease = Lease(repo.store, {pending_key: {"snapshot_id": snapshot_id, "created_at": created_at,
                                             "plan": plan_params}}).acquire()
    try:
        if pending and pending.get("_key") != pending_key:
            repo.store.delete([str(pending["_key"])])  # the single pointer of an older backupctl
        return _run_leased(repo, plan, snapshot_id, created_at, pending is not None, write, started, engine_name,
                           workers, progress, say, lease)
    except BaseException:
        lease.release(delete=False)  # a failed run leaves its record with a dead lease: the next run resumes it
        raise


def _find_resumable(repo: Repository, sk: str, plan_params: dict[str, Any], write: WriteOptions,
                    say: Callable[[str], None]) -> dict[str, Any] | None:
    """The newest pending run of source ``sk`` with the same plan whose lease is dead (its run is gone), or None.

    A pending run with a live lease is another run at work: this one starts its own snapshot.
    """
    found: list[dict[str, Any]] = []
    # One LIST finds both the pending records and an older backupctl's single pointer beside them
    # (``runs/pending/<sk>.json``), instead of a GET of a pointer that is almost never there.
    folder, legacy = repo.pending_prefix(sk), repo.legacy_pending_key(sk)
    keys = [k for k in repo.store.list_keys(folder.rstrip("/")) if k.startswith(folder) or k == legacy]
    for key in keys:
        try:
            doc = repo.store.get_json(key)
        except NotFound:
            continue
        if not isinstance(doc, dict) or "snapshot_id" not in doc:
            continue
        sid = doc.get("snapshot_id")
        if repo.store.exists(repo.snapshot_prefix(sk, str(sid)) + "manifest.json"):
            repo.store.delete([key])  # committed; its run stopped before tidying up
        elif lease_alive(doc):
            say(f"snapshot {sid} of this source is running ({describe_owner(doc)}); starting another snapshot")
        elif doc.get("plan") != plan_params:
            say(f"a pending run {sid} has other parameters; starting a new snapshot")
        elif write.locking and not _lock_in_future(write.for_snapshot(str(doc["created_at"]))):
            say(f"the object lock of pending run {sid} would already have ended; starting a new snapshot")
        else:
            found.append({**doc, "_key": key})
    return max(found, key=lambda d: (str(d["created_at"]), str(d["snapshot_id"])), default=None)


def _run_leased(repo: Repository, plan: ExportPlan, snapshot_id: str, created_at: str, resumed: bool,
                write: WriteOptions, started: float, engine_name: str, workers: int, progress: Any,
                say: Callable[[str], None], lease: Lease) -> SnapshotResult:
    prefix = repo.snapshot_prefix(plan.source_key, snapshot_id)
    schema_sha256 = repo.store.put_json(prefix + "schema.json", plan.schema)

    tasks = plan.build_tasks(prefix)
    if write != WriteOptions():
        for spec in tasks:  # tasks write their parts with the same key and retention
            spec["repo"] = {**spec["repo"], "write": write.to_dict()}
    results: dict[str, dict[str, Any]] = {}
    todo: list[TaskSpec] = []
    for spec in tasks:
        done = _task_done(repo, prefix, spec["task_id"]) if resumed else None
        if done is not None:
            results[spec["task_id"]] = done
            if progress is not None:
                progress.advance(int(done["rows"]), int(done["bytes"]))
        else:
            todo.append(spec)
    skipped = len(tasks) - len(todo)
    if skipped:
        say(f"{skipped} of {len(tasks)} tasks already complete; not re-reading them")

    def checkpoint(spec: TaskSpec, result: dict[str, Any]) -> None:
        repo.store.put_json(_checkpoint_key(prefix, spec["task_id"]), result)
        results[spec["task_id"]] = result

    engine = local_or_processes(engine_name, workers, plan.processes, len(todo), plan.worker_setup)
    engine.run(todo, plan.task_fn, TaskContext(limiter=plan.limiter, progress=progress), on_result=checkpoint)

    # Commit: parts in task order, sweep anything under data/ no task claims, manifest last. One listing
    # of the snapshot's objects serves every sweep and the tidy-up after the commit (one LIST instead of
    # four on the path to the end of the run: ~12 ms each against the moto server).
    parts: list[PartResult] = []
    for spec in tasks:
        parts.extend(PartResult.from_dict(p) for p in results[spec["task_id"]]["parts"])
    listing = list(repo.store.list_keys(prefix))
    sweep_unclaimed(repo, listing, prefix + "data/", {prefix + p.key for p in parts})
    extra = plan.finish(repo, prefix, [results[s["task_id"]] for s in tasks], listing) if plan.finish else {}
    manifest = Manifest(
        id=snapshot_id,
        source=plan.source,
        source_key=plan.source_key,
        mode=plan.mode,
        created_at=created_at,
        completed_at=isoformat(utcnow()),
        engine=engine.name,
        parts=parts,
        content_digest=combine_hex(results[s["task_id"]]["digest"] for s in tasks),
        digest_algorithm=DIGEST_ALGORITHM,
        parent_id=plan.parent_id,
        window=plan.window,
        read=plan.read,
        schema_sha256=schema_sha256,
    )
    repo.store.put_json(prefix + "manifest.json", {**manifest.to_dict(), **extra, **write.manifest_fields(),
                                                   "part_checksum": PART_CHECKSUM})
    # After the commit point: tidy the run state (a crash here leaves a valid snapshot):
    # checkpoints, a native export's staging files, the pending record.
    lease.stop()  # no renewal may re-create the pending record after it is deleted
    repo.store.delete([k for k in listing if k.startswith(prefix + "_")] + list(lease.docs))
    return SnapshotResult(manifest, str(repo.uri), time.monotonic() - started, resumed, skipped,
                          protection=write.manifest_fields())


def sweep_unclaimed(repo: Repository, listing: list[str], folder: str, claimed: set[str]) -> None:
    """Delete what ``listing`` holds under ``folder`` (a snapshot's data/, keys/ or tombstones/) that no
    task's result claims: parts of an attempt that crashed or was cut differently."""
    orphans = [k for k in listing if k.startswith(folder) and k not in claimed]
    if orphans:
        repo.store.delete(orphans)


def _lock_in_future(write: WriteOptions) -> bool:
    return bool(write.lock_until) and parse_time(str(write.lock_until)) > utcnow() + timedelta(hours=1)


def write_options(opts: DynamoSnapshotOptions | MySQLSnapshotOptions) -> WriteOptions:
    """The snapshot's --kms-key-id / --object-lock-days / --object-lock-mode, validated (no AWS call)."""
    return check_write_options(opts.object_lock_days, opts.object_lock_mode, opts.kms_key_id, opts.target_region)


@dataclass
class DynamoSnapshotOptions:
    table: str
    source_region: str
    target_region: str
    repo_uri: str | None = None
    read_percent: float = 0.5
    max_rcu: float | None = None
    segments: int | None = None
    workers: int = 8
    engine: str = "local"
    resume: bool = True
    part_max_bytes: int = ddb_source.PART_MAX_BYTES
    page_size: int | None = None
    method: str = "scan"  # scan | export | auto
    kms_key_id: str | None = None  # SSE-KMS key (id, ARN or alias) in target_region
    object_lock_days: int | None = None  # S3 Object Lock retention of every object of the snapshot
    object_lock_mode: str | None = None  # governance (default) | compliance


DYNAMODB_METHODS = ("scan", "export", "auto")


def check_dynamodb_options(opts: DynamoSnapshotOptions) -> None:
    ddb_source.check_table_name(opts.table)
    validate_region(opts.source_region, "--from region")
    validate_region(opts.target_region, "--to region")
    if opts.repo_uri is not None:
        parse_repo_uri(opts.repo_uri)
    if not 0 < opts.read_percent <= 1.5:
        raise InvalidInput(f"--read-percent {opts.read_percent} is out of range (0, 1.5]")
    if opts.max_rcu is not None and opts.max_rcu <= 0:
        raise InvalidInput("--max-rcu must be positive")
    if opts.segments is not None and not 1 <= opts.segments <= ddb_source.MAX_SEGMENTS:
        raise InvalidInput("--segments must be between 1 and 1000000")
    if opts.workers < 1:
        raise InvalidInput("--workers must be at least 1")
    if opts.page_size is not None and opts.page_size < 1:
        raise InvalidInput("--page-size must be at least 1")
    if opts.method not in DYNAMODB_METHODS:
        raise InvalidInput(f"--method {opts.method} is not one of {', '.join(DYNAMODB_METHODS)}")
    write_options(opts)


def choose_method(aws: AwsContext, opts: DynamoSnapshotOptions) -> str:
    """``scan`` or ``export``; ``auto`` exports when point-in-time recovery is on.

    ``export`` without PITR is refused up front (DynamoDB would refuse it later).
    """
    if opts.method == "scan":
        return "scan"
    pitr = ddb_source.pitr_enabled(aws, opts.source_region, opts.table)
    if opts.method == "export" and not pitr:
        raise InvalidInput(
            f"--method export needs point-in-time recovery on table '{opts.table}' "
            "(aws dynamodb update-continuous-backups ...); use --method scan"
        )
    return "export" if pitr else "scan"


def plan_dynamodb(
    aws: AwsContext, opts: DynamoSnapshotOptions, repo: Repository, on_event: Callable[[str], None] | None = None
) -> ExportPlan:
    desc = ddb_source.describe_table(aws, opts.source_region, opts.table)
    sk = source_key("dynamodb", opts.source_region, opts.table)
    source = {"kind": "dynamodb", "region": opts.source_region, "table": opts.table, "arn": desc.get("TableArn")}
    if choose_method(aws, opts) == "export":
        return ExportPlan(
            kind="dynamodb",
            source=source,
            source_key=sk,
            schema=ddb_source.table_schema(desc),
            build_tasks=lambda prefix: ddb_source.plan_adopt(
                aws=aws,
                repo=repo.uri,
                repo_region=repo.region,
                snapshot_prefix=prefix,
                export_keys=ddb_source.run_native_export(
                    aws, opts.source_region, str(desc["TableArn"]), repo.store, prefix, repo.store.policy, on_event
                ),
            ),
            task_fn=ddb_source.run_adopt_task,
            plan_params={"kind": "dynamodb", "method": "export", "mode": "full"},
            estimate_rows=int(desc.get("ItemCount") or 0) or None,
            read={"method": "export", "billing_mode": ddb_source.billing_mode(desc)},
        )
    budget = ddb_source.capacity_budget(desc, opts.read_percent, opts.max_rcu, "read")
    segments = opts.segments or ddb_source.choose_segments(
        desc, budget, opts.workers, distributed=opts.engine in ("spark", "emr")
    )
    return ExportPlan(
        kind="dynamodb",
        source=source,
        source_key=sk,
        schema=ddb_source.table_schema(desc),
        build_tasks=lambda prefix: ddb_source.plan_export(
            aws=aws,
            region=opts.source_region,
            table=opts.table,
            repo=repo.uri,
            repo_region=repo.region,
            snapshot_prefix=prefix,
            segments=segments,
            read_budget=budget,
            concurrency=opts.workers,
            part_max_bytes=opts.part_max_bytes,
            page_size=opts.page_size,
        ),
        task_fn=ddb_source.run_export_task,
        plan_params={"kind": "dynamodb", "segments": segments, "mode": "full"},
        estimate_rows=int(desc.get("ItemCount") or 0) or None,
        limiter=TokenBucket(budget) if budget else None,
        read={
            "method": "scan",
            "segments": segments,
            "read_budget_rcu_per_s": budget,
            "billing_mode": ddb_source.billing_mode(desc),
        },
    )


def snapshot_dynamodb(
    aws: AwsContext,
    opts: DynamoSnapshotOptions,
    progress_factory: Callable[[str, int | None], Any] | None = None,
    on_event: Callable[[str], None] | None = None,
) -> SnapshotResult:
    """Snapshot a DynamoDB table into a repository in the target region.

    Validates everything (regions, credentials, the table, the repository
    location) before writing anything.
    """
    check_dynamodb_options(opts)
    aws.check_credentials()
    ddb_source.describe_table(aws, opts.source_region, opts.table)  # NotFound before any write
    opts = dataclasses.replace(opts, method=choose_method(aws, opts))  # refuses export without PITR
    if opts.engine == "auto":
        desc = ddb_source.describe_table(aws, opts.source_region, opts.table)
        engine_name, _procs, why = auto_choice("dynamodb", int(desc.get("ItemCount") or 0), opts.segments or 1)
        if on_event:
            on_event(f"engine auto: {why}")
        opts = dataclasses.replace(opts, engine=engine_name)
    repo = Repository.open(aws, opts.target_region, opts.repo_uri, create=True, write=write_options(opts))
    plan = plan_dynamodb(aws, opts, repo, on_event)
    if on_event:
        where = f"snapshot {opts.table} ({opts.source_region}) -> {repo.uri} ({opts.target_region})"
        if opts.method == "export":
            on_event(f"{where}: native point-in-time export (uses no read capacity)")
        else:
            budget = plan.read.get("read_budget_rcu_per_s")
            on_event(
                f"{where}: parallel scan, {plan.read['segments']} segments, read budget "
                + (f"{budget:,.0f} RCU/s" if budget else "unthrottled (on-demand; set --max-rcu to cap)")
            )
    if progress_factory is None:
        return run_export(repo, plan, engine_name=opts.engine, workers=opts.workers, resume=opts.resume, on_event=on_event)
    with progress_factory(f"snapshot {opts.table}", plan.estimate_rows) as progress:
        return run_export(
            repo, plan, engine_name=opts.engine, workers=opts.workers, resume=opts.resume,
            progress=progress, on_event=on_event,
        )


# -- MySQL -------------------------------------------------------------------------

MYSQL_MODES = ("full", "incremental")


@dataclass
class MySQLSnapshotOptions:
    source_uri: str | None  # mysql://USER@HOST[:PORT]/DB, or None with rds_instance
    table: str
    source_region: str
    target_region: str
    repo_uri: str | None = None
    password_file: str | None = None
    chunk_rows: int = mysql_source.CHUNK_ROWS
    consistency: str = "snapshot"
    workers: int = 8
    engine: str = "local"
    resume: bool = True
    part_max_bytes: int = mysql_source.PART_MAX_BYTES
    mode: str = "full"
    watermark_column: str | None = None
    detect_deletes: bool = False
    safety_lag_s: float = mysql_source.DEFAULT_SAFETY_LAG_S
    # Library only (tests, aligned windows): end the window here instead of at server clock - safety lag.
    # It must not be later than that.
    window_to: datetime | None = None
    kms_key_id: str | None = None  # SSE-KMS key (id, ARN or alias) in target_region
    object_lock_days: int | None = None  # S3 Object Lock retention of every object of the snapshot
    object_lock_mode: str | None = None  # governance (default) | compliance
    secret_id: str | None = None  # Secrets Manager secret (in source_region unless an ARN names another)
    rds_instance: str | None = None  # instead of source_uri: the endpoint from RDS DescribeDBInstances
    database: str | None = None  # with rds_instance
    user: str | None = None  # with rds_instance (default: the secret's username, else the master user)
    processes: int | None = None  # --engine local: worker processes for the chunks (None: --processes, else auto)


def check_mysql_options(opts: MySQLSnapshotOptions, aws: AwsContext | None = None,
                        ) -> tuple[MySQLSettings, dict[str, Any]]:
    """Validate the options, then resolve the connection settings and the password.

    Everything that needs no server is checked first; with ``--rds-instance``
    the endpoint is looked up in RDS and with ``--secret-id`` the password is
    read from Secrets Manager (both in the source region, through ``aws``).
    Returns the settings and the manifest's ``source`` (where the table is,
    never how to log in).
    """
    check_identifier(opts.table, "--table")
    if opts.rds_instance is not None:
        if opts.source_uri is not None:
            raise InvalidInput("--rds-instance and --source are two ways to name the source: give one")
        if not opts.database:
            raise InvalidInput("--rds-instance needs --database DB")
    else:
        if opts.source_uri is None:
            raise InvalidInput("--source mysql://USER@HOST[:PORT]/DB or --rds-instance ID is required")
        if opts.database is not None or opts.user is not None:
            raise InvalidInput("--database and --user apply to --rds-instance; with --source they are part "
                               "of the URI (mysql://USER@HOST[:PORT]/DB)")
        parse_mysql_uri(opts.source_uri, "--source", user_optional=opts.secret_id is not None)
    validate_region(opts.source_region, "--from region")
    validate_region(opts.target_region, "--to region")
    if opts.repo_uri is not None:
        parse_repo_uri(opts.repo_uri)
    if not opts.table:
        raise InvalidInput("--table is required")
    if opts.chunk_rows < 1:
        raise InvalidInput("--chunk-rows must be at least 1")
    if opts.consistency not in mysql_source.CONSISTENCY:
        raise InvalidInput(f"--consistency must be one of {', '.join(mysql_source.CONSISTENCY)}")
    if opts.workers < 1:
        raise InvalidInput("--workers must be at least 1")
    if opts.engine == "spark" and opts.consistency == "snapshot" and opts.mode == "full":
        # The read view lives in connections the driver holds; executors cannot share it.
        raise InvalidInput("--consistency snapshot needs --engine local; use --consistency none with --engine spark")
    if opts.mode not in MYSQL_MODES:
        raise InvalidInput(f"--mode must be one of {', '.join(MYSQL_MODES)}")
    if opts.mode == "incremental":
        if not opts.watermark_column:
            raise InvalidInput("--mode incremental needs --watermark-column COLUMN")
        if not 0 <= opts.safety_lag_s <= 86_400:
            raise InvalidInput("--safety-lag must be between 0 and 86400 seconds")
    elif opts.watermark_column is not None or opts.detect_deletes:
        raise InvalidInput("--watermark-column and --detect-deletes apply to --mode incremental")
    write_options(opts)
    aws = aws or AwsContext()
    secret = SecretRef.make(aws, opts.secret_id, opts.source_region)
    if secret is not None or opts.rds_instance is not None:
        aws.check_credentials()
    if opts.rds_instance is None:
        assert opts.source_uri is not None
        settings = settings_from_uri(opts.source_uri, opts.password_file, "--source", secret)
        return settings, {"kind": "mysql", "region": opts.source_region, "host": settings.host,
                          "port": settings.port, "database": settings.database, "table": opts.table}
    from backupctl.sources.rds import resolve_instance

    ep = resolve_instance(aws, opts.source_region, opts.rds_instance)
    settings = make_settings(opts.user or "", ep.connect_host, ep.connect_port, str(opts.database),
                             opts.password_file, secret, f"--rds-instance {ep.instance_id}",
                             default_user=ep.master_username)
    return settings, {"kind": "mysql", "region": opts.source_region, "rds_instance": ep.instance_id,
                      "engine": ep.engine, "host": ep.address, "port": ep.port, "database": settings.database,
                      "table": opts.table}


def snapshot_mysql(
    aws: AwsContext,
    opts: MySQLSnapshotOptions,
    progress_factory: Callable[[str, int | None], Any] | None = None,
    on_event: Callable[[str], None] | None = None,
) -> SnapshotResult:
    """Snapshot one MySQL table (full or incremental) into a repository in the target region as Parquet parts.

    Validates the URI, regions, credentials, the connection, the table and (for
    an incremental) the watermark column and the parent before writing
    anything to the repository.
    """
    settings, source = check_mysql_options(opts, aws)
    aws.check_credentials()
    if opts.mode == "incremental":
        return _snapshot_mysql_incremental(aws, opts, settings, source, progress_factory, on_event)
    conn = settings.connect()
    warm: WarmWorkers | None = None
    try:
        info = mysql_source.describe_table(conn, settings.database, opts.table)
        # The repository first: the forked workers then find its S3 model loaded (~35 ms a worker saved)
        repo = Repository.open(aws, opts.target_region, opts.repo_uri, create=True, write=write_options(opts))
        warm = _warm_workers(opts, info)
        bounds = mysql_source.chunk_bounds(conn, info, opts.chunk_rows)
        now = mysql_source.server_now(conn)
    except BaseException:
        if warm is not None:
            warm.close()
        raise
    finally:
        conn.close()
    try:
        return _snapshot_mysql_full(aws, opts, settings, source, info, repo, bounds, now, warm, progress_factory,
                                    on_event)
    finally:
        if warm is not None:
            warm.close()


def _warm_workers(opts: MySQLSnapshotOptions, info: Any) -> WarmWorkers | None:
    """Worker processes started while the driver computes chunk bounds, when the run will want them."""
    est_chunks = max(1, (info.rows_estimate or 0) // max(1, opts.chunk_rows) + 1)
    engine_name, processes, _why = resolve_engine(opts.engine, opts.processes, "mysql", info.rows_estimate, est_chunks)
    if engine_name != "local" or processes < 2 or not info.primary_key:
        return None
    return WarmWorkers(min(processes, est_chunks))


def _snapshot_mysql_full(aws: AwsContext, opts: MySQLSnapshotOptions, settings: Any, source: dict[str, Any],
                         info: Any, repo: Repository, bounds: Any, now: Any, warm: WarmWorkers | None,
                         progress_factory: Callable[[str, int | None], Any] | None,
                         on_event: Callable[[str], None] | None) -> SnapshotResult:
    say = on_event or (lambda _m: None)
    chunks = len(bounds) + 1
    if not info.primary_key:
        say(f"warning: table {opts.table} has no primary key: only full snapshots are possible "
            "(incrementals need a primary key), and it is read as one chunk")
    elif not mysql_source.chunkable(info):
        say(f"table {opts.table} has no primary key usable for ranges: reading it as one chunk")
    has_keys = mysql_source.key_positions(info.stored, info.primary_key) is not None
    sk = source_key("mysql", opts.source_region, f"{settings.database}.{opts.table}")
    engine_name, processes, why = resolve_engine(opts.engine, opts.processes, "mysql", info.rows_estimate, chunks)
    if engine_name != "local" and opts.engine == "auto" and opts.consistency == "snapshot":
        # Spark cannot share the driver's read view: stay local, with worker processes
        engine_name, processes, why = "local", max(processes, 2), f"{why}; --consistency snapshot keeps it local"
    if why:
        say(f"engine auto: {why}")
    opts = replace(opts, engine=engine_name)
    # With worker processes each worker opens its own consistent session while this driver holds the
    # table lock (engines/processes.py); with threads the driver opens them all here.
    sessions = mysql_source.ReadSessions(settings, settings.database, opts.table,
                                         opts.consistency if processes == 1 else "none", min(opts.workers, chunks))
    consistent = opts.consistency == "snapshot"
    setup = WorkerSetup(
        init="backupctl.sources.mysql:open_worker_session",
        kwargs={"settings": settings.to_dict(), "database": settings.database, "table": opts.table,
                "consistency": opts.consistency, "aws": aws.to_dict()},
        before=(lambda: mysql_source.lock_table(settings, settings.database, opts.table)) if consistent else None,
        after=mysql_source.unlock_table if consistent else None,
        warm=warm,
    ) if processes > 1 else None
    plan = ExportPlan(
        kind="mysql",
        source=source,
        source_key=sk,
        schema=mysql_source.table_schema(info),
        build_tasks=lambda prefix: mysql_source.plan_export(
            aws=aws, settings=settings, info=info, bounds=bounds, repo=repo.uri, repo_region=repo.region,
            snapshot_prefix=prefix, part_max_bytes=opts.part_max_bytes,
        ),
        task_fn=lambda spec, ctx: mysql_source.run_export_task(spec, ctx, sessions),
        plan_params={"kind": "mysql", "mode": "full", "chunk_rows": opts.chunk_rows, "chunks": chunks,
                     "bounds_sha256": mysql_source.bounds_fingerprint(bounds), "consistency": opts.consistency},
        estimate_rows=info.rows_estimate or None,
        read={"chunks": chunks, "chunk_rows": opts.chunk_rows, "consistency": opts.consistency,
              "primary_key": info.primary_key, "server_version": info.server_version,
              "server_now": mysql_source.datetime_text(now)},
        finish=_mysql_finish(info.primary_key if has_keys else None, incremental=False),
        processes=processes,
        worker_setup=setup,
    )
    say(
        f"snapshot {settings.database}.{opts.table} ({opts.source_region}) -> {repo.uri} ({opts.target_region}): "
        f"{chunks} chunks of up to {opts.chunk_rows:,} rows, consistency {opts.consistency}"
        + (f", {processes} worker processes" if processes > 1 else "")
    )
    sessions.open()
    try:
        result = _run_mysql(repo, plan, opts, progress_factory, on_event)
    finally:
        sessions.close()
    if result.resumed and opts.consistency == "snapshot" and result.tasks_skipped:
        say("note: this run resumed an interrupted one; chunks read before the interruption come from "
            "an earlier read view (use --no-resume for a single consistent view)")
    return result


def _run_mysql(repo: Repository, plan: ExportPlan, opts: MySQLSnapshotOptions,
               progress_factory: Callable[[str, int | None], Any] | None,
               on_event: Callable[[str], None] | None) -> SnapshotResult:
    if progress_factory is None:
        result = run_export(repo, plan, engine_name=opts.engine, workers=opts.workers, resume=opts.resume,
                            on_event=on_event)
    else:
        with progress_factory(f"snapshot {opts.table}", plan.estimate_rows) as progress:
            result = run_export(repo, plan, engine_name=opts.engine, workers=opts.workers,
                                resume=opts.resume, progress=progress, on_event=on_event)
    doc = repo.store.get_json(repo.snapshot_prefix(plan.source_key, result.manifest.id) + "manifest.json")
    td = doc.get("table_digest") or {}
    result.extra = {
        "parent_id": result.manifest.parent_id,
        "window": result.manifest.window,
        "deleted": int((doc.get("tombstones") or {}).get("rows", 0)),
        "table_rows": td.get("rows"),
        "table_digest": td.get("value"),
    }
    return result


def _mysql_finish(primary_key: list[str] | None, incremental: bool,
                  ) -> Callable[[Repository, str, list[dict[str, Any]], list[str]], dict[str, Any]]:
    """The MySQL manifest fields beyond DynamoDB's: key set, tombstones, table digest (REPOSITORY_FORMAT.md)."""

    def finish(repo: Repository, prefix: str, results: list[dict[str, Any]], listing: list[str]) -> dict[str, Any]:
        keys = [p for r in results for p in r.get("keys", [])]
        tombs = [p for r in results for p in r.get("tombstones", [])]
        for folder, listed in (("keys/", keys), ("tombstones/", tombs)):
            sweep_unclaimed(repo, listing, prefix + folder, {prefix + p["key"] for p in listed})
        extra: dict[str, Any] = {}
        # A run resumed from checkpoints of an older backupctl has no key parts for some chunks: no key set then.
        if primary_key is not None and all("keys" in r for r in results):
            extra["key_set"] = {"primary_key": primary_key, "parts": keys, "rows": sum(int(p["rows"]) for p in keys)}
        if incremental:
            (r,) = results
            extra["tombstones"] = {"parts": tombs, "rows": sum(int(p["rows"]) for p in tombs)}
            rows, digest = int(r["table_rows"]), str(r["table_digest"])
        else:
            rows, digest = sum(int(r["rows"]) for r in results), combine_hex(r["digest"] for r in results)
        extra["table_digest"] = {"algorithm": DIGEST_ALGORITHM, "rows": rows, "value": digest}
        return extra

    return finish


def find_parent(repo: Repository, sk: str) -> tuple[str, dict[str, Any]] | None:
    """(prefix, raw manifest) of the newest committed snapshot of source ``sk``, full or incremental."""
    newest = None
    for m in repo.list_snapshots(sk):
        if newest is None or (m.created_at, m.id) > (newest.created_at, newest.id):
            newest = m
    if newest is None:
        return None
    prefix = repo.snapshot_prefix(sk, newest.id)
    return prefix, dict(repo.store.get_json(prefix + "manifest.json"))


def _same_table(parent_schema: dict[str, Any], info: mysql_source.TableInfo) -> bool:
    now = mysql_source.table_schema(info)
    shape = ("name", "column_type", "nullable", "generated", "collation", "kind")
    return (parent_schema.get("primary_key") == now["primary_key"]
            and [{k: c.get(k) for k in shape} for c in parent_schema.get("columns", [])]
            == [{k: c.get(k) for k in shape} for c in now["columns"]])


def _snapshot_mysql_incremental(
    aws: AwsContext,
    opts: MySQLSnapshotOptions,
    settings: MySQLSettings,
    source: dict[str, Any],
    progress_factory: Callable[[str, int | None], Any] | None,
    on_event: Callable[[str], None] | None,
) -> SnapshotResult:
    say = on_event or (lambda _m: None)
    column = str(opts.watermark_column)
    where = f"mysql {settings.database}.{opts.table} ({opts.source_region})"
    full_first = "take a full snapshot first (--mode full)"
    conn = settings.connect()
    try:
        info = mysql_source.describe_table(conn, settings.database, opts.table)
        wm = mysql_source.check_watermark(info, column)
        if not info.primary_key:
            raise InvalidInput(f"table {opts.table} has no primary key: incremental snapshots need one "
                               "(rows are merged and deleted by key); take full snapshots of it instead")
        if mysql_source.key_positions(info.stored, info.primary_key) is None:
            raise InvalidInput(f"the primary key of {opts.table} includes a generated column: "
                               "incremental snapshots are not supported for it; take full snapshots instead")
        now = mysql_source.server_now(conn)
        mysql_source.check_future_stamps(conn, info, column, wm["kind"], now)
    finally:
        conn.close()
    sk = source_key("mysql", opts.source_region, f"{settings.database}.{opts.table}")
    try:
        repo = Repository.open(aws, opts.target_region, opts.repo_uri, create=False, write=write_options(opts))
    except NotFound as e:
        raise NotFound(f"no snapshot of {where} to continue from (no repository): {full_first}") from e
    found = find_parent(repo, sk)
    if found is None:
        raise NotFound(f"no snapshot of {where} to continue from: {full_first}")
    parent_prefix, parent = found
    pid = str(parent["id"])
    if not isinstance(parent.get("key_set"), dict):
        raise NotFound(f"the newest snapshot {pid} of {where} has no key set (taken by an older backupctl): "
                       f"{full_first}")
    if not _same_table(repo.read_schema(parent_prefix, Manifest.from_dict(parent)), info):
        raise Conflict(f"table {opts.table} has changed its columns or primary key since snapshot {pid}: "
                       f"{full_first}")
    lag = timedelta(seconds=opts.safety_lag_s)
    pwin = parent.get("window") or None
    if parent.get("mode") == "incremental" and pwin:
        if pwin.get("column") != column:
            raise InvalidInput(f"snapshot {pid} is an increment on --watermark-column '{pwin.get('column')}', "
                               f"not '{column}': {full_first} to change the column")
        lo = str(pwin["to"])
    else:
        started = (parent.get("read") or {}).get("server_now")
        if not started:
            raise NotFound(f"snapshot {pid} does not record its server time (taken by an older backupctl): "
                           f"{full_first}")
        # The full snapshot's read view may have missed transactions in flight: start one lag earlier.
        lo = mysql_source.watermark_value(datetime.fromisoformat(started) - lag, wm["kind"])
    end = now - lag
    if opts.window_to is not None:
        if opts.window_to > end:
            raise InvalidInput("window end is later than the server clock minus the safety lag")
        end = opts.window_to
    hi = mysql_source.watermark_value(end, wm["kind"])
    if mysql_source.watermark_param(hi, wm["kind"]) < mysql_source.watermark_param(lo, wm["kind"]):
        say(f"the window of the parent {pid} ends after now minus the safety lag: this increment's window is empty")
        hi = lo
    window = {"column": column, "from": lo, "to": hi}
    parent_keys = list(parent["key_set"].get("parts") or [])
    plan = ExportPlan(
        kind="mysql",
        source=source,
        source_key=sk,
        schema=mysql_source.table_schema(info),
        build_tasks=lambda prefix: mysql_source.plan_increment(
            aws=aws, settings=settings, info=info, repo=repo.uri, repo_region=repo.region, snapshot_prefix=prefix,
            window=window, watermark_kind=wm["kind"], detect_deletes=opts.detect_deletes,
            parent_prefix=parent_prefix, parent_keys=parent_keys, part_max_bytes=opts.part_max_bytes,
        ),
        task_fn=lambda spec, ctx: mysql_source.run_increment_task(spec, ctx, settings),
        plan_params={"kind": "mysql", "mode": "incremental", "parent_id": pid, "window": window,
                     "detect_deletes": opts.detect_deletes},
        read={"consistency": "snapshot", "primary_key": info.primary_key, "server_version": info.server_version,
              "server_now": mysql_source.datetime_text(now), "safety_lag_s": opts.safety_lag_s,
              "detect_deletes": opts.detect_deletes, "watermark_kind": wm["kind"]},
        mode="incremental",
        parent_id=pid,
        window=window,
        finish=_mysql_finish(info.primary_key, incremental=True),
    )
    say(f"increment {settings.database}.{opts.table} ({opts.source_region}) -> {repo.uri} ({opts.target_region}): "
        f"{column} in [{lo}, {hi}) after {pid}" + (", detecting deletes" if opts.detect_deletes else ""))
    return _run_mysql(repo, plan, opts, progress_factory, on_event)
