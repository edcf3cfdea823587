"""The emr engine: the job runs as a ``spark-submit`` step on an EMR cluster in the repository's region.

For one engine run (the export tasks of a snapshot, or the load tasks of a
restore) backupctl:

1. builds the job spec (the same one ``--engine spark`` runs, ``spark.build_job``),
   a wheel of the running code (``emr_package``), the entry script
   (``spark_jobs/run_tasks.py``) and a bootstrap script that installs the wheel,
   and uploads them under ``runs/emr/<run-id>/`` in the repository bucket;
2. starts a transient cluster there with ``RunJobFlow`` (release label, Spark,
   instance groups, roles, subnet, log URI, tags, ``KeepJobFlowAliveWhenNoSteps``
   false, the bootstrap action, the step) - or, with ``--cluster-id``, adds the
   step to that running cluster with ``AddJobFlowSteps`` and leaves it running;
3. polls ``DescribeStep``/``DescribeCluster`` with bounded exponential backoff
   (1 s doubling to ``poll_max_s``) until the step ends or ``deadline_s`` passes,
   reporting every state change;
4. reads the outcomes the step wrote (``results.json``): each task's result goes
   to the driver's ``on_result`` (which checkpoints and commits, as with every
   engine); a task error is re-raised with its class, message and exit code;
5. terminates a cluster it started when anything fails: a step FAILED or
   CANCELLED (the error names the reason and the log location), the cluster
   TERMINATED_WITH_ERRORS, the deadline, Ctrl-C.

The requests are built by ``plan_requests``, which ``backupctl emr plan`` prints
without calling anything. On the embedded endpoint the steps really run: see
``backupctl.embedded_emr``.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from backupctl.engines import spark
from backupctl.engines.local import TaskContext, TaskFn
from backupctl.errors import DataPathError, Interrupted, InvalidInput
from backupctl.model import TaskSpec
from backupctl.repository import S3Store, task_store
from backupctl.retry import policy_from_env

DEFAULT_RELEASE = "emr-7.5.0"
DEFAULT_INSTANCE_TYPE = "m6g.xlarge"
RUNS_PREFIX = "runs/emr/"
TERMINAL_STEP = {"COMPLETED", "FAILED", "CANCELLED", "INTERRUPTED"}
DEAD_CLUSTER = {"TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"}

_RELEASE_RE = re.compile(r"^emr-\d+\.\d+\.\d+$")
_CLUSTER_RE = re.compile(r"^j-[0-9A-Z]{1,256}$")
_SUBNET_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")

BOOTSTRAP_SCRIPT = """#!/bin/bash
# Installs the backupctl wheel this run uploaded (its dependencies come from PyPI).
set -euo pipefail
wheel="$1"
aws s3 cp "$wheel" /tmp/
sudo python3 -m pip install --quiet "/tmp/$(basename "$wheel")"
"""


@dataclass
class EmrSettings:
    """The ``--engine emr`` options (validated by ``check``)."""

    release: str = DEFAULT_RELEASE
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 3
    subnet_id: str | None = None
    emr_role: str = "EMR_DefaultRole"
    ec2_role: str = "EMR_EC2_DefaultRole"
    log_uri: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    cluster_id: str | None = None
    deadline_s: float = 6 * 3600.0
    poll_max_s: float = field(default_factory=lambda: float(os.environ.get("BACKUPCTL_EMR_POLL_MAX_S", "30")))

    def check(self) -> EmrSettings:
        if not _RELEASE_RE.match(self.release):
            raise InvalidInput(f"invalid --emr-release '{self.release}': expected emr-X.Y.Z (e.g. {DEFAULT_RELEASE})")
        if self.instance_count < 1:
            raise InvalidInput(f"--instance-count must be at least 1, not {self.instance_count}")
        if self.subnet_id is not None and not _SUBNET_RE.match(self.subnet_id):
            raise InvalidInput(f"invalid --subnet-id '{self.subnet_id}': expected subnet-xxxxxxxx")
        if self.cluster_id is not None and not _CLUSTER_RE.match(self.cluster_id):
            raise InvalidInput(f"invalid --cluster-id '{self.cluster_id}': expected j-XXXXXXXXXXXX")
        if self.log_uri is not None and not self.log_uri.startswith("s3://"):
            raise InvalidInput(f"invalid --log-uri '{self.log_uri}': expected s3://BUCKET/PREFIX/")
        if self.deadline_s <= 0:
            raise InvalidInput("--emr-deadline must be positive")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_tags(values: Sequence[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise InvalidInput(f"invalid --tag '{v}': expected KEY=VALUE")
        tags[k] = val
    return tags


@dataclass
class Staged:
    """Where one run's files live in the repository bucket."""

    store: S3Store
    run_id: str
    wheel_name: str

    def key(self, name: str) -> str:
        return f"{RUNS_PREFIX}{self.run_id}/{name}"

    def url(self, name: str) -> str:
        return self.store.url(self.key(name))

    @property
    def wheel_url(self) -> str:
        return self.store.url(f"{RUNS_PREFIX}wheels/{self.wheel_name}")

    @property
    def default_log_uri(self) -> str:
        return self.store.url(f"{RUNS_PREFIX}logs/")


def step_request(staged: Staged, name: str, transient: bool) -> dict[str, Any]:
    return {
        "Name": name,
        "ActionOnFailure": "TERMINATE_CLUSTER" if transient else "CONTINUE",
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": ["spark-submit", "--deploy-mode", "client", staged.url("run_tasks.py"),
                     "--job", staged.url("job.json"), "--results", staged.url("results.json"),
                     "--region", staged.store.region],
        },
    }


def plan_requests(settings: EmrSettings, staged: Staged, step_name: str) -> dict[str, Any]:
    """The exact EMR request(s) this run makes: RunJobFlow (transient) or AddJobFlowSteps (``cluster_id``)."""
    if settings.cluster_id:
        return {"AddJobFlowSteps": {"JobFlowId": settings.cluster_id,
                                    "Steps": [step_request(staged, step_name, transient=False)]}}
    instances: dict[str, Any] = {
        "InstanceGroups": [
            {"Name": "master", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
             "InstanceType": settings.instance_type, "InstanceCount": 1},
        ],
        "KeepJobFlowAliveWhenNoSteps": False,
        "TerminationProtected": False,
    }
    if settings.instance_count > 1:
        instances["InstanceGroups"].append(
            {"Name": "core", "InstanceRole": "CORE", "Market": "ON_DEMAND",
             "InstanceType": settings.instance_type, "InstanceCount": settings.instance_count - 1})
    if settings.subnet_id:
        instances["Ec2SubnetId"] = settings.subnet_id
    tags = {"backupctl:run": staged.run_id, **settings.tags}
    return {"RunJobFlow": {
        "Name": f"backupctl-{staged.run_id}",
        "ReleaseLabel": settings.release,
        "Applications": [{"Name": "Spark"}],
        "Instances": instances,
        "LogUri": settings.log_uri or staged.default_log_uri,
        "ServiceRole": settings.emr_role,
        "JobFlowRole": settings.ec2_role,
        "VisibleToAllUsers": True,
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        "BootstrapActions": [{"Name": "install backupctl",
                              "ScriptBootstrapAction": {"Path": staged.url("bootstrap.sh"),
                                                        "Args": [staged.wheel_url]}}],
        "Steps": [step_request(staged, step_name, transient=True)],
    }}


class StepFailed(DataPathError):
    """The EMR step ended FAILED, CANCELLED or INTERRUPTED."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


class EmrEngine:
    name = "emr"

    def __init__(self, settings: EmrSettings, workers: int = 8,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.settings = settings.check()
        self.workers = workers
        self.say = on_event or (lambda _m: None)

    def _note(self, ctx: TaskContext, msg: str) -> None:
        progress = ctx.progress
        if progress is not None and hasattr(progress, "note"):
            progress.note(msg)
        self.say(msg)

    def stage(self, store: S3Store, job: dict[str, Any]) -> Staged:
        from backupctl.engines.emr_package import build_wheel, entry_script

        wheel_name, wheel = build_wheel()
        staged = Staged(store, new_run_id(), wheel_name)
        store.put(f"{RUNS_PREFIX}wheels/{wheel_name}", wheel)
        store.put(staged.key("run_tasks.py"), entry_script())
        store.put(staged.key("bootstrap.sh"), BOOTSTRAP_SCRIPT.encode())
        store.put(staged.key("job.json"), json.dumps(job).encode())
        return staged

    def run(
        self,
        tasks: Sequence[TaskSpec],
        fn: TaskFn,
        ctx: TaskContext,
        on_result: Callable[[TaskSpec, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        if not tasks:
            return []
        spark.check_driver_state(fn)
        spark.check_secrets(tasks, "yarn")
        store = task_store(tasks[0])
        job = spark.build_job(tasks, fn)
        staged = self.stage(store, job)
        emr = store.aws.client("emr", store.region)
        policy = policy_from_env()
        step_name = f"backupctl {len(tasks)} tasks ({staged.run_id})"
        req = plan_requests(self.settings, staged, step_name)
        transient = "RunJobFlow" in req
        if transient:
            cluster_id = str(policy.call(lambda: emr.run_job_flow(**req["RunJobFlow"]),
                                         "starting an EMR cluster (RunJobFlow)")["JobFlowId"])
            steps = policy.call(lambda: emr.list_steps(ClusterId=cluster_id), f"listing the steps of {cluster_id}")
            step_id = str(steps["Steps"][-1]["Id"])
            self._note(ctx, f"EMR cluster {cluster_id} started in {store.region} (transient; logs "
                            f"{req['RunJobFlow']['LogUri']})")
        else:
            cluster_id = str(self.settings.cluster_id)
            state = policy.call(lambda: emr.describe_cluster(ClusterId=cluster_id),
                                f"describing {cluster_id}")["Cluster"]["Status"]["State"]
            if state in DEAD_CLUSTER:
                raise InvalidInput(f"--cluster-id {cluster_id} is {state}: it cannot take steps")
            step_id = str(policy.call(lambda: emr.add_job_flow_steps(**req["AddJobFlowSteps"]),
                                      f"adding a step to {cluster_id}")["StepIds"][0])
            self._note(ctx, f"EMR step {step_id} added to running cluster {cluster_id} (left running)")
        try:
            try:
                self._wait(emr, cluster_id, step_id, ctx, transient)
            except StepFailed as failed:
                raise self._task_error(store, staged, failed) from None
            outcomes = store.get_json(staged.key("results.json"))["outcomes"]
        except KeyboardInterrupt as e:
            if transient:
                self._terminate(emr, cluster_id, ctx, "interrupted")
            raise Interrupted(f"interrupted while EMR step {step_id} ran on {cluster_id}") from e
        except BaseException:
            if transient:
                self._terminate(emr, cluster_id, ctx, "failed")
            raise
        by_id = {str(s["task_id"]): s for s in tasks}
        results: list[dict[str, Any]] = []
        for o in outcomes:
            if not o.get("ok"):
                raise spark.rebuild_error(o["error"])
            result = o["result"]
            ctx.advance(int(result.get("rows") or 0), int(result.get("bytes") or 0))
            spec = by_id.get(str(o.get("task_id")))
            if on_result is not None and spec is not None:
                on_result(spec, result)
            results.append(result)
        if len(results) != len(tasks):
            raise DataPathError(f"EMR step {step_id} returned {len(results)} outcomes for {len(tasks)} tasks")
        return results

    def _wait(self, emr: Any, cluster_id: str, step_id: str, ctx: TaskContext, transient: bool) -> None:
        policy = policy_from_env()
        deadline = time.monotonic() + self.settings.deadline_s
        sleep = 1.0
        last: tuple[str, str] = ("", "")
        while True:
            cluster = policy.call(lambda: emr.describe_cluster(ClusterId=cluster_id),
                                  f"describing EMR cluster {cluster_id}")["Cluster"]
            step = policy.call(lambda: emr.describe_step(ClusterId=cluster_id, StepId=step_id),
                               f"describing EMR step {step_id}")["Step"]
            cstate, sstate = cluster["Status"]["State"], step["Status"]["State"]
            if (cstate, sstate) != last:
                self._note(ctx, f"EMR cluster {cluster_id} {cstate}, step {step_id} {sstate}")
                last = (cstate, sstate)
            if sstate == "COMPLETED":
                return
            if cstate in DEAD_CLUSTER and sstate != "FAILED":  # the cluster's reason is the news (bootstrap...)
                reason = cluster["Status"].get("StateChangeReason") or {}
                why = ": ".join(x for x in (reason.get("Code"), reason.get("Message")) if x) or "no reason given"
                raise DataPathError(f"EMR cluster {cluster_id} {cstate} before step {step_id} finished "
                                    f"(step {sstate}): {why} (logs: {cluster.get('LogUri') or 'none'})")
            if sstate in TERMINAL_STEP:
                fd = step["Status"].get("FailureDetails") or {}
                why = ": ".join(x for x in (fd.get("Reason"), fd.get("Message")) if x) or "no reason given"
                log = fd.get("LogFile") or cluster.get("LogUri") or "no log location"
                raise StepFailed(f"EMR step {step_id} on {cluster_id} {sstate}: {why} (log: {log})", log)
            if ctx.stopped:
                raise Interrupted(f"stopped while EMR step {step_id} ran")
            left = deadline - time.monotonic()
            if left <= 0:
                raise DataPathError(f"EMR step {step_id} on {cluster_id} still {sstate} after the "
                                    f"{self.settings.deadline_s:.0f}s deadline (--emr-deadline)"
                                    + ("; the cluster is terminated" if transient else ""))
            time.sleep(min(sleep, left))
            sleep = min(self.settings.poll_max_s, sleep * 2)

    @staticmethod
    def _task_error(store: S3Store, staged: Staged, failed: StepFailed) -> Exception:
        """A failed step that ran the job: the first failed task's own error (class, exit code), else the step's."""
        try:
            doc = store.get_json(staged.key("results.json"))
        except Exception:  # noqa: BLE001 - no outcomes: the step failed before or around the job
            return failed
        if doc.get("error"):  # the job itself failed (run_tasks.py reports it here, not only on stderr)
            err = spark.rebuild_error(doc["error"])
            err.message = f"{failed.message.split(': ', 1)[0]}: {err.message} (log: {failed.log})"
            return err
        for o in doc.get("outcomes") or []:
            if not o.get("ok"):
                err = spark.rebuild_error(o["error"])
                err.message = f"{err.message} (EMR step log: {failed.log})"
                return err
        return failed

    def _terminate(self, emr: Any, cluster_id: str, ctx: TaskContext, why: str) -> None:
        try:
            policy = policy_from_env()
            state = policy.call(lambda: emr.describe_cluster(ClusterId=cluster_id),
                                f"describing EMR cluster {cluster_id}")["Cluster"]["Status"]["State"]
            if state in DEAD_CLUSTER:
                return  # it ended by itself (ActionOnFailure TERMINATE_CLUSTER, bootstrap failure)
            policy.call(lambda: emr.terminate_job_flows(JobFlowIds=[cluster_id]), f"terminating EMR cluster {cluster_id}")
            self._note(ctx, f"EMR cluster {cluster_id} terminated ({why})")
        except Exception as e:  # noqa: BLE001 - the original error matters more; say what to clean up
            self._note(ctx, f"could not terminate EMR cluster {cluster_id}: {e}; terminate it by hand")


def run_step(aws: Any, region: str, step: dict[str, Any], settings: EmrSettings,
             say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one plain EMR step (a playbook's ``EmrStep``): on ``settings.cluster_id``, else on a transient
    cluster started for it (terminated on failure, deadline and Ctrl-C). Returns cluster, step and state."""
    engine = EmrEngine(settings, on_event=say)
    emr = aws.client("emr", region)
    policy = policy_from_env()
    ctx = TaskContext()
    if settings.cluster_id:
        cluster_id = settings.cluster_id
        step_id = str(policy.call(lambda: emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step]),
                                  f"adding a step to {cluster_id}")["StepIds"][0])
        transient = False
    else:
        req: dict[str, Any] = {
            "Name": f"backupctl-step-{new_run_id()}", "ReleaseLabel": settings.release,
            "Applications": [{"Name": "Spark"}],
            "Instances": {"InstanceGroups": [{"Name": "master", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
                                              "InstanceType": settings.instance_type, "InstanceCount": 1}],
                          "KeepJobFlowAliveWhenNoSteps": False, "TerminationProtected": False,
                          **({"Ec2SubnetId": settings.subnet_id} if settings.subnet_id else {})},
            "ServiceRole": settings.emr_role, "JobFlowRole": settings.ec2_role, "VisibleToAllUsers": True,
            "Tags": [{"Key": k, "Value": v} for k, v in settings.tags.items()],
            "Steps": [{"ActionOnFailure": "TERMINATE_CLUSTER", **step}],
        }
        if settings.log_uri:
            req["LogUri"] = settings.log_uri
        cluster_id = str(policy.call(lambda: emr.run_job_flow(**req), "starting an EMR cluster")["JobFlowId"])
        step_id = str(policy.call(lambda: emr.list_steps(ClusterId=cluster_id), "listing steps")["Steps"][-1]["Id"])
        transient = True
    try:
        engine._wait(emr, cluster_id, step_id, ctx, transient)
    except BaseException:
        if transient:
            engine._terminate(emr, cluster_id, ctx, "failed")
        raise
    return {"cluster_id": cluster_id, "step_id": step_id, "state": "COMPLETED", "transient": transient}
