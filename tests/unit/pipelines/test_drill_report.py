"""The drill report page: escaping of hostile values, the empty state, chart points and axes, summaries."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest

from backupctl.pipelines.drill_report import (
    FAIL_COLOUR,
    PASS_COLOUR,
    human_seconds,
    render_html,
    summarize,
    svg_chart,
)


def drill(i: int, passed: bool = True, rto: Any = 10.0, rpo: Any = 20.0, **kw: Any) -> dict[str, Any]:
    doc = {"drill_id": f"r2026112{i}t030000-00000{i}", "playbook": "playbooks/dynamodb-dr-drill.yaml",
           "name": "dynamodb-dr-drill", "passed": passed, "status": "succeeded" if passed else "failed",
           "exit_code": 0 if passed else 5, "started_at": f"2026-11-2{i}T03:00:00.000000Z",
           "source": "DynamoDBTable orders (us-east-1)", "source_key": "dynamodb.us-east-1.orders",
           "target": "DynamoDBTable orders-drill-x (us-west-2)", "rto_s": rto, "rpo_s": rpo,
           "rows": {"snapshot": 300, "restored": 300}, "digest": {"snapshot": "ab" * 32, "restored": "ab" * 32},
           "snapshot": {"snapshot_id": "20261120T030000Z-abcdef"},
           "problems": [] if passed else ["item pk='o-1', sk='a' differs from the snapshot"]}
    doc.update(kw)
    return summarize(doc, f"drills/dynamodb.us-east-1.orders/{doc['drill_id']}.json")


class Elements(HTMLParser):
    """Every start tag with its attributes (as a browser's tokenizer would see them)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Elements:
    p = Elements()
    p.feed(page)
    p.close()
    return p


HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def test_every_hostile_value_is_escaped() -> None:
    d = drill(1, passed=False, name=HOSTILE, playbook=HOSTILE, source=HOSTILE, target=HOSTILE, drill_id=HOSTILE,
              started_at=HOSTILE, problems=[HOSTILE], rows={"snapshot": HOSTILE, "restored": 3},
              digest={"snapshot": HOSTILE, "restored": "</td></tr>"})
    page = render_html([d, drill(2)], repository=f"s3://b/{HOSTILE}")
    p = parse(page)
    tags = {t for t, _ in p.tags}
    assert "script" not in tags and "img" not in tags
    assert not any(k.startswith("on") for _, attrs in p.tags for k in attrs)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Attribute values survive quoting intact: the row's drill id is the hostile string, not a broken attribute.
    rows = [a for t, a in p.tags if t == "tr" and "drill" in (a.get("class") or "")]
    assert [r["data-drill-id"] for r in rows] == ["r20261122t030000-000002", HOSTILE]
    assert HOSTILE in "".join(p.text)  # shown as text
    assert not any(k in ("src", "href") for _, attrs in p.tags for k in attrs)


def test_page_is_self_contained() -> None:
    page = render_html([drill(1), drill(2, passed=False)], repository="s3://bucket/")
    # No scripts, no external resources (the one URL is SVG's namespace), and a CSP that forbids them anyway.
    for needle in ("<script", " src=", "href=", "url(", "@import", "http://", "https://", "<link"):
        assert needle not in page.replace('xmlns="http://www.w3.org/2000/svg"', ""), needle
    assert "default-src 'none'" in page


def test_non_numbers_are_not_plotted_or_trusted() -> None:
    s = summarize({"drill_id": "x", "passed": "yes", "rto_s": "12", "rpo_s": float("nan"),
                   "rows": [1], "digest": "zz", "exit_code": True})
    assert s["passed"] is False and s["rto_s"] is None and s["rpo_s"] is None and s["exit_code"] is None
    assert s["rows"] == {"snapshot": None, "restored": None} and s["reason"] == "failed"
    assert summarize({"rto_s": True})["rto_s"] is None
    assert summarize({}, "drills/mysql.us-east-1.shop.orders/r1.json")["source_key"] == "mysql.us-east-1.shop.orders"


def test_failure_reason_falls_back_to_the_failed_activity() -> None:
    s = summarize({"passed": False, "status": "failed", "problems": [],
                   "activities": [{"name": "restore", "status": "failed", "error": "restore: table exists"}]})
    assert s["reason"] == "restore: table exists"


def test_empty_state_page() -> None:
    page = render_html([], repository="s3://bucket/")
    p = parse(page)
    assert any(a.get("id") == "empty-state" for _, a in p.tags)
    assert "No drills recorded" in page and "0 drill(s)" in page
    assert "<svg" not in page and "<table" not in page


def circles(svg: str) -> list[dict[str, str | None]]:
    return [a for t, a in parse(svg).tags if t == "circle"]


def test_chart_points_coloured_by_result_and_placed_by_time_and_value() -> None:
    drills = [drill(1, rto=10.0), drill(2, passed=False, rto=40.0), drill(3, rto=None), drill(4, rto=20.0)]
    svg = svg_chart(drills, "rto_s", "RTO")
    drawn = circles(svg)
    # Failed points are drawn last (on top of any passed point they overlap).
    assert [p["data-drill-id"] for p in drawn] == [drills[i]["drill_id"] for i in (0, 3, 1)]
    pts = sorted(drawn, key=lambda p: float(p["cx"] or 0))
    assert [p["data-drill-id"] for p in pts] == [drills[i]["drill_id"] for i in (0, 1, 3)]
    assert [p["class"] for p in pts] == ["point pass", "point fail", "point pass"]
    assert [p["fill"] for p in pts] == [PASS_COLOUR, FAIL_COLOUR, PASS_COLOUR]
    assert [p["data-value"] for p in pts] == ["10", "40", "20"]
    cx = [float(p["cx"] or 0) for p in pts]
    cy = [float(p["cy"] or 0) for p in pts]
    assert cx[0] < cx[1] < cx[2]  # later drills further right
    assert cy[1] < cy[2] < cy[0]  # larger values higher up (SVG y grows downwards)
    # Axes and their labels; y ticks from 0 to a round top at or above the maximum (40 -> 50).
    assert 'class="axis x-axis"' in svg and 'class="axis y-axis"' in svg
    assert "drill start (UTC)" in svg and "RTO (seconds)" in svg
    ticks = re.findall(r'class="tick y-tick"[^>]*>([^<]+)<', svg)
    assert ticks[0] == "0" and ticks[-1] == "50"
    assert "2026-11-21 03:00" in svg and "2026-11-24 03:00" in svg
    assert "1 without a RTO" in svg


def test_single_point_and_no_points() -> None:
    one = circles(svg_chart([drill(1, rpo=5.0)], "rpo_s", "RPO"))
    assert len(one) == 1 and float(one[0]["cx"] or 0) > 0
    none = svg_chart([drill(1, rto=None)], "rto_s", "RTO")
    assert circles(none) == [] and "no RTO recorded yet" in none


def test_page_has_both_charts_and_a_row_per_drill_newest_first() -> None:
    drills = [drill(1), drill(2, passed=False)]
    page = render_html(drills, "s3://bucket/", generated_at=datetime(2026, 11, 27, tzinfo=UTC))
    p = parse(page)
    assert [a["data-metric"] for t, a in p.tags if t == "svg"] == ["rto_s", "rpo_s"]
    rows = [a for t, a in p.tags if t == "tr" and a.get("data-drill-id")]
    assert [r["class"] for r in rows] == ["drill fail", "drill pass"]
    assert "FAILED" in page and "PASSED" in page and "differs from the snapshot" in page
    assert 'data-seconds="10.0"' in page and ">10.0s<" in page
    assert "2 drill(s), 1 passed, 1 failed" in page and "2026-11-27T00:00:00.000000Z" in page


@pytest.mark.parametrize(("s", "text"), [
    (None, "-"), (0.8412, "0.84s"), (12.34, "12.3s"), (245, "4m 05s"), (11220, "3h 07m"),
    (187200, "2d 04h"), (-3, "-3.00s"),
])
def test_human_seconds(s: float | None, text: str) -> None:
    assert human_seconds(s) == text
