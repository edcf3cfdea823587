"""``backupctl snapshot``: export a table into a repository in another region."""

from __future__ import annotations

import click

from backupctl.cli.context import App, json_option, pass_app
from backupctl.cli.engine_options import (
    ENGINES,
    check_engine_choice,
    emr_options,
    processes_option,
    spark_master_option,
)
from backupctl.console import human_bytes
from backupctl.errors import EXIT_CODES_HELP, InvalidInput
from backupctl.mysql_conn import is_mysql_uri
from backupctl.snapshot import (
    MYSQL_MODES,
    DynamoSnapshotOptions,
    MySQLSnapshotOptions,
    SnapshotResult,
    snapshot_dynamodb,
    snapshot_mysql,
)
from backupctl.sources.mysql import CHUNK_ROWS, CONSISTENCY, DEFAULT_SAFETY_LAG_S


@click.command(epilog=EXIT_CODES_HELP)
@click.option("--table", "-t", required=True, help="Source table name.")
@click.option("--from", "from_region", envvar="AWS_DEFAULT_REGION", help="Region of the source (default: AWS_DEFAULT_REGION).")
@click.option("--to", "to_region", required=True, help="Target region: the repository lives there.")
@click.option("--repo", metavar="s3://BUCKET[/PREFIX]", help="Repository; default s3://backupctl-<account>-<to-region>/ (created on first use).")
@click.option("--read-percent", type=float, default=0.5, show_default=True, help="Share of the table's provisioned RCU to use.")
@click.option("--max-rcu", type=float, help="Read budget in RCU/s; required to cap reads of on-demand tables.")
@click.option("--segments", type=int, help="Parallel-scan segments (default: from table size, budget and workers).")
@click.option("--workers", type=int, default=8, show_default=True, help="Concurrent tasks.")
@click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True, callback=check_engine_choice,
              help="Where tasks run: local (thread pool), spark (one Spark partition per task), emr (not yet), "
                   "auto (local for now).")
@spark_master_option
@emr_options
@processes_option
@click.option("--part-size-mb", type=int, default=256, show_default=True, help="Uncompressed MiB per part before a new part is cut.")
@click.option("--method", type=click.Choice(["scan", "export", "auto"]), default="scan", show_default=True,
              help="DynamoDB: scan (parallel Scan within the read budget) or export (native point-in-time "
                   "export into the repository: consistent, uses no read capacity, needs PITR); auto exports "
                   "when PITR is on.")
@click.option("--page-size", type=int, help="Items per Scan request (smaller pages spread reads more evenly).")
@click.option("--no-resume", is_flag=True, help="Start a new snapshot even if a crashed run of this table can be resumed.")
@click.option("--source", "source", metavar="mysql://USER@HOST[:PORT]/DB",
              help="Snapshot a MySQL table of this database instead of DynamoDB (no password in the URI; "
                   "with --secret-id the user may come from the secret: mysql://HOST[:PORT]/DB).")
@click.option("--rds-instance", metavar="ID",
              help="Snapshot a MySQL table of this RDS instance (mysql, mariadb or aurora-mysql): its endpoint "
                   "comes from RDS DescribeDBInstances in --from. Needs --database; not with --source.")
@click.option("--database", metavar="DB", help="With --rds-instance: the database holding --table.")
@click.option("--user", metavar="USER", help="With --rds-instance: the MySQL user (default: the secret's "
              "username, else the instance's master user).")
@click.option("--password-file", type=click.Path(dir_okay=False), help="MySQL: file holding the password. "
              "Password sources in order: --password-file, --secret-id, MYSQL_PWD, ~/.my.cnf [client] password.")
@click.option("--secret-id", metavar="NAME|ARN",
              help="MySQL: AWS Secrets Manager secret holding the password, read in --from (an ARN's own region "
                   "wins): a plain string, or JSON as RDS manages them ({\"username\": ..., \"password\": ...}: "
                   "the username is used when none is given).")
@click.option("--chunk-rows", type=int, default=CHUNK_ROWS, show_default=True,
              help="MySQL: rows per primary-key range (one task each).")
@click.option("--consistency", type=click.Choice(CONSISTENCY), default="snapshot", show_default=True,
              help="MySQL: snapshot = every chunk reads one consistent view; none = latest data per chunk.")
@click.option("--mode", type=click.Choice(MYSQL_MODES), default=None,
              help="MySQL: full (default) or incremental (the rows whose --watermark-column is in "
                   "[end of the newest snapshot, server clock - --safety-lag)).")
@click.option("--watermark-column", metavar="COLUMN",
              help="MySQL incremental: DATETIME/TIMESTAMP (or epoch-seconds number) column stamped on every write.")
@click.option("--detect-deletes", is_flag=True,
              help="MySQL incremental: record keys deleted since the parent as tombstones (walks the primary key).")
@click.option("--safety-lag", "safety_lag", type=float, default=DEFAULT_SAFETY_LAG_S, show_default=True,
              metavar="SECONDS", help="MySQL incremental: end the window this long before the server clock, "
                                      "so transactions still in flight are taken by the next increment.")
@click.option("--kms-key-id", metavar="KEY",
              help="Encrypt every object of the snapshot with SSE-KMS under this key (id, ARN or alias/NAME), "
                   "which must be in --to.")
@click.option("--object-lock-days", type=int, metavar="N",
              help="Write every part, schema and manifest under S3 Object Lock for N days: the snapshot cannot be "
                   "deleted (or pruned) before. The bucket needs Object Lock (a new one is created with it).")
@click.option("--object-lock-mode", type=click.Choice(["governance", "compliance"]), default=None,
              help="With --object-lock-days: governance (default; users with s3:BypassGovernanceRetention can "
                   "still delete) or compliance (nobody can, not even the root user).")
@json_option
@pass_app
def snapshot(
    app: App, table: str, from_region: str | None, to_region: str, repo: str | None, read_percent: float,
    max_rcu: float | None, segments: int | None, workers: int, engine: str, part_size_mb: int,
    method: str, page_size: int | None, no_resume: bool, source: str | None, rds_instance: str | None,
    database: str | None, user: str | None, password_file: str | None, secret_id: str | None, chunk_rows: int,
    consistency: str, mode: str | None, watermark_column: str | None, detect_deletes: bool, safety_lag: float,
    kms_key_id: str | None, object_lock_days: int | None, object_lock_mode: str | None, as_json: bool,
) -> None:
    """Snapshot a DynamoDB table (or, with --source mysql://..., a MySQL table) into a repository in region --to.

    Full snapshot by parallel scan, within a read budget. A run that dies
    (crash, Ctrl-C, SIGKILL) leaves no listed snapshot; running the same
    command again resumes it without re-reading finished segments.

    MySQL tables are read in parallel over primary-key ranges into Parquet
    parts (exact types); --rds-instance finds the endpoint of an RDS instance.
    The password never comes from the command line: it is read from
    --password-file, else the Secrets Manager secret --secret-id, else
    MYSQL_PWD, else ~/.my.cnf, and is never written anywhere.
    --mode incremental takes the rows changed since the newest snapshot of the
    table (full or incremental), by --watermark-column; --detect-deletes also
    records deleted keys. Restoring an increment restores its whole chain.

    \b
    Examples:
      backupctl snapshot --table orders --from us-east-1 --to us-west-2
      backupctl snapshot --source mysql://backup@db.example.com:3306/shop --table orders \\
          --from us-east-1 --to us-west-2 --password-file ~/.backup-pw
      backupctl snapshot --source mysql://backup@db.example.com:3306/shop --table orders \\
          --from us-east-1 --to us-west-2 --mode incremental --watermark-column updated_at --detect-deletes
      backupctl snapshot --rds-instance shop-db --database shop --table orders \\
          --from us-east-1 --to us-west-2 --secret-id prod/shop-db/backup
    """
    console = app.with_json(as_json)
    if not from_region:
        raise InvalidInput("--from is required (or set AWS_DEFAULT_REGION)")
    if part_size_mb < 1:
        raise InvalidInput("--part-size-mb must be at least 1")
    result: SnapshotResult
    if source is not None and rds_instance is not None:
        raise InvalidInput("--rds-instance and --source are two ways to name the source: give one")
    if source is not None or rds_instance is not None:
        if source is not None and not is_mysql_uri(source):
            raise InvalidInput(f"invalid --source '{source.split('@')[-1]}': expected mysql://USER@HOST[:PORT]/DB")
        for flag, value in (("--max-rcu", max_rcu), ("--segments", segments), ("--page-size", page_size),
                            ("--method", None if method == "scan" else method)):
            if value is not None:
                raise InvalidInput(f"{flag} applies to DynamoDB sources, not MySQL")
        mopts = MySQLSnapshotOptions(
            source_uri=source, table=table, source_region=from_region, target_region=to_region, repo_uri=repo,
            password_file=password_file, chunk_rows=chunk_rows, consistency=consistency, workers=workers,
            engine=engine, resume=not no_resume, part_max_bytes=part_size_mb << 20, mode=mode or "full",
            watermark_column=watermark_column, detect_deletes=detect_deletes, safety_lag_s=safety_lag,
            kms_key_id=kms_key_id, object_lock_days=object_lock_days, object_lock_mode=object_lock_mode,
            secret_id=secret_id, rds_instance=rds_instance, database=database, user=user,
        )
        result = snapshot_mysql(app.aws, mopts, progress_factory=console.progress, on_event=console.info)
    else:
        if mode is not None or watermark_column is not None or detect_deletes:
            raise InvalidInput("--mode, --watermark-column and --detect-deletes apply to MySQL sources "
                               "(--source mysql://...)")
        for flag, value in (("--password-file", password_file), ("--secret-id", secret_id),
                            ("--database", database), ("--user", user)):
            if value is not None:
                raise InvalidInput(f"{flag} applies to MySQL sources (--source mysql://... or --rds-instance ID)")
        opts = DynamoSnapshotOptions(
            table=table, source_region=from_region, target_region=to_region, repo_uri=repo,
            read_percent=read_percent, max_rcu=max_rcu, segments=segments, workers=workers, engine=engine,
            resume=not no_resume, part_max_bytes=part_size_mb << 20, page_size=page_size, method=method,
            kms_key_id=kms_key_id, object_lock_days=object_lock_days, object_lock_mode=object_lock_mode,
        )
        result = snapshot_dynamodb(app.aws, opts, progress_factory=console.progress, on_event=console.info)
    m = result.manifest
    src = (f"mysql {m.source['database']}.{m.source['table']} ({m.source['region']}"
           + (f", rds instance {m.source['rds_instance']})" if m.source.get("rds_instance") else ")")
           if m.source["kind"] == "mysql" else f"dynamodb {m.source['table']} ({m.source['region']})")
    rate = m.rows / result.duration_s if result.duration_s > 0 else 0.0
    console.kv(
        "snapshot committed",
        [
            ("id", m.id),
            ("source", src),
            ("repository", result.repo),
            ("items", f"{m.rows:,}"),
        ]
        + ([("mode", f"incremental after {m.parent_id}"),
            ("window", f"{(m.window or {}).get('column')} in [{(m.window or {}).get('from')}, "
                       f"{(m.window or {}).get('to')})"),
            ("deleted", f"{result.extra.get('deleted', 0):,}")] if m.mode == "incremental" else [])
        + [
            ("parts", len(m.parts)),
            ("size", human_bytes(m.bytes)),
            ("digest", m.content_digest),
            ("duration", f"{result.duration_s:.1f}s ({rate:,.0f} items/s)"),
        ]
        + ([("resumed", f"yes, {result.tasks_skipped} tasks skipped")] if result.resumed else []),
    )
    if as_json:
        console.emit_json(result.to_json())


