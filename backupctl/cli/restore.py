"""``backupctl restore``: load a snapshot into a target."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.cli.engine_options import (
    ENGINES,
    check_engine_choice,
    emr_options,
    processes_option,
    spark_master_option,
)
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
from backupctl.targets.mysql import LOAD_METHODS
from backupctl.targets.mysql import MODES as MYSQL_MODES

REDSHIFT_INSERT_MODES = ("KEEP_EXISTING", "OVERWRITE_EXISTING", "TRUNCATE", "APPEND")


def redshift_options(f):  # type: ignore[no-untyped-def]
    """Redshift-only options; their values go to ctx.meta["redshift"] (read by _restore_redshift)."""

    def keep(ctx: click.Context, param: click.Parameter, value: object) -> object:
        ctx.meta.setdefault("redshift", {})[param.name] = value
        return value

    for opt in reversed([
        click.option("--insert-mode", type=click.Choice(REDSHIFT_INSERT_MODES, case_sensitive=False),
                     expose_value=False, callback=keep,
                     help="Redshift: KEEP_EXISTING, OVERWRITE_EXISTING (default), TRUNCATE or APPEND."),
        click.option("--iam-role", metavar="ARN", expose_value=False, callback=keep,
                     help="Redshift: IAM role the cluster assumes to read the repository (COPY IAM_ROLE)."),
        click.option("--dist-key", metavar="COL", expose_value=False, callback=keep,
                     help="Redshift: DISTKEY of a created table (default: first primary-key column)."),
        click.option("--sort-key", metavar="COL,...", expose_value=False, callback=keep,
                     help="Redshift: compound SORTKEY of a created table (default: the primary key)."),
    ]):
        f = opt(f)
    return f


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("snapshot_id")
@click.option("--to-table", "table", help="Target DynamoDB table (required for DynamoDB).")
@click.option("--region", required=True, help="Region of the target table and of the repository.")
@click.option("--repo", metavar="s3://BUCKET[/PREFIX]", help="Repository; default s3://backupctl-<account>-<region>/.")
@click.option("--mode", type=click.Choice(list(dict.fromkeys([*DYNAMODB_MODES, *MYSQL_MODES]))), default="new",
              show_default=True,
              help="new: create the table (or use an empty one); upsert: write into an existing table; "
                   "replace: empty (DynamoDB) or drop and recreate (MySQL) the table first; "
                   "MySQL only: truncate, append (insert only; into a table that holds rows, all rows "
                   "or none: a key already there refuses the whole snapshot).")
@click.option("--write-percent", type=float, default=0.5, show_default=True, help="Share of provisioned WCU to use.")
@click.option("--max-wcu", type=float, help="Write budget in WCU/s (for on-demand tables).")
@click.option("--workers", type=int, default=None,
              help="Concurrent load tasks. [default: 8 for DynamoDB; for MySQL one per CPU core, at least 2, "
                   "and one more when each part's key range is read back after it loads: then one loader "
                   "at a time runs its statements on the server]")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True, callback=check_engine_choice,
              help="Where load tasks run: local, spark, emr (not yet), auto (local for now).")
@spark_master_option
@emr_options
@processes_option
@click.option("--dry-run", is_flag=True, help="Print the plan (table definition, parts, items, budget); write nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before destructive steps (replace, truncate).")
@click.option("--to", "to_uri", metavar="mysql://USER@HOST[:PORT]/DB",
              help="Restore a MySQL snapshot into this database (no password in the URI); --region names "
                   "the repository's region. redshift://USER@HOST[:PORT]/DB (or postgres://..., the local "
                   "stand-in) restores a MySQL or DynamoDB snapshot into Redshift.")
@click.option("--table", "mysql_table", help="MySQL: target table (default: the source table's name); "
              "Redshift: SCHEMA.TABLE.")
@click.option("--password-file", type=click.Path(dir_okay=False), help="MySQL/Redshift: file holding the password. "
              "Password sources in order: --password-file, --secret-id, then MYSQL_PWD, ~/.my.cnf [client] "
              "password (MySQL) or PGPASSWORD, ~/.pgpass (Redshift/PostgreSQL).")
@click.option("--secret-id", metavar="NAME|ARN",
              help="MySQL/Redshift: AWS Secrets Manager secret holding the password, read in --region (an ARN's "
                   "own region wins): a plain string, or JSON as RDS/Redshift manage them ({\"username\": ..., "
                   "\"password\": ...}: the username is used when the --to URI names none, e.g. "
                   "mysql://HOST:3306/DB).")
@click.option("--no-verify", is_flag=True, help="MySQL: do not read the restored table back to compare digests.")
@click.option("--load-method", type=click.Choice(list(LOAD_METHODS)), default="auto", show_default=True,
              help="MySQL: how rows are sent. insert: prepared multi-row INSERTs (binary protocol; loads run "
                   "side by side even into a table with an AUTO_INCREMENT column); load-data: LOAD DATA LOCAL "
                   "INFILE (the server must allow local_infile; its loads into a table with an AUTO_INCREMENT "
                   "column take turns); auto: insert. Upserts always use INSERT ... ON DUPLICATE KEY UPDATE.")
@click.option("--only-increment", is_flag=True,
              help="MySQL: apply just this incremental snapshot onto a table that already holds its parent "
                   "(no create or truncate); without it an increment restores its whole chain.")
@redshift_options
@json_option
@pass_app
def restore(
    app: App, snapshot_id: str, table: str | None, region: str, repo: str | None, mode: str, write_percent: float,
    max_wcu: float | None, workers: int | None, engine: str, dry_run: bool, yes: bool, to_uri: str | None,
    mysql_table: str | None, password_file: str | None, secret_id: str | None, no_verify: bool, only_increment: bool,
    load_method: str, as_json: bool,
) -> None:
    """Restore snapshot SNAPSHOT_ID into DynamoDB table --to-table in --region
    (or, with --to mysql://..., into a MySQL table; with --to redshift://... or
    postgres://..., into a Redshift table or its local PostgreSQL stand-in).

    Every part's checksum is checked before it is loaded, and the items and
    content digest written are compared with the manifest afterwards.

    A MySQL incremental snapshot restores its whole chain: the full snapshot,
    then every increment up to it in order (deleted keys removed, changed rows
    upserted by primary key); --only-increment applies just that increment.

    Database passwords never come from the command line: --password-file,
    else the Secrets Manager secret --secret-id, else the client's
    environment variable and option file; they are never written anywhere.

    \b
    Examples:
      backupctl restore 20261127T013000Z-1a2b3c --to-table orders-dr --region us-west-2
      backupctl restore 20261127T013000Z-1a2b3c --to mysql://admin@dr-db:3306/shop --region us-west-2
      backupctl restore 20261127T013000Z-1a2b3c --to mysql://dr-db:3306/shop --region us-west-2 \\
          --secret-id dr/shop-db/admin
    """
    console = app.with_json(as_json)

    def confirm(question: str) -> bool:
        if not sys.stdin.isatty():
            return False
        return click.confirm(question, default=False, err=True)

    if load_method != "auto" and not (to_uri is not None and is_mysql_uri(to_uri)):
        raise InvalidInput("--load-method applies to MySQL targets (--to mysql://...)")
    if _restore_redshift(app, console, snapshot_id, to_uri, region, repo, table, mysql_table, password_file,
                         secret_id, dry_run, no_verify, only_increment, as_json):
        return
    if to_uri is not None:
        _restore_mysql(app, console, confirm, snapshot_id, to_uri, region, repo, mode, mysql_table, table,
                       password_file, workers, engine, dry_run, yes, no_verify, as_json, only_increment, secret_id,
                       load_method)
        return
    if (mysql_table is not None or password_file is not None or secret_id is not None or no_verify
            or only_increment):
        raise InvalidInput("--table, --password-file, --secret-id, --no-verify and --only-increment apply to "
                           "MySQL targets (--to mysql://...); use --to-table for DynamoDB")
    opts = DynamoRestoreOptions(
        snapshot_id=snapshot_id, table=table or "", region=region, repo_uri=repo, mode=mode,
        write_percent=write_percent, max_wcu=max_wcu, workers=8 if workers is None else workers, engine=engine,
        dry_run=dry_run, yes=yes,
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
    workers: int | None, engine: str, dry_run: bool, yes: bool, no_verify: bool, as_json: bool,
    only_increment: bool = False,
    secret_id: str | None = None,
    load_method: str = "auto",
) -> None:
    if not is_mysql_uri(to_uri):
        raise InvalidInput(f"invalid --to '{to_uri.split('@')[-1]}': expected mysql://USER@HOST[:PORT]/DB")
    if to_table is not None:
        raise InvalidInput("--to-table applies to DynamoDB targets; use --table for a MySQL target")
    opts = MySQLRestoreOptions(
        snapshot_id=snapshot_id, target_uri=to_uri, region=region, table=table, repo_uri=repo, mode=mode,
        password_file=password_file, workers=workers, engine=engine,
        dry_run=dry_run, yes=yes,
        verify=not no_verify, only_increment=only_increment, secret_id=secret_id, load_method=load_method,
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


def _restore_redshift(
    app: App, console: Console, snapshot_id: str, to_uri: str | None, region: str, repo: str | None,
    to_table: str | None, table: str | None, password_file: str | None, secret_id: str | None, dry_run: bool,
    no_verify: bool, only_increment: bool, as_json: bool,
) -> bool:
    """Restore into Redshift / stand-in PostgreSQL when --to names one; False when it does not."""
    from click.core import ParameterSource

    from backupctl.pg_conn import is_pg_uri

    ctx = click.get_current_context()
    rs = {k: v for k, v in ctx.meta.get("redshift", {}).items() if v is not None}
    if not is_pg_uri(to_uri):
        if rs:
            raise InvalidInput("--insert-mode, --iam-role, --dist-key and --sort-key apply to Redshift targets "
                               "(--to redshift://... or postgres://...)")
        return False
    from backupctl.restore import RedshiftRestoreOptions, restore_redshift

    assert to_uri is not None
    if ctx.get_parameter_source("mode") == ParameterSource.COMMANDLINE:
        raise InvalidInput("--mode does not apply to Redshift targets: use --insert-mode")
    if to_table is not None or only_increment:
        raise InvalidInput("--to-table and --only-increment do not apply to Redshift targets "
                           "(use --table SCHEMA.TABLE)")
    sort_key = [s.strip() for s in str(rs["sort_key"]).split(",") if s.strip()] if "sort_key" in rs else None
    opts = RedshiftRestoreOptions(
        snapshot_id=snapshot_id, target_uri=to_uri, region=region, table=table, repo_uri=repo,
        insert_mode=str(rs["insert_mode"]).upper() if "insert_mode" in rs else None, iam_role=rs.get("iam_role"),
        dist_key=rs.get("dist_key"), sort_key=sort_key, password_file=password_file, dry_run=dry_run,
        verify=not no_verify, secret_id=secret_id,
    )
    result = restore_redshift(app.aws, opts, progress_factory=console.progress, on_event=console.info)
    t = result["target"]
    where = f"{t['kind']} {t['schema']}.{t['table']} ({t['host']}:{t['port']}/{t['database']})"
    if dry_run:
        console.kv(
            "restore plan (dry run: nothing written)",
            [
                ("snapshot", result["snapshot_id"]),
                ("target", where),
                ("insert mode", result["insert_mode"]),
                ("chain", " -> ".join(c["snapshot_id"] for c in result["chain"])),
                ("parts", result["parts"]),
                ("rows", f"{result['rows']:,}"),
                ("deleted keys", f"{result['deleted']:,}"),
                ("size", human_bytes(result["bytes"])),
                ("COPY manifests", ", ".join(result["copy_manifests"]) or "none (client-side COPY)"),
            ],
        )
        if not as_json:
            console.err.print(result["script"], markup=False, highlight=False, soft_wrap=True)
    else:
        rate = result["rows"] / result["duration_s"] if result["duration_s"] else 0.0
        console.kv(
            "restore complete" + (" (not verified)" if result["verification"] == "skipped" else ""),
            [
                ("snapshot", result["snapshot_id"]),
                ("target", where),
                ("insert mode", result["insert_mode"]),
                ("chain", " -> ".join(result["chain"])),
                ("rows", f"{result['rows']:,}"),
                ("deleted", f"{result['deleted']:,}"),
                ("table rows", f"{result['table_rows']:,}"),
                ("digest", result.get("digest", "n/a (Redshift: COPY runs server-side)")),
                ("verification", result["verification"]),
                ("duration", f"{result['duration_s']:.1f}s ({rate:,.0f} rows/s)"),
            ],
        )
    if as_json:
        console.emit_json(result)
    return True
