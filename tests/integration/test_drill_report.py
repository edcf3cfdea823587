"""`drill report` and `status` against a moto server, after real drills; the page rendered by headless Chromium.

One module fixture runs two real DynamoDB drills into a repository of their
own (a passing one through the CLI, a failing one through the library with
one restored item altered before the check, as in test_drill_dynamodb.py)
and adds a hostile drill report, as a tampered repository could hold. The
tests then read that history back: the HTML page (both drills, pass/fail and
why, RTO numbers, chart points), `--json`, the page as Chromium renders it
(its DOM and a screenshot), `--open`, and `status` with and without a stale
source.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from backupctl.aws import AwsContext
from backupctl.model import isoformat, parse_time, utcnow
from backupctl.pipelines.drill import run_drill
from backupctl.pipelines.drill_report import FAIL_COLOUR, PASS_COLOUR, human_seconds
from backupctl.pipelines.model import load_playbook
from backupctl.repository import Repository
from tests.integration.helpers import make_table, one_json

pytestmark = pytest.mark.integration

PLAYBOOK = """\
version: 1
kind: drill
name: report-drill
nodes:
  orders: {{type: DynamoDBTable, region: us-east-1, table: {t}}}
  repo: {{type: S3Repository, region: us-west-2, uri: "{repo}"}}
  scratch: {{type: DynamoDBTable, region: us-west-2, table: "{t}-drill-${{scratch_suffix}}", scratch: true}}
drill: {{source: orders, repository: repo, target: scratch, snapshot: take, samples: 5}}
"""

EVIL_ID = "r20200101t000000-000000"
HOSTILE = '"><script id="pwned">alert(1)</script><img id="pwned2" src=x onerror=alert(2)>'


@dataclass
class Run:
    code: int
    out: str
    err: str


@dataclass
class History:
    url: str
    repo: str
    table: str
    passed: dict[str, Any]
    failed: dict[str, Any]
    page: Path


def backupctl(url: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Run:
    exe = Path(sys.executable).parent / "backupctl"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "backupctl"]
    e = dict(os.environ, COLUMNS="200", BACKUPCTL_ENDPOINT_URL=url, **(env or {}))
    p = subprocess.run(cmd + list(args), capture_output=True, text=True, env=e, timeout=timeout)
    return Run(p.returncode, p.stdout, p.stderr)


@pytest.fixture(scope="module")
def history(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    aws = AwsContext(endpoint_url=moto_server)
    t = f"t-{uuid.uuid4().hex[:10]}"
    repo = f"s3://{t}-repo"
    make_table(aws, "us-east-1", t, 40)
    d = tmp_path_factory.mktemp("drill-report")
    pb_path = d / "drill.yaml"
    pb_path.write_text(PLAYBOOK.format(t=t, repo=repo))

    r = backupctl(moto_server, "drill", "run", str(pb_path), "--json")
    assert r.code == 0, r.err
    passed = one_json(r.out)

    def tamper(ctx) -> None:  # type: ignore[no-untyped-def]
        node = ctx.node("scratch")
        ddb = aws.client("dynamodb", node.get("region"))
        item = ddb.scan(TableName=node.get("table"), Limit=1)["Items"][0]
        item["status"] = {"S": "tampered"}
        ddb.put_item(TableName=node.get("table"), Item=item)

    failed = run_drill(aws, load_playbook(str(pb_path)), after_restore=tamper)
    assert failed["passed"] is False and failed["exit_code"] == 5, failed["problems"]
    # A report as a tampered repository could hold it: every string hostile, the numbers plausible. Dated
    # just before the real drills, so the chart's time axis keeps their two points apart.
    at = isoformat(parse_time(passed["started_at"]) - timedelta(seconds=10))
    aws.client("s3", "us-west-2").put_object(
        Bucket=f"{t}-repo", Key=f"drills/dynamodb.us-east-1.{t}/{EVIL_ID}.json",
        Body=json.dumps({"drill_id": EVIL_ID, "passed": False, "name": HOSTILE, "source": HOSTILE,
                         "target": HOSTILE, "problems": [HOSTILE], "started_at": at,
                         "rto_s": 1.5, "rpo_s": 2.5, "playbook": HOSTILE}).encode())
    page = d / "report.html"
    r = backupctl(moto_server, "drill", "report", "--repo", repo, "--out", str(page))
    assert r.code == 0, r.err
    assert f"wrote {page}" in r.err and "3 drill(s)" in r.err
    yield History(moto_server, repo, t, passed, failed, page)


def test_page_lists_both_drills_with_result_rto_and_points(history: History) -> None:
    page = history.page.read_text()
    ok, bad = history.passed, history.failed
    for rep, cls in ((ok, "pass"), (bad, "fail")):
        assert f'<tr class="drill {cls}" data-drill-id="{rep["drill_id"]}">' in page
        assert f'data-seconds="{rep["rto_s"]}">{human_seconds(rep["rto_s"])}<' in page
        assert f'data-seconds="{rep["rpo_s"]}">{human_seconds(rep["rpo_s"])}<' in page
        assert f'class="point {cls}"' in page
    assert ok["rto_s"] > 0 and bad["rto_s"] > 0
    assert "PASSED" in page and "FAILED" in page
    assert "differs from the snapshot" in page  # the failure reason, naming the altered item
    assert "3 drill(s), 1 passed, 2 failed" in page
    assert "<script" not in page and "&lt;script id=&quot;pwned&quot;&gt;" in page


def test_json_history(history: History) -> None:
    r = backupctl(history.url, "drill", "report", "--repo", history.repo, "--json")
    assert r.code == 0, r.err
    doc = one_json(r.out)
    assert doc["repository"] == history.repo + "/" and doc["html"] is None
    by_id = {d["drill_id"]: d for d in doc["drills"]}
    ok, bad = by_id[history.passed["drill_id"]], by_id[history.failed["drill_id"]]
    assert ok["passed"] is True and ok["reason"] is None and ok["rto_s"] == history.passed["rto_s"]
    assert bad["passed"] is False and "differs from the snapshot" in bad["reason"]
    assert bad["digest"]["equal"] is False and ok["digest"]["equal"] is True
    assert ok["rows"] == {"snapshot": 40, "restored": 40}
    assert [d["drill_id"] for d in doc["drills"]][0] == EVIL_ID  # oldest first


def test_open_uses_the_webbrowser_module(history: History, tmp_path: Path) -> None:
    marker = tmp_path / "opened"
    browser = f"{sys.executable} -c \"import sys; open('{marker}', 'w').write(sys.argv[1])\" %s"
    out = tmp_path / "r.html"
    r = backupctl(history.url, "drill", "report", "--repo", history.repo, "--out", str(out), "--open",
                  env={"BROWSER": browser})
    assert r.code == 0, r.err
    assert marker.read_text() == out.resolve().as_uri()


def test_empty_repository_gives_an_empty_page(moto_server: str, tmp_path: Path) -> None:
    repo = f"s3://t-{uuid.uuid4().hex[:10]}-empty"
    Repository.open(AwsContext(endpoint_url=moto_server), "us-west-2", repo, create=True)  # no drills in it
    out = tmp_path / "empty.html"
    r = backupctl(moto_server, "drill", "report", "--repo", repo, "--out", str(out))
    assert r.code == 0, r.err
    assert "no drills recorded" in r.err
    assert 'id="empty-state"' in out.read_text()
    r = backupctl(moto_server, "drill", "report", "--repo", repo, "--json")
    assert r.code == 0 and one_json(r.out)["drills"] == []


# -- headless Chromium ----------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    """The Chromium binary, checked before the drills run (a skip costs nothing)."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; .ci/system-deps.sh installs it "
                    "on CI, where this test must run)")
    return found


def run_chromium(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A profile of its own per run: a second Chromium on a profile still in use hands its work to the first.
    profile = tmp_path / f"profile-{uuid.uuid4().hex[:8]}"
    cmd = [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--disable-dev-shm-usage",
           "--no-first-run", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


class Dom(HTMLParser):
    """Elements of a serialised DOM: tags, and the circles of each chart by its metric."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.points: dict[str, list[dict[str, str | None]]] = {}
        self._svg: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "svg":
            self._svg = a.get("data-metric") or ""
            self.points[self._svg] = []
        elif tag == "circle" and self._svg is not None:
            self.points[self._svg].append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg = None


def test_chromium_renders_the_charts_and_their_points(chromium: str, history: History, tmp_path: Path) -> None:
    p = run_chromium(chromium, tmp_path, "--dump-dom", history.page.resolve().as_uri())
    assert p.returncode == 0, p.stderr[-2000:]
    dom = Dom()
    dom.feed(p.stdout)
    ids = {history.passed["drill_id"]: "point pass", history.failed["drill_id"]: "point fail",
           EVIL_ID: "point fail"}
    assert set(dom.points) == {"rto_s", "rpo_s"}  # both charts are in the rendered DOM
    for metric in ("rto_s", "rpo_s"):
        got = {c["data-drill-id"]: c["class"] for c in dom.points[metric]}
        assert got == ids, metric
        fills = {c["fill"] for c in dom.points[metric]}
        assert fills == {PASS_COLOUR, FAIL_COLOUR}
    # The hostile strings stayed text: the browser built no element from them.
    assert not [a for _, a in dom.tags if a.get("id") in ("pwned", "pwned2")]
    assert {t for t, _ in dom.tags}.isdisjoint({"script", "img", "iframe", "object"})
    # Rows: one per drill, newest first.
    rows = [a["data-drill-id"] for t, a in dom.tags if t == "tr" and a.get("data-drill-id")]
    assert rows == [history.failed["drill_id"], history.passed["drill_id"], EVIL_ID]

    # And it paints: a screenshot has pixels in the pass and the fail colour (the points).
    shot = tmp_path / "page.png"
    p = run_chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1000,700", "--hide-scrollbars",
                     history.page.resolve().as_uri())
    assert p.returncode == 0 and shot.exists(), p.stderr[-2000:]
    counts = colour_counts(shot.read_bytes(), {PASS_COLOUR, FAIL_COLOUR})
    assert counts[PASS_COLOUR] > 20 and counts[FAIL_COLOUR] > 20, counts


def colour_counts(png: bytes, colours: set[str]) -> dict[str, int]:
    """Pixels of each #rrggbb colour in an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = depth = ctype = 0
    while pos < len(png):
        (n,) = struct.unpack(">I", png[pos:pos + 4])
        kind, data = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", data[:10])
        elif kind == b"IDAT":
            idat += data
    assert depth == 8 and ctype in (2, 6), (depth, ctype)
    bpp = 3 if ctype == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    want = {bytes.fromhex(c[1:]): c for c in colours}
    counts = dict.fromkeys(colours, 0)
    prev = bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        for x in range(0, stride, bpp):
            rgb = bytes(line[x:x + 3])
            if rgb in want:
                counts[want[rgb]] += 1
        prev = line
    return counts


# -- status -----------------------------------------------------------------------


def test_status_fresh_source_and_its_last_drill(history: History) -> None:
    r = backupctl(history.url, "status", "--repo", history.repo, "--max-age", "1h", "--json")
    assert r.code == 0, r.err
    doc = one_json(r.out)
    (src,) = [s for s in doc["sources"] if s["source_key"] == f"dynamodb.us-east-1.{history.table}"]
    assert src["stale"] is False and doc["stale"] == []
    assert src["snapshot"]["snapshot_id"] == history.failed["snapshot"]["snapshot_id"]  # the newest
    assert src["last_drill"]["drill_id"] == history.failed["drill_id"] and src["last_drill"]["passed"] is False
    assert src["last_drill"]["rto_s"] == history.failed["rto_s"]
    r = backupctl(history.url, "status", "--repo", history.repo)
    assert r.code == 0, r.err
    assert f"DynamoDB {history.table} (us-east-1)" in r.err and "FAILED" in r.err


def test_status_max_age_names_the_stale_source(history: History) -> None:
    created = parse_time(history.failed["snapshot"]["created_at"])
    wait = 1.2 - (utcnow() - created).total_seconds()
    if wait > 0:
        time.sleep(wait)
    r = backupctl(history.url, "status", "--repo", history.repo, "--max-age", "1s")
    assert r.code == 5, r.err
    line = next(x for x in r.err.splitlines() if "stale:" in x)
    assert f"dynamodb.us-east-1.{history.table}" in line and history.failed["snapshot"]["snapshot_id"] in line
    assert "(max 1.00s)" in line
    r = backupctl(history.url, "status", "--repo", history.repo, "--max-age", "1s", "--json")
    assert r.code == 5 and one_json(r.out)["stale"] == [f"dynamodb.us-east-1.{history.table}"]
