#!/usr/bin/env python
"""DynamoDB benchmark on the embedded AWS endpoint (moto server): backupctl against the raw limits.

One run measures, on one moto server:

1. the raw write limit: bare parallel BatchWriteItem (boto3, threads, 25 items per batch,
   UnprocessedItems re-sent), swept over thread counts on scratch tables; the source table is
   loaded the same way;
2. the raw scan limit: a bare parallel Scan that writes nothing, best of 1, 4 and 8 segments;
3. ``backupctl snapshot`` of the table from us-east-1 to us-west-2 (the real CLI, in a subprocess);
4. ``backupctl restore`` of that snapshot into a new table in us-west-2;
5. ``dynamodump -m backup`` of the same table (unless --skip-dynamodump);
6. the peak RSS of ``backupctl snapshot`` at several table sizes (--rss-items).

and prints each figure in items/s with the ratios against the targets:

* snapshot / best raw scan   >= 0.85
* snapshot / dynamodump      >= 3
* restore / best raw write   >= 0.85
* RSS at the largest size / RSS at the smallest size within 0.8..1.2

Run: ``.venv/bin/python bench/dynamodb.py`` (``make bench``); see bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import hashlib
import json
import os
import platform
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import boto3
import botocore.config

import backupctl
from backupctl.aws import AwsContext
from backupctl.demo import create_sample_table, sample_item, sample_items
from backupctl.embedded import DUMMY_CREDENTIALS, EmbeddedEndpoint
from backupctl.formats.dynamodb_json import encode_line, item_size

SOURCE_REGION = "us-east-1"
TARGET_REGION = "us-west-2"
BATCH = 25
ITEM_TARGET_BYTES = 1024  # size of one item as an encoded DYNAMODB_JSON line
SEED = 42
SCAN_SEGMENTS = (1, 4, 8)
WRITE_THREADS = (1, 4, 8)

# Targets. Do not loosen them: a missed target is reported as missed.
TARGET_SNAPSHOT_VS_SCAN = 0.85
TARGET_SNAPSHOT_VS_DYNAMODUMP = 3.0
TARGET_RESTORE_VS_WRITE = 0.85
TARGET_RSS_RANGE = (0.8, 1.2)

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


# -- CPU used by other processes during a measurement --------------------------------------------------

_MOTO_PID: int | None = None
CPU_KEYS = ("client_cpu_s", "moto_cpu_s", "other_cores")
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_cpu_s() -> float | None:
    """CPU seconds all CPUs have spent busy since boot (/proc/stat), or None off Linux."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def _pid_cpu_s(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK  # utime + stime


def _client_cpu_s() -> float:
    """CPU of this bench and its waited-for children (backupctl, dynamodump)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextmanager
def cpu_use() -> Iterator[dict[str, float | None]]:
    """CPU spent during the block: by the client, by the moto server, and by everything else.

    ``client_cpu_s``: this bench plus the children it waited for (the backupctl or dynamodump
    process); ``moto_cpu_s``: the moto server; ``other_cores``: cores used on average by processes
    outside the bench (0.1-0.2 is accounting noise). The machine has few cores: when something else
    runs during a measurement the wall-clock figure is skewed, and ``other_cores`` says by how much.
    """
    out: dict[str, float | None] = {"client_cpu_s": None, "moto_cpu_s": None, "other_cores": None}
    busy0, client0, moto0, t0 = _busy_cpu_s(), _client_cpu_s(), _pid_cpu_s(_MOTO_PID), time.monotonic()
    try:
        yield out
    finally:
        busy1, client1, moto1 = _busy_cpu_s(), _client_cpu_s(), _pid_cpu_s(_MOTO_PID)
        wall = time.monotonic() - t0
        client, moto = client1 - client0, moto1 - moto0
        out["client_cpu_s"] = round(client, 1)
        out["moto_cpu_s"] = round(moto, 1) if _MOTO_PID else None
        if busy0 is not None and busy1 is not None and wall > 0:
            out["other_cores"] = round(max(0.0, (busy1 - busy0) - client - moto) / wall, 2)


# -- items -------------------------------------------------------------------------------------------


def choose_pad(target: int = ITEM_TARGET_BYTES, sample: int = 500) -> tuple[int, float, float]:
    """The pad that makes the mean encoded line ``target`` bytes; also the mean line and item sizes."""
    rng = random.Random(SEED)
    base = statistics.fmean(len(encode_line(sample_item(i, rng, 1))) for i in range(sample))
    pad = max(1, 1 + round(target - base))
    items = list(sample_items(sample, SEED, pad=pad))
    return pad, statistics.fmean(len(encode_line(it)) for it in items), statistics.fmean(item_size(it) for it in items)


def items_range(start: int, stop: int, seed: int, pad: int) -> Iterator[dict[str, Any]]:
    """Items ``start..stop-1`` (keys are unique per index); ``start == 0`` is exactly sample_items."""
    if start == 0:
        yield from sample_items(stop, seed, pad=pad)
        return
    rng = random.Random(seed * 1_000_003 + start)
    for i in range(start, stop):
        yield sample_item(i, rng, pad)


# -- raw boto3 baselines ------------------------------------------------------------------------------


def raw_client(url: str, region: str) -> Any:
    """A plain boto3 DynamoDB client with its own session (one per thread)."""
    cfg = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": 10}, max_pool_connections=4, read_timeout=120
    )
    return boto3.session.Session().client("dynamodb", region_name=region, endpoint_url=url, config=cfg)


@dataclass
class Timing:
    items: int
    seconds: float
    cpu: dict[str, float | None] | None = None

    @property
    def items_per_s(self) -> float:
        return rate(self.items, self.seconds)

    def to_json(self) -> dict[str, Any]:
        return {"items": self.items, "seconds": round(self.seconds, 3), "items_per_s": round(self.items_per_s, 1),
                **(self.cpu or {})}


def bulk_write(url: str, region: str, table: str, items: Iterable[dict[str, Any]], threads: int) -> Timing:
    """Bare parallel BatchWriteItem: the main thread cuts batches of 25, ``threads`` workers send them."""
    clients = [raw_client(url, region) for _ in range(threads)]
    q: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(maxsize=threads * 8)
    written = [0] * threads
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        ddb = clients[k]
        while True:
            batch = q.get()
            if batch is None:
                return
            if errors:
                continue  # drain so the producer never blocks
            try:
                pending, attempt = batch, 0
                while pending:
                    resp = ddb.batch_write_item(RequestItems={table: pending})
                    pending = resp.get("UnprocessedItems", {}).get(table, [])
                    if pending:
                        attempt += 1
                        if attempt > 30:
                            raise RuntimeError(f"{len(pending)} items still unprocessed after {attempt} resends")
                        time.sleep(min(1.0, 0.02 * 2**attempt))
                written[k] += len(batch)
            except BaseException as e:  # noqa: B036 - recorded and re-raised by the caller
                errors.append(e)

    with cpu_use() as cpu:
        started = time.perf_counter()
        workers = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(threads)]
        for t in workers:
            t.start()
        batch: list[dict[str, Any]] = []
        for it in items:
            batch.append({"PutRequest": {"Item": it}})
            if len(batch) == BATCH:
                q.put(batch)
                batch = []
        if batch:
            q.put(batch)
        for _ in workers:
            q.put(None)
        for t in workers:
            t.join()
        elapsed = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"raw BatchWriteItem into {table} failed: {errors[0]!r}")
    return Timing(sum(written), elapsed, cpu)


def parallel_scan(url: str, region: str, table: str, segments: int) -> Timing:
    """Bare parallel Scan: count the items of every page, keep nothing."""
    clients = [raw_client(url, region) for _ in range(segments)]

    def one(seg: int) -> int:
        ddb = clients[seg]
        kwargs: dict[str, Any] = {"TableName": table}
        if segments > 1:
            kwargs.update(Segment=seg, TotalSegments=segments)
        n = 0
        while True:
            resp = ddb.scan(**kwargs)
            n += len(resp.get("Items", []))
            last = resp.get("LastEvaluatedKey")
            if not last:
                return n
            kwargs["ExclusiveStartKey"] = last

    with cpu_use() as cpu:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=segments) as pool:
            counts = list(pool.map(one, range(segments)))
        elapsed = time.perf_counter() - started
    return Timing(sum(counts), elapsed, cpu)


def delete_table(url: str, region: str, table: str) -> None:
    ddb = raw_client(url, region)
    ddb.delete_table(TableName=table)
    ddb.get_waiter("table_not_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})


# -- subprocesses with wall time and peak RSS ---------------------------------------------------------


@dataclass
class Run:
    cmd: list[str]
    rc: int | None
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_mb: float | None
    rss_method: str
    timed_out: bool
    cpu: dict[str, float | None] | None = None

    def failure(self) -> str | None:
        if self.timed_out:
            return f"timed out after {self.wall_s:.0f}s; stderr tail: {tail(self.stderr)}"
        if self.rc != 0:
            return f"exit code {self.rc}; stderr tail: {tail(self.stderr)}"
        return None


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"


def gnu_time() -> str | None:
    """/usr/bin/time if it is GNU time (supports -v and -o)."""
    path = shutil.which("time", path="/usr/bin:/bin") or None
    if path is None:
        return None
    try:
        with tempfile.NamedTemporaryFile("r") as f:
            subprocess.run([path, "-v", "-o", f.name, "true"], check=True, capture_output=True, timeout=10)
            return path if "Maximum resident set size" in f.read() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _kill_group(p: subprocess.Popen[str]) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_measured(cmd: list[str], env: dict[str, str], timeout_s: float, cwd: str | None = None) -> Run:
    """Run ``cmd``; wall time around it, its peak RSS, and the CPU other processes used meanwhile."""
    with cpu_use() as cpu:
        run = _run_measured(cmd, env, timeout_s, cwd)
    run.cpu = cpu
    return run


def _run_measured(cmd: list[str], env: dict[str, str], timeout_s: float, cwd: str | None) -> Run:
    """Wall time and peak RSS (GNU time -v, else psutil polling every 50 ms)."""
    time_bin = gnu_time()
    if time_bin is not None:
        with tempfile.NamedTemporaryFile("r", prefix="bench-time-") as tf:
            p = subprocess.Popen(
                [time_bin, "-v", "-o", tf.name, *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env=env, cwd=cwd, start_new_session=True,
            )
            started = time.perf_counter()
            timed_out = False
            try:
                out, err = p.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(p)
                out, err = p.communicate()
            wall = time.perf_counter() - started
            m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", tf.read())
        rss = int(m.group(1)) / 1024 if m else None
        return Run(cmd, p.returncode, out, err, wall, rss, "GNU time -v (ru_maxrss of the child)", timed_out)

    try:
        import psutil
    except ImportError:
        psutil = None  # type: ignore[assignment]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                         start_new_session=True)
    started = time.perf_counter()
    peak = [0]
    done = threading.Event()

    def poll() -> None:
        if psutil is None:
            return
        try:
            proc = psutil.Process(p.pid)
        except psutil.Error:
            return
        while not done.is_set():
            try:
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
                peak[0] = max(peak[0], rss)
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
        _kill_group(p)
        out, err = p.communicate()
    wall = time.perf_counter() - started
    done.set()
    poller.join()
    rss_mb = peak[0] / (1 << 20) if peak[0] else None
    return Run(cmd, p.returncode, out, err, wall, rss_mb, "psutil polling every 50 ms" if psutil else "none", timed_out)


def backupctl_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "backupctl"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "backupctl"]


def child_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "AWS_ENDPOINT_URL")}
    env.update(DUMMY_CREDENTIALS)
    env["BACKUPCTL_ENDPOINT_URL"] = url
    return env


def timeout_for(n: int) -> float:
    return max(300.0, n / 200)  # 200 items/s would be a failure anyway


def run_snapshot(url: str, table: str, n: int, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    cmd = [*backupctl_cmd(), "--quiet", "snapshot", "--table", table, "--from", SOURCE_REGION,
           "--to", TARGET_REGION, "--json", *extra]
    log(f"backupctl snapshot of {table} ({n:,} items): {' '.join(cmd[-9 - len(extra):])}")
    run = run_measured(cmd, child_env(url), timeout_for(n))
    out: dict[str, Any] = {"table": table, "items": n, "wall_s": round(run.wall_s, 3),
                           "peak_rss_mb": round(run.peak_rss_mb, 1) if run.peak_rss_mb else None,
                           "rss_method": run.rss_method, **(run.cpu or {})}
    err = run.failure()
    if err is None:
        try:
            doc = json.loads(run.stdout)
        except json.JSONDecodeError:
            err = f"stdout is not JSON: {run.stdout[:300]!r}; stderr tail: {tail(run.stderr)}"
        else:
            out.update({k: doc.get(k) for k in ("snapshot_id", "rows", "bytes", "parts", "digest", "duration_s")})
            if doc.get("rows") != n:
                err = f"snapshot has {doc.get('rows')} rows, the table has {n}"
            else:
                out["items_per_s"] = round(rate(n, run.wall_s), 1)
    out["ok"] = err is None
    out["error"] = err
    log(f"  -> {_summary(out)}")
    return out


def run_restore(url: str, snapshot_id: str, table: str, n: int) -> dict[str, Any]:
    cmd = [*backupctl_cmd(), "--quiet", "restore", snapshot_id, "--to-table", table, "--region", TARGET_REGION,
           "--json"]
    log(f"backupctl restore {snapshot_id} -> {table} ({TARGET_REGION})")
    run = run_measured(cmd, child_env(url), timeout_for(n))
    out: dict[str, Any] = {"table": table, "items": n, "wall_s": round(run.wall_s, 3),
                           "peak_rss_mb": round(run.peak_rss_mb, 1) if run.peak_rss_mb else None,
                           **(run.cpu or {})}
    err = run.failure()
    if err is None:
        try:
            doc = json.loads(run.stdout)
        except json.JSONDecodeError:
            err = f"stdout is not JSON: {run.stdout[:300]!r}; stderr tail: {tail(run.stderr)}"
        else:
            out.update({k: doc.get(k) for k in ("rows", "parts", "digest", "duration_s")})
            if doc.get("rows") != n:
                err = f"restore wrote {doc.get('rows')} rows, the snapshot has {n}"
            else:
                out["items_per_s"] = round(rate(n, run.wall_s), 1)
    out["ok"] = err is None
    out["error"] = err
    log(f"  -> {_summary(out)}")
    return out


def find_dynamodump(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "dynamodump"
    return str(beside) if beside.exists() else shutil.which("dynamodump")


def run_dynamodump(url: str, table: str, n: int, exe: str | None, timeout_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"table": table, "items": n, "ok": False}
    if exe is None:
        out["error"] = ("dynamodump not found (not beside this interpreter nor on PATH); install it "
                        "(see bench/README.md) or pass --dynamodump PATH, or use --skip-dynamodump")
        log(f"dynamodump: {out['error']}")
        return out
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with tempfile.TemporaryDirectory(prefix="bench-dynamodump-") as tmp:
        cmd = [exe, "-m", "backup", "-r", SOURCE_REGION, "-s", table, "--host", host, "--port", port,
               "--accessKey", "testing", "--secretKey", "testing", "--dumpPath", os.path.join(tmp, "dump")]
        out["command"] = " ".join(cmd[1:]).replace(tmp, "$TMP")
        log(f"dynamodump backup of {table} (timeout {timeout_s:.0f}s)")
        run = run_measured(cmd, child_env(url), timeout_s, cwd=tmp)
        out.update({"wall_s": round(run.wall_s, 3), **(run.cpu or {}),
                    "peak_rss_mb": round(run.peak_rss_mb, 1) if run.peak_rss_mb else None})
        err = run.failure()
        dumped = 0
        for f in glob.glob(os.path.join(tmp, "dump", table, "data", "*.json")):
            with open(f, encoding="utf-8") as fh:
                dumped += len(json.load(fh).get("Items", []))
        out["dumped_items"] = dumped
        if err is None and dumped != n:
            err = f"exit code 0 but dumped {dumped:,} of {n:,} items; stderr tail: {tail(run.stderr)}"
    if err is None:
        out["items_per_s"] = round(rate(n, run.wall_s), 1)
    out["ok"] = err is None
    out["error"] = err
    log(f"  -> {_summary(out)}")
    return out


def _summary(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"FAILED: {r.get('error')}"
    s = f"{r['items']:,} items in {r['wall_s']:.1f}s = {r['items_per_s']:,.0f} items/s"
    if r.get("peak_rss_mb"):
        s += f", peak RSS {r['peak_rss_mb']:.0f} MiB"
    return s


def moto_peak_rss_mb(ep: EmbeddedEndpoint) -> float | None:
    """VmHWM (peak RSS) of the moto server process, when /proc has it."""
    if ep.proc is None:
        return None
    try:
        status = Path(f"/proc/{ep.proc.pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return int(m.group(1)) / 1024 if m else None


# -- the run ------------------------------------------------------------------------------------------


def load_table(url: str, aws: AwsContext, table: str, n: int, pad: int, threads: int, seed: int = SEED,
               start: int = 0) -> Timing:
    if start == 0:
        create_sample_table(aws, SOURCE_REGION, table, provisioned=True)
    return bulk_write(url, SOURCE_REGION, table, items_range(start, n, seed, pad), threads)


def ratio(name: str, num: float | None, den: float | None, target: str, ok: Any, why: str = "") -> dict[str, Any]:
    if num is None or den is None or den == 0:
        return {"name": name, "value": None, "target": target, "met": False, "note": why or "figure missing"}
    v = num / den
    return {"name": name, "value": round(v, 4), "target": target, "met": bool(ok(v)), "note": ""}


def run(args: argparse.Namespace) -> dict[str, Any]:
    for k, v in DUMMY_CREDENTIALS.items():
        os.environ.setdefault(k, v)
    n = args.items
    rss_sizes = sorted(set(args.rss_items))
    pad, line_bytes, ddb_bytes = choose_pad()
    started_at = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": started_at.isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "versions": {p: _version(p) for p in ("backupctl", "moto", "boto3", "botocore")},
        },
        "backupctl_code": code_identity(),
        "items": n,
        "item": {"pad": pad, "mean_json_line_bytes": round(line_bytes, 1), "mean_dynamodb_item_bytes": round(ddb_bytes, 1)},
    }
    log(f"items of {line_bytes:.0f} B as a JSON line ({ddb_bytes:.0f} B by DynamoDB's rule), pad={pad}")
    with EmbeddedEndpoint() as ep:
        global _MOTO_PID
        _MOTO_PID = ep.proc.pid if ep.proc else None
        url = ep.url
        results["endpoint"] = url
        aws = AwsContext(endpoint_url=url)
        log(f"moto server at {url} (pid {ep.proc.pid if ep.proc else '?'})")

        # 1. Raw write limit: sweep thread counts on scratch tables, then load the source table.
        sweep: list[dict[str, Any]] = []
        sweep_n = min(n, args.sweep_items)
        if sweep_n > 0:
            for threads in WRITE_THREADS:
                scratch = f"bench-write-{threads}t"
                t = load_table(url, aws, scratch, sweep_n, pad, threads, seed=SEED + threads)
                sweep.append({"threads": threads, **t.to_json()})
                log(f"raw BatchWriteItem, {threads} threads: {t.items:,} items in {t.seconds:.1f}s "
                    f"= {t.items_per_s:,.0f} items/s")
                delete_table(url, SOURCE_REGION, scratch)
        best_threads = max(sweep, key=lambda r: r["items_per_s"])["threads"] if sweep else 8
        table = "bench-source"
        load = load_table(url, aws, table, n, pad, best_threads)
        log(f"loaded {table}: {load.items:,} items in {load.seconds:.1f}s = {load.items_per_s:,.0f} items/s "
            f"({best_threads} threads)")
        candidates = [*sweep, {"threads": best_threads, "source_load": True, **load.to_json()}]
        best_write = max(candidates, key=lambda r: r["items_per_s"])
        results["raw_write"] = {
            "sweep": sweep,
            "source_load": {"threads": best_threads, **load.to_json()},
            "best": best_write,
            "best_items_per_s": best_write["items_per_s"],
        }

        # 2. Raw scan limit.
        scans: list[dict[str, Any]] = []
        for segs in SCAN_SEGMENTS:
            t = parallel_scan(url, SOURCE_REGION, table, segs)
            scans.append({"segments": segs, **t.to_json(), "complete": t.items == n})
            log(f"raw Scan, {segs} segments: {t.items:,} items in {t.seconds:.1f}s = {t.items_per_s:,.0f} items/s")
            if t.items != n:
                log(f"  WARNING: scan returned {t.items:,} items, the table has {n:,}")
        best_scan = max(scans, key=lambda r: r["items_per_s"])
        results["raw_scan"] = {"runs": scans, "best": best_scan, "best_items_per_s": best_scan["items_per_s"]}

        # 3. backupctl snapshot, 4. restore.
        snap = run_snapshot(url, table, n)
        results["snapshot"] = snap
        if snap["ok"]:
            rest = run_restore(url, snap["snapshot_id"], f"{table}-restored", n)
            results["restore"] = rest
            if rest["ok"]:
                delete_table(url, TARGET_REGION, f"{table}-restored")  # moto keeps it in memory
        else:
            results["restore"] = {"ok": False, "items": n, "error": "not run: the snapshot failed"}

        # 3b. backupctl snapshot --method export (native point-in-time export; needs PITR on the source).
        if args.skip_export:
            results["snapshot_export"] = {"ok": False, "skipped": True, "items": n, "error": "skipped (--skip-export)"}
        else:
            raw_client(url, SOURCE_REGION).update_continuous_backups(
                TableName=table, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )
            exp = run_snapshot(url, table, n, ("--method", "export"))
            if exp["ok"] and snap["ok"] and exp.get("digest") != snap.get("digest"):
                exp["ok"], exp["error"] = False, "export snapshot digest differs from the scan snapshot's"
            results["snapshot_export"] = exp

        # 5. dynamodump.
        if args.skip_dynamodump:
            results["dynamodump"] = {"ok": False, "skipped": True, "error": "skipped (--skip-dynamodump)"}
        else:
            results["dynamodump"] = run_dynamodump(
                url, table, n, find_dynamodump(args.dynamodump), args.dynamodump_timeout or timeout_for(n)
            )

        # 6. Peak RSS of a snapshot per table size (the snapshot above counts for its own size).
        rss: list[dict[str, Any]] = []
        for size in rss_sizes:
            if size == n and snap["ok"]:
                rss.append({"items": size, "peak_rss_mb": snap["peak_rss_mb"], "wall_s": snap["wall_s"],
                            "items_per_s": snap["items_per_s"], "ok": True, "table": table,
                            **{k: snap.get(k) for k in CPU_KEYS},
                            "note": "the snapshot measured above"})
                continue
            rt = f"bench-rss-{size}"
            t = load_table(url, aws, rt, size, pad, best_threads, seed=SEED + size)
            log(f"loaded {rt}: {t.items:,} items in {t.seconds:.1f}s = {t.items_per_s:,.0f} items/s")
            r = run_snapshot(url, rt, size)
            keys = ("items", "peak_rss_mb", "wall_s", "items_per_s", "ok", "error", "table", *CPU_KEYS)
            rss.append({k: r.get(k) for k in keys}
                       | {"load": t.to_json()})
            delete_table(url, SOURCE_REGION, rt)
        results["rss"] = rss
        results["moto_peak_rss_mb"] = moto_peak_rss_mb(ep)

    snap_rate = snap.get("items_per_s")
    dd = results["dynamodump"]
    rest = results["restore"]
    ratios = [
        ratio(f"snapshot / best raw scan ({best_scan['segments']} seg)", snap_rate, best_scan["items_per_s"],
              f">= {TARGET_SNAPSHOT_VS_SCAN}", lambda v: v >= TARGET_SNAPSHOT_VS_SCAN, "snapshot failed"),
        ratio("snapshot / dynamodump", snap_rate, dd.get("items_per_s"), f">= {TARGET_SNAPSHOT_VS_DYNAMODUMP:g}",
              lambda v: v >= TARGET_SNAPSHOT_VS_DYNAMODUMP,
              "dynamodump skipped" if dd.get("skipped") else "dynamodump or snapshot failed"),
        ratio("export snapshot / dynamodump", results["snapshot_export"].get("items_per_s"), dd.get("items_per_s"),
              f">= {TARGET_SNAPSHOT_VS_DYNAMODUMP:g}", lambda v: v >= TARGET_SNAPSHOT_VS_DYNAMODUMP,
              "export skipped or failed, or dynamodump failed"),
        ratio("export snapshot / best raw scan", results["snapshot_export"].get("items_per_s"),
              best_scan["items_per_s"], f">= {TARGET_SNAPSHOT_VS_SCAN}", lambda v: v >= TARGET_SNAPSHOT_VS_SCAN,
              "export skipped or failed"),
        ratio("restore / best raw write", rest.get("items_per_s"), results["raw_write"]["best_items_per_s"],
              f">= {TARGET_RESTORE_VS_WRITE}", lambda v: v >= TARGET_RESTORE_VS_WRITE, "restore failed"),
    ]
    ok_rss = [r for r in rss if r.get("ok") and r.get("peak_rss_mb")]
    if len(rss_sizes) >= 2:
        lo, hi = rss[0], rss[-1]
        lo_ok, hi_ok = lo in ok_rss, hi in ok_rss
        ratios.append(ratio(
            f"RSS {hi['items']:,} / RSS {lo['items']:,}", hi["peak_rss_mb"] if hi_ok else None,
            lo["peak_rss_mb"] if lo_ok else None, f"{TARGET_RSS_RANGE[0]}..{TARGET_RSS_RANGE[1]}",
            lambda v: TARGET_RSS_RANGE[0] <= v <= TARGET_RSS_RANGE[1], "a snapshot failed or RSS not measured",
        ))
    results["ratios"] = ratios
    after = code_identity()
    if after != results["backupctl_code"]:
        results["backupctl_code"]["changed_during_run"] = after
        log(f"WARNING: backupctl's code changed during the run ({after['tree_sha256']}); use --backupctl-src")
    results["total_s"] = round(time.monotonic() - _T0, 1)
    return results


def code_identity() -> dict[str, Any]:
    """Which backupctl code the run measured: its directory and a hash of its .py files."""
    root = Path(backupctl.__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return {"path": str(root), "tree_sha256": h.hexdigest()[:16]}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


# -- output -------------------------------------------------------------------------------------------


def _fmt(v: Any, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def render(res: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = []

    def row(name: str, r: dict[str, Any], seconds_key: str = "seconds", extra: str = "") -> None:
        cpu = (_fmt(r.get("client_cpu_s"), ",.1f"), _fmt(r.get("moto_cpu_s"), ",.1f"), _fmt(r.get("other_cores"), ".2f"))
        if r.get("ok", True) and r.get("items_per_s") is not None:
            rows.append((name, _fmt(r.get("items")), _fmt(r.get(seconds_key), ".1f"), _fmt(r["items_per_s"]),
                         *cpu, extra))
        else:
            verdict = "skipped" if r.get("skipped") else "FAILED (see below)"
            rows.append((name, _fmt(r.get("items")), _fmt(r.get(seconds_key), ".1f"), "-", *cpu, verdict))

    for s in res["raw_write"]["sweep"]:
        row(f"raw BatchWriteItem, {s['threads']} threads (scratch)", s)
    sl = res["raw_write"]["source_load"]
    row(f"raw BatchWriteItem, {sl['threads']} threads (load source)", sl)
    for s in res["raw_scan"]["runs"]:
        row(f"raw Scan, {s['segments']} segments", s, extra="" if s["complete"] else "INCOMPLETE")
    snap = res["snapshot"]
    row("backupctl snapshot us-east-1 -> us-west-2", snap, "wall_s",
        f"duration_s {_fmt(snap.get('duration_s'), '.1f')}, peak RSS {_fmt(snap.get('peak_rss_mb'))} MiB"
        if snap.get("ok") else "")
    rest = res["restore"]
    row("backupctl restore (us-west-2)", rest, "wall_s",
        f"duration_s {_fmt(rest.get('duration_s'), '.1f')}, peak RSS {_fmt(rest.get('peak_rss_mb'))} MiB"
        if rest.get("ok") else "")
    exp = res.get("snapshot_export") or {"skipped": True}
    row("backupctl snapshot --method export", exp, "wall_s",
        f"duration_s {_fmt(exp.get('duration_s'), '.1f')}, peak RSS {_fmt(exp.get('peak_rss_mb'))} MiB, "
        "same digest as the scan" if exp.get("ok") else "")
    dd = res["dynamodump"]
    row("dynamodump -m backup", dd, "wall_s", f"peak RSS {_fmt(dd.get('peak_rss_mb'))} MiB" if dd.get("ok") else "")
    for r in res["rss"]:
        row(f"backupctl snapshot, {r['items']:,} items", r, "wall_s",
            f"peak RSS {_fmt(r.get('peak_rss_mb'), ',.1f')} MiB" if r.get("ok") else "")

    head = ("measurement", "items", "seconds", "items/s", "client CPU s", "moto CPU s", "other cores", "")
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(len(head))]
    out = []
    it = res["item"]
    m = res["machine"]
    out.append(f"backupctl DynamoDB benchmark - {res['date']} - {m['cpus']} CPUs, {m['platform']}, Python {m['python']}")
    out.append("versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    code = res["backupctl_code"]
    out.append(f"backupctl code: {code['path']} (sha256 of its .py files {code['tree_sha256']})")
    if code.get("changed_during_run"):
        out.append(f"WARNING: the code changed during the run (now {code['changed_during_run']['tree_sha256']}): "
                   "the figures mix versions; freeze it with --backupctl-src")
    out.append(f"{res['items']:,} items of {it['mean_json_line_bytes']:.0f} B (JSON line; "
               f"{it['mean_dynamodb_item_bytes']:.0f} B by DynamoDB's size rule), moto server {res['endpoint']}")
    out.append("")

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.ljust(widths[i]) if i in (0, len(head) - 1) else c.rjust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    out.append(line(head))
    out.append(line(tuple("-" * w for w in widths)))
    out.extend(line(r) for r in rows)
    out.append("client CPU s: the bench process or the backupctl/dynamodump child; moto CPU s: the moto server;")
    out.append("other cores: cores used on average by processes outside the bench meanwhile (0.1-0.2 is noise)")
    out.append("")
    out.append("ratios (items/s over items/s; RSS over RSS):")
    for r in res["ratios"]:
        verdict = "MET" if r["met"] else "MISSED"
        val = "n/a" if r["value"] is None else f"{r['value']:.4f}"
        out.append(f"  {r['name']:<40} {val:>8}   target {r['target']:<9} {verdict}"
                   + (f" ({r['note']})" if r["note"] else ""))
    failures: list[tuple[str, dict[str, Any]]] = [
        (k, res[k]) for k in ("snapshot", "snapshot_export", "restore", "dynamodump")
        if k in res and not res[k].get("ok") and not res[k].get("skipped")
    ]
    failures += [(f"snapshot of {r['items']:,} items", r) for r in res["rss"] if not r.get("ok")]
    if failures:
        out.append("")
        out.append("failures:")
        for k, r in failures:
            out.append(f"  {k}: {r.get('error')}")
    if res.get("moto_peak_rss_mb"):
        out.append("")
        out.append(f"moto server peak RSS: {res['moto_peak_rss_mb']:,.0f} MiB; total bench time {res['total_s']:,.0f}s")
    return "\n".join(out)


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated item counts, got {text!r}") from e
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError("item counts must be positive")
    return sizes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--items", type=int, default=100_000, help="items in the source table (default 100000)")
    ap.add_argument("--rss-items", type=parse_sizes, default=[100_000, 300_000],
                    help="table sizes for the peak-RSS comparison, comma-separated (default 100000,300000)")
    ap.add_argument("--sweep-items", type=int, default=20_000,
                    help="items per scratch table in the BatchWriteItem thread sweep; 0 = no sweep, "
                         "load with 8 threads (default 20000)")
    ap.add_argument("--skip-dynamodump", action="store_true", help="do not run dynamodump")
    ap.add_argument("--skip-export", action="store_true", help="do not measure snapshot --method export")
    ap.add_argument("--dynamodump", metavar="PATH",
                    help="the dynamodump executable (default: beside this interpreter, else on PATH)")
    ap.add_argument("--dynamodump-timeout", type=float, metavar="S",
                    help="seconds before dynamodump is killed (default max(300, items/200))")
    ap.add_argument("--backupctl-src", metavar="DIR",
                    help="import backupctl from DIR/backupctl (e.g. a copy frozen before the run) in this bench "
                         "and its backupctl children, instead of the installed package")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON document")
    ap.add_argument("--out", metavar="FILE", help="also write the results as JSON to FILE")
    args = ap.parse_args(argv)
    if args.items < 1:
        ap.error("--items must be positive")
    if args.backupctl_src:
        src = str(Path(args.backupctl_src).resolve())
        if not (Path(src) / "backupctl" / "__init__.py").is_file():
            ap.error(f"--backupctl-src: {src}/backupctl/__init__.py not found")
        if Path(backupctl.__file__).resolve().parent != Path(src) / "backupctl":
            # Re-run this script with DIR first on PYTHONPATH: the bench, the backupctl CLI children
            # and their imports then all see the frozen copy.
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
            os.execve(sys.executable, [sys.executable, *sys.argv], env)
    res = run(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(res, indent=2) if args.json else render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
