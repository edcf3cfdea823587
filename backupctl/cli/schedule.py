"""``backupctl schedule add|list|remove`` and ``backupctl runs list|show``: the control table's schedules and runs."""

from __future__ import annotations

from typing import Any

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.cli.pipeline import parse_vars, var_option
from backupctl.errors import EXIT_CODES_HELP, InvalidInput
from backupctl.pipelines import control as ct


def control_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--control-table", default=ct.DEFAULT_TABLE, show_default=True, envvar="BACKUPCTL_CONTROL_TABLE",
                     help="Name of the control table (env BACKUPCTL_CONTROL_TABLE).")(f)
    f = click.option("--region", envvar="BACKUPCTL_CONTROL_REGION",
                     help="Region of the control table: the repository's region (env BACKUPCTL_CONTROL_REGION).")(f)
    return f


def open_control(app: App, region: str | None, name: str) -> ct.ControlTable:
    from backupctl.aws import validate_region

    if not region:
        raise InvalidInput("give --region (the control table's region) or set BACKUPCTL_CONTROL_REGION")
    return ct.ControlTable(app.aws, validate_region(region, "--region"), name)




def _every(s: dict[str, Any]) -> str:
    sched = s.get("schedule") or {}
    if sched.get("cron"):
        return f"cron '{sched['cron']}'"
    return f"every {parse_rate_s(sched.get('rate_s'))}"


def parse_rate_s(seconds: Any) -> str:
    s = int(seconds or 0)
    for unit, n in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if s and s % n == 0:
            k = s // n
            return f"{k} {unit}{'s' if k != 1 else ''}"
    return f"{s}s"


@click.group(epilog=EXIT_CODES_HELP)
def schedule() -> None:
    """Scheduled playbooks in the control table (run by `backupctl agent`)."""


@schedule.command("add", epilog=EXIT_CODES_HELP)
@click.argument("playbook", type=click.Path(dir_okay=False))
@click.option("--id", "schedule_id", metavar="ID", help="Schedule id (default: the playbook's name).")
@click.option("--worker-group", default="default", show_default=True, help="Agents of this group run it.")
@click.option("--repo", metavar="s3://BUCKET[/PREFIX]",
              help="Repository for run logs (default: the playbook's repository in --region, else the default one).")
@click.option("--max-attempts", type=click.IntRange(1, 100), default=ct.DEFAULT_MAX_ATTEMPTS, show_default=True,
              help="Attempts of a run whose agent died (its lease expired) before the run is failed.")
@click.option("--replace", is_flag=True, help="Replace an existing schedule of this id (keeps its cursor, no back-fill).")
@var_option
@control_options
@json_option
@pass_app
def add(app: App, playbook: str, schedule_id: str | None, worker_group: str, repo: str | None, max_attempts: int,
        replace: bool, variables: tuple[str, ...], region: str | None, control_table: str, as_json: bool) -> None:
    """Validate a playbook with a schedule: block and store it in the control table.

    The control table is in --region (default: the region of the playbook's
    S3Repository node); it is created on first use. Periods whose run time has
    passed since the schedule's start are back-filled (the max_backfill most
    recent) as pending runs. Agents run the playbook as stored: add it again
    with --replace after editing the file.
    """
    from backupctl.pipelines.agent import add_schedule

    console = app.with_json(as_json)
    app.aws.check_credentials()
    doc = add_schedule(app.aws, playbook, schedule_id=schedule_id, worker_group=worker_group, region=region,
                       repo=repo, variables=parse_vars(variables), max_attempts=max_attempts, replace=replace,
                       table=control_table)
    if as_json:
        console.emit_json(doc)
        return
    bf = doc["backfill"]
    console.kv(f"schedule {doc['schedule_id']} {'replaced' if doc['replaced'] else 'added'}", [
        ("playbook", f"{doc['name']} ({doc['playbook_path']})"),
        ("schedule", f"{_every(doc)}, {doc['schedule']['style']} style"),
        ("worker group", doc["worker_group"]),
        ("control table", f"{doc['control_table']} ({doc['region']})"),
        ("next runs", ", ".join(r["run_at"] for r in doc["next_runs"]) or "none (the schedule has ended)"),
        ("back-fill", f"{len(bf['runs'])} run(s) pending, {bf['skipped']}{'+' if bf['skipped_at_least'] else ''} "
                      "older period(s) skipped"),
    ])


@schedule.command("list", epilog=EXIT_CODES_HELP)
@click.option("--worker-group", help="Only this worker group's schedules.")
@control_options
@json_option
@pass_app
def list_(app: App, worker_group: str | None, region: str | None, control_table: str, as_json: bool) -> None:
    """List the schedules (an empty list when the control table does not exist yet)."""
    from backupctl.pipelines.agent import schedule_summary

    console = app.with_json(as_json)
    table = open_control(app, region, control_table)
    items = table.list_schedules(worker_group) if table.exists() else []
    docs = [schedule_summary(i) for i in sorted(items, key=lambda i: i["schedule_id"])]
    if as_json:
        console.emit_json(docs)
        return
    console.table(f"schedules in {table.name} ({table.region})",
                  ["id", "playbook", "worker group", "schedule", "next due", "skipped", "created"],
                  [[d["schedule_id"], d["name"], d["worker_group"], f"{_every(d)} ({d['schedule']['style']})",
                    d.get("next_due") or "-", d.get("skipped", 0), d["created_at"]] for d in docs])



@schedule.command("remove", epilog=EXIT_CODES_HELP)
@click.argument("schedule_id", metavar="ID")
@control_options
@json_option
@pass_app
def remove(app: App, schedule_id: str, region: str | None, control_table: str, as_json: bool) -> None:
    """Remove a schedule. Its pending runs are cancelled; a running one finishes; history stays (exit 3 if unknown)."""
    console = app.with_json(as_json)
    table = open_control(app, region, control_table).require()
    old = table.remove_schedule(schedule_id)
    doc = {"schedule_id": schedule_id, "removed": True, "cancelled_runs": old["cancelled_runs"]}
    if as_json:
        console.emit_json(doc)
        return
    console.info(f"removed schedule {schedule_id}"
                 + (f"; cancelled {len(old['cancelled_runs'])} pending run(s)" if old["cancelled_runs"] else ""))


@click.group(epilog=EXIT_CODES_HELP)
def runs() -> None:
    """History of scheduled runs (from the control table)."""


def _age(run: dict[str, Any]) -> str:
    d = run.get("duration_s")
    return f"{d:.2f}s" if isinstance(d, int | float) else "-"


@runs.command("list", epilog=EXIT_CODES_HELP)
@click.option("--schedule", "schedule_id", metavar="ID", help="Only this schedule's runs.")
@click.option("--state", type=click.Choice(["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "RELEASED", "CANCELLED"],
                                           case_sensitive=False), help="Only runs in this state.")
@click.option("--limit", type=click.IntRange(1, 100000), default=50, show_default=True, help="At most this many.")
@control_options
@json_option
@pass_app
def runs_list(app: App, schedule_id: str | None, state: str | None, limit: int, region: str | None,
              control_table: str, as_json: bool) -> None:
    """List runs, newest scheduled first (an empty list when the control table does not exist yet)."""
    from backupctl.pipelines.agent import run_summary

    console = app.with_json(as_json)
    table = open_control(app, region, control_table)
    items = table.list_runs(schedule_id, None if state else limit) if table.exists() else []
    if state:
        items = [i for i in items if i.get("state") == state.upper()][:limit]
    docs = [run_summary(i, history=False) for i in items]
    if as_json:
        console.emit_json(docs)
        return
    console.table(f"runs in {table.name} ({table.region})",
                  ["run id", "state", "attempts", "scheduled", "started", "duration", "exit", "owner / error"],
                  [[d["run_id"], d["state"], d.get("attempts", 0), d["scheduled_at"], d.get("started_at") or "-",
                    _age(d), d.get("exit_code", "-"), d.get("error") or d.get("lease_owner") or d.get("last_owner")
                    or ""] for d in docs])


@runs.command("show", epilog=EXIT_CODES_HELP)
@click.argument("run_id", metavar="RUN_ID")
@control_options
@json_option
@pass_app
def runs_show(app: App, run_id: str, region: str | None, control_table: str, as_json: bool) -> None:
    """Show one run: state, attempts, lease, timings, activities, history and the log's location (exit 3 if unknown)."""
    from backupctl.errors import NotFound
    from backupctl.pipelines.agent import run_summary

    console = app.with_json(as_json)
    table = open_control(app, region, control_table).require()
    item = table.get_run(run_id)
    if item is None:
        raise NotFound(f"run '{run_id}' not found in control table {table.name} ({table.region})")
    doc = run_summary(item)
    if as_json:
        console.emit_json(doc)
        return
    console.kv(f"run {doc['run_id']}: {doc['state']}", [
        (k, doc[k]) for k in ("schedule_id", "worker_group", "scheduled_at", "period_start", "period_end", "attempts",
                              "lease_owner", "lease_expires_at", "last_owner", "started_at", "finished_at",
                              "released_at", "duration_s", "exit_code", "error", "playbook_run_id", "log_uri")
        if doc.get(k) is not None])
    if doc.get("activities"):
        console.table("activities (last attempt)", ["activity", "type", "status", "attempts", "duration", "error"],
                      [[a.get("name"), a.get("type"), a.get("status"), a.get("attempts"),
                        f"{a.get('duration_s') or 0:.2f}s", a.get("error") or ""] for a in doc["activities"]])
    console.table("history", ["at", "event", "owner", "attempt", "detail"],
                  [[h.get("at"), h.get("event"), h.get("owner") or "", h.get("attempt") or "", h.get("detail") or ""]
                   for h in doc.get("history") or []])
