"""``backupctl status``: per source, the newest snapshot's age and the last drill; ``--max-age`` for monitoring."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from rich.markup import escape

from backupctl.cli.context import App, json_option, pass_app, repo_options
from backupctl.cli.params import Duration
from backupctl.errors import EXIT_CODES_HELP, EXIT_VERIFY_FAILED, VerificationFailed


def _drill_cell(d: dict[str, Any] | None, now: datetime) -> str:
    from backupctl.model import parse_time
    from backupctl.pipelines.drill_report import human_seconds

    if d is None:
        return "-"
    try:
        when = human_seconds((now - parse_time(str(d["started_at"]))).total_seconds()) + " ago"
    except ValueError:
        when = str(d["started_at"] or "")
    if d["passed"]:
        return f"[green]PASSED[/green] {escape(when)}"
    reason = str(d.get("reason") or "")
    reason = reason if len(reason) <= 80 else reason[:77] + "..."
    return f"[red]FAILED[/red] {escape(when)}: {escape(reason)}"


@click.command(epilog=EXIT_CODES_HELP)
@repo_options
@click.option("--max-age", type=Duration(), metavar="DURATION",
              help=f"Exit {EXIT_VERIFY_FAILED} naming every source whose newest snapshot is older than this "
                   "(or that has none): 90m, 24h, 7d, ...")
@json_option
@pass_app
def status(app: App, repo: str | None, region: str | None, max_age: float | None, as_json: bool) -> None:
    """Freshness per source: the newest snapshot and its age, the last drill's result, RTO and RPO.

    A source is each DynamoDB table (and region) or MySQL database.table that has
    snapshots or drills in the repository (give --repo or --region). With
    --max-age, exits 5 (the verification-failed code) when any source's newest
    snapshot is older, with one line per stale source on stderr; for cron and
    monitoring. --json prints {"repository", "checked_at", "max_age_s", "sources",
    "stale"} on stdout (also when exiting 5).
    """
    from backupctl.aws import validate_region
    from backupctl.model import isoformat, utcnow
    from backupctl.pipelines.drill_report import human_seconds
    from backupctl.repository import Repository, resolve_repo_region
    from backupctl.status import source_status, stale_line

    console = app.with_json(as_json)
    region = resolve_repo_region(app.aws, repo, region)
    validate_region(region, "--region")
    app.aws.check_credentials()
    r = Repository.open(app.aws, region, repo)
    now = utcnow()
    entries = source_status(r, max_age, now)
    stale = [e for e in entries if e["stale"]]
    if as_json:
        console.emit_json({"repository": str(r.uri), "checked_at": isoformat(now), "max_age_s": max_age,
                           "sources": entries, "stale": [e["source_key"] for e in stale]})
    elif not entries:
        console.info(f"no snapshots or drills in {r.uri}")
    else:
        rows = []
        for e in entries:
            snap, d = e["snapshot"], e["last_drill"]
            age = human_seconds(snap["age_s"]) if snap and snap["age_s"] is not None else "-"
            if e["stale"]:
                age = f"[red]{escape(age)} (stale)[/red]"
            rows.append([escape(e["source"]), escape(snap["snapshot_id"]) if snap else "[red]none[/red]", age,
                         _drill_cell(d, now), human_seconds(d["rto_s"]) if d else "-",
                         human_seconds(d["rpo_s"]) if d else "-"])
        console.table(f"status of {escape(str(r.uri))}" + (f" (max age {human_seconds(max_age)})" if max_age else ""),
                      ["source", "newest snapshot", "age", "last drill", "RTO", "RPO"], rows)
    if stale:
        assert max_age is not None
        raise VerificationFailed(f"{len(stale)} of {len(entries)} source(s) have no snapshot newer than "
                                 f"{human_seconds(max_age)}:\n" + "\n".join("  stale: " + stale_line(e, max_age)
                                                                          for e in stale))
