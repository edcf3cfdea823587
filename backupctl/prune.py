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

A snapshot a restore is reading (a live reader lease under
``runs/readers/<id>/``, backupctl/leases.py) is kept too, with its parent
chain; expired reader leases are deleted.
"""

from __future__ import annotations

from typing import Any

from backupctl.aws import AwsContext
from backupctl.leases import live_readers
from backupctl.model import isoformat, parse_time, utcnow
from backupctl.repository import Repository, WriteOptions
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
    readers = live_readers(repo.store, remove_dead=not dry_run)  # restores at work; dead leases are removed
    infos = [
        SnapshotInfo(m.id, m.source_key, parse_time(m.created_at), m.parent_id,
                     repo.lock_until(repo.snapshot_prefix(m.source_key, m.id), doc) if locking else None,
                     readers.get(m.id))
        for m, doc in found
    ]
    docs = {m.id: doc for m, doc in found}
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
            # A restore that started since the leases were read: it wrote its lease before checking the
            # manifest, so either it saw the manifest gone or its lease is seen here (then the manifest returns).
            late = live_readers(repo.store, d.snapshot.id, remove_dead=False).get(d.snapshot.id)
            if late is not None:
                kms = (docs[d.snapshot.id].get("encryption") or {}).get("kms_key_id")
                repo.store.write = WriteOptions(kms_key_id=kms)
                repo.store.put_json(prefix + "manifest.json", docs[d.snapshot.id])
                removed = [r for r in removed if r["snapshot_id"] != d.snapshot.id]
                kept.append({"snapshot_id": d.snapshot.id, "source_key": d.snapshot.source_key,
                             "reasons": [f"in use by a restore until {isoformat(late)}"]})
                continue
            repo.store.delete(list(repo.store.list_keys(prefix)))
    return {"repository": str(repo.uri), "dry_run": dry_run, "kept": kept, "removed": removed}
