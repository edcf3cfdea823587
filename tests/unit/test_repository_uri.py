"""Parsing --repo URIs: one clear error for each malformed form."""

from __future__ import annotations

import pytest

from backupctl.errors import InvalidInput
from backupctl.repository import RepoURI, parse_repo_uri


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://my-bucket", RepoURI("my-bucket", "")),
        ("s3://my-bucket/", RepoURI("my-bucket", "")),
        ("s3://my.bucket/backups/prod", RepoURI("my.bucket", "backups/prod/")),
        ("s3://abc/x/", RepoURI("abc", "x/")),
    ],
)
def test_valid(uri: str, expected: RepoURI) -> None:
    assert parse_repo_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    ["", "my-bucket", "http://bucket/x", "s3://", "s3://UPPER", "s3://ab", "s3://-bad", "s3://a..b",
     "s3://192.168.1.1", "s3://bucket/../x", "s3://bucket/a//b", "s3://bucket/a b", "s3://bucket_name"],
)
def test_invalid(uri: str) -> None:
    with pytest.raises(InvalidInput, match="invalid --repo"):
        parse_repo_uri(uri)
