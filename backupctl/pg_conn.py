"""Redshift / PostgreSQL connection settings: URIs, password sources, connecting, errors.

An endpoint is named by ``redshift://USER@HOST[:PORT]/DB`` (default port
5439) or, for the local stand-in, ``postgres://`` / ``postgresql://`` (default
port 5432). As for MySQL the password never comes from argv: a URI that
embeds one is refused (exit 2). It comes (``backupctl.passwords``) from
``--password-file PATH``, else an AWS Secrets Manager secret (``--secret-id``;
a JSON secret as Redshift manages them may also give the user, and the URI
may then omit it), else ``PGPASSWORD``, else ``~/.pgpass`` (both read by libpq
itself), else nothing (trust authentication). ``PgSettings`` holds a file or
secret password in memory only; ``to_dict()`` names where it comes from,
never the password.

``translate`` maps psycopg errors to backupctl's error types: authentication
-> AuthError (6), unreachable server or lost connection -> DataPathError (7),
missing schema/table -> NotFound (3), a row the target refuses -> Conflict (4).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from backupctl.errors import AuthError, BackupctlError, Conflict, DataPathError, InvalidInput, NotFound
from backupctl.passwords import SecretRef
from backupctl.passwords import resolve_password as _resolve

if TYPE_CHECKING:
    import psycopg

CONNECT_TIMEOUT_S = 10
APPLICATION_NAME = "backupctl"
DEFAULT_PORTS = {"redshift": 5439, "postgres": 5432, "postgresql": 5432}

_URI_RE = re.compile(
    r"^(?P<scheme>redshift|postgres|postgresql)://(?:(?P<auth>[^@/]*)@)?(?P<host>\[[^\]]+\]|[^:/@]+)"
    r"(?::(?P<port>[^/@]*))?/(?P<db>[^/?#]+)/?$"
)
_REDSHIFT_HOST_RE = re.compile(
    r"\.(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)\.redshift(?:-serverless)?\.amazonaws\.com$", re.IGNORECASE
)


def is_pg_uri(text: str | None) -> bool:
    """True for ``redshift://``, ``postgres://`` and ``postgresql://`` URIs."""
    return bool(text) and str(text).startswith(("redshift://", "postgres://", "postgresql://"))


def quote_ident(name: str) -> str:
    """A double-quoted identifier (quotes doubled): the only way a name enters SQL text."""
    if "\x00" in name:
        raise InvalidInput("identifiers cannot contain NUL characters")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A single-quoted string literal (quotes doubled; backslashes refused: Redshift treats them as escapes)."""
    if "\\" in text or "\x00" in text:
        raise InvalidInput(f"value {text!r} cannot contain backslashes or NUL characters")
    return "'" + text.replace("'", "''") + "'"


@dataclass
class PgSettings:
    """How to reach one Redshift or PostgreSQL database. A file password lives in memory only."""

    dialect: str  # "redshift" | "postgres"
    user: str
    host: str
    port: int
    database: str
    password_source: str = "none"  # "file" | "secret" | "env" | "pgpass" | "none"
    password_file: str | None = None
    secret_id: str | None = None
    secret_region: str | None = None
    password: str | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dialect": self.dialect, "user": self.user, "host": self.host, "port": self.port,
            "database": self.database, "password_source": self.password_source, "password_file": self.password_file,
            "secret_id": self.secret_id, "secret_region": self.secret_region,
        }

    def describe(self) -> str:
        scheme = "redshift" if self.dialect == "redshift" else "postgres"
        return f"{scheme}://{self.user}@{self.host}:{self.port}/{self.database}"

    @property
    def cluster_region(self) -> str | None:
        """The region in a ``*.REGION.redshift.amazonaws.com`` host name (None for other names)."""
        m = _REDSHIFT_HOST_RE.search(self.host)
        return m.group("region").lower() if m else None

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit connection (the caller issues BEGIN/COMMIT itself), session time zone UTC."""
        import psycopg  # here, not at import: a MySQL or DynamoDB run never pays for it (~50 ms)

        kw: dict[str, Any] = {
            "host": self.host.strip("[]"), "port": self.port, "dbname": self.database, "user": self.user,
            "connect_timeout": CONNECT_TIMEOUT_S, "application_name": APPLICATION_NAME, "autocommit": True,
        }
        if self.password is not None:
            kw["password"] = self.password
        if self.dialect == "redshift":
            kw["sslmode"] = os.environ.get("PGSSLMODE") or "require"
        try:
            conn = psycopg.connect(**kw)
        except psycopg.Error as e:
            err = translate(e, f"connecting to {self.describe()}", connecting=True)
            host = self.host.strip("[]")
            err.message = err.message.replace(f"'{host}'", "the host").replace(f'"{host}"', "the host")
            err.args = (err.message,)
            raise err from e
        try:
            conn.execute("SET TIME ZONE 'UTC'")
        except psycopg.Error as e:
            conn.close()
            raise translate(e, f"setting up the session on {self.describe()}") from e
        return conn


def parse_pg_uri(uri: str, what: str = "--to", user_optional: bool = False) -> tuple[str, str, str, int, str]:
    """(dialect, user, host, port, database) of a redshift:// or postgres:// URI; refuses embedded passwords.

    With ``user_optional`` (a --secret-id may name the user) a URI without ``USER@`` gives user "".
    """
    m = _URI_RE.match(uri or "")
    if not m:
        netloc = (uri or "").split("/", 3)[2] if (uri or "").count("/") >= 2 else ""
        if is_pg_uri(uri) and "@" in netloc and ":" in netloc.split("@")[0]:
            raise InvalidInput(_password_in_uri(what))
        raise InvalidInput(f"invalid {what} '{_redact(uri)}': expected redshift://USER@HOST[:PORT]/DB "
                           "or postgres://USER@HOST[:PORT]/DB")
    if m.group("auth") is None and not user_optional:
        raise InvalidInput(f"invalid {what} '{uri}': expected redshift://USER@HOST[:PORT]/DB "
                           "or postgres://USER@HOST[:PORT]/DB")
    auth = m.group("auth") or ""
    if ":" in auth:
        raise InvalidInput(_password_in_uri(what))
    user = unquote(auth)
    if not user and not user_optional:
        raise InvalidInput(f"invalid {what} '{uri}': the user is missing")
    scheme = m.group("scheme")
    port_text = m.group("port")
    if port_text in (None, ""):
        port = DEFAULT_PORTS[scheme]
    elif port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise InvalidInput(f"invalid {what} '{uri}': port '{port_text}' is not a number between 1 and 65535")
    dialect = "redshift" if scheme == "redshift" else "postgres"
    return dialect, user, m.group("host"), port, unquote(m.group("db"))


def _password_in_uri(what: str) -> str:
    return (f"{what} URI contains a password: passwords are never taken from the command line; "
            "use --password-file PATH, AWS Secrets Manager, PGPASSWORD or ~/.pgpass")


def _redact(uri: str | None) -> str:
    return re.sub(r"((?:redshift|postgres|postgresql)://[^:@/]*):[^@/]*@", r"\1:***@", uri or "")


def _client_fallback() -> tuple[str, str | None]:
    """Where libpq will find the password (it reads PGPASSWORD and ~/.pgpass itself)."""
    if os.environ.get("PGPASSWORD") is not None:
        return "env", None
    pgpass = Path(os.environ.get("PGPASSFILE") or "~/.pgpass").expanduser()
    if pgpass.is_file():
        return "pgpass", None
    return "none", None


def resolve_password(password_file: str | None, secret: SecretRef | None = None) -> tuple[str, str | None]:
    """(source, password or None): --password-file, else --secret-id, else PGPASSWORD / ~/.pgpass (libpq's)."""
    r = _resolve(password_file, secret, _client_fallback)
    return r.source, r.password


# The secret of the restore being run, for callers that build settings with
# ``settings_from_uri(uri, password_file, what)`` alone (targets/redshift.py):
# ``restore.restore_redshift`` sets it around the restore with ``secret_scope``.
_SCOPED_SECRET: ContextVar[SecretRef | None] = ContextVar("backupctl_pg_secret", default=None)


@contextmanager
def secret_scope(secret: SecretRef | None) -> Iterator[None]:
    """Within the block, ``settings_from_uri`` without an explicit secret reads the password from ``secret``."""
    token = _SCOPED_SECRET.set(secret)
    try:
        yield
    finally:
        _SCOPED_SECRET.reset(token)


def settings_from_uri(uri: str, password_file: str | None, what: str = "--to",
                      secret: SecretRef | None = None) -> PgSettings:
    secret = secret or _SCOPED_SECRET.get()
    dialect, user, host, port, db = parse_pg_uri(uri, what, user_optional=secret is not None)
    r = _resolve(password_file, secret, _client_fallback)
    user = user or (r.username if r.source == "secret" else None) or ""
    if not user:
        raise InvalidInput(f"{what}: no user (name it in the URI, USER@HOST"
                           + (f", or in the JSON of secret '{secret.secret_id}' as \"username\")"
                              if secret and r.source == "secret" else ")"))
    from_secret = secret if r.source == "secret" else None
    s = PgSettings(dialect=dialect, user=user, host=host, port=port, database=db, password_source=r.source,
                   password_file=str(Path(password_file).expanduser()) if password_file else None,
                   secret_id=from_secret.secret_id if from_secret else None,
                   secret_region=from_secret.region if from_secret else None)
    s.password = r.password
    return s


_AUTH_STATES = {"28000", "28P01", "42501"}
_NOT_FOUND_STATES = {"3F000", "42P01", "3D000"}
_CONNECTION_HINTS = ("could not translate host name", "connection refused", "timeout expired", "could not connect",
                     "server closed the connection", "no route to host", "network is unreachable",
                     "terminating connection", "connection is lost", "consuming input failed", "the connection is closed")


def translate(e: psycopg.Error, what: str, connecting: bool = False) -> BackupctlError:
    """A backupctl error (one line) for a psycopg error."""
    import psycopg

    state = getattr(e, "sqlstate", None)
    msg = " ".join(str(e).split()) or type(e).__name__
    low = msg.lower()
    # libpq reports a refused connection without a SQLSTATE: an unknown role or database only by its text
    unknown = re.search(r'fatal: +(role|database) "[^"]*" does not exist', low) if connecting else None
    if state in _AUTH_STATES or "authentication failed" in low or "no password supplied" in low \
            or "password authentication" in low or (unknown is not None and unknown.group(1) == "role"):
        return AuthError(f"{what}: access denied ({msg})")
    if state in _NOT_FOUND_STATES or unknown is not None:
        return NotFound(f"{what}: {msg}")
    if isinstance(e, psycopg.OperationalError) or state == "57P01" or any(h in low for h in _CONNECTION_HINTS):
        if connecting:
            return DataPathError(f"{what}: cannot reach the server ({msg})")
        return DataPathError(f"{what}: connection lost ({msg}); nothing was committed, the target is unchanged "
                             "(run the command again)")
    if isinstance(e, (psycopg.DataError, psycopg.IntegrityError)):
        return Conflict(f"{what}: the target refused the data ({msg}); nothing was committed")
    return DataPathError(f"{what}: {msg}; nothing was committed")


__all__ = ["PgSettings", "is_pg_uri", "parse_pg_uri", "quote_ident", "quote_literal", "secret_scope",
           "settings_from_uri", "translate"]
