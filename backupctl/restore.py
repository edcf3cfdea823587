"""Restoring a snapshot: plan from the manifest, prepare the target, load parts, check.

Modes for DynamoDB targets:

* ``new`` (default) - create the table from schema.json; an existing table is
  accepted only when empty and with the same key schema.
* ``upsert`` - write into an existing table (puts overwrite items by key).
* ``replace`` - empty an existing table first (after a confirmation), then load.

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
from backupctl.engines import TaskContext, get_engine
from backupctl.errors import Conflict, InvalidInput, NotFound, VerificationFailed
from backupctl.formats.dynamodb_json import combine_hex
from backupctl.model import check_snapshot_id
from backupctl.repository import Repository, parse_repo_uri
from backupctl.retry import TokenBucket
from backupctl.sources.dynamodb import capacity_budget, describe_table
from backupctl.targets import dynamodb as ddb_target

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
    """
    check_options(opts)
    aws.check_credentials()
    say = on_event or (lambda _m: None)
    started = time.monotonic()
    repo = Repository.open(aws, opts.region, opts.repo_uri, create=False)
    prefix, manifest = repo.find_snapshot(opts.snapshot_id)
    if manifest.source.get("kind") != "dynamodb":
        raise InvalidInput(f"snapshot {manifest.id} is a {manifest.source.get('kind')} snapshot, not DynamoDB")
    schema = repo.read_schema(prefix)
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
    engine = get_engine(opts.engine, opts.workers)
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
