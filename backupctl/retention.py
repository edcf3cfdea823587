"""Retention: which snapshots a policy keeps, as a pure function.

``apply_policy(snapshots, policy) -> list[Decision]`` decides, per source,
which snapshots to keep and why, like restic's ``forget``:

* ``keep_last`` - the N newest snapshots;
* ``keep_daily`` / ``keep_weekly`` / ``keep_monthly`` - the newest snapshot of
  each of the N newest days / ISO weeks / months that have snapshots;
* a snapshot whose objects are under S3 Object Lock (``locked_until`` later
  than ``now``) is kept with the reason ``object lock until <time>``: S3 would
  refuse to delete its data, so prune never starts removing it;
* a snapshot a restore is reading (a live reader lease, ``in_use_until``) is
  kept with the reason ``in use by a restore until <time>``;
* a snapshot that is the parent (directly or further up the chain) of a kept
  incremental is always kept, so every kept snapshot stays restorable.

It reads nothing and writes nothing; ``prune`` in backupctl/prune.py applies it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from backupctl.errors import InvalidInput
from backupctl.model import isoformat


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    source_key: str
    created: datetime
    parent_id: str | None = None
    locked_until: datetime | None = None  # end of the S3 Object Lock retention of its objects, if any
    in_use_until: datetime | None = None  # the latest live reader lease of a restore reading it, if any


@dataclass(frozen=True)
class Policy:
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0

    def check(self) -> None:
        values = (self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly)
        if any(v < 0 for v in values):
            raise InvalidInput("--keep-* values must be zero or positive")
        if not any(values):
            raise InvalidInput("no --keep-* option given: refusing to remove every snapshot")


@dataclass
class Decision:
    snapshot: SnapshotInfo
    keep: bool
    reasons: list[str] = field(default_factory=list)


_BUCKETS: list[tuple[str, Callable[[datetime], str]]] = [
    ("daily", lambda t: t.strftime("%Y-%m-%d")),
    ("weekly", lambda t: f"{t.isocalendar()[0]:04d}-W{t.isocalendar()[1]:02d}"),
    ("monthly", lambda t: t.strftime("%Y-%m")),
]


def apply_policy(snapshots: Sequence[SnapshotInfo], policy: Policy, now: datetime | None = None) -> list[Decision]:
    """Decisions for every snapshot, newest first within each source.

    A snapshot locked until after ``now`` is kept (``now=None``: every ``locked_until`` counts).
    """
    policy.check()
    by_source: dict[str, list[SnapshotInfo]] = defaultdict(list)
    for s in snapshots:
        by_source[s.source_key].append(s)
    out: list[Decision] = []
    for key in sorted(by_source):
        group = sorted(by_source[key], key=lambda s: (s.created, s.id), reverse=True)
        decisions = {s.id: Decision(s, False) for s in group}
        for s in group[: policy.keep_last]:
            decisions[s.id].reasons.append("last")
        for name, bucket in _BUCKETS:
            n = getattr(policy, f"keep_{name}")
            seen: list[str] = []
            for s in group:
                b = bucket(s.created)
                if b in seen:
                    continue
                if len(seen) >= n:
                    break
                seen.append(b)
                decisions[s.id].reasons.append(f"{name} {b}")
        for s in group:
            if s.locked_until is not None and (now is None or s.locked_until > now):
                decisions[s.id].reasons.append(f"object lock until {isoformat(s.locked_until)}")
            if s.in_use_until is not None:
                decisions[s.id].reasons.append(f"in use by a restore until {isoformat(s.in_use_until)}")
        for d in decisions.values():
            d.keep = bool(d.reasons)
        # Keep the whole chain under every kept incremental.
        by_id = {s.id: s for s in group}
        for s in group:
            if not decisions[s.id].keep:
                continue
            parent = s.parent_id
            child = s.id
            while parent and parent in by_id:
                pd = decisions[parent]
                reason = f"parent of {child}"
                if reason not in pd.reasons:
                    pd.reasons.append(reason)
                pd.keep = True
                child, parent = parent, by_id[parent].parent_id
        out.extend(decisions[s.id] for s in group)
    return out
