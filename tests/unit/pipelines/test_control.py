"""The control table under moto (in process): runs exist once, leases are taken conditionally, renewed,
taken over after expiry (attempts + 1), released, and a stale owner can write nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.exceptions
import pytest
from moto import mock_aws

from backupctl.aws import AwsContext
from backupctl.errors import Conflict, NotFound
from backupctl.model import isoformat
from backupctl.pipelines import control as ct
from backupctl.pipelines.agent import LeaseKeeper
from backupctl.pipelines.schedule import check_schedule
from backupctl.retry import RetryPolicy

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
FAST = RetryPolicy(max_attempts=3, initial_s=0.001, max_backoff_s=0.01, deadline_s=5)


@pytest.fixture
def table() -> Iterator[ct.ControlTable]:
    with mock_aws():
        yield ct.ControlTable(AwsContext(), "us-west-2", "ctl", FAST).ensure()


def schedule_doc(table: ct.ControlTable, sid: str = "tick", cursor: datetime = T0, group: str = "g",
                 **raw: Any) -> dict[str, Any]:
    doc = {"schedule_id": sid, "worker_group": group, "cursor": isoformat(cursor), "playbook_sha256": "x",
           "created_at": "c", "schedule": {}}
    return table.put_schedule(doc)


def one_run(table: ct.ControlTable, sid: str = "tick", at: datetime = T0) -> dict[str, Any]:
    sched = schedule_doc(table, sid)
    p = at.isoformat()
    assert table.create_run(sched, {"run_at": p, "period_start": p, "period_end": (at + timedelta(hours=1)).isoformat()},
                            at.timestamp())
    run = table.get_run(ct.run_id_for(sid, at))
    assert run is not None
    return run


def test_ensure_creates_an_on_demand_table_with_the_open_runs_index(table: ct.ControlTable) -> None:
    d = table.ddb.describe_table(TableName="ctl")["Table"]
    assert d["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [i["IndexName"] for i in d["GlobalSecondaryIndexes"]] == [ct.OPEN_INDEX]
    assert table.ensure() is table  # idempotent
    assert not ct.ControlTable(AwsContext(), "us-west-2", "other", FAST).exists()
    with pytest.raises(NotFound, match="control table other not found"):
        ct.ControlTable(AwsContext(), "us-west-2", "other", FAST).require()


def test_run_ids_name_the_schedule_and_the_scheduled_time() -> None:
    assert ct.run_id_for("nightly", T0) == "nightly@20260105T120000Z"
    assert ct.run_key("nightly@20260105T120000Z") == {"pk": {"S": "RUN#nightly"}, "sk": {"S": "20260105T120000Z"}}
    with pytest.raises(Exception, match="invalid run id"):
        ct.run_key("nightly")


def test_a_schedule_id_is_added_once(table: ct.ControlTable) -> None:
    schedule_doc(table)
    with pytest.raises(Conflict, match="schedule 'tick' exists"):
        table.put_schedule({"schedule_id": "tick", "worker_group": "g", "cursor": "x", "playbook_sha256": "y",
                            "created_at": "d"})


def test_each_due_period_is_one_run_even_when_agents_materialise_at_once(table: ct.ControlTable) -> None:
    sched, problems = check_schedule({"rate": "1 hour", "start": "2026-01-01T00:00:00Z", "max_backfill": 1})
    assert sched is not None and not problems
    item = schedule_doc(table, cursor=T0)
    now = T0 + timedelta(hours=3, minutes=30)
    # Three agents read the schedule (same cursor) and materialise one after another from that stale read.
    # (Interleaved, not threaded: moto in process does not make conditional writes atomic across threads.)
    results = [table.materialise(dict(item), sched, now + timedelta(seconds=i)) for i in range(3)]
    # 13:00, 14:00, 15:00 came due: the newest plus max_backfill (1) older one; each created exactly once.
    assert results == [["tick@20260105T140000Z", "tick@20260105T150000Z"], [], []]
    runs = table.list_runs("tick")
    assert [r["run_id"] for r in runs] == ["tick@20260105T150000Z", "tick@20260105T140000Z"]
    assert [r["backfill"] for r in runs] == [False, True]
    assert all(r["state"] == ct.PENDING and r["attempts"] == 0 for r in runs)
    stored = table.get_schedule("tick")  # only the first agent moved the cursor and counted the skipped period
    assert stored is not None and stored["cursor"] == isoformat(now) and stored["skipped"] == 1
    assert stored["next_due"] == "2026-01-05T16:00:00.000000Z"
    # The next poll from the advanced cursor has nothing new.
    assert table.materialise(stored, sched, now + timedelta(minutes=1)) == []
    assert [r["run_id"] for r in table.open_runs("g")] == ["tick@20260105T140000Z", "tick@20260105T150000Z"]


def test_take_is_conditional_and_two_agents_never_hold_one_run(table: ct.ControlTable) -> None:
    run = one_run(table)
    now = time.time()
    a = table.take(run, "agent-a", 30, now)
    assert a is not None and a.attempt == 1 and a.previous_owner is None
    # Agent b read the same PENDING item: its take fails (the item changed), and so does a fresh read's.
    assert table.take(run, "agent-b", 30, now) is None
    fresh = table.get_run(run["run_id"])
    assert fresh is not None and ct.lease_state(fresh, now) == "held"
    assert table.take(fresh, "agent-b", 30, now + 1) is None
    got = table.get_run(run["run_id"])
    assert got is not None and got["state"] == ct.RUNNING and got["lease_owner"] == "agent-a" and got["attempts"] == 1


def test_renew_extends_the_lease_and_blocks_a_takeover(table: ct.ControlTable) -> None:
    run = one_run(table)
    now = time.time()
    lease = table.take(run, "agent-a", 10, now)
    assert lease is not None
    assert table.renew(lease, 10, now + 8)
    item = table.get_run(run["run_id"])
    assert item is not None and item["lease_expires"] == pytest.approx(now + 18)
    # At the old expiry the lease is still live.
    assert table.take(item, "agent-b", 10, now + 12) is None


def test_an_expired_lease_is_taken_over_and_the_old_owner_can_write_nothing(table: ct.ControlTable) -> None:
    run = one_run(table)
    now = time.time()
    a = table.take(run, "agent-a", 5, now)
    assert a is not None
    item = table.get_run(run["run_id"])
    assert item is not None and ct.lease_state(item, now + 6) == "expired"
    b = table.take(item, "agent-b", 5, now + 6)
    assert b is not None and b.attempt == 2 and b.previous_owner == "agent-a" and b.previous_state == ct.RUNNING
    # agent-a comes back: no renewal, no outcome, no release.
    assert table.renew(a, 5, now + 7) is False
    assert table.finish(a, ct.SUCCEEDED, now + 7, {"exit_code": 0}) is False
    assert table.finish(a, ct.RELEASED, now + 7) is False
    assert table.finish(b, ct.SUCCEEDED, now + 8, {"exit_code": 0, "log_key": "runs/agent/x.log"})
    done = table.get_run(run["run_id"])
    assert done is not None
    assert done["state"] == ct.SUCCEEDED and done["attempts"] == 2 and done["last_owner"] == "agent-b"
    assert "lease_owner" not in done and "open_group" not in done and done["log_key"] == "runs/agent/x.log"
    assert [(h["event"], h.get("owner")) for h in done["history"]] == [
        ("created", None), ("taken", "agent-a"), ("taken_over", "agent-b"), ("succeeded", "agent-b")]
    assert table.open_runs("g") == []


def test_release_hands_the_run_to_the_next_agent(table: ct.ControlTable) -> None:
    run = one_run(table)
    now = time.time()
    a = table.take(run, "agent-a", 30, now)
    assert a is not None and table.finish(a, ct.RELEASED, now + 1, {"reason": "the agent is stopping"})
    item = table.get_run(run["run_id"])
    assert item is not None and item["state"] == ct.RELEASED and "lease_owner" not in item
    assert [r["run_id"] for r in table.open_runs("g")] == [run["run_id"]]  # still open
    b = table.take(item, "agent-b", 30, now + 2)  # no need to wait for an expiry
    assert b is not None and b.attempt == 2 and b.previous_owner is None


def test_a_run_whose_agents_keep_dying_is_failed_after_max_attempts(table: ct.ControlTable) -> None:
    run = one_run(table)
    now = time.time()
    for i in range(2):
        item = table.get_run(run["run_id"])
        assert item is not None
        assert table.take(item, f"agent-{i}", 5, now + i * 10, max_attempts=2) is not None
    item = table.get_run(run["run_id"])
    assert item is not None and item["attempts"] == 2
    assert table.take(item, "agent-x", 5, now + 30, max_attempts=2) is None
    assert table.give_up(item, now + 30, 2)
    failed = table.get_run(run["run_id"])
    assert failed is not None and failed["state"] == ct.FAILED and "abandoned" in failed["error"]
    assert table.open_runs("g") == []


def test_a_retried_take_whose_first_call_landed_still_holds_the_lease(table: ct.ControlTable,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    run = one_run(table)
    real = table.ddb
    calls = {"n": 0}

    class Flaky:  # the first UpdateItem is applied, but its response is lost
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def update_item(self, **kw: Any) -> Any:
            calls["n"] += 1
            out = real.update_item(**kw)
            if calls["n"] == 1:
                raise botocore.exceptions.ConnectionClosedError(endpoint_url="http://x")
            return out

    monkeypatch.setattr(ct.ControlTable, "ddb", property(lambda self: Flaky()))
    lease = table.take(run, "agent-a", 30, time.time())
    assert calls["n"] == 2 and lease is not None
    item = table.get_run(run["run_id"])
    assert item is not None and item["lease_token"] == lease.token and item["attempts"] == 1


def test_lease_keeper_renews_and_reports_a_takeover(table: ct.ControlTable) -> None:
    run = one_run(table)
    now = time.time()
    lease = table.take(run, "agent-a", 0.3, now)
    assert lease is not None
    lost: list[str] = []
    keeper = LeaseKeeper(table, lease, 0.3, lost.append)
    keeper.start()
    time.sleep(0.35)
    assert keeper.renewals >= 2 and not lost  # renewed past the original expiry
    item = table.get_run(run["run_id"])
    assert item is not None
    # Another agent whose clock says the lease expired takes the run over: the keeper notices.
    assert table.take(item, "agent-b", 30, float(item["lease_expires"]) + 1) is not None
    keeper.join(timeout=2)
    assert lost and "another agent holds the run" in lost[0]


def test_removing_a_schedule_cancels_its_pending_runs(table: ct.ControlTable) -> None:
    run = one_run(table)
    other = ct.run_id_for("tick", T0 + timedelta(hours=1))
    p = (T0 + timedelta(hours=1)).isoformat()
    sched = table.get_schedule("tick")
    assert sched is not None and table.create_run(sched, {"run_at": p, "period_start": p, "period_end": p}, 0)
    item = table.get_run(other)
    assert item is not None and table.take(item, "agent-a", 30, time.time()) is not None
    out = table.remove_schedule("tick")
    assert out["cancelled_runs"] == [run["run_id"]]
    assert {r["run_id"]: r["state"] for r in table.list_runs("tick")} == {run["run_id"]: ct.CANCELLED,
                                                                          other: ct.RUNNING}
    with pytest.raises(NotFound):
        table.remove_schedule("tick")
