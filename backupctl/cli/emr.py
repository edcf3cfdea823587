"""``backupctl emr plan``: the exact EMR requests ``--engine emr`` would make, without making them."""

from __future__ import annotations

import json
from typing import Any

import click

from backupctl.cli.context import App, pass_app
from backupctl.cli.engine_options import emr_options, emr_settings


@click.group()
def emr() -> None:
    """EMR helpers for --engine emr."""


@emr.command("plan")
@click.option("--region", required=True, help="Region of the repository (and so of the cluster).")
@click.option("--repo", help="Repository URI s3://BUCKET[/PREFIX] (default backupctl-ACCOUNT-REGION).")
@click.option("--tasks", type=int, default=1, show_default=True, help="Number of tasks the step would run.")
@emr_options
@click.option("--json", "as_json", is_flag=True, help="Print the requests as one JSON document.")
@pass_app
def plan(app: App, region: str, repo: str | None, tasks: int, as_json: bool) -> None:
    """Print the RunJobFlow (or, with --cluster-id, AddJobFlowSteps) request, the files that would be
    uploaded and the bootstrap script. Nothing is called: no upload, no cluster.

    \b
      backupctl emr plan --region us-west-2 --instance-count 5 --subnet-id subnet-0abc1234 --tag team=data
    """
    from backupctl.aws import validate_region
    from backupctl.engines.emr import BOOTSTRAP_SCRIPT, RUNS_PREFIX, Staged, new_run_id, plan_requests
    from backupctl.engines.emr_package import build_wheel
    from backupctl.repository import RepoURI, S3Store, parse_repo_uri

    validate_region(region, "--region")
    uri = parse_repo_uri(repo) if repo else RepoURI(f"backupctl-ACCOUNT-{region}", "")
    store = S3Store(app.aws, region, uri)
    wheel_name, wheel = build_wheel()
    staged = Staged(store, new_run_id(), wheel_name)
    settings = emr_settings()
    doc: dict[str, Any] = {
        "region": region,
        "transient": settings.cluster_id is None,
        "uploads": {staged.wheel_url: f"{len(wheel)} bytes (backupctl wheel)",
                    staged.url("run_tasks.py"): "spark_jobs/run_tasks.py",
                    staged.url("bootstrap.sh"): "bootstrap script (below)",
                    staged.url("job.json"): "the job spec (tasks and their functions)"},
        "requests": plan_requests(settings, staged, f"backupctl {tasks} tasks ({staged.run_id})"),
        "bootstrap_script": BOOTSTRAP_SCRIPT,
        "results": staged.url("results.json"),
        "runs_prefix": store.url(RUNS_PREFIX),
    }
    if as_json:
        app.console.emit_json(doc)
        return
    click.echo(json.dumps(doc, indent=2))
