"""``backupctl agent``: run the scheduled playbooks of one worker group (AWS Data Pipeline's Task Runner)."""

from __future__ import annotations

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.cli.params import Duration
from backupctl.cli.schedule import control_options, open_control
from backupctl.errors import EXIT_CODES_HELP, Interrupted


@click.command(epilog=EXIT_CODES_HELP)
@click.option("--worker-group", default="default", show_default=True, help="Run the schedules of this group.")
@click.option("--poll-interval", type=Duration(), default="10s", show_default=True,
              help="Wait between polls when nothing is due (e.g. 500ms, 10s, 1m).")
@click.option("--lease", "lease_s", type=Duration(), default="60s", show_default=True,
              help="Lease on a run, renewed every third of it; another agent takes the run over once it expires.")
@click.option("--once", is_flag=True, help="Run what is due now, then exit (for cron and tests).")
@control_options
@json_option
@pass_app
def agent(app: App, worker_group: str, poll_interval: float, lease_s: float, once: bool, region: str | None,
          control_table: str, as_json: bool) -> None:
    """Poll the control table for due runs of a worker group and run them, one at a time.

    \b
    Each run is taken with a conditional lease write (two agents never run the
    same run) and its lease is renewed while it works; a run whose agent died
    is taken over by another agent once the lease expires (attempts + 1, up to
    the schedule's --max-attempts). Activity retries, timeouts and clean-up are
    the playbook's. The outcome goes to the control table (`backupctl runs
    list|show`) and the log to the repository (runs/agent/RUN-ID/attempt-N.log).

    \b
    SIGTERM or Ctrl-C: the current activity finishes, clean-up (run_on: always)
    runs, the run is released for another agent (or recorded, if it was done),
    and the agent exits 0. A second signal cancels the current activity (exit 130).
    """
    from backupctl.pipelines.agent import Agent, AgentOptions

    if lease_s < 1:
        raise click.BadParameter("must be at least 1s", param_hint="--lease")
    if poll_interval < 0.05:
        raise click.BadParameter("must be at least 50ms", param_hint="--poll-interval")
    console = app.with_json(as_json)
    app.aws.check_credentials()
    table = open_control(app, region, control_table).ensure()
    opts = AgentOptions(worker_group=worker_group, lease_s=lease_s, poll_s=poll_interval, once=once)
    summary = Agent(app.aws, table, opts, console.info).serve()
    if as_json:
        console.emit_json(summary.to_json())
    if summary.interrupted:
        raise Interrupted("agent interrupted: the current activity was cancelled and its run released")
