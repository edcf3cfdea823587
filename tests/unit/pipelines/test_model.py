"""Playbook validation: every problem is one line FILE:LINE key.path: problem (table-driven)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backupctl.pipelines.model import (
    PlaybookInvalid,
    load_playbook,
    parse_duration,
    parse_playbook,
    topo_order,
)

ROOT = Path(__file__).resolve().parents[3]

BASE = """\
name: t
nodes:
  orders: {type: DynamoDBTable, region: us-east-1, table: orders}
  repo: {type: S3Repository, region: us-west-2}
  scratch: {type: DynamoDBTable, region: us-west-2, table: "x-${run_id}", scratch: true}
activities:
  snap:
    type: Snapshot
    input: orders
    output: repo
"""


@pytest.mark.parametrize(("extra", "expected"), [
    ("  restore:\n    type: Restore\n    input: repo\n    output: ordrs\n    snapshot: snap\n",
     "x.yaml:14 activities.restore.output: unknown node 'ordrs'"),
    ("  a:\n    type: ShellCommand\n    command: 'true'\n    depends_on: [b]\n"
     "  b:\n    type: ShellCommand\n    command: 'true'\n    depends_on: [a]\n",
     "x.yaml:14 activities.a.depends_on: dependency cycle a -> b -> a"),
    ("  c:\n    type: Teleport\n", "x.yaml:12 activities.c.type: unknown activity type 'Teleport'"),
    ("  d:\n    type: ShellCommand\n", "x.yaml:11 activities.d: missing required key 'command'"),
    ("  e:\n    type: DropTarget\n    node: orders\n", "x.yaml:13 activities.e.node: node 'orders' is not marked scratch"),
    ("  f:\n    type: ShellCommand\n    command: 'echo ${nope}'\n", "x.yaml:13 activities.f.command: unknown variable '${nope}'"),
    ("  g:\n    type: ShellCommand\n    command: 'true'\n    timeout: soon\n", "x.yaml:14 activities.g.timeout: invalid duration"),
    ("  h:\n    type: ShellCommand\n    command: 'true'\n    on_fail: shrug\n", "x.yaml:14 activities.h.on_fail: invalid on_fail"),
    ("  i:\n    type: Restore\n    input: orders\n    output: scratch\n    snapshot: snap\n",
     "x.yaml:13 activities.i.input: node 'orders' is a DynamoDBTable; expected S3Repository"),
    ("  j:\n    type: ShellCommand\n    command: 'true'\n    colour: red\n", "x.yaml:14 activities.j.colour: unknown key 'colour'"),
    ("schedule:\n  cron: '0 25 * * *'\n", "x.yaml:12 schedule.cron: invalid cron expression '0 25 * * *'"),
    ("schedule:\n  rate: 3 fortnights\n  start: 2026-01-01\n", "x.yaml:12 schedule.rate: invalid rate"),
    ("schedule:\n  cron: '0 3 * * *'\n  style: weekly\n", "x.yaml:13 schedule.style: invalid style"),
    ("bogus: 1\n", "x.yaml:11 bogus: unknown key 'bogus'"),
    ("  k: !!python/object/apply:os.system ['true']\n", "x.yaml:11 activities.k: tag tag:yaml.org,2002:python/object/apply"),
    ("  snap: {type: ShellCommand, command: x}\n", "x.yaml:11 activities.snap: duplicate key"),
    ("  l: [unclosed\n", "x.yaml:12 (yaml):"),
])
def test_validation_errors_name_file_line_and_key_path(extra: str, expected: str) -> None:
    text = BASE + extra if not extra.startswith(("schedule", "bogus")) else BASE + extra
    with pytest.raises(PlaybookInvalid) as e:
        parse_playbook(text, "x.yaml")
    assert any(line.startswith(expected) for line in e.value.issues), e.value.issues
    assert e.value.exit_code == 2


def test_missing_required_node_key_and_unknown_node_type() -> None:
    text = "name: t\nnodes:\n  a: {type: DynamoDBTable, region: us-east-1}\n  b: {type: Kafka}\n"
    with pytest.raises(PlaybookInvalid) as e:
        parse_playbook(text, "y.yaml")
    assert e.value.issues == ["y.yaml:3 nodes.a: missing required key 'table'",
                              "y.yaml:4 nodes.b.type: unknown node type 'Kafka' (expected one of DynamoDBTable, "
                              "MySQLTable, RedshiftTable, S3Repository)"]


def test_variables_run_id_and_implied_dependency() -> None:
    pb = parse_playbook(BASE + "  r: {type: Restore, input: repo, output: scratch, snapshot: snap}\n", "x.yaml",
                        run_id="r20260101t000000-abcdef")
    assert pb.nodes["scratch"].get("table") == "x-r20260101t000000-abcdef"
    assert pb.activities["r"].depends_on == ["snap"] and pb.order() == ["snap", "r"]


def test_every_activity_type_is_available() -> None:
    pb = parse_playbook(BASE + "  emr: {type: EmrStep, step: {args: [true]}}\n"
                               "  cli: {type: AwsCli, command: s3 ls}\n", "x.yaml")
    assert pb.unavailable() == []


def test_topo_order_is_stable_and_durations_parse() -> None:
    assert topo_order({"c": ["a"], "a": [], "b": []}) == ["a", "c", "b"]  # declaration order among the ready
    assert [parse_duration(v) for v in ("30s", "5m", "2h", "1d", "250ms", 7)] == [30, 300, 7200, 86400, 0.25, 7]


@pytest.mark.parametrize("path", sorted((ROOT / "playbooks").glob("*.yaml")))
def test_shipped_playbooks_are_valid(path: Path) -> None:
    pb = load_playbook(path)
    assert pb.name and (pb.drill is not None) == (pb.kind == "drill")
