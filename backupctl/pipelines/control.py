"""The control table: schedules and their runs, and the leases agents take runs with.

One DynamoDB table (default ``backupctl-control``, PAY_PER_REQUEST, created
on first use) in the repository's region holds two kinds of item:

* **schedule** - ``pk = "SCHEDULE"``, ``sk = <schedule id>``: the playbook
  (its path and its text as validated by ``schedule add``; agents run the
  text), ``--var`` values, the worker group, the schedule, and the cursor:
  runs whose time is after it have not been materialised yet.
* **run** - ``pk = "RUN#<schedule id>"``, ``sk = <scheduled time>``; the run
  id is ``<schedule id>@<YYYYMMDDTHHMMSSZ>``, so each due period is exactly
  one item, created with a conditional put (``attribute_not_exists``) by
  whichever agent (or ``schedule add``, for back-fill) gets there first.
  States: PENDING -> RUNNING -> SUCCEEDED | FAILED, RUNNING -> RELEASED ->
  RUNNING (an agent stopping), PENDING|RELEASED -> CANCELLED (schedule
  removed). ``history`` records every transition.

While a run is not finished it carries ``open_group = <worker group>``, the
key of the sparse index ``open-runs`` (sorted by scheduled time) that agents
query; finishing removes it.

**Leases.** An agent takes a run with one conditional UpdateItem: the item
must be unchanged since the agent read it (``version``) and be PENDING or
RELEASED, or RUNNING with ``lease_expires`` (epoch seconds) in the past and
fewer than ``max_attempts`` attempts - a dead agent's run is taken over. A
take increments ``attempts`` and writes a fresh ``lease_token``; renewals,
the outcome and a release are conditional on that token, so an agent whose
lease was taken over cannot write over its successor. A conditional write
that fails after a retried call is checked against the item (the first
call may have succeeded). Every call goes through ``backupctl.retry``.
Lease times compare the agents' wall clocks: keep them synchronised (NTP).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import botocore.exceptions
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from backupctl.aws import AwsContext
from backupctl.errors import Conflict, InvalidInput, NotFound
from backupctl.model import isoformat
from backupctl.pipelines.schedule import Schedule, due_runs, next_runs, parse_time
from backupctl.retry import RetryPolicy, policy_from_env

DEFAULT_TABLE = "backupctl-control"
OPEN_INDEX = "open-runs"
SCHEDULE_PK = "SCHEDULE"
RUN_PK = "RUN#"

PENDING, RUNNING, SUCCEEDED, FAILED, RELEASED, CANCELLED = (
    "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "RELEASED", "CANCELLED")
OPEN_STATES = (PENDING, RUNNING, RELEASED)
FINAL_STATES = (SUCCEEDED, FAILED, CANCELLED)
DEFAULT_MAX_ATTEMPTS = 3

_ser = TypeSerializer()
_de = TypeDeserializer()


def _plain(v: Any) -> Any:
    """DynamoDB values -> JSON-able Python (Decimal -> int/float)."""
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list | set):
        return [_plain(x) for x in v]
    return v


def _typed(v: Any) -> Any:
    """Python -> a DynamoDB typed value (floats as Decimal; None attributes are dropped by callers)."""
    if isinstance(v, float):
        return _ser.serialize(Decimal(repr(v)))
    if isinstance(v, dict):
        return {"M": {k: _typed(x) for k, x in v.items() if x is not None}}
    if isinstance(v, list | tuple):
        return {"L": [_typed(x) for x in v]}
    return _ser.serialize(v)


def to_item(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: _typed(v) for k, v in doc.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(_de.deserialize(v)) for k, v in item.items()}


def compact_time(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%SZ")


def run_id_for(schedule_id: str, scheduled: datetime) -> str:
    """``nightly@20260105T030000Z``: the schedule and the run's scheduled time (one id per due period)."""
    return f"{schedule_id}@{compact_time(scheduled)}"


def run_key(run_id: str) -> dict[str, Any]:
    sid, sep, when = run_id.partition("@")
    if not sep or not sid or len(when) != 16:
        raise InvalidInput(f"invalid run id '{run_id}': expected SCHEDULE@YYYYMMDDTHHMMSSZ")
    return {"pk": {"S": RUN_PK + sid}, "sk": {"S": when}}


def _code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _ccf(e: BaseException) -> bool:
    return isinstance(e, botocore.exceptions.ClientError) and _code(e) == "ConditionalCheckFailedException"


@dataclass
class Lease:
    """A run held by one agent: conditional writes name its ``token``."""

    run_id: str
    owner: str
    token: str
    attempt: int
    expires: float  # epoch seconds
    previous_state: str
    previous_owner: str | None = None


def _event(now: float, event: str, **detail: Any) -> dict[str, Any]:
    return {"at": isoformat(datetime.fromtimestamp(now, UTC)), "event": event,
            **{k: v for k, v in detail.items() if v is not None}}


class ControlTable:
    """Schedules, runs and leases in one DynamoDB table (see the module docstring)."""

    def __init__(self, aws: AwsContext, region: str, name: str = DEFAULT_TABLE,
                 policy: RetryPolicy | None = None) -> None:
        self.aws = aws
        self.region = region
        self.name = name
        self.policy = policy or policy_from_env()

    @property
    def ddb(self) -> Any:
        return self.aws.client("dynamodb", self.region)

    def _call(self, what: str, fn: Callable[[], Any], policy: RetryPolicy | None = None) -> Any:
        return (policy or self.policy).call(fn, f"{what} (control table {self.name}, {self.region})")

    # -- the table -------------------------------------------------------------------

    def exists(self) -> bool:
        def describe() -> bool:
            try:
                st = self.ddb.describe_table(TableName=self.name)["Table"]["TableStatus"]
            except botocore.exceptions.ClientError as e:
                if _code(e) == "ResourceNotFoundException":
                    return False
                raise
            return bool(st in ("ACTIVE", "UPDATING"))

        return bool(self._call("describing the table", describe))

    def ensure(self) -> ControlTable:
        """Create the table (PAY_PER_REQUEST, with the open-runs index) unless it exists; wait until ACTIVE."""
        if self.exists():
            return self

        def create() -> None:
            try:
                self.ddb.create_table(
                    TableName=self.name,
                    BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"}
                                          for a in ("pk", "sk", "open_group", "scheduled_at")],
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                               {"AttributeName": "sk", "KeyType": "RANGE"}],
                    GlobalSecondaryIndexes=[{
                        "IndexName": OPEN_INDEX,
                        "KeySchema": [{"AttributeName": "open_group", "KeyType": "HASH"},
                                      {"AttributeName": "scheduled_at", "KeyType": "RANGE"}],
                        "Projection": {"ProjectionType": "ALL"},
                    }],
                    Tags=[{"Key": "backupctl:role", "Value": "control-table"}],
                )
            except botocore.exceptions.ClientError as e:
                if _code(e) != "ResourceInUseException":  # another agent is creating it
                    raise

        self._call("creating the table", create)
        self.policy.poll(lambda: True if self.exists() else None,
                         f"waiting for control table {self.name} to become active", interval_s=0.2)
        return self

    def require(self) -> ControlTable:
        if not self.exists():
            raise NotFound(f"control table {self.name} not found in {self.region} (`backupctl schedule add` "
                           "creates it)")
        return self

    def _query(self, **kw: Any) -> Iterator[dict[str, Any]]:
        kw = {"TableName": self.name, **kw}
        while True:
            page = self._call("querying", lambda: self.ddb.query(**kw))
            yield from (from_item(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return
            kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        r = self._call("reading", lambda: self.ddb.get_item(TableName=self.name, Key=key, ConsistentRead=True))
        return from_item(r["Item"]) if "Item" in r else None

    # -- schedules --------------------------------------------------------------------

    def put_schedule(self, doc: dict[str, Any], replace: bool = False) -> dict[str, Any]:
        """Store a schedule. A new one fails with Conflict when the id exists; ``replace`` keeps its cursor."""
        sid = doc["schedule_id"]
        item = {**doc, "pk": SCHEDULE_PK, "sk": sid, "kind": "schedule"}
        if replace:
            old = self.get_schedule(sid)
            if old is not None:
                for k in ("cursor", "created_at", "skipped"):
                    if k in old:
                        item[k] = old[k]

        def put() -> None:
            kw: dict[str, Any] = {"TableName": self.name, "Item": to_item(item)}
            if not replace:
                kw["ConditionExpression"] = "attribute_not_exists(pk)"
            self.ddb.put_item(**kw)

        try:
            self._call(f"storing schedule {sid}", put)
        except botocore.exceptions.ClientError as e:
            if not _ccf(e):
                raise
            current = self.get_schedule(sid)
            if current is None or current.get("playbook_sha256") != doc.get("playbook_sha256") \
                    or current.get("created_at") != doc.get("created_at"):
                raise Conflict(f"schedule '{sid}' exists (remove it first, or add with --replace)") from None
        return item

    def get_schedule(self, schedule_id: str) -> dict[str, Any] | None:
        return self._get({"pk": {"S": SCHEDULE_PK}, "sk": {"S": schedule_id}})

    def list_schedules(self, worker_group: str | None = None) -> list[dict[str, Any]]:
        kw: dict[str, Any] = {"KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": {
            ":pk": {"S": SCHEDULE_PK}}, "ConsistentRead": True}
        if worker_group is not None:
            kw["FilterExpression"] = "worker_group = :wg"
            kw["ExpressionAttributeValues"][":wg"] = {"S": worker_group}
        return list(self._query(**kw))

    def remove_schedule(self, schedule_id: str, now: float | None = None) -> dict[str, Any]:
        """Delete a schedule; its runs not started (PENDING, RELEASED) become CANCELLED. A RUNNING run finishes."""
        now = time.time() if now is None else now

        def delete() -> dict[str, Any]:
            r = self.ddb.delete_item(TableName=self.name, Key={"pk": {"S": SCHEDULE_PK}, "sk": {"S": schedule_id}},
                                     ReturnValues="ALL_OLD")
            return dict(r.get("Attributes") or {})

        old = self._call(f"removing schedule {schedule_id}", delete)
        if not old:
            raise NotFound(f"schedule '{schedule_id}' not found in control table {self.name} ({self.region})")
        cancelled = []
        for run in self.list_runs(schedule_id):
            if run.get("state") in (PENDING, RELEASED) and self.cancel(run, now, "the schedule was removed"):
                cancelled.append(run["run_id"])
        return {**from_item(old), "cancelled_runs": cancelled}

    # -- runs -------------------------------------------------------------------------

    def create_run(self, schedule: dict[str, Any], period: dict[str, str], now: float,
                   backfill: bool = False) -> bool:
        """Create the run of one due period unless it exists (conditional put). True when this call created it."""
        scheduled = parse_time(period["run_at"])
        rid = run_id_for(schedule["schedule_id"], scheduled)
        doc = {"pk": RUN_PK + schedule["schedule_id"], "sk": compact_time(scheduled), "kind": "run",
               "run_id": rid, "schedule_id": schedule["schedule_id"], "worker_group": schedule["worker_group"],
               "open_group": schedule["worker_group"], "scheduled_at": isoformat(scheduled),
               "period_start": isoformat(parse_time(period["period_start"])),
               "period_end": isoformat(parse_time(period["period_end"])), "state": PENDING,
               "attempts": 0, "version": 0, "backfill": backfill,
               "created_at": isoformat(datetime.fromtimestamp(now, UTC)),
               "history": [_event(now, "created", detail="back-fill" if backfill else None)]}

        def put() -> bool:
            try:
                self.ddb.put_item(TableName=self.name, Item=to_item(doc), ConditionExpression="attribute_not_exists(pk)")
                return True
            except botocore.exceptions.ClientError as e:
                if _ccf(e):
                    return False
                raise

        return bool(self._call(f"creating run {rid}", put))

    def materialise(self, schedule: dict[str, Any], sched: Schedule, now_dt: datetime) -> list[str]:
        """Create the runs that came due since the schedule's cursor (``due_runs``) and advance the cursor.

        Safe to call from many agents at once: each run is created once, and
        the cursor moves only from the value this call read.
        """
        cursor = parse_time(schedule["cursor"])
        if now_dt <= cursor:
            return []
        due = due_runs(sched, cursor, now_dt)
        now = now_dt.timestamp()
        created = [run_id_for(schedule["schedule_id"], parse_time(p["run_at"]))
                   for p in due["runs"] if self.create_run(schedule, p, now, backfill=p is not due["runs"][-1])]
        nxt = next_runs(sched, now_dt, 1)

        def advance() -> bool:
            values: dict[str, Any] = {":old": {"S": schedule["cursor"]}, ":new": {"S": isoformat(now_dt)},
                                      ":skip": {"N": str(int(due["skipped"]))}, ":zero": {"N": "0"}}
            expr = "SET #c = :new, skipped = if_not_exists(skipped, :zero) + :skip"
            if nxt:
                expr += ", next_due = :next"
                values[":next"] = {"S": isoformat(parse_time(nxt[0]["run_at"]))}
            else:
                expr += " REMOVE next_due"
            try:
                self.ddb.update_item(TableName=self.name, Key={"pk": {"S": SCHEDULE_PK},
                                                               "sk": {"S": schedule["schedule_id"]}},
                                     UpdateExpression=expr, ConditionExpression="#c = :old",
                                     ExpressionAttributeNames={"#c": "cursor"}, ExpressionAttributeValues=values)
                return True
            except botocore.exceptions.ClientError as e:
                if _ccf(e):  # another agent advanced it (or the schedule was removed): its runs exist too
                    return False
                raise

        self._call(f"advancing schedule {schedule['schedule_id']}", advance)
        return created

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        return self._get(run_key(run_id))

    def list_runs(self, schedule_id: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Runs, newest scheduled first (of one schedule, or of all)."""
        if schedule_id is not None:
            out = []
            for r in self._query(KeyConditionExpression="pk = :pk", ScanIndexForward=False,
                                 ExpressionAttributeValues={":pk": {"S": RUN_PK + schedule_id}}):
                out.append(r)
                if limit is not None and len(out) >= limit:
                    break
            return out
        kw: dict[str, Any] = {"TableName": self.name, "FilterExpression": "begins_with(pk, :p)",
                              "ExpressionAttributeValues": {":p": {"S": RUN_PK}}}
        runs: list[dict[str, Any]] = []
        while True:
            page = self._call("listing runs", lambda: self.ddb.scan(**kw))
            runs += [from_item(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        runs.sort(key=lambda r: (r.get("scheduled_at", ""), r.get("run_id", "")), reverse=True)
        return runs[:limit] if limit is not None else runs

    def open_runs(self, worker_group: str) -> list[dict[str, Any]]:
        """Runs of ``worker_group`` not finished (PENDING, RUNNING, RELEASED), oldest scheduled first.

        Read from the sparse index (eventually consistent): a take re-checks the item itself.
        """
        return list(self._query(IndexName=OPEN_INDEX, KeyConditionExpression="open_group = :g",
                                ExpressionAttributeValues={":g": {"S": worker_group}}))

    # -- leases -----------------------------------------------------------------------

    def _update(self, what: str, key: dict[str, Any], confirm: Callable[[dict[str, Any]], bool],
                policy: RetryPolicy | None = None, **kw: Any) -> bool:
        """One conditional UpdateItem; False when the condition failed (unless ``confirm`` shows the write
        landed already: a retried call whose first attempt succeeded)."""
        def call() -> None:
            self.ddb.update_item(TableName=self.name, Key=key, **kw)

        try:
            self._call(what, call, policy)
            return True
        except botocore.exceptions.ClientError as e:
            if not _ccf(e):
                raise
        item = self._get(key)
        return item is not None and confirm(item)

    def take(self, run: dict[str, Any], owner: str, lease_s: float, now: float,
             max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> Lease | None:
        """Take ``run`` (as read) for ``owner``: None when another agent has it or it changed since it was read."""
        token = secrets.token_hex(8)
        prev_state, prev_owner = str(run.get("state")), run.get("lease_owner")
        attempt = int(run.get("attempts", 0)) + 1
        taken_over = prev_state == RUNNING
        lease = Lease(run["run_id"], owner, token, attempt, now + lease_s, prev_state,
                      str(prev_owner) if taken_over and prev_owner else None)
        event = _event(now, "taken_over" if taken_over else "taken", owner=owner, attempt=attempt,
                       detail=f"lease of {prev_owner} expired" if taken_over else None)
        ok = self._update(
            f"taking run {run['run_id']}", run_key(run["run_id"]), lambda i: i.get("lease_token") == token,
            UpdateExpression="SET #s = :running, lease_owner = :me, lease_token = :tok, lease_expires = :exp, "
                             "attempts = attempts + :one, version = version + :one, attempt_started_at = :at, "
                             "started_at = if_not_exists(started_at, :at), last_owner = :me, "
                             "history = list_append(history, :h)",
            ConditionExpression="version = :v AND (#s IN (:pending, :released) OR "
                                "(#s = :running AND lease_expires < :now AND attempts < :max))",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={
                ":running": {"S": RUNNING}, ":pending": {"S": PENDING}, ":released": {"S": RELEASED},
                ":me": {"S": owner}, ":tok": {"S": token}, ":exp": _typed(now + lease_s), ":one": {"N": "1"},
                ":at": {"S": event["at"]}, ":h": _typed([event]), ":v": {"N": str(int(run.get("version", 0)))},
                ":now": _typed(now), ":max": {"N": str(int(max_attempts))}},
        )
        return lease if ok else None

    def renew(self, lease: Lease, lease_s: float, now: float, policy: RetryPolicy | None = None) -> bool:
        """Extend the lease to ``now + lease_s``; False when it is no longer ours (taken over, finished)."""
        expires = now + lease_s
        ok = self._update(
            f"renewing the lease of run {lease.run_id}", run_key(lease.run_id),
            lambda i: i.get("lease_token") == lease.token and i.get("state") == RUNNING,
            policy=policy,
            UpdateExpression="SET lease_expires = :exp",
            ConditionExpression="lease_token = :tok AND #s = :running",
            ExpressionAttributeNames={"#s": "state"},
            ExpressionAttributeValues={":exp": _typed(expires), ":tok": {"S": lease.token},
                                       ":running": {"S": RUNNING}},
        )
        if ok:
            lease.expires = expires
        return ok

    def finish(self, lease: Lease, state: str, now: float, outcome: dict[str, Any] | None = None) -> bool:
        """Record the outcome (SUCCEEDED, FAILED) or release the run (RELEASED) - only while the lease is ours."""
        if state not in (SUCCEEDED, FAILED, RELEASED, CANCELLED):
            raise ValueError(f"cannot finish a run as {state}")
        fields = {k: v for k, v in (outcome or {}).items() if v is not None}
        event = _event(now, state.lower(), owner=lease.owner, attempt=lease.attempt,
                       detail=fields.get("error") or fields.get("reason"))
        names = {"#s": "state"}
        values: dict[str, Any] = {":state": {"S": state}, ":tok": {"S": lease.token}, ":running": {"S": RUNNING},
                                  ":one": {"N": "1"}, ":h": _typed([event]), ":at": {"S": event["at"]}}
        sets = ["#s = :state", "version = version + :one", "history = list_append(history, :h)", "updated_at = :at"]
        for i, (k, v) in enumerate(sorted(fields.items())):
            names[f"#f{i}"] = k
            values[f":f{i}"] = _typed(v)
            sets.append(f"#f{i} = :f{i}")
        removes = ["lease_owner", "lease_expires"]
        if state == RELEASED:
            sets.append("released_at = :at")
        else:
            sets.append("finished_at = :at")
            removes.append("open_group")
        return self._update(
            f"recording run {lease.run_id} as {state}", run_key(lease.run_id),
            lambda i: i.get("lease_token") == lease.token and i.get("state") == state,
            UpdateExpression="SET " + ", ".join(sets) + " REMOVE " + ", ".join(removes),
            ConditionExpression="lease_token = :tok AND #s = :running",
            ExpressionAttributeNames=names, ExpressionAttributeValues=values,
        )

    def give_up(self, run: dict[str, Any], now: float, max_attempts: int) -> bool:
        """Fail a RUNNING run whose lease expired after ``max_attempts`` attempts (its agents kept dying)."""
        error = (f"abandoned: the lease expired on attempt {run.get('attempts')} of {max_attempts} "
                 f"(last owner {run.get('lease_owner')} died or lost contact)")
        event = _event(now, "failed", owner=run.get("lease_owner"), attempt=run.get("attempts"), detail=error)
        return self._update(
            f"failing abandoned run {run['run_id']}", run_key(run["run_id"]),
            lambda i: i.get("state") == FAILED and i.get("error") == error,
            UpdateExpression="SET #s = :failed, #e = :err, exit_code = :code, version = version + :one, "
                             "finished_at = :at, updated_at = :at, history = list_append(history, :h) "
                             "REMOVE lease_owner, lease_expires, open_group",
            ConditionExpression="version = :v AND #s = :running AND lease_expires < :now AND attempts >= :max",
            ExpressionAttributeNames={"#s": "state", "#e": "error"},
            ExpressionAttributeValues={":failed": {"S": FAILED}, ":err": {"S": error}, ":code": {"N": "7"},
                                       ":one": {"N": "1"}, ":at": {"S": event["at"]}, ":h": _typed([event]),
                                       ":v": {"N": str(int(run.get("version", 0)))}, ":running": {"S": RUNNING},
                                       ":now": _typed(now), ":max": {"N": str(int(max_attempts))}},
        )

    def cancel(self, run: dict[str, Any], now: float, reason: str) -> bool:
        """Cancel a run that is not running (PENDING, RELEASED)."""
        event = _event(now, "cancelled", detail=reason)
        return self._update(
            f"cancelling run {run['run_id']}", run_key(run["run_id"]),
            lambda i: i.get("state") == CANCELLED and i.get("error") == reason,
            UpdateExpression="SET #s = :cancelled, #e = :why, version = version + :one, finished_at = :at, "
                             "updated_at = :at, history = list_append(history, :h) REMOVE open_group",
            ConditionExpression="#s IN (:pending, :released)",
            ExpressionAttributeNames={"#s": "state", "#e": "error"},
            ExpressionAttributeValues={":cancelled": {"S": CANCELLED}, ":why": {"S": reason}, ":one": {"N": "1"},
                                       ":at": {"S": event["at"]}, ":h": _typed([event]),
                                       ":pending": {"S": PENDING}, ":released": {"S": RELEASED}},
        )


def lease_state(run: dict[str, Any], now: float) -> str:
    """What an agent may do with a run it read: ``take``, ``held`` (a live lease), ``expired`` or ``final``."""
    state = run.get("state")
    if state in (PENDING, RELEASED):
        return "take"
    if state == RUNNING:
        return "expired" if float(run.get("lease_expires", 0)) < now else "held"
    return "final"
