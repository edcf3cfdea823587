"""``backupctl snapshots list|show|verify``: what a repository holds, and whether it is intact."""

from __future__ import annotations

from typing import Any

import click

from backupctl.aws import validate_region
from backupctl.cli.context import App, json_option, pass_app, repo_options
from backupctl.console import human_bytes
from backupctl.errors import EXIT_CODES_HELP, FormatError, InvalidInput, VerificationFailed
from backupctl.model import check_snapshot_id
from backupctl.repository import Repository, resolve_repo_region
from backupctl.verify import verify_against_table, verify_snapshot


def _open(app: App, repo: str | None, region: str | None) -> Repository:
    region = resolve_repo_region(app.aws, repo, region)
    validate_region(region, "--region")
    app.aws.check_credentials()
    return Repository.open(app.aws, region, repo)


@click.group(epilog=EXIT_CODES_HELP)
def snapshots() -> None:
    """List, show and verify snapshots in a repository (give --repo or --region)."""


@snapshots.command("list", epilog=EXIT_CODES_HELP)
@click.option("--table", "-t", help="Only snapshots of this source table.")
@click.option("--skip-unreadable", is_flag=True,
              help="List the readable snapshots when some manifests are damaged (a warning names each one) "
                   "instead of failing with exit 5 at the first; `snapshots verify --all` audits them.")
@repo_options
@json_option
@pass_app
def list_(app: App, table: str | None, skip_unreadable: bool, repo: str | None, region: str | None,
          as_json: bool) -> None:
    """List committed snapshots, oldest first. In-progress or crashed runs are not listed."""
    console = app.with_json(as_json)
    r = _open(app, repo, region)
    bad: list[tuple[str, str, str]] | None = [] if skip_unreadable else None
    try:
        found = r.list_snapshots(unreadable=bad)
    except FormatError as e:
        raise FormatError(f"{e} (--skip-unreadable lists the readable snapshots)") from e
    items = [m for m in found if table is None or m.source.get("table") == table]
    for sk, sid, why in bad or []:
        console.warn(f"snapshot {sid} of {sk} is unreadable and not listed: {why}")
    if as_json:
        console.emit_json([m.summary() for m in items])
        return
    if not items:
        console.info(f"no snapshots in {r.uri}" + (f" for table {table}" if table else ""))
        return
    console.table(
        f"snapshots in {r.uri}",
        ["id", "source", "mode", "items", "size", "parts", "completed"],
        [
            [m.id, f"{m.source.get('kind')} {m.source.get('table')} ({m.source.get('region')})", m.mode,
             f"{m.rows:,}", human_bytes(m.bytes), len(m.parts), m.completed_at]
            for m in items
        ],
    )


@snapshots.command(epilog=EXIT_CODES_HELP)
@click.argument("snapshot_id")
@repo_options
@json_option
@pass_app
def show(app: App, snapshot_id: str, repo: str | None, region: str | None, as_json: bool) -> None:
    """Show a snapshot's manifest: source, totals, digest and parts."""
    console = app.with_json(as_json)
    check_snapshot_id(snapshot_id)
    r = _open(app, repo, region)
    prefix, m = r.find_snapshot(snapshot_id)
    if as_json:
        doc = m.to_dict()
        if m.source.get("kind") == "mysql":  # MySQL fields the shared manifest model does not carry
            raw = r.store.get_json(prefix + "manifest.json")
            doc.update({k: raw[k] for k in ("key_set", "tombstones", "table_digest") if k in raw})
        doc["location"] = r.store.url(prefix)
        console.emit_json(doc)
        return
    s = m.summary()
    console.kv(
        f"snapshot {m.id}",
        [
            ("location", r.store.url(prefix)),
            ("source", f"{m.source.get('kind')} {m.source.get('table')} ({m.source.get('region')})"),
            ("mode", m.mode),
        ]
        + ([("parent", m.parent_id or ""),
            ("window", f"{m.window.get('column')} in [{m.window.get('from')}, {m.window.get('to')})")]
           if m.mode == "incremental" and isinstance(m.window, dict) else [])
        + [
            ("created", m.created_at),
            ("completed", m.completed_at),
            ("items", f"{s['rows']:,}"),
            ("size", human_bytes(s["bytes"])),
            ("digest", m.content_digest),
            ("engine", m.engine),
            ("format", m.format_version),
        ],
    )
    console.table("parts", ["key", "items", "bytes", "sha256"], [[p.key, f"{p.rows:,}", p.bytes, p.sha256[:16] + "..."] for p in m.parts])


@snapshots.command(epilog=EXIT_CODES_HELP)
@click.argument("snapshot_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Verify every committed snapshot of the repository.")
@repo_options
@click.option("--against-table", help="Also compare with this live DynamoDB table.")
@click.option("--table-region", help="Region of --against-table (default: the repository's).")
@click.option("--workers", type=int, default=8, show_default=True)
@json_option
@pass_app
def verify(
    app: App, snapshot_id: str | None, all_: bool, repo: str | None, region: str | None, against_table: str | None,
    table_region: str | None, workers: int, as_json: bool,
) -> None:
    """Re-read every part: checksums, item counts and the content digest.

    With --against-table, also recompute the digest of a live table and say
    whether it equals the snapshot. With --all (instead of SNAPSHOT_ID), verify
    every committed snapshot and print ok / failed for each. Exits 5 when
    anything differs.
    """
    console = app.with_json(as_json)
    if all_ == (snapshot_id is not None):
        raise InvalidInput("give a SNAPSHOT_ID or --all (not both)")
    if all_ and against_table:
        raise InvalidInput("--against-table compares one snapshot: give a SNAPSHOT_ID, not --all")
    if snapshot_id is not None:
        check_snapshot_id(snapshot_id)
    region = resolve_repo_region(app.aws, repo, region)
    validate_region(region, "--region")
    app.aws.check_credentials()
    if table_region and not against_table:
        raise InvalidInput("--table-region needs --against-table")
    if snapshot_id is None:
        _verify_all(app, region, repo, workers, as_json)
        return
    with console.progress(f"verify {snapshot_id}") as progress:
        report = verify_snapshot(app.aws, region, snapshot_id, repo, workers, progress)
    live = None
    if against_table and report["ok"]:
        with console.progress(f"scan {against_table}") as progress:
            live = verify_against_table(
                app.aws, region, snapshot_id, against_table, table_region or region, repo, workers, progress
            )
        report["against_table"] = live
    if as_json:
        console.emit_json(report)
    for p in report["problems"]:
        console.error(p)
    if not report["ok"]:
        raise VerificationFailed(f"snapshot {snapshot_id} failed verification: {len(report['problems'])} problem(s)")
    console.info(
        f"[green]ok[/green]: {report['parts_checked']} parts, {report['rows']:,} items, digest {report['digest']}"
    )
    if live is not None:
        if not live["equal"]:
            raise VerificationFailed(
                f"table {against_table} differs from snapshot {snapshot_id}: "
                f"{live['table_rows']:,} items vs {live['snapshot_rows']:,}, digest {live['table_digest'][:16]}... "
                f"vs {live['snapshot_digest'][:16]}..."
            )
        console.info(f"[green]equal[/green]: table {against_table} has the same {live['table_rows']:,} items as the snapshot")


def _failed_report(snapshot_id: str, problem: str) -> dict[str, Any]:
    """The verify report of a snapshot that could not be checked at all, with the one reason."""
    return {"snapshot_id": snapshot_id, "ok": False, "parts_checked": 0, "rows": 0, "manifest_rows": None,
            "digest": None, "manifest_digest": None, "problems": [problem]}


def _verify_all(app: App, region: str, repo: str | None, workers: int, as_json: bool) -> None:
    console = app.with_json(as_json)
    r = Repository.open(app.aws, region, repo)
    reports = []
    unreadable: list[tuple[str, str, str]] = []
    for m in r.list_snapshots(unreadable=unreadable):
        with console.progress(f"verify {m.id}") as progress:
            try:
                rep = verify_snapshot(app.aws, region, m.id, repo, workers, progress)
            except FormatError as e:  # a manifest naming parts it may not (a traversal), a changed schema.json
                rep = _failed_report(m.id, str(e))
        reports.append({"source_key": m.source_key, **rep})
    # a damaged manifest is a failed snapshot of the audit, not the end of it
    reports += [{"source_key": sk, **_failed_report(sid, f"manifest unreadable: {why}")} for sk, sid, why in unreadable]
    reports.sort(key=lambda x: x["snapshot_id"])
    failed = [x for x in reports if not x["ok"]]
    if as_json:
        console.emit_json({"repository": str(r.uri), "ok": not failed, "checked": len(reports),
                           "failed": len(failed), "snapshots": reports})
    else:
        console.table(
            f"verify {r.uri}", ["id", "source", "result", "parts", "items", "problems"],
            [[x["snapshot_id"], x["source_key"], "ok" if x["ok"] else "FAILED", x["parts_checked"],
              f"{x['rows']:,}", "; ".join(x["problems"])] for x in reports],
        )
    for x in failed:
        for p in x["problems"]:
            console.error(f"{x['snapshot_id']}: {p}")
    if failed:
        raise VerificationFailed(f"{len(failed)} of {len(reports)} snapshots failed verification: "
                                 + ", ".join(x["snapshot_id"] for x in failed))
    console.info(f"[green]ok[/green]: {len(reports)} snapshots verified")


@snapshots.command(epilog=EXIT_CODES_HELP)
@click.option("--keep-last", type=int, default=0, help="Keep the N newest snapshots of each source.")
@click.option("--keep-daily", type=int, default=0, help="Keep the newest snapshot of each of the last N days with one.")
@click.option("--keep-weekly", type=int, default=0, help="... of each of the last N ISO weeks.")
@click.option("--keep-monthly", type=int, default=0, help="... of each of the last N months.")
@click.option("--table", "-t", help="Only snapshots of this source table.")
@click.option("--dry-run", is_flag=True, help="Show what would be removed; remove nothing.")
@repo_options
@json_option
@pass_app
def prune(
    app: App, keep_last: int, keep_daily: int, keep_weekly: int, keep_monthly: int, table: str | None,
    dry_run: bool, repo: str | None, region: str | None, as_json: bool,
) -> None:
    """Remove snapshots that a retention policy does not keep (per source).

    The parent chain of every kept incremental is always kept. Each removed
    snapshot loses its manifest first, so it is never half visible.
    """
    from backupctl.prune import prune as run_prune
    from backupctl.retention import Policy

    console = app.with_json(as_json)
    policy = Policy(keep_last, keep_daily, keep_weekly, keep_monthly)
    policy.check()
    region = resolve_repo_region(app.aws, repo, region)
    validate_region(region, "--region")
    app.aws.check_credentials()
    result = run_prune(app.aws, region, repo, policy, dry_run, table)
    if as_json:
        console.emit_json(result)
        return
    rows = [[k["snapshot_id"], "keep", ", ".join(k["reasons"])] for k in result["kept"]]
    rows += [[r["snapshot_id"], "would remove" if dry_run else "removed", ""] for r in result["removed"]]
    console.table(f"prune {result['repository']}" + (" (dry run)" if dry_run else ""), ["id", "action", "reasons"],
                  sorted(rows))
