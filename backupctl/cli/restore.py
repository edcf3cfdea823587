"""``backupctl restore``: load a snapshot into a target."""

from __future__ import annotations

import sys

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.console import human_bytes
from backupctl.errors import EXIT_CODES_HELP
from backupctl.restore import DYNAMODB_MODES, DynamoRestoreOptions, restore_dynamodb


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("snapshot_id")
@click.option("--to-table", "table", required=True, help="Target DynamoDB table.")
@click.option("--region", required=True, help="Region of the target table and of the repository.")
@click.option("--repo", metavar="s3://BUCKET[/PREFIX]", help="Repository; default s3://backupctl-<account>-<region>/.")
@click.option("--mode", type=click.Choice(DYNAMODB_MODES), default="new", show_default=True,
              help="new: create the table (or use an empty one); upsert: write into an existing table; "
                   "replace: empty the existing table first.")
@click.option("--write-percent", type=float, default=0.5, show_default=True, help="Share of provisioned WCU to use.")
@click.option("--max-wcu", type=float, help="Write budget in WCU/s (for on-demand tables).")
@click.option("--workers", type=int, default=8, show_default=True, help="Concurrent load tasks.")
@click.option("--engine", type=click.Choice(["local", "auto"]), default="local", show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the plan (table definition, parts, items, budget); write nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before destructive steps (replace).")
@json_option
@pass_app
def restore(
    app: App, snapshot_id: str, table: str, region: str, repo: str | None, mode: str, write_percent: float,
    max_wcu: float | None, workers: int, engine: str, dry_run: bool, yes: bool, as_json: bool,
) -> None:
    """Restore snapshot SNAPSHOT_ID into DynamoDB table --to-table in --region.

    Every part's checksum is checked before it is loaded, and the items and
    content digest written are compared with the manifest afterwards.

    \b
    Example:
      backupctl restore 20261127T013000Z-1a2b3c --to-table orders-dr --region us-west-2
    """
    console = app.with_json(as_json)
    opts = DynamoRestoreOptions(
        snapshot_id=snapshot_id, table=table, region=region, repo_uri=repo, mode=mode,
        write_percent=write_percent, max_wcu=max_wcu, workers=workers, engine=engine, dry_run=dry_run, yes=yes,
    )

    def confirm(question: str) -> bool:
        if not sys.stdin.isatty():
            return False
        return click.confirm(question, default=False, err=True)

    result = restore_dynamodb(app.aws, opts, confirm=confirm, progress_factory=console.progress, on_event=console.info)
    if dry_run:
        td = result["table_definition"]
        console.kv(
            "restore plan (dry run: nothing written)",
            [
                ("snapshot", result["snapshot_id"]),
                ("target", f"dynamodb {table} ({region})"),
                ("mode", mode),
                ("table exists", "yes" if result["table_exists"] else "no"),
                ("keys", ", ".join(f"{k['AttributeName']} ({k['KeyType']})" for k in td["KeySchema"])),
                ("billing", td["BillingMode"]),
                ("indexes", ", ".join(ix["IndexName"] for ix in td.get("GlobalSecondaryIndexes", []) + td.get("LocalSecondaryIndexes", [])) or "none"),
                ("parts", len(result["parts"])),
                ("items", f"{result['rows']:,}"),
                ("size", human_bytes(result["bytes"])),
                ("write budget", f"{result['write_budget_wcu_per_s']:,.0f} WCU/s" if result["write_budget_wcu_per_s"] else "unthrottled"),
                ("steps", "; ".join(result["actions"])),
            ],
        )
    else:
        rate = result["rows"] / result["duration_s"] if result["duration_s"] else 0.0
        console.kv(
            "restore complete and verified",
            [
                ("snapshot", result["snapshot_id"]),
                ("target", f"dynamodb {table} ({region})"),
                ("items", f"{result['rows']:,}"),
                ("digest", result["digest"]),
                ("duration", f"{result['duration_s']:.1f}s ({rate:,.0f} items/s)"),
            ],
        )
    if as_json:
        console.emit_json(result)
