"""Schedules and the agent in process under moto: validation on add, back-fill, a --once pass that runs each
due run once and uploads its log, SIGTERM finishing the current activity and releasing, failures recorded."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from moto import mock_aws

from backupctl.aws import AwsContext
from backupctl.errors import InvalidInput
from backupctl.pipelines import control as ct
from backupctl.pipelines.agent import Agent, AgentOptions, add_schedule, playbook_run_id
from backupctl.pipelines.model import PlaybookInvalid
from backupctl.repository import Repository
from backupctl.retry import RetryPolicy

FAST = RetryPolicy(max_attempts=3, initial_s=0.001, max_backoff_s=0.01, deadline_s=5)
NOW = datetime.now(UTC).replace(microsecond=0)
START = (NOW - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:00Z")


@pytest.fixture
def aws() -> Iterator[AwsContext]:
    with mock_aws():
        yield AwsContext()


def playbook(tmp_path: Path, activities: str, max_backfill: int = 2, extra: str = "") -> str:
    p = tmp_path / "pb.yaml"
    p.write_text(f"""name: tick
schedule:
  rate: 1 minutes
  start: {START}
  max_backfill: {max_backfill}
{extra}activities:
{activities}""")
    return str(p)


def agent(aws: AwsContext, lines: list[str] | None = None) -> Agent:
    table = ct.ControlTable(aws, "us-west-2", ct.DEFAULT_TABLE, FAST)
    return Agent(aws, table, AgentOptions(lease_s=30, poll_s=0.1, once=True),
                 (lines.append if lines is not None else None))


def test_add_validates_like_pipeline_validate(aws: AwsContext, tmp_path: Path) -> None:
    path = playbook(tmp_path, "  a: {type: ShellCommand, command: 'true', depends_on: [nope]}\n")
    with pytest.raises(PlaybookInvalid) as e:
        add_schedule(aws, path, region="us-west-2")
    assert e.value.message == f"{path}:7 activities.a.depends_on[0]: unknown activity 'nope'"
    bare = tmp_path / "bare.yaml"
    bare.write_text("name: bare\nactivities:\n  a: {type: ShellCommand, command: 'true'}\n")
    with pytest.raises(InvalidInput, match=r"bare.yaml:1 schedule: the playbook has no schedule"):
        add_schedule(aws, str(bare), region="us-west-2")
    ok = playbook(tmp_path, "  a: {type: ShellCommand, command: 'true'}\n")
    with pytest.raises(InvalidInput, match="give --region"):
        add_schedule(aws, ok)
    with pytest.raises(InvalidInput, match="set by the agent"):
        add_schedule(aws, ok, region="us-west-2", variables={"scheduled_time": "x"})
    assert not ct.ControlTable(aws, "us-west-2").exists()  # nothing written for an invalid playbook


def test_add_backfills_and_a_once_agent_runs_each_due_run_once(aws: AwsContext, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    path = playbook(tmp_path, f"  write: {{type: ShellCommand, command: 'echo \"$BACKUPCTL_VAR_SCHEDULED_RUN_ID "
                              f"$BACKUPCTL_VAR_GREETING $BACKUPCTL_RUN_ID\" >> {out}'}}\n",
                    extra="variables: {greeting: hello}\n")
    doc = add_schedule(aws, path, region="us-west-2", variables={"greeting": "hi"})
    assert doc["schedule_id"] == "tick" and len(doc["backfill"]["runs"]) == 2 and doc["backfill"]["skipped"] >= 8
    first = agent(aws).serve()
    assert first.stopped_by == "once" and [r["state"] for r in first.runs] == ["SUCCEEDED"] * len(first.runs)
    ran = [line.split() for line in out.read_text().splitlines()]
    assert len(ran) == len({r[0] for r in ran}) >= 2  # each run once
    assert {r[1] for r in ran} == {"hi"}  # --var wins over the playbook's value
    table = ct.ControlTable(aws, "us-west-2")
    for rid, _greeting, pb_run in ran:
        run = table.get_run(rid)
        assert run is not None and run["state"] == ct.SUCCEEDED and run["attempts"] == 1
        assert pb_run == run["playbook_run_id"] == playbook_run_id(rid, datetime.fromisoformat(
            run["scheduled_at"].replace("Z", "+00:00")), 1)
        body = Repository.open(aws, "us-west-2").store.get(run["log_key"]).decode()
        assert run["log_key"] == f"runs/agent/{rid}/attempt-1.log" and "write (ShellCommand)" in body
        assert f"run {rid} succeeded" in body
    assert agent(aws).serve().runs == []  # a second pass finds nothing due


def test_sigterm_finishes_the_current_activity_runs_cleanup_and_releases(aws: AwsContext, tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    path = playbook(tmp_path, f"""  first: {{type: ShellCommand, command: 'kill -TERM $PPID; sleep 0.3; echo first >> {out}'}}
  second: {{type: ShellCommand, command: 'echo second >> {out}', depends_on: [first]}}
  cleanup: {{type: ShellCommand, command: 'echo cleanup >> {out}', depends_on: [second], run_on: always}}
""", max_backfill=0)
    add_schedule(aws, path, region="us-west-2", now=NOW - timedelta(minutes=5))
    table = ct.ControlTable(aws, "us-west-2")
    lines: list[str] = []
    a = agent(aws, lines)
    a.opts.once = False
    summary = a.serve()
    assert summary.stopped_by == "signal" and not summary.interrupted
    assert [r["state"] for r in summary.runs] == ["RELEASED"]
    assert out.read_text().split() == ["first", "cleanup"]  # finished, skipped, clean-up ran
    assert any("SIGTERM: stopping after the current activity" in m for m in lines)
    rid = summary.runs[0]["run_id"]
    run = table.get_run(rid)
    assert run is not None and run["state"] == ct.RELEASED and run["reason"] == "the agent is stopping"
    assert [a["status"] for a in run["activities"]] == ["succeeded", "skipped", "succeeded"]
    # The next agent takes the released run (attempt 2) and starts it over.
    Path(path).write_text(Path(path).read_text().replace("kill -TERM $PPID; ", ""))
    table.put_schedule({**(table.get_schedule("tick") or {}),
                        "playbook_text": Path(path).read_text()}, replace=True)
    again = agent(aws).serve()
    assert [(r["run_id"], r["state"], r["attempt"]) for r in again.runs][0] == (rid, "SUCCEEDED", 2)
    run = table.get_run(rid)
    assert run is not None and [h["event"] for h in run["history"]] == ["created", "taken", "released", "taken",
                                                                       "succeeded"]


def test_a_failing_activity_is_retried_then_the_run_is_failed(aws: AwsContext, tmp_path: Path) -> None:
    path = playbook(tmp_path, "  boom: {type: ShellCommand, command: 'echo nope >&2; exit 4', retries: 1, "
                              "retry_delay: 10ms}\n", max_backfill=0)
    add_schedule(aws, path, region="us-west-2", now=NOW - timedelta(minutes=3))
    (res,) = agent(aws).serve().runs
    assert res["state"] == "FAILED" and res["exit_code"] == 4
    run = ct.ControlTable(aws, "us-west-2").get_run(res["run_id"])
    assert run is not None and run["error"] == "activity 'boom': command exited 4: nope"
    assert run["activities"][0]["attempts"] == 2 and "open_group" not in run


def test_sigterm_while_idle_exits_at_once(aws: AwsContext) -> None:
    a = agent(aws)
    a.opts.once = False
    a.opts.poll_s = 30
    ct.ControlTable(aws, "us-west-2").ensure()
    import signal
    import threading

    threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    summary = a.serve()
    assert summary.stopped_by == "signal" and summary.runs == []


def test_an_agent_that_loses_its_lease_cancels_the_run_and_records_nothing(aws: AwsContext, tmp_path: Path) -> None:
    import threading
    import time

    out = tmp_path / "out.txt"
    path = playbook(tmp_path, f"""  slow: {{type: ShellCommand, command: 'sleep 5; echo slow >> {out}'}}
  cleanup: {{type: ShellCommand, command: 'echo cleanup >> {out}', depends_on: [slow], run_on: always}}
""", max_backfill=0)
    add_schedule(aws, path, region="us-west-2", now=NOW - timedelta(minutes=2))
    table = ct.ControlTable(aws, "us-west-2", ct.DEFAULT_TABLE, FAST)
    a = agent(aws)
    a.opts.lease_s = 1.0
    stolen: list[ct.Lease] = []

    def steal() -> None:  # another agent whose clock runs ahead takes the run over
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not stolen:
            for run in table.open_runs("default"):
                if run["state"] == ct.RUNNING:
                    lease = table.take(run, "agent-b", 60, float(run["lease_expires"]) + 1)
                    if lease:
                        stolen.append(lease)
            time.sleep(0.05)

    thief = threading.Thread(target=steal)
    thief.start()
    t0 = time.monotonic()
    summary = a.serve()
    thief.join()
    assert time.monotonic() - t0 < 4  # the 5 s activity was cancelled
    (res,) = summary.runs
    assert res["state"] == "LOST" and stolen and stolen[0].run_id == res["run_id"]
    assert out.read_text().split() == ["cleanup"]
    run = table.get_run(res["run_id"])  # untouched by the agent that lost it
    assert run is not None and run["state"] == ct.RUNNING and run["lease_owner"] == "agent-b" and run["attempts"] == 2
    body = Repository.open(aws, "us-west-2").store.get(f"runs/agent/{res['run_id']}/attempt-1.log").decode()
    assert "lease lost" in body and "not recording the outcome" in body


def test_a_second_signal_cancels_the_activity_and_releases(aws: AwsContext, tmp_path: Path) -> None:
    import time

    out = tmp_path / "out.txt"
    path = playbook(tmp_path, f"""  slow: {{type: ShellCommand, command: 'kill -TERM $PPID; sleep 0.3; kill -INT $PPID; sleep 5; echo slow >> {out}'}}
  cleanup: {{type: ShellCommand, command: 'echo cleanup >> {out}', depends_on: [slow], run_on: always}}
""", max_backfill=0)
    add_schedule(aws, path, region="us-west-2", now=NOW - timedelta(minutes=2))
    a = agent(aws)
    t0 = time.monotonic()
    summary = a.serve()
    assert time.monotonic() - t0 < 4 and summary.interrupted and summary.stopped_by == "signal"
    (res,) = summary.runs
    assert res["state"] == "RELEASED" and res["exit_code"] == 130
    assert out.read_text().split() == ["cleanup"]
    run = ct.ControlTable(aws, "us-west-2").get_run(res["run_id"])
    assert run is not None and run["reason"] == "the agent was interrupted"
    assert [x["status"] for x in run["activities"]] == ["cancelled", "succeeded"]
