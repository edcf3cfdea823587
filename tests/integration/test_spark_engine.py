"""The spark engine on local Spark: same snapshots and restores as the local engine, errors intact.

One SparkSession (``local[2]``) for the whole module, started with the
engine's own conf; the engine joins it. DynamoDB against the moto server,
MySQL against MariaDB at 127.0.0.1:3306 (skipped when it is not running), and
one ``spark-submit`` of ``spark_jobs/run_tasks.py`` - the path EMR will take.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backupctl.aws import AwsContext
from backupctl.engines import LocalEngine, TaskContext, get_engine
from backupctl.engines.spark import SparkEngine, build_job, session_builder
from backupctl.errors import InvalidInput, NotFound
from backupctl.repository import Repository, RepoURI
from backupctl.restore import DynamoRestoreOptions, MySQLRestoreOptions, restore_dynamodb, restore_mysql
from backupctl.snapshot import DynamoSnapshotOptions, MySQLSnapshotOptions, snapshot_dynamodb, snapshot_mysql
from backupctl.sources import dynamodb as ddb_source
from backupctl.sources import mysql as mysql_source
from tests.integration.helpers import make_table, python_items, scan_all
from tests.integration.mysql_db import HOST, PORT, connect, rows_of, scratch_databases, server_up

pytestmark = [pytest.mark.integration, pytest.mark.slow]

pytest.importorskip("pyspark")
if shutil.which("java") is None:  # pragma: no cover
    pytest.skip("Spark needs Java (17)", allow_module_level=True)

SRC, DST = "us-east-1", "us-west-2"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One local Spark for every test here; its JVM is stopped and reaped afterwards."""
    from pyspark import SparkContext

    session = session_builder("local[2]", "backupctl-tests").getOrCreate()
    gateway = SparkContext._gateway
    try:
        yield session
    finally:
        session.stop()
        proc = getattr(gateway, "proc", None)
        if gateway is not None:
            gateway.shutdown()
        if proc is not None:
            proc.stdin.close()  # the JVM exits when its stdin closes
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # pragma: no cover
                proc.kill()
                proc.wait()
        SparkContext._gateway = None
        SparkContext._jvm = None


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def advance(self, items: int = 0, nbytes: int = 0) -> None:
        self.calls.append((items, nbytes))

    def note(self, text: str) -> None:
        pass

    @property
    def items(self) -> int:
        return sum(i for i, _ in self.calls)


def recording_factory(record: list[Progress]):  # type: ignore[no-untyped-def]
    @contextlib.contextmanager
    def factory(_description: str, _total: int | None) -> Iterator[Progress]:
        p = Progress()
        record.append(p)
        yield p

    return factory


def ddb_snapshot(aws: AwsContext, table: str, repo: str, engine: str, progress: list[Progress] | None = None):  # type: ignore[no-untyped-def]
    opts = DynamoSnapshotOptions(table=table, source_region=SRC, target_region=DST, repo_uri=repo, segments=4,
                                 workers=4, engine=engine, max_rcu=5000)
    return snapshot_dynamodb(aws, opts, progress_factory=recording_factory(progress) if progress is not None else None)


def ddb_restore(aws: AwsContext, snapshot_id: str, repo: str, table: str, engine: str) -> dict[str, Any]:
    return restore_dynamodb(aws, DynamoRestoreOptions(snapshot_id=snapshot_id, table=table, region=DST, repo_uri=repo,
                                                      workers=4, engine=engine, max_wcu=5000))


def test_dynamodb_snapshot_and_restore_match_across_engines(aws: AwsContext, spark: Any, name: str) -> None:
    make_table(aws, SRC, name, 1500)
    repo = f"s3://{name}-repo/bk"
    local = ddb_snapshot(aws, name, repo, "local")
    progress: list[Progress] = []
    on_spark = ddb_snapshot(aws, name, repo, "spark", progress)
    assert on_spark.manifest.engine == "spark" and local.manifest.engine == "local"
    assert on_spark.manifest.rows == local.manifest.rows == 1500
    assert on_spark.manifest.content_digest == local.manifest.content_digest
    assert [p.rows for p in on_spark.manifest.parts] == [p.rows for p in local.manifest.parts]
    # Progress moves per finished task, by its rows.
    (p,) = progress
    assert p.items == 1500 and len(p.calls) == 4

    source = python_items(scan_all(aws, SRC, name))
    for snap, engine in ((local, "spark"), (on_spark, "local")):
        target = f"{name}-from-{snap.manifest.engine}"
        r = ddb_restore(aws, snap.manifest.id, repo, target, engine)
        assert r["engine"] == engine and r["rows"] == 1500 and r["digest"] == local.manifest.content_digest
        assert python_items(scan_all(aws, DST, target)) == source


def test_dynamodb_task_error_fails_the_run_without_manifest(aws: AwsContext, spark: Any, name: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment that fails on an executor fails the run; the other segments' parts are no snapshot."""
    make_table(aws, SRC, name, 200)
    repo = f"s3://{name}-repo/bk"
    real = ddb_source.plan_export

    def broken(**kw: Any) -> list[dict[str, Any]]:
        specs = real(**kw)
        specs[1]["table"] = name + "-gone"
        return specs

    monkeypatch.setattr(ddb_source, "plan_export", broken)
    with pytest.raises(Exception) as info:
        ddb_snapshot(aws, name, repo, "spark")
    assert "ResourceNotFoundException" in str(info.value) and "\n" not in str(info.value)
    assert getattr(info.value, "exit_code", None) == 1
    r = Repository.open(aws, DST, repo, create=False)
    assert list(r.list_snapshots()) == []
    assert not [k for k in r.store.list_keys("snapshots/") if k.endswith("manifest.json")]


def test_restore_error_in_executor_is_one_line_with_its_exit_code(
    aws: AwsContext, spark: Any, name: str, moto_server: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the CLI (in this process, so it joins the running Spark): a missing part -> NotFound, exit 3."""
    from backupctl.cli.main import main

    make_table(aws, SRC, name, 300)
    repo = f"s3://{name}-repo/bk"
    snap = ddb_snapshot(aws, name, repo, "local")
    r = Repository.open(aws, DST, repo, create=False)
    prefix, manifest = r.find_snapshot(snap.manifest.id)
    r.store.delete([prefix + manifest.parts[0].key])
    # The pre-restore check would refuse the snapshot on the driver (exit 5); skip it to fail in an executor.
    monkeypatch.setattr(Repository, "check_parts", lambda self, groups, workers=16: 0)
    monkeypatch.setenv("BACKUPCTL_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("COLUMNS", "400")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["--quiet", "restore", snap.manifest.id, "--to-table", f"{name}-x", "--region", DST, "--repo", repo,
              "--engine", "spark", "--spark-master", "local[2]", "--max-wcu", "1000"])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert exit_info.value.code == 3, err
    assert len(errors) == 1 and "is missing" in errors[0] and "Traceback" not in err, err


def test_cli_refuses_bad_engine_options(spark: Any, moto_server: str, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Refused while parsing options: before any AWS call."""
    from backupctl.cli.main import main

    monkeypatch.setenv("BACKUPCTL_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("COLUMNS", "400")
    for extra, want in ((["--engine", "emr", "--emr-release", "7"], "invalid --emr-release '7'"),
                        (["--engine", "emr", "--cluster-id", "cluster-1"], "invalid --cluster-id 'cluster-1'"),
                        (["--engine", "emr", "--tag", "novalue"], "invalid --tag 'novalue'"),
                        (["--engine", "spark", "--spark-master", "nonsense"], "invalid --spark-master 'nonsense'")):
        with pytest.raises(SystemExit) as exit_info:
            main(["snapshot", "--table", "t", "--from", SRC, "--to", DST, "--repo", "s3://nowhere-x/p", *extra])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and want in err, err


def test_spark_submit_runs_a_job_spec(aws: AwsContext, spark: Any, name: str, tmp_path: Path) -> None:
    """spark_jobs/run_tasks.py under spark-submit runs the same task functions and hands back the parts."""
    make_table(aws, SRC, name, 400)
    repo = Repository.open(aws, DST, f"s3://{name}-repo/bk", create=True)

    def plan(prefix: str) -> list[dict[str, Any]]:
        return ddb_source.plan_export(aws=aws, region=SRC, table=name, repo=RepoURI(repo.uri.bucket, repo.uri.prefix),
                                      repo_region=DST, snapshot_prefix=prefix, segments=3, read_budget=None,
                                      concurrency=3)

    local = LocalEngine(3).run(plan("local/"), ddb_source.run_export_task, TaskContext())
    job, results = tmp_path / "job.json", tmp_path / "results.json"
    job.write_text(json.dumps(build_job(plan("submit/"), ddb_source.run_export_task)))
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]",
         "--conf", "spark.ui.enabled=false", "--conf", "spark.ui.showConsoleProgress=false",
         "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.driver.bindAddress=127.0.0.1",
         str(ROOT / "spark_jobs" / "run_tasks.py"), "--job", str(job), "--results", str(results)],
        capture_output=True, text=True, env=env, timeout=180,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    outcomes = json.loads(results.read_text())["outcomes"]
    assert [o["ok"] for o in outcomes] == [True] * 3
    got = [o["result"] for o in outcomes]
    assert [(r["rows"], r["digest"]) for r in got] == [(r["rows"], r["digest"]) for r in local]
    assert sum(r["rows"] for r in got) == 400


# -- MySQL ----------------------------------------------------------------------

needs_mysql = pytest.mark.skipif(not server_up(), reason="MariaDB at 127.0.0.1:3306 is not running")


@pytest.fixture
def dbs() -> Iterator[tuple[str, str]]:
    with scratch_databases("bk_spark") as pair:
        yield pair




def _mysql_snapshot(aws: AwsContext, db: str, repo: str, engine: str, consistency: str):  # type: ignore[no-untyped-def]
    return snapshot_mysql(aws, MySQLSnapshotOptions(
        source_uri=f"mysql://root@{HOST}:{PORT}/{db}", table="types", source_region=SRC, target_region=DST,
        repo_uri=repo, chunk_rows=7, consistency=consistency, workers=4, engine=engine, resume=False))


@needs_mysql
def test_mysql_full_snapshot_and_restore_match_across_engines(aws: AwsContext, spark: Any, name: str,
                                                              dbs: tuple[str, str]) -> None:
    from tests.integration.test_mysql_cli import create_types_table

    src, dst = dbs
    create_types_table(src, "types", extra_rows=30)
    repo = f"s3://{name}-repo/bk"
    local = _mysql_snapshot(aws, src, repo, "local", "snapshot")
    on_spark = _mysql_snapshot(aws, src, repo, "spark", "none")
    assert local.manifest.rows == on_spark.manifest.rows == 34
    assert len(on_spark.manifest.parts) > 2  # several chunks, one Spark partition each
    assert on_spark.manifest.content_digest == local.manifest.content_digest
    assert on_spark.extra["table_digest"] == local.extra["table_digest"]

    want = rows_of(src, "types", "id, part")
    for snap, engine in ((local, "spark"), (on_spark, "local")):
        table = f"from_{snap.manifest.engine}"
        r = restore_mysql(aws, MySQLRestoreOptions(snapshot_id=snap.manifest.id, target_uri=f"mysql://root@{HOST}:{PORT}/{dst}",
                                                   region=DST, table=table, repo_uri=repo, workers=4, engine=engine))
        assert r["engine"] == engine and r["rows"] == 34 and r["verification"] == "table"
        assert rows_of(dst, table, "id, part") == want


@needs_mysql
def test_mysql_spark_refuses_driver_held_consistency_and_reports_executor_errors(
    aws: AwsContext, spark: Any, name: str, dbs: tuple[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    src, _ = dbs
    c = connect(src)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE types (id INT NOT NULL, part INT NOT NULL, v VARCHAR(10), PRIMARY KEY (id, part))")
        cur.executemany("INSERT INTO types VALUES (%s, %s, %s)", [(i, 0, f"v{i}") for i in range(20)])
    c.close()
    repo = f"s3://{name}-repo/bk"
    with pytest.raises(InvalidInput, match="--consistency snapshot .* --consistency none with --engine spark"):
        _mysql_snapshot(aws, src, repo, "spark", "snapshot")

    real = mysql_source.plan_export

    def broken(**kw: Any) -> list[dict[str, Any]]:
        specs = real(**kw)
        specs[1]["table"] = "no_such_table"
        return specs

    monkeypatch.setattr(mysql_source, "plan_export", broken)
    with pytest.raises(NotFound, match="no_such_table") as info:
        _mysql_snapshot(aws, src, repo, "spark", "none")
    assert info.value.exit_code == 3 and "\n" not in info.value.message
    r = Repository.open(aws, DST, repo, create=False)
    assert not [k for k in r.store.list_keys("snapshots/") if k.endswith("manifest.json")]


def test_get_engine_spark_joins_the_running_session(spark: Any) -> None:
    engine = get_engine("spark", 4, spark_master="local[2]")
    assert isinstance(engine, SparkEngine)
    assert engine.spark_context() is spark.sparkContext
