"""DynamoDB as a target: create the table from schema.json, load parts, empty a table.

Loads use BatchWriteItem of 25 items. UnprocessedItems are re-sent with
exponential backoff under the run's retry policy; when the policy gives up
the task raises DataPathError naming the part and how many items were not
written. Items are never dropped: a load either writes every item of its part
or fails loudly. Writes are idempotent puts, so re-running a load converges.
"""

from __future__ import annotations

import gzip
import math
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import botocore.exceptions

from backupctl.aws import AwsContext
from backupctl.engines.local import TaskContext
from backupctl.errors import Conflict, DataPathError, FormatError, Interrupted, InvalidInput, NotFound
from backupctl.formats.dynamodb_json import Digest, decode_line, item_hash, item_size
from backupctl.model import TaskSpec
from backupctl.repository import task_store
from backupctl.retry import DEFAULT_POLICY, RetryPolicy, TokenBucket, policy_from_env
from backupctl.sources.dynamodb import describe_table, scan_pages

BATCH = 25


def _code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def table_state(aws: AwsContext, region: str, table: str) -> dict[str, Any] | None:
    """DescribeTable of ``table`` or None when it does not exist."""
    try:
        return describe_table(aws, region, table)
    except NotFound:
        return None


def is_empty(aws: AwsContext, region: str, table: str) -> bool:
    ddb = aws.client("dynamodb", region)
    resp = DEFAULT_POLICY.call(
        lambda: ddb.scan(TableName=table, Limit=1, Select="COUNT"), f"checking whether {table} is empty"
    )
    return int(resp.get("Count", 0)) == 0 and not resp.get("LastEvaluatedKey")


def create_request(schema: dict[str, Any], table: str) -> dict[str, Any]:
    """The CreateTable request that recreates a table from schema.json."""
    req: dict[str, Any] = {
        "TableName": table,
        "KeySchema": schema["key_schema"],
        "AttributeDefinitions": schema["attribute_definitions"],
        "BillingMode": schema.get("billing_mode") or "PROVISIONED",
    }
    provisioned = req["BillingMode"] == "PROVISIONED"
    if provisioned:
        pt = schema.get("provisioned_throughput") or {}
        req["ProvisionedThroughput"] = {
            "ReadCapacityUnits": max(1, int(pt.get("ReadCapacityUnits") or 1)),
            "WriteCapacityUnits": max(1, int(pt.get("WriteCapacityUnits") or 1)),
        }
    gsis = []
    for ix in schema.get("global_secondary_indexes") or []:
        g = {k: ix[k] for k in ("IndexName", "KeySchema", "Projection")}
        if provisioned:
            g["ProvisionedThroughput"] = ix.get("ProvisionedThroughput") or req["ProvisionedThroughput"]
        gsis.append(g)
    if gsis:
        req["GlobalSecondaryIndexes"] = gsis
    lsis = [{k: ix[k] for k in ("IndexName", "KeySchema", "Projection")} for ix in schema.get("local_secondary_indexes") or []]
    if lsis:
        req["LocalSecondaryIndexes"] = lsis
    stream = schema.get("stream_specification")
    if stream and stream.get("StreamEnabled"):
        req["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream.get("StreamViewType", "NEW_AND_OLD_IMAGES")}
    sse = schema.get("sse")
    if sse and sse.get("enabled") and sse.get("sse_type") == "KMS":
        # The source's key ARN is in region A; use the AWS-managed key in region B.
        req["SSESpecification"] = {"Enabled": True, "SSEType": "KMS"}
    if schema.get("table_class"):
        req["TableClass"] = schema["table_class"]
    if schema.get("deletion_protection"):
        req["DeletionProtectionEnabled"] = True
    if schema.get("tags"):
        req["Tags"] = schema["tags"]
    return req


def create_table(
    aws: AwsContext, region: str, table: str, schema: dict[str, Any], policy: RetryPolicy = DEFAULT_POLICY
) -> None:
    """Create ``table`` from schema.json, wait until ACTIVE, then apply TTL."""
    ddb = aws.client("dynamodb", region)
    req = create_request(schema, table)

    def create() -> None:
        try:
            ddb.create_table(**req)
        except botocore.exceptions.ClientError as e:
            if _code(e) == "ResourceInUseException":
                raise Conflict(f"table '{table}' already exists in {region}") from e
            if _code(e) == "ValidationException":
                raise InvalidInput(f"cannot create table '{table}': {e.response['Error'].get('Message')}") from e
            raise

    policy.call(create, f"creating table {table}")

    def active() -> bool | None:
        status = ddb.describe_table(TableName=table)["Table"]["TableStatus"]
        return True if status == "ACTIVE" else None

    policy.poll(active, f"waiting for table {table} to become ACTIVE", interval_s=0.2)
    ttl = schema.get("ttl")
    if ttl and ttl.get("enabled") and ttl.get("attribute_name"):
        policy.call(
            lambda: ddb.update_time_to_live(
                TableName=table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["attribute_name"]},
            ),
            f"enabling TTL on {table}",
        )


def key_names(schema_or_desc: dict[str, Any]) -> list[str]:
    ks = schema_or_desc.get("key_schema") or schema_or_desc.get("KeySchema") or []
    return [k["AttributeName"] for k in ks]


def check_key_schema(schema: dict[str, Any], desc: dict[str, Any], table: str) -> None:
    want = {(k["AttributeName"], k["KeyType"]) for k in schema["key_schema"]}
    have = {(k["AttributeName"], k["KeyType"]) for k in desc["KeySchema"]}
    if want != have:
        raise Conflict(
            f"table '{table}' has key schema {sorted(have)}, the snapshot has {sorted(want)}: refusing to load"
        )


def write_batches(
    ddb: Any,
    table: str,
    requests: list[dict[str, Any]],
    limiter: TokenBucket | None,
    costs: list[float],
    what: str,
    ctx: TaskContext | None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> None:
    """BatchWriteItem ``requests`` (<= 25), re-sending UnprocessedItems until all are written.

    Raises DataPathError naming ``what`` and the number of items not written
    when the retry policy gives up.
    """
    if limiter is not None:
        limiter.acquire(sum(costs))
    pending = requests
    attempt = 0
    started = time.monotonic()
    while pending:
        if ctx is not None and ctx.stopped:
            raise Interrupted("stopped")
        try:
            resp = policy.call(partial(ddb.batch_write_item, RequestItems={table: pending}), f"writing {what}")
        except DataPathError as e:
            raise DataPathError(f"{e.message} ({len(pending)} items of this batch not written)") from e
        pending = resp.get("UnprocessedItems", {}).get(table, [])
        if pending:
            attempt += 1
            if attempt >= policy.max_attempts or time.monotonic() - started > policy.deadline_s:
                raise DataPathError(
                    f"{what}: {len(pending)} items not written after {attempt} retries of unprocessed items"
                )
            time.sleep(policy.backoff(attempt))


def plan_load(
    *,
    aws: AwsContext,
    manifest_parts: list[dict[str, Any]],
    repo: dict[str, Any],
    snapshot_prefix: str,
    table: str,
    region: str,
    write_budget: float | None,
    concurrency: int,
    policy: RetryPolicy | None = None,
) -> list[TaskSpec]:
    return [
        {
            "kind": "dynamodb.load",
            "task_id": f"load-{i:05d}",
            "part": part,
            "repo": repo,
            "aws": aws.to_dict(),
            "snapshot_prefix": snapshot_prefix,
            "table": table,
            "region": region,
            "write_rate": (write_budget / max(1, min(concurrency, len(manifest_parts)))) if write_budget else None,
            "retry": (policy or policy_from_env()).to_dict(),
        }
        for i, part in enumerate(manifest_parts)
    ]


def run_load_task(spec: TaskSpec, ctx: TaskContext) -> dict[str, Any]:
    """Load one part into the table. Checks the part's sha256 and row count first.

    Idempotent: items are written with PutRequest, so a re-run overwrites.
    """
    aws = AwsContext.from_dict(spec.get("aws"))
    store = task_store(spec)
    part = spec["part"]
    key = spec["snapshot_prefix"] + part["key"]
    table, region = spec["table"], spec["region"]
    limiter = ctx.limiter
    if limiter is None and spec.get("write_rate"):
        limiter = TokenBucket(float(spec["write_rate"]))
    ddb = aws.client("dynamodb", region)
    digest = Digest()
    with tempfile.TemporaryFile(prefix="backupctl-load-") as tmp:
        sha = store.download_to(key, tmp)
        if sha != part["sha256"]:
            raise FormatError(f"part {part['key']} is corrupt: sha256 {sha} != manifest {part['sha256']}")
        batch: list[dict[str, Any]] = []
        costs: list[float] = []
        nbytes = 0
        written = 0

        def flush() -> None:
            nonlocal batch, costs, nbytes, written
            write_batches(ddb, table, batch, limiter, costs, f"part {part['key']} into {table}", ctx, store.policy)
            written += len(batch)
            ctx.advance(len(batch), nbytes)
            batch, costs, nbytes = [], [], 0

        try:
            with gzip.GzipFile(fileobj=tmp, mode="rb") as gz:
                for lineno, line in enumerate(gz, start=1):
                    if not line.strip():
                        continue
                    try:
                        item = decode_line(line)
                    except FormatError as e:
                        raise FormatError(f"part {part['key']} line {lineno}: {e.message}") from e
                    digest.add_hash(item_hash(item))
                    batch.append({"PutRequest": {"Item": item}})
                    costs.append(float(math.ceil(max(1, item_size(item)) / 1024)))
                    nbytes += len(line)
                    if len(batch) == BATCH:
                        flush()
                if batch:
                    flush()
        except DataPathError as e:
            not_written = int(part["rows"]) - written
            raise DataPathError(f"{e.message}; part {part['key']}: {not_written} of {part['rows']} items not written") from e
        except (OSError, EOFError) as e:
            raise FormatError(f"part {part['key']} is not valid gzip: {e}") from e
    if digest.count != int(part["rows"]) or digest.hexdigest() != part["digest"]:
        raise FormatError(
            f"part {part['key']}: read {digest.count} items (manifest says {part['rows']}) "
            "or its content digest differs"
        )
    return {"task_id": spec["task_id"], "rows": digest.count, "digest": digest.hexdigest()}


def empty_table(
    aws: AwsContext, region: str, table: str, desc: dict[str, Any], segments: int, workers: int,
    progress: Any = None,
) -> int:
    """Delete every item of ``table`` (keeps the table, its indexes, streams and ARN)."""
    from backupctl.engines.local import LocalEngine

    keys = key_names(desc)
    ddb_names = {f"#k{i}": k for i, k in enumerate(keys)}

    def one(spec: TaskSpec, ctx: TaskContext) -> dict[str, Any]:
        ddb = aws.client("dynamodb", region)
        n = 0
        for items in scan_pages(
            aws, region, table, spec["segment"], segments, None, ctx,
            ProjectionExpression=", ".join(ddb_names), ExpressionAttributeNames=ddb_names,
        ):
            for i in range(0, len(items), BATCH):
                chunk = items[i : i + BATCH]
                write_batches(ddb, table, [{"DeleteRequest": {"Key": it}} for it in chunk], None,
                              [1.0] * len(chunk), f"emptying {table}", ctx)
                n += len(chunk)
                ctx.advance(len(chunk), 0)
        return {"deleted": n}

    res = LocalEngine(workers).run([{"segment": s} for s in range(segments)], one, TaskContext(progress=progress))
    return sum(r["deleted"] for r in res)


ConfirmFn = Callable[[str], bool]
