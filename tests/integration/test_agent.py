"""Schedules and real `backupctl agent` processes against a moto server.

* Two agents on one schedule: each due run is executed exactly once (lines counted), and both take part.
* An agent SIGKILLed mid-run: another agent takes the run over once the lease expires (attempt 2) and
  completes it.
* SIGTERM: the agent finishes the current activity, runs clean-up, releases the run (or records it when it
  was the last activity) and exits 0; the next agent starts a released run over.

The server here is moto behind a one-request-at-a-time wrapper (``serial_moto``): moto's threaded server
does not apply conditional writes atomically, DynamoDB does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from backupctl.aws import AwsContext
from backupctl.embedded import DUMMY_CREDENTIALS, free_port, wait_ready
from backupctl.pipelines import control as ct
from backupctl.repository import Repository

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
REGION = "us-west-2"


@pytest.fixture(scope="module")
def serial_moto() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.serial_moto", str(port)], cwd=ROOT,
                            env={**os.environ, **DUMMY_CREDENTIALS}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def backupctl() -> list[str]:
    exe = Path(sys.executable).parent / "backupctl"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "backupctl"]


@dataclass
class Env:
    url: str
    table: str
    tmp: Path

    @property
    def vars(self) -> dict[str, str]:
        return {**os.environ, **DUMMY_CREDENTIALS, "BACKUPCTL_ENDPOINT_URL": self.url, "COLUMNS": "200",
                "BACKUPCTL_CONTROL_REGION": REGION, "BACKUPCTL_CONTROL_TABLE": self.table}

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(backupctl() + list(args), capture_output=True, text=True, env=self.vars,
                              timeout=timeout)

    def agent(self, label: str, *args: str) -> Agent:
        err = self.tmp / f"agent-{label}.err"
        with err.open("w") as f:
            proc = subprocess.Popen(backupctl() + ["agent", "--poll-interval", "200ms", *args], env=self.vars,
                                    stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
        return Agent(proc, err)

    @property
    def aws(self) -> AwsContext:
        return AwsContext(endpoint_url=self.url)

    @property
    def control(self) -> ct.ControlTable:
        return ct.ControlTable(self.aws, REGION, self.table)

    def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
        """``backupctl ARGS`` in this process (the exit-code mapping of main() included), against this server."""
        from backupctl.cli.main import main

        capsys.readouterr()
        with pytest.raises(SystemExit) as e, mock.patch.dict(os.environ, {"COLUMNS": "200"}):
            main(["--endpoint-url", self.url, *args[:2], "--region", REGION, "--control-table", self.table,
                  *args[2:]])
        out, err = capsys.readouterr()
        return int(e.value.code or 0), out, err


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    err: Path

    def log(self) -> str:
        return self.err.read_text()

    def wait_started(self) -> None:
        wait_for(lambda: "poll every" in self.log() or self.proc.poll() is not None, 30, "agent start")
        assert self.proc.poll() is None, self.log()

    def agent_id(self) -> str:
        line = next(x for x in self.log().splitlines() if x.startswith("agent "))
        return line.split()[1].rstrip(":")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def env(serial_moto: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(serial_moto, f"ctl-{uuid.uuid4().hex[:8]}", tmp_path)
    yield e


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    started: list[Agent] = []
    yield started
    for a in started:  # never leave an agent (or its shell children) behind
        if a.proc.poll() is None:
            os.killpg(a.proc.pid, signal.SIGKILL)
            a.proc.wait()


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def playbook(env: Env, activities: str, every: str, start: datetime, max_backfill: int) -> str:
    p = env.tmp / "pb.yaml"
    p.write_text(f"""name: tick
schedule:
  rate: {every}
  start: {start.strftime("%Y-%m-%dT%H:%M:%SZ")}
  max_backfill: {max_backfill}
activities:
{activities}""")
    return str(p)


def add(env: Env, path: str) -> dict[str, Any]:
    from backupctl.pipelines.agent import add_schedule

    return add_schedule(env.aws, path, region=REGION, table=env.table)


def final(env: Env, run_ids: list[str]) -> Callable[[], list[dict[str, Any]] | None]:
    def check() -> list[dict[str, Any]] | None:
        runs = [env.control.get_run(r) for r in run_ids]
        return runs if all(r is not None and r["state"] in ct.FINAL_STATES for r in runs) else None  # type: ignore[misc]

    return check


def test_two_agents_run_each_due_run_exactly_once(env: Env, agents: list[Agent]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    out = env.tmp / "out.txt"
    # Hourly periods; the last 8 whose time has passed are back-filled, the next is half an hour away.
    path = playbook(env, f"  write: {{type: ShellCommand, command: 'echo $BACKUPCTL_VAR_SCHEDULED_RUN_ID >> {out}; "
                         "sleep 0.25'}\n", "1 hours", now - timedelta(hours=8, minutes=30), 8)
    agents += [env.agent("a"), env.agent("b")]
    for a in agents:
        a.wait_started()  # both are polling before the runs appear: they race for every one
    doc = add(env, path)
    run_ids = doc["backfill"]["runs"]
    assert len(run_ids) == 8 and doc["backfill"]["skipped"] == 1
    runs = wait_for(final(env, run_ids), 60, "all runs to finish")
    assert [a.stop() for a in agents] == [0, 0], [a.log() for a in agents]
    lines = out.read_text().split()
    assert sorted(lines) == sorted(run_ids)  # each due run executed exactly once
    assert {r["state"] for r in runs} == {ct.SUCCEEDED} and {r["attempts"] for r in runs} == {1}
    owners = {r["last_owner"] for r in runs}
    assert owners == {a.agent_id() for a in agents}  # both agents took runs
    assert [x["run_id"] for x in env.control.list_runs("tick")] == sorted(run_ids, reverse=True)


def test_a_killed_agents_run_is_taken_over_after_the_lease_expires(env: Env, agents: list[Agent]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    out = env.tmp / "out.txt"
    pgid = env.tmp / "pgid"
    # $$$$ is the shell's pid ($$ escapes $ in playbooks): the command runs in a session (process group) of its own.
    cmd = f"echo $$$$ > {pgid}; echo start >> {out}; sleep 1.5; echo done >> {out}"
    path = playbook(env, f"  work: {{type: ShellCommand, command: '{cmd}'}}\n", "1 days", now - timedelta(days=3), 1)
    (rid,) = add(env, path)["backfill"]["runs"]
    a = env.agent("a", "--lease", "2s")
    agents.append(a)
    wait_for(lambda: out.exists() and "start" in out.read_text(), 30, "the run to start")
    a_id = a.agent_id()
    os.killpg(a.proc.pid, signal.SIGKILL)  # the agent and its command die mid-run, like a lost host
    os.killpg(int(pgid.read_text()), signal.SIGKILL)
    a.proc.wait()
    held = env.control.get_run(rid)
    assert held is not None and held["state"] == ct.RUNNING and held["lease_owner"] == a_id
    t_killed = time.monotonic()
    b = env.agent("b", "--lease", "2s")
    agents.append(b)
    (run,) = wait_for(final(env, [rid]), 60, "the run to be taken over and finished")
    assert b.stop() == 0, b.log()
    assert time.monotonic() - t_killed > 1.0  # not before the lease expired
    assert run["state"] == ct.SUCCEEDED and run["attempts"] == 2 and run["last_owner"] == b.agent_id()
    assert out.read_text().split() == ["start", "start", "done"]
    events = [(h["event"], h.get("owner")) for h in run["history"]]
    assert events == [("created", None), ("taken", a_id), ("taken_over", b.agent_id()), ("succeeded", b.agent_id())]
    assert run["history"][2]["detail"] == f"lease of {a_id} expired"
    log = Repository.open(env.aws, REGION).store.get(run["log_key"]).decode()
    assert run["log_key"] == f"runs/agent/{rid}/attempt-2.log" and f"taken over from {a_id}" in log


def test_sigterm_finishes_the_activity_releases_the_run_and_exits_0(env: Env, agents: list[Agent]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    out = env.tmp / "out.txt"
    path = playbook(env, f"""  a: {{type: ShellCommand, command: 'echo a-start >> {out}; sleep 1; echo a >> {out}'}}
  b: {{type: ShellCommand, command: 'echo b-start >> {out}; sleep 1; echo b >> {out}', depends_on: [a]}}
  clean: {{type: ShellCommand, command: 'echo clean >> {out}', depends_on: [b], run_on: always}}
""", "1 days", now - timedelta(days=3), 1)
    (rid,) = add(env, path)["backfill"]["runs"]
    first = env.agent("a")
    agents.append(first)
    wait_for(lambda: out.exists() and "a-start" in out.read_text(), 30, "activity a to start")
    second = env.agent("b")  # starting up meanwhile; the run is first's until released
    agents.append(second)
    assert first.stop() == 0, first.log()  # SIGTERM: exits 0 after a, clean-up, release
    assert out.read_text().split()[:3] == ["a-start", "a", "clean"]
    assert "SIGTERM: stopping after the current activity" in first.log()
    # The next agent starts the released run over; SIGTERM during its last activity lets it finish the run.
    wait_for(lambda: "b-start" in out.read_text(), 30, "activity b to start")
    assert second.stop() == 0, second.log()
    assert out.read_text().split() == ["a-start", "a", "clean", "a-start", "a", "b-start", "b", "clean"]
    run = env.control.get_run(rid)
    assert run is not None and run["state"] == ct.SUCCEEDED and run["attempts"] == 2
    assert [h["event"] for h in run["history"]] == ["created", "taken", "released", "taken", "succeeded"]
    assert run["history"][2]["detail"] == "the agent is stopping"
    assert [x["status"] for x in run["activities"]] == ["succeeded", "succeeded", "succeeded"]
    log = Repository.open(env.aws, REGION).store.get(f"runs/agent/{rid}/attempt-1.log").decode()
    assert "b: skipped" not in log and f"releasing run {rid}: the agent is stopping" in log


def test_schedule_and_runs_commands(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    bad = env.tmp / "bad.yaml"
    bad.write_text("name: bad\nschedule: {rate: 1 hours, start: 2026-01-01T00:00:00Z}\nactivities:\n"
                   "  a: {type: ShellCommand, command: 'true', depends_on: [nope]}\n")
    code, _, err = env.cli(capsys, "schedule", "add", str(bad))
    assert code == 2 and f"{bad}:4 activities.a.depends_on[0]: unknown activity 'nope'" in err
    code, out, _ = env.cli(capsys, "schedule", "list", "--json")
    assert code == 0 and json.loads(out) == []  # no control table yet: an empty list
    assert env.cli(capsys, "runs", "show", "tick@20200101T000000Z")[0] == 3
    now = datetime.now(UTC)
    path = playbook(env, "  a: {type: ShellCommand, command: 'true'}\n", "1 days", now - timedelta(days=2), 1)
    code, out, err = env.cli(capsys, "schedule", "add", path, "--worker-group", "nightly", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schedule_id"] == "tick" and doc["worker_group"] == "nightly" and doc["control_table"] == env.table
    (rid,) = doc["backfill"]["runs"]
    code, _, err = env.cli(capsys, "schedule", "add", path)
    assert code == 4 and "schedule 'tick' exists" in err
    code, out, _ = env.cli(capsys, "schedule", "list", "--json")
    (listed,) = json.loads(out)
    assert listed["schedule_id"] == "tick" and "playbook_text" not in listed and listed["next_due"]
    code, out, _ = env.cli(capsys, "runs", "list", "--json")
    assert code == 0 and [(x["run_id"], x["state"]) for x in json.loads(out)] == [(rid, ct.PENDING)]
    code, out, _ = env.cli(capsys, "runs", "show", rid, "--json")
    assert code == 0 and json.loads(out)["history"][0]["event"] == "created"
    code, out, _ = env.cli(capsys, "schedule", "remove", "tick", "--json")
    assert code == 0 and json.loads(out)["cancelled_runs"] == [rid]
    code, out, _ = env.cli(capsys, "runs", "list", "--schedule", "tick", "--json")
    assert [x["state"] for x in json.loads(out)] == [ct.CANCELLED]
    assert env.cli(capsys, "schedule", "remove", "tick")[0] == 3
