"""``backupctl iam-policy --for snapshot|restore|drill|agent``: the IAM policy a command needs."""

from __future__ import annotations

import click

from backupctl import iam
from backupctl.cli.context import App, json_option, pass_app
from backupctl.errors import EXIT_CODES_HELP


@click.command("iam-policy", epilog=EXIT_CODES_HELP)
@click.option("--for", "command", required=True, metavar="|".join(iam.COMMANDS),
              help="The command whose policy to print.")
@click.option("--repo", metavar="s3://BUCKET[/PREFIX]",
              help="Scope the S3 statements to this repository (default: every backupctl-* bucket).")
@click.option("--table", metavar="NAME", help="Scope the DynamoDB table statements to this table (default: all).")
@json_option
@pass_app
def iam_policy(app: App, command: str, repo: str | None, table: str | None, as_json: bool) -> None:
    """Print the minimal IAM policy that COMMAND needs (JSON on stdout).

    Each statement's Sid names the feature it is for; drop the ones you do not
    use (e.g. MySQLSecret without --secret-id, KMSKey without --kms-key-id).
    The actions are exactly the AWS calls the code makes (a test records them
    against moto); the data lives in backupctl/iam.py.

    \b
    Examples:
      backupctl iam-policy --for snapshot --repo s3://my-backups > snapshot-policy.json
      aws iam create-policy --policy-name backupctl-snapshot --policy-document file://snapshot-policy.json
    """
    console = app.with_json(as_json)
    doc = iam.policy(command, repo=repo, table=table)
    if as_json:
        console.emit_json({
            "command": command,
            "policy": doc,
            "statements": [{"sid": sid, "purpose": purpose} for sid, purpose in iam.describe(command)],
            "actions": sorted(iam.command_actions(command)),
        })
        return
    console.table(f"IAM policy for backupctl {command}", ["Sid", "for"], iam.describe(command))
    click.echo(iam.render(command, repo=repo, table=table))
