"""How the console script ends (``cli.main.entry``, docs/adr/0019): atexit handlers run, the streams are
flushed and the status stands; the interpreter's teardown is skipped unless a non-daemon thread is alive."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# A program around ``entry``: ``main`` is replaced by one that leaves a thread of the given kind
# running, registers an atexit handler and exits with status 3. An object whose finalizer prints
# ``teardown`` lives in a module global: only the interpreter's own teardown runs that finalizer.
PROGRAM = textwrap.dedent("""
    import atexit, sys, threading, time
    from backupctl.cli import main as cli_main

    class Witness:
        def __del__(self):
            print("teardown", flush=True)

    witness = Witness()
    release = threading.Event()

    def fake_main():
        kind = sys.argv[1]
        if kind != "none":
            threading.Thread(target=release.wait if kind == "user" else time.sleep, args=(() if kind == "user"
                             else (3600,)), daemon=kind == "daemon", name=kind).start()
        if kind == "user":
            threading.Timer(0.2, release.set).start()
        atexit.register(lambda: print("atexit ran", flush=True))
        sys.stdout.write("unflushed output")  # no newline, no flush: entry must flush it
        raise SystemExit(3)

    cli_main.main = fake_main
    cli_main.entry()
""")


def run(kind: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM, kind], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kind", ["none", "daemon"])
def test_exit_skips_the_teardown_when_only_daemon_threads_are_left(kind: str) -> None:
    """A run of worker processes leaves multiprocessing's QueueFeederThread (a daemon) behind: the process
    still ends right after the atexit handlers, without the 0.4-0.6 s teardown (and without waiting on it)."""
    r = run(kind)
    assert r.returncode == 3, r.stderr
    assert r.stdout.startswith("unflushed output")
    assert "atexit ran" in r.stdout
    assert "teardown" not in r.stdout


def test_exit_joins_a_running_non_daemon_thread_through_the_normal_shutdown() -> None:
    r = run("user")
    assert r.returncode == 3, r.stderr
    assert "atexit ran" in r.stdout and "unflushed output" in r.stdout
    assert "teardown" in r.stdout  # Python's own shutdown ran (and joined the thread first)


# A command that imports numpy, as the MySQL ones do: how many threads the process then runs.
THREADS_PROGRAM = textwrap.dedent("""
    import os, sys
    from backupctl.cli import main as cli_main

    assert "numpy" not in sys.modules  # the CLI module does not import it: commands import it lazily

    def fake_main():
        import numpy  # noqa: F401
        print(os.environ.get("OPENBLAS_NUM_THREADS"), len(os.listdir("/proc/self/task")), flush=True)
        raise SystemExit(0)

    cli_main.main = fake_main
    cli_main.entry()
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_numpy_starts_no_blas_thread_pool_unless_the_environment_asks_for_one() -> None:
    def threads(env: dict[str, str]) -> tuple[str, int]:
        r = subprocess.run([sys.executable, "-c", THREADS_PROGRAM], capture_output=True, text=True, timeout=60,
                           env=env)
        assert r.returncode == 0, r.stderr
        setting, n = r.stdout.split()
        return setting, int(n)

    import os

    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert threads(base) == ("1", 1)
    setting, n = threads({**base, "OPENBLAS_NUM_THREADS": "4"})  # the user's own setting stands
    assert setting == "4" and n > 1
