"""Restoring a snapshot: plan from the manifest, prepare the target, load parts, check.

Modes for DynamoDB targets:

* ``new`` (default) - create the table from schema.json; an existing table is
  accepted only when empty and with the same key schema.
* ``upsert`` - write into an existing table (puts overwrite items by key).
* ``replace`` - empty an existing table first (after a confirmation), then load.

MySQL targets (``restore_mysql``) add ``truncate`` and ``append`` and
recreate the table from the captured ``SHOW CREATE TABLE``.

``dry_run`` returns the plan and writes nothing. After loading, the items and
content digest written are compared with the manifest; a difference fails the
restore with exit code 5.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backupctl.aws import AwsContext, validate_region
from backupctl.engines import (
    TaskContext,
    auto_choice,
    explicit_processes,
    get_engine,
    local_or_processes,
    resolve_engine,
)
from backupctl.engines.processes import WarmWorkers
from backupctl.errors import (
    Conflict,
    FormatError,
    InvalidInput,
    NotFound,
    SnapshotNotFound,
    VerificationFailed,
)
from backupctl.formats.dynamodb_json import Digest, combine_hex
from backupctl.leases import ReaderLeases
from backupctl.model import Manifest, TaskSpec, check_snapshot_id
from backupctl.mysql_conn import MySQLSettings, check_identifier, parse_mysql_uri, settings_from_uri
from backupctl.passwords import SecretRef
from backupctl.repository import Repository, parse_repo_uri
from backupctl.retry import TokenBucket
from backupctl.sources import mysql as mysql_source
from backupctl.sources.dynamodb import capacity_budget, check_table_name, describe_table
from backupctl.sources.mysql import check_mysql_part_key
from backupctl.targets import dynamodb as ddb_target
from backupctl.targets import mysql as mysql_target

DYNAMODB_MODES = ("new", "upsert", "replace")


@dataclass
class DynamoRestoreOptions:
    snapshot_id: str
    table: str
    region: str
    repo_uri: str | None = None
    mode: str = "new"
    write_percent: float = 0.5
    max_wcu: float | None = None
    workers: int = 8
    engine: str = "local"
    dry_run: bool = False
    yes: bool = False


def check_options(opts: DynamoRestoreOptions) -> None:
    check_snapshot_id(opts.snapshot_id)
    validate_region(opts.region, "--region")
    if opts.repo_uri is not None:
        parse_repo_uri(opts.repo_uri)
    if opts.mode not in DYNAMODB_MODES:
        raise InvalidInput(f"--mode {opts.mode} is not valid for DynamoDB (use {', '.join(DYNAMODB_MODES)})")
    if not 0 < opts.write_percent <= 1.5:
        raise InvalidInput(f"--write-percent {opts.write_percent} is out of range (0, 1.5]")
    if opts.max_wcu is not None and opts.max_wcu <= 0:
        raise InvalidInput("--max-wcu must be positive")
    if not opts.table:
        raise InvalidInput("--to-table is required")
    check_table_name(opts.table, "--to-table")


def restore_dynamodb(
    aws: AwsContext,
    opts: DynamoRestoreOptions,
    confirm: Callable[[str], bool] | None = None,
    progress_factory: Callable[[str, int | None], Any] | None = None,
    on_event: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Restore snapshot ``opts.snapshot_id`` into DynamoDB table ``opts.table``.

    Returns the result (or, with ``dry_run``, the plan) as a JSON-able dict.
    Raises SnapshotNotFound, Conflict (target not acceptable for the mode),
    DataPathError (items could not be written) or VerificationFailed.
    While it reads, the snapshot holds a reader lease (``snapshots prune`` keeps it).
    """
    with ReaderLeases() as readers:
        return _restore_dynamodb(aws, opts, readers, confirm, progress_factory, on_event)


def _restore_dynamodb(
    aws: AwsContext,
    opts: DynamoRestoreOptions,
    readers: ReaderLeases,
    confirm: Callable[[str], bool] | None,
    progress_factory: Callable[[str, int | None], Any] | None,
    on_event: Callable[[str], None] | None,
) -> dict[str, Any]:
    check_options(opts)
    aws.check_credentials()
    say = on_event or (lambda _m: None)
    started = time.monotonic()
    repo = Repository.open(aws, opts.region, opts.repo_uri, create=False)
    prefix, manifest = repo.find_snapshot(opts.snapshot_id)
    if manifest.source.get("kind") != "dynamodb":
        raise InvalidInput(f"snapshot {manifest.id} is a {manifest.source.get('kind')} snapshot, not DynamoDB")
    schema = repo.read_schema(prefix, manifest)
    desc = ddb_target.table_state(aws, opts.region, opts.table)
    exists = desc is not None
    empty = ddb_target.is_empty(aws, opts.region, opts.table) if exists else True

    actions: list[str] = []
    if opts.mode == "new":
        if exists and not empty:
            raise Conflict(
                f"table '{opts.table}' already exists in {opts.region} and is not empty; "
                "use --mode upsert or --mode replace"
            )
        if exists:
            assert desc is not None
            ddb_target.check_key_schema(schema, desc, opts.table)
            actions.append(f"load into existing empty table {opts.table}")
        else:
            actions.append(f"create table {opts.table} from schema.json")
    else:
        if not exists:
            raise NotFound(f"table '{opts.table}' not found in {opts.region} (use --mode new to create it)")
        assert desc is not None
        ddb_target.check_key_schema(schema, desc, opts.table)
        if opts.mode == "replace" and not empty:
            actions.append(f"delete every item of {opts.table}")
    actions.append(f"write {manifest.rows:,} items from {len(manifest.parts)} parts")

    if exists:
        assert desc is not None
        budget = capacity_budget(desc, opts.write_percent, opts.max_wcu, "write")
    else:
        fake = {
            "BillingModeSummary": {"BillingMode": schema.get("billing_mode")},
            "ProvisionedThroughput": schema.get("provisioned_throughput") or {},
        }
        budget = capacity_budget(fake, opts.write_percent, opts.max_wcu, "write")
    plan = {
        "snapshot_id": manifest.id,
        "source": manifest.source,
        "target": {"kind": "dynamodb", "table": opts.table, "region": opts.region},
        "mode": opts.mode,
        "table_exists": exists,
        "table_definition": ddb_target.create_request(schema, opts.table),
        "parts": [{"key": p.key, "rows": p.rows, "bytes": p.bytes} for p in manifest.parts],
        "rows": manifest.rows,
        "bytes": manifest.bytes,
        "write_budget_wcu_per_s": budget,
        "actions": actions,
        "dry_run": opts.dry_run,
    }
    if opts.dry_run:
        return plan

    readers.hold(repo, [(manifest.id, prefix)])  # before reading: prune keeps the snapshot from now on
    # A missing, truncated or rewritten part is refused here, before the table is created or emptied.
    repo.check_parts([(prefix, [p.to_dict() for p in manifest.parts])])
    if opts.mode == "replace" and exists and not empty:
        if not opts.yes and not (confirm and confirm(f"Delete every item of table '{opts.table}' in {opts.region}?")):
            raise Conflict("replace not confirmed: nothing was changed (pass --yes to skip the question)")
        say(f"emptying {opts.table}")
        assert desc is not None
        ddb_target.empty_table(aws, opts.region, opts.table, desc, segments=opts.workers, workers=opts.workers)
    if not exists:
        say(f"creating table {opts.table} in {opts.region}")
        ddb_target.create_table(aws, opts.region, opts.table, schema)

    tasks = ddb_target.plan_load(
        aws=aws,
        manifest_parts=[p.to_dict() for p in manifest.parts],
        repo={"bucket": repo.uri.bucket, "prefix": repo.uri.prefix, "region": repo.region},
        snapshot_prefix=prefix,
        table=opts.table,
        region=opts.region,
        write_budget=budget,
        concurrency=opts.workers,
    )
    engine_name = opts.engine
    if engine_name == "auto":
        engine_name, _procs, why = auto_choice("dynamodb", manifest.rows, len(tasks))
        say(f"engine auto: {why}")
    engine = get_engine(engine_name, opts.workers)
    limiter = TokenBucket(budget) if budget else None

    def run(progress: Any) -> list[dict[str, Any]]:
        return engine.run(tasks, ddb_target.run_load_task, TaskContext(limiter=limiter, progress=progress))

    if progress_factory is None:
        results = run(None)
    else:
        with progress_factory(f"restore {opts.table}", manifest.rows) as progress:
            results = run(progress)
    rows = sum(int(r["rows"]) for r in results)
    digest = combine_hex(r["digest"] for r in results) if results else "0" * 64
    if rows != manifest.rows or digest != manifest.content_digest:
        raise VerificationFailed(
            f"restore wrote {rows} items with digest {digest[:16]}..., "
            f"the manifest says {manifest.rows} items, {manifest.content_digest[:16]}..."
        )
    return {
        "snapshot_id": manifest.id,
        "target": {"kind": "dynamodb", "table": opts.table, "region": opts.region},
        "mode": opts.mode,
        "rows": rows,
        "bytes": manifest.bytes,
        "parts": len(manifest.parts),
        "digest": digest,
        "duration_s": round(time.monotonic() - started, 3),
        "engine": engine.name,
    }


def describe_target(aws: AwsContext, region: str, table: str) -> dict[str, Any]:
    return describe_table(aws, region, table)


# -- MySQL -------------------------------------------------------------------------


@dataclass
class MySQLRestoreOptions:
    snapshot_id: str
    target_uri: str
    region: str
    table: str | None = None
    repo_uri: str | None = None
    mode: str = "new"
    password_file: str | None = None
    workers: int | None = None  # None: mysql_target.mysql_load_workers (one per core, +1 with range read-backs)
    engine: str = "local"
    dry_run: bool = False
    yes: bool = False
    verify: bool = True
    only_increment: bool = False
    secret_id: str | None = None  # Secrets Manager secret (in --region unless an ARN names another)
    processes: int | None = None  # --engine local: load in worker processes (None: --processes, else auto)
    load_method: str = "auto"  # mysql_target.LOAD_METHODS: auto (prepared INSERTs), insert, load-data


def check_mysql_options(opts: MySQLRestoreOptions, aws: AwsContext | None = None) -> MySQLSettings:
    """Validate the options, then resolve the target's settings (a --secret-id is read in --region)."""
    parse_mysql_uri(opts.target_uri, "--to", user_optional=opts.secret_id is not None)
    if opts.table is not None:
        check_identifier(opts.table, "--table")
    check_snapshot_id(opts.snapshot_id)
    validate_region(opts.region, "--region")
    if opts.repo_uri is not None:
        parse_repo_uri(opts.repo_uri)
    if opts.load_method not in mysql_target.LOAD_METHODS:
        raise InvalidInput(f"--load-method {opts.load_method} is not valid (use {', '.join(mysql_target.LOAD_METHODS)})")
    if opts.mode not in mysql_target.MODES:
        raise InvalidInput(f"--mode {opts.mode} is not valid for MySQL (use {', '.join(mysql_target.MODES)})")
    if opts.only_increment and opts.mode not in ("new", "upsert"):
        raise InvalidInput(f"--only-increment applies one increment onto the existing table; it cannot be "
                           f"combined with --mode {opts.mode}")
    if opts.workers is not None and opts.workers < 1:
        raise InvalidInput("--workers must be at least 1")
    aws = aws or AwsContext()
    secret = SecretRef.make(aws, opts.secret_id, opts.region)
    if secret is not None:
        aws.check_credentials()
    return settings_from_uri(opts.target_uri, opts.password_file, "--to", secret)


@dataclass
class ChainLink:
    """One snapshot of a restore chain: where it is, its manifest, and its MySQL fields."""

    prefix: str
    manifest: Manifest
    doc: dict[str, Any]

    def __post_init__(self) -> None:
        # Every part entry the manifest names is checked (key, counts), also those this restore does not read.
        key_set = self.doc.get("key_set") or {}
        for p in (key_set.get("parts") or []) if isinstance(key_set, dict) else [None]:
            check_mysql_part_key(p)
        _ = self.tombstones

    @property
    def tombstones(self) -> list[dict[str, Any]]:
        return [check_mysql_part_key(p) for p in (self.doc.get("tombstones") or {}).get("parts") or []]

    @property
    def table_digest(self) -> tuple[int, str]:
        """(rows, digest) of the table a restore of the chain up to this snapshot must produce."""
        td = self.doc.get("table_digest")
        if isinstance(td, dict):
            return int(td["rows"]), str(td["value"])
        if self.manifest.mode == "incremental":
            raise FormatError(f"incremental snapshot {self.manifest.id} has no table_digest")
        return self.manifest.rows, self.manifest.content_digest


def mysql_chain(repo: Repository, prefix: str, manifest: Manifest) -> list[ChainLink]:
    """The snapshots a restore of ``manifest`` applies, oldest (the full snapshot) first."""
    links = [ChainLink(prefix, manifest, dict(repo.store.get_json(prefix + "manifest.json")))]
    seen = {manifest.id}
    while links[-1].manifest.mode == "incremental":
        child = links[-1].manifest
        pid = child.parent_id
        if not pid:
            raise FormatError(f"incremental snapshot {child.id} names no parent")
        if pid in seen:
            raise FormatError(f"the chain of snapshot {manifest.id} loops at {pid}")
        seen.add(pid)
        pprefix = repo.snapshot_prefix(child.source_key, pid)
        try:
            doc = dict(repo.store.get_json(pprefix + "manifest.json"))
        except NotFound as e:
            raise SnapshotNotFound(f"snapshot {pid}, the parent of {child.id}, is not in {repo.uri}: "
                                   f"the chain of {manifest.id} is broken") from e
        links.append(ChainLink(pprefix, Manifest.from_dict(doc), doc))
    links.reverse()
    return links


def restore_mysql(
    aws: AwsContext,
    opts: MySQLRestoreOptions,
    confirm: Callable[[str], bool] | None = None,
    progress_factory: Callable[[str, int | None], Any] | None = None,
    on_event: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Restore MySQL snapshot ``opts.snapshot_id`` into a table of the database ``opts.target_uri`` names.

    An incremental snapshot restores its whole chain (the full snapshot, then
    every increment up to it: its tombstones deleted by primary key, then its
    rows upserted), or with ``only_increment`` just that increment onto a
    table that holds its parent. Everything the mode refuses (a non-empty
    target for ``new``, a target with another schema for
    upsert/append/truncate, an unconfirmed replace/truncate) is refused before
    anything is written; an append into a table that holds rows goes through a
    staging table and one INSERT ... SELECT, so a duplicate key writes nothing. After loading, the restored table is read back and
    its rows and digest compared with the snapshot's table digest (unless
    ``verify`` is off, or the target held other rows before an upsert/append:
    then the loaded parts' digests are compared).
    """
    with ReaderLeases() as readers:
        return _restore_mysql(aws, opts, readers, confirm, progress_factory, on_event)


def _restore_mysql(
    aws: AwsContext,
    opts: MySQLRestoreOptions,
    readers: ReaderLeases,
    confirm: Callable[[str], bool] | None,
    progress_factory: Callable[[str, int | None], Any] | None,
    on_event: Callable[[str], None] | None,
) -> dict[str, Any]:
    settings = check_mysql_options(opts, aws)
    aws.check_credentials()
    say = on_event or (lambda _m: None)
    started = time.monotonic()
    repo = Repository.open(aws, opts.region, opts.repo_uri, create=False)
    prefix, manifest = repo.find_snapshot(opts.snapshot_id)
    if manifest.source.get("kind") != "mysql":
        raise InvalidInput(f"snapshot {manifest.id} is a {manifest.source.get('kind')} snapshot, not MySQL")
    if opts.only_increment and manifest.mode != "incremental":
        raise InvalidInput(f"--only-increment needs an incremental snapshot; {manifest.id} is {manifest.mode}")
    chain = mysql_chain(repo, prefix, manifest)
    if opts.only_increment:
        chain = chain[-1:]
    if len(chain) > 1 and opts.mode == "append":
        raise InvalidInput("--mode append cannot apply increments (they update and delete rows); "
                           "use new, upsert, truncate or replace")
    schema = repo.read_schema(prefix, manifest)
    for link in chain:
        other = repo.read_schema(link.prefix, link.manifest) if link.prefix != prefix else schema
        if (other.get("stored_columns") != schema.get("stored_columns")
                or other.get("primary_key") != schema.get("primary_key")):
            raise FormatError(f"snapshot {link.manifest.id} has other columns than {manifest.id}: the chain is invalid")
    table = opts.table or str(schema["table_name"])
    db = settings.database
    stored = [c for c in schema["columns"] if not c["generated"]]
    key_cols = [next(c for c in stored if c["name"] == k) for k in schema.get("primary_key") or []]
    target = {"kind": "mysql", "host": settings.host, "port": settings.port, "database": db, "table": table}
    loaded_rows = sum(link.manifest.rows for link in chain)
    tombstones = sum(int(p["rows"]) for link in chain for p in link.tombstones)
    n_parts = sum(len(link.manifest.parts) + len(link.tombstones) for link in chain)

    conn = settings.connect()
    try:
        have = mysql_target.target_columns(conn, db, table)
        exists = have is not None
        if opts.only_increment and not exists:
            raise NotFound(f"table '{table}' does not exist in database '{db}': --only-increment applies "
                           f"{manifest.id} onto a table that holds its parent {manifest.parent_id}")
        empty = mysql_target.is_empty(conn, db, table) if exists else True
        if opts.load_method == "load-data" and not mysql_target.local_infile(conn):
            raise InvalidInput(f"--load-method load-data: the server at {settings.host}:{settings.port} refuses "
                               "LOAD DATA LOCAL INFILE (local_infile is OFF); use --load-method insert or auto")
        actions: list[str] = []
        if exists and opts.mode != "replace":
            assert have is not None
            mysql_target.check_compatible(schema, have, table, mysql_target.primary_key(conn, db, table))
        if opts.mode == "new" and exists and not empty and not opts.only_increment:
            raise Conflict(f"table '{table}' already exists in database '{db}' and is not empty; "
                           "use --mode upsert, append, truncate or replace")
        destructive = exists and not empty and opts.mode in ("replace", "truncate")
        if opts.mode == "replace" and exists:
            actions.append(f"drop table {table} and recreate it from schema.json")
        elif opts.mode == "truncate" and exists and not empty:
            actions.append(f"truncate table {table}")
        if not exists:
            actions.append(f"create table {table} from schema.json")
        # An append into a table that holds rows loads a staging copy first, then moves every row in one
        # INSERT ... SELECT: a duplicate key (or any failure) leaves the target as it was (docs/adr/0023).
        stage = mysql_target.stage_name(table) if opts.mode == "append" and exists and not empty else None
        if stage is not None:
            actions.append(f"load the rows into a staging table {stage} (CREATE TABLE ... LIKE {table}), "
                           f"insert them into {table} in one statement, drop {stage}")
        for i, link in enumerate(chain):
            m = link.manifest
            if link.tombstones:
                actions.append(f"{m.id}: delete {sum(int(p['rows']) for p in link.tombstones):,} keys "
                               f"from {len(link.tombstones)} tombstone parts")
            upsert = m.mode == "incremental" or opts.mode == "upsert"
            actions.append(f"{m.id}: insert {m.rows:,} rows from {len(m.parts)} parts" + (" (upsert)" if upsert else "")
                           + (" (full)" if i == 0 and m.mode == "full" else ""))
        only_snapshot_rows = not opts.only_increment and (not exists or empty or opts.mode in ("replace", "truncate"))
        verify_table = opts.verify and (only_snapshot_rows or opts.only_increment)
        plan = {
            "snapshot_id": manifest.id,
            "source": manifest.source,
            "target": target,
            "mode": opts.mode,
            "only_increment": opts.only_increment,
            "chain": [{"snapshot_id": link.manifest.id, "mode": link.manifest.mode, "rows": link.manifest.rows,
                       "deleted": sum(int(p["rows"]) for p in link.tombstones)} for link in chain],
            "table_exists": exists,
            "create_table": mysql_target.create_sql(schema, table).replace("%%", "%"),
            "parts": [{"key": p.key, "rows": p.rows, "bytes": p.bytes, "snapshot_id": link.manifest.id}
                      for link in chain for p in link.manifest.parts],
            "rows": loaded_rows,
            "deleted": tombstones,
            "bytes": sum(link.manifest.bytes for link in chain),
            "actions": actions,
            "dry_run": opts.dry_run,
        }
        if opts.dry_run:
            return plan
        readers.hold(repo, [(link.manifest.id, link.prefix) for link in chain])  # prune keeps the chain
        # Every part of the chain is checked before the table is created, dropped or truncated.
        repo.check_parts((link.prefix, [p.to_dict() for p in link.manifest.parts] + link.tombstones) for link in chain)
        if destructive and not opts.yes and not (
            confirm and confirm(f"{'Drop' if opts.mode == 'replace' else 'Truncate'} table '{table}' in '{db}'?")
        ):
            raise Conflict(f"{opts.mode} not confirmed: nothing was changed (pass --yes to skip the question)")
        if opts.mode == "replace" and exists:
            say(f"dropping {db}.{table}")
            mysql_target.drop_table(conn, db, table)
            exists = False
        elif opts.mode == "truncate" and exists and not empty:
            say(f"truncating {db}.{table}")
            mysql_target.truncate_table(conn, db, table)
        if not exists:
            say(f"creating table {db}.{table}")
            mysql_target.create_table(conn, db, schema, table)
    finally:
        conn.close()

    repo_spec = {"bucket": repo.uri.bucket, "prefix": repo.uri.prefix, "region": repo.region}
    parts = sum(len(link.manifest.parts) for link in chain)
    engine_name, processes, why = resolve_engine(opts.engine, opts.processes, "mysql-load", loaded_rows, parts)
    if why:
        say(f"engine auto: {why}")
    # A full snapshot into an empty table: each load task reads its part's key range back as soon as
    # the part is in (overlapping the other parts' loads), and a final COUNT(*) proves nothing else is
    # there; the whole-table read-back remains the fallback (docs/adr/0015).
    range_pk = [c["name"] for c in key_cols]
    range_check = (verify_table and stage is None and not opts.only_increment and len(chain) == 1
                   and chain[0].manifest.mode == "full"
                   and bool(range_pk) and all(c["kind"] in mysql_source.RANGE_KEY_KINDS for c in key_cols))
    load_method = "insert" if opts.load_method == "auto" else opts.load_method
    # While key ranges are read back as parts load, INSERT batches and read-backs share one place on the
    # server per core (the extra loader encodes meanwhile). LOAD DATA takes turns on the table's
    # AUTO-INC lock instead (docs/adr/0021).
    send_gate = mysql_target.server_gate() if range_check and load_method == "insert" else None
    workers = opts.workers if opts.workers is not None else mysql_target.mysql_load_workers(range_check)
    engine = local_or_processes(engine_name, workers, processes, parts)

    # Rows are hashed while they load only when the loaded parts' digests are the verification (the
    # table held other rows); a table read back whole is compared with the snapshot's table digest,
    # which the parts' sha256 (checked before any write) and that comparison together prove.
    hash_parts = opts.verify and not verify_table
    range_results: list[bool] = []
    ranges_compared = {"bytes": 0, "values": 0}  # how each part's key range was proven (docs/adr/0021)
    range_keys: dict[str, Any] = {}  # task id -> the part's (first, last) key as SQL parameters
    key_order: list[str] = []  # load tasks in the snapshot's key order

    def load_fn(spec: TaskSpec, ctx: TaskContext) -> dict[str, Any]:
        return mysql_target.run_load_task(spec, ctx, settings, send_gate=send_gate)

    def delete_fn(spec: TaskSpec, ctx: TaskContext) -> dict[str, Any]:
        return mysql_target.run_delete_task(spec, ctx, settings)

    def run(progress: Any) -> tuple[int, str, int]:
        rows, deleted, digest = 0, 0, "0" * 64
        for link in chain:
            m = link.manifest
            if link.tombstones:
                say(f"{m.id}: deleting {sum(int(p['rows']) for p in link.tombstones):,} keys")
                tasks = mysql_target.plan_delete(
                    aws=aws.to_dict(), settings=settings, tombstone_parts=link.tombstones, repo=repo_spec,
                    snapshot_prefix=link.prefix, database=db, table=table, key_columns=key_cols)
                deleted += sum(int(r["deleted"]) for r in engine.run(tasks, delete_fn, TaskContext(progress=progress)))
            tasks = mysql_target.plan_load(
                aws=aws.to_dict(), settings=settings, manifest_parts=[p.to_dict() for p in m.parts], repo=repo_spec,
                snapshot_prefix=link.prefix, database=db, table=stage or table, columns=stored,
                upsert=m.mode == "incremental" or opts.mode == "upsert", hash_rows=hash_parts,
                verify_range=range_pk if range_check else None, load_method=load_method,
            )
            results = engine.run(tasks, load_fn, TaskContext(progress=progress))
            range_results.extend(bool(r.get("range_verified")) for r in results)
            range_keys.update((r["task_id"], r.get("range_keys")) for r in results)
            key_order.extend(t["task_id"] for t in tasks)  # the snapshot's key order
            for r in results:
                if r.get("range_compared"):
                    ranges_compared[r["range_compared"]] += 1
            got = sum(int(r["rows"]) for r in results)
            digest = combine_hex(r["digest"] for r in results) if results and hash_parts else m.content_digest
            if got != m.rows or digest != m.content_digest:
                raise VerificationFailed(
                    f"restore of {m.id} loaded {got} rows with digest {digest[:16]}..., "
                    f"the manifest says {m.rows} rows, {m.content_digest[:16]}..."
                )
            rows += got
        return rows, digest, deleted

    want_rows, want_digest = chain[-1].table_digest
    # The read-back's worker processes start now and wait through the load (their ~0.7 s start is hidden).
    read_back_procs = explicit_processes(opts.processes)
    n_read_back = mysql_source.read_back_processes(want_rows, read_back_procs)
    warm = WarmWorkers(n_read_back) if verify_table and not range_check and n_read_back > 1 else None
    try:
        if stage is not None:
            say(f"creating staging table {db}.{stage}")
            stage_conn = settings.connect()
            try:
                mysql_target.create_stage(stage_conn, db, table, stage)
            finally:
                stage_conn.close()
        if progress_factory is None:
            rows, digest, deleted = run(None)
        else:
            with progress_factory(f"restore {table}", loaded_rows + tombstones) as progress:
                rows, digest, deleted = run(progress)
        if stage is not None:
            say(f"appending {rows:,} staged rows to {db}.{table} in one statement")
            moved = mysql_target.append_stage(settings, db, stage, table, stored)
            if moved != rows:
                raise VerificationFailed(f"appending to {db}.{table} inserted {moved} rows, the snapshot has {rows}")
        live = None
        verified_by = None
        if range_check and range_results and all(range_results):
            # Every row between each part's first and last key is the part's: no row in the gaps
            # between those ranges means the table holds exactly the snapshot's rows (index probes);
            # else, or with a part without rows, the rows are counted (docs/adr/0021 stop-20 amendment).
            ranges = [r for r in (range_keys.get(t) for t in key_order) if r]
            if (len(ranges) == len(key_order)
                    and not mysql_target.rows_outside_ranges(settings, db, table, range_pk, ranges)):
                counted = rows  # each part's rows, its range read back as exactly those
            else:
                counted = mysql_target.count_rows(settings, db, table)
            if counted == want_rows:
                say(f"verified: every part's key range read back as it loaded, and {db}.{table} holds "
                    f"{counted:,} rows")
                live = Digest(int(want_digest, 16), want_rows)
                verified_by = "part key ranges"
        elif range_check and range_results:
            say("a part's key range did not read back as the part: reading the whole table back")
        if verify_table and live is None:
            say(f"reading back {db}.{table} to verify")
            live = mysql_source.table_digest(settings, db, table, stored, aws=aws, processes=read_back_procs,
                                             warm=warm)
            verified_by = "table read-back"
    finally:
        if warm is not None:
            warm.close()
        if stage is not None:
            problem = mysql_target.drop_stage(settings, db, stage)
            if problem:
                say(problem)
    verification = "skipped"
    if len(chain) > 1 or opts.only_increment:
        digest = want_digest
    if live is not None:
        if live.count != want_rows or live.hexdigest() != want_digest:
            hint = (f" (did it hold snapshot {manifest.parent_id} before?)" if opts.only_increment else "")
            raise VerificationFailed(
                f"restored table {db}.{table} has {live.count} rows with digest {live.hexdigest()[:16]}..., "
                f"snapshot {manifest.id} says {want_rows} rows, {want_digest[:16]}...{hint}"
            )
        digest, verification = live.hexdigest(), "table"
    elif opts.verify:
        verification = "parts"  # the table held other rows: the loaded parts' digests were compared
    return {
        "snapshot_id": manifest.id,
        "target": target,
        "mode": opts.mode,
        "only_increment": opts.only_increment,
        "chain": [link.manifest.id for link in chain],
        "rows": rows,
        "deleted": deleted,
        "table_rows": want_rows,
        "bytes": sum(link.manifest.bytes for link in chain),
        "parts": n_parts,
        "digest": digest,
        "verification": verification,
        "verified_by": verified_by if verification == "table" else None,
        "load_method": load_method,
        "ranges_compared": ranges_compared if range_check else None,
        "duration_s": round(time.monotonic() - started, 3),
        "engine": engine.name,
    }


# -- Redshift (and PostgreSQL, its local stand-in) ------------------------------------


@dataclass
class RedshiftRestoreOptions:
    snapshot_id: str
    target_uri: str  # redshift://USER@HOST[:PORT]/DB or postgres://USER@HOST[:PORT]/DB
    region: str
    table: str | None = None  # SCHEMA.TABLE (default public.<source table>)
    repo_uri: str | None = None
    insert_mode: str | None = None  # KEEP_EXISTING | OVERWRITE_EXISTING (default) | TRUNCATE | APPEND
    iam_role: str | None = None
    dist_key: str | None = None
    sort_key: list[str] | None = None
    password_file: str | None = None
    dry_run: bool = False
    verify: bool = True
    secret_id: str | None = None  # Secrets Manager secret (in --region unless an ARN names another)


def restore_redshift(
    aws: AwsContext,
    opts: RedshiftRestoreOptions,
    progress_factory: Callable[[str, int | None], Any] | None = None,
    on_event: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Restore a MySQL (whole chain) or DynamoDB snapshot into a Redshift or stand-in PostgreSQL table.

    One transaction: staging tables loaded by COPY, then the insert mode;
    any failure leaves the target as it was. See backupctl/targets/redshift.py
    and docs/adr/0006-redshift-target.md.
    """
    from backupctl import pg_conn
    from backupctl.targets import redshift as redshift_target  # psycopg is imported only when needed

    secret = None
    if opts.secret_id is not None:
        pg_conn.parse_pg_uri(opts.target_uri, "--to", user_optional=True)
        validate_region(opts.region, "--region")
        secret = SecretRef.make(aws, opts.secret_id, opts.region)
        aws.check_credentials()
    # The target builds its settings with pg_conn.settings_from_uri, which reads the scoped secret.
    with pg_conn.secret_scope(secret), ReaderLeases() as readers:
        return redshift_target.restore(aws, opts, progress_factory=progress_factory, on_event=on_event,
                                       readers=readers)
