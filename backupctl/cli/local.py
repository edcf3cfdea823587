"""``backupctl local up``: the embedded AWS endpoint in the foreground."""

from __future__ import annotations

import click

from backupctl.cli.context import App, pass_app
from backupctl.embedded import serve_forever


@click.group()
def local() -> None:
    """The embedded AWS endpoint (moto's server) for demos, development and tests."""


@local.command()
@click.option("--port", type=int, default=4566, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Listen address (keep it on loopback).")
@pass_app
def up(app: App, port: int, host: str) -> None:
    """Run the embedded endpoint in the foreground until Ctrl-C.

    \b
    Then, in another shell:
      export BACKUPCTL_ENDPOINT_URL=http://127.0.0.1:4566 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
      backupctl snapshot --table T --from us-east-1 --to us-west-2
    """
    app.console.info(f"embedded AWS endpoint on http://{host}:{port} (Ctrl-C to stop)")
    serve_forever(host, port)
