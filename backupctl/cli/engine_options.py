"""The engine options shared by ``snapshot`` and ``restore``: ``--engine`` choices and ``--spark-master``."""

from __future__ import annotations

from typing import Any

import click

from backupctl.engines import ENGINES, configure, get_engine

__all__ = ["ENGINES", "check_engine_choice", "spark_master_option"]


def _set_spark_master(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    configure(spark_master=value)  # validated there: one InvalidInput line for a bad master


def check_engine_choice(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """Refuse an engine that is not available before anything is read or written."""
    if value == "emr":
        get_engine(value, 1)  # raises the one "not available yet" InvalidInput line
    return value


def spark_master_option(f: Any) -> Any:
    return click.option(
        "--spark-master", metavar="MASTER", envvar="BACKUPCTL_SPARK_MASTER", expose_value=False,
        callback=_set_spark_master,
        help="--engine spark: local[*] (default), local[N], spark://HOST:7077, yarn or k8s://...",
    )(f)


# -- --engine emr -------------------------------------------------------------------
#
# Each option's callback records its value in the invocation's ``ctx.meta`` and hands the
# EmrSettings built so far (validated: one InvalidInput line) to the engine registry; after
# the last callback the registry holds every option given.

def _record(key: str) -> Any:
    def cb(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        values = ctx.meta.setdefault("backupctl.emr", {})  # per invocation: nothing leaks between commands
        if value is not None and value != ():
            values[key] = value
        from backupctl.engines import configure_emr

        configure_emr(emr_settings(values))  # after the last callback: every option given

    return cb


def emr_settings(values: dict[str, Any] | None = None) -> Any:
    from backupctl.engines.emr import EmrSettings, parse_tags

    if values is None:
        ctx = click.get_current_context(silent=True)
        values = ctx.meta.get("backupctl.emr", {}) if ctx is not None else {}
    kw: dict[str, Any] = {k: values[k] for k in ("release", "instance_type", "instance_count", "subnet_id",
                                                 "emr_role", "ec2_role", "log_uri", "cluster_id", "deadline_s")
                          if k in values}
    if "tags" in values:
        kw["tags"] = parse_tags(values["tags"])
    return EmrSettings(**kw).check()


def emr_options(f: Any) -> Any:
    """The ``--engine emr`` options (all optional; defaults in ``backupctl.engines.emr``)."""
    from backupctl.engines.emr import DEFAULT_INSTANCE_TYPE, DEFAULT_RELEASE

    opts = [
        click.option("--emr-release", metavar="LABEL", expose_value=False, callback=_record("release"),
                     help=f"--engine emr: EMR release label (default {DEFAULT_RELEASE})."),
        click.option("--instance-type", metavar="TYPE", expose_value=False, callback=_record("instance_type"),
                     help=f"--engine emr: EC2 instance type of every node (default {DEFAULT_INSTANCE_TYPE})."),
        click.option("--instance-count", type=int, metavar="N", expose_value=False, callback=_record("instance_count"),
                     help="--engine emr: nodes, 1 master + N-1 core (default 3)."),
        click.option("--subnet-id", metavar="SUBNET", expose_value=False, callback=_record("subnet_id"),
                     help="--engine emr: VPC subnet of the cluster."),
        click.option("--emr-role", metavar="ROLE", expose_value=False, callback=_record("emr_role"),
                     help="--engine emr: EMR service role (default EMR_DefaultRole)."),
        click.option("--ec2-role", metavar="PROFILE", expose_value=False, callback=_record("ec2_role"),
                     help="--engine emr: EC2 instance profile of the nodes (default EMR_EC2_DefaultRole)."),
        click.option("--log-uri", metavar="S3URI", expose_value=False, callback=_record("log_uri"),
                     help="--engine emr: cluster logs (default the repository's runs/emr/logs/)."),
        click.option("--tag", "tags", multiple=True, metavar="K=V", expose_value=False, callback=_record("tags"),
                     help="--engine emr: a cluster tag (repeatable)."),
        click.option("--cluster-id", metavar="j-XXXX", expose_value=False, callback=_record("cluster_id"),
                     help="--engine emr: add the step to this running cluster and leave it running "
                          "(default: a transient cluster, terminated when done or on failure)."),
        click.option("--emr-deadline", "deadline", type=float, metavar="SECONDS", expose_value=False,
                     callback=_record("deadline_s"),
                     help="--engine emr: give up (and terminate a transient cluster) after this long (default 6 h)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _set_processes(_ctx: click.Context, _param: click.Parameter, value: int | None) -> None:
    from backupctl.engines import configure_processes

    if value is not None:
        if value < 1:
            from backupctl.errors import InvalidInput

            raise InvalidInput(f"--processes must be at least 1, not {value}")
        configure_processes(value)


def processes_option(f: Any) -> Any:
    return click.option(
        "--processes", type=int, metavar="N", expose_value=False, callback=_set_processes,
        help="--engine local, MySQL: read/load the chunks in N worker processes (1: threads). Python's GIL makes "
             "a chunk's Arrow/hash/Parquet work CPU-bound; default: one per core for snapshots of tables of "
             "300,000 rows or more, else threads (docs/SCALING.md).",
    )(f)
