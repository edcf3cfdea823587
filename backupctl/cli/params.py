"""Click parameter types shared by the commands."""

from __future__ import annotations

from typing import Any

import click


class Duration(click.ParamType):
    """``90m``, ``24h``, ``7d``, ``30s``, ``250ms`` or plain seconds -> seconds (float)."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        from backupctl.pipelines.model import parse_duration

        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)
