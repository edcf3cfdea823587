"""What every command receives through click's context: AWS access and the console."""

from __future__ import annotations

import os
from dataclasses import dataclass

import click

from backupctl.aws import AwsContext, endpoint_from_env
from backupctl.console import Console


@dataclass
class App:
    aws: AwsContext
    console: Console
    debug: bool = False

    def with_json(self, json_mode: bool) -> Console:
        self.console.json_mode = json_mode
        return self.console


def make_app(endpoint_url: str | None, profile: str | None, debug: bool, quiet: bool) -> App:
    width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else None
    return App(
        aws=AwsContext(endpoint_url=endpoint_url or endpoint_from_env(), profile=profile),
        console=Console(quiet=quiet, width=width),
        debug=debug,
    )


pass_app = click.make_pass_decorator(App)


def json_option(f):  # type: ignore[no-untyped-def]
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout (human output stays on stderr).")(f)


def repo_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--region", help="Region of the repository (the default repository is per region).")(f)
    f = click.option("--repo", "repo", metavar="s3://BUCKET[/PREFIX]", help="Snapshot repository; default s3://backupctl-<account>-<region>/.")(f)
    return f
