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
