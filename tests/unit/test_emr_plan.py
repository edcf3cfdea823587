"""--engine emr without a cluster: the requests it would make, its settings' validation, the wheel it ships."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from backupctl.aws import AwsContext
from backupctl.engines.emr import EmrSettings, Staged, parse_tags, plan_requests
from backupctl.engines.emr_package import build_wheel, entry_script
from backupctl.errors import InvalidInput
from backupctl.repository import RepoURI, S3Store


def staged() -> Staged:
    return Staged(S3Store(AwsContext(), "us-west-2", RepoURI("bk", "p/")), "20260101T000000Z-abcdef",
                  "backupctl-0.1.0-py3-none-any.whl")


def test_transient_cluster_request() -> None:
    s = EmrSettings(instance_count=4, subnet_id="subnet-0abc1234", tags={"team": "dr"}, log_uri="s3://logs/emr/")
    req = plan_requests(s, staged(), "backupctl 3 tasks")["RunJobFlow"]
    assert req["ReleaseLabel"] == "emr-7.5.0" and req["Applications"] == [{"Name": "Spark"}]
    inst = req["Instances"]
    assert inst["KeepJobFlowAliveWhenNoSteps"] is False and inst["Ec2SubnetId"] == "subnet-0abc1234"
    assert [(g["InstanceRole"], g["InstanceCount"]) for g in inst["InstanceGroups"]] == [("MASTER", 1), ("CORE", 3)]
    assert req["LogUri"] == "s3://logs/emr/"
    assert {"Key": "team", "Value": "dr"} in req["Tags"]
    assert {"Key": "backupctl:run", "Value": "20260101T000000Z-abcdef"} in req["Tags"]
    (ba,) = req["BootstrapActions"]
    assert ba["ScriptBootstrapAction"] == {
        "Path": "s3://bk/p/runs/emr/20260101T000000Z-abcdef/bootstrap.sh",
        "Args": ["s3://bk/p/runs/emr/wheels/backupctl-0.1.0-py3-none-any.whl"]}
    (step,) = req["Steps"]
    assert step["ActionOnFailure"] == "TERMINATE_CLUSTER"
    assert step["HadoopJarStep"] == {"Jar": "command-runner.jar", "Args": [
        "spark-submit", "--deploy-mode", "client", "s3://bk/p/runs/emr/20260101T000000Z-abcdef/run_tasks.py",
        "--job", "s3://bk/p/runs/emr/20260101T000000Z-abcdef/job.json",
        "--results", "s3://bk/p/runs/emr/20260101T000000Z-abcdef/results.json", "--region", "us-west-2"]}


def test_single_node_and_default_log_uri() -> None:
    req = plan_requests(EmrSettings(instance_count=1), staged(), "x")["RunJobFlow"]
    assert [g["InstanceRole"] for g in req["Instances"]["InstanceGroups"]] == ["MASTER"]
    assert req["LogUri"] == "s3://bk/p/runs/emr/logs/" and "Ec2SubnetId" not in req["Instances"]


def test_cluster_id_adds_a_step_that_does_not_terminate() -> None:
    req = plan_requests(EmrSettings(cluster_id="j-2AXXXXXXGAPLF"), staged(), "x")
    assert list(req) == ["AddJobFlowSteps"]
    assert req["AddJobFlowSteps"]["JobFlowId"] == "j-2AXXXXXXGAPLF"
    assert req["AddJobFlowSteps"]["Steps"][0]["ActionOnFailure"] == "CONTINUE"


@pytest.mark.parametrize(("kw", "message"), [
    ({"release": "7.5"}, "invalid --emr-release '7.5'"),
    ({"instance_count": 0}, "--instance-count must be at least 1"),
    ({"subnet_id": "sub-1"}, "invalid --subnet-id 'sub-1'"),
    ({"cluster_id": "cluster"}, "invalid --cluster-id 'cluster'"),
    ({"log_uri": "/var/log"}, "invalid --log-uri '/var/log'"),
    ({"deadline_s": 0}, "--emr-deadline must be positive"),
])
def test_bad_settings_are_one_clear_line(kw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace("'", "'")):
        EmrSettings(**kw).check()  # type: ignore[arg-type]


def test_tags() -> None:
    assert parse_tags(["a=1", "b=x=y", "c="]) == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(InvalidInput, match="invalid --tag 'oops'"):
        parse_tags(["oops"])


def test_wheel_is_installable_shape_and_reproducible() -> None:
    name, data = build_wheel()
    assert name.startswith("backupctl-") and name.endswith("-py3-none-any.whl")
    assert build_wheel()[1] == data  # same code, same bytes
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        assert "backupctl/engines/emr.py" in names and "spark_jobs/run_tasks.py" in names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        # pure Python (py3-none-any): the C row hasher stays out, EMR's interpreter hashes with hashlib
        assert not [n for n in names if n.endswith((".so", ".pyd"))] and "backupctl/formats/parquet.py" in names
        dist = next(n.split("/")[0] for n in names if n.endswith(".dist-info/WHEEL"))
        meta = z.read(f"{dist}/METADATA").decode()
        assert "Name: backupctl" in meta and "Requires-Dist: boto3" in meta
        record = z.read(f"{dist}/RECORD").decode().splitlines()
        for line in record:  # every file listed with its sha256, as pip checks
            path, digest, size = line.rsplit(",", 2)
            if path.endswith("RECORD"):
                continue
            body = z.read(path)
            assert int(size) == len(body)
            import base64

            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
    assert entry_script().startswith(b'"""spark-submit entry point')
