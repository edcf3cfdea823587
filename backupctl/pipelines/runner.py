"""The DAG executor: run a playbook's activities in dependency order, with retries, timeouts and clean-up.

Sequential and explicit:

* Activities run in topological order (declaration order among the ready ones).
* Before an activity's first attempt, the preconditions of the activity and of
  the nodes it reads or writes are polled (``preconditions.wait_for``); one not
  met fails the activity (exit 3) without retries.
* Each attempt runs under the activity's ``timeout`` (SIGALRM in the main
  thread; ``ShellCommand`` passes it to the child process). A failed attempt
  is retried up to ``retries`` times, the waits going through
  ``RetryPolicy.poll`` (backoff from ``retry_delay``). Bad input (exit 2), not
  found (3), conflicts (4) and access errors (6) are not retried: they do not
  heal by waiting.
* After a failure (of an activity with ``on_fail: fail``) or Ctrl-C/SIGTERM,
  only ``run_on: always`` activities still run (clean-up); the others are
  ``skipped``. An ``on_fail: continue`` failure is recorded and its
  dependents still run.
* A ``gate`` (runbooks: the question before a destructive step) runs after an
  activity's preconditions and before its first attempt, outside its
  timeout. Raising ``Declined`` there marks the activity ``declined``
  (nothing of it ran; exit 4), and the run goes on as after a failure.
* Under ``stop_between_activities`` (the agent) SIGTERM is left to the caller;
  once its stop signal is set, the running activity finishes, the remaining
  ones are ``skipped`` except ``run_on: always``, and the status is
  ``stopped`` (exit 130) unless nothing but clean-up was left.
* The result names every activity's status, attempts, duration, outputs and
  error; the pipeline's exit code is that of the first failure (130 when
  interrupted).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from backupctl.aws import AwsContext
from backupctl.errors import (
    EXIT_AUTH,
    EXIT_CONFLICT,
    EXIT_DATA_PATH,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    BackupctlError,
    InvalidInput,
)
from backupctl.model import isoformat, utcnow
from backupctl.pipelines import activities as acts
from backupctl.pipelines.model import Activity, Playbook
from backupctl.pipelines.preconditions import wait_for
from backupctl.retry import RetryPolicy

Runner = Callable[[acts.RunContext, Activity], dict[str, Any]]
NOT_RETRIED = frozenset({EXIT_USAGE, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_AUTH})
NODE_KEYS = ("input", "output", "node", "against", "source")
_STOP: ContextVar[Callable[[], bool] | None] = ContextVar("backupctl_runner_stop", default=None)


@contextmanager
def stop_between_activities(stopping: Callable[[], bool]) -> Iterator[None]:
    """Run pipelines (and drills) in this context so that ``stopping()`` ends them between activities.

    While active, ``run_pipeline`` does not map SIGTERM to KeyboardInterrupt
    (the caller owns the signal): once ``stopping()`` is true, the running
    activity finishes, the remaining ones are skipped except ``run_on:
    always`` (clean-up), and the result's status is ``stopped``.
    """
    token = _STOP.set(stopping)
    try:
        yield
    finally:
        _STOP.reset(token)


class ActivityTimedOut(BackupctlError):
    """An activity attempt ran longer than its ``timeout``."""

    exit_code = EXIT_DATA_PATH


class Declined(BackupctlError):
    """A person declined a runbook step at its confirmation (or could not be asked): the step did not run."""

    exit_code = EXIT_CONFLICT


class PipelineFailed(BackupctlError):
    """The pipeline (or drill) failed; carries the exit code of its first failure."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ActivityResult:
    name: str
    type: str
    status: str = "pending"  # succeeded | failed | skipped | cancelled | declined
    attempts: int = 0
    duration_s: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    exit_code: int = EXIT_OK
    preconditions: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "status": self.status, "attempts": self.attempts,
                "duration_s": round(self.duration_s, 3), "outputs": self.outputs, "error": self.error,
                "exit_code": self.exit_code, "preconditions": self.preconditions}


@dataclass
class PipelineResult:
    playbook: str
    name: str
    run_id: str
    started_at: str
    status: str = "running"  # succeeded | failed | interrupted | stopped | declined
    exit_code: int = EXIT_OK
    duration_s: float = 0.0
    activities: list[ActivityResult] = field(default_factory=list)

    def get(self, name: str) -> ActivityResult | None:
        return next((a for a in self.activities if a.name == name), None)

    def first_failure(self) -> ActivityResult | None:
        return next((a for a in self.activities if a.status in ("failed", "cancelled", "declined") and a.exit_code),
                    None)

    def to_json(self) -> dict[str, Any]:
        return {"playbook": self.playbook, "name": self.name, "run_id": self.run_id, "status": self.status,
                "exit_code": self.exit_code, "started_at": self.started_at, "duration_s": round(self.duration_s, 3),
                "activities": [a.to_json() for a in self.activities]}


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Raise ActivityTimedOut in the main thread after ``seconds`` (no limit off the main thread or for None)."""
    if not seconds or not _in_main_thread():
        yield
        return

    def fire(_signum: int, _frame: Any) -> None:
        raise ActivityTimedOut(f"{what} timed out after {seconds:g}s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt like Ctrl-C does, so clean-up runs for both (main thread only)."""
    if not _in_main_thread():
        yield
        return

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _as_error(e: Exception) -> BackupctlError:
    if isinstance(e, BackupctlError):
        return e
    return acts.ActivityFailed(f"{type(e).__name__}: {e}", 1)


def check_runnable(playbook: Playbook, runbook: bool = False) -> None:
    """Refuse, before anything runs, a playbook with activity types not available yet.

    A runbook (it asks a person before destructive steps) runs only through
    ``backupctl runbook run`` (``runbook=True``): never as a pipeline, nor on a schedule.
    """
    if playbook.kind == "runbook" and not runbook:
        raise InvalidInput(f"{playbook.path} is a runbook: run it with `backupctl runbook run {playbook.path}`")
    bad = playbook.unavailable()
    if bad:
        a = playbook.activities[bad[0]]
        raise InvalidInput(f"{playbook.path}:{playbook.line('activities', a.name, 'type')} activities.{a.name}.type: "
                           f"activity type {a.type} is not available yet (parsed and validated only)")


def run_pipeline(
    aws: AwsContext,
    playbook: Playbook,
    say: Callable[[str], None] | None = None,
    progress_factory: Callable[[str, int | None], Any] | None = None,
    runners: dict[str, Runner] | None = None,
    ctx: acts.RunContext | None = None,
    gate: Callable[[Activity], None] | None = None,
) -> PipelineResult:
    """Run every activity of ``playbook``; never raises for an activity failure (see the result's status).

    ``runners`` adds or replaces activity implementations by type (the drill's
    steps, test hooks). KeyboardInterrupt (Ctrl-C, SIGTERM) cancels the
    running activity, then the ``run_on: always`` ones run; the result's
    status is then ``interrupted`` (exit 130). Under ``stop_between_activities``
    a stop ends the run between activities with status ``stopped``. ``gate``
    is called before an activity's first attempt (after its preconditions);
    a ``Declined`` from it makes the run's status ``declined`` (exit 4).
    """
    say = say or (lambda _m: None)
    if runners is None:
        check_runnable(playbook)
    table: dict[str, Runner] = {**acts.RUNNERS, "ShellCommand": lambda c, a: acts.shell_command(c, a, a.timeout_s),
                                "AwsCli": lambda c, a: acts.aws_cli(c, a, a.timeout_s)}
    table.update(runners or {})
    ctx = ctx or acts.RunContext(aws=aws, playbook=playbook, say=say, progress_factory=progress_factory)
    started = time.monotonic()
    result = PipelineResult(playbook.path, playbook.name, playbook.run_id, isoformat(utcnow()))
    failed = interrupted = stopped = declined = False
    stopping = _STOP.get()
    signals: AbstractContextManager[None] = terminate_as_interrupt() if stopping is None else nullcontext()
    with signals:
        for name in playbook.order():
            act = playbook.activities[name]
            res = ActivityResult(name, act.type)
            result.activities.append(res)
            if act.run_on != "always":
                if interrupted or failed or declined:
                    res.status, res.error = "skipped", ("interrupted" if interrupted else "an earlier activity failed"
                                                        if failed else "an earlier step was declined")
                    continue
                if stopping is not None and stopping():
                    res.status, res.error = "skipped", "stopped before it started (the agent is shutting down)"
                    stopped = True
                    continue
                blocked = [d for d in act.depends_on if (r := result.get(d)) is not None and r.status != "succeeded"
                           and not (r.status == "failed" and playbook.activities[d].on_fail == "continue")]
                if blocked:
                    res.status, res.error = "skipped", f"'{blocked[0]}' did not succeed"
                    continue
            say(f"[bold]{name}[/bold] ({act.type})")
            t0 = time.monotonic()
            try:
                _run_one(aws, playbook, act, ctx, table[act.type] if act.type in table else _unavailable, res, say,
                         gate)
            except KeyboardInterrupt:
                res.status, res.error, res.exit_code = "cancelled", "interrupted", EXIT_INTERRUPTED
                interrupted = True
                say(f"{name}: interrupted; running clean-up activities")
            res.duration_s = time.monotonic() - t0
            if res.status == "succeeded":
                ctx.outputs[name] = res.outputs
            elif res.status == "failed" and act.on_fail == "fail":
                failed = True
            elif res.status == "declined":
                declined = True
    result.duration_s = time.monotonic() - started
    first = result.first_failure()
    if interrupted:
        result.status, result.exit_code = "interrupted", EXIT_INTERRUPTED
    elif (failed or declined) and first is not None:
        result.status, result.exit_code = ("declined" if first.status == "declined" else "failed"), first.exit_code or 1
    elif stopped:
        result.status, result.exit_code = "stopped", EXIT_INTERRUPTED
    else:
        result.status = "succeeded"
    return result


def _unavailable(ctx: acts.RunContext, act: Activity) -> dict[str, Any]:
    raise InvalidInput(f"activity '{act.name}': type {act.type} is not available yet")


def _run_one(aws: AwsContext, playbook: Playbook, act: Activity, ctx: acts.RunContext, fn: Runner,
             res: ActivityResult, say: Callable[[str], None], gate: Callable[[Activity], None] | None = None) -> None:
    # Preconditions: the activity's own, then those of every node it names.
    names = list(act.preconditions)
    for key in NODE_KEYS:
        node = playbook.nodes.get(str(act.get(key))) if act.get(key) is not None else None
        if node is not None:
            names += [p for p in node.preconditions if p not in names]
    try:
        for p in names:
            res.preconditions.append(wait_for(aws, playbook.preconditions[p], playbook.nodes, ctx.env(), say))
    except BackupctlError as e:
        res.status, res.error, res.exit_code = "failed", e.message, e.exit_code
        say(f"[red]{act.name} failed[/red]: {e.message}")
        return
    if gate is not None:
        try:
            gate(act)
        except Declined as e:
            res.status, res.error, res.exit_code = "declined", e.message, e.exit_code
            say(f"[yellow]{act.name} declined[/yellow]: {e.message}")
            return
        except BackupctlError as e:
            res.status, res.error, res.exit_code = "failed", e.message, e.exit_code
            say(f"[red]{act.name} failed[/red]: {e.message}")
            return

    def attempt() -> tuple[str, Any] | None:
        res.attempts += 1
        try:
            if act.type in ("ShellCommand", "AwsCli"):  # the child process gets the timeout itself
                return "ok", fn(ctx, act)
            with time_limit(act.timeout_s, f"activity '{act.name}'"):
                return "ok", fn(ctx, act)
        except Exception as e:  # noqa: BLE001 - every failure is recorded, retried or reported
            err = _as_error(e)
        last = res.attempts > act.retries or (err.exit_code in NOT_RETRIED and not isinstance(err, acts.ActivityFailed))
        say(f"[red]{act.name} failed[/red] (attempt {res.attempts}/{act.retries + 1}): {err.message}"
            + ("" if last else f"; retrying in ~{act.retry_delay_s:g}s"))
        return ("error", err) if last else None

    policy = RetryPolicy(max_attempts=1, deadline_s=10.0 ** 9)
    kind, value = policy.poll(attempt, f"activity '{act.name}'", interval_s=act.retry_delay_s,
                              max_interval_s=act.retry_delay_s * 8)
    if kind == "ok":
        res.status, res.outputs = "succeeded", dict(value or {})
    else:
        res.status = "declined" if isinstance(value, Declined) else "failed"
        res.error, res.exit_code = value.message, value.exit_code or 1
