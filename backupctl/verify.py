"""Verifying snapshots: re-read every part, and compare with a live table.

``verify_snapshot`` reads the data, not only metadata (like ``restic check
--read-data``): every part's sha256, its item count and its content digest are
recomputed and compared with the manifest, and ``data/`` is checked to hold
exactly the listed parts. ``verify_against_table`` recomputes the digest of a
live DynamoDB table and says whether it equals the snapshot's.
"""

from __future__ import annotations

import gzip
import tempfile
from typing import Any

from backupctl.aws import AwsContext, validate_region
from backupctl.engines import LocalEngine, TaskContext
from backupctl.errors import FormatError, NotFound
from backupctl.formats.dynamodb_json import Digest, combine_hex, decode_line, item_hash
from backupctl.model import TaskSpec
from backupctl.repository import Repository
from backupctl.sources.dynamodb import choose_segments, describe_table, table_digest


def _check_part(repo: Repository, prefix: str, part: dict[str, Any]) -> dict[str, Any]:
    problems: list[str] = []
    key = part["key"]
    d = Digest()
    with tempfile.TemporaryFile(prefix="backupctl-verify-") as tmp:
        try:
            sha = repo.store.download_to(prefix + key, tmp)
        except NotFound:
            return {"key": key, "ok": False, "rows": 0, "problems": [f"part {key} is missing"]}
        if sha != part["sha256"]:
            problems.append(f"part {key}: sha256 {sha[:16]}... != manifest {part['sha256'][:16]}...")
        try:
            with gzip.GzipFile(fileobj=tmp, mode="rb") as gz:
                for line in gz:
                    if line.strip():
                        d.add_hash(item_hash(decode_line(line)))
        except (OSError, EOFError, FormatError) as e:
            problems.append(f"part {key}: unreadable: {e}")
    if not problems:
        if d.count != part["rows"]:
            problems.append(f"part {key}: {d.count} items, manifest says {part['rows']}")
        if d.hexdigest() != part["digest"]:
            problems.append(f"part {key}: content digest differs from the manifest")
    return {"key": key, "ok": not problems, "rows": d.count, "digest": d.hexdigest(), "problems": problems}


def verify_snapshot(
    aws: AwsContext, region: str, snapshot_id: str, repo_uri: str | None = None, workers: int = 8,
    progress: Any = None,
) -> dict[str, Any]:
    """Re-read every part of a snapshot; return a report (``ok`` False on any problem)."""
    validate_region(region, "--region")
    repo = Repository.open(aws, region, repo_uri)
    prefix, manifest = repo.find_snapshot(snapshot_id)
    parts = [p.to_dict() for p in manifest.parts]

    def one(spec: TaskSpec, ctx: TaskContext) -> dict[str, Any]:
        r = _check_part(repo, prefix, spec)
        ctx.advance(int(r["rows"]), int(spec["bytes"]))
        return r

    results = LocalEngine(workers).run(parts, one, TaskContext(progress=progress))
    problems = [p for r in results for p in r["problems"]]
    listed = {prefix + p["key"] for p in parts}
    for k in repo.store.list_keys(prefix + "data/"):
        if k not in listed:
            problems.append(f"unlisted object under data/: {k[len(prefix):]}")
    rows = sum(int(r["rows"]) for r in results)
    digest = combine_hex(r.get("digest", "0") for r in results) if results else "0" * 64
    if not problems and digest != manifest.content_digest:
        problems.append("snapshot content digest differs from the manifest")
    return {
        "snapshot_id": manifest.id,
        "ok": not problems,
        "parts_checked": len(results),
        "rows": rows,
        "manifest_rows": manifest.rows,
        "digest": digest,
        "manifest_digest": manifest.content_digest,
        "problems": problems,
    }


def verify_against_table(
    aws: AwsContext, region: str, snapshot_id: str, table: str, table_region: str,
    repo_uri: str | None = None, workers: int = 8, progress: Any = None,
) -> dict[str, Any]:
    """Compare a snapshot's digest and count with a live DynamoDB table's."""
    validate_region(table_region, "--table-region")
    repo = Repository.open(aws, region, repo_uri)
    _prefix, manifest = repo.find_snapshot(snapshot_id)
    desc = describe_table(aws, table_region, table)
    segments = choose_segments(desc, None, workers)
    live = table_digest(aws, table_region, table, segments, workers, progress)
    equal = live.count == manifest.rows and live.hexdigest() == manifest.content_digest
    return {
        "snapshot_id": manifest.id,
        "table": table,
        "table_region": table_region,
        "equal": equal,
        "table_rows": live.count,
        "snapshot_rows": manifest.rows,
        "table_digest": live.hexdigest(),
        "snapshot_digest": manifest.content_digest,
    }
