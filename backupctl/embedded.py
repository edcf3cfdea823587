"""The embedded AWS endpoint: moto's server on loopback, for demos, dev and tests.

``backupctl local up`` runs it in the foreground; ``EmbeddedEndpoint`` runs it
as a child process (its own interpreter, so it does not compete with backupctl
for the GIL) and stops it on exit. moto speaks real HTTP, so boto3, the AWS
CLI and pyarrow talk to it exactly as they would to AWS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from types import TracebackType

from backupctl.errors import BackupctlError, InvalidInput

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
}


def _require_moto() -> None:
    try:
        import moto.server  # noqa: F401
    except ImportError as e:
        raise InvalidInput("the embedded endpoint needs moto: pip install 'backupctl[embedded]'") from e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_forever(host: str = "127.0.0.1", port: int = 4566) -> None:
    """Run moto's server in the foreground until Ctrl-C."""
    _require_moto()
    import moto.server

    from backupctl import embedded_emr

    embedded_emr.start(f"http://{host}:{port}")  # EMR steps really run here (see embedded_emr)
    moto.server.main(["-H", host, "-p", str(port)])


def wait_ready(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            with urllib.request.urlopen(url + "/moto-api/data.json", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BackupctlError(f"embedded endpoint at {url} did not start within {timeout_s:.0f}s") from None
            time.sleep(delay)
            delay = min(0.5, delay * 1.5)


class EmbeddedEndpoint:
    """A moto server child process on a free loopback port."""

    def __init__(self, port: int | None = None) -> None:
        _require_moto()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EmbeddedEndpoint:
        env = dict(os.environ)
        env.update(DUMMY_CREDENTIALS)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backupctl.embedded", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        wait_ready(self.url)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedEndpoint:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


if __name__ == "__main__":  # the child process of EmbeddedEndpoint
    serve_forever("127.0.0.1", int(sys.argv[1]))
