"""``backupctl demo``: the whole flow on the embedded endpoint, in one command."""

from __future__ import annotations

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.console import human_bytes
from backupctl.demo import SOURCE_REGION, TARGET_REGION, run_demo
from backupctl.errors import VerificationFailed


@click.command()
@click.option("--items", type=int, default=5_000, show_default=True, help="Items to seed.")
@json_option
@pass_app
def demo(app: App, items: int, as_json: bool) -> None:
    """Seed a table in us-east-1, snapshot it to us-west-2, restore it, prove it equal.

    Uses --endpoint-url when given, else starts an embedded endpoint for the
    duration of the demo. Needs no AWS account.
    """
    console = app.with_json(as_json)
    r = run_demo(app.aws.endpoint_url, items, progress_factory=console.progress, say=console.info)
    s, res = r["snapshot"], r["restore"]
    console.kv(
        "demo summary",
        [
            ("endpoint", r["endpoint"]),
            ("source", f"{r['source']['table']} ({SOURCE_REGION}), {items:,} items"),
            ("snapshot", f"{s['snapshot_id']} in {s['repository']} ({TARGET_REGION})"),
            ("snapshot size", f"{s['parts']} parts, {human_bytes(s['bytes'])}, {s['rows'] / max(s['duration_s'], 1e-9):,.0f} items/s"),
            ("verify (read every part)", "ok" if r["verify"]["ok"] else "FAILED"),
            ("restore", f"{res['target']['table']} ({TARGET_REGION}), {res['rows']:,} items, {res['rows'] / max(res['duration_s'], 1e-9):,.0f} items/s"),
            ("restored table == snapshot", "yes" if r["restored_equals_snapshot"] else "NO"),
            ("source table == snapshot", "yes" if r["source_equals_snapshot"] else "NO"),
            ("digest", s["digest"]),
            ("total time", f"{r['duration_s']:.1f}s"),
        ],
    )
    if as_json:
        console.emit_json(r)
    if not (r["verify"]["ok"] and r["restored_equals_snapshot"] and r["source_equals_snapshot"]):
        raise VerificationFailed("demo: the restored data is not equal to the source")
