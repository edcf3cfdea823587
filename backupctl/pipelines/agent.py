"""Schedules and the agent (AWS Data Pipeline's Task Runner) on top of the control table.

* ``add_schedule`` validates a playbook with a ``schedule:`` block (the same
  ``FILE:LINE key.path: problem`` errors as ``pipeline validate``), stores it
  in the control table and materialises its back-fill (``max_backfill`` most
  recent periods whose run time has passed) as PENDING runs.
* ``Agent`` polls for due runs of its worker group: it materialises the runs
  that came due since each schedule's cursor, takes the oldest open run with
  a lease (``ControlTable.take``), keeps the lease alive from a background
  thread (``LeaseKeeper``, every lease/3), runs the playbook with the
  pipeline runner (activity retries, timeouts, clean-up) or the drill, uploads
  the run log to the repository (``runs/agent/<run-id>/attempt-<n>.log``) and
  records the outcome. One run at a time, in the main thread (activity
  timeouts use SIGALRM there).
* **Stopping.** The first SIGTERM or Ctrl-C lets the running activity finish,
  skips the rest except ``run_on: always`` clean-up, and releases the run
  (RELEASED: another agent starts it again from its first activity) - or
  records it when it had finished; then the agent exits 0. A second signal
  cancels the running activity (clean-up still runs), releases, and exits 130.
* **Losing the lease.** When a renewal is refused (another agent took the run
  over) or cannot be confirmed within 80% of the lease, the running activity
  is cancelled (clean-up runs), the outcome is not recorded (it belongs to
  the new owner) and the log is still uploaded.

The playbook of a scheduled run also gets the variables ``scheduled_time``,
``period_start``, ``period_end`` and ``scheduled_run_id`` (so shell commands
see ``BACKUPCTL_VAR_SCHEDULED_TIME`` and friends).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.exceptions

from backupctl.aws import AwsContext, validate_region
from backupctl.console import plain_text
from backupctl.errors import EXIT_INTERRUPTED, EXIT_USAGE, BackupctlError, InvalidInput
from backupctl.model import isoformat, utcnow
from backupctl.pipelines import control as ct
from backupctl.pipelines.model import Playbook, parse_playbook
from backupctl.pipelines.schedule import backfill, next_runs, parse_time
from backupctl.retry import RetryPolicy

Say = Callable[[str], None]
_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
MAX_PLAYBOOK_BYTES = 256 * 1024
AGENT_VARIABLES = ("scheduled_time", "period_start", "period_end", "scheduled_run_id")


def agent_variables(schedule_id: str, period: dict[str, str]) -> dict[str, str]:
    """The variables a scheduled run's playbook gets, from its period (run_at, period_start, period_end)."""
    scheduled = parse_time(period["run_at"])
    return {"scheduled_time": isoformat(scheduled), "period_start": isoformat(parse_time(period["period_start"])),
            "period_end": isoformat(parse_time(period["period_end"])),
            "scheduled_run_id": ct.run_id_for(schedule_id, scheduled)}


def playbook_run_id(run_id: str, scheduled: datetime, attempt: int) -> str:
    """``${run_id}`` of one attempt: sorts by scheduled time, valid in table names, new per attempt."""
    h = hashlib.sha256(f"{run_id}#{attempt}".encode()).hexdigest()[:6]
    return "r" + scheduled.astimezone(UTC).strftime("%Y%m%dt%H%M%S") + "-" + h


def load_scheduled(schedule: dict[str, Any], variables: dict[str, str] | None = None,
                   run_id: str | None = None) -> Playbook:
    """The stored playbook of a schedule, validated again with the schedule's ``--var`` values."""
    return parse_playbook(str(schedule["playbook_text"]), str(schedule["playbook_path"]),
                          {**(schedule.get("variables") or {}), **(variables or {})}, run_id)


def _placeholder_variables(schedule_id: str) -> dict[str, str]:
    t = isoformat(datetime(2000, 1, 1, tzinfo=UTC))
    return agent_variables(schedule_id, {"run_at": t, "period_start": t, "period_end": t})


def _control_region(pb: Playbook, region: str | None) -> str:
    if region:
        return validate_region(region, "--region")
    regions = sorted({str(n.get("region")) for n in pb.nodes.values() if n.type == "S3Repository"})
    if len(regions) != 1:
        raise InvalidInput(f"{pb.path}: give --region (the control table's region): the playbook has "
                           + ("no S3Repository node" if not regions else f"repositories in {', '.join(regions)}"))
    return validate_region(regions[0], "the repository's region")


def add_schedule(aws: AwsContext, path: str, *, schedule_id: str | None = None, worker_group: str = "default",
                 region: str | None = None, repo: str | None = None, variables: dict[str, str] | None = None,
                 max_attempts: int = ct.DEFAULT_MAX_ATTEMPTS, replace: bool = False,
                 table: str = ct.DEFAULT_TABLE, now: datetime | None = None) -> dict[str, Any]:
    """Validate ``path``, store it as a schedule and materialise its back-fill. Returns the schedule document."""
    from backupctl.pipelines.runner import check_runnable

    now = now or utcnow()
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise InvalidInput(f"cannot read playbook {path}: {e.strerror or e}") from None
    if len(raw) > MAX_PLAYBOOK_BYTES:
        raise InvalidInput(f"{path}: {len(raw):,} bytes; a scheduled playbook is stored in the control table "
                           f"and may have at most {MAX_PLAYBOOK_BYTES:,}")
    text = raw.decode("utf-8", errors="replace")
    variables = dict(variables or {})
    for k in AGENT_VARIABLES:
        if k in variables:
            raise InvalidInput(f"--var {k}: set by the agent for every scheduled run")
    pb = parse_playbook(text, path, {**variables, **_placeholder_variables(schedule_id or "s")})
    check_runnable(pb)
    if pb.schedule is None:
        raise InvalidInput(f"{path}:1 schedule: the playbook has no schedule: block (cron or rate)")
    sid = schedule_id or pb.name
    if not _ID_RE.match(sid):
        raise InvalidInput(f"invalid schedule id '{sid}': letters, digits, '_' and '-', starting with a letter "
                           "(give --id)")
    if not _ID_RE.match(worker_group):
        raise InvalidInput(f"invalid worker group '{worker_group}': letters, digits, '_' and '-'")
    ctl_region = _control_region(pb, region)
    repo_uri = repo
    if repo_uri is None:
        repo_uri = next((str(n.get("uri")) for n in pb.nodes.values() if n.type == "S3Repository"
                         and n.get("region") == ctl_region and n.get("uri")), None)
    control = ct.ControlTable(aws, ctl_region, table).ensure()
    existing = control.get_schedule(sid) if replace else None
    doc: dict[str, Any] = {
        "schedule_id": sid, "name": pb.name, "playbook_kind": pb.kind, "playbook_path": str(Path(path).resolve()),
        "playbook_text": text, "playbook_sha256": hashlib.sha256(raw).hexdigest(), "variables": variables,
        "worker_group": worker_group, "schedule": pb.schedule.to_dict(), "repo_uri": repo_uri,
        "repo_region": ctl_region, "max_attempts": int(max_attempts), "created_at": isoformat(now),
        "updated_at": isoformat(now), "cursor": isoformat(now), "skipped": 0,
    }
    nxt = [{k: isoformat(parse_time(v)) for k, v in r.items()} for r in next_runs(pb.schedule, now, 3)]
    if nxt:
        doc["next_due"] = nxt[0]["run_at"]
    bf: dict[str, Any] = {"runs": [], "skipped": 0, "skipped_at_least": False}
    if existing is None:  # a new schedule back-fills the periods whose run time has passed (bounded)
        bf = backfill(pb.schedule, now)
        doc["skipped"] = bf["skipped"]
    stored = control.put_schedule(doc, replace=replace)
    for p in bf["runs"]:
        control.create_run(stored, p, now.timestamp(), backfill=True)
    out = {k: v for k, v in stored.items() if k not in ("pk", "sk", "kind", "playbook_text")}
    out.update(region=ctl_region, control_table=table, next_runs=nxt, replaced=existing is not None,
               backfill={"runs": [ct.run_id_for(sid, parse_time(p["run_at"])) for p in bf["runs"]],
                         "skipped": bf["skipped"], "skipped_at_least": bf["skipped_at_least"]})
    return out


def schedule_summary(item: dict[str, Any]) -> dict[str, Any]:
    """A schedule item without its playbook text and table keys (for list/JSON)."""
    return {k: v for k, v in item.items() if k not in ("pk", "sk", "kind", "playbook_text")}


def run_summary(item: dict[str, Any], history: bool = True) -> dict[str, Any]:
    doc = {k: v for k, v in item.items() if k not in ("pk", "sk", "kind", "lease_token", "open_group", "version")}
    if "lease_expires" in doc:
        doc["lease_expires_at"] = isoformat(datetime.fromtimestamp(float(doc["lease_expires"]), UTC))
    if not history:
        doc.pop("history", None)
    return doc


# -- the agent --------------------------------------------------------------------------


def new_agent_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class AgentOptions:
    worker_group: str = "default"
    lease_s: float = 60.0
    poll_s: float = 10.0
    once: bool = False


class RunLog:
    """The log of one attempt: every runner message with a UTC timestamp, echoed to the console."""

    def __init__(self, echo: Say, prefix: str) -> None:
        self.echo = echo
        self.prefix = prefix
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def say(self, message: str) -> None:
        with self._lock:
            self.lines.append(f"{isoformat(utcnow())} {plain_text(message)}")
        self.echo(f"{self.prefix}{message}")

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.lines) + "\n"


class LeaseKeeper(threading.Thread):
    """Renews a lease every lease/3 until stopped; calls ``on_lost(reason)`` once when it is lost.

    Lost means: a renewal was refused (the run was taken over or finished
    elsewhere), or no renewal was confirmed for 80% of the lease (the agent
    must stop before another agent may take the run over).
    """

    def __init__(self, control: ct.ControlTable, lease: ct.Lease, lease_s: float,
                 on_lost: Callable[[str], None], clock: Callable[[], float] = time.time) -> None:
        super().__init__(name=f"lease-{lease.run_id}", daemon=True)
        self.control = control
        self.lease = lease
        self.lease_s = lease_s
        self.on_lost = on_lost
        self.clock = clock
        self.lost: str | None = None
        self.renewals = 0
        self._stop_event = threading.Event()
        self._policy = RetryPolicy(max_attempts=5, initial_s=0.05, max_backoff_s=max(0.1, lease_s / 8),
                                   deadline_s=max(0.5, lease_s / 3))

    def run(self) -> None:
        last_ok = time.monotonic()
        interval = self.lease_s / 3
        while not self._stop_event.wait(interval):
            try:
                ok: bool | None = self.control.renew(self.lease, self.lease_s, self.clock(), self._policy)
            except Exception:  # noqa: BLE001 - unknown: retried on the next tick until 80% of the lease
                ok = None
            if ok:
                last_ok = time.monotonic()
                self.renewals += 1
            elif ok is False:
                self._lose("another agent holds the run now (the lease expired and was taken over)")
                return
            if time.monotonic() - last_ok > self.lease_s * 0.8:
                self._lose(f"the lease could not be renewed for {time.monotonic() - last_ok:.1f}s")
                return

    def _lose(self, reason: str) -> None:
        self.lost = reason
        self.on_lost(reason)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=self.lease_s)


@dataclass
class AgentSummary:
    agent_id: str
    worker_group: str
    region: str
    control_table: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    stopped_by: str | None = None
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "worker_group": self.worker_group, "region": self.region,
                "control_table": self.control_table, "runs": self.runs, "stopped_by": self.stopped_by,
                "interrupted": self.interrupted}


class Agent:
    """Polls the control table for due runs of one worker group and runs them one at a time."""

    def __init__(self, aws: AwsContext, control: ct.ControlTable, opts: AgentOptions, say: Say | None = None,
                 agent_id: str | None = None) -> None:
        self.aws = aws
        self.control = control
        self.opts = opts
        self.say = say or (lambda _m: None)
        self.id = agent_id or new_agent_id()
        self.stopping = False
        self.interrupted = False
        self._in_playbook = False
        self._lease_lost = False
        self._playbooks: dict[tuple[str, str], Playbook] = {}
        self._log: RunLog | None = None

    # -- signals ----------------------------------------------------------------------

    def _on_stop_signal(self, signum: int, _frame: Any) -> None:
        if self.stopping and self._in_playbook:
            self.interrupted = True
            raise KeyboardInterrupt  # a second signal: cancel the running activity
        if not self.stopping:
            self.stopping = True
            name = signal.Signals(signum).name
            self.say(f"{name}: stopping" + (" after the current activity (send it again to cancel the activity)"
                                            if self._in_playbook else ""))

    def _on_lease_lost_signal(self, _signum: int, _frame: Any) -> None:
        if self._lease_lost and self._in_playbook:
            raise KeyboardInterrupt

    @contextmanager
    def signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT stop the agent gracefully; SIGUSR1 (from the lease keeper) cancels a run that lost its lease."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, h) for s, h in ((signal.SIGTERM, self._on_stop_signal),
                                                   (signal.SIGINT, self._on_stop_signal),
                                                   (signal.SIGUSR1, self._on_lease_lost_signal))}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    def _lease_lost_now(self, reason: str) -> None:
        self._lease_lost = True
        (self._log.say if self._log is not None else self.say)(f"[red]lease lost[/red]: {reason}; cancelling the run")
        if self._in_playbook and threading.main_thread().ident is not None:
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)  # type: ignore[arg-type]

    # -- polling ----------------------------------------------------------------------

    def _playbook(self, schedule: dict[str, Any]) -> Playbook:
        key = (str(schedule["schedule_id"]), str(schedule.get("playbook_sha256")))
        if key not in self._playbooks:
            self._playbooks[key] = load_scheduled(schedule, _placeholder_variables(key[0]))
        return self._playbooks[key]

    def materialise(self) -> dict[str, dict[str, Any]]:
        """Create the runs that came due for this worker group's schedules; returns the schedules by id."""
        now = utcnow()
        schedules = {}
        for item in self.control.list_schedules(self.opts.worker_group):
            schedules[item["schedule_id"]] = item
            try:
                sched = self._playbook(item).schedule
            except BackupctlError as e:
                self.say(f"[yellow]warning:[/yellow] schedule {item['schedule_id']}: {e.message}")
                continue
            if sched is None:
                continue
            for rid in self.control.materialise(item, sched, now):
                self.say(f"run {rid} is due")
        return schedules

    def poll(self) -> dict[str, Any] | None:
        """Materialise due runs, then take and run the oldest available one. Returns its outcome, or None."""
        schedules = self.materialise()
        for run in self.control.open_runs(self.opts.worker_group):
            if self.stopping:
                return None
            now = time.time()
            state = ct.lease_state(run, now)
            if state in ("held", "final"):
                continue
            sched = schedules.get(run["schedule_id"]) or self.control.get_schedule(run["schedule_id"])
            max_attempts = int((sched or {}).get("max_attempts", ct.DEFAULT_MAX_ATTEMPTS))
            if state == "expired" and int(run.get("attempts", 0)) >= max_attempts:
                if self.control.give_up(run, now, max_attempts):
                    self.say(f"[red]run {run['run_id']} failed[/red]: its lease expired on attempt "
                             f"{run.get('attempts')} of {max_attempts}")
                continue
            lease = self.control.take(run, self.id, self.opts.lease_s, now, max_attempts)
            if lease is None:
                continue
            return self.execute(run, lease, sched)
        return None

    def serve(self) -> AgentSummary:
        """Poll until stopped (SIGTERM/SIGINT), or with ``once`` until nothing is due. Main thread."""
        summary = AgentSummary(self.id, self.opts.worker_group, self.control.region, self.control.name)
        self.say(f"agent {self.id}: worker group {self.opts.worker_group}, control table {self.control.name} "
                 f"({self.control.region}), lease {self.opts.lease_s:g}s, poll every {self.opts.poll_s:g}s"
                 + (", once" if self.opts.once else ""))
        with self.signals():
            while not self.stopping:
                try:
                    outcome = self.poll()
                except (BackupctlError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
                    if self.opts.once:
                        raise
                    # The control table is unreachable for now: keep polling (a held lease expires meanwhile).
                    self.say(f"[yellow]warning:[/yellow] polling failed: {getattr(e, 'message', None) or e}")
                    outcome = None
                if outcome is not None:
                    summary.runs.append(outcome)
                    continue  # something ran: time has passed, poll again at once
                if self.opts.once:
                    summary.stopped_by = "once"
                    break
                deadline = time.monotonic() + self.opts.poll_s
                while not self.stopping and time.monotonic() < deadline:
                    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        if summary.stopped_by is None:
            summary.stopped_by = "signal"
        summary.interrupted = self.interrupted
        self.say(f"agent {self.id}: stopped ({summary.stopped_by}); {len(summary.runs)} run(s) processed")
        return summary

    # -- one run ------------------------------------------------------------------------

    def execute(self, run: dict[str, Any], lease: ct.Lease, schedule: dict[str, Any] | None) -> dict[str, Any]:
        """Run a taken run's playbook under its lease, upload the log, record the outcome (while the lease is ours)."""
        rid = run["run_id"]
        log = self._log = RunLog(self.say, f"{rid}: ")
        verb = f"taken over from {lease.previous_owner}" if lease.previous_owner else "taken"
        log.say(f"run {rid} {verb} by {self.id} (attempt {lease.attempt}, scheduled {run['scheduled_at']})")
        self._lease_lost = False
        keeper = LeaseKeeper(self.control, lease, self.opts.lease_s, self._lease_lost_now)
        keeper.start()
        started = time.monotonic()
        try:
            if schedule is None:
                doc: dict[str, Any] = {"status": "cancelled", "exit_code": EXIT_USAGE,
                                       "error": "the schedule was removed", "activities": []}
            else:
                doc = self._run_playbook(run, lease, schedule, log)
            duration = round(time.monotonic() - started, 3)
            state = _state_of(doc, keeper.lost)
            reason = None
            if state == ct.RELEASED:
                reason = "the agent was interrupted" if doc["status"] == "interrupted" else "the agent is stopping"
                log.say(f"releasing run {rid}: {reason}")
            elif keeper.lost:
                log.say(f"not recording the outcome of run {rid} ({doc['status']}): the lease was lost: {keeper.lost}")
            else:
                log.say(f"run {rid} {state.lower()}" + (f": {doc['error']}" if doc.get("error") else "")
                        + f" in {duration:.2f}s")
            log_key, log_uri = self._upload_log(run, lease, log, schedule)
            recorded = False
            if not keeper.lost:
                outcome = {"exit_code": doc.get("exit_code"), "error": doc.get("error"), "duration_s": duration,
                           "activities": _activities(doc.get("activities") or []), "log_key": log_key,
                           "log_uri": log_uri, "playbook_run_id": doc.get("playbook_run_id"),
                           "drill": doc.get("drill"), "reason": reason}
                recorded = self.control.finish(lease, state, time.time(), outcome)
                if not recorded:
                    self.say(f"[red]could not record run {rid}[/red]: the lease was taken over meanwhile")
        finally:
            keeper.stop()
            self._log = None
        return {"run_id": rid, "attempt": lease.attempt, "state": state if recorded else "LOST",
                "exit_code": doc.get("exit_code"), "error": doc.get("error"), "duration_s": duration,
                "log_uri": log_uri}

    def _run_playbook(self, run: dict[str, Any], lease: ct.Lease, schedule: dict[str, Any],
                      log: RunLog) -> dict[str, Any]:
        from backupctl.pipelines.drill import run_drill
        from backupctl.pipelines.runner import check_runnable, run_pipeline, stop_between_activities

        period = {"run_at": run["scheduled_at"], "period_start": run["period_start"],
                  "period_end": run["period_end"]}
        pb_run_id = playbook_run_id(run["run_id"], parse_time(run["scheduled_at"]), lease.attempt)
        self._in_playbook = True
        try:
            try:
                pb = load_scheduled(schedule, agent_variables(schedule["schedule_id"], period), pb_run_id)
                check_runnable(pb)
                log.say(f"playbook {pb.name} ({pb.path}), run {pb_run_id}")
                with stop_between_activities(lambda: self.stopping or self._lease_lost):
                    if pb.drill is not None:
                        report = run_drill(self.aws, pb, log.say)
                        doc = {"status": report["status"], "exit_code": report["exit_code"],
                               "activities": report["activities"],
                               "error": None if report["passed"] else "; ".join(report.get("problems") or [])[:1000],
                               "drill": {k: report.get(k) for k in ("drill_id", "passed", "rto_s", "rpo_s",
                                                                    "report_uri")}}
                    else:
                        doc = run_pipeline(self.aws, pb, log.say).to_json()
                        first = next((a for a in doc["activities"] if a["status"] in ("failed", "cancelled")
                                      and a["exit_code"]), None)
                        doc["error"] = _failure(first) if first else None
            finally:
                self._in_playbook = False
        except KeyboardInterrupt:
            doc = {"status": "interrupted", "exit_code": EXIT_INTERRUPTED, "error": "interrupted", "activities": []}
        except BackupctlError as e:
            log.say(f"[red]cannot run[/red]: {e.message}")
            doc = {"status": "failed", "exit_code": e.exit_code, "error": e.message, "activities": []}
        doc["playbook_run_id"] = pb_run_id
        return doc

    def _upload_log(self, run: dict[str, Any], lease: ct.Lease, log: RunLog,
                    schedule: dict[str, Any] | None) -> tuple[str | None, str | None]:
        from backupctl.repository import Repository

        key = f"runs/agent/{run['run_id']}/attempt-{lease.attempt}.log"
        try:
            region = str((schedule or {}).get("repo_region") or self.control.region)
            repo = Repository.open(self.aws, region, (schedule or {}).get("repo_uri"), create=True)
            repo.store.put(key, log.text().encode())
            return key, repo.store.url(key)
        except Exception as e:  # noqa: BLE001 - a log that cannot be uploaded does not change the run's outcome
            self.say(f"[yellow]warning:[/yellow] could not upload the log of run {run['run_id']}: {e}")
            return None, None


def _state_of(doc: dict[str, Any], lost: str | None) -> str:
    status = doc["status"]
    if status == "succeeded":
        return ct.SUCCEEDED
    if status == "cancelled":
        return ct.CANCELLED
    if status in ("stopped", "interrupted") and not lost:
        return ct.RELEASED
    return ct.FAILED


def _failure(act: dict[str, Any]) -> str:
    error = str(act.get("error") or "failed")
    prefix = f"activity '{act['name']}'"
    return error if error.startswith(prefix) else f"{prefix}: {error}"


def _activities(acts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": a.get("name"), "type": a.get("type"), "status": a.get("status"), "attempts": a.get("attempts"),
             "duration_s": a.get("duration_s"), "exit_code": a.get("exit_code"),
             "error": (a.get("error") or None) and str(a.get("error"))[:500]} for a in acts]
