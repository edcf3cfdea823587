"""``backupctl pipeline validate|plan|run PLAYBOOK``: playbooks (data nodes, activities, preconditions, schedules)."""

from __future__ import annotations

from typing import Any

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.console import Console
from backupctl.errors import EXIT_CODES_HELP, InvalidInput
from backupctl.model import utcnow
from backupctl.pipelines.model import Playbook, load_playbook


def var_option(f):  # type: ignore[no-untyped-def]
    return click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
                        help="Set a playbook variable (repeatable).")(f)


def parse_vars(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise InvalidInput(f"--var {item!r}: expected NAME=VALUE")
        out[k] = v
    return out


def load(path: str, variables: tuple[str, ...]) -> Playbook:
    return load_playbook(path, parse_vars(variables))


def summary_rows(activities: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for a in activities:
        out = a.get("outputs") or {}
        detail = a.get("error") or ", ".join(f"{k}={out[k]}" for k in ("snapshot_id", "rows", "dropped") if k in out)
        rows.append([a["name"], a["type"], a["status"], a["attempts"], f"{a['duration_s']:.2f}s", detail])
    return rows


def render_result(console: Console, doc: dict[str, Any], what: str = "pipeline") -> None:
    console.table(f"{what} {doc['name']} (run {doc['run_id']}): {doc['status']}",
                  ["activity", "type", "status", "attempts", "duration", "outputs / error"],
                  summary_rows(doc["activities"]))


@click.group(epilog=EXIT_CODES_HELP)
def pipeline() -> None:
    """Validate, plan and run playbooks (playbooks/*.yaml)."""


@pipeline.command(epilog=EXIT_CODES_HELP)
@click.argument("playbook", type=click.Path(dir_okay=False))
@var_option
@json_option
@pass_app
def validate(app: App, playbook: str, variables: tuple[str, ...], as_json: bool) -> None:
    """Check a playbook without touching any server: one line FILE:LINE key.path: problem per error (exit 2)."""
    console = app.with_json(as_json)
    pb = load(playbook, variables)
    doc = {"playbook": playbook, "name": pb.name, "kind": pb.kind, "valid": True, "nodes": list(pb.nodes),
           "activities": pb.order() if pb.activities else [], "unavailable": pb.unavailable()}
    if as_json:
        console.emit_json(doc)
        return
    console.info(f"[green]valid[/green]: {playbook} ({pb.kind} {pb.name}: {len(pb.nodes)} nodes, "
                 f"{len(pb.activities)} activities, {len(pb.preconditions)} preconditions)")
    for name in pb.unavailable():
        console.warn(f"activity '{name}' ({pb.activities[name].type}) is not available yet: `pipeline run` refuses it")


def plan_doc(pb: Playbook, runs: int) -> dict[str, Any]:
    from backupctl.pipelines.schedule import backfill, next_runs

    now = utcnow()
    doc: dict[str, Any] = {"playbook": pb.path, "name": pb.name, "kind": pb.kind, "now": now.isoformat(),
                           "order": [], "schedule": None}
    if pb.drill is not None:
        from backupctl.pipelines.drill import drill_activities

        pb.activities = drill_activities(pb, False)
    for name in pb.order():
        a = pb.activities[name]
        doc["order"].append({"name": name, "type": a.type, "depends_on": a.depends_on, "run_on": a.run_on,
                             "retries": a.retries, "timeout_s": a.timeout_s, "on_fail": a.on_fail,
                             "preconditions": a.preconditions})
    if pb.schedule is not None:
        doc["schedule"] = {**pb.schedule.to_dict(), "next_runs": next_runs(pb.schedule, now, runs),
                           "backfill": backfill(pb.schedule, now)}
    return doc


@pipeline.command(epilog=EXIT_CODES_HELP)
@click.argument("playbook", type=click.Path(dir_okay=False))
@click.option("--runs", type=click.IntRange(1, 1000), default=5, show_default=True, help="How many next run times.")
@var_option
@json_option
@pass_app
def plan(app: App, playbook: str, runs: int, variables: tuple[str, ...], as_json: bool) -> None:
    """Show the execution order, the next run times and the back-fill list of a playbook. Runs nothing."""
    console = app.with_json(as_json)
    doc = plan_doc(load(playbook, variables), runs)
    if as_json:
        console.emit_json(doc)
        return
    console.table(f"{doc['kind']} {doc['name']}: execution order",
                  ["#", "activity", "type", "depends on", "run on", "retries", "timeout"],
                  [[i + 1, a["name"], a["type"], ", ".join(a["depends_on"]), a["run_on"], a["retries"],
                    f"{a['timeout_s']:g}s" if a["timeout_s"] else ""] for i, a in enumerate(doc["order"])])
    s = doc["schedule"]
    if s is None:
        console.info("no schedule: runs only when started")
        return
    every = f"cron '{s['cron']}' (UTC)" if s["cron"] else f"every {s['rate_s']:g}s"
    console.table(f"next runs: {every}, {s['style']} style", ["period start", "period end", "runs at"],
                  [[r["period_start"], r["period_end"], r["run_at"]] for r in s["next_runs"]])
    bf = s["backfill"]
    if bf["runs"] or bf["skipped"]:
        console.table(f"back-fill (max_backfill {s['max_backfill']}; {bf['skipped']}"
                      f"{'+' if bf['skipped_at_least'] else ''} older periods skipped)",
                      ["period start", "period end", "runs at"],
                      [[r["period_start"], r["period_end"], r["run_at"]] for r in bf["runs"]])


@pipeline.command(epilog=EXIT_CODES_HELP)
@click.argument("playbook", type=click.Path(dir_okay=False))
@var_option
@json_option
@pass_app
def run(app: App, playbook: str, variables: tuple[str, ...], as_json: bool) -> None:
    """Run a playbook's activities in dependency order: retries, timeouts, clean-up (run_on: always).

    Exits with the exit code of the first failed activity (130 when interrupted).
    """
    from backupctl.pipelines.runner import PipelineFailed, check_runnable, run_pipeline

    console = app.with_json(as_json)
    pb = load(playbook, variables)
    if pb.drill is not None:
        raise InvalidInput(f"{playbook} is a drill: run it with `backupctl drill run {playbook}`")
    check_runnable(pb)
    app.aws.check_credentials()
    result = run_pipeline(app.aws, pb, console.info, None)
    doc = result.to_json()
    if as_json:
        console.emit_json(doc)
    render_result(console, doc)
    if result.status != "succeeded":
        first = result.first_failure()
        raise PipelineFailed(f"pipeline {pb.name} {result.status}"
                             + (f": activity '{first.name}': {first.error}" if first else ""), result.exit_code)
