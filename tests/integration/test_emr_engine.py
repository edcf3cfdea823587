"""--engine emr end to end on the embedded endpoint: the steps really run (backupctl.embedded_emr).

The moto server of the session runs submitted EMR steps with local ``spark-submit``,
moving steps PENDING -> RUNNING -> COMPLETED/FAILED and clusters STARTING ->
BOOTSTRAPPING -> RUNNING -> TERMINATED(_WITH_ERRORS). Every test here goes through
the whole orchestration: package, upload, RunJobFlow/AddJobFlowSteps, poll, results,
terminate. Each EMR run costs a Spark JVM start (~10 s on 2 cores).
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from typing import Any

import pytest

from backupctl.aws import AwsContext
from backupctl.engines import configure_emr
from backupctl.engines.emr import EmrEngine, EmrSettings, Staged
from backupctl.errors import DataPathError, InvalidInput
from backupctl.repository import Repository, S3Store
from backupctl.snapshot import DynamoSnapshotOptions, snapshot_dynamodb
from backupctl.sources import dynamodb as ddb_source
from tests.harness.fault_proxy import FaultProxy
from tests.integration.helpers import make_table, one_json, python_items, scan_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

pytest.importorskip("pyspark")
if shutil.which("java") is None:  # pragma: no cover
    pytest.skip("Spark needs Java (17)", allow_module_level=True)

SRC, DST = "us-east-1", "us-west-2"
FAST_POLL = {"BACKUPCTL_EMR_POLL_MAX_S": "1"}


@pytest.fixture(autouse=True)
def _fast_poll(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("BACKUPCTL_EMR_POLL_MAX_S", "1")
    yield
    configure_emr(None)


def clusters(aws: AwsContext, run_tag: str | None = None) -> list[dict[str, Any]]:
    emr = aws.client("emr", DST)
    out = []
    for c in emr.list_clusters()["Clusters"]:
        full = emr.describe_cluster(ClusterId=c["Id"])["Cluster"]
        tags = {t["Key"]: t["Value"] for t in full.get("Tags", [])}
        if run_tag is None or tags.get("backupctl:run") == run_tag:
            out.append(full)
    return out


def emr_snapshot(aws: AwsContext, table: str, repo: str) -> Any:
    opts = DynamoSnapshotOptions(table=table, source_region=SRC, target_region=DST, repo_uri=repo, segments=2,
                                 workers=2, engine="emr", max_rcu=5000)
    return snapshot_dynamodb(aws, opts)


def test_snapshot_and_restore_on_emr_equal_the_local_engine(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 150)
    repo = f"s3://{name}-repo/bk"
    local = one_json(cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--json").out)
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--json", "--engine", "emr",
            "--instance-count", "2", "--tag", "team=dr", env=FAST_POLL)
    assert r.code == 0, r.err
    on_emr = one_json(r.out)
    assert on_emr["engine"] == "emr" and on_emr["rows"] == local["rows"] == 150
    assert on_emr["digest"] == local["digest"]

    r = cli("restore", on_emr["snapshot_id"], "--to-table", f"{name}-r", "--region", DST, "--repo", repo,
            "--engine", "emr", "--json", env=FAST_POLL)
    assert r.code == 0, r.err
    assert one_json(r.out)["rows"] == 150
    assert python_items(scan_all(aws, DST, f"{name}-r")) == python_items(scan_all(aws, SRC, name))

    # Two transient clusters of this repository's bucket, both gone, every step COMPLETED, the tag applied.
    emr = aws.client("emr", DST)
    mine = [c for c in clusters(aws) if name in json.dumps(c.get("LogUri", ""))]
    assert len(mine) == 2, [c["Id"] for c in mine]
    assert sum({"Key": "team", "Value": "dr"} in c["Tags"] for c in mine) == 1  # --tag: the snapshot's only
    for c in mine:
        assert c["Status"]["State"] == "TERMINATED" and c["AutoTerminate"] is True
        steps = emr.list_steps(ClusterId=c["Id"])["Steps"]
        assert [s["Status"]["State"] for s in steps] == ["COMPLETED"]
    # The wheel the bootstrap action installed is in the repository, next to the step logs.
    store = Repository.open(aws, DST, repo, create=False).store
    keys = list(store.list_keys("runs/emr/"))
    assert any(k.startswith("runs/emr/wheels/backupctl-") and k.endswith(".whl") for k in keys), keys
    assert any(k.endswith("/stderr.gz") for k in keys), keys


def test_a_task_error_on_emr_keeps_its_class_and_terminates_the_cluster(
        aws: AwsContext, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make_table(aws, SRC, name, 80)
    repo = f"s3://{name}-repo/bk"
    real = ddb_source.plan_export

    def broken(**kw: Any) -> list[dict[str, Any]]:
        specs = real(**kw)
        specs[1]["table"] = name + "-gone"
        return specs

    monkeypatch.setattr(ddb_source, "plan_export", broken)
    with pytest.raises(Exception) as info:
        emr_snapshot(aws, name, repo)
    msg = str(getattr(info.value, "message", info.value))
    assert "ResourceNotFoundException" in msg and "EMR step log: s3://" in msg and "\n" not in msg, msg
    r = Repository.open(aws, DST, repo, create=False)
    assert list(r.list_snapshots()) == []
    (c,) = [c for c in clusters(aws) if f"{name}-repo" in c.get("LogUri", "")]
    assert c["Status"]["State"] == "TERMINATED_WITH_ERRORS"
    assert c["Status"]["StateChangeReason"]["Code"] == "STEP_FAILURE"


class _Broken(EmrEngine):
    """Stages a job spec that run_tasks.py refuses (the step fails before any task), or no wheel."""

    def __init__(self, settings: EmrSettings, what: str) -> None:
        super().__init__(settings)
        self.what = what

    def stage(self, store: S3Store, job: dict[str, Any]) -> Staged:
        staged = super().stage(store, job)
        if self.what == "job":
            store.put(staged.key("job.json"), b'{"format": "something-else"}')
        elif self.what == "wheel":
            staged.wheel_name = "backupctl-0.0.0-py3-none-any.whl"  # never uploaded
        return staged


def _one_task(aws: AwsContext, name: str) -> tuple[list[dict[str, Any]], Repository]:
    make_table(aws, SRC, name, 20)
    repo = Repository.open(aws, DST, f"s3://{name}-repo/bk", create=True)
    from backupctl.repository import RepoURI

    specs = ddb_source.plan_export(aws=aws, region=SRC, table=name, repo=RepoURI(repo.uri.bucket, repo.uri.prefix),
                                   repo_region=DST, snapshot_prefix="snapshots/x/", segments=1, read_budget=None,
                                   concurrency=1)
    return specs, repo


def test_a_failed_step_names_its_log_and_the_cluster_is_terminated(aws: AwsContext, name: str) -> None:
    from backupctl.engines.local import TaskContext

    specs, repo = _one_task(aws, name)
    with pytest.raises(InvalidInput) as info:  # the job's own error, through results.json, with the step's log
        _Broken(EmrSettings(), "job").run(specs, ddb_source.run_export_task, TaskContext())
    msg = info.value.message
    assert " FAILED: not a backupctl Spark job spec" in msg and info.value.exit_code == 2, msg
    log = msg.rsplit("(log: ", 1)[1].rstrip(")")
    bucket, _, key = log[len("s3://"):].partition("/")
    body = gzip.decompress(aws.client("s3", DST).get_object(Bucket=bucket, Key=key)["Body"].read()).decode()
    # The step's stderr (spark-submit's own lines; the Python driver's last lines pass through the JVM and
    # may be cut, which is why run_tasks.py reports a job failure in results.json too).
    assert "spark" in body.lower(), body[:500]
    (c,) = [c for c in clusters(aws) if f"{name}-repo" in c.get("LogUri", "")]
    assert c["Status"]["State"] == "TERMINATED_WITH_ERRORS"


def test_a_bootstrap_failure_ends_the_cluster_with_errors(aws: AwsContext, name: str) -> None:
    from backupctl.engines.local import TaskContext

    specs, _repo = _one_task(aws, name)
    with pytest.raises(DataPathError) as info:
        _Broken(EmrSettings(), "wheel").run(specs, ddb_source.run_export_task, TaskContext())
    msg = info.value.message
    assert "TERMINATED_WITH_ERRORS before step" in msg and "BOOTSTRAP_FAILURE" in msg, msg


def test_the_deadline_terminates_the_cluster_and_kills_the_step(aws: AwsContext, name: str) -> None:
    from backupctl.engines.local import TaskContext

    specs, _repo = _one_task(aws, name)
    with pytest.raises(DataPathError) as info:
        EmrEngine(EmrSettings(deadline_s=3)).run(specs, ddb_source.run_export_task, TaskContext())
    assert "after the 3s deadline" in info.value.message and "the cluster is terminated" in info.value.message
    (c,) = [c for c in clusters(aws) if f"{name}-repo" in c.get("LogUri", "")]
    assert c["Status"]["State"] == "TERMINATED"
    # As on EMR, the step's end is asynchronous: the cluster kills it, then reports it CANCELLED.
    state = ""
    for _ in range(100):
        state = aws.client("emr", DST).list_steps(ClusterId=c["Id"])["Steps"][0]["Status"]["State"]
        if state != "RUNNING":
            break
        time.sleep(0.1)
    assert state == "CANCELLED"


def test_cluster_id_reuses_a_running_cluster_and_leaves_it_running(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 60)
    emr = aws.client("emr", DST)
    cid = emr.run_job_flow(Name=f"{name}-shared", ReleaseLabel="emr-7.5.0", Applications=[{"Name": "Spark"}],
                           Instances={"MasterInstanceType": "m6g.xlarge", "InstanceCount": 1,
                                      "KeepJobFlowAliveWhenNoSteps": True},
                           JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole")["JobFlowId"]
    r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", f"s3://{name}-repo/bk", "--json",
            "--engine", "emr", "--cluster-id", cid, env=FAST_POLL)
    assert r.code == 0, r.err
    assert one_json(r.out)["rows"] == 60
    state = emr.describe_cluster(ClusterId=cid)["Cluster"]["Status"]["State"]
    assert state in ("WAITING", "RUNNING"), state
    steps = emr.list_steps(ClusterId=cid)["Steps"]
    assert [s["Status"]["State"] for s in steps] == ["COMPLETED"]
    emr.terminate_job_flows(JobFlowIds=[cid])


def test_throttled_emr_api_is_retried(aws: AwsContext, moto_server: str, name: str) -> None:
    """A third of EMR calls answer ThrottlingException; the run still completes."""
    make_table(aws, SRC, name, 40)
    with FaultProxy(moto_server, rate=0.34, seed=7, faults=("ddb_throttling",),
                    target_prefix="ElasticMapReduce.") as proxy:
        via = AwsContext(endpoint_url=proxy.url)
        snap = emr_snapshot(via, name, f"s3://{name}-repo/bk")
    assert snap.manifest.rows == 40 and snap.manifest.engine == "emr"
    assert proxy.counts["ddb_throttling"] >= 1, proxy.counts
