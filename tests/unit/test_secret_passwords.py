"""Passwords from AWS Secrets Manager (--secret-id), in-process moto: values, precedence, errors, no leaks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import botocore.exceptions
import pytest
from moto import mock_aws

from backupctl import pg_conn
from backupctl.aws import AwsContext
from backupctl.errors import AuthError, InvalidInput, NotFound
from backupctl.mysql_conn import MySQLSettings, settings_from_uri
from backupctl.passwords import SecretRef, read_secret, resolve_password
from backupctl.restore import MySQLRestoreOptions
from backupctl.restore import check_mysql_options as check_restore_options

REGION = "us-east-1"
PW = "s3cr3t-pw:with@odd/chars"


@pytest.fixture
def sm() -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)


def ref(secret_id: str, region: str = REGION) -> SecretRef:
    made = SecretRef.make(AwsContext(), secret_id, region)
    assert made is not None
    return made


def no_fallback() -> tuple[str, str | None]:
    raise AssertionError("the fallback must not be consulted")


def test_plain_string_secret(sm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYSQL_PWD", "from-env")
    sm.create_secret(Name="db/plain", SecretString=PW)
    r = resolve_password(None, ref("db/plain"), no_fallback)
    assert (r.source, r.password, r.username) == ("secret", PW, None)
    s = settings_from_uri("mysql://backup@db.example.com:3307/shop", None, "--source", ref("db/plain"))
    assert (s.user, s.host, s.port, s.database, s.password) == ("backup", "db.example.com", 3307, "shop", PW)
    assert s.to_dict() == {"user": "backup", "host": "db.example.com", "port": 3307, "database": "shop",
                           "password_source": "secret", "password_file": None, "secret_id": "db/plain",
                           "secret_region": REGION}
    assert PW not in repr(s) and PW not in repr(r) and PW not in json.dumps(s.to_dict())


def test_json_secret_as_rds_manages_them(sm: Any) -> None:
    doc = {"username": "rds_admin", "password": PW, "engine": "mysql", "host": "x.rds.amazonaws.com", "port": 3306}
    sm.create_secret(Name="rds!db-1234", SecretString=json.dumps(doc))
    # The URI names no user: the secret's username is taken; host and port stay the URI's.
    s = settings_from_uri("mysql://127.0.0.1:3306/shop", None, "--to", ref("rds!db-1234"))
    assert (s.user, s.host, s.port, s.password) == ("rds_admin", "127.0.0.1", 3306, PW)
    # A user in the URI wins over the secret's.
    s = settings_from_uri("mysql://backup@127.0.0.1/shop", None, "--to", ref("rds!db-1234"))
    assert (s.user, s.password) == ("backup", PW)


def test_secret_by_arn_is_read_in_the_arn_region(sm: Any) -> None:
    west = boto3.client("secretsmanager", region_name="us-west-2")
    arn = west.create_secret(Name="dr/admin", SecretString="west-pw")["ARN"]
    r = ref(arn, REGION)
    assert r.region == "us-west-2"
    assert read_secret(r).password == "west-pw"
    assert ref("dr/admin", "eu-west-1").region == "eu-west-1"
    with pytest.raises(InvalidInput, match="invalid region in the --secret-id ARN 'xx-nowhere-9'"):
        ref("arn:aws:secretsmanager:xx-nowhere-9:123456789012:secret:dr/admin-AbCdEf")


def test_password_file_wins_over_the_secret(sm: Any, tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    # The secret does not exist: it is not read at all when a password file is given.
    r = resolve_password(str(f), ref("db/missing"), no_fallback)
    assert (r.source, r.password) == ("file", "from-file")


def test_missing_secret(sm: Any) -> None:
    with pytest.raises(NotFound) as e:
        settings_from_uri("mysql://u@h/db", None, "--source", ref("db/missing"))
    assert e.value.message == "secret 'db/missing' (us-east-1) does not exist in Secrets Manager"


def test_deleted_secret(sm: Any) -> None:
    sm.create_secret(Name="db/gone", SecretString="x")
    sm.delete_secret(SecretId="db/gone")
    with pytest.raises(NotFound) as e:
        read_secret(ref("db/gone"))
    assert e.value.message == "secret 'db/gone' (us-east-1) is marked for deletion in Secrets Manager"


def test_json_secret_without_password(sm: Any) -> None:
    sm.create_secret(Name="db/nopw", SecretString=json.dumps({"username": "u", "pass": PW}))
    with pytest.raises(InvalidInput) as e:
        read_secret(ref("db/nopw"))
    assert e.value.message == ('secret \'db/nopw\' (us-east-1) is a JSON document without a string "password" '
                               'field (fields: pass, username)')
    assert PW not in e.value.message
    sm.create_secret(Name="db/numpw", SecretString=json.dumps({"password": 1234}))
    with pytest.raises(InvalidInput, match='without a string "password" field'):
        read_secret(ref("db/numpw"))


def test_other_secret_shapes(sm: Any) -> None:
    sm.create_secret(Name="db/bin", SecretBinary=b"binary-pw")
    assert read_secret(ref("db/bin")).password == "binary-pw"
    sm.create_secret(Name="db/brace", SecretString="{not json")
    assert read_secret(ref("db/brace")).password == "{not json"  # a password that starts with '{'
    sm.create_secret(Name="db/num", SecretString="12345")
    assert read_secret(ref("db/num")).password == "12345"  # JSON, but not an object: the password itself
    sm.create_secret(Name="db/bad-bin", SecretBinary=b"\xff\xfe")
    with pytest.raises(InvalidInput) as e:
        read_secret(ref("db/bad-bin"))
    assert e.value.message == "secret 'db/bad-bin' (us-east-1) is binary and not UTF-8 text: it cannot be a password"


def _client_error(code: str, message: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "GetSecretValue")


@pytest.mark.parametrize("code", ["AccessDeniedException", "DecryptionFailure"])
def test_access_denied(sm: Any, code: str) -> None:
    client = AwsContext().client("secretsmanager", REGION)
    with mock.patch.object(client, "get_secret_value", side_effect=_client_error(code, "not allowed")):
        with pytest.raises(AuthError) as e:
            settings_from_uri("mysql://u@h/db", None, "--source", ref("db/x"))
    assert e.value.message == f"cannot read secret 'db/x' (us-east-1): access denied ({code}: not allowed)"
    assert e.value.exit_code == 6


def test_throttling_is_retried(sm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKUPCTL_RETRY_MAX_ATTEMPTS", "3")
    sm.create_secret(Name="db/t", SecretString="after-retry")
    client = AwsContext().client("secretsmanager", REGION)
    real = client.get_secret_value
    calls: list[int] = []

    def flaky(**kw: Any) -> Any:
        calls.append(1)
        if len(calls) < 3:
            raise _client_error("ThrottlingException", "slow down")
        return real(**kw)

    with mock.patch.object(client, "get_secret_value", side_effect=flaky):
        assert read_secret(ref("db/t")).password == "after-retry"
    assert len(calls) == 3


def test_uri_without_user_needs_one_from_the_secret(sm: Any) -> None:
    sm.create_secret(Name="db/plain", SecretString=PW)
    with pytest.raises(InvalidInput) as e:
        settings_from_uri("mysql://h:3306/db", None, "--to", ref("db/plain"))
    assert e.value.message == ("--to: no user (name it in the URI, mysql://USER@HOST[:PORT]/DB, or in the JSON "
                               "of secret 'db/plain' as \"username\")")
    # Without --secret-id a URI without a user is malformed, as before.
    with pytest.raises(InvalidInput, match="expected mysql://USER@HOST"):
        settings_from_uri("mysql://h:3306/db", None, "--to")


def test_settings_rebuilt_from_a_task_spec_reread_the_secret(sm: Any) -> None:
    sm.create_secret(Name="db/plain", SecretString=PW)
    s = settings_from_uri("mysql://u@h/db", None, "--source", ref("db/plain"))
    spec = json.loads(json.dumps({"mysql": s.to_dict(), "aws": AwsContext().to_dict()}))
    assert PW not in json.dumps(spec)
    again = MySQLSettings.from_spec(spec)
    assert (again.password, again.password_source, again.secret_id) == (PW, "secret", "db/plain")


def test_restore_options_read_the_secret_in_the_target_region(sm: Any) -> None:
    west = boto3.client("secretsmanager", region_name="us-west-2")
    west.create_secret(Name="dr/admin", SecretString=json.dumps({"username": "dr", "password": "west-pw"}))
    opts = MySQLRestoreOptions(snapshot_id="20261127T013000Z-1a2b3c", target_uri="mysql://dr-db:3306/shop",
                               region="us-west-2", secret_id="dr/admin")
    s = check_restore_options(opts, AwsContext())
    assert (s.user, s.password, s.secret_region) == ("dr", "west-pw", "us-west-2")
    # The same secret name is not in us-east-1.
    with pytest.raises(NotFound, match="secret 'dr/admin' \\(us-east-1\\) does not exist"):
        check_restore_options(MySQLRestoreOptions(snapshot_id="20261127T013000Z-1a2b3c", target_uri=opts.target_uri,
                                                  region=REGION, secret_id="dr/admin"), AwsContext())


def test_pg_settings_from_a_secret(sm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-env")
    doc = {"username": "awsuser", "password": PW, "engine": "redshift", "dbClusterIdentifier": "c1"}
    sm.create_secret(Name="redshift/c1", SecretString=json.dumps(doc))
    s = pg_conn.settings_from_uri("redshift://c1.x.us-east-1.redshift.amazonaws.com/dev", None, "--to",
                                  ref("redshift/c1"))
    assert (s.user, s.port, s.password, s.password_source) == ("awsuser", 5439, PW, "secret")
    assert PW not in repr(s) and PW not in json.dumps(s.to_dict())
    # targets/redshift.py calls settings_from_uri(uri, password_file, what): the scope supplies the secret.
    with pg_conn.secret_scope(ref("redshift/c1")):
        scoped = pg_conn.settings_from_uri("postgres://127.0.0.1/test", None, "--to")
    assert (scoped.user, scoped.password) == ("awsuser", PW)
    outside = pg_conn.settings_from_uri("postgres://u@127.0.0.1/test", None, "--to")
    assert (outside.password_source, outside.password) == ("env", None)
    with pytest.raises(InvalidInput, match="expected redshift://USER@HOST"):
        pg_conn.settings_from_uri("postgres://127.0.0.1/test", None, "--to")


def test_empty_secret_id_is_refused() -> None:
    with pytest.raises(InvalidInput, match="--secret-id is empty"):
        SecretRef.make(AwsContext(), " ", REGION)
    assert SecretRef.make(AwsContext(), None, REGION) is None
