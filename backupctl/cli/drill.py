"""``backupctl drill run PLAYBOOK``: a DR drill (snapshot, restore into scratch, prove equal, tear down, report).

``backupctl drill report``: the drill history of a repository as one HTML page (or JSON).
"""

from __future__ import annotations

import click

from backupctl.cli.context import App, json_option, pass_app, repo_options
from backupctl.cli.pipeline import load, render_result, var_option
from backupctl.errors import EXIT_CODES_HELP, InvalidInput


@click.group(epilog=EXIT_CODES_HELP)
def drill() -> None:
    """Disaster-recovery drills from playbooks of kind drill (`run`), and their history (`report`)."""


@drill.command("run", epilog=EXIT_CODES_HELP)
@click.argument("playbook", type=click.Path(dir_okay=False))
@var_option
@json_option
@pass_app
def run(app: App, playbook: str, variables: tuple[str, ...], as_json: bool) -> None:
    """Snapshot (or take the latest), restore into the scratch target, prove equality, tear down.

    Records the report in the repository (drills/<source-key>/<drill-id>.json).
    Exits 5 when the restored copy differs, else with the first failure's code.
    """
    from backupctl.pipelines.drill import run_drill
    from backupctl.pipelines.runner import PipelineFailed

    console = app.with_json(as_json)
    pb = load(playbook, variables)
    if pb.drill is None:
        raise InvalidInput(f"{playbook} has no drill: block (kind {pb.kind}); use `backupctl pipeline run`")
    app.aws.check_credentials()
    report = run_drill(app.aws, pb, console.info, None)
    if as_json:
        console.emit_json(report)
    render_result(console, {"name": pb.name, "run_id": pb.run_id, "status": report["status"],
                            "activities": report["activities"]})
    rows, digest, samples = report.get("rows") or {}, report.get("digest") or {}, report.get("samples") or {}
    console.kv(f"drill {report['drill_id']}: {'PASSED' if report['passed'] else 'FAILED'}", [
        ("source", report["source"]),
        ("scratch target", f"{report['target']} (teardown: {report['teardown']})"),
        ("snapshot", f"{report['snapshot']['snapshot_id']} ({report['snapshot']['mode']})"),
        ("rows", f"snapshot {rows.get('snapshot')}, restored {rows.get('restored')}"),
        ("digest", "equal" if digest and digest.get("snapshot") == digest.get("restored") else str(digest or "")),
        ("samples", f"{samples.get('checked', 0)} checked, {len(samples.get('drifted') or [])} drifted"),
        ("RTO (restore)", f"{report['rto_s']}s" if report["rto_s"] is not None else "-"),
        ("RPO (data age)", f"{report['rpo_s']}s" if report["rpo_s"] is not None else "-"),
        ("report", report.get("report_uri") or "not recorded"),
    ])
    if not report["passed"]:
        problems = report.get("problems") or []
        raise PipelineFailed(f"drill {pb.name} {report['status']}" + (f": {problems[0]}" if problems else ""),
                             report["exit_code"] or 1)


DEFAULT_REPORT = "backupctl-drill-report.html"


@drill.command("report", epilog=EXIT_CODES_HELP)
@repo_options
@click.option("--out", "out", type=click.Path(dir_okay=False), metavar="FILE",
              help=f"Write the HTML page here (default: ./{DEFAULT_REPORT}; with --json, only when given).")
@click.option("--open", "open_", is_flag=True,
              help="Open the page in a web browser (Python's webbrowser module: $BROWSER or the desktop default).")
@json_option
@pass_app
def report(app: App, repo: str | None, region: str | None, out: str | None, open_: bool, as_json: bool) -> None:
    """The drill history as one self-contained HTML page (give --repo or --region).

    Reads every drill report the repository holds (drills/<source-key>/<drill-id>.json,
    written by `drill run`, passed or failed) and writes a page with a table of drills
    (time, playbook, source, target, pass/fail and why, RTO, RPO, rows, digest) and
    charts of RTO and RPO over time (inline SVG, points green for passed, red for
    failed). No scripts or external resources; every value is HTML-escaped. The path
    written is printed. With --json, prints {"repository", "drills", "html"} on stdout
    (the page is then written only with --out or --open). No drills: a message, an
    empty page, exit 0.
    """
    import webbrowser
    from pathlib import Path

    from backupctl.aws import validate_region
    from backupctl.pipelines.drill_report import load_drills, render_html
    from backupctl.repository import Repository, resolve_repo_region

    console = app.with_json(as_json)
    region = resolve_repo_region(app.aws, repo, region)
    validate_region(region, "--region")
    app.aws.check_credentials()
    r = Repository.open(app.aws, region, repo)
    drills = load_drills(r, console.warn)
    path: Path | None = None
    if out or open_ or not as_json:
        path = Path(out or DEFAULT_REPORT)
        try:
            path.write_text(render_html(drills, str(r.uri)), encoding="utf-8")
        except OSError as e:
            raise InvalidInput(f"cannot write {path}: {e.strerror or e}") from e
    if as_json:
        console.emit_json({"repository": str(r.uri), "drills": drills, "html": str(path) if path else None})
    if not drills:
        console.info(f"no drills recorded in {r.uri} (nothing under drills/): run `backupctl drill run PLAYBOOK`")
    else:
        passed = sum(1 for d in drills if d["passed"])
        console.info(f"{len(drills)} drill(s) in {r.uri}: {passed} passed, {len(drills) - passed} failed")
    if path is not None:
        console.info(f"wrote {path}" + (" (empty report)" if not drills else ""))
        if open_ and not webbrowser.open(path.resolve().as_uri()):
            console.warn(f"no web browser found: open {path.resolve()} yourself")
