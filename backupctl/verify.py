"""Verifying snapshots: re-read every part, and compare with a live table.

``verify_snapshot`` reads the data, not only metadata (like ``restic check
--read-data``): every part's sha256, its item count and its content digest are
recomputed and compared with the manifest, and ``data/`` is checked to hold
exactly the listed parts. ``verify_against_table`` recomputes the digest of a
live DynamoDB table and says whether it equals the snapshot's.

MySQL snapshots (Parquet) are checked the same way, part by part: the data
parts, the key-set parts (``keys/``: their stored row hashes must add up to
the manifest's ``table_digest``) and the tombstone parts (``tombstones/``);
each folder must hold exactly the listed parts.
"""

from __future__ import annotations

import gzip
import tempfile
from typing import Any

from backupctl.aws import AwsContext, validate_region
from backupctl.engines import LocalEngine, TaskContext
from backupctl.errors import FormatError, NotFound
from backupctl.formats.dynamodb_json import Digest, combine_hex, decode_line, item_hash
from backupctl.formats.parquet import iter_part_rows, row_hash
from backupctl.model import TaskSpec
from backupctl.repository import Repository
from backupctl.sources.dynamodb import choose_segments, describe_table, table_digest
from backupctl.sources.mysql import check_mysql_part_key, key_part_columns, pk_columns


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
    schema = repo.read_schema(prefix, manifest)  # present, JSON, the one the manifest recorded (else FormatError)
    if manifest.source.get("kind") == "mysql":
        return _verify_mysql(repo, prefix, manifest, schema, workers, progress)
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


# -- MySQL (Parquet) -----------------------------------------------------------------


def _check_parquet_part(repo: Repository, prefix: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Re-read one Parquet part: sha256, row count and digest (data/tombstones: row hashes; keys: stored hashes)."""
    part, columns, role = spec["part"], spec["columns"], spec["role"]
    key = part["key"]
    names = [c["name"] for c in columns]
    kinds = [c["kind"] for c in columns]
    problems: list[str] = []
    d = Digest()
    with tempfile.TemporaryFile(prefix="backupctl-verify-") as tmp:
        try:
            sha = repo.store.download_to(prefix + key, tmp)
        except NotFound:
            return {"key": key, "role": role, "ok": False, "rows": 0, "problems": [f"part {key} is missing"]}
        if sha != part["sha256"]:
            problems.append(f"part {key}: sha256 {sha[:16]}... != manifest {part['sha256'][:16]}...")
        try:
            for rows in iter_part_rows(tmp, columns, what=f"part {key}"):
                for row in rows:
                    d.add_hash(int.from_bytes(row[-1], "big") if role == "keys" else row_hash(names, kinds, row))
        except FormatError as e:
            problems.append(f"part {key}: unreadable: {e}")
    if not problems:
        if d.count != int(part["rows"]):
            problems.append(f"part {key}: {d.count} rows, manifest says {part['rows']}")
        if d.hexdigest() != part["digest"]:
            problems.append(f"part {key}: content digest differs from the manifest")
    return {"key": key, "role": role, "ok": not problems, "rows": d.count, "digest": d.hexdigest(),
            "problems": problems}


def _verify_mysql(repo: Repository, prefix: str, manifest: Any, schema: dict[str, Any], workers: int,
                  progress: Any) -> dict[str, Any]:
    doc = repo.store.get_json(prefix + "manifest.json")
    stored = [c for c in schema["columns"] if not c["generated"]]
    key_set = doc.get("key_set") if isinstance(doc.get("key_set"), dict) else None
    tombs = doc.get("tombstones") if isinstance(doc.get("tombstones"), dict) else None
    specs: list[TaskSpec] = [{"part": p.to_dict(), "columns": stored, "role": "data"} for p in manifest.parts]
    problems: list[str] = []
    try:
        kcols = pk_columns(stored, list(schema.get("primary_key") or []))
        if key_set is not None:
            specs += [{"part": check_mysql_part_key(p), "columns": key_part_columns(kcols), "role": "keys"}
                      for p in key_set.get("parts") or []]
        if tombs is not None:
            specs += [{"part": check_mysql_part_key(p), "columns": kcols, "role": "tombstones"}
                      for p in tombs.get("parts") or []]
    except (FormatError, KeyError) as e:
        problems.append(f"manifest: {e}")

    def one(spec: TaskSpec, ctx: TaskContext) -> dict[str, Any]:
        r = _check_parquet_part(repo, prefix, spec)
        ctx.advance(int(r["rows"]), int(spec["part"]["bytes"]))
        return r

    results = LocalEngine(workers).run(specs, one, TaskContext(progress=progress))
    problems += [p for r in results for p in r["problems"]]
    for folder, role in (("data/", "data"), ("keys/", "keys"), ("tombstones/", "tombstones")):
        listed = {prefix + s["part"]["key"] for s in specs if s["role"] == role}
        for k in repo.store.list_keys(prefix + folder):
            if k not in listed:
                problems.append(f"unlisted object under {folder}: {k[len(prefix):]}")

    def total(role: str) -> tuple[int, str]:
        rs = [r for r in results if r["role"] == role]
        return sum(int(r["rows"]) for r in rs), combine_hex(r.get("digest", "0") for r in rs) if rs else "0" * 64

    rows, digest = total("data")
    if not problems and digest != manifest.content_digest:
        problems.append("snapshot content digest differs from the manifest")
    report: dict[str, Any] = {
        "snapshot_id": manifest.id,
        "ok": False,
        "parts_checked": len(results),
        "rows": rows,
        "manifest_rows": manifest.rows,
        "digest": digest,
        "manifest_digest": manifest.content_digest,
    }
    td = doc.get("table_digest")
    if key_set is not None:
        krows, kdigest = total("keys")
        report["key_set"] = {"parts": len(key_set.get("parts") or []), "rows": krows}
        if not problems and krows != int(key_set.get("rows", -1)):
            problems.append(f"key set holds {krows} keys, the manifest says {key_set.get('rows')}")
        if not problems and isinstance(td, dict) and (krows != int(td["rows"]) or kdigest != td["value"]):
            problems.append(f"key set ({krows} rows) does not add up to the manifest's table_digest "
                            f"({td['rows']} rows, {str(td['value'])[:16]}...)")
    if tombs is not None:
        trows, _ = total("tombstones")
        report["tombstones"] = {"parts": len(tombs.get("parts") or []), "rows": trows}
        if not problems and trows != int(tombs.get("rows", -1)):
            problems.append(f"tombstones hold {trows} keys, the manifest says {tombs.get('rows')}")
    if manifest.mode == "incremental" and (key_set is None or not isinstance(td, dict)):
        problems.append("incremental snapshot without key_set or table_digest")
    if isinstance(td, dict):
        report["table_digest"] = td
    report["ok"] = not problems
    report["problems"] = problems
    return report
