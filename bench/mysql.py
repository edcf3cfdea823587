#!/usr/bin/env python
"""MySQL benchmark on the local MariaDB/MySQL server and the embedded AWS endpoint (moto server).

One run, on one server, creates the database ``bench_mysql`` with a table ``t`` of --rows rows
(mixed types, ~200 bytes a row, generated server-side from the Sequence engine or a recursive CTE)
and measures, each with the wall clock around a subprocess:

1. ``backupctl snapshot --source mysql://...`` of the table from us-east-1 to us-west-2 (the real
   CLI; the repository lives on a moto server started by ``backupctl.embedded.EmbeddedEndpoint``),
   with its peak RSS;
2. ``backupctl restore ID --to mysql://.../bench_mysql_dst`` (default mode ``new``, verification on), and
   the same with ``--no-verify`` (like for like with myloader; parts' sha256 and row counts still checked);
3. the peers: ``mydumper`` (2 threads, compressed, --rows chunks) into a temp dir, ``myloader``
   (2 threads) into a fresh database, and ``mysqldump --single-transaction --quick | gzip``;
4. the raw limits: ``mysql --quick -e 'SELECT * FROM bench_mysql.t' > /dev/null`` (read) and
   ``LOAD DATA LOCAL INFILE`` of the same rows from a TSV file into an empty copy of the table (write);
5. the peak RSS of ``backupctl snapshot`` at each --rss-rows size (the size equal to --rows reuses
   the snapshot of step 1; other sizes get their own table, dropped afterwards).

Every copy is checked (row count and CHECKSUM TABLE against the source) before its figure is used.
Steps 1-4 run --repeat times (default 3), the rounds interleaved, and each figure is the median of its
runs: on this 2-core VM the same command's time drifts by up to 1.7x between runs. Before every
measured command the bench flushes the page cache's dirty pages (``sync``) and waits (up to 30 s)
until the local database servers are idle (CPU and disk writes), so that the write-back after one
step's output is not charged to the next tool.
It prints a table (tool, seconds, rows/s) and the ratios against the targets:

* snapshot rows/s / mydumper rows/s           >= 1.0
* snapshot rows/s / raw read (mysql --quick)  >= 0.7
* restore rows/s / myloader rows/s            >= 1.0
* RSS at the largest --rss-rows / RSS at the smallest within 0.8..1.2

The databases bench_mysql, bench_mysql_dst and bench_mysql_myloader are dropped at the end
(--keep to leave them). Run: ``.venv/bin/python bench/mysql.py`` (``--rows 50000 --rss-rows
50000,150000`` for a smoke run); ``--json`` prints the results as one JSON document instead.
``--backupctl-src DIR`` runs backupctl from an exported tree (``git archive HEAD backupctl | tar -x
-C DIR``) so edits to the working tree during a run cannot change the code under test; the imported
``backupctl/*.py`` are fingerprinted before and after the run, and a change is reported as an error.
Needs: mysql, mysqldump, gzip, mydumper/myloader (``apt-get install -y mydumper``), a server on this
machine (``SELECT ... INTO OUTFILE``) with ``local_infile`` on, and the Sequence engine or CTEs.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pymysql

from backupctl.embedded import DUMMY_CREDENTIALS, EmbeddedEndpoint

SOURCE_REGION = "us-east-1"
TARGET_REGION = "us-west-2"
DB = "bench_mysql"
DB_DST = "bench_mysql_dst"
DB_MYLOADER = "bench_mysql_myloader"
TABLE = "t"
GEN_BATCH = 500_000  # rows per INSERT ... SELECT while generating
PEER_THREADS = 2
MYDUMPER_CHUNK_ROWS = 100_000  # same as backupctl's default --chunk-rows: lets mydumper use its 2 threads

# Targets. Do not loosen them: a missed target is reported as missed.
TARGET_SNAPSHOT_VS_MYDUMPER = 1.0
TARGET_SNAPSHOT_VS_RAW_READ = 0.7
TARGET_RESTORE_VS_MYLOADER = 1.0
TARGET_RSS_RANGE = (0.8, 1.2)

DDL = """
CREATE TABLE `{name}` (
  `id` BIGINT NOT NULL AUTO_INCREMENT,
  `customer_id` INT NOT NULL,
  `amount` DECIMAL(14,2) NOT NULL,
  `created_at` DATETIME(6) NOT NULL,
  `email` VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL,
  `note` VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci DEFAULT NULL,
  `score` DOUBLE NOT NULL,
  `status` TINYINT NOT NULL,
  `ship_date` DATE DEFAULT NULL,
  `token` VARBINARY(32) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
"""

# One row per sequence number n. ~200 bytes a row on average: email ~30-40 chars (some 2-4 byte
# UTF-8), note 70-100 chars (5% NULL), 16-32 byte token (may hold NUL bytes), 10% NULL ship_date.
ROW_EXPR = """
  FLOOR(RAND() * 2000000000) - 1000000000,
  ROUND(RAND() * 2000000 - 1000000, 2),
  TIMESTAMP('2020-01-01 00:00:00') + INTERVAL FLOOR(RAND() * 157680000000000) MICROSECOND,
  CONCAT(ELT(1 + (n % 4), 'customer.', 'jürgen.müller.', 'ünïcode.', 'клиент.'), n,
         ELT(1 + (n % 3), '', '.😀', '.é'), '@mail.example.com'),
  IF(n % 20 = 0, NULL, LEFT(CONCAT(MD5(n), ' ', MD5(RAND()), ' ', SHA1(n)), 70 + FLOOR(RAND() * 31))),
  RAND() * 1e6 - 5e5,
  n % 8 - 3,
  IF(n % 10 = 0, NULL, DATE('2015-01-01') + INTERVAL FLOOR(RAND() * 4000) DAY),
  LEFT(UNHEX(SHA2(CONCAT('tok', n), 256)), 16 + n % 17)
"""
COLS = "customer_id, amount, created_at, email, note, score, status, ship_date, token"

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def rate(n: int, seconds: float | None) -> float | None:
    return n / seconds if seconds else None


# -- MySQL helpers --------------------------------------------------------------------------


@dataclass
class Server:
    host: str
    port: int
    user: str
    password: str

    def connect(self, database: str | None = None) -> pymysql.connections.Connection:
        return pymysql.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               database=database, charset="utf8mb4", autocommit=True, local_infile=True)

    def sql(self, stmt: str, database: str | None = None) -> list[tuple[Any, ...]]:
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(stmt)
                return list(cur.fetchall())
        finally:
            conn.close()

    def uri(self, database: str) -> str:
        return f"mysql://{self.user}@{self.host}:{self.port}/{database}"

    def client_args(self) -> list[str]:
        """Connection options for mysql/mysqldump (the password goes through MYSQL_PWD)."""
        return [f"--host={self.host}", f"--port={self.port}", f"--user={self.user}"]

    def mydumper_args(self) -> list[str]:
        args = ["-h", self.host, "-P", str(self.port), "-u", self.user]
        return args + (["-p", self.password] if self.password else [])


def has_sequence_engine(server: Server) -> bool:
    rows = server.sql("SELECT SUPPORT FROM information_schema.ENGINES WHERE ENGINE = 'SEQUENCE'")
    return bool(rows) and str(rows[0][0]).upper() in ("YES", "DEFAULT")


def create_table(server: Server, database: str, name: str, rows: int) -> float:
    """Create ``database.name`` and fill it with ``rows`` rows server-side; returns the seconds taken."""
    started = time.perf_counter()
    conn = server.connect(database)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{name}`")
            cur.execute(DDL.format(name=name))
            seq = has_sequence_engine(server)
            if not seq:  # raise the recursion limit of the CTE (MariaDB, then MySQL 8 name)
                for var in ("max_recursive_iterations", "cte_max_recursion_depth"):
                    try:
                        cur.execute(f"SET SESSION {var} = {GEN_BATCH + 1}")
                    except pymysql.MySQLError:
                        pass
            done = 0
            while done < rows:
                n = min(GEN_BATCH, rows - done)
                if seq:
                    src = f"(SELECT CAST(seq AS SIGNED) AS n FROM seq_{done + 1}_to_{done + n}) s"
                    cur.execute(f"INSERT INTO `{name}` ({COLS}) SELECT {ROW_EXPR} FROM {src}")
                else:
                    cur.execute(
                        f"INSERT INTO `{name}` ({COLS}) WITH RECURSIVE s(n) AS "
                        f"(SELECT {done + 1} UNION ALL SELECT n + 1 FROM s WHERE n < {done + n}) "
                        f"SELECT {ROW_EXPR} FROM s"
                    )
                done += n
            cur.execute(f"ANALYZE TABLE `{name}`")
            cur.fetchall()
    finally:
        conn.close()
    return time.perf_counter() - started


def table_stats(server: Server, database: str, name: str) -> dict[str, Any]:
    count = int(server.sql(f"SELECT COUNT(*) FROM `{database}`.`{name}`")[0][0])
    checksum = server.sql(f"CHECKSUM TABLE `{database}`.`{name}`")[0][1]
    return {"rows": count, "checksum": None if checksum is None else int(checksum)}


def row_bytes(server: Server, database: str, name: str) -> dict[str, float]:
    """Average logical bytes of a row (sum of the column values' storage sizes) and InnoDB bytes per row."""
    logical = server.sql(
        f"SELECT AVG(8 + 4 + 7 + 8 + 1 + LENGTH(email) + 1 + IFNULL(LENGTH(note), 0) + 8 + 1 + "
        f"IF(ship_date IS NULL, 0, 3) + 1 + LENGTH(token)) FROM `{database}`.`{name}`"
    )[0][0]
    info = server.sql(
        "SELECT DATA_LENGTH, TABLE_ROWS FROM information_schema.TABLES "
        f"WHERE TABLE_SCHEMA = '{database}' AND TABLE_NAME = '{name}'"
    )[0]
    count = int(server.sql(f"SELECT COUNT(*) FROM `{database}`.`{name}`")[0][0])
    return {"logical_bytes_per_row": round(float(logical or 0), 1),
            "innodb_data_length_mb": round(int(info[0]) / (1 << 20), 1),
            "innodb_bytes_per_row": round(int(info[0]) / max(1, count), 1)}


# -- running and measuring subprocesses -----------------------------------------------------


@dataclass
class Run:
    cmd: str
    rc: int | None
    stdout: str
    stderr: str
    wall_s: float
    rss_mb: float | None
    timed_out: bool = False

    def failure(self) -> str | None:
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f}s; stderr tail: {tail(self.stderr)}"
        if self.rc != 0:
            return f"exit code {self.rc}; stderr tail: {tail(self.stderr)}"
        return None


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"


def gnu_time() -> str | None:
    path = shutil.which("time", path="/usr/bin:/bin")
    if path is None:
        return None
    try:
        with tempfile.NamedTemporaryFile("r") as f:
            subprocess.run([path, "-v", "-o", f.name, "true"], check=True, capture_output=True, timeout=10)
            return path if "Maximum resident set size" in f.read() else None
    except (OSError, subprocess.SubprocessError):
        return None


SERVER_PROCESSES = ("mariadbd", "mysqld", "postgres")
QUIET_CPU_S = 0.05  # a server using less CPU than this over QUIET_WINDOW_S is idle
QUIET_WINDOW_S = 0.5
QUIET_WRITE_BYTES = 1 << 20  # ... and writing less than this
QUIET_MAX_WAIT_S = 30.0


def _server_load() -> tuple[float, int]:
    """(CPU seconds used, bytes written) so far by the database servers on this machine (0s when none is local)."""
    cpu, written = 0.0, 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                name, _, rest = f.read().partition(") ")
            if name.rsplit("(", 1)[-1] not in SERVER_PROCESSES:
                continue
            fields = rest.split()
            cpu += (int(fields[11]) + int(fields[12])) / tick
            with open(f"/proc/{pid}/io") as f:
                io = dict(line.split(": ") for line in f.read().splitlines())
            written += int(io.get("write_bytes", 0))
        except (OSError, ValueError, IndexError):
            continue
    return cpu, written


def rotated(steps: list[Any], n: int) -> list[Any]:
    """``steps`` starting at index ``n`` (mod their number), wrapping around."""
    k = n % len(steps) if steps else 0
    return steps[k:] + steps[:k]


def quiesce() -> float:
    """Wait (up to QUIET_MAX_WAIT_S) until the local database servers are idle, in CPU and in writes: the
    InnoDB flushing and purge after one step's writes (or PostgreSQL's checkpoint) must not run into the
    next measurement. Returns the seconds waited."""
    started = time.monotonic()
    os.sync()  # the previous step's files (a 127 MiB dump, a 221 MiB TSV) are written back now, not during the next
    while time.monotonic() - started < QUIET_MAX_WAIT_S:
        cpu0, w0 = _server_load()
        time.sleep(QUIET_WINDOW_S)
        cpu1, w1 = _server_load()
        if cpu1 - cpu0 < QUIET_CPU_S and w1 - w0 < QUIET_WRITE_BYTES:
            break
    return time.monotonic() - started


def run_measured(cmd: list[str] | str, env: dict[str, str], timeout_s: float, rss: bool = False) -> Run:
    """Run ``cmd`` (a list, or a string for ``bash -o pipefail -c``); wall time around it, once the local
    database servers are idle (``quiesce``).

    With ``rss``, the peak RSS of the command: GNU ``time -v`` (ru_maxrss of the child), else psutil
    polling every 50 ms (the process and its children).
    """
    quiesce()
    argv = cmd if isinstance(cmd, list) else ["bash", "-o", "pipefail", "-c", cmd]
    shown = cmd if isinstance(cmd, str) else " ".join(cmd)
    time_bin = gnu_time() if rss else None
    tf = tempfile.NamedTemporaryFile("r", prefix="bench-time-") if time_bin else None
    full = [time_bin, "-v", "-o", tf.name, *argv] if time_bin and tf else argv
    p = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    started = time.perf_counter()
    peak = [0]
    done = threading.Event()
    poller = None
    if rss and not time_bin:
        import psutil

        def poll() -> None:
            try:
                proc = psutil.Process(p.pid)
            except psutil.Error:
                return
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], proc.memory_info().rss
                                  + sum(c.memory_info().rss for c in proc.children(recursive=True)))
                except psutil.Error:
                    pass
                done.wait(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
    timed_out = False
    try:
        out, err = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
    wall = time.perf_counter() - started
    done.set()
    if poller is not None:
        poller.join()
    rss_mb = None
    if tf is not None:
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", tf.read())
        rss_mb = int(m.group(1)) / 1024 if m else None
        tf.close()
    elif peak[0]:
        rss_mb = peak[0] / (1 << 20)
    return Run(shown, p.returncode, out, err, wall, rss_mb, timed_out)


def backupctl_bin() -> str:
    exe = Path(sys.executable).with_name("backupctl")
    return str(exe) if exe.exists() else (shutil.which("backupctl") or "backupctl")


def source_tree(env: dict[str, str]) -> Path:
    """The directory of the backupctl package that ``.venv/bin/backupctl`` imports with ``env``.

    Asked of a child interpreter that, like the console script, does not put the cwd first on sys.path.
    """
    code = "import sys; sys.path.pop(0); import backupctl; print(backupctl.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd="/")
    return Path(out.stdout.strip()).resolve().parent


def build_extensions(pkg: Path) -> str:
    """Build the C modules (``formats/_*.c``: the row hasher and the row splitter) in the tree under test,
    as the install builds them in place; which of them backupctl there imports ("c"), or "hashlib" when
    the row hasher is not there (the Python path; an older tree has no C)."""
    from setuptools import Distribution, Extension

    for src in sorted((pkg / "formats").glob("_*.c")):
        if list((pkg / "formats").glob(f"{src.stem}*.so")):
            continue
        with tempfile.TemporaryDirectory(prefix="bench-ext-") as tmp:
            ext = Extension(f"backupctl.formats.{src.stem}", [str(src)], optional=True)
            dist = Distribution({"name": "backupctl-bench-ext", "ext_modules": [ext]})
            cmd = dist.get_command_obj("build_ext")
            cmd.build_lib, cmd.build_temp = str(pkg.parent), tmp  # type: ignore[attr-defined]
            cmd.ensure_finalized()
            cmd.run()
    code = ("import sys; sys.path.pop(0); from backupctl.formats import parquet, mysql_text; "
            "print(parquet.__dict__.get('_rowhash') is not None, mysql_text.__dict__.get('_mysqltext') is not None)")
    env = {**os.environ, "PYTHONPATH": str(pkg.parent)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd="/")
    hasher, splitter = (out.stdout.split() + ["False", "False"])[:2]
    return ("c" if hasher == "True" else "hashlib") + (", rows split by c" if splitter == "True" else "")


def fingerprint(pkg: Path) -> str:
    """sha256 over the package's .py files: the code under test must not change during a run."""
    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        h.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def git_state(pkg: Path) -> dict[str, Any]:
    def git(*a: str) -> str:
        r = subprocess.run(["git", "-C", str(pkg.parent), *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    head = git("rev-parse", "HEAD")
    if not head:
        return {"git": "not a git checkout (an exported tree?)"}
    return {"git_head": head, "uncommitted_changes_in_backupctl": bool(git("status", "--porcelain", "--", "backupctl"))}


def dir_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# -- the steps ------------------------------------------------------------------------------


def add_run(results: dict[str, Any], name: str, run: Run, rows: int, **extra: Any) -> dict[str, Any]:
    """Record one successful run of ``name`` in ``results``: with --repeat a name is recorded once a round,
    and its figure is the median of its runs (every run kept in ``runs``)."""
    r = results.get(name) if name in results and results[name].get("rows") == rows else None
    r = r or {"rows": rows, "command": run.cmd, "runs": []}
    r["runs"].append(round(run.wall_s, 3))
    r["seconds"] = round(statistics.median(r["runs"]), 3)
    r["rows_per_s"] = round(rate(rows, r["seconds"]) or 0, 1)
    r.update(extra)
    if run.rss_mb is not None:
        r["peak_rss_mb"] = round(max(run.rss_mb, r.get("peak_rss_mb", 0)), 1)
    results[name] = r
    log(f"{name} (run {len(r['runs'])}): {run.wall_s:.2f}s, {rate(rows, run.wall_s) or 0:,.0f} rows/s"
        + (f", peak RSS {run.rss_mb:.0f} MiB" if run.rss_mb is not None else ""))
    return r


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.server = Server(args.host, args.port, args.user, args.password)
        self.rows = args.rows
        self.results: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}
        self.env = dict(os.environ)
        self.env["MYSQL_PWD"] = args.password
        if args.backupctl_src:  # pin the code under test: PYTHONPATH wins over the editable install for scripts
            self.env["PYTHONPATH"] = str(Path(args.backupctl_src).resolve())
        self.tmp = tempfile.mkdtemp(prefix="bench-mysql-")
        self.source: dict[str, Any] = {}

    def record(self, name: str, run: Run, rows: int, **extra: Any) -> dict[str, Any] | None:
        fail = run.failure()
        if fail:
            self.errors[name] = fail
            log(f"{name}: FAILED ({fail})")
            return None
        return add_run(self.results, name, run, rows, **extra)

    def check_copy(self, name: str, database: str, table: str) -> bool:
        """The copy holds the source's rows (count and CHECKSUM TABLE); otherwise the figure is dropped."""
        try:
            got = table_stats(self.server, database, table)
        except pymysql.MySQLError as e:
            got = {"error": str(e)}
        if got != self.source:
            self.errors[name] = f"copy {database}.{table} differs from the source: {got} != {self.source}"
            self.results.pop(name, None)
            log(f"{name}: FAILED check ({self.errors[name]})")
            return False
        self.results[name]["verified"] = "rows and CHECKSUM TABLE equal the source"
        return True

    def setup(self) -> None:
        for db in (DB, DB_DST, DB_MYLOADER):
            self.server.sql(f"DROP DATABASE IF EXISTS `{db}`")
        self.server.sql(f"CREATE DATABASE `{DB}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        log(f"generating {self.rows:,} rows in {DB}.{TABLE} "
            f"({'Sequence engine' if has_sequence_engine(self.server) else 'recursive CTE'})")
        secs = create_table(self.server, DB, TABLE, self.rows)
        self.source = table_stats(self.server, DB, TABLE)
        sizes = row_bytes(self.server, DB, TABLE)
        self.results["generate"] = {"seconds": round(secs, 3), "rows": self.rows,
                                    "rows_per_s": round(self.rows / secs, 1), **sizes}
        log(f"generated in {secs:.1f}s: {sizes}")
        if self.source["rows"] != self.rows:
            raise SystemExit(f"generated {self.source['rows']} rows, expected {self.rows}")

    def raw_read(self) -> None:
        cmd = (f"mysql {' '.join(self.server.client_args())} --quick --batch "
               f"-e 'SELECT * FROM {DB}.{TABLE}' > /dev/null")
        self.record("raw read (mysql --quick > /dev/null)", run_measured(cmd, self.env, self.args.timeout), self.rows)

    def raw_write(self) -> None:
        name = "raw write (LOAD DATA LOCAL INFILE)"
        # Export untimed, server-side (NULL as \\N, LOAD DATA's default format); the server writes the
        # file, so the directory is world-writable and the server must be on this machine.
        outdir = tempfile.mkdtemp(prefix="bench-mysql-outfile-")
        os.chmod(outdir, 0o777)
        tsv = os.path.join(outdir, "t.tsv")
        try:
            started = time.perf_counter()
            self.server.sql(f"SELECT * FROM `{DB}`.`{TABLE}` INTO OUTFILE '{tsv}'")
            export_s = time.perf_counter() - started
            self.server.sql(f"CREATE TABLE `{DB}`.`t_load` LIKE `{DB}`.`{TABLE}`")
            cmd = (f"mysql {' '.join(self.server.client_args())} --local-infile=1 "
                   f"-e \"LOAD DATA LOCAL INFILE '{tsv}' INTO TABLE {DB}.t_load CHARACTER SET binary\"")
            if self.record(name, run_measured(cmd, self.env, self.args.timeout), self.rows,
                           tsv_mb=round(os.path.getsize(tsv) / (1 << 20), 1), tsv_export_s=round(export_s, 2)):
                self.check_copy(name, DB, "t_load")
        except pymysql.MySQLError as e:
            self.errors[name] = f"{type(e).__name__}: {e}"
            log(f"{name}: FAILED ({e})")
        finally:
            shutil.rmtree(outdir, ignore_errors=True)
            self.server.sql(f"DROP TABLE IF EXISTS `{DB}`.`t_load`")

    def mydumper(self) -> str | None:
        out = os.path.join(self.tmp, "mydumper")
        cmd = ["mydumper", *self.server.mydumper_args(), "-B", DB, "-T", TABLE, "-t", str(PEER_THREADS),
               "-c", "-r", str(MYDUMPER_CHUNK_ROWS), "--lock-all-tables", "-o", out, "-v", "1"]
        r = self.record("mydumper (2 threads, -c)", run_measured(cmd, self.env, self.args.timeout, rss=True),
                        self.rows)
        if r is None:
            return None
        r["output_mb"] = round(dir_bytes(out) / (1 << 20), 1)
        r["data_files"] = len([f for f in Path(out).iterdir() if not re.search(r"schema|metadata", f.name)])
        if not r["data_files"]:
            self.errors["mydumper (2 threads, -c)"] = f"no data files in {out}: {sorted(os.listdir(out))}"
            self.results.pop("mydumper (2 threads, -c)")
            return None
        return out

    def myloader(self, dump: str) -> None:
        self.server.sql(f"CREATE DATABASE `{DB_MYLOADER}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        cmd = ["myloader", *self.server.mydumper_args(), "-d", dump, "-B", DB_MYLOADER, "-t", str(PEER_THREADS),
               "-v", "1"]
        name = "myloader (2 threads)"
        if self.record(name, run_measured(cmd, self.env, self.args.timeout, rss=True), self.rows):
            self.check_copy(name, DB_MYLOADER, TABLE)
        self.server.sql(f"DROP DATABASE IF EXISTS `{DB_MYLOADER}`")

    def mysqldump(self) -> None:
        out = os.path.join(self.tmp, "dump.sql.gz")
        cmd = (f"mysqldump {' '.join(self.server.client_args())} --single-transaction --quick {DB} {TABLE} "
               f"| gzip > {out}")
        r = self.record("mysqldump | gzip", run_measured(cmd, self.env, self.args.timeout), self.rows)
        if r is not None:
            r["output_mb"] = round(os.path.getsize(out) / (1 << 20), 1)
        if os.path.exists(out):
            os.unlink(out)

    def snapshot(self, env: dict[str, str], table: str, rows: int, name: str) -> str | None:
        cmd = [backupctl_bin(), "--quiet", "snapshot", "--source", self.server.uri(DB), "--table", table,
               "--from", SOURCE_REGION, "--to", TARGET_REGION, "--json"]
        run = run_measured(cmd, env, self.args.timeout, rss=True)
        r = self.record(name, run, rows)
        if r is None:
            return None
        try:
            doc = json.loads(run.stdout)
        except ValueError:
            self.errors[name] = f"no JSON on stdout: {tail(run.stdout)}"
            self.results.pop(name, None)
            return None
        if int(doc.get("rows", -1)) != rows:
            self.errors[name] = f"snapshot holds {doc.get('rows')} rows, expected {rows}"
            self.results.pop(name, None)
            return None
        r.update({"snapshot_id": doc["snapshot_id"], "parquet_mb": round(int(doc["bytes"]) / (1 << 20), 1),
                  "parts": doc["parts"], "backupctl_duration_s": doc.get("duration_s")})
        return str(doc["snapshot_id"])

    def restore(self, env: dict[str, str], snapshot_id: str, name: str = "backupctl restore", *extra: str) -> None:
        self.server.sql(f"CREATE DATABASE `{DB_DST}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        cmd = [backupctl_bin(), "--quiet", "restore", snapshot_id, "--to", self.server.uri(DB_DST),
               "--region", TARGET_REGION, "--json", *extra]
        run = run_measured(cmd, env, self.args.timeout, rss=True)
        r = self.record(name, run, self.rows)
        if r is None:
            return
        try:
            doc = json.loads(run.stdout)
            r.update({"verification": doc.get("verification"), "verified_by": doc.get("verified_by"),
                      "backupctl_duration_s": doc.get("duration_s")})
        except ValueError:
            pass
        self.check_copy(name, DB_DST, TABLE)
        self.server.sql(f"DROP DATABASE IF EXISTS `{DB_DST}`")

    def rss_sizes(self, env: dict[str, str]) -> None:
        out: dict[str, Any] = {}
        for n in self.args.rss_rows:
            if n == self.rows and "backupctl snapshot" in self.results:
                out[str(n)] = self.results["backupctl snapshot"].get("peak_rss_mb")
                continue
            name = f"t_rss_{n}"
            log(f"RSS: generating {n:,} rows in {DB}.{name}")
            secs = create_table(self.server, DB, name, n)
            log(f"RSS: generated in {secs:.1f}s")
            label = f"backupctl snapshot ({n:,} rows, RSS)"
            self.snapshot(env, name, n, label)
            out[str(n)] = self.results.get(label, {}).get("peak_rss_mb")
            self.server.sql(f"DROP TABLE IF EXISTS `{DB}`.`{name}`")
        self.results["rss_by_rows_mb"] = out

    def one_round(self, env: dict[str, str], r: int) -> None:
        """Every tool once: the readers, then the writers, each group starting at tool ``r``."""
        out: dict[str, Any] = {}

        def dump() -> None:
            out["dump"] = self.mydumper()

        def snap() -> None:
            out["sid"] = self.snapshot(env, TABLE, self.rows, "backupctl snapshot")

        def load() -> None:
            if out.get("dump"):
                self.myloader(out["dump"])

        def restore(*extra: str) -> None:
            if out.get("sid"):
                self.restore(env, out["sid"], "backupctl restore" + "".join(f" {x}" for x in extra), *extra)

        readers: list[Callable[[], None]] = [self.raw_read, self.mysqldump, dump, snap]
        # --no-verify: like for like with myloader, which checks nothing it loads
        writers: list[Callable[[], None]] = [load, self.raw_write, restore, lambda: restore("--no-verify")]
        for step in rotated(readers, r) + rotated(writers, r):
            step()
        if out.get("dump"):
            shutil.rmtree(out["dump"], ignore_errors=True)
        if not out.get("sid"):
            self.errors["backupctl restore"] = "skipped: the snapshot failed"

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.args.keep:
            return
        for db in (DB, DB_DST, DB_MYLOADER):
            try:
                self.server.sql(f"DROP DATABASE IF EXISTS `{db}`")
            except pymysql.MySQLError as e:
                log(f"could not drop {db}: {e}")

    def run(self) -> None:
        try:
            self.setup()
            with EmbeddedEndpoint() as ep:
                env = dict(self.env)
                env.update(DUMMY_CREDENTIALS)
                env["BACKUPCTL_ENDPOINT_URL"] = ep.url
                log(f"moto server at {ep.url}")
                # --repeat rounds, interleaved so that drift in the machine's speed hits every tool alike
                # In each round the readers run first, then the writers: every reader finds the buffer pool
                # as the previous reader of the table left it, not full of a just-loaded copy. Each round
                # starts each group with another tool: a writer that follows another writer can still meet
                # the server finishing the last copy's flushing and purge (its drop included).
                for r in range(self.args.repeat):
                    self.one_round(env, r)
                if not self.args.skip_rss:
                    self.rss_sizes(env)
        finally:
            self.cleanup()


# -- report ---------------------------------------------------------------------------------


def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or not b.get("rows_per_s"):
        return None
    return a["rows_per_s"] / b["rows_per_s"]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    snap = results.get("backupctl snapshot")
    rest = results.get("backupctl restore")
    out = []

    def add(name: str, value: float | None, ok: bool | None, goal: str) -> None:
        out.append({"target": name, "goal": goal, "value": None if value is None else round(value, 3),
                    "met": ok})

    v = ratio(snap, results.get("mydumper (2 threads, -c)"))
    add("snapshot / mydumper rows/s", v, None if v is None else v >= TARGET_SNAPSHOT_VS_MYDUMPER,
        f">= {TARGET_SNAPSHOT_VS_MYDUMPER}")
    v = ratio(snap, results.get("raw read (mysql --quick > /dev/null)"))
    add("snapshot / raw read rows/s", v, None if v is None else v >= TARGET_SNAPSHOT_VS_RAW_READ,
        f">= {TARGET_SNAPSHOT_VS_RAW_READ}")
    v = ratio(rest, results.get("myloader (2 threads)"))
    add("restore / myloader rows/s", v, None if v is None else v >= TARGET_RESTORE_VS_MYLOADER,
        f">= {TARGET_RESTORE_VS_MYLOADER}")
    rss = {int(k): v for k, v in (results.get("rss_by_rows_mb") or {}).items() if v}
    if len(rss) >= 2:
        lo, hi = min(rss), max(rss)
        v = rss[hi] / rss[lo]
        add(f"RSS({hi:,}) / RSS({lo:,})", v, TARGET_RSS_RANGE[0] <= v <= TARGET_RSS_RANGE[1],
            f"{TARGET_RSS_RANGE[0]}..{TARGET_RSS_RANGE[1]}")
    else:
        add("RSS ratio", None, None, f"{TARGET_RSS_RANGE[0]}..{TARGET_RSS_RANGE[1]}")
    info = [("restore --no-verify / myloader rows/s", results.get("backupctl restore --no-verify"),
             results.get("myloader (2 threads)")),
            ("restore / raw write (LOAD DATA) rows/s", rest, results.get("raw write (LOAD DATA LOCAL INFILE)")),
            ("snapshot / mysqldump|gzip rows/s", snap, results.get("mysqldump | gzip"))]
    for name, a, b in info:
        v = ratio(a, b)
        add(name + " (info)", v, None, "-")
    return out


def print_table(doc: dict[str, Any]) -> None:
    res = doc["results"]
    print(f"\nMySQL benchmark: {doc['rows']:,} rows (~{res.get('generate', {}).get('logical_bytes_per_row', '?')} "
          f"logical bytes/row), {doc['server_version']}, {doc['cpus']} CPUs, {doc['date']}")
    code = doc.get("backupctl_code", {})
    print(f"backupctl code: {code.get('package')} (git HEAD {code.get('git_head', 'none')[:12]}, "
          f"uncommitted changes: {code.get('uncommitted_changes_in_backupctl', '?')}, "
          f"py sha256 {code.get('sha256_of_py_files', '?')[:12]}, row hashes by {code.get('row_hasher', '?')})")
    print(f"figures: medians of {doc.get('repeat', 1)} interleaved rounds (runs in the notes)\n")
    rows: list[tuple[str, ...]] = [("tool", "seconds", "rows/s", "peak RSS MiB", "notes")]
    for name, r in res.items():
        if not isinstance(r, dict) or "seconds" not in r or name == "generate":
            continue
        notes = [f"runs {', '.join(f'{x:.2f}' for x in r['runs'])}"] if len(r.get("runs", [])) > 1 else []
        if "data_files" in r:
            notes.append(f"{r['data_files']} data files")
        for k in ("output_mb", "parquet_mb", "tsv_mb"):
            if k in r:
                notes.append(f"{k.split('_')[0]} {r[k]} MiB")
        if "parts" in r:
            notes.append(f"{r['parts']} parts")
        if "verified" in r:
            notes.append("copy verified")
        if "verification" in r:
            by = f" ({r['verified_by']})" if r.get("verified_by") else ""
            notes.append(f"backupctl verify: {r['verification']}{by}")
        rows.append((name, f"{r['seconds']:.2f}", f"{r['rows_per_s']:,.0f}",
                     f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-", "; ".join(notes)))
    for name, err in doc["errors"].items():
        rows.append((name, "FAILED", "-", "-", err.splitlines()[0][:100]))
    markdown_table(rows)
    print()
    targets: list[tuple[str, ...]] = [("target", "goal", "measured", "met")]
    for t in doc["targets"]:
        met = "n/a" if t["met"] is None else ("MET" if t["met"] else "MISSED")
        targets.append((str(t["target"]), str(t["goal"]), "-" if t["value"] is None else f"{t['value']:.2f}x", met))
    markdown_table(targets)
    if doc["results"].get("rss_by_rows_mb"):
        print("\npeak RSS of backupctl snapshot by table size (MiB): "
              + ", ".join(f"{int(k):,} rows: {v}" for k, v in doc["results"]["rss_by_rows_mb"].items()))
    for name, err in doc["errors"].items():
        print(f"\n{name} failed:\n{err}")


def markdown_table(rows: Sequence[Sequence[str]]) -> None:
    """A Markdown table, the first row as its header, columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
        if i == 0:
            print("| " + " | ".join("-" * w for w in widths) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in the benchmark table (default 1,000,000)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of every measured command, interleaved; figures are medians (default 3)")
    ap.add_argument("--rss-rows", default="1000000,3000000",
                    help="comma-separated table sizes for the snapshot peak-RSS comparison")
    ap.add_argument("--skip-rss", action="store_true", help="skip the RSS-by-size snapshots")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=3306)
    ap.add_argument("--user", default="root")
    ap.add_argument("--password", default=os.environ.get("MYSQL_PWD", ""),
                    help="(default: MYSQL_PWD, else empty); passed to the tools as MYSQL_PWD")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per measured command")
    ap.add_argument("--backupctl-src", metavar="DIR",
                    help="run backupctl from this source tree (a directory holding backupctl/, e.g. "
                         "`git archive HEAD backupctl | tar -x -C DIR`) via PYTHONPATH, so edits to the working "
                         "tree during the run do not change the code under test")
    ap.add_argument("--keep", action="store_true", help="do not drop the bench databases at the end")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    ap.add_argument("--out", help="also write the JSON results to this file")
    args = ap.parse_args()
    args.rss_rows = [int(x) for x in args.rss_rows.split(",") if x.strip()]
    for tool in ("mysql", "mysqldump", "mydumper", "myloader", "gzip"):
        if shutil.which(tool) is None:
            log(f"warning: {tool} not found on PATH (apt-get install -y mydumper mariadb-client)")

    if args.backupctl_src and not (Path(args.backupctl_src) / "backupctl" / "__init__.py").exists():
        ap.error(f"--backupctl-src {args.backupctl_src}: no backupctl/__init__.py there")
    bench = Bench(args)
    pkg = source_tree(bench.env)
    code_before = fingerprint(pkg)
    # As installed: pip byte-compiles a package it installs, an editable or exported tree is compiled on
    # first import only where bytecode may be written (PYTHONDONTWRITEBYTECODE=1 on this VM: every
    # backupctl run compiled its ~80 modules again, ~0.1-0.2 s before its first statement).
    compileall.compile_dir(str(pkg), quiet=1)
    row_hasher = build_extensions(pkg)
    log(f"row hashes by {row_hasher} ({pkg})")
    started = dt.datetime.now(dt.UTC)
    bench.run()
    code_after = fingerprint(pkg)
    code = {"package": str(pkg), "sha256_of_py_files": code_before, "row_hasher": row_hasher, **git_state(pkg)}
    if code_after != code_before:
        code["changed_during_run"] = True
        bench.errors["code under test"] = (f"the .py files under {pkg} changed during the run: the figures may "
                                           "mix code versions (use --backupctl-src with an exported tree)")
    try:
        version = bench.server.sql("SELECT VERSION()")[0][0]
        settings = dict(zip(("innodb_buffer_pool_size", "innodb_flush_log_at_trx_commit", "log_bin"),
                            bench.server.sql("SELECT @@innodb_buffer_pool_size, @@innodb_flush_log_at_trx_commit, "
                                             "@@log_bin")[0], strict=True))
    except pymysql.MySQLError:
        version, settings = "?", {}
    doc = {
        "date": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "rows": args.rows,
        "repeat": args.repeat,
        "rss_rows": args.rss_rows,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "backupctl": metadata.version("backupctl"),
        "backupctl_code": code,
        "server_version": version,
        "server_settings": settings,
        "tools": {t: subprocess.run([t, "--version"], capture_output=True, text=True).stdout.strip()
                  for t in ("mydumper", "mysqldump") if shutil.which(t)},
        "results": bench.results,
        "errors": bench.errors,
    }
    doc["targets"] = targets(bench.results)
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print_table(doc)
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
