"""``backupctl drill run PLAYBOOK``: a DR drill (snapshot, restore into scratch, prove equal, tear down, report)."""

from __future__ import annotations

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.cli.pipeline import load, render_result, var_option
from backupctl.errors import EXIT_CODES_HELP, InvalidInput


@click.group(epilog=EXIT_CODES_HELP)
def drill() -> None:
    """Disaster-recovery drills from playbooks of kind drill."""


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
