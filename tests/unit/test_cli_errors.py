"""AWS errors a command lets through become one line with the documented exit code."""

from __future__ import annotations

import botocore.exceptions
import pytest

from backupctl.cli.main import _translate
from backupctl.errors import EXIT_AUTH, EXIT_DATA_PATH, EXIT_INTERNAL, EXIT_NOT_FOUND, EXIT_USAGE


def client_error(code: str, message: str = "msg") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "Op")


@pytest.mark.parametrize(("code", "exit_code"), [
    ("ValidationException", EXIT_USAGE),
    ("InvalidParameterValue", EXIT_USAGE),
    ("InvalidParameterCombination", EXIT_USAGE),
    ("ResourceNotFoundException", EXIT_NOT_FOUND),
    ("NoSuchBucket", EXIT_NOT_FOUND),
    ("DBInstanceNotFound", EXIT_NOT_FOUND),
    ("AccessDeniedException", EXIT_AUTH),
    ("ThrottlingException", EXIT_DATA_PATH),
    ("InternalError", EXIT_DATA_PATH),
    ("SomethingNew", EXIT_INTERNAL),
])
def test_aws_error_codes_map_to_exit_codes(code: str, exit_code: int) -> None:
    err = _translate(client_error(code, "the reason"))
    assert err is not None and err.exit_code == exit_code
    assert str(err) == f"AWS error {code}: the reason"
