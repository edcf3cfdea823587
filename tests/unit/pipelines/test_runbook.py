"""Restore runbooks: choosing the snapshot by --at, the confirmation logic, validation, the gate in the runner.

In process; the repository and DynamoDB are moto's mock_aws.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

from backupctl.aws import AwsContext
from backupctl.errors import InvalidInput, SnapshotNotFound
from backupctl.model import Manifest, isoformat
from backupctl.pipelines.model import PlaybookInvalid, json_schema, load_playbook, parse_playbook
from backupctl.pipelines.runbook import (
    Confirmer,
    Selection,
    choose_at_time,
    classify,
    parse_at,
    plan_runbook,
    run_runbook,
    select_snapshot,
)
from backupctl.pipelines.runner import Declined, check_runnable, run_pipeline
from backupctl.repository import Repository

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 11, 27, 1, 0, 0, tzinfo=UTC)
ORDERS = "mysql.us-east-1.shop.orders"
SOURCE = {"kind": "mysql", "region": "us-east-1", "host": "db-a", "port": 3306, "database": "shop",
          "table": "orders"}


def manifest_doc(created: datetime, sk: str = ORDERS, mode: str = "full", parent: str | None = None,
                 rows: int = 10) -> dict[str, Any]:
    sid = created.strftime("%Y%m%dT%H%M%SZ") + "-" + ("abcdef" if mode == "full" else "fedcba")
    doc: dict[str, Any] = {
        "format_version": "1.0", "id": sid, "source": SOURCE, "source_key": sk, "mode": mode,
        "parent_id": parent, "created_at": isoformat(created), "completed_at": isoformat(created + timedelta(seconds=3)),
        "engine": "local", "parts": [], "totals": {"parts": 0, "rows": 0, "bytes": 0},
        "content_digest": {"algorithm": "multiset-sha256-v1", "value": "0" * 64}}
    if mode == "incremental":
        doc["table_digest"] = {"rows": rows, "value": "1" * 64}
    return doc


def manifests(*offsets_min: int) -> list[Manifest]:
    return [Manifest.from_dict(manifest_doc(T0 + timedelta(minutes=m))) for m in offsets_min]


# -- --at -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("20261127T013000Z-1a2b3c", "20261127T013000Z-1a2b3c"),
    ("2026-11-27T01:30:00Z", datetime(2026, 11, 27, 1, 30, tzinfo=UTC)),
    ("2026-11-27T03:30:00+02:00", datetime(2026, 11, 27, 1, 30, tzinfo=UTC)),
    ("2026-11-27 01:30", datetime(2026, 11, 27, 1, 30, tzinfo=UTC)),  # no offset: UTC
    ("2026-11-27T01:30:00.250000Z", datetime(2026, 11, 27, 1, 30, 0, 250000, tzinfo=UTC)),
    ("2026-11-27", datetime(2026, 11, 27, tzinfo=UTC)),
])
def test_parse_at(text: str, expected: Any) -> None:
    assert parse_at(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "2h", "", "2026-13-01T00:00:00Z", "20261127T013000Z-XYZ"])
def test_parse_at_refuses_what_is_neither_a_time_nor_an_id(text: str) -> None:
    with pytest.raises(InvalidInput, match="expected a time") as e:
        parse_at(text)
    assert e.value.exit_code == 2


def test_at_time_takes_the_newest_snapshot_taken_at_or_before_it() -> None:
    ms = manifests(30, 0, 60)  # any order in
    pick = lambda when: choose_at_time(ms, when, "orders").created_at  # noqa: E731
    assert pick(T0 + timedelta(minutes=45)) == isoformat(T0 + timedelta(minutes=30))  # between two
    assert pick(T0 + timedelta(minutes=30)) == isoformat(T0 + timedelta(minutes=30))  # exactly at one: inclusive
    assert pick(T0 + timedelta(minutes=29, seconds=59)) == isoformat(T0)
    assert pick(T0 + timedelta(days=3)) == isoformat(T0 + timedelta(minutes=60))  # after the newest
    assert pick(None) == isoformat(T0 + timedelta(minutes=60))  # no --at: the newest


def test_at_time_before_the_first_snapshot_is_a_clear_error() -> None:
    with pytest.raises(SnapshotNotFound) as e:
        choose_at_time(manifests(0, 30), T0 - timedelta(seconds=1), "MySQLTable orders (us-east-1)")
    assert e.value.exit_code == 3
    assert str(e.value) == ("no snapshot of MySQLTable orders (us-east-1) was taken at or before "
                            "2026-11-27T00:59:59.000000Z: the oldest, 20261127T010000Z-abcdef, was taken at "
                            "2026-11-27T01:00:00.000000Z")
    with pytest.raises(SnapshotNotFound, match="no snapshot of orders in the repository"):
        choose_at_time([], None, "orders")


@pytest.fixture
def repo() -> Iterator[Repository]:
    with mock_aws():
        yield Repository.open(AwsContext(), "us-west-2", "s3://runbook-unit-repo", create=True)


def put(repo: Repository, doc: dict[str, Any]) -> str:
    repo.store.put_json(repo.snapshot_prefix(doc["source_key"], doc["id"]) + "manifest.json", doc)
    return str(doc["id"])


RUNBOOK = """\
kind: runbook
name: rb
nodes:
  orders: {type: MySQLTable, uri: "mysql://root@db-a:3306/shop", table: orders, region: us-east-1}
  repo: {type: S3Repository, region: us-west-2, uri: "s3://runbook-unit-repo"}
  target: {type: DynamoDBTable, region: us-west-2, table: restored}
  scratch: {type: DynamoDBTable, region: us-west-2, table: scratch-copy, scratch: true}
preconditions:
  snap: {type: SnapshotExists, node: repo, source: orders, timeout: 2s}
runbook: {source: orders, repository: repo}
activities:
"""


def test_selecting_an_increment_takes_its_chain_and_table_digest(repo: Repository) -> None:
    full = put(repo, manifest_doc(T0))
    inc1 = put(repo, manifest_doc(T0 + timedelta(hours=1), mode="incremental", parent=full, rows=12))
    inc2 = put(repo, manifest_doc(T0 + timedelta(hours=2), mode="incremental", parent=inc1, rows=13))
    put(repo, manifest_doc(T0 + timedelta(hours=1, minutes=30), sk="mysql.us-east-1.shop.other"))
    pb = parse_playbook(RUNBOOK + "  x: {type: ShellCommand, command: 'true'}\n", "rb.yaml")
    src = pb.nodes["orders"]
    sel = select_snapshot(repo, src, T0 + timedelta(hours=1, minutes=59))  # the other table's newer one is ignored
    assert (sel.snapshot_id, sel.chain, sel.rows, sel.digest) == (inc1, [full, inc1], 12, "1" * 64)
    assert sel.chosen_by == "time" and sel.at == "2026-11-27T02:59:00.000000Z" and sel.mode == "incremental"
    latest = select_snapshot(repo, src, None)
    assert (latest.snapshot_id, latest.chain, latest.chosen_by) == (inc2, [full, inc1, inc2], "latest")
    by_id = select_snapshot(repo, src, full)
    assert (by_id.snapshot_id, by_id.chain, by_id.rows, by_id.chosen_by) == (full, [full], 0, "id")


def test_at_an_id_of_another_table_or_an_unknown_id_is_refused(repo: Repository) -> None:
    other = put(repo, manifest_doc(T0, sk="mysql.us-east-1.shop.other"))
    pb = parse_playbook(RUNBOOK + "  x: {type: ShellCommand, command: 'true'}\n", "rb.yaml")
    with pytest.raises(InvalidInput) as e:
        select_snapshot(repo, pb.nodes["orders"], other)
    assert e.value.exit_code == 2
    assert f"snapshot {other} is a snapshot of mysql.us-east-1.shop.other, not of the runbook's source" in str(e.value)
    with pytest.raises(SnapshotNotFound):
        select_snapshot(repo, pb.nodes["orders"], "20261127T010000Z-000000")


# -- confirmations ----------------------------------------------------------------------------


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("typed", "ok", "answer"), [
    ("y\n", True, "y"), ("YES\n", True, "YES"), (" yes \n", True, "yes"),
    ("n\n", False, "n"), ("\n", False, ""), ("sure\n", False, "sure"), ("", False, "(end of input)"),
])
def test_a_person_answers_on_the_terminal(typed: str, ok: bool, answer: str) -> None:
    shown: list[str] = []
    c = Confirmer(False, Tty(typed), shown.append)
    assert c.can_ask() and c.ask("restore", "restore: replaces t. Go ahead?") is ok
    assert shown == ["restore: replaces t. Go ahead? [y/N] "]
    assert c.answers[0]["answer"] == answer and c.answers[0]["confirmed"] is ok


def test_yes_answers_in_advance_without_reading_stdin() -> None:
    stdin = io.StringIO("n\n")  # not a terminal, and would say no
    c = Confirmer(True, stdin, lambda q: pytest.fail("asked"))
    assert c.can_ask() and c.ask("drop", "drop?") is True
    assert c.answers[0]["answer"] == "--yes" and stdin.tell() == 0


def test_without_a_terminal_nobody_can_answer() -> None:
    c = Confirmer(False, io.StringIO("y\n"), lambda q: pytest.fail("asked"))
    assert not c.interactive() and not c.can_ask()
    with pytest.raises(Declined, match="stdin is not a terminal") as e:
        c.ask("restore", "restore?")
    assert e.value.exit_code == 4 and c.answers[0]["answer"] == "not asked: stdin is not a terminal"


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("kind: runbook\nname: r\nactivities:\n  a: {type: ShellCommand, command: x}\n",
     "r.yaml:1 (top): a playbook of kind runbook needs a 'runbook:' block"),
    ("name: r\nnodes:\n  repo: {type: S3Repository, region: us-west-2}\nrunbook: {source: repo, repository: repo}\n",
     "r.yaml:4 runbook: a runbook: block needs kind: runbook"),
    ("name: r\nnodes:\n  repo: {type: S3Repository, region: us-west-2}\n"
     "activities:\n  v: {type: Verify, input: repo, snapshot: selected}\n",
     "r.yaml:5 activities.v.snapshot: snapshot: selected is the snapshot `runbook run` chooses"),
    ("name: r\nactivities:\n  a: {type: ShellCommand, command: x, confirm: true}\n",
     "r.yaml:3 activities.a.confirm: confirm applies to runbooks"),
    (RUNBOOK + "  a: {type: ShellCommand, command: x, confirm: please}\n",
     "rb.yaml:12 activities.a.confirm: must be true or false"),
    (RUNBOOK + "  r: {type: Restore, input: repo, output: target, snapshot: selected, options: {yes: true}}\n",
     "rb.yaml:12 activities.r.options.yes: a runbook asks before destructive steps"),
    (RUNBOOK.replace("activities:", "schedule: {rate: 1 hour, start: '2026-01-01T00:00:00Z'}\nactivities:")
     + "  a: {type: ShellCommand, command: x}\n", "rb.yaml:11 schedule: a runbook runs when a person starts it"),
    (RUNBOOK.replace("source: orders, timeout", "source: repo, timeout") + "  a: {type: ShellCommand, command: x}\n",
     "rb.yaml:9 preconditions.snap.source: node 'repo' is a S3Repository; expected DynamoDBTable or MySQLTable"),
    (RUNBOOK.replace("runbook: {source: orders", "runbook: {source: target2")
     + "  a: {type: ShellCommand, command: x}\n", "rb.yaml:10 runbook.source: unknown node 'target2'"),
    (RUNBOOK, "rb.yaml:11 activities: a runbook needs at least one activity"),
])
def test_runbook_validation(text: str, expected: str) -> None:
    with pytest.raises(PlaybookInvalid) as e:
        parse_playbook(text, expected.split(":")[0])
    assert any(i.startswith(expected) for i in e.value.issues), e.value.issues


def test_a_runbook_runs_only_as_a_runbook() -> None:
    pb = load_playbook(ROOT / "playbooks" / "restore-orders.yaml")
    assert pb.kind == "runbook" and pb.runbook is not None and pb.order() == ["restore", "verify"]
    with pytest.raises(InvalidInput, match="is a runbook: run it with `backupctl runbook run"):
        check_runnable(pb)
    check_runnable(pb, runbook=True)


def test_the_shipped_json_schema_is_the_generated_one() -> None:
    shipped = json.loads((ROOT / "playbooks" / "schema.json").read_text())
    assert shipped == json_schema(), "regenerate: python -m backupctl.pipelines.model > playbooks/schema.json"
    assert "runbook" in shipped["properties"] and "runbook" in shipped["properties"]["kind"]["enum"]


# -- the gate and the run ---------------------------------------------------------------------


def selection() -> Selection:
    return Selection(snapshot_id="20261127T010000Z-abcdef", source_key=ORDERS, created_at=isoformat(T0),
                     completed_at=isoformat(T0), mode="full", rows=10, digest="0" * 64,
                     chain=["20261127T010000Z-abcdef"], chosen_by="latest")


def test_a_declined_gate_skips_the_rest_but_clean_up(tmp_path: Path) -> None:
    pb = parse_playbook(f"""name: p
activities:
  a: {{type: ShellCommand, command: "touch {tmp_path}/a"}}
  b: {{type: ShellCommand, command: "touch {tmp_path}/b", depends_on: [a]}}
  c: {{type: ShellCommand, command: "touch {tmp_path}/c", depends_on: [b]}}
  clean: {{type: ShellCommand, command: "touch {tmp_path}/clean", depends_on: [c], run_on: always}}
""", "p.yaml")

    def gate(act: Any) -> None:
        if act.name == "b":
            raise Declined("not confirmed")

    result = run_pipeline(AwsContext(), pb, gate=gate, runners={})
    st = {a.name: a.status for a in result.activities}
    assert st == {"a": "succeeded", "b": "declined", "c": "skipped", "clean": "succeeded"}
    assert result.status == "declined" and result.exit_code == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "clean"]


def test_classify_restores_by_mode_and_target_state() -> None:
    with mock_aws():
        aws = AwsContext()
        pb = parse_playbook(RUNBOOK + """\
  new: {type: Restore, input: repo, output: target, snapshot: selected}
  upsert: {type: Restore, input: repo, output: target, snapshot: selected, options: {mode: upsert}}
  replace: {type: Restore, input: repo, output: target, snapshot: selected, options: {mode: replace}}
  drop: {type: DropTarget, node: scratch}
  note: {type: ShellCommand, command: "true"}
""", "rb.yaml")
        a = pb.activities
        assert classify(aws, pb, a["replace"]) == (
            False, "mode replace, but DynamoDBTable restored (us-west-2) is absent: nothing is replaced")
        ddb = aws.client("dynamodb", "us-west-2")
        ddb.create_table(TableName="restored", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                         BillingMode="PAY_PER_REQUEST")
        assert classify(aws, pb, a["replace"])[0] is False  # empty
        ddb.put_item(TableName="restored", Item={"pk": {"S": "1"}})
        assert classify(aws, pb, a["replace"]) == (
            True, "replaces DynamoDBTable restored (us-west-2), which holds data (mode replace)")
        assert classify(aws, pb, a["new"]) == (False, None) and classify(aws, pb, a["upsert"]) == (False, None)
        assert classify(aws, pb, a["drop"]) == (True, "drops DynamoDBTable scratch-copy (us-west-2)")
        assert classify(aws, pb, a["note"]) == (False, None)


def run_steps(tmp_path: Path, confirmer: Confirmer) -> Any:
    pb = parse_playbook(RUNBOOK + f"""\
  check: {{type: ShellCommand, command: 'test "$BACKUPCTL_SNAPSHOT_ID" = 20261127T010000Z-abcdef',
          preconditions: [snap]}}
  announce: {{type: ShellCommand, command: "touch {tmp_path}/announced", confirm: true, depends_on: [check]}}
  after: {{type: ShellCommand, command: "touch {tmp_path}/after", depends_on: [announce]}}
  drop: {{type: DropTarget, node: scratch, depends_on: [after], run_on: always}}
""", "rb.yaml")
    aws = AwsContext()
    sel = selection()
    repo = Repository.open(aws, "us-west-2", "s3://runbook-unit-repo")
    put(repo, manifest_doc(T0))
    plan = plan_runbook(aws, pb, sel, repo)
    assert plan["asks"] == ["announce", "drop"] and [s["name"] for s in plan["steps"]] == ["check", "announce",
                                                                                           "after", "drop"]
    who = {"aws": aws.caller_identity("us-west-2"), "os_user": "op", "host": "h"}
    done = run_runbook(aws, pb, sel, plan, confirmer, who, {"at": None, "yes": confirmer.yes})
    stored = repo.store.get_json(done.record_uri[len("s3://runbook-unit-repo/"):])
    assert stored == done.record and done.record_uri.startswith("s3://runbook-unit-repo/runs/runbooks/rb/")
    return done.record


def test_a_run_asks_before_confirm_steps_and_records_a_no(repo: Repository, tmp_path: Path) -> None:
    rec = run_steps(tmp_path, Confirmer(False, Tty("n\nn\n"), lambda q: None))
    st = {a["name"]: a["status"] for a in rec["activities"]}
    assert st == {"check": "succeeded", "announce": "declined", "after": "skipped", "drop": "declined"}
    assert rec["outcome"] == "declined" and rec["exit_code"] == 4 and not list(tmp_path.iterdir())
    assert [(c["step"], c["answer"]) for c in rec["confirmations"]] == [("announce", "n"), ("drop", "n")]
    assert rec["operator"]["aws"]["account"] == "123456789012" and rec["snapshot"]["chosen_by"] == "latest"
    assert rec["activities"][0]["preconditions"][0]["name"] == "snap"


def test_a_run_with_yes_runs_everything_and_records_it(repo: Repository, tmp_path: Path) -> None:
    rec = run_steps(tmp_path, Confirmer(True, io.StringIO(""), lambda q: None))
    assert {a["name"]: a["status"] for a in rec["activities"]} == {
        "check": "succeeded", "announce": "succeeded", "after": "succeeded", "drop": "succeeded"}
    assert rec["outcome"] == "succeeded" and rec["exit_code"] == 0 and rec["error"] is None
    assert [(c["step"], c["answer"]) for c in rec["confirmations"]] == [("announce", "--yes"), ("drop", "--yes")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after", "announced"]
