"""Retention as a pure function: table-driven."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from backupctl.errors import InvalidInput
from backupctl.retention import Policy, SnapshotInfo, apply_policy


def snap(sid: str, when: str, parent: str | None = None, source: str = "dynamodb.us-east-1.t") -> SnapshotInfo:
    return SnapshotInfo(sid, source, datetime.fromisoformat(when).replace(tzinfo=UTC), parent)


DAYS = [
    snap("a", "2026-11-01T10:00:00"),
    snap("b", "2026-11-01T22:00:00"),
    snap("c", "2026-11-02T10:00:00"),
    snap("d", "2026-11-09T10:00:00"),
    snap("e", "2026-11-10T10:00:00"),
    snap("f", "2026-12-01T10:00:00"),
]


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        (Policy(keep_last=1), {"f"}),
        (Policy(keep_last=3), {"f", "e", "d"}),
        (Policy(keep_last=100), {"a", "b", "c", "d", "e", "f"}),
        (Policy(keep_daily=2), {"f", "e"}),
        (Policy(keep_daily=6), {"f", "e", "d", "c", "b"}),  # 'a' shares a day with the newer 'b'
        (Policy(keep_weekly=2), {"f", "e"}),  # ISO weeks 49 and 46 ('e' is the newest of W46)
        (Policy(keep_weekly=4), {"f", "e", "c", "b"}),  # + W45 ('c', Mon 2 Nov) and W44 ('b', Sun 1 Nov)
        (Policy(keep_monthly=2), {"f", "e"}),
        (Policy(keep_last=1, keep_monthly=2), {"f", "e"}),
        (Policy(keep_daily=1, keep_monthly=1), {"f"}),
    ],
)
def test_policies(policy: Policy, kept: set[str]) -> None:
    decisions = apply_policy(DAYS, policy)
    assert {d.snapshot.id for d in decisions if d.keep} == kept
    assert len(decisions) == len(DAYS)


def test_weeks_are_iso_weeks() -> None:
    # 2026-11-01 is a Sunday (ISO week 44); 2026-11-02 a Monday (week 45).
    d = {x.snapshot.id: x for x in apply_policy(DAYS, Policy(keep_weekly=10))}
    assert d["b"].keep and "weekly 2026-W44" in d["b"].reasons
    assert d["c"].keep and "weekly 2026-W45" in d["c"].reasons
    assert not d["a"].keep


def test_reasons_are_reported() -> None:
    d = {x.snapshot.id: x for x in apply_policy(DAYS, Policy(keep_last=1, keep_daily=1, keep_monthly=1))}
    assert d["f"].reasons == ["last", "daily 2026-12-01", "monthly 2026-12"]
    assert d["a"].reasons == [] and not d["a"].keep


def test_never_prunes_the_parent_chain_of_a_kept_incremental() -> None:
    chain = [
        snap("full", "2026-11-01T00:00:00"),
        snap("inc1", "2026-11-02T00:00:00", parent="full"),
        snap("inc2", "2026-11-03T00:00:00", parent="inc1"),
        snap("old", "2026-10-01T00:00:00"),
    ]
    d = {x.snapshot.id: x for x in apply_policy(chain, Policy(keep_last=1))}
    assert d["inc2"].keep and d["inc1"].keep and d["full"].keep
    assert d["inc1"].reasons == ["parent of inc2"]
    assert d["full"].reasons == ["parent of inc1"]
    assert not d["old"].keep


def test_sources_are_independent() -> None:
    s = [snap("x1", "2026-11-01T00:00:00", source="a"), snap("x2", "2026-11-02T00:00:00", source="a"),
         snap("y1", "2026-10-01T00:00:00", source="b")]
    kept = {d.snapshot.id for d in apply_policy(s, Policy(keep_last=1)) if d.keep}
    assert kept == {"x2", "y1"}


@pytest.mark.parametrize("policy", [Policy(), Policy(keep_last=-1)])
def test_refuses_empty_or_negative_policies(policy: Policy) -> None:
    with pytest.raises(InvalidInput):
        apply_policy(DAYS, policy)


def test_empty_input() -> None:
    assert apply_policy([], Policy(keep_last=3)) == []



def _at(when: str) -> datetime:
    return datetime.fromisoformat(when).replace(tzinfo=UTC)


LOCK = "object lock until 2026-12-05T00:00:00.000000Z"


@pytest.mark.parametrize(
    ("locks", "kept", "reasons"),
    [
        # locked_until per snapshot -> the kept ids, and the reasons of some
        ({}, {"full", "inc1", "inc2", "o_new"}, {"old": [], "o_inc": []}),
        ({"old": "2026-12-05T00:00:00"}, {"old", "full", "inc1", "inc2", "o_new"}, {"old": [LOCK]}),
        ({"old": "2026-12-01T00:00:00"}, {"full", "inc1", "inc2", "o_new"}, {"old": []}),  # the lock has ended
        # A locked incremental keeps its parent: it must stay restorable.
        ({"o_inc": "2026-12-05T00:00:00"}, {"full", "inc1", "inc2", "o_new", "o_inc", "o_full"},
         {"o_inc": [LOCK], "o_full": ["parent of o_inc"]}),
    ],
)
def test_object_locked_snapshots_are_kept_with_their_chain(locks: dict[str, str], kept: set[str],
                                                           reasons: dict[str, list[str]]) -> None:
    snaps = [
        snap("old", "2026-10-01T00:00:00"),
        snap("full", "2026-11-01T00:00:00"),
        snap("inc1", "2026-11-02T00:00:00", parent="full"),
        snap("inc2", "2026-11-03T00:00:00", parent="inc1"),
        snap("o_full", "2026-10-01T00:00:00", source="other"),
        snap("o_inc", "2026-10-02T00:00:00", parent="o_full", source="other"),
        snap("o_new", "2026-11-01T00:00:00", source="other"),
    ]
    snaps = [dataclasses.replace(x, locked_until=_at(locks[x.id])) if x.id in locks else x for x in snaps]
    d = {x.snapshot.id: x for x in apply_policy(snaps, Policy(keep_last=1), now=_at("2026-12-02T00:00:00"))}
    assert {i for i, x in d.items() if x.keep} == kept
    for sid, want in reasons.items():
        assert d[sid].reasons == want
