"""Schedule math for playbooks: parse a ``schedule:`` block, list run times and back-fills.

Pure functions, no I/O and no clock of their own (``now`` is an argument), so
they are table-tested. Semantics follow AWS Data Pipeline:

* A schedule cuts time into periods ``[t_k, t_k+1)``: the fire times of a cron
  expression (UTC) or ``start + k * rate``.
* ``style: cron`` runs a period at its start ``t_k``; ``style: timeseries``
  runs it at its end ``t_k+1`` (the period's data is complete then).
* A ``start`` in the past back-fills the periods whose run time has passed
  (``start <= run time <= now``), bounded by ``max_backfill``: the most recent
  ones are kept and the number skipped is reported. ``pipeline plan`` lists
  them and runs nothing; ``schedule add`` materialises them in the control
  table for the agent.
* ``due_runs`` is what an agent materialises on each poll: the runs whose
  time came since the last poll; when agents were away, the older ones are
  back-fill under the same ``max_backfill`` bound.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

STYLES = ("cron", "timeseries")
KEYS = ("cron", "rate", "start", "end", "style", "max_backfill")
_RATE_RE = re.compile(r"^\s*(\d+)\s*(minute|minutes|hour|hours|day|days|week|weeks)\s*$")
_UNITS = {"minute": 60, "hour": 3600, "day": 86400, "week": 604800}
MAX_BACKFILL_LIMIT = 10_000


@dataclass(frozen=True)
class Schedule:
    """A validated schedule: exactly one of ``cron`` / ``rate``; times are UTC-aware."""

    cron: str | None = None
    rate: timedelta | None = None
    start: datetime | None = None
    end: datetime | None = None
    style: str = "cron"
    max_backfill: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cron": self.cron,
            "rate_s": self.rate.total_seconds() if self.rate else None,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "style": self.style,
            "max_backfill": self.max_backfill,
        }


def parse_rate(text: str) -> timedelta:
    """``"6 hours"`` -> timedelta; raises ValueError naming the accepted form."""
    m = _RATE_RE.match(str(text))
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"invalid rate '{text}': expected 'N minutes|hours|days|weeks' with N >= 1")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2).rstrip("s")])


def parse_time(value: Any) -> datetime:
    """A YAML timestamp or ISO 8601 text -> aware UTC datetime (naive means UTC)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"invalid time '{value}': expected ISO 8601 like 2026-01-01T03:00:00Z") from None
    else:
        raise ValueError(f"invalid time {value!r}: expected ISO 8601 like 2026-01-01T03:00:00Z")
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def check_schedule(raw: Any) -> tuple[Schedule | None, list[tuple[str, str]]]:
    """Validate a ``schedule:`` mapping. Returns (schedule or None, [(key, problem), ...])."""
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, dict):
        return None, [("", "must be a mapping with cron or rate")]
    for k in raw:
        if k not in KEYS:
            problems.append((str(k), f"unknown key '{k}' (expected one of {', '.join(KEYS)})"))
    cron, rate = raw.get("cron"), None
    if ("cron" in raw) == ("rate" in raw):
        problems.append(("", "give exactly one of 'cron' or 'rate'"))
    if "cron" in raw and (not isinstance(cron, str) or len(cron.split()) != 5 or not croniter.is_valid(cron)):
        problems.append(("cron", f"invalid cron expression {cron!r}: expected 5 fields like '0 3 * * *' (UTC)"))
        cron = None
    if "rate" in raw:
        try:
            rate = parse_rate(raw["rate"])
        except ValueError as e:
            problems.append(("rate", str(e)))
    times: dict[str, datetime | None] = {"start": None, "end": None}
    for k in times:
        if raw.get(k) is not None:
            try:
                times[k] = parse_time(raw[k])
            except ValueError as e:
                problems.append((k, str(e)))
    start, end = times["start"], times["end"]
    if "rate" in raw and start is None and "start" not in raw:
        problems.append(("", "a rate schedule needs 'start' (the first period begins there)"))
    if start and end and end <= start:
        problems.append(("end", "must be after start"))
    style = raw.get("style", "cron")
    if style not in STYLES:
        problems.append(("style", f"invalid style {style!r}: expected cron or timeseries"))
    mb = raw.get("max_backfill", 0)
    if isinstance(mb, bool) or not isinstance(mb, int) or not 0 <= mb <= MAX_BACKFILL_LIMIT:
        problems.append(("max_backfill", f"must be an integer between 0 and {MAX_BACKFILL_LIMIT}"))
    if problems:
        return None, problems
    return Schedule(cron=cron, rate=rate, start=start, end=end, style=str(style), max_backfill=int(mb)), []


def _floor_period(s: Schedule, t: datetime) -> datetime:
    """The start of the period containing ``t`` (never before ``s.start``)."""
    if s.rate is not None:
        assert s.start is not None
        k = max(0, int((t - s.start).total_seconds() // s.rate.total_seconds()))
        return s.start + k * s.rate
    assert s.cron is not None
    c: datetime = croniter(s.cron, t + timedelta(seconds=1)).get_prev(datetime).astimezone(UTC)
    if s.start is not None and c < s.start:
        c = croniter(s.cron, s.start - timedelta(seconds=1)).get_next(datetime).astimezone(UTC)
    return c


def _period_starts(s: Schedule, first: datetime) -> Iterator[datetime]:
    """Period starts from ``first`` (itself a period start), ascending, endless."""
    if s.rate is not None:
        t = first
        while True:
            yield t
            t = t + s.rate
    assert s.cron is not None
    yield first
    it = croniter(s.cron, first)
    while True:
        yield it.get_next(datetime).astimezone(UTC)


Run = tuple[datetime, datetime, datetime]  # (period_start, period_end, run_at)


def runs(s: Schedule, first: datetime) -> Iterator[Run]:
    """Every period from the period start ``first`` on, ascending, until ``end``."""
    starts = _period_starts(s, first)
    cur = next(starts)
    for nxt in starts:
        if s.end is not None and cur >= s.end:
            return
        yield cur, nxt, (cur if s.style == "cron" else nxt)
        cur = nxt


def _run(p: Run) -> dict[str, str]:
    return {"period_start": p[0].isoformat(), "period_end": p[1].isoformat(), "run_at": p[2].isoformat()}


def runs_after(s: Schedule, after: datetime) -> Iterator[Run]:
    """Every run scheduled strictly after ``after``, ascending (no period starts before ``start``; until ``end``)."""
    origin = s.start if s.start is not None and s.start > after else after
    # The period containing ``after`` (or the one before it) may still have its run ahead (timeseries style).
    first = _floor_period(s, origin)
    if s.style == "timeseries" and first > (s.start or first):
        first = _floor_period(s, first - timedelta(seconds=1))
    for p in runs(s, first):
        if p[2] > after:
            yield p


def next_runs(s: Schedule, now: datetime, n: int) -> list[dict[str, str]]:
    """The next ``n`` runs scheduled strictly after ``now`` (no period starts before ``start``)."""
    return [_run(p) for p in itertools.islice(runs_after(s, now), n)]


BACKFILL_SCAN_LIMIT = 10_000


def backfill(s: Schedule, now: datetime) -> dict[str, Any]:
    """Missed runs of a schedule whose ``start`` is in the past: period start >= start, run time <= now.

    Keeps the ``max_backfill`` most recent, oldest first; ``skipped`` counts the
    older ones left out (counting stops at BACKFILL_SCAN_LIMIT: ``skipped_at_least``).
    """
    if s.start is None or s.start > now:
        return {"runs": [], "skipped": 0, "skipped_at_least": False}
    missed: list[Run] = []
    capped = False
    for p in runs(s, _floor_period(s, s.start)):
        if p[2] > now:
            break
        missed.append(p)
        if len(missed) > BACKFILL_SCAN_LIMIT + s.max_backfill:
            capped = True
            break
    kept = missed[len(missed) - s.max_backfill:] if s.max_backfill else []
    if capped:  # the newest runs are beyond the scan: walk back from now instead
        kept = _latest_runs(s, now, s.max_backfill)
    return {"runs": [_run(p) for p in kept], "skipped": len(missed) - (0 if capped else len(kept)),
            "skipped_at_least": capped}


def _latest_runs(s: Schedule, now: datetime, n: int) -> list[Run]:
    """The ``n`` latest runs with run time <= now, oldest first (periods starting from ``start``)."""
    if n == 0:
        return []
    first = _floor_period(s, now)
    for _ in range(n + 1):
        if s.start is not None and first <= s.start:
            break
        first = _floor_period(s, first - timedelta(seconds=1))
    found: list[Run] = []
    for p in runs(s, first):
        if p[2] > now:
            break
        found.append(p)
    return found[-n:]


def due_runs(s: Schedule, after: datetime, now: datetime) -> dict[str, Any]:
    """The runs that came due since ``after`` (``after < run time <= now``), for an agent to materialise.

    The newest one always runs; older ones (their run time passed while no
    agent was polling) are back-fill, bounded like a past ``start``: the
    ``max_backfill`` most recent of them are kept, oldest first, and
    ``skipped`` counts the rest (counting stops at BACKFILL_SCAN_LIMIT:
    ``skipped_at_least``).
    """
    keep = s.max_backfill + 1
    window: deque[Run] = deque(maxlen=keep)
    seen = 0
    capped = False
    for p in runs_after(s, after):
        if p[2] > now:
            break
        window.append(p)
        seen += 1
        if seen > BACKFILL_SCAN_LIMIT + keep:
            capped = True
            break
    kept = list(window)
    if capped:  # the newest runs are beyond the scan: walk back from now instead
        kept = [p for p in _latest_runs(s, now, keep) if p[2] > after]
    return {"runs": [_run(p) for p in kept], "skipped": seen - (0 if capped else len(kept)),
            "skipped_at_least": capped}
