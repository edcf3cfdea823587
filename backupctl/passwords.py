"""Where database passwords come from: the one code path of every database source and target.

A password never comes from argv. The sources, in order of precedence:

1. ``--password-file PATH``: the file's text without its trailing newline;
2. ``--secret-id ID`` (AWS Secrets Manager): a plain-string secret is the
   password; a JSON secret, as RDS and Redshift manage them
   (``{"username": ..., "password": ..., "host": ..., "port": ...}``), gives
   its ``password``, and its ``username`` when the URI names no user;
3. the client's own fallbacks, passed in by the caller: ``MYSQL_PWD`` then
   ``~/.my.cnf`` for MySQL (``mysql_conn``), ``PGPASSWORD`` then ``~/.pgpass``
   for PostgreSQL/Redshift (``pg_conn``).

The secret is read with a Secrets Manager client made by ``AwsContext`` (the
one home of AWS clients) in the region the caller names - or, for a full
ARN, the ARN's own region - with retries through ``backupctl.retry``. A
password is held in memory only: it is never part of a repr, an error
message, a task spec or a manifest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from backupctl.errors import AuthError, InvalidInput, NotFound

if TYPE_CHECKING:
    from backupctl.aws import AwsContext

_ARN_RE = re.compile(r"^arn:aws[a-z-]*:secretsmanager:(?P<region>[a-z0-9-]+):\d{12}:secret:.+$")


def read_password_file(password_file: str) -> str:
    """The file's text without its trailing newline; InvalidInput naming the file when unreadable."""
    try:
        text = Path(password_file).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise InvalidInput(f"--password-file {password_file} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read --password-file {password_file}: {e}") from e
    return text.rstrip("\r\n")


@dataclass(frozen=True)
class SecretRef:
    """A Secrets Manager secret to read a password from: its id (name or ARN) and region. Holds no secret."""

    secret_id: str
    region: str
    aws: AwsContext = field(repr=False, compare=False)

    @classmethod
    def make(cls, aws: AwsContext, secret_id: str | None, region: str) -> SecretRef | None:
        """The reference for ``--secret-id`` (None without one); an ARN's own region wins over ``region``."""
        if secret_id is None:
            return None
        if not secret_id.strip():
            raise InvalidInput("--secret-id is empty")
        m = _ARN_RE.match(secret_id)
        if m:
            from backupctl.aws import validate_region

            region = validate_region(m.group("region"), "region in the --secret-id ARN")
        return cls(secret_id, region, aws)


@dataclass(frozen=True)
class SecretCredentials:
    password: str = field(repr=False)
    username: str | None = None


def read_secret(ref: SecretRef) -> SecretCredentials:
    """The password (and username, if any) a secret holds; one-line errors that never quote its value.

    Missing secret, or one marked for deletion -> NotFound (exit 3); access denied or KMS
    decryption refused -> AuthError (6); a JSON secret without a string
    ``password``, or an empty secret -> InvalidInput (2). Transient errors
    are retried by the one retry policy.
    """
    import botocore.exceptions

    from backupctl.retry import policy_from_env

    what = f"secret '{ref.secret_id}' ({ref.region})"
    try:
        client = ref.aws.client("secretsmanager", ref.region)
        resp = policy_from_env().call(lambda: client.get_secret_value(SecretId=ref.secret_id),
                                      f"reading {what} from Secrets Manager")
    except botocore.exceptions.NoCredentialsError as e:
        raise AuthError(f"cannot read {what}: no AWS credentials found") from e
    except botocore.exceptions.ClientError as e:
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        msg = " ".join(str(err.get("Message", "")).split()) or code
        if code == "ResourceNotFoundException":
            raise NotFound(f"{what} does not exist in Secrets Manager") from e
        if code == "InvalidRequestException" and "deleted" in msg.lower():
            raise NotFound(f"{what} is marked for deletion in Secrets Manager") from e
        if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
                    "InvalidClientTokenId", "ExpiredTokenException", "DecryptionFailure"):
            raise AuthError(f"cannot read {what}: access denied ({code}: {msg})") from e
        if code in ("InvalidRequestException", "InvalidParameterException", "ValidationException"):
            raise InvalidInput(f"cannot read {what}: {msg}") from e
        raise
    if resp.get("SecretString") is not None:
        text = str(resp["SecretString"])
    elif resp.get("SecretBinary") is not None:
        try:
            text = bytes(resp["SecretBinary"]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInput(f"{what} is binary and not UTF-8 text: it cannot be a password") from e
    else:
        raise InvalidInput(f"{what} has no value")
    return _parse_secret(text, what)


def _parse_secret(text: str, what: str) -> SecretCredentials:
    """A JSON object secret gives ``password`` (and ``username``); any other text is the password itself."""
    doc: object = None
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None  # a password that merely starts with '{'
    if isinstance(doc, dict):
        password = doc.get("password")
        if not isinstance(password, str):
            raise InvalidInput(f"{what} is a JSON document without a string \"password\" field "
                               f"(fields: {', '.join(sorted(map(str, doc))) or 'none'})")
        username = doc.get("username")
        return SecretCredentials(password, username if isinstance(username, str) and username else None)
    if text == "":
        raise InvalidInput(f"{what} is empty")
    return SecretCredentials(text)


@dataclass(frozen=True)
class ResolvedPassword:
    """Where the password came from, the password (None: left to the client library) and a secret's username."""

    source: str  # "file" | "secret" | the fallback's source name | "none"
    password: str | None = field(repr=False)
    username: str | None = None


def resolve_password(
    password_file: str | None,
    secret: SecretRef | None,
    fallback: Callable[[], tuple[str, str | None]],
) -> ResolvedPassword:
    """--password-file, else --secret-id, else the client's ``fallback()`` (env, option file...)."""
    if password_file:
        return ResolvedPassword("file", read_password_file(password_file))
    if secret is not None:
        creds = read_secret(secret)
        return ResolvedPassword("secret", creds.password, creds.username)
    source, password = fallback()
    return ResolvedPassword(source, password)

