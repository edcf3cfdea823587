"""DynamoDB as a source: describe, plan a parallel scan, export one segment.

The plan follows emr-dynamodb-connector's sizing (one segment per GiB of
table, one per 100 RCU of read budget) and adds enough segments to keep the
worker pool busy on small tables. A task scans one segment and streams its
items through gzip into a temporary file, cutting a new part every
``part_max_bytes`` of uncompressed lines, so memory does not grow with the
table: at most one Scan page and the gzip state per worker.
"""

from __future__ import annotations

import gzip
import math
import re
import tempfile
from collections.abc import Iterator
from functools import partial
from typing import Any

import botocore.exceptions
import orjson

from backupctl.aws import AwsContext
from backupctl.engines.local import TaskContext
from backupctl.errors import AuthError, DataPathError, FormatError, Interrupted, InvalidInput, NotFound
from backupctl.formats.dynamodb_json import DIGEST_ALGORITHM, Digest, decode_line, encode_line, item_hash
from backupctl.model import PartResult, TaskSpec, part_key
from backupctl.repository import PartSink, RepoURI, S3Store, task_store
from backupctl.retry import DEFAULT_POLICY, RetryPolicy, TokenBucket, policy_from_env

PART_MAX_BYTES = 256 << 20  # uncompressed bytes per part before a new one is cut
MAX_SEGMENTS = 1_000_000
MIN_ITEMS_PER_SEGMENT = 2_000
RCU_PER_SEGMENT = 100


def _code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


_TABLE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


def check_table_name(name: str, what: str = "--table") -> str:
    """``name`` if DynamoDB accepts it as a table name (3-255 of ``A-Za-z0-9_.-``), else InvalidInput (exit 2)."""
    if not _TABLE_NAME_RE.match(name or ""):
        shown = name if len(name or "") <= 80 else name[:80] + "..."
        raise InvalidInput(f"invalid {what} '{shown}': a DynamoDB table name is 3 to 255 letters, digits, "
                           "'_', '-' and '.'")
    return name


def describe_table(aws: AwsContext, region: str, table: str, policy: RetryPolicy = DEFAULT_POLICY) -> dict[str, Any]:
    """DescribeTable plus TTL and tags; raises NotFound for a missing table, InvalidInput for an invalid name."""
    check_table_name(table, "table name")
    ddb = aws.client("dynamodb", region)

    def call() -> dict[str, Any]:
        try:
            return dict(ddb.describe_table(TableName=table)["Table"])
        except botocore.exceptions.ClientError as e:
            if _code(e) == "ResourceNotFoundException":
                raise NotFound(f"DynamoDB table '{table}' not found in {region}") from e
            if _code(e) in ("AccessDeniedException", "UnrecognizedClientException"):
                raise AuthError(f"cannot describe DynamoDB table '{table}' in {region}: {_code(e)}") from e
            raise

    desc = policy.call(call, f"describing table {table}")
    try:
        ttl = policy.call(lambda: ddb.describe_time_to_live(TableName=table), f"describing TTL of {table}").get(
            "TimeToLiveDescription", {}
        )
    except botocore.exceptions.ClientError:
        ttl = {}
    tags: list[dict[str, str]] = []
    try:
        token = None
        while True:
            kw: dict[str, Any] = {"ResourceArn": desc["TableArn"]}
            if token:
                kw["NextToken"] = token
            resp = policy.call(partial(ddb.list_tags_of_resource, **kw), f"listing tags of {table}")
            tags.extend(resp.get("Tags", []))
            token = resp.get("NextToken")
            if not token:
                break
    except botocore.exceptions.ClientError:
        pass
    desc["_ttl"] = ttl
    desc["_tags"] = tags
    return desc


def billing_mode(desc: dict[str, Any]) -> str:
    return str((desc.get("BillingModeSummary") or {}).get("BillingMode") or "PROVISIONED")


def _index_schema(ix: dict[str, Any], provisioned: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "IndexName": ix["IndexName"],
        "KeySchema": ix["KeySchema"],
        "Projection": ix.get("Projection", {"ProjectionType": "ALL"}),
    }
    pt = ix.get("ProvisionedThroughput")
    if provisioned and pt:
        out["ProvisionedThroughput"] = {
            "ReadCapacityUnits": int(pt.get("ReadCapacityUnits") or 1),
            "WriteCapacityUnits": int(pt.get("WriteCapacityUnits") or 1),
        }
    return out


def table_schema(desc: dict[str, Any]) -> dict[str, Any]:
    """What schema.json records: everything recreating the table needs."""
    mode = billing_mode(desc)
    provisioned = mode == "PROVISIONED"
    pt = desc.get("ProvisionedThroughput") or {}
    ttl = desc.get("_ttl") or {}
    sse = desc.get("SSEDescription") or {}
    return {
        "kind": "dynamodb",
        "table_name": desc["TableName"],
        "table_arn": desc.get("TableArn"),
        "key_schema": desc["KeySchema"],
        "attribute_definitions": desc["AttributeDefinitions"],
        "billing_mode": mode,
        "provisioned_throughput": (
            {
                "ReadCapacityUnits": int(pt.get("ReadCapacityUnits") or 0),
                "WriteCapacityUnits": int(pt.get("WriteCapacityUnits") or 0),
            }
            if provisioned
            else None
        ),
        "global_secondary_indexes": [_index_schema(i, provisioned) for i in desc.get("GlobalSecondaryIndexes", [])],
        "local_secondary_indexes": [_index_schema(i, False) for i in desc.get("LocalSecondaryIndexes", [])],
        "ttl": (
            {"attribute_name": ttl.get("AttributeName"), "enabled": ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")}
            if ttl.get("AttributeName")
            else None
        ),
        "stream_specification": desc.get("StreamSpecification"),
        "sse": (
            {"enabled": sse.get("Status") in ("ENABLED", "ENABLING"), "sse_type": sse.get("SSEType"),
             "kms_master_key_arn": sse.get("KMSMasterKeyArn")}
            if sse
            else None
        ),
        "table_class": (desc.get("TableClassSummary") or {}).get("TableClass"),
        "deletion_protection": bool(desc.get("DeletionProtectionEnabled", False)),
        "tags": desc.get("_tags", []),
        "item_count_estimate": int(desc.get("ItemCount") or 0),
        "size_bytes_estimate": int(desc.get("TableSizeBytes") or 0),
    }


def capacity_budget(desc: dict[str, Any], percent: float, explicit: float | None, kind: str) -> float | None:
    """Units per second this run may use: ``explicit`` wins, else percent of provisioned.

    On-demand tables have no provisioned figure; without an explicit budget
    the run is unthrottled client-side and relies on server throttling + retries.
    """
    if explicit is not None:
        return float(explicit)
    if billing_mode(desc) == "PAY_PER_REQUEST":
        return None
    pt = desc.get("ProvisionedThroughput") or {}
    units = pt.get("ReadCapacityUnits" if kind == "read" else "WriteCapacityUnits") or 0
    return max(1.0, float(units) * percent) if units else None


def choose_segments(
    desc: dict[str, Any], read_budget: float | None, workers: int, distributed: bool = False
) -> int:
    """Parallel-scan segments for a table.

    One segment per GiB of table always (bounded part and task size). On a
    distributed engine (Spark, EMR) also emr-dynamodb-connector's one segment
    per 100 RCU of budget, so the budget spreads over many executors. On the
    local engine segments beyond the worker count add no throughput - only
    requests (and, on moto, server work: each segment's Scan walks the whole
    table) - so there it is the worker count. A segment of fewer than
    ``MIN_ITEMS_PER_SEGMENT`` items is not worth its requests: apart from the
    size rule the count is capped by the item count.
    """
    size = int(desc.get("TableSizeBytes") or 0)
    items = int(desc.get("ItemCount") or 0)
    by_size = math.ceil(size / (1 << 30))
    by_rcu = math.ceil(read_budget / RCU_PER_SEGMENT) if (read_budget and distributed) else 0
    useful = max(1, math.ceil(items / MIN_ITEMS_PER_SEGMENT))
    return max(1, min(MAX_SEGMENTS, max(by_size, min(max(by_rcu, workers), useful))))


def plan_export(
    *,
    aws: AwsContext,
    region: str,
    table: str,
    repo: RepoURI,
    repo_region: str,
    snapshot_prefix: str,
    segments: int,
    read_budget: float | None,
    concurrency: int,
    part_max_bytes: int = PART_MAX_BYTES,
    policy: RetryPolicy | None = None,
    page_size: int | None = None,
) -> list[TaskSpec]:
    """One task per scan segment, each with deterministic part keys."""
    policy = policy or policy_from_env()
    return [
        {
            "kind": "dynamodb.export",
            "task_id": f"seg-{seg:05d}",
            "index": seg,
            "segment": seg,
            "total_segments": segments,
            "table": table,
            "region": region,
            "aws": aws.to_dict(),
            "repo": {"bucket": repo.bucket, "prefix": repo.prefix, "region": repo_region},
            "snapshot_prefix": snapshot_prefix,
            "part_max_bytes": part_max_bytes,
            # Used only by engines without a shared limiter (Spark, EMR): each
            # task gets an equal share of the run's budget.
            "read_rate": (read_budget / max(1, min(concurrency, segments))) if read_budget else None,
            "retry": policy.to_dict(),
            "page_size": page_size,
        }
        for seg in range(segments)
    ]


def scan_pages(
    aws: AwsContext,
    region: str,
    table: str,
    segment: int,
    total_segments: int,
    limiter: TokenBucket | None,
    ctx: TaskContext | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
    **extra: Any,
) -> Iterator[list[dict[str, Any]]]:
    """Yield the items of one scan segment, page by page, within the read budget."""
    ddb = aws.client("dynamodb", region)
    kwargs: dict[str, Any] = {
        "TableName": table,
        "ReturnConsumedCapacity": "TOTAL",
        **extra,
    }
    if total_segments > 1:
        kwargs["Segment"] = segment
        kwargs["TotalSegments"] = total_segments
    while True:
        if ctx is not None and ctx.stopped:
            raise Interrupted("stopped")
        if limiter is not None:
            limiter.wait_for_credit()
        resp = policy.call(lambda: ddb.scan(**kwargs), f"scanning {table} segment {segment}")
        items = resp.get("Items", [])
        if limiter is not None:
            used = (resp.get("ConsumedCapacity") or {}).get("CapacityUnits")
            if used is None:  # some endpoints do not report it: estimate like DynamoDB bills
                used = max(0.5, resp.get("ScannedCount", len(items)) * 0.125)
            limiter.consume(float(used))
        yield items
        last = resp.get("LastEvaluatedKey")
        if not last:
            return
        kwargs["ExclusiveStartKey"] = last


class PartWriter:
    """Writes one gzip DYNAMODB_JSON part (in memory, or a temporary file past ``PART_SPOOL_BYTES``:
    ``repository.PartSink``), then uploads it."""

    def __init__(self, store: S3Store, key: str) -> None:
        self.store = store
        self.key = key
        self.hw = PartSink()
        # mtime=0: the same items give byte-identical parts on every run.
        self.gz = gzip.GzipFile(fileobj=self.hw, mode="wb", compresslevel=6, mtime=0)  # type: ignore[arg-type]
        self.rows = 0
        self.raw_bytes = 0
        self.digest = Digest()

    def add(self, item: dict[str, Any]) -> int:
        line = encode_line(item)
        self.gz.write(line)
        self.rows += 1
        self.raw_bytes += len(line)
        self.digest.add_hash(item_hash(item))
        return len(line)

    def finish(self) -> PartResult:
        self.gz.close()
        sha = self.hw.h.hexdigest()
        size = self.hw.n
        try:
            self.store.put(self.key, self.hw.body(), metadata={"sha256": sha, "rows": str(self.rows)})
        finally:
            self.hw.discard()
        return PartResult(key=self.key, rows=self.rows, bytes=size, sha256=sha, digest=self.digest.hexdigest())


def run_export_task(spec: TaskSpec, ctx: TaskContext) -> dict[str, Any]:
    """Scan one segment into parts. Idempotent: same spec, same part keys.

    Parts left by an earlier, interrupted attempt of the same task beyond the
    ones this attempt writes are deleted, so ``data/`` holds exactly the
    parts the manifest will list.
    """
    aws = AwsContext.from_dict(spec.get("aws"))
    store = task_store(spec)
    prefix = spec["snapshot_prefix"]
    index = int(spec["index"])
    limiter = ctx.limiter
    if limiter is None and spec.get("read_rate"):
        limiter = TokenBucket(float(spec["read_rate"]))
    parts: list[PartResult] = []
    writer: PartWriter | None = None
    chunk = 0
    for items in scan_pages(
        aws, spec["region"], spec["table"], int(spec["segment"]), int(spec["total_segments"]), limiter, ctx,
        store.policy,
        **({"Limit": int(spec["page_size"])} if spec.get("page_size") else {}),
    ):
        nbytes = 0
        for item in items:
            if writer is None:
                writer = PartWriter(store, prefix + part_key(index, chunk, "json.gz"))
            nbytes += writer.add(item)
            if writer.raw_bytes >= int(spec["part_max_bytes"]):
                parts.append(_relative(writer.finish(), prefix))
                writer = None
                chunk += 1
        ctx.advance(len(items), nbytes)
    if writer is not None:
        parts.append(_relative(writer.finish(), prefix))
    written = {prefix + p.key for p in parts}
    stale = [k for k in store.list_keys(prefix + f"data/part-{index:05d}-") if k not in written]
    if stale:
        store.delete(stale)
    total = Digest()
    for p in parts:
        total.merge(Digest.from_hex(p.digest, p.rows))
    return {
        "task_id": spec["task_id"],
        "parts": [p.to_dict() for p in parts],
        "rows": total.count,
        "bytes": sum(p.bytes for p in parts),
        "digest": total.hexdigest(),
        "digest_algorithm": DIGEST_ALGORITHM,
    }


def _relative(p: PartResult, prefix: str) -> PartResult:
    return PartResult(key=p.key[len(prefix) :], rows=p.rows, bytes=p.bytes, sha256=p.sha256, digest=p.digest)


def table_digest(
    aws: AwsContext, region: str, table: str, segments: int, workers: int, progress: Any = None
) -> Digest:
    """The content digest of a live table, from a parallel scan."""
    from backupctl.engines.local import LocalEngine

    def one(spec: TaskSpec, ctx: TaskContext) -> dict[str, Any]:
        d = Digest()
        for items in scan_pages(aws, region, table, spec["segment"], segments, None, ctx, ConsistentRead=True):
            for it in items:
                d.add(it)
            ctx.advance(len(items), 0)
        return {"value": d.value, "count": d.count}

    tasks = [{"segment": s} for s in range(segments)]
    results = LocalEngine(workers).run(tasks, one, TaskContext(progress=progress))
    total = Digest()
    for r in results:
        total.merge(Digest(r["value"], r["count"]))
    return total


# -- native export (ExportTableToPointInTime) ------------------------------------------
#
# A second read method: DynamoDB writes a point-in-time DYNAMODB_JSON export
# straight into the repository bucket (it may be in another region), using no
# read capacity. Each exported data file is then adopted as a part: read once
# to count items and compute the content digest, and copied server-side to its
# deterministic part key. The export's own files live under ``_export/`` and
# are removed after the commit, so ``data/`` still holds only the parts.

EXPORT_DIR = "_export/"


def pitr_enabled(aws: AwsContext, region: str, table: str) -> bool:
    ddb = aws.client("dynamodb", region)
    try:
        desc = policy_from_env().call(
            lambda: ddb.describe_continuous_backups(TableName=table), f"describing backups of {table}"
        )["ContinuousBackupsDescription"]
    except botocore.exceptions.ClientError:
        return False
    status = (desc.get("PointInTimeRecoveryDescription") or {}).get("PointInTimeRecoveryStatus")
    return status == "ENABLED"


def run_native_export(
    aws: AwsContext,
    region: str,
    table_arn: str,
    store: S3Store,
    snapshot_prefix: str,
    policy: RetryPolicy,
    say: Any = None,
) -> list[str]:
    """Run (or, on resume, reuse) an export into ``<snapshot>/_export/``; return its data keys.

    Raises DataPathError when the export fails or misses the policy deadline.
    """
    marker = snapshot_prefix + "_export.json"
    ddb = aws.client("dynamodb", region)
    arn: str | None = None
    try:
        arn = str(store.get_json(marker)["export_arn"])
    except NotFound:
        arn = None
    if arn is None:
        resp = policy.call(
            lambda: ddb.export_table_to_point_in_time(
                TableArn=table_arn,
                S3Bucket=store.uri.bucket,
                S3Prefix=store.full_key(snapshot_prefix + EXPORT_DIR.rstrip("/")),
                ExportFormat="DYNAMODB_JSON",
                **({"S3SseAlgorithm": "KMS", "S3SseKmsKeyId": store.write.kms_key_id} if store.write.kms_key_id else {}),
            ),
            f"starting the export of {table_arn}",
        )
        arn = str(resp["ExportDescription"]["ExportArn"])
        store.put_json(marker, {"export_arn": arn})
        if say:
            say(f"export started: {arn}")

    def done() -> dict[str, Any] | None:
        d = dict(ddb.describe_export(ExportArn=arn)["ExportDescription"])
        return None if d.get("ExportStatus") == "IN_PROGRESS" else d

    desc = policy.poll(done, f"waiting for export {arn}", interval_s=0.2, max_interval_s=15)
    if desc.get("ExportStatus") != "COMPLETED":
        raise DataPathError(
            f"export {arn} ended {desc.get('ExportStatus')}: {desc.get('FailureCode')} {desc.get('FailureMessage')}"
        )
    manifest_key = desc.get("ExportManifest")
    keys: list[str] = []
    if manifest_key and manifest_key.startswith(store.uri.prefix):
        # AWS: manifest-summary.json names manifest-files.json (JSON lines with dataFileS3Key).
        try:
            summary = store.get_json(manifest_key[len(store.uri.prefix) :])
            files_key = str(summary["manifestFilesS3Key"])[len(store.uri.prefix) :]
            for line in store.get(files_key).splitlines():
                if line.strip():
                    keys.append(str(orjson.loads(line)["dataFileS3Key"])[len(store.uri.prefix) :])
        except (NotFound, KeyError, orjson.JSONDecodeError):
            keys = []
    if not keys:
        keys = sorted(k for k in store.list_keys(snapshot_prefix + EXPORT_DIR) if "/data/" in k)
    if say:
        say(f"export completed: {desc.get('ItemCount', '?')} items in {len(keys)} files")
    return keys


def plan_adopt(
    *, aws: AwsContext, repo: RepoURI, repo_region: str, snapshot_prefix: str, export_keys: list[str],
    policy: RetryPolicy | None = None,
) -> list[TaskSpec]:
    policy = policy or policy_from_env()
    return [
        {
            "kind": "dynamodb.adopt",
            "task_id": f"file-{i:05d}",
            "index": i,
            "export_key": key,
            "aws": aws.to_dict(),
            "repo": {"bucket": repo.bucket, "prefix": repo.prefix, "region": repo_region},
            "snapshot_prefix": snapshot_prefix,
            "retry": policy.to_dict(),
        }
        for i, key in enumerate(export_keys)
    ]


def run_adopt_task(spec: TaskSpec, ctx: TaskContext) -> dict[str, Any]:
    """Read one exported data file (count, digest, sha256) and copy it to its part key.

    Idempotent: the copy overwrites the same part key.
    """
    store = task_store(spec)
    prefix = spec["snapshot_prefix"]
    key = prefix + part_key(int(spec["index"]), 0, "json.gz")
    digest = Digest()
    nbytes = 0
    with tempfile.TemporaryFile(prefix="backupctl-adopt-") as tmp:
        sha = store.download_to(spec["export_key"], tmp)
        size = tmp.seek(0, 2)
        tmp.seek(0)
        try:
            with gzip.GzipFile(fileobj=tmp, mode="rb") as gz:
                for line in gz:
                    if ctx.stopped:
                        raise Interrupted("stopped")
                    if line.strip():
                        digest.add_hash(item_hash(decode_line(line)))
                        nbytes += len(line)
                        if digest.count % 5000 == 0:
                            ctx.advance(5000, nbytes)
                            nbytes = 0
        except (OSError, EOFError) as e:
            raise FormatError(f"exported file {spec['export_key']} is not valid gzip: {e}") from e
    ctx.advance(digest.count % 5000, nbytes)
    store.copy(spec["export_key"], key, {"sha256": sha, "rows": str(digest.count)})
    part = PartResult(key=key[len(prefix) :], rows=digest.count, bytes=size, sha256=sha, digest=digest.hexdigest())
    return {
        "task_id": spec["task_id"],
        "parts": [part.to_dict()],
        "rows": digest.count,
        "bytes": size,
        "digest": digest.hexdigest(),
        "digest_algorithm": DIGEST_ALGORITHM,
    }
