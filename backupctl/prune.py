"""Removing snapshots a retention policy does not keep.

The decision is ``backupctl.retention.apply_policy`` (pure); this module lists
the repository and deletes. A snapshot is removed manifest first, so it stops
being visible before any of its parts go; a crash mid-way leaves at worst
unlisted objects, never a listed snapshot with missing parts.

On a bucket with S3 Object Lock, each snapshot's retention is read first (the
manifest's ``object_lock`` and the manifest object's own retention) and a
snapshot still locked is kept, with its parent chain: in a versioned bucket a
delete without a version id "succeeds" by adding a delete marker, which would
hide a locked snapshot without freeing anything, so prune never tries.
"""

from __future__ import annotations

from typing import Any

from backupctl.aws import AwsContext
from backupctl.model import parse_time, utcnow
from backupctl.repository import Repository
from backupctl.retention import Policy, SnapshotInfo, apply_policy


def prune(
    aws: AwsContext, region: str, repo_uri: str | None, policy: Policy, dry_run: bool = False,
    table: str | None = None,
) -> dict[str, Any]:
    """Apply ``policy`` per source; return kept and removed snapshots with reasons."""
    policy.check()
    repo = Repository.open(aws, region, repo_uri)
    found = [(m, doc) for m, doc in repo.list_snapshot_docs() if table is None or m.source.get("table") == table]
    locking = bool(found) and repo.object_lock_enabled()
    infos = [
        SnapshotInfo(m.id, m.source_key, parse_time(m.created_at), m.parent_id,
                     repo.lock_until(repo.snapshot_prefix(m.source_key, m.id), doc) if locking else None)
        for m, doc in found
    ]
    decisions = apply_policy(infos, policy, now=utcnow())
    kept = [{"snapshot_id": d.snapshot.id, "source_key": d.snapshot.source_key, "reasons": d.reasons}
            for d in decisions if d.keep]
    removed = [{"snapshot_id": d.snapshot.id, "source_key": d.snapshot.source_key, "reasons": ["not kept by policy"]}
               for d in decisions if not d.keep]
    if not dry_run:
        for d in decisions:
            if d.keep:
                continue
            prefix = repo.snapshot_prefix(d.snapshot.source_key, d.snapshot.id)
            repo.store.delete([prefix + "manifest.json"])
            repo.store.delete(list(repo.store.list_keys(prefix)))
    return {"repository": str(repo.uri), "dry_run": dry_run, "kept": kept, "removed": removed}
