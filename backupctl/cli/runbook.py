"""``backupctl runbook run PLAYBOOK``: a restore runbook (plan, preconditions, confirmations, restore, verify, record)."""

from __future__ import annotations

import sys
from typing import Any

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.cli.pipeline import load, parse_vars, render_result, var_option
from backupctl.console import Console
from backupctl.errors import EXIT_CODES_HELP, InvalidInput


@click.group(epilog=EXIT_CODES_HELP)
def runbook() -> None:
    """Restore runbooks: playbooks of kind runbook, run by a person during an incident."""


def render_plan(console: Console, plan: dict[str, Any], who: dict[str, Any], dry_run: bool) -> None:
    s = plan["snapshot"]
    chosen = {"latest": "the newest", "time": f"the newest taken at or before {s['at']}",
              "id": "named by --at"}[s["chosen_by"]]
    chain = f" (restores the chain {' -> '.join(s['chain'])})" if len(s["chain"]) > 1 else ""
    console.kv(f"runbook {plan['runbook']}: plan" + (" (dry run: nothing is changed)" if dry_run else ""), [
        *([("about", plan["description"])] if plan["description"] else []),
        ("source", plan["source"]),
        ("repository", plan["repository"]),
        ("snapshot", f"{s['snapshot_id']} ({s['mode']}, {chosen}){chain}"),
        ("taken at", f"{s['created_at']} (completed {s['completed_at']})"),
        ("rows / digest", f"{s['rows']:,} / {s['digest'][:16]}..."),
        ("run by", who["aws"]["arn"] + (f" ({who['os_user']}@{who['host']})" if who.get("os_user") else "")),
    ])
    console.table(None, ["#", "step", "type", "does", "target", "asks first"],
                  [[st["step"], st["name"], st["type"], st["does"], st["target"] or "", _asks(st)]
                   for st in plan["steps"]])


def _asks(step: dict[str, Any]) -> str:
    if step["asks"]:
        return "YES: " + (step["why"] or "confirm: true")
    return "no" + (f" ({step['why']})" if step["why"] else "")


@runbook.command("run", epilog=EXIT_CODES_HELP)
@click.argument("playbook", type=click.Path(dir_okay=False))
@click.option("--at", "at", metavar="TIME|SNAPSHOT_ID",
              help="Restore the newest snapshot taken at or before TIME (ISO 8601, UTC unless it has an offset), "
                   "or the snapshot SNAPSHOT_ID. Default: the newest snapshot.")
@click.option("--yes", "-y", is_flag=True, help="Answer yes to every confirmation (for automation).")
@click.option("--dry-run", is_flag=True, help="Print the plan and exit 0 without changing or recording anything.")
@var_option
@json_option
@pass_app
def run(app: App, playbook: str, at: str | None, yes: bool, dry_run: bool, variables: tuple[str, ...],
        as_json: bool) -> None:
    """Run a restore runbook: plan, preconditions, a question before each destructive step, restore, verify.

    \b
    1. Chooses the snapshot of the runbook's source (--at, default the newest).
    2. Shows the plan: the steps in order, their targets, which are destructive
       (a restore in mode replace/truncate into a table holding data, DropTarget,
       Sql) or marked confirm: true; those ask first. --dry-run stops here.
    3. Runs the steps with their preconditions, retries and clean-up, asking
       on the terminal before each step that asks ("y" goes ahead; anything
       else declines: the step does not run, later steps are skipped but
       run_on: always clean-up, exit 4). Without a terminal on stdin, --yes is
       required when a step would ask (else exit 2, before anything runs).
    4. Records what ran, when, by whom (the AWS caller identity) and the outcome
       in the repository: runs/runbooks/<runbook>/<record-id>.json.

    \b
    Examples:
      backupctl runbook run playbooks/restore-orders.yaml --dry-run
      backupctl runbook run playbooks/restore-orders.yaml --at 2026-11-27T01:30:00Z
      backupctl runbook run playbooks/restore-orders.yaml --at 20261127T013000Z-1a2b3c --yes --json
    """
    from backupctl.pipelines.runbook import (
        Confirmer,
        operator,
        parse_at,
        plan_runbook,
        run_runbook,
        select_snapshot,
    )
    from backupctl.pipelines.runner import PipelineFailed, check_runnable
    from backupctl.repository import Repository

    console = app.with_json(as_json)
    pb = load(playbook, variables)
    if pb.runbook is None:
        raise InvalidInput(f"{playbook} is a {pb.kind}, not a runbook (kind: runbook): use `backupctl "
                           f"{'drill' if pb.kind == 'drill' else 'pipeline'} run {playbook}`")
    check_runnable(pb, runbook=True)
    when = parse_at(at) if at is not None else None
    app.aws.check_credentials()
    rnode = pb.nodes[pb.runbook.repository]
    region = str(rnode.get("region"))
    repo = Repository.open(app.aws, region, rnode.get("uri"))
    sel = select_snapshot(repo, pb.nodes[pb.runbook.source], when)
    who = operator(app.aws, region)
    plan = plan_runbook(app.aws, pb, sel, repo)
    render_plan(console, plan, who, dry_run)
    if dry_run:
        if as_json:
            console.emit_json({**plan, "operator": who, "dry_run": True})
        return
    confirmer = Confirmer(yes, sys.stdin, console.ask)
    if plan["asks"] and not confirmer.can_ask():
        raise InvalidInput(f"runbook {pb.name} asks before {', '.join(plan['asks'])} and stdin is not a terminal: "
                           "run it in a terminal, or pass --yes to confirm every step in advance")
    invocation = {"at": at, "yes": yes, "variables": parse_vars(variables), "argv": sys.argv[1:]}
    done = run_runbook(app.aws, pb, sel, plan, confirmer, who, invocation, console.info, console.progress)
    for w in done.warnings:
        console.warn(w)
    doc = {**done.record, "record_uri": done.record_uri}
    if as_json:
        console.emit_json(doc)
    render_result(console, {"name": pb.name, "run_id": pb.run_id, "status": doc["outcome"],
                            "activities": doc["activities"]}, "runbook")
    verified = [a for a in doc["activities"] if a["type"] == "Verify" and a["status"] == "succeeded"]
    console.kv(f"runbook {pb.name}: {doc['outcome'].upper()}", [
        ("snapshot", f"{sel.snapshot_id} (taken at {sel.created_at})"),
        ("verified", ", ".join(f"{a['name']} ({a['outputs'].get('rows', '?')} rows)" for a in verified) or "-"),
        ("confirmations", "; ".join(f"{c['step']}: {c['answer']}" for c in doc["confirmations"]) or "none asked"),
        ("run by", who["aws"]["arn"]),
        ("duration", f"{doc['duration_s']:.1f}s"),
        ("record", done.record_uri or "not recorded"),
    ])
    if doc["outcome"] != "succeeded":
        raise PipelineFailed(f"runbook {pb.name} {doc['outcome']}" + (f": {doc['error']}" if doc["error"] else ""),
                             doc["exit_code"] or 1)
