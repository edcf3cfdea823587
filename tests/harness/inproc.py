"""Run the ``backupctl`` CLI in this process: ``backupctl.cli.main.main([...])``, SystemExit caught.

The same code path as the console script without a new interpreter (~1 s of
imports per call saved), for tests that run the CLI dozens of times. Calls may
run concurrently from several threads: while any call runs, ``sys.stdout`` and
``sys.stderr`` route each write to the buffer of the thread that makes it (the
console resolves them at write time); threads the command starts itself write
to the original streams. The environment is not touched: pass
``--endpoint-url URL`` as the first arguments.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from backupctl.cli.main import main


@dataclass
class Result:
    code: int
    out: str
    err: str


_local = threading.local()
_lock = threading.Lock()
_users = 0
_saved: tuple[TextIO, TextIO] | None = None


class _Router(io.TextIOBase):
    """A text stream that writes to the calling thread's buffer, else to the stream it replaced."""

    def __init__(self, which: str, original: TextIO) -> None:
        super().__init__()
        self.which = which
        self.original = original

    def _target(self) -> Any:
        return getattr(_local, self.which, None) or self.original

    def write(self, s: str) -> int:
        return int(self._target().write(s))

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


@contextlib.contextmanager
def _routed() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = (sys.stdout, sys.stderr)
            sys.stdout = _Router("out", sys.stdout)  # type: ignore[assignment]
            sys.stderr = _Router("err", sys.stderr)  # type: ignore[assignment]
        _users += 1
    _local.out, _local.err = io.StringIO(), io.StringIO()
    try:
        yield _local.out, _local.err
    finally:
        _local.out = _local.err = None
        with _lock:
            _users -= 1
            if _users == 0 and _saved is not None:
                sys.stdout, sys.stderr = _saved
                _saved = None


def run_cli(*args: str) -> Result:
    """``backupctl ARGS`` in-process: (exit code, stdout, stderr)."""
    code = 0
    with _routed() as (out, err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return Result(code, out.getvalue(), err.getvalue())
