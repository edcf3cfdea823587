#!/usr/bin/env python
"""Engines benchmark: the same snapshots and restores on --engine local and --engine spark, on this machine.

For DynamoDB tables of --ddb-items items (~1 KB each, on the embedded moto server) and MySQL
tables of --mysql-rows rows (the mixed-type table of bench/mysql.py, ~200 bytes a row, on the
local MariaDB), each measured with the wall clock around the real CLI in a subprocess:

* ``backupctl snapshot`` with ``--engine local`` and with ``--engine spark --spark-master MASTER``
  (MySQL with ``--consistency none`` on both: the spark engine cannot share the driver's
  consistent sessions);
* ``backupctl restore`` of the local engine's snapshot with each engine (DynamoDB into a new
  table; MySQL into a new database);
* Spark's fixed cost: the same snapshot of a 10-item table on both engines; the difference is
  what starting the JVM and a SparkSession adds to every spark run;
* optionally (``--emr``) the snapshot of the smallest DynamoDB table on ``--engine emr`` against
  the embedded endpoint, which runs the step with local spark-submit (cluster phases + JVM).

Every pair is checked: same rows and the same content digest on both engines, and restores
report the snapshot's digest. Results: a table, and the break-even size where spark's per-row
speed-up pays for its fixed cost (what ``--engine auto`` uses; docs/SCALING.md).

Run: ``.venv/bin/python bench/engines.py`` (defaults: DynamoDB 100,000; MySQL 100,000 and
1,000,000). DynamoDB 1,000,000 on moto takes hours (its Scan walks the table per page), so it is
opt-in: ``--ddb-items 100000,1000000``. ``--json``/``--out`` for the JSON document.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from backupctl.aws import AwsContext
from backupctl.embedded import DUMMY_CREDENTIALS, EmbeddedEndpoint


def _load(name: str, file: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(file))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


mb = _load("bench_mysql", "mysql.py")  # MySQL table generator, run_measured, code fingerprint
db = _load("bench_dynamodb", "dynamodb.py")  # DynamoDB item generator and bulk loader

SRC, DST = "us-east-1", "us-west-2"
MYSQL_DB = "bench_engines"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.results: list[dict[str, Any]] = []
        self.errors: dict[str, str] = {}
        self.env = dict(os.environ)
        if args.backupctl_src:
            self.env["PYTHONPATH"] = str(Path(args.backupctl_src).resolve())
        self.mysql = mb.Server(args.mysql_host, args.mysql_port, args.mysql_user, os.environ.get("MYSQL_PWD", ""))

    def cli(self, env: dict[str, str], name: str, *args: str) -> dict[str, Any] | None:
        cmd = [mb.backupctl_bin(), "--quiet", *args, "--json"]
        run = mb.run_measured(cmd, env, self.args.timeout, rss=True)
        fail = run.failure()
        if fail:
            self.errors[name] = fail
            mb.log(f"{name}: FAILED ({fail})")
            return None
        doc = json.loads(run.stdout)
        doc["_wall_s"] = run.wall_s
        doc["_rss_mb"] = run.rss_mb
        return dict(doc)

    def record(self, store: str, op: str, size: int, engine: str, doc: dict[str, Any] | None) -> None:
        if doc is None:
            return
        r = {"store": store, "op": op, "size": size, "engine": engine, "seconds": round(doc["_wall_s"], 2),
             "rows_per_s": round(size / doc["_wall_s"], 1), "digest": doc.get("digest"),
             "peak_rss_mb": round(doc["_rss_mb"], 1) if doc.get("_rss_mb") else None}
        self.results.append(r)
        mb.log(f"{store} {op} {size:,} on {engine}: {r['seconds']:.1f}s ({r['rows_per_s']:,.0f}/s)")

    def check_same(self, label: str, docs: list[dict[str, Any] | None]) -> None:
        got = {(d.get("rows"), d.get("digest")) for d in docs if d is not None}
        if len(got) > 1:
            self.errors[label] = f"engines disagree: {sorted(got, key=str)}"

    # -- DynamoDB ----------------------------------------------------------------------------

    def dynamodb(self, url: str, env: dict[str, str]) -> None:
        aws = AwsContext(endpoint_url=url)
        pad = db.choose_pad()[0]
        spark = ("--engine", "spark", "--spark-master", self.args.spark_master)
        for n in [10, *self.args.ddb_items]:
            table = f"bench-engines-{n}"
            mb.log(f"DynamoDB: loading {n:,} items into {table}")
            db.load_table(url, aws, table, n, pad, threads=4)
            repo = f"s3://bench-engines-{n}-repo/r"
            base = ("snapshot", "--table", table, "--from", SRC, "--to", DST, "--repo", repo, "--no-resume")
            local = self.cli(env, f"ddb snapshot {n} local", *base)
            on_spark = self.cli(env, f"ddb snapshot {n} spark", *base, *spark)
            self.record("dynamodb", "snapshot", n, "local", local)
            self.record("dynamodb", "snapshot", n, "spark", on_spark)
            self.check_same(f"dynamodb snapshot {n}", [local, on_spark])
            if self.args.emr and n == 10:
                emr = self.cli({**env, "BACKUPCTL_EMR_POLL_MAX_S": "1"}, f"ddb snapshot {n} emr", *base,
                               "--engine", "emr")
                self.record("dynamodb", "snapshot", n, "emr (embedded)", emr)
                self.check_same("dynamodb snapshot 10 emr", [local, emr])
            if n == 10 or local is None:
                continue
            for engine, extra in (("local", ()), ("spark", spark)):
                doc = self.cli(env, f"ddb restore {n} {engine}", "restore", local["snapshot_id"], "--to-table",
                               f"{table}-r-{engine}", "--region", DST, "--repo", repo, *extra)
                self.record("dynamodb", "restore", n, engine, doc)
                if doc is not None and doc.get("digest") != local.get("digest"):
                    self.errors[f"ddb restore {n} {engine}"] = "restored digest differs from the snapshot's"

    # -- MySQL -------------------------------------------------------------------------------

    def mysql_runs(self, env: dict[str, str]) -> None:
        spark = ("--engine", "spark", "--spark-master", self.args.spark_master)
        self.mysql.sql(f"DROP DATABASE IF EXISTS `{MYSQL_DB}`")
        self.mysql.sql(f"CREATE DATABASE `{MYSQL_DB}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        try:
            for n in self.args.mysql_rows:
                table = f"t{n}"
                mb.log(f"MySQL: generating {n:,} rows in {MYSQL_DB}.{table}")
                mb.create_table(self.mysql, MYSQL_DB, table, n)
                repo = f"s3://bench-engines-mysql-{n}/r"
                base = ("snapshot", "--source", self.mysql.uri(MYSQL_DB), "--table", table, "--from", SRC, "--to", DST,
                        "--repo", repo, "--consistency", "none", "--no-resume")
                local = self.cli(env, f"mysql snapshot {n} local", *base)
                on_spark = self.cli(env, f"mysql snapshot {n} spark", *base, *spark)
                self.record("mysql", "snapshot", n, "local", local)
                self.record("mysql", "snapshot", n, "spark", on_spark)
                self.check_same(f"mysql snapshot {n}", [local, on_spark])
                if local is None:
                    continue
                for engine, extra in (("local", ()), ("spark", spark)):
                    target = f"{MYSQL_DB}_r_{engine}"
                    self.mysql.sql(f"DROP DATABASE IF EXISTS `{target}`")
                    self.mysql.sql(f"CREATE DATABASE `{target}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
                    doc = self.cli(env, f"mysql restore {n} {engine}", "restore", local["snapshot_id"], "--to",
                                   self.mysql.uri(target), "--region", DST, "--repo", repo, *extra)
                    self.record("mysql", "restore", n, engine, doc)
                    self.mysql.sql(f"DROP DATABASE IF EXISTS `{target}`")
                self.mysql.sql(f"DROP TABLE IF EXISTS `{MYSQL_DB}`.`{table}`")
        finally:
            self.mysql.sql(f"DROP DATABASE IF EXISTS `{MYSQL_DB}`")

    def run(self) -> None:
        for k, v in DUMMY_CREDENTIALS.items():  # the loader in this process talks to the embedded endpoint
            os.environ.setdefault(k, v)
        with EmbeddedEndpoint() as ep:
            env = {**self.env, **DUMMY_CREDENTIALS, "BACKUPCTL_ENDPOINT_URL": ep.url}
            if not self.args.skip_ddb:
                self.dynamodb(ep.url, env)
            if not self.args.skip_mysql:
                self.mysql_runs(env)


def analysis(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Spark's fixed cost (10-item snapshot) and, per store and op, the break-even size."""
    by = {(r["store"], r["op"], r["size"], r["engine"]): r["seconds"] for r in results}
    out: dict[str, Any] = {}
    if ("dynamodb", "snapshot", 10, "spark") in by and ("dynamodb", "snapshot", 10, "local") in by:
        out["spark_fixed_cost_s"] = round(by[("dynamodb", "snapshot", 10, "spark")]
                                          - by[("dynamodb", "snapshot", 10, "local")], 2)
    fixed = out.get("spark_fixed_cost_s")
    for store, op in {(k[0], k[1]) for k in by}:
        sizes = sorted({k[2] for k in by if k[0] == store and k[1] == op and k[2] > 10})
        for n in sizes:
            lo, sp = by.get((store, op, n, "local")), by.get((store, op, n, "spark"))
            if lo is None or sp is None:
                continue
            entry: dict[str, Any] = {"local_s": lo, "spark_s": sp, "spark_over_local": round(sp / lo, 3)}
            if fixed is not None and sp - fixed > 0:
                per_row_speedup = lo / (sp - fixed)  # spark's work part against local's
                entry["spark_work_speedup"] = round(per_row_speedup, 3)
                if per_row_speedup > 1:  # local time t(n) = a n; spark = fixed + a n / s  ->  n* = fixed / (a (1 - 1/s))
                    a = lo / n
                    entry["break_even_size"] = int(fixed / (a * (1 - 1 / per_row_speedup)))
            out[f"{store} {op} {n:,}"] = entry
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ddb-items", default="100000", help="comma-separated DynamoDB table sizes")
    ap.add_argument("--mysql-rows", default="100000,1000000", help="comma-separated MySQL table sizes")
    ap.add_argument("--spark-master", default="local[2]")
    ap.add_argument("--emr", action="store_true", help="also the 10-item snapshot on the embedded EMR")
    ap.add_argument("--skip-ddb", action="store_true")
    ap.add_argument("--skip-mysql", action="store_true")
    ap.add_argument("--mysql-host", default="127.0.0.1")
    ap.add_argument("--mysql-port", type=int, default=3306)
    ap.add_argument("--mysql-user", default="root")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--backupctl-src", metavar="DIR", help="run backupctl from this exported tree (see bench/mysql.py)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    args.ddb_items = [int(x) for x in args.ddb_items.split(",") if x.strip()]
    args.mysql_rows = [int(x) for x in args.mysql_rows.split(",") if x.strip()]
    bench = Bench(args)
    pkg = mb.source_tree(bench.env)
    before = mb.fingerprint(pkg)
    started = dt.datetime.now(dt.UTC)
    bench.run()
    if mb.fingerprint(pkg) != before:
        bench.errors["code under test"] = f"the .py files under {pkg} changed during the run (use --backupctl-src)"
    doc = {"date": started.strftime("%Y-%m-%d %H:%M:%S UTC"), "cpus": os.cpu_count(), "platform": platform.platform(),
           "spark_master": args.spark_master, "backupctl_code": {"package": str(pkg), **mb.git_state(pkg)},
           "results": bench.results, "analysis": analysis(bench.results), "errors": bench.errors}
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 1 if bench.errors else 0
    print(f"\nEngines benchmark, {doc['cpus']} CPUs, spark master {args.spark_master}, {doc['date']}\n")
    print("| store | op | size | engine | seconds | rows/s | peak RSS MiB |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: |")
    for r in bench.results:
        print(f"| {r['store']} | {r['op']} | {r['size']:,} | {r['engine']} | {r['seconds']:.1f} | "
              f"{r['rows_per_s']:,.0f} | {r['peak_rss_mb'] or '-'} |")
    print("\nanalysis:", json.dumps(doc["analysis"], indent=2))
    for name, err in bench.errors.items():
        print(f"\n{name} failed:\n{err}")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
