"""The spark engine: every task is one Spark partition of one job (docs/adr/0009).

The driver side runs *in process*: backupctl starts (or joins) a SparkSession
with pyspark - master ``local[*]`` by default, or any ``--spark-master``
(``spark://HOST:7077``, ``yarn``, ``k8s://...``) - and runs

    sc.parallelize([(name, spec), ...], numSlices=len(specs)).map(run_one).collect()

where ``name`` is the registered task function (``backupctl.engines.registry``)
and ``run_one`` runs it on an executor. The task functions are the ones the
local engine runs; all their I/O goes through boto3 / pyarrow / pymysql, so
stock pyspark from PyPI with Java 17 is enough: no Hadoop S3A or connector
jars, nothing downloaded at run time.

``spark_jobs/run_tasks.py`` is the same job for ``spark-submit`` (what EMR
will run): it reads a job spec (``build_job``) from a file or ``s3://`` and
writes the outcomes back with ``run_job``.

What crosses the wire:

* Results. Each task's outcome goes back twice: through an accumulator, which
  the driver sees as each task finishes (per-task checkpoints and progress,
  advanced by the task's rows), and through ``collect`` (the authority, in
  spec order).
* Errors. A task error never fails the Spark task: ``run_one`` returns it as
  an outcome (class, module, message, exit code), so Spark does not retry a
  deterministic error, the driver cancels the job at the first one, and
  re-creates the BackupctlError subclass with its message and exit code.
  Spark-level failures (an executor lost more than ``spark.task.maxFailures``
  times) fail the run with one DataPathError line.
* Capacity. Executors share no token bucket: each task throttles itself with
  the spec's ``read_rate``/``write_rate``. The planner split the budget over
  ``min(workers, tasks)``; this engine re-splits it over the task slots Spark
  really has, when it can know them (see ``task_slots``), else over every task.
* Secrets. MySQL specs carry no password, only where to read it. On a local
  master the executors are child processes of this one: they inherit
  MYSQL_PWD and read ~/.my.cnf or --password-file as the local engine does. On
  a cluster master only ``--password-file PATH`` works (a file at that path
  on every executor node); MYSQL_PWD / ~/.my.cnf are refused up front, and
  nothing secret is put in the Spark conf or environment.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from backupctl.engines import registry
from backupctl.engines.local import TaskContext, TaskFn
from backupctl.errors import EXIT_INTERNAL, BackupctlError, DataPathError, InvalidInput
from backupctl.model import TaskSpec

DEFAULT_MASTER = "local[*]"
JOB_FORMAT = "backupctl.spark-job/1"

_MASTER_RE = re.compile(
    r"^(local(\[(\*|\d+)(,\d+)?\])?|spark://[^\s/]+(:\d+)?(,[^\s/]+(:\d+)?)*|yarn|k8s://\S+|mesos://\S+)$"
)

# Modest and quiet: no UI, no console progress bar, small shuffles (the job has none), log level ERROR.
SPARK_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.driver.memory": "1g",
    "spark.python.worker.reuse": "true",
}

# Root at WARN (Spark then prints no "Setting default log level" banner; the engine sets ERROR
# right after start), and the start-up warnings of a laptop (no native Hadoop) silenced.
_LOG4J2 = """\
rootLogger.level = warn
logger.hadoop.name = org.apache.hadoop
logger.hadoop.level = error
logger.sparkenv.name = org.apache.spark.SparkEnv
logger.sparkenv.level = error
logger.utils.name = org.apache.spark.util.Utils
logger.utils.level = error
rootLogger.appenderRef.stderr.ref = stderr
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n
"""

RATE_FIELDS = ("read_rate", "write_rate")


class TaskFailed(BackupctlError):
    """A task raised something that is not a backupctl error (a bug, an unexpected library error)."""

    exit_code = EXIT_INTERNAL


def check_master(master: str) -> str:
    if not _MASTER_RE.match(master or ""):
        raise InvalidInput(
            f"invalid --spark-master '{master}': expected local[*], local[N], spark://HOST:7077, yarn or k8s://..."
        )
    return master


def is_local_master(master: str) -> bool:
    return master == "local" or master.startswith("local[")


# -- executor side --------------------------------------------------------------


def describe_error(e: BaseException) -> dict[str, Any]:
    """An exception as data: enough to re-create a BackupctlError on the driver."""
    message = e.message if isinstance(e, BackupctlError) else str(e)
    return {
        "module": type(e).__module__,
        "class": type(e).__qualname__,
        "message": message.splitlines()[0] if message else "",
        "exit_code": int(getattr(e, "exit_code", EXIT_INTERNAL)),
    }


def run_one(item: tuple[str, TaskSpec]) -> dict[str, Any]:
    """Run one task on an executor; returns its outcome and never raises for a task error."""
    name, spec = item
    outcome: dict[str, Any] = {"task_id": spec.get("task_id"), "function": name}
    try:
        fn = registry.resolve(name)
        outcome.update(ok=True, result=fn(spec, TaskContext()))
    except Exception as e:  # noqa: BLE001 - reported to the driver as data, re-raised there
        outcome.update(ok=False, error=describe_error(e))
    return outcome


def rebuild_error(err: dict[str, Any]) -> BackupctlError:
    """The driver-side exception for an executor's ``describe_error``: same class and message if it is ours."""
    module, cls_name, message = str(err.get("module", "")), str(err.get("class", "")), str(err.get("message", ""))
    if module == "backupctl" or module.startswith("backupctl."):
        try:
            cls = getattr(__import__(module, fromlist=[cls_name]), cls_name)
            if isinstance(cls, type) and issubclass(cls, BackupctlError):
                return cls(message)
        except (ImportError, AttributeError, TypeError):
            pass
        e = BackupctlError(message)
    else:
        e = TaskFailed(f"{cls_name}: {message}" if message else cls_name)
    e.exit_code = int(err.get("exit_code") or EXIT_INTERNAL)
    return e


# -- job specs (spark-submit / EMR) -----------------------------------------------


def build_job(tasks: Sequence[TaskSpec], fn: Callable[..., Any] | None = None) -> dict[str, Any]:
    """A job spec: the tasks and, per task, the registered function an executor runs for it."""
    return {
        "format": JOB_FORMAT,
        "tasks": [{"function": registry.function_name(s, fn), "spec": s} for s in tasks],
    }


def job_items(job: dict[str, Any]) -> list[tuple[str, TaskSpec]]:
    if job.get("format") != JOB_FORMAT:
        raise InvalidInput(f"not a backupctl Spark job spec (format {job.get('format')!r}, expected {JOB_FORMAT})")
    return [(str(t["function"]), dict(t["spec"])) for t in job.get("tasks", [])]


def run_job(sc: Any, job: dict[str, Any]) -> list[dict[str, Any]]:
    """Run a job spec on SparkContext ``sc``: one partition per task; outcomes in task order."""
    items = job_items(job)
    if not items:
        return []
    outcomes: list[dict[str, Any]] = sc.parallelize(items, numSlices=len(items)).map(run_one).collect()
    return outcomes


# -- driver side ----------------------------------------------------------------


def task_slots(conf: Any, default_parallelism: int) -> int | None:
    """How many tasks can run at once, when it is knowable from the conf; None when it is not.

    Local masters: the threads of ``local[N]`` (``local[*]``: the cores).
    Clusters: the executor cores that are configured (spark.cores.max, or
    executor instances x cores, or with dynamic allocation its maximum).
    Executors register after the session starts, so ``defaultParallelism``
    alone would under-count them and over-spend the capacity budget.
    """
    master = str(conf.get("spark.master", ""))
    if is_local_master(master):
        return max(1, default_parallelism)
    cores = int(conf.get("spark.executor.cores", "0") or 0)
    if str(conf.get("spark.dynamicAllocation.enabled", "false")).lower() == "true":
        max_exec = conf.get("spark.dynamicAllocation.maxExecutors", None)
        return int(max_exec) * cores if max_exec and cores else None
    if conf.get("spark.cores.max", None):
        return int(conf.get("spark.cores.max"))
    instances = conf.get("spark.executor.instances", None)
    return int(instances) * cores if instances and cores else None


def reshare(spec: TaskSpec, workers: int, n_tasks: int, slots: int | None) -> TaskSpec:
    """Re-split a per-task capacity share over the task slots Spark really runs at once.

    The planner gave each task budget / min(workers, tasks) (ADR 0001). With
    ``c`` concurrent tasks each may use budget / c: rate * min(workers, n) / c,
    with c = min(slots, n), or c = n when the slots are unknown. Using the
    tasks of this run (n, at most the planned count on a resume) errs low.
    """
    concurrency = min(slots, n_tasks) if slots else n_tasks
    planned = min(max(1, workers), n_tasks)
    out = dict(spec)
    for f in RATE_FIELDS:
        if out.get(f):
            out[f] = float(out[f]) * planned / max(1, concurrency)
    return out


def check_secrets(specs: Sequence[TaskSpec], master: str) -> None:
    """Refuse MySQL password sources that cannot reach executors on a cluster master."""
    if is_local_master(master):
        return
    for s in specs:
        src = (s.get("mysql") or {}).get("password_source")
        if src in ("env", "option-file"):
            where = "MYSQL_PWD" if src == "env" else "~/.my.cnf"
            raise InvalidInput(
                f"the MySQL password comes from {where}, which Spark executors on {master} do not have: "
                "use --password-file PATH with the file at that path on every executor node"
            )


def check_driver_state(fn: Callable[..., Any]) -> None:
    """Refuse a task function bound to driver state that executors cannot share.

    A MySQL ``--consistency snapshot`` run holds one read view in connections
    the driver opened; a Spark executor would read with its own connection,
    silently without that view.
    """
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if type(value).__name__ == "ReadSessions" and getattr(value, "consistent", False):
            raise InvalidInput(
                "--consistency snapshot reads every chunk in one read view held by the driver's connections, "
                "which Spark executors cannot share: use --consistency none with --engine spark, "
                "or --engine local"
            )


def _ensure_pyspark() -> Any:
    try:
        import pyspark.sql
    except ImportError as e:
        raise InvalidInput("--engine spark needs pyspark: pip install 'backupctl[spark]' (and Java 17)") from e
    return pyspark.sql


_owned_lock = threading.Lock()
_owned: list[Any] = []


def _stop_owned() -> None:
    with _owned_lock:
        while _owned:
            try:
                _owned.pop().stop()
            except Exception:  # noqa: BLE001 - at exit, best effort
                pass


def log4j_config() -> str:
    """A log4j2 properties file that keeps the JVM quiet (errors only, on stderr)."""
    path = os.path.join(tempfile.gettempdir(), "backupctl-spark-log4j2.properties")
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == _LOG4J2:
                return path
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(prefix="backupctl-log4j2-", suffix=".properties")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(_LOG4J2)
    os.replace(tmp, path)
    return path


def session_builder(master: str, app_name: str = "backupctl") -> Any:
    """A SparkSession builder with backupctl's conf (used by the engine and the test fixture)."""
    sql = _ensure_pyspark()
    if is_local_master(master):
        # Executors are child processes of this one: run them with this interpreter (the venv).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = sql.SparkSession.builder.master(master).appName(app_name)
    for k, v in SPARK_CONF.items():
        builder = builder.config(k, v)
    if is_local_master(master):
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    return builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j_config()}")


class SparkEngine:
    name = "spark"

    def __init__(self, master: str = DEFAULT_MASTER, workers: int = 8, poll_s: float = 0.2) -> None:
        self.master = check_master(master)
        self.workers = max(1, workers)
        self.poll_s = poll_s

    def spark_context(self) -> Any:
        """The running SparkContext (e.g. a test's), else a new session on ``self.master``, stopped at exit."""
        _ensure_pyspark()
        from pyspark import SparkContext

        sc = SparkContext._active_spark_context
        if sc is None:
            spark = session_builder(self.master).getOrCreate()
            sc = spark.sparkContext
            with _owned_lock:
                if not _owned:
                    atexit.register(_stop_owned)
                _owned.append(spark)
        sc.setLogLevel("ERROR")
        return sc

    def run(
        self,
        tasks: Sequence[TaskSpec],
        fn: TaskFn,
        ctx: TaskContext,
        on_result: Callable[[TaskSpec, dict[str, Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Run every task as one partition of one Spark job; results in spec order.

        ``on_result`` and ``ctx.progress`` see each task as it finishes. The
        first task error cancels the job and is re-raised here (same class,
        same message); nothing is committed by this engine.
        """
        if not tasks:
            return []
        check_driver_state(fn)
        check_secrets(tasks, self.master)
        job = build_job(tasks, fn)
        sc = self.spark_context()
        slots = task_slots(sc.getConf(), int(sc.defaultParallelism))
        items = [(name, reshare(spec, self.workers, len(tasks), slots)) for name, spec in job_items(job)]
        return self._run_items(sc, tasks, items, ctx, on_result)

    def _run_items(
        self,
        sc: Any,
        tasks: Sequence[TaskSpec],
        items: list[tuple[str, TaskSpec]],
        ctx: TaskContext,
        on_result: Callable[[TaskSpec, dict[str, Any]], None] | None,
    ) -> list[dict[str, Any]]:
        from pyspark.accumulators import AccumulatorParam

        class _Outcomes(AccumulatorParam):  # type: ignore[type-arg]
            def zero(self, value: Any) -> list[Any]:
                return []

            def addInPlace(self, a: list[Any], b: list[Any]) -> list[Any]:  # noqa: N802 - pyspark's name
                return a + b

        acc = sc.accumulator([], _Outcomes())

        def run_reported(item: tuple[str, TaskSpec]) -> dict[str, Any]:
            outcome = run_one(item)
            acc.add([outcome])
            return outcome

        group = f"backupctl-{uuid.uuid4().hex[:12]}"
        box: dict[str, Any] = {}

        def job() -> None:
            sc.setJobGroup(group, f"backupctl: {len(items)} tasks", interruptOnCancel=True)
            try:
                box["outcomes"] = sc.parallelize(items, numSlices=len(items)).map(run_reported).collect()
            except BaseException as e:  # noqa: BLE001 - handed to the driver thread
                box["error"] = e

        by_id = {str(s["task_id"]): s for s in tasks}
        reported: set[str] = set()
        first_error: dict[str, Any] | None = None

        def handle(outcome: dict[str, Any]) -> None:
            nonlocal first_error
            tid = str(outcome.get("task_id"))
            if tid in reported:
                return
            reported.add(tid)
            if not outcome.get("ok"):
                if first_error is None:
                    first_error = outcome["error"]
                    sc.cancelJobGroup(group)
                return
            result = outcome["result"]
            ctx.advance(int(result.get("rows") or 0), int(result.get("bytes") or 0))
            if on_result is not None and tid in by_id:
                on_result(by_id[tid], result)

        thread = threading.Thread(target=job, name="backupctl-spark-job", daemon=True)
        thread.start()
        seen = 0
        try:
            while True:
                alive = thread.is_alive()
                current = acc.value
                for outcome in current[seen:]:
                    handle(outcome)
                seen = len(current)
                if ctx.stopped and first_error is None:
                    sc.cancelJobGroup(group)
                if not alive:
                    break
                thread.join(self.poll_s)
        except BaseException:
            ctx.stop.set()
            sc.cancelJobGroup(group)
            thread.join()
            raise
        if first_error is not None:
            raise rebuild_error(first_error)
        if "error" in box:
            raise job_failure(box["error"]) from None
        outcomes: list[dict[str, Any]] = box["outcomes"]
        for outcome in outcomes:
            handle(outcome)
        if first_error is not None:  # pragma: no cover - an error only collect() saw
            raise rebuild_error(first_error)
        return [o["result"] for o in outcomes]


def job_failure(e: BaseException) -> BackupctlError:
    """One line for a Spark job that failed outside the tasks (executors lost, a worker crashed)."""
    text = str(e)
    m = re.search(r"(Job aborted due to stage failure: [^\n]*|SparkException: [^\n]*)", text)
    line = (m.group(1) if m else (text.strip().splitlines() or [type(e).__name__])[0]).strip()
    return DataPathError(f"the Spark job failed: {line[:300]}")


def outcomes_json(outcomes: Sequence[dict[str, Any]]) -> bytes:
    return json.dumps({"format": JOB_FORMAT, "outcomes": list(outcomes)}, sort_keys=True).encode()
