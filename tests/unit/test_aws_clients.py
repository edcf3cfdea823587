"""The one home of AWS clients (``backupctl.aws``): botocore sessions and clients, made once per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from backupctl.aws import AwsContext
from backupctl.errors import AuthError

PROGRAM = textwrap.dedent("""
    import sys
    import backupctl.cli.main
    from backupctl.aws import AwsContext

    s3 = AwsContext(endpoint_url="http://127.0.0.1:9").client("s3", "us-west-2")
    print(type(s3).__name__, "boto3" in sys.modules, "s3transfer" in sys.modules)
""")


def test_commands_make_botocore_clients_without_importing_boto3() -> None:
    """boto3 adds nothing backupctl uses (resources, transfer managers) and 40-70 ms to every start."""
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["S3", "False", "False"]


def test_clients_are_shared_and_an_unknown_profile_is_one_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    aws = AwsContext(endpoint_url="http://127.0.0.1:9")
    a, b = aws.client("s3", "eu-west-1"), aws.client("s3", "eu-west-1")
    assert a is b and a.meta.region_name == "eu-west-1" and a.meta.endpoint_url == "http://127.0.0.1:9"
    assert aws.client("s3", "eu-west-2") is not a
    with pytest.raises(AuthError, match="AWS profile 'no-such-profile-x' not found"):
        AwsContext(profile="no-such-profile-x").client("s3", "eu-west-1")
