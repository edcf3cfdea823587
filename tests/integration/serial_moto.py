"""A moto server that handles one request at a time, for tests of exactly-once leasing.

DynamoDB applies every conditional write atomically; moto's threaded server
does not: two concurrent UpdateItem calls with the same ConditionExpression
on one item can both pass (measured: 4 of 30 trials with 8 concurrent
writers). Serialising requests restores the guarantee the control table's
leases rely on, so a double run in these tests is backupctl's bug, not
moto's. Run: ``python -m tests.integration.serial_moto PORT``.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


class Serialised:
    """WSGI middleware: one request at a time (the body is produced inside the lock)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self.lock:
            return list(self.app(environ, start_response))


def main(port: int) -> None:
    run_simple("127.0.0.1", port, Serialised(DomainDispatcherApplication(create_backend_app)), threaded=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
