"""Schedule math (table-driven): cron style runs at a period's start, time-series at its end; back-fill bounds."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backupctl.pipelines.schedule import backfill, check_schedule, next_runs

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def sched(**raw):  # type: ignore[no-untyped-def]
    s, problems = check_schedule(raw)
    assert not problems, problems
    return s


@pytest.mark.parametrize(("raw", "first_two"), [
    ({"cron": "0 3 * * *"}, ["2026-01-06T03:00:00+00:00", "2026-01-07T03:00:00+00:00"]),
    ({"cron": "0 3 * * *", "style": "timeseries"}, ["2026-01-06T03:00:00+00:00", "2026-01-07T03:00:00+00:00"]),
    ({"cron": "0 * * * *", "start": "2026-02-01T00:30:00Z"}, ["2026-02-01T01:00:00+00:00", "2026-02-01T02:00:00+00:00"]),
    ({"rate": "6 hours", "start": "2026-01-01T00:00:00Z"}, ["2026-01-05T18:00:00+00:00", "2026-01-06T00:00:00+00:00"]),
    ({"rate": "6 hours", "start": "2026-01-01T00:00:00Z", "style": "timeseries"},
     ["2026-01-05T18:00:00+00:00", "2026-01-06T00:00:00+00:00"]),
    ({"rate": "1 day", "start": "2026-01-01T00:00:00Z", "end": "2026-01-06T00:00:00Z"}, []),
])
def test_next_runs(raw, first_two) -> None:  # type: ignore[no-untyped-def]
    assert [r["run_at"] for r in next_runs(sched(**raw), NOW, 2)] == first_two


def test_styles_differ_in_when_a_period_runs() -> None:
    (c,) = next_runs(sched(rate="6 hours", start="2026-01-01T00:00:00Z"), NOW, 1)
    (t,) = next_runs(sched(rate="6 hours", start="2026-01-01T00:00:00Z", style="timeseries"), NOW, 1)
    assert c["run_at"] == c["period_start"] == "2026-01-05T18:00:00+00:00"
    assert t["run_at"] == t["period_end"] == "2026-01-05T18:00:00+00:00"
    assert t["period_start"] == "2026-01-05T12:00:00+00:00"


@pytest.mark.parametrize(("raw", "runs", "skipped"), [
    # cron style, start Jan 1 00:00: daily 03:00 runs on Jan 1..5 have passed; keep the latest 2.
    ({"cron": "0 3 * * *", "start": "2026-01-01T00:00:00Z", "max_backfill": 2},
     ["2026-01-04T03:00:00+00:00", "2026-01-05T03:00:00+00:00"], 3),
    # time-series: the period Jan 5 03:00 - Jan 6 03:00 has not ended: 4 runs, all kept.
    ({"cron": "0 3 * * *", "start": "2026-01-01T00:00:00Z", "style": "timeseries", "max_backfill": 10},
     ["2026-01-02T03:00:00+00:00", "2026-01-03T03:00:00+00:00", "2026-01-04T03:00:00+00:00",
      "2026-01-05T03:00:00+00:00"], 0),
    ({"rate": "6 hours", "start": "2026-01-01T00:00:00Z", "style": "timeseries", "max_backfill": 1},
     ["2026-01-05T12:00:00+00:00"], 17),
    ({"cron": "0 3 * * *", "start": "2026-01-01T00:00:00Z"}, [], 5),  # max_backfill 0: nothing back-filled
    ({"cron": "0 3 * * *", "start": "2026-02-01T00:00:00Z", "max_backfill": 5}, [], 0),  # start in the future
    ({"cron": "0 3 * * *"}, [], 0),  # no start: no back-fill
])
def test_backfill(raw, runs, skipped) -> None:  # type: ignore[no-untyped-def]
    bf = backfill(sched(**raw), NOW)
    assert [r["run_at"] for r in bf["runs"]] == runs
    assert bf["skipped"] == skipped and bf["skipped_at_least"] is False


def test_backfill_of_a_long_past_start_is_bounded() -> None:
    bf = backfill(sched(cron="* * * * *", start="2020-01-01T00:00:00Z", max_backfill=2), NOW)
    assert [r["run_at"] for r in bf["runs"]] == ["2026-01-05T11:59:00+00:00", "2026-01-05T12:00:00+00:00"]
    assert bf["skipped_at_least"] is True


@pytest.mark.parametrize(("raw", "key", "fragment"), [
    ({"cron": "0 3 * *"}, "cron", "invalid cron expression"),
    ({"cron": "0 3 * * *", "rate": "1 day"}, "", "exactly one"),
    ({"rate": "1 day"}, "", "needs 'start'"),
    ({"rate": "0 days", "start": "2026-01-01"}, "rate", "invalid rate"),
    ({"cron": "0 3 * * *", "start": "2026-01-02", "end": "2026-01-01"}, "end", "after start"),
    ({"cron": "0 3 * * *", "max_backfill": -1}, "max_backfill", "between 0"),
    ({"cron": "0 3 * * *", "start": "yesterday"}, "start", "invalid time"),
])
def test_invalid_schedules(raw, key, fragment) -> None:  # type: ignore[no-untyped-def]
    s, problems = check_schedule(raw)
    assert s is None and any(k == key and fragment in p for k, p in problems), problems


# due_runs: what an agent materialises when it polls (cursor < run time <= now); the newest always runs,
# older ones (missed while no agent polled) are back-fill bounded by max_backfill.
@pytest.mark.parametrize(("raw", "after", "now", "runs", "skipped"), [
    # one period came due since the last poll
    ({"rate": "1 hour", "start": "2026-01-01T00:00:00Z"}, "2026-01-05T11:59:00Z", "2026-01-05T12:00:00Z",
     ["2026-01-05T12:00:00+00:00"], 0),
    # nothing due yet
    ({"rate": "1 hour", "start": "2026-01-01T00:00:00Z"}, "2026-01-05T12:00:00Z", "2026-01-05T12:59:59Z", [], 0),
    # agents away for 4 hours: the newest runs, plus max_backfill (2) of the 3 older ones
    ({"rate": "1 hour", "start": "2026-01-01T00:00:00Z", "max_backfill": 2}, "2026-01-05T08:30:00Z",
     "2026-01-05T12:30:00Z", ["2026-01-05T10:00:00+00:00", "2026-01-05T11:00:00+00:00", "2026-01-05T12:00:00+00:00"],
     1),
    # max_backfill 0: only the newest
    ({"cron": "*/15 * * * *"}, "2026-01-05T11:00:00Z", "2026-01-05T12:00:00Z", ["2026-01-05T12:00:00+00:00"], 3),
    # time-series: a period runs at its end
    ({"cron": "0 * * * *", "style": "timeseries"}, "2026-01-05T11:30:00Z", "2026-01-05T12:00:00Z",
     ["2026-01-05T12:00:00+00:00"], 0),
    # a run exactly at the cursor was materialised by the previous poll
    ({"cron": "0 * * * *"}, "2026-01-05T12:00:00Z", "2026-01-05T12:10:00Z", [], 0),
    # the schedule's end
    ({"rate": "1 hour", "start": "2026-01-01T00:00:00Z", "end": "2026-01-05T11:00:00Z"}, "2026-01-05T09:30:00Z",
     "2026-01-05T12:30:00Z", ["2026-01-05T10:00:00+00:00"], 0),
    # a start ahead of the cursor: nothing before the start
    ({"rate": "1 hour", "start": "2026-01-05T11:00:00Z", "max_backfill": 5}, "2026-01-05T08:00:00Z",
     "2026-01-05T12:00:00Z", ["2026-01-05T11:00:00+00:00", "2026-01-05T12:00:00+00:00"], 0),
])
def test_due_runs(raw, after, now, runs, skipped) -> None:  # type: ignore[no-untyped-def]
    from backupctl.pipelines.schedule import due_runs, parse_time

    due = due_runs(sched(**raw), parse_time(after), parse_time(now))
    assert [r["run_at"] for r in due["runs"]] == runs
    assert due["skipped"] == skipped and due["skipped_at_least"] is False


def test_due_runs_after_a_long_absence_is_bounded() -> None:
    from backupctl.pipelines.schedule import BACKFILL_SCAN_LIMIT, due_runs, parse_time

    s = sched(rate="1 minute", start="2020-01-01T00:00:00Z", max_backfill=2)
    due = due_runs(s, parse_time("2020-01-01T00:00:00Z"), NOW)
    assert [r["run_at"] for r in due["runs"]] == ["2026-01-05T11:58:00+00:00", "2026-01-05T11:59:00+00:00",
                                                  "2026-01-05T12:00:00+00:00"]
    assert due["skipped_at_least"] is True and due["skipped"] > BACKFILL_SCAN_LIMIT
