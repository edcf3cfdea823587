"""`snapshot --rds-instance`: the endpoint from RDS DescribeDBInstances (in-process moto), user and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from unittest import mock

import boto3
import botocore.exceptions
import pytest
from moto import mock_aws

from backupctl.aws import AwsContext
from backupctl.errors import AuthError, InvalidInput, NotFound
from backupctl.snapshot import MySQLSnapshotOptions, check_mysql_options
from backupctl.sources.rds import ENDPOINT_MAP_ENV, endpoint_map, resolve_instance

SRC, DST = "us-east-1", "us-west-2"
ADDRESS = "shop-db.aaaaaaaaaa.us-east-1.rds.amazonaws.com"  # what moto reports for instance shop-db


@pytest.fixture
def rds(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv(ENDPOINT_MAP_ENV, raising=False)
    monkeypatch.delenv("MYSQL_PWD", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")
    with mock_aws():
        client = boto3.client("rds", region_name=SRC)
        client.create_db_instance(DBInstanceIdentifier="shop-db", DBInstanceClass="db.t3.micro", Engine="mysql",
                                  MasterUsername="admin", MasterUserPassword="pw-not-used", Port=3306)
        yield client


def opts(**kw: Any) -> MySQLSnapshotOptions:
    base: dict[str, Any] = {"source_uri": None, "table": "orders", "source_region": SRC, "target_region": DST,
                            "rds_instance": "shop-db", "database": "shop"}
    base.update(kw)
    return MySQLSnapshotOptions(**base)


def test_endpoint_user_and_manifest_source(rds: Any) -> None:
    settings, source = check_mysql_options(opts(), AwsContext())
    assert (settings.user, settings.host, settings.port, settings.database) == ("admin", ADDRESS, 3306, "shop")
    assert settings.password_source == "none"
    assert source == {"kind": "mysql", "region": SRC, "rds_instance": "shop-db", "engine": "mysql",
                      "host": ADDRESS, "port": 3306, "database": "shop", "table": "orders"}
    # --user wins over the master user.
    settings, _ = check_mysql_options(opts(user="backup"), AwsContext())
    assert settings.user == "backup"


def test_user_from_a_json_secret_beats_the_master_user(rds: Any) -> None:
    sm = boto3.client("secretsmanager", region_name=SRC)
    sm.create_secret(Name="shop/backup", SecretString=json.dumps({"username": "backup", "password": "pw"}))
    settings, source = check_mysql_options(opts(secret_id="shop/backup"), AwsContext())
    assert (settings.user, settings.password, settings.password_source) == ("backup", "pw", "secret")
    assert "pw" not in json.dumps(source)
    sm.create_secret(Name="shop/plain", SecretString="plain-pw")
    settings, _ = check_mysql_options(opts(secret_id="shop/plain"), AwsContext())
    assert (settings.user, settings.password) == ("admin", "plain-pw")


def test_endpoint_map_for_local_testing(rds: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENDPOINT_MAP_ENV, f"other.example=10.0.0.1, {ADDRESS.upper()}=127.0.0.1:13306")
    ep = resolve_instance(AwsContext(), SRC, "shop-db")
    assert (ep.address, ep.port, ep.connect_host, ep.connect_port) == (ADDRESS, 3306, "127.0.0.1", 13306)
    settings, source = check_mysql_options(opts(), AwsContext())
    assert (settings.host, settings.port) == ("127.0.0.1", 13306)
    assert (source["host"], source["port"]) == (ADDRESS, 3306)  # the manifest names what RDS reported


@pytest.mark.parametrize("text", ["no-equals", "=127.0.0.1", "a=", "a=h:port"])
def test_bad_endpoint_map(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(ENDPOINT_MAP_ENV, text)
    with pytest.raises(InvalidInput, match=f"invalid {ENDPOINT_MAP_ENV} entry"):
        endpoint_map()


def test_endpoint_map_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENDPOINT_MAP_ENV, "a.example=h1,b.example=h2:3307,c.example=[::1]")
    assert endpoint_map() == {"a.example": ("h1", None), "b.example": ("h2", 3307), "c.example": ("[::1]", None)}


def test_instance_not_found(rds: Any) -> None:
    with pytest.raises(NotFound) as e:
        check_mysql_options(opts(rds_instance="nope"), AwsContext())
    assert e.value.message == "RDS instance 'nope' (us-east-1) not found"
    # It is looked up in --from: shop-db is not in us-west-2.
    with pytest.raises(NotFound, match="RDS instance 'shop-db' \\(us-west-2\\) not found"):
        check_mysql_options(opts(source_region=DST), AwsContext())


def test_engine_must_be_mysql_compatible(rds: Any) -> None:
    rds.create_db_instance(DBInstanceIdentifier="pg-db", DBInstanceClass="db.t3.micro", Engine="postgres",
                           MasterUsername="admin", MasterUserPassword="pw-not-used")
    with pytest.raises(InvalidInput) as e:
        check_mysql_options(opts(rds_instance="pg-db"), AwsContext())
    assert e.value.message == ("RDS instance 'pg-db' (us-east-1) runs postgres: --rds-instance takes mysql, "
                               "mariadb, aurora-mysql instances")
    rds.create_db_instance(DBInstanceIdentifier="maria", DBInstanceClass="db.t3.micro", Engine="mariadb", EngineVersion="10.11.6",
                           MasterUsername="root", MasterUserPassword="pw-not-used")
    assert check_mysql_options(opts(rds_instance="maria"), AwsContext())[0].user == "root"


def test_access_denied(rds: Any) -> None:
    client = AwsContext().client("rds", SRC)
    err = botocore.exceptions.ClientError({"Error": {"Code": "AccessDenied", "Message": "no rds:Describe*"}},
                                          "DescribeDBInstances")
    with mock.patch.object(client, "describe_db_instances", side_effect=err):
        with pytest.raises(AuthError) as e:
            check_mysql_options(opts(), AwsContext())
    assert e.value.message == ("cannot describe RDS instance 'shop-db' (us-east-1): access denied "
                               "(AccessDenied: no rds:Describe*)")


@pytest.mark.parametrize(("kw", "message"), [
    ({"source_uri": "mysql://u@h/db"}, "--rds-instance and --source are two ways to name the source: give one"),
    ({"database": None}, "--rds-instance needs --database DB"),
    ({"rds_instance": "bad_id!"}, "invalid --rds-instance 'bad_id!': expected a DB instance identifier "
                                  "(letters, digits and hyphens, starting with a letter)"),
    ({"rds_instance": None, "source_uri": "mysql://u@h/db"},
     "--database and --user apply to --rds-instance; with --source they are part of the URI "
     "(mysql://USER@HOST[:PORT]/DB)"),
    ({"rds_instance": None}, "--source mysql://USER@HOST[:PORT]/DB or --rds-instance ID is required"),
])
def test_bad_combinations(kw: dict[str, Any], message: str) -> None:
    # Refused before any AWS call (so no moto here).
    with pytest.raises(InvalidInput) as e:
        check_mysql_options(opts(**kw), AwsContext())
    assert e.value.message == message
