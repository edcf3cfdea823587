"""Shared fixtures.

* ``moto_server`` - a real moto server (its own process) on a loopback port,
  for integration tests that speak real HTTP; one per test session.
* ``aws`` - an AwsContext pointed at it.
* ``cli`` - runs the real ``backupctl`` console script in a subprocess and
  returns (exit code, stdout, stderr).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Dummy credentials for every test: nothing here ever talks to real AWS.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ.pop("BACKUPCTL_ENDPOINT_URL", None)

from backupctl.aws import AwsContext  # noqa: E402
from backupctl.embedded import EmbeddedEndpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    with EmbeddedEndpoint() as ep:
        yield ep.url


@pytest.fixture
def aws(moto_server: str) -> AwsContext:
    return AwsContext(endpoint_url=moto_server)


@pytest.fixture
def name() -> str:
    """A unique table/bucket-safe name for one test."""
    return f"t-{uuid.uuid4().hex[:10]}"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def _backupctl() -> list[str]:
    exe = Path(sys.executable).parent / "backupctl"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("backupctl")
    return [found] if found else [sys.executable, "-m", "backupctl"]


@pytest.fixture
def cli(moto_server: str):  # type: ignore[no-untyped-def]
    def run(*args: str, endpoint: bool = True, env: dict[str, str] | None = None, timeout: float = 300,
            input: str | None = None) -> CliResult:
        e = dict(os.environ)
        e["COLUMNS"] = "200"
        if endpoint:
            e["BACKUPCTL_ENDPOINT_URL"] = moto_server
        if env:
            for k, v in env.items():
                if v is None:
                    e.pop(k, None)
                else:
                    e[k] = v
        p = subprocess.run(
            _backupctl() + list(args), capture_output=True, text=True, env=e, timeout=timeout, input=input
        )
        return CliResult(p.returncode, p.stdout, p.stderr)

    return run


# In CI (CI=true, set by .ci/run's caller) the services are started by .ci/services.sh and Java and
# pyspark are installed, so a skipped test means something the suite relies on is missing: fail it
# instead of letting a green run hide it. Locally, a missing service still skips with its reason.
def _no_skips_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which means a required service or tool is missing: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    _no_skips_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):  # type: ignore[no-untyped-def]
    outcome = yield
    _no_skips_in_ci(outcome.get_result())
