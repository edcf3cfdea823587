"""``backupctl restore``: load a snapshot into a target."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.console import Console, human_bytes
from backupctl.errors import EXIT_CODES_HELP, InvalidInput
from backupctl.mysql_conn import is_mysql_uri
from backupctl.restore import (
    DYNAMODB_MODES,
    DynamoRestoreOptions,
    MySQLRestoreOptions,
    restore_dynamodb,
    restore_mysql,
)
from backupctl.targets.mysql import MODES as MYSQL_MODES


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("snapshot_id")
@click.option("--to-table", "table", help="Target DynamoDB table (required for DynamoDB).")
@click.option("--region", required=True, help="Region of the target table and of the repository.")
@click.option("--repo", metavar="s3://BUCKET[/PREFIX]", help="Repository; default s3://backupctl-<account>-<region>/.")
@click.option("--mode", type=click.Choice(list(dict.fromkeys([*DYNAMODB_MODES, *MYSQL_MODES]))), default="new",
              show_default=True,
              help="new: create the table (or use an empty one); upsert: write into an existing table; "
                   "replace: empty (DynamoDB) or drop and recreate (MySQL) the table first; "
                   "MySQL only: truncate, append.")
@click.option("--write-percent", type=float, default=0.5, show_default=True, help="Share of provisioned WCU to use.")
@click.option("--max-wcu", type=float, help="Write budget in WCU/s (for on-demand tables).")
@click.option("--workers", type=int, default=8, show_default=True, help="Concurrent load tasks.")
@click.option("--engine", type=click.Choice(["local", "auto"]), default="local", show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the plan (table definition, parts, items, budget); write nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before destructive steps (replace, truncate).")
@click.option("--to", "to_uri", metavar="mysql://USER@HOST[:PORT]/DB",
              help="Restore a MySQL snapshot into this database (no password in the URI); --region names "
                   "the repository's region.")
@click.option("--table", "mysql_table", help="MySQL: target table (default: the source table's name).")
@click.option("--password-file", type=click.Path(dir_okay=False), help="MySQL: file holding the password "
              "(else MYSQL_PWD, else ~/.my.cnf [client] password).")
@click.option("--no-verify", is_flag=True, help="MySQL: do not read the restored table back to compare digests.")
@click.option("--only-increment", is_flag=True,
              help="MySQL: apply just this incremental snapshot onto a table that already holds its parent "
                   "(no create or truncate); without it an increment restores its whole chain.")
@json_option
@pass_app
def restore(
    app: App, snapshot_id: str, table: str | None, region: str, repo: str | None, mode: str, write_percent: float,
    max_wcu: float | None, workers: int, engine: str, dry_run: bool, yes: bool, to_uri: str | None,
    mysql_table: str | None, password_file: str | None, no_verify: bool, only_increment: bool, as_json: bool,
) -> None:
    """Restore snapshot SNAPSHOT_ID into DynamoDB table --to-table in --region
    (or, with --to mysql://..., into a MySQL table).

    Every part's checksum is checked before it is loaded, and the items and
    content digest written are compared with the manifest afterwards.

    A MySQL incremental snapshot restores its whole chain: the full snapshot,
    then every increment up to it in order (deleted keys removed, changed rows
    upserted by primary key); --only-increment applies just that increment.

    \b
    Examples:
      backupctl restore 20261127T013000Z-1a2b3c --to-table orders-dr --region us-west-2
      backupctl restore 20261127T013000Z-1a2b3c --to mysql://admin@dr-db:3306/shop --region us-west-2
    """
    console = app.with_json(as_json)

    def confirm(question: str) -> bool:
        if not sys.stdin.isatty():
            return False
        return click.confirm(question, default=False, err=True)

    if to_uri is not None:
        _restore_mysql(app, console, confirm, snapshot_id, to_uri, region, repo, mode, mysql_table, table,
                       password_file, workers, engine, dry_run, yes, no_verify, as_json, only_increment)
        return
    if mysql_table is not None or password_file is not None or no_verify or only_increment:
        raise InvalidInput("--table, --password-file, --no-verify and --only-increment apply to MySQL targets "
                           "(--to mysql://...); use --to-table for DynamoDB")
    opts = DynamoRestoreOptions(
        snapshot_id=snapshot_id, table=table or "", region=region, repo_uri=repo, mode=mode,
        write_percent=write_percent, max_wcu=max_wcu, workers=workers, engine=engine, dry_run=dry_run, yes=yes,
    )

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


def _restore_mysql(
    app: App, console: Console, confirm: Callable[[str], bool], snapshot_id: str, to_uri: str, region: str,
    repo: str | None, mode: str, table: str | None, to_table: str | None, password_file: str | None,
    workers: int, engine: str, dry_run: bool, yes: bool, no_verify: bool, as_json: bool, only_increment: bool = False,
) -> None:
    if not is_mysql_uri(to_uri):
        raise InvalidInput(f"invalid --to '{to_uri.split('@')[-1]}': expected mysql://USER@HOST[:PORT]/DB")
    if to_table is not None:
        raise InvalidInput("--to-table applies to DynamoDB targets; use --table for a MySQL target")
    opts = MySQLRestoreOptions(
        snapshot_id=snapshot_id, target_uri=to_uri, region=region, table=table, repo_uri=repo, mode=mode,
        password_file=password_file, workers=workers, engine=engine, dry_run=dry_run, yes=yes,
        verify=not no_verify, only_increment=only_increment,
    )
    result = restore_mysql(app.aws, opts, confirm=confirm, progress_factory=console.progress, on_event=console.info)
    t = result["target"]
    where = f"mysql {t['database']}.{t['table']} ({t['host']}:{t['port']})"
    if dry_run:
        console.kv(
            "restore plan (dry run: nothing written)",
            [
                ("snapshot", result["snapshot_id"]),
                ("target", where),
                ("mode", mode),
                ("table exists", "yes" if result["table_exists"] else "no"),
                ("chain", " -> ".join(c["snapshot_id"] for c in result["chain"])),
                ("parts", len(result["parts"])),
                ("rows", f"{result['rows']:,}"),
                ("deleted keys", f"{result['deleted']:,}"),
                ("size", human_bytes(result["bytes"])),
                ("steps", "; ".join(result["actions"])),
            ],
        )
    else:
        rate = result["rows"] / result["duration_s"] if result["duration_s"] else 0.0
        console.kv(
            "restore complete" + (" and verified" if result["verification"] != "skipped" else " (not verified)"),
            [
                ("snapshot", result["snapshot_id"]),
                ("target", where),
                ("chain", " -> ".join(result["chain"])),
                ("rows", f"{result['rows']:,}"),
                ("deleted", f"{result['deleted']:,}"),
                ("table rows", f"{result['table_rows']:,}"),
                ("digest", result["digest"]),
                ("verification", result["verification"]),
                ("duration", f"{result['duration_s']:.1f}s ({rate:,.0f} rows/s)"),
            ],
        )
    if as_json:
        console.emit_json(result)
