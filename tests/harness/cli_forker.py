"""Run the ``backupctl`` CLI in child processes forked from a helper that has already imported it.

The console script spends about a second importing (boto3, pyarrow, ...)
before it does anything; a kill drawn at a random time of a run would land
in the imports a third of the time. The helper imports ``backupctl.cli.main``
(and every subcommand) once, then forks one child per run; the child runs ``main(args)`` - what the
console script runs - with its stdout and stderr in files. A run is given a
``kill_after`` delay: the helper SIGKILLs the child if it is still running
then (timed with a pidfd, so the delay is exact). The helper has no threads
and no sockets, so every child starts clean.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

_HELPER = r'''
import json, os, select, signal, sys, time
from backupctl.cli.main import cli, main
cli.load_all()

for line in sys.stdin:
    req = json.loads(line)
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            fd = os.open(req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            fd = os.open(req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 2)
            sys.stdin = open(os.devnull)
            try:
                main(req["args"])
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    killed = False
    pidfd = os.pidfd_open(pid)
    ready, _, _ = select.select([pidfd], [], [], req["kill_after"])
    if not ready:
        os.kill(pid, signal.SIGKILL)
        killed = True
    _, status = os.waitpid(pid, 0)
    os.close(pidfd)
    rc = os.waitstatus_to_exitcode(status)
    print(json.dumps({"pid": pid, "killed": killed, "rc": rc, "seconds": time.monotonic() - t0}), flush=True)
'''


@dataclass
class Run:
    killed: bool  # SIGKILLed before it finished
    code: int  # exit code (-9 when killed)
    seconds: float
    out: str
    err: str


class CliForker:
    """``with CliForker() as f: f.run(args, kill_after=1.5)``: one helper process, one forked child per run."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env
        self.dir = tempfile.TemporaryDirectory(prefix="backupctl-forker-")
        self.proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> CliForker:
        self.proc = subprocess.Popen([sys.executable, "-c", _HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=self.env)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.dir.cleanup()

    def run(self, args: list[str], kill_after: float | None = None, timeout: float = 300) -> Run:
        """Run ``backupctl ARGS`` in a forked child; SIGKILL it after ``kill_after`` s if it is still running."""
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        out, err = Path(self.dir.name) / "out", Path(self.dir.name) / "err"
        self.proc.stdin.write(json.dumps({"args": args, "out": str(out), "err": str(err),
                                          "kill_after": timeout if kill_after is None else kill_after}) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout + 30
        line = self.proc.stdout.readline()
        assert line, f"the CLI helper died (exit {self.proc.poll()})"
        assert time.monotonic() < deadline
        r = json.loads(line)
        return Run(bool(r["killed"]), int(r["rc"]), float(r["seconds"]), out.read_text(), err.read_text())
