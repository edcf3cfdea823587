"""EMR on the embedded endpoint: submitted steps really run, here, with local Spark.

moto accepts RunJobFlow / AddJobFlowSteps but never runs anything: its steps stay
RUNNING. Inside the embedded endpoint's process (``backupctl local up``, the test
fixtures) this runner watches moto's EMR clusters and plays the cluster's part:

* a new cluster goes STARTING -> BOOTSTRAPPING -> RUNNING (steps) -> WAITING, or
  TERMINATED once its steps are done when it is transient
  (``KeepJobFlowAliveWhenNoSteps`` false);
* bootstrap actions: a wheel named in an action's arguments is downloaded from
  the embedded S3 and unpacked; the steps run with it first on PYTHONPATH, so the
  wheel ``--engine emr`` uploads is the code that runs (the script itself is not
  run: it would ``pip install`` from PyPI). A missing script or wheel ends the
  cluster TERMINATED_WITH_ERRORS (``BOOTSTRAP_FAILURE``);
* steps run one at a time, PENDING -> RUNNING -> COMPLETED / FAILED.
  ``command-runner.jar`` with ``spark-submit``: pyspark's own ``spark-submit``
  with ``--master local[2]`` (``--deploy-mode`` dropped), ``s3://...py`` scripts
  downloaded first, the endpoint's URL and dummy credentials in the environment.
  Any other command-runner command runs as it is. A step's stdout/stderr go to
  ``<LogUri>/<cluster>/steps/<step>/stdout.gz|stderr.gz``; a failure's
  ``FailureDetails`` carry the last stderr line and that log file. A failed step
  with ``ActionOnFailure`` TERMINATE_CLUSTER cancels the rest and ends the
  cluster TERMINATED_WITH_ERRORS (``STEP_FAILURE``);
* ``TerminateJobFlows`` kills the running step.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupctl.embedded import DUMMY_CREDENTIALS

PHASE_S = 0.5  # seconds a cluster spends in each of STARTING and BOOTSTRAPPING
TICK_S = 0.2


def spark_submit() -> str | None:
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        return shutil.which("spark-submit")
    path = Path(list(spec.submodule_search_locations)[0]) / "bin" / "spark-submit"
    return str(path) if path.exists() else shutil.which("spark-submit")


@dataclass
class _Cluster:
    phase: str = "starting"
    since: float = field(default_factory=time.monotonic)
    handled: set[str] = field(default_factory=set)
    running: Any = None  # (step, Popen, logdir) of the running step
    pythonpath: list[str] = field(default_factory=list)
    workdir: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="backupctl-emr-"))


_ERROR_LINE = re.compile(r"^(error: .+|[A-Za-z_][\w.]*(Error|Exception|Invalid\w*|NotFound|Failed)\b(: .*)?)$")


def _failure_line(stderr: Path) -> str:
    """The line of a failed step's stderr that says why: backupctl's ``error:`` line or the exception, not the
    last Spark log line."""
    lines = [ln.strip() for ln in stderr.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if _ERROR_LINE.match(ln):
            return ln[:500]
    return lines[-1][:500] if lines else ""


def _patch_moto() -> None:
    """Let steps carry FailureDetails and clusters a StateChangeReason code, as the real API returns them."""
    from moto.emr import models

    if getattr(models.Step, "_backupctl_patched", False):
        return
    step_status = models.Step.status.fget  # type: ignore[attr-defined]
    cluster_status = models.Cluster.status.fget  # type: ignore[attr-defined]

    def step_status_full(self: Any) -> dict[str, Any]:
        d: dict[str, Any] = step_status(self)  # type: ignore[misc]
        fd = getattr(self, "failure_details", None)
        if fd:
            d["FailureDetails"] = fd
        return d

    def cluster_status_full(self: Any) -> dict[str, Any]:
        d: dict[str, Any] = cluster_status(self)  # type: ignore[misc]
        code = getattr(self, "last_state_change_code", None)
        if code:
            d["StateChangeReason"]["Code"] = code
        return d

    models.Step.status = property(step_status_full)  # type: ignore[method-assign,assignment]
    models.Cluster.status = property(cluster_status_full)  # type: ignore[method-assign,assignment]
    models.Step._backupctl_patched = True  # type: ignore[attr-defined]


class EmrStepRunner:
    def __init__(self, url: str) -> None:
        self.url = url
        self.clusters: dict[str, _Cluster] = {}
        self.thread = threading.Thread(target=self.loop, name="backupctl-emr-runner", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def loop(self) -> None:
        _patch_moto()
        while True:
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - the runner must outlive one bad cluster
                print(f"backupctl embedded EMR runner: {type(e).__name__}: {e}", file=sys.stderr)
            time.sleep(TICK_S)

    # -- helpers ---------------------------------------------------------------

    def _s3(self, region: str) -> Any:
        import boto3

        return boto3.client("s3", region_name=region, endpoint_url=self.url,
                            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def _download(self, region: str, uri: str, dest: Path) -> Path:
        bucket, _, key = uri[len("s3://"):].partition("/")
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / Path(key).name
        self._s3(region).download_file(bucket, key, str(path))
        return path

    @staticmethod
    def _end(cluster: Any, state: str, code: str | None, message: str) -> None:
        from moto.core.utils import utcnow

        cluster.state = state
        cluster.end_datetime = utcnow()
        cluster.last_state_change_reason = message
        cluster.last_state_change_code = code

    # -- the state machine -----------------------------------------------------

    def tick(self) -> None:
        from moto.emr.models import emr_backends

        for _account, regions in list(emr_backends.items()):
            for region, backend in list(regions.items()):
                for cluster in list(backend.clusters.values()):
                    self.advance(cluster, region)

    def advance(self, cluster: Any, region: str) -> None:
        c = self.clusters.get(cluster.id)
        if c is None:
            if cluster.state in ("TERMINATED", "TERMINATED_WITH_ERRORS"):
                return  # moto ended it at once (no steps, not kept alive)
            c = self.clusters[cluster.id] = _Cluster()
            cluster.state = "STARTING"
            for s in cluster.steps:
                s.state = "PENDING"
            return
        if c.phase == "done":
            return
        if cluster.state in ("TERMINATING", "TERMINATED"):
            self._terminated_from_outside(cluster, c)
            return
        now = time.monotonic()
        if c.phase == "starting" and now - c.since >= PHASE_S:
            cluster.state = "BOOTSTRAPPING"
            c.phase, c.since = "bootstrapping", now
        elif c.phase == "bootstrapping" and now - c.since >= PHASE_S:
            self._bootstrap(cluster, c, region)
        elif c.phase == "ready":
            self._steps(cluster, c, region)

    def _bootstrap(self, cluster: Any, c: _Cluster, region: str) -> None:
        for i, action in enumerate(cluster.bootstrap_actions, start=1):
            sba = action.script_bootstrap_action
            path = sba.get("Path") or sba.get("path") or ""
            args = sba.get("Args") or sba.get("args") or []
            try:
                self._download(region, path, Path(c.workdir) / "bootstrap")
                for a in args:
                    if str(a).endswith(".whl"):
                        wheel = self._download(region, str(a), Path(c.workdir) / "wheels")
                        target = Path(c.workdir) / "site"
                        with zipfile.ZipFile(wheel) as z:
                            z.extractall(target)
                        c.pythonpath.append(str(target))
            except Exception as e:  # noqa: BLE001 - reported as the cluster's end
                for s in cluster.steps:
                    s.state = "CANCELLED"
                self._end(cluster, "TERMINATED_WITH_ERRORS", "BOOTSTRAP_FAILURE",
                          f"bootstrap action {i} ({action.name}) failed: {e}")
                c.phase = "done"
                return
        c.phase = "ready"
        cluster.state = "RUNNING"

    def _steps(self, cluster: Any, c: _Cluster, region: str) -> None:
        from moto.core.utils import utcnow

        if c.running is not None:
            step, proc, logdir = c.running
            if proc.poll() is None:
                return
            c.running = None
            step.end_date_time = utcnow()
            log_uri = self._upload_logs(cluster, step, logdir, region)
            if proc.returncode == 0:
                step.state = "COMPLETED"
            else:
                step.state = "FAILED"
                step.failure_details = {"Reason": f"exit code {proc.returncode}",
                                        "Message": _failure_line(Path(logdir) / "stderr"),
                                        "LogFile": log_uri or ""}
                if step.action_on_failure in ("TERMINATE_CLUSTER", "TERMINATE_JOB_FLOW"):
                    for s in cluster.steps:
                        if s.state == "PENDING":
                            s.state = "CANCELLED"
                    self._end(cluster, "TERMINATED_WITH_ERRORS", "STEP_FAILURE",
                              f"step {step.id} failed (ActionOnFailure {step.action_on_failure})")
                    c.phase = "done"
                    return
        for s in cluster.steps:
            if s.id not in c.handled:
                if s.state not in ("PENDING", "RUNNING"):
                    c.handled.add(s.id)  # cancelled before it ran
                    continue
                c.handled.add(s.id)
                self._start(cluster, c, s, region)
                cluster.state = "RUNNING"
                return
        if cluster.keep_job_flow_alive_when_no_steps:
            cluster.state = "WAITING"
        else:
            self._end(cluster, "TERMINATED", "ALL_STEPS_COMPLETED", "Steps completed")
            c.phase = "done"

    def _start(self, cluster: Any, c: _Cluster, step: Any, region: str) -> None:
        from moto.core.utils import utcnow

        step.state = "RUNNING"
        step.start_date_time = utcnow()
        logdir = tempfile.mkdtemp(prefix=f"{step.id}-", dir=c.workdir)
        env = dict(os.environ)
        env.update(DUMMY_CREDENTIALS)
        env.update({"BACKUPCTL_ENDPOINT_URL": self.url, "AWS_DEFAULT_REGION": region, "AWS_REGION": region,
                    "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable})
        if c.pythonpath:
            env["PYTHONPATH"] = os.pathsep.join([*c.pythonpath, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        try:
            argv = self._command(step, region, Path(logdir))
            out = open(Path(logdir) / "stdout", "wb")  # noqa: SIM115 - closed when the step ends (process owns it)
            err = open(Path(logdir) / "stderr", "wb")  # noqa: SIM115
            proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=logdir, start_new_session=True)
        except Exception as e:  # noqa: BLE001 - a step that cannot start fails like one that exits non-zero
            (Path(logdir) / "stderr").write_text(f"cannot start the step: {e}\n")
            proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
        c.running = (step, proc, logdir)

    def _command(self, step: Any, region: str, logdir: Path) -> list[str]:
        args = [str(a) for a in step.args]
        if not step.jar.endswith("command-runner.jar") or not args:
            raise ValueError(f"only command-runner.jar steps run on the embedded endpoint (got {step.jar!r})")
        if args[0] != "spark-submit":
            return args
        submit = spark_submit()
        if submit is None:
            raise FileNotFoundError("spark-submit not found (pip install pyspark)")
        out = [submit, "--master", "local[2]"]
        rest = args[1:]
        i = 0
        while i < len(rest):
            a = rest[i]
            if a in ("--deploy-mode", "--master"):
                i += 2
                continue
            if a.startswith("s3://") and a.endswith(".py"):
                a = str(self._download(region, a, logdir / "scripts"))
            out.append(a)
            i += 1
        return out

    def _upload_logs(self, cluster: Any, step: Any, logdir: str, region: str) -> str | None:
        log_uri = getattr(cluster, "log_uri", None)
        if not log_uri or not str(log_uri).startswith("s3://"):
            return None
        bucket, _, prefix = str(log_uri)[len("s3://"):].partition("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        base = f"{prefix}{cluster.id}/steps/{step.id}/"
        try:
            s3 = self._s3(region)
            for name in ("stdout", "stderr"):
                data = (Path(logdir) / name).read_bytes()
                s3.put_object(Bucket=bucket, Key=f"{base}{name}.gz", Body=gzip.compress(data))
        except Exception:  # noqa: BLE001 - a log bucket that does not exist is not the step's failure
            return None
        return f"s3://{bucket}/{base}stderr.gz"

    def _terminated_from_outside(self, cluster: Any, c: _Cluster) -> None:
        from moto.core.utils import utcnow

        if c.running is not None:
            step, proc, _logdir = c.running
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass
                proc.wait()
            step.state = "CANCELLED"
            step.end_date_time = utcnow()
            c.running = None
        for s in cluster.steps:
            if s.state == "PENDING":
                s.state = "CANCELLED"
        cluster.last_state_change_reason = "Terminated by user request"
        cluster.last_state_change_code = "USER_REQUEST"
        c.phase = "done"


_runner: EmrStepRunner | None = None


def start(url: str) -> EmrStepRunner:
    """Start the runner once per process (the embedded endpoint calls this before serving)."""
    global _runner
    if _runner is None:
        _runner = EmrStepRunner(url)
        _runner.start()
    return _runner
