"""Unit tests of MySQL connection settings: URI parsing, refused passwords, password sources, quoting."""

from __future__ import annotations

from pathlib import Path

import pymysql
import pytest

from backupctl.errors import AuthError, Conflict, InvalidInput, NotFound
from backupctl.mysql_conn import parse_mysql_uri, quote_ident, resolve_password, settings_from_uri, translate
from backupctl.retry import is_retryable


def test_parse_uri() -> None:
    assert parse_mysql_uri("mysql://backup@db.example.com:3307/shop") == ("backup", "db.example.com", 3307, "shop")
    assert parse_mysql_uri("mysql://u%40x@h/d%2Fb") == ("u@x", "h", 3306, "d/b")


@pytest.mark.parametrize("uri", ["mysql://u:pw@h:3306/db", "mysql://u:@h/db", "mysql://u:p@ss@h/db"])
def test_password_in_uri_is_refused(uri: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_mysql_uri(uri)
    assert "password" in e.value.message and "pw" not in e.value.message.replace("password", "")


@pytest.mark.parametrize("uri", ["mysql://h/db", "postgres://u@h/db", "mysql://u@h:99999/db", "mysql://u@h", ""])
def test_bad_uris(uri: str) -> None:
    with pytest.raises(InvalidInput):
        parse_mysql_uri(uri)


def test_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MYSQL_PWD", raising=False)
    assert resolve_password(None) == ("none", "")
    (tmp_path / ".my.cnf").write_text("[mysqld]\nskip-networking\n[client]\nuser = x\npassword = 'from cnf'\n")
    assert resolve_password(None) == ("option-file", "from cnf")
    monkeypatch.setenv("MYSQL_PWD", "from env")
    assert resolve_password(None) == ("env", "from env")
    f = tmp_path / "pw"
    f.write_text("from file\n")
    assert resolve_password(str(f)) == ("file", "from file")
    with pytest.raises(InvalidInput):
        resolve_password(str(tmp_path / "missing"))


@pytest.mark.parametrize("text", [
    "password = Hunter2-in-cnf\n",  # no [client] header: configparser quotes the line
    "[client]\n= Hunter2-in-cnf\n",  # a line without a key: ParsingError quotes it
    "[client]\nskip\n  Hunter2-in-cnf\n",  # a valueless key and an indented line: AttributeError in configparser
])
def test_unreadable_option_file_is_one_line_without_its_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                text: str) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MYSQL_PWD", raising=False)
    (tmp_path / ".my.cnf").write_text(text)
    with pytest.raises(InvalidInput) as e:
        resolve_password(None)
    assert e.value.message.startswith(f"cannot read {tmp_path / '.my.cnf'}: ")
    assert "\n" not in e.value.message and "Hunter2" not in e.value.message
    assert e.value.__cause__ is None and e.value.__suppress_context__  # --debug shows no configparser message


@pytest.mark.parametrize("uri", ["mysql://u@h/" + "d" * 65, "mysql://u@h/" + "d" * 10_000])
def test_overlong_uris_and_names_are_refused_in_one_short_line(uri: str) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_mysql_uri(uri)
    assert len(e.value.message) < 200


def test_names_the_server_refuses_are_bad_input() -> None:
    for code in (1059, 1102, 1103):
        t = translate(pymysql.err.ProgrammingError(code, "Incorrect table name 'x'"), "creating table")
        assert isinstance(t, InvalidInput) and t.message == "creating table: Incorrect table name 'x'"


def test_settings_never_serialise_the_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYSQL_PWD", "s3cret")
    s = settings_from_uri("mysql://u@h:3306/db", None)
    assert s.password == "s3cret"
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.to_dict())
    assert s.to_dict()["password_source"] == "env"


def test_quote_ident() -> None:
    assert quote_ident("x`; DROP TABLE y; --") == "`x``; DROP TABLE y; --`"
    assert quote_ident("a%s") == "`a%%s`"  # statements are always %-formatted
    with pytest.raises(InvalidInput):
        quote_ident("a\x00b")


def test_translate_and_retryable() -> None:
    assert isinstance(translate(pymysql.err.OperationalError(1045, "Access denied"), "x"), AuthError)
    assert isinstance(translate(pymysql.err.OperationalError(1049, "Unknown database"), "x"), NotFound)
    assert isinstance(translate(pymysql.err.ProgrammingError(1146, "no table"), "x"), NotFound)
    assert isinstance(translate(pymysql.err.IntegrityError(1062, "Duplicate"), "x"), Conflict)
    for code in (1148, 3948, 4166):  # LOAD DATA LOCAL refused: the user's --load-method load-data cannot run
        t = translate(pymysql.err.OperationalError(code, "local infile disabled"), "loading part p")
        assert isinstance(t, InvalidInput) and str(t).endswith("use --load-method insert")
    for code in (2006, 2013, 1205, 1213):
        assert is_retryable(pymysql.err.OperationalError(code, "transient"))
    assert not is_retryable(pymysql.err.OperationalError(1045, "Access denied"))
    assert not is_retryable(pymysql.err.ProgrammingError(1064, "syntax"))


def test_the_preferred_tls_context_is_made_once_when_a_server_first_offers_tls(monkeypatch: pytest.MonkeyPatch) -> None:
    """pymysql calls only ``wrap_socket`` on a connection's context, and only when the server offers TLS."""
    from backupctl import mysql_conn

    monkeypatch.setattr(mysql_conn, "_PREFERRED_TLS", None)
    made: list[object] = []

    class Ctx:
        def wrap_socket(self, sock: object, server_hostname: str) -> tuple[object, object, str]:
            return (self, sock, server_hostname)

    def make() -> Ctx:
        made.append(Ctx())
        return made[-1]  # type: ignore[return-value]

    a, b = mysql_conn._PreferredTLS(make), mysql_conn._PreferredTLS(make)
    assert not made  # a stand-in costs nothing until it is used
    wrapped = a.wrap_socket("sock-a", server_hostname="db1")
    assert wrapped == (made[0], "sock-a", "db1")
    assert b.wrap_socket("sock-b", server_hostname="db2") == (made[0], "sock-b", "db2") and len(made) == 1
    real = mysql_conn._make_preferred_tls()  # pymysql's own: certificates not verified, as before
    import ssl

    assert real.verify_mode == ssl.CERT_NONE and not real.check_hostname


def test_regions_are_checked_against_botocores_partitions() -> None:
    from backupctl.aws import known_regions, validate_region

    assert {"us-east-1", "us-west-2", "eu-central-1", "ap-southeast-2", "us-gov-west-1", "cn-north-1"} <= known_regions()
    assert validate_region("eu-west-3") == "eu-west-3"
    for bad, why in [("xx-nowhere-9", "not an AWS region known"), ("US_EAST", "expected a name like"),
                     ("aws-global", "expected a name like")]:
        with pytest.raises(InvalidInput, match=why):
            validate_region(bad, "--to region")
