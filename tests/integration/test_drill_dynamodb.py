"""DR drills and pipelines through the real CLI (and the library, for the tamper hook) against a moto server.

A drill passes on good data, records its report in the repository and drops
the scratch table; it fails naming the item when one restored item is
altered before the check, and still tears down. A pipeline runs clean-up
after a failure; a precondition that never holds fails within its timeout.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from backupctl.aws import AwsContext
from backupctl.pipelines.drill import run_drill
from backupctl.pipelines.model import load_playbook
from tests.integration.helpers import make_table, one_json

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DRILL = str(ROOT / "playbooks" / "dynamodb-dr-drill.yaml")


def tables(aws: AwsContext, region: str) -> list[str]:
    return list(aws.client("dynamodb", region).list_tables()["TableNames"])


def test_drill_passes_records_report_and_tears_down(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, "us-east-1", name, 300)
    r = cli("drill", "run", DRILL, "--var", f"table={name}", "--json", timeout=120)
    assert r.code == 0, r.err
    rep = one_json(r.out)
    assert rep["passed"] is True and rep["teardown"] == "succeeded"
    assert rep["rows"] == {"snapshot": 300, "restored": 300}
    assert rep["digest"]["snapshot"] == rep["digest"]["restored"]
    assert rep["samples"]["checked"] == 20 and rep["samples"]["drifted"] == []
    assert rep["rto_s"] > 0 and rep["rpo_s"] >= 0
    assert not [t for t in tables(aws, "us-west-2") if t.startswith(name + "-drill-")]
    # The report is in the repository under drills/<source-key>/<drill-id>.json.
    bucket, key = rep["report_uri"][5:].split("/", 1)
    assert key == f"drills/dynamodb.us-east-1.{name}/{rep['drill_id']}.json"
    assert aws.client("s3", "us-west-2").head_object(Bucket=bucket, Key=key)
    assert "PASSED" in r.err and "RTO" in r.err


def test_drill_fails_naming_the_altered_item_and_still_tears_down(aws: AwsContext, name: str) -> None:
    make_table(aws, "us-east-1", name, 120)
    pb = load_playbook(DRILL, {"table": name})
    altered = {}

    def tamper(ctx) -> None:  # type: ignore[no-untyped-def]
        node = ctx.node("scratch")
        ddb = aws.client("dynamodb", node.get("region"))
        item = ddb.scan(TableName=node.get("table"), Limit=1)["Items"][0]
        item["status"] = {"S": "tampered"}
        ddb.put_item(TableName=node.get("table"), Item=item)
        altered.update(item)

    rep = run_drill(aws, pb, after_restore=tamper)
    assert rep["passed"] is False and rep["exit_code"] == 5
    key = f"pk={altered['pk']['S']!r}, sk={altered['sk']['S']!r}"
    assert any(f"item {key} differs from the snapshot" in p for p in rep["problems"]), rep["problems"]
    assert rep["teardown"] == "succeeded"
    assert pb.nodes["scratch"].get("table") not in tables(aws, "us-west-2")


PIPELINE = """
name: fail-then-clean
nodes:
  src: {{type: DynamoDBTable, region: us-east-1, table: {t}}}
  repo: {{type: S3Repository, region: us-west-2, uri: "s3://{t}-repo"}}
  copy: {{type: DynamoDBTable, region: us-west-2, table: {t}-copy, scratch: true}}
activities:
  snap: {{type: Snapshot, input: src, output: repo}}
  restore: {{type: Restore, input: repo, output: copy, snapshot: snap}}
  boom: {{type: ShellCommand, command: "exit 3", depends_on: [restore], retries: 1, retry_delay: 0.1s}}
  after: {{type: ShellCommand, command: "true", depends_on: [boom]}}
  cleanup: {{type: DropTarget, node: copy, depends_on: [boom], run_on: always}}
"""


def test_pipeline_runs_cleanup_after_a_failure(aws: AwsContext, cli, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, "us-east-1", name, 50)
    p = tmp_path / "p.yaml"
    p.write_text(PIPELINE.format(t=name))
    r = cli("pipeline", "run", str(p), "--json", timeout=120)
    assert r.code == 3, r.err
    doc = one_json(r.out)
    st = {a["name"]: (a["status"], a["attempts"]) for a in doc["activities"]}
    assert st == {"snap": ("succeeded", 1), "restore": ("succeeded", 1), "boom": ("failed", 2),
                  "after": ("skipped", 0), "cleanup": ("succeeded", 1)}
    assert doc["status"] == "failed" and doc["activities"][0]["outputs"]["snapshot_id"]
    assert f"{name}-copy" not in tables(aws, "us-west-2")
    assert "activity 'boom'" in r.err


def test_precondition_timeout_names_the_precondition(cli, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "p.yaml"
    p.write_text(f"""
name: wait
nodes:
  src: {{type: DynamoDBTable, region: us-east-1, table: {name}-absent}}
preconditions:
  src_exists: {{type: DynamoDBTableExists, node: src, timeout: 2s}}
activities:
  go: {{type: ShellCommand, command: "true", preconditions: [src_exists]}}
""")
    t0 = time.monotonic()
    r = cli("pipeline", "run", str(p), timeout=60)
    assert r.code == 3, r.err
    assert time.monotonic() - t0 < 10
    assert "precondition 'src_exists' (DynamoDBTableExists) not met within 2s" in r.err


def test_activity_timeout(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "p.yaml"
    p.write_text("name: slow\nactivities:\n  nap: {type: ShellCommand, command: 'sleep 20', timeout: 1s}\n")
    t0 = time.monotonic()
    r = cli("pipeline", "run", str(p), "--json", timeout=60)
    assert r.code == 7 and time.monotonic() - t0 < 10
    assert one_json(r.out)["activities"][0]["error"] == "activity 'nap' timed out after 1s"
