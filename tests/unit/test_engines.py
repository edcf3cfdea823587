"""Engine selection, the task registry and the spark engine's driver-side rules (no Spark needed)."""

from __future__ import annotations

import threading

import pytest

from backupctl.engines import LocalEngine, TaskContext, configure, get_engine, registry
from backupctl.engines import spark as sp
from backupctl.errors import EXIT_INTERNAL, InvalidInput, NotFound, VerificationFailed
from backupctl.sources import dynamodb as ddb_source
from backupctl.targets import mysql as mysql_target


def test_get_engine_choices() -> None:
    configure(None)  # an in-process CLI run with --spark-master may have set it
    assert isinstance(get_engine("local", 3), LocalEngine)
    assert isinstance(get_engine("auto", 3), LocalEngine)  # the callers resolve auto first (auto_choice)
    eng = get_engine("spark", 3)
    assert isinstance(eng, sp.SparkEngine) and eng.master == "local[*]" and eng.workers == 3
    from backupctl.engines.emr import EmrEngine

    assert isinstance(get_engine("emr", 3), EmrEngine)
    with pytest.raises(InvalidInput, match="not available"):
        get_engine("hadoop", 3)


def test_configure_sets_the_spark_master() -> None:
    try:
        configure(spark_master="spark://h:7077")
        assert get_engine("spark", 1).master == "spark://h:7077"  # type: ignore[attr-defined]
        assert get_engine("spark", 1, spark_master="local[2]").master == "local[2]"  # type: ignore[attr-defined]
    finally:
        configure(None)
    with pytest.raises(InvalidInput, match="invalid --spark-master"):
        configure(spark_master="spark:/oops")


@pytest.mark.parametrize("master", ["local", "local[*]", "local[4]", "local[4,2]", "spark://a:7077",
                                    "spark://a:7077,b:7077", "yarn", "k8s://https://api:6443"])
def test_valid_masters(master: str) -> None:
    assert sp.check_master(master) == master


@pytest.mark.parametrize("master", ["", "local[x]", "yarn-client ", "spark:/a", "http://x"])
def test_invalid_masters(master: str) -> None:
    with pytest.raises(InvalidInput):
        sp.check_master(master)


def test_registry_names_and_functions() -> None:
    assert registry.resolve("dynamodb.export") is ddb_source.run_export_task
    assert registry.resolve("mysql.load") is mysql_target.run_load_task
    assert registry.name_of(ddb_source.run_export_task) == "dynamodb.export"
    assert registry.name_of(lambda s, c: {}) is None
    # A closure (driver state) falls back to the spec's kind; an unknown kind is refused.
    assert registry.function_name({"kind": "mysql.load"}, lambda s, c: {}) == "mysql.load"
    assert registry.function_name({"kind": "x"}, ddb_source.run_export_task) == "dynamodb.export"
    with pytest.raises(InvalidInput, match="only on the local engine"):
        registry.function_name({"kind": "x", "task_id": "t1"}, lambda s, c: {})
    with pytest.raises(InvalidInput, match="unknown task function"):
        registry.resolve("nope")
    for name in registry.TASK_FUNCTIONS:
        assert callable(registry.resolve(name))


def test_job_spec_round_trip() -> None:
    specs = [{"kind": "dynamodb.export", "task_id": f"seg-{i}"} for i in range(3)]
    job = sp.build_job(specs, ddb_source.run_export_task)
    assert sp.job_items(job) == [("dynamodb.export", s) for s in specs]
    with pytest.raises(InvalidInput, match="not a backupctl Spark job spec"):
        sp.job_items({"tasks": []})


def test_errors_cross_as_data() -> None:
    e = sp.rebuild_error(sp.describe_error(NotFound("part s3://b/k is missing")))
    assert type(e) is NotFound and e.message == "part s3://b/k is missing" and e.exit_code == 3
    e = sp.rebuild_error(sp.describe_error(VerificationFailed("a\nb")))
    assert type(e) is VerificationFailed and e.message == "a"  # one line
    e = sp.rebuild_error(sp.describe_error(KeyError("x")))
    assert isinstance(e, sp.TaskFailed) and e.message == "KeyError: 'x'" and e.exit_code == EXIT_INTERNAL
    e = sp.rebuild_error({"module": "backupctl.gone", "class": "Foo", "message": "m", "exit_code": 7})
    assert e.message == "m" and e.exit_code == 7


def test_run_one_returns_errors_as_outcomes() -> None:
    out = sp.run_one(("dynamodb.export", {"task_id": "seg-1"}))
    assert out["ok"] is False and out["task_id"] == "seg-1" and out["error"]["class"] == "KeyError"
    out = sp.run_one(("nope", {"task_id": "t"}))
    assert out["ok"] is False and out["error"]["class"] == "InvalidInput" and out["error"]["exit_code"] == 2


def test_reshare_splits_the_budget_over_real_slots() -> None:
    spec = {"read_rate": 250.0, "write_rate": None}  # planned: 1000 RCU/s over min(workers=4, 8 tasks)
    assert sp.reshare(spec, workers=4, n_tasks=8, slots=4)["read_rate"] == 250.0
    assert sp.reshare(spec, workers=4, n_tasks=8, slots=2)["read_rate"] == 500.0  # 2 at once: 500 each
    assert sp.reshare(spec, workers=4, n_tasks=8, slots=16)["read_rate"] == 125.0  # 8 at once: 125 each
    assert sp.reshare(spec, workers=4, n_tasks=8, slots=None)["read_rate"] == 125.0  # unknown: all at once
    assert sp.reshare(spec, workers=4, n_tasks=8, slots=2)["write_rate"] is None
    # On a resume with 3 tasks left (planned share 1000/4 = 250): never more than the budget in total.
    assert sp.reshare(spec, workers=4, n_tasks=3, slots=16)["read_rate"] * 3 <= 1000


def test_task_slots_from_conf() -> None:
    assert sp.task_slots({"spark.master": "local[*]"}, 2) == 2
    assert sp.task_slots({"spark.master": "spark://h:7077", "spark.cores.max": "12"}, 2) == 12
    assert sp.task_slots({"spark.master": "yarn", "spark.executor.instances": "5", "spark.executor.cores": "4"}, 2) == 20
    assert sp.task_slots({"spark.master": "yarn", "spark.dynamicAllocation.enabled": "true",
                          "spark.dynamicAllocation.maxExecutors": "10", "spark.executor.cores": "2"}, 2) == 20
    assert sp.task_slots({"spark.master": "yarn", "spark.dynamicAllocation.enabled": "true"}, 2) is None
    assert sp.task_slots({"spark.master": "k8s://x"}, 2) is None


def test_password_sources_on_cluster_masters() -> None:
    specs = [{"mysql": {"password_source": "env", "password_file": None}}]
    sp.check_secrets(specs, "local[*]")  # executors inherit this process's environment
    with pytest.raises(InvalidInput, match="MYSQL_PWD.*--password-file"):
        sp.check_secrets(specs, "spark://h:7077")
    with pytest.raises(InvalidInput, match="my.cnf"):
        sp.check_secrets([{"mysql": {"password_source": "option-file"}}], "yarn")
    sp.check_secrets([{"mysql": {"password_source": "file", "password_file": "/etc/pw"}}], "yarn")
    sp.check_secrets([{"kind": "dynamodb.export"}], "yarn")


def test_driver_held_consistency_is_refused() -> None:
    class ReadSessions:
        consistent = True

    sessions = ReadSessions()

    def bound(spec, ctx):  # type: ignore[no-untyped-def]
        return {"s": sessions}

    with pytest.raises(InvalidInput, match="--consistency none with --engine spark"):
        sp.check_driver_state(bound)
    sessions.consistent = False
    sp.check_driver_state(bound)
    sp.check_driver_state(ddb_source.run_export_task)


def test_spark_engine_runs_nothing_for_no_tasks() -> None:
    assert sp.SparkEngine("local[1]").run([], ddb_source.run_export_task, TaskContext(stop=threading.Event())) == []


def test_auto_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """--engine auto: threads for small or I/O-bound work, processes for big MySQL tables, Spark only on a cluster."""
    import os

    from backupctl.engines import AUTO_PROCESS_MIN_ROWS, AUTO_SPARK_MIN_ROWS, auto_choice

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    configure(None)
    assert auto_choice("mysql", AUTO_PROCESS_MIN_ROWS - 1, 10)[:2] == ("local", 1)
    assert auto_choice("mysql", AUTO_PROCESS_MIN_ROWS, 10)[:2] == ("local", 4)
    assert auto_choice("mysql", AUTO_PROCESS_MIN_ROWS, 3)[:2] == ("local", 3)  # no more processes than tasks
    assert auto_choice("mysql", AUTO_PROCESS_MIN_ROWS * 10, 1)[:2] == ("local", 1)  # one chunk: nothing to share
    assert auto_choice("dynamodb", AUTO_SPARK_MIN_ROWS * 2, 8)[:2] == ("local", 1)  # no cluster: threads
    try:
        configure(spark_master="local[*]")  # a local master is not a cluster
        assert auto_choice("mysql", AUTO_SPARK_MIN_ROWS, 10)[0] == "local"
        configure(spark_master="spark://h:7077")
        engine, _, why = auto_choice("dynamodb", AUTO_SPARK_MIN_ROWS, 8)
        assert engine == "spark" and "spark://h:7077" in why
        assert auto_choice("dynamodb", AUTO_SPARK_MIN_ROWS - 1, 8)[0] == "local"
    finally:
        configure(None)


def test_resolve_engine_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local engine's worker processes: the option, else --processes, else the auto rule (big MySQL only)."""
    import os

    from backupctl.engines import AUTO_PROCESS_MIN_ROWS, configure_processes, resolve_engine

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    big = AUTO_PROCESS_MIN_ROWS * 3
    try:
        configure_processes(None)
        assert resolve_engine("local", None, "mysql", big, 10) == ("local", 2, None)
        assert resolve_engine("local", None, "mysql", 1000, 10) == ("local", 1, None)
        assert resolve_engine("local", None, "dynamodb", big, 10) == ("local", 1, None)
        assert resolve_engine("local", 1, "mysql", big, 10) == ("local", 1, None)  # explicit threads
        assert resolve_engine("local", 3, "mysql", big, 1) == ("local", 1, None)  # one task: nothing to share
        assert resolve_engine("spark", None, "mysql", big, 10)[:2] == ("spark", 1)
        name, procs, why = resolve_engine("auto", None, "mysql", big, 10)
        assert (name, procs) == ("local", 2) and why and "worker processes" in why
        configure_processes(1)  # --processes 1
        assert resolve_engine("local", None, "mysql", big, 10) == ("local", 1, None)
    finally:
        configure_processes(None)
