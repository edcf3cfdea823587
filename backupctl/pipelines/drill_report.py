"""The drill history: read the drill reports a repository holds, render them as one self-contained HTML page.

``run_drill`` records every drill as ``drills/<source-key>/<drill-id>.json``
(also failed ones). ``load_drills`` reads them back and reduces each to a flat
summary with checked types (``summarize``): a repository is data, not code, so
a report that is not a JSON object is skipped with a warning and every field
is coerced (numbers must be finite, strings are strings). ``render_html``
turns the summaries into one page: no scripts, no external CSS, fonts or
images (a Content-Security-Policy forbids them), a table of drills and one
inline SVG chart per metric (RTO, RPO) whose points are coloured by pass/fail.
Every value is passed through ``html.escape`` exactly once, in ``_e``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from backupctl.errors import NotFound
from backupctl.model import isoformat, newest_by_name, parse_time, utcnow
from backupctl.repository import Repository

DRILLS_PREFIX = "drills/"
PASS_COLOUR = "#1a7f37"
FAIL_COLOUR = "#cf222e"


# -- reading ------------------------------------------------------------------------


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _num(v: Any) -> float | None:
    """A finite number, or None (bools, strings, NaN and infinities are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _time(v: Any) -> datetime | None:
    try:
        return parse_time(str(v))
    except (TypeError, ValueError):
        return None


def failure_reason(doc: dict[str, Any]) -> str | None:
    """Why a drill failed: its problems, else the first failed activity's error."""
    problems = doc.get("problems")
    if isinstance(problems, list) and problems:
        return "; ".join(str(p) for p in problems)
    for a in doc.get("activities") or []:
        if isinstance(a, dict) and a.get("status") in ("failed", "cancelled") and a.get("error"):
            return str(a["error"])
    status = doc.get("status")
    return f"drill {status}" if status and status != "succeeded" else None


def summarize(doc: dict[str, Any], key: str = "", url: str | None = None) -> dict[str, Any]:
    """One drill report as a flat summary with checked types (the rows of the page and of ``--json``)."""
    rows, digest, snap = (v if isinstance(v := doc.get(k), dict) else {} for k in ("rows", "digest", "snapshot"))
    parts = key.split("/")
    passed = doc.get("passed") is True
    d_snap, d_rest = _str(digest.get("snapshot")), _str(digest.get("restored"))
    return {
        "drill_id": _str(doc.get("drill_id")) or (parts[-1].removesuffix(".json") if parts[-1] else None),
        "started_at": _str(doc.get("started_at")),
        "finished_at": _str(doc.get("finished_at")),
        "playbook": _str(doc.get("playbook")),
        "name": _str(doc.get("name")),
        "source": _str(doc.get("source")),
        "source_key": _str(doc.get("source_key")) or (parts[1] if len(parts) == 3 else None),
        "target": _str(doc.get("target")),
        "passed": passed,
        "status": _str(doc.get("status")) or ("succeeded" if passed else "failed"),
        "exit_code": _int(doc.get("exit_code")),
        "reason": None if passed else (failure_reason(doc) or "failed"),
        "rto_s": _num(doc.get("rto_s")),
        "rpo_s": _num(doc.get("rpo_s")),
        "rows": {"snapshot": _int(rows.get("snapshot")), "restored": _int(rows.get("restored"))},
        "digest": {"snapshot": d_snap, "restored": d_rest,
                   "equal": (d_snap == d_rest) if d_snap is not None and d_rest is not None else None},
        "snapshot_id": _str(snap.get("snapshot_id")),
        "report": url,
    }


def _sort_key(s: dict[str, Any]) -> tuple[str, str]:
    return (s.get("started_at") or "", s.get("drill_id") or "")


def load_drills(repo: Repository, warn: Callable[[str], None] | None = None,
                source_key: str | None = None, workers: int = 16) -> list[dict[str, Any]]:
    """Every drill report in the repository (or of one source) as summaries, oldest first."""
    warn = warn or (lambda _m: None)
    prefix = DRILLS_PREFIX + (f"{source_key}/" if source_key else "")
    keys = [k for k in repo.store.list_keys(prefix) if k.endswith(".json") and k.count("/") == 2]

    def read(key: str) -> dict[str, Any] | None:
        try:
            doc = repo.store.get_json(key)
        except NotFound:
            return None  # removed while we listed
        except Exception as e:  # noqa: BLE001 - one unreadable report must not hide the others
            warn(f"skipping {repo.store.url(key)}: {getattr(e, 'message', e)}")
            return None
        if not isinstance(doc, dict):
            warn(f"skipping {repo.store.url(key)}: not a JSON object")
            return None
        return summarize(doc, key, repo.store.url(key))

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(keys) or 1))) as pool:
        out = [s for s in pool.map(read, keys) if s is not None]
    out.sort(key=_sort_key)
    return out


def latest_drill(repo: Repository, source_key: str) -> dict[str, Any] | None:
    """The newest drill of one source (by started_at; drill ids sort by it to the second), or None."""
    folder = f"{DRILLS_PREFIX}{source_key}/"

    def read(key: str) -> dict[str, Any] | None:
        try:
            doc = repo.store.get_json(key)
        except NotFound:
            return None
        return summarize(doc, key, repo.store.url(key)) if isinstance(doc, dict) else None

    keys = [k for k in repo.store.list_keys(folder) if k.endswith(".json")]
    return newest_by_name(keys, lambda k: k[len(folder):][:16], read, _sort_key)


# -- formatting ---------------------------------------------------------------------


def human_seconds(s: float | None) -> str:
    """``0.84s``, ``12.3s``, ``4m 05s``, ``3h 07m``, ``2d 04h``; ``-`` for None."""
    if s is None:
        return "-"
    neg, s = s < 0, abs(s)
    if s < 10:
        text = f"{s:.2f}s"
    elif s < 60:
        text = f"{s:.1f}s"
    elif s < 3600:
        text = f"{int(s // 60)}m {int(s % 60):02d}s"
    elif s < 86400:
        text = f"{int(s // 3600)}h {int(s % 3600 // 60):02d}m"
    else:
        text = f"{int(s // 86400)}d {int(s % 86400 // 3600):02d}h"
    return ("-" if neg else "") + text


def _e(v: Any) -> str:
    """The one escape: every value that reaches the page goes through here (text and attributes)."""
    return html.escape("" if v is None else str(v), quote=True)


def _nice_axis(v: float) -> tuple[float, int]:
    """An axis top at or above ``v`` (1, 2, 2.5 or 5 x 10^n) and a tick count giving round steps."""
    if v <= 0:
        return 1.0, 5
    exp = 10 ** math.floor(math.log10(v))
    for m, ticks in ((1, 5), (2, 4), (2.5, 5), (5, 5), (10, 5)):
        if m * exp >= v * (1 - 1e-12):
            return m * exp, ticks
    return 10 * exp, 5


# -- charts -----------------------------------------------------------------------

W, H = 760, 260
ML, MR, MT, MB = 64, 20, 16, 48  # margins: room for the y tick labels and the two axis labels


def svg_chart(drills: Sequence[dict[str, Any]], metric: str, label: str) -> str:
    """An inline SVG of ``metric`` (seconds) over drill start time; one circle per drill that has a value."""
    pts = [(t, v, d) for d in drills if (t := _time(d.get("started_at"))) is not None
           and (v := _num(d.get(metric))) is not None]
    missing = len(drills) - len(pts)
    title = f"{label} over time"
    out = [f'<figure class="chart" id="chart-{_e(metric)}">',
           f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg" data-metric="{_e(metric)}" '
           f'width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{_e(title)}">',
           f"<title>{_e(title)}</title>"]
    x0, x1, y0, y1 = ML, W - MR, H - MB, MT
    out.append(f'<line class="axis x-axis" x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#444"/>')
    out.append(f'<line class="axis y-axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#444"/>')
    out.append(f'<text class="axis-label" x="{(x0 + x1) / 2:.1f}" y="{H - 6}" text-anchor="middle">'
               "drill start (UTC)</text>")
    out.append(f'<text class="axis-label" transform="translate(14 {(y0 + y1) / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle">{_e(label)} (seconds)</text>')
    if not pts:
        out.append(f'<text class="empty" x="{(x0 + x1) / 2:.1f}" y="{(y0 + y1) / 2:.1f}" text-anchor="middle">'
                   f"no {_e(label)} recorded yet</text>")
    else:
        vmin = min(0.0, min(v for _, v, _ in pts))
        vmax, nticks = _nice_axis(max(v for _, v, _ in pts))
        tmin, tmax = min(t for t, _, _ in pts), max(t for t, _, _ in pts)
        span = (tmax - tmin).total_seconds()

        def x(t: datetime) -> float:
            return (x0 + x1) / 2 if span <= 0 else x0 + 12 + (x1 - x0 - 24) * (t - tmin).total_seconds() / span

        def y(v: float) -> float:
            return y0 - (y0 - y1) * (v - vmin) / (vmax - vmin)

        for i in range(nticks + 1):  # y ticks and grid lines
            v = vmin + (vmax - vmin) * i / nticks
            out.append(f'<line class="grid" x1="{x0}" y1="{y(v):.1f}" x2="{x1}" y2="{y(v):.1f}" stroke="#ddd"/>')
            out.append(f'<text class="tick y-tick" x="{x0 - 6}" y="{y(v) + 4:.1f}" text-anchor="end">'
                       f"{_e(f'{v:g}')}</text>")
        fmt = "%Y-%m-%d %H:%M:%S" if 0 < span < 3600 else "%Y-%m-%d %H:%M"  # seconds when drills are close
        ticks = ([(tmin, "middle")] if span <= 0 else
                 [(tmin, "start"), (tmin + (tmax - tmin) / 2, "middle"), (tmax, "end")])
        for t, anchor in ticks:  # x ticks: first, middle, last drill (labels kept inside the plot's width)
            out.append(f'<line class="tick" x1="{x(t):.1f}" y1="{y0}" x2="{x(t):.1f}" y2="{y0 + 5}" stroke="#444"/>')
            lx = x(t) - 12 if anchor == "start" else x(t) + 12 if anchor == "end" else x(t)
            out.append(f'<text class="tick x-tick" x="{lx:.1f}" y="{y0 + 18}" text-anchor="{anchor}">'
                       f"{_e(t.strftime(fmt))}</text>")
        pts.sort(key=lambda p: p[0])
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v, _ in pts)
        out.append(f'<polyline class="trend" points="{line}" fill="none" stroke="#8c959f" stroke-width="1"/>')
        # Failed drills are drawn last, on top: drills close in time overlap, and a failure must stay visible.
        for t, v, d in sorted(pts, key=lambda p: (p[2].get("passed") is not True, p[0])):
            ok = d.get("passed") is True
            tip = (f"{d.get('drill_id')} {d.get('started_at')}: {label} {human_seconds(v)} "
                   f"({'PASSED' if ok else 'FAILED'}) {d.get('source') or ''}")
            out.append(f'<circle class="point {"pass" if ok else "fail"}" cx="{x(t):.1f}" cy="{y(v):.1f}" r="5" '
                       f'fill="{PASS_COLOUR if ok else FAIL_COLOUR}" data-drill-id="{_e(d.get("drill_id"))}" '
                       f'data-value="{_e(f"{v:g}")}"><title>{_e(tip)}</title></circle>')
    out.append("</svg>")
    cap = f"{label}: {len(pts)} drill(s) plotted"
    if missing:
        cap += f"; {missing} without a {label} (failed before it was measured) not plotted"
    out.append(f"<figcaption>{_e(cap)}. Green: passed, red: failed.</figcaption></figure>")
    return "\n".join(out)


# -- the page -----------------------------------------------------------------------

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1f2328; }
h1 { font-size: 20px; margin: 0 0 4px; }
.meta { color: #59636e; margin-bottom: 16px; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
figure.chart { margin: 0; border: 1px solid #d1d9e0; border-radius: 6px; padding: 8px; }
figcaption { color: #59636e; font-size: 12px; }
svg text { font: 11px system-ui, sans-serif; fill: #1f2328; }
svg text.axis-label { font-size: 12px; font-weight: 600; }
table { border-collapse: collapse; margin-top: 16px; width: 100%; }
th, td { border: 1px solid #d1d9e0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; white-space: nowrap; }
td.result.pass { color: #1a7f37; font-weight: 600; }
td.result.fail { color: #cf222e; font-weight: 600; }
.reason { color: #cf222e; font-weight: normal; white-space: pre-wrap; word-break: break-word; }
code { font-size: 12px; word-break: break-all; }
.empty-state { padding: 24px; border: 1px dashed #d1d9e0; border-radius: 6px; color: #59636e; }
"""


def _rows_cell(r: dict[str, Any]) -> str:
    snap, rest = r.get("snapshot"), r.get("restored")
    if snap is None and rest is None:
        return "-"
    return f"{_e(snap if snap is not None else '-')} / {_e(rest if rest is not None else '-')}"


def _digest_cell(d: dict[str, Any]) -> str:
    snap, rest, eq = d.get("snapshot"), d.get("restored"), d.get("equal")
    if snap is None and rest is None:
        return "-"
    if eq:
        return f'equal <code title="{_e(snap)}">{_e(str(snap)[:16])}…</code>'
    return (f'differs: snapshot <code title="{_e(snap)}">{_e(str(snap)[:16])}…</code>, '
            f'restored <code title="{_e(rest)}">{_e(str(rest)[:16])}…</code>')


def _drill_row(d: dict[str, Any]) -> str:
    ok = d.get("passed") is True
    result = "PASSED" if ok else "FAILED"
    reason = "" if ok else f'<div class="reason">{_e(d.get("reason"))}</div>'
    pb = d.get("name") or d.get("playbook") or "-"
    pb_title = d.get("playbook") or ""
    t = _time(d.get("started_at"))
    shown = t.strftime("%Y-%m-%d %H:%M:%S") if t else (d.get("started_at") or "-")
    return (f'<tr class="drill {"pass" if ok else "fail"}" data-drill-id="{_e(d.get("drill_id"))}">'
            f'<td class="time" title="{_e(d.get("started_at"))}">{_e(shown)}<br><code>{_e(d.get("drill_id"))}</code></td>'
            f'<td class="playbook" title="{_e(pb_title)}">{_e(pb)}</td>'
            f'<td class="source">{_e(d.get("source") or d.get("source_key") or "-")}</td>'
            f'<td class="target">{_e(d.get("target") or "-")}</td>'
            f'<td class="result {"pass" if ok else "fail"}">{result}{reason}</td>'
            f'<td class="num rto" data-seconds="{_e(d.get("rto_s"))}">{_e(human_seconds(d.get("rto_s")))}</td>'
            f'<td class="num rpo" data-seconds="{_e(d.get("rpo_s"))}">{_e(human_seconds(d.get("rpo_s")))}</td>'
            f'<td class="num rows">{_rows_cell(d.get("rows") or {})}</td>'
            f'<td class="digest">{_digest_cell(d.get("digest") or {})}</td></tr>')


def render_html(drills: Sequence[dict[str, Any]], repository: str, generated_at: datetime | None = None) -> str:
    """The whole page for ``drills`` (summaries, any order): self-contained, every value escaped."""
    generated = isoformat(generated_at or utcnow())
    ordered = sorted(drills, key=_sort_key)
    passed = sum(1 for d in ordered if d.get("passed") is True)
    head = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>backupctl drill report: {_e(repository)}</title><style>{_CSS}</style></head><body>")
    parts = [head, "<h1>DR drill history</h1>",
             f'<div class="meta">repository <code>{_e(repository)}</code> · generated {_e(generated)} · '
             f'<span id="summary">{len(ordered)} drill(s), {passed} passed, {len(ordered) - passed} failed</span>'
             "</div>"]
    if not ordered:
        parts.append('<div class="empty-state" id="empty-state">No drills recorded in this repository yet. '
                     "Run one with <code>backupctl drill run PLAYBOOK</code>; each drill records "
                     "<code>drills/&lt;source-key&gt;/&lt;drill-id&gt;.json</code> here.</div>")
    else:
        parts.append('<section class="charts">')
        parts.append(svg_chart(ordered, "rto_s", "RTO"))
        parts.append(svg_chart(ordered, "rpo_s", "RPO"))
        parts.append("</section>")
        parts.append('<table id="drills"><thead><tr><th>time (UTC)</th><th>playbook</th><th>source</th>'
                     "<th>target</th><th>result</th><th>RTO</th><th>RPO</th><th>rows (snapshot / restored)</th>"
                     "<th>digest</th></tr></thead><tbody>")
        parts += [_drill_row(d) for d in reversed(ordered)]  # newest first
        parts.append("</tbody></table>")
    parts.append("<p class=\"meta\">RTO: restore wall time. RPO: age of the restored data when the restore "
                 "finished (restore end minus snapshot creation).</p></body></html>\n")
    return "\n".join(parts)
