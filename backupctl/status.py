"""Freshness per source: the newest snapshot and its age, the last drill's result, RTO and RPO.

A *source* is a ``<source-key>`` of the repository (``snapshots/<source-key>/``
or ``drills/<source-key>/``): a DynamoDB table in a region, a MySQL
database.table. The newest snapshot is found without reading every manifest:
snapshot ids sort by creation time to the second, so the ids are walked newest
first and, among the committed ones of the newest second, the manifest's
``created_at`` decides (``model.newest_by_name``). The last drill is the newest
``drills/<source-key>/<drill-id>.json`` the same way (drill ids sort by time too).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from backupctl.errors import FormatError, NotFound
from backupctl.model import Manifest, newest_by_name, parse_time, utcnow
from backupctl.pipelines.drill_report import DRILLS_PREFIX, human_seconds, latest_drill
from backupctl.repository import Repository


def describe_source(source: dict[str, Any], source_key: str) -> str:
    """``DynamoDB orders (us-east-1)``, ``MySQL db-a:3306/shop.orders (us-east-1)``, from a manifest's source."""
    kind, region, table = source.get("kind"), source.get("region"), source.get("table")
    if kind == "dynamodb":
        return f"DynamoDB {table} ({region})"
    if kind == "mysql":
        where = (f"rds:{source['rds_instance']}" if source.get("rds_instance")
                 else f"{source.get('host')}:{source.get('port')}")
        return f"MySQL {where}/{source.get('database')}.{table} ({region})"
    return source_key


def newest_snapshot(repo: Repository, source_key: str) -> Manifest | None:
    """The newest committed snapshot of a source (by created_at; ids sort by it to the second), or None."""

    def read(sid: str) -> Manifest | None:
        try:
            return Manifest.from_dict(repo.store.get_json(repo.snapshot_prefix(source_key, sid) + "manifest.json"))
        except NotFound:
            return None  # in progress or crashed: not a snapshot
        except FormatError:
            return None  # not readable by this backupctl: `snapshots list --skip-unreadable` says why

    return newest_by_name(repo.store.list_dirs(f"snapshots/{source_key}/"), lambda sid: sid[:16], read,
                          lambda m: (m.created_at, m.id))


def source_status(repo: Repository, max_age_s: float | None = None, now: datetime | None = None) -> list[dict[str, Any]]:
    """One entry per source, sorted by source key; ``stale`` is set when ``max_age_s`` is given."""
    now = now or utcnow()
    keys = sorted(set(repo.source_keys()) | set(repo.store.list_dirs(DRILLS_PREFIX)))
    out: list[dict[str, Any]] = []
    for sk in keys:
        m = newest_snapshot(repo, sk)
        drill = latest_drill(repo, sk)
        snap: dict[str, Any] | None = None
        age: float | None = None
        if m is not None:
            try:
                age = round((now - parse_time(m.created_at)).total_seconds(), 3)
            except ValueError:
                age = None  # an unreadable created_at: its age is unknown, so it counts as stale
            snap = {"snapshot_id": m.id, "created_at": m.created_at, "age_s": age, "mode": m.mode, "rows": m.rows}
        entry: dict[str, Any] = {
            "source_key": sk,
            "source": describe_source(m.source, sk) if m is not None else ((drill or {}).get("source") or sk),
            "kind": m.source.get("kind") if m is not None else sk.split(".", 1)[0],
            "snapshot": snap,
            "last_drill": None if drill is None else {
                k: drill[k] for k in ("drill_id", "started_at", "passed", "status", "reason", "rto_s", "rpo_s",
                                      "snapshot_id", "report")},
            "stale": None,
        }
        if max_age_s is not None:
            entry["stale"] = age is None or age > max_age_s
        out.append(entry)
    return out


def stale_line(entry: dict[str, Any], max_age_s: float) -> str:
    """One line naming a stale source and why."""
    snap = entry.get("snapshot")
    if snap is None:
        return f"{entry['source_key']} ({entry['source']}): no committed snapshot"
    if snap["age_s"] is None:
        return (f"{entry['source_key']} ({entry['source']}): newest snapshot {snap['snapshot_id']} has an "
                f"unreadable created_at {snap['created_at']!r}")
    return (f"{entry['source_key']} ({entry['source']}): newest snapshot {snap['snapshot_id']} is "
            f"{human_seconds(snap['age_s'])} old (max {human_seconds(max_age_s)})")
