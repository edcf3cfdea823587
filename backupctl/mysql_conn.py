"""MySQL connection settings: ``mysql://`` URIs, password sources, connecting, errors.

A MySQL endpoint is named by ``mysql://USER@HOST[:PORT]/DB``. The password
never comes from argv: a URI that embeds one (``mysql://u:pw@h/db``) is
refused. It comes, in this order (``backupctl.passwords``), from
``--password-file PATH``, an AWS Secrets Manager secret (``--secret-id``; a
JSON secret may also give the user, and the URI may then omit it:
``mysql://HOST[:PORT]/DB``), the ``MYSQL_PWD`` environment variable, or the
``password`` of the ``[client]`` group of ``~/.my.cnf``; with none of them
the password is empty.

``MySQLSettings`` holds the password in memory only (``repr=False``) so the
local engine's tasks can connect; ``to_dict()`` - what task specs, manifests
and ``--json`` output may carry - names where the password comes from (a file
path, a secret's id and region, or ``env``/``option-file``), never the
password itself.

``translate`` maps pymysql errors to backupctl's error types (and so to exit
codes): access denied -> AuthError (6), unknown database/table -> NotFound
(3), duplicate key -> Conflict (4), unreachable server -> DataPathError (7).
"""

from __future__ import annotations

import configparser
import os
import re
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
import pymysql
import pymysql.cursors
from pymysql.protocol import FieldDescriptorPacket

from backupctl.errors import (
    AuthError,
    BackupctlError,
    Conflict,
    DataPathError,
    FormatError,
    InvalidInput,
    NotFound,
)
from backupctl.formats.mysql_params import MAX_PACKET
from backupctl.formats.mysql_text import packet_starts
from backupctl.passwords import SecretRef
from backupctl.passwords import resolve_password as _resolve
from backupctl.retry import RetryPolicy

if TYPE_CHECKING:
    from backupctl.aws import AwsContext

DEFAULT_PORT = 3306
CONNECT_TIMEOUT_S = 10
# Connecting is retried briefly (a dropped connection, a server restarting);
# a wrong host should fail within seconds, not after the data path's 600 s.
CONNECT_POLICY = RetryPolicy(max_attempts=4, initial_s=0.2, max_backoff_s=2.0, deadline_s=30.0)

_URI_RE = re.compile(
    r"^mysql://(?:(?P<auth>[^@/]*)@)?(?P<host>\[[^\]]+\]|[^:/@]+)(?::(?P<port>[^/@]*))?/(?P<db>[^/?#]+)/?$"
)

# Server error codes (mysqld_error.h / errmsg.h).
ER_DBACCESS_DENIED = 1044
ER_ACCESS_DENIED = 1045
ER_BAD_DB = 1049
ER_TABLEACCESS_DENIED = 1142
ER_NO_SUCH_TABLE = 1146
ER_DUP_ENTRY = 1062
# LOAD DATA LOCAL refused: MySQL < 8 / MySQL 8 / MariaDB
ER_LOCAL_INFILE_DISABLED = (1148, 3948, 4166)
ER_PARSE_ERROR = 1064
# Names the server refuses: too long (1059), not a valid database (1102) or table (1103) name.
ER_BAD_NAMES = (1059, 1102, 1103)
# A value the server refuses to store as it is, raised by a strict-mode INSERT (LOAD DATA LOCAL reports
# the same as warnings): NULL into NOT NULL (1048), out of range (1264), truncated (1265), incorrect
# date/time (1292), incorrect string value (1366), too long (1406), CHECK constraint (MySQL 3819,
# MariaDB 4025).
ER_VALUE_REFUSED = (1048, 1264, 1265, 1292, 1366, 1406, 3819, 4025)
CR_CONN_HOST_ERROR = 2003
CR_UNKNOWN_HOST = 2005
CR_CONNECTION_GONE = (2006, 2013)  # server has gone away, lost during query


def quote_ident(name: str) -> str:
    """A backtick-quoted identifier: the only way a name ever enters SQL text.

    Backticks are doubled, and so is ``%``: every statement here is executed
    with a parameter tuple (possibly empty), so pymysql %-formats the text and
    ``%%`` becomes the ``%`` of the name again.
    """
    if "\x00" in name:
        raise InvalidInput("identifiers cannot contain NUL characters")
    return "`" + name.replace("`", "``").replace("%", "%%") + "`"


def is_mysql_uri(text: str | None) -> bool:
    return bool(text) and str(text).startswith("mysql://")


@dataclass
class MySQLSettings:
    """How to reach one MySQL database. The password lives in memory only."""

    user: str
    host: str
    port: int
    database: str
    password_source: str = "none"  # "file" | "secret" | "env" | "option-file" | "none"
    password_file: str | None = None
    secret_id: str | None = None
    secret_region: str | None = None
    password: str = field(default="", repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """What may be written anywhere: no password, at most the path of a password file or a secret's id."""
        return {
            "user": self.user,
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "password_source": self.password_source,
            "password_file": self.password_file,
            "secret_id": self.secret_id,
            "secret_region": self.secret_region,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], aws: AwsContext | None = None) -> MySQLSettings:
        """Rebuild settings in another process, re-reading the password from its source.

        ``aws`` (the task spec's) reaches Secrets Manager when the password comes from a secret.
        """
        s = cls(
            user=str(d["user"]), host=str(d["host"]), port=int(d["port"]), database=str(d["database"]),
            password_source=str(d.get("password_source") or "none"), password_file=d.get("password_file"),
            secret_id=d.get("secret_id"), secret_region=d.get("secret_region"),
        )
        secret = None
        if s.password_source == "secret" and s.secret_id:
            from backupctl.aws import AwsContext

            secret = SecretRef(s.secret_id, str(s.secret_region), aws or AwsContext())
        s.password = resolve_password(s.password_file, secret)[1]
        return s

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> MySQLSettings:
        """The settings of a task spec (its ``mysql`` and ``aws`` entries), password re-read from its source."""
        from backupctl.aws import AwsContext

        return cls.from_dict(spec["mysql"], AwsContext.from_dict(spec.get("aws")))

    def describe(self) -> str:
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"

    def with_database(self, database: str) -> MySQLSettings:
        s = MySQLSettings(self.user, self.host, self.port, database, self.password_source, self.password_file,
                          self.secret_id, self.secret_region)
        s.password = self.password
        return s

    def connect(self, *, database: bool = True, read_timeout: int | None = None) -> pymysql.connections.Connection:
        """A new connection (utf8mb4, session time zone UTC), errors translated."""

        def attempt() -> pymysql.connections.Connection:
            try:
                conn = SharedTLSConnection(
                    host=self.host.strip("[]"),
                    port=self.port,
                    user=self.user,
                    password=self.password,
                    database=self.database if database else None,
                    charset="utf8mb4",
                    autocommit=True,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    read_timeout=read_timeout,
                    init_command="SET time_zone = '+00:00'",
                )
            except pymysql.MySQLError as e:
                raise translate(e, f"connecting to {self.describe()}") from e
            return conn

        return CONNECT_POLICY.call(attempt, f"connecting to {self.describe()}")

    def connect_load(self) -> LoadConnection:
        """A pymysql connection for ``load_data`` (LOAD DATA LOCAL from memory), otherwise as ``connect``."""

        def attempt() -> LoadConnection:
            try:
                return LoadConnection(
                    host=self.host.strip("[]"),
                    port=self.port,
                    user=self.user,
                    password=self.password,
                    database=self.database,
                    charset="utf8mb4",
                    autocommit=True,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    init_command="SET time_zone = '+00:00'",
                    local_infile=True,
                )
            except pymysql.MySQLError as e:
                raise translate(e, f"connecting to {self.describe()}") from e

        return CONNECT_POLICY.call(attempt, f"connecting to {self.describe()}")


INFILE_NAME = "backupctl-load-data"  # the only "file" a LOAD DATA LOCAL of ours names


class _InMemoryLoadResult(pymysql.connections.MySQLResult):
    """A result whose LOAD DATA LOCAL request is answered from memory, never from the file system.

    pymysql would open whatever file the server names; here the server gets
    the connection's pending bytes only when it names ``INFILE_NAME``, and an
    empty file otherwise, so a server cannot read files of this machine.
    """

    def _read_load_local_packet(self, first_packet: Any) -> None:
        conn = self.connection
        load_packet = pymysql.protocol.LoadLocalPacketWrapper(first_packet)
        data = getattr(conn, "infile_data", None)
        conn.infile_data = None
        try:
            if data is not None and load_packet.filename in (INFILE_NAME, INFILE_NAME.encode()):
                view = memoryview(data)
                step = max(16 << 10, min(conn.max_allowed_packet - 1024, 4 << 20))
                for i in range(0, len(view), step):
                    conn.write_packet(view[i:i + step])
        finally:
            conn.write_packet(b"")
            ok_packet = conn._read_packet()
        if not ok_packet.is_ok_packet():
            raise pymysql.err.OperationalError(2014, "Commands Out of Sync")
        self._read_ok_packet(ok_packet)


_PREFERRED_TLS: Any = None
_PREFERRED_TLS_LOCK = threading.Lock()


def _preferred_tls(make: Callable[[], Any]) -> Any:
    """The process's TLS context for PREFERRED mode, made by ``make`` the first time it is needed."""
    global _PREFERRED_TLS
    with _PREFERRED_TLS_LOCK:
        if _PREFERRED_TLS is None:
            _PREFERRED_TLS = make()
        return _PREFERRED_TLS


def _make_preferred_tls() -> Any:
    """PyMySQL's own PREFERRED-mode context (it reads nothing of the connection but the options)."""
    bare = pymysql.connections.Connection.__new__(pymysql.connections.Connection)
    return pymysql.connections.Connection._create_ssl_ctx(bare, {})


class _PreferredTLS:
    """Stands for the PREFERRED-mode context until a server offers TLS: pymysql only calls its
    ``wrap_socket``, and only then is the shared context made."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make

    def wrap_socket(self, sock: Any, **kw: Any) -> Any:
        return _preferred_tls(self.make).wrap_socket(sock, **kw)


class SharedTLSConnection(pymysql.connections.Connection):
    """A pymysql connection whose TLS context for PREFERRED mode (no SSL options: TLS when the server
    offers it, certificates not verified) is made once per process, and only once a server offers TLS.

    PyMySQL builds that context in every ``__init__`` — loading the system's CA bundle, which
    CERT_NONE never reads — at ~17.5 ms of CPU a connection, before it knows whether the server
    offers TLS (measured: 17.5 ms vs 0.3 ms with TLS disabled). A 13-part restore of 1M rows opens 28
    (counted); a command that meets only servers without TLS never makes it (~17 ms before a
    snapshot could start reading). Explicit SSL options still get a context of their own.
    """

    def _create_ssl_ctx(self, sslp: Any) -> Any:
        if sslp != {}:
            return super()._create_ssl_ctx(sslp)
        if _PREFERRED_TLS is not None:
            return _PREFERRED_TLS
        return _PreferredTLS(_make_preferred_tls)


class LoadConnection(SharedTLSConnection):
    """A pymysql connection that can ``LOAD DATA LOCAL INFILE`` bytes held in memory (see ``load_data``)."""

    infile_data: bytes | None = None

    def _read_query_result(self, unbuffered: bool = False) -> int:
        self._result = None
        result = _InMemoryLoadResult(self)
        if unbuffered:
            result.init_unbuffered_query()
        else:
            result.read()
        self._result = result
        if result.server_status is not None:
            self.server_status = result.server_status
        return int(result.affected_rows or 0)


def load_data(conn: LoadConnection, sql: str, data: bytes) -> tuple[int, int]:
    """Run ``LOAD DATA LOCAL INFILE 'INFILE_NAME' ...`` (``sql``) with ``data`` as the file: (rows, warnings)."""
    conn.infile_data = data
    try:
        with conn.cursor() as cur:
            rows = cur.execute(sql, ())
        return int(rows), int(getattr(conn._result, "warning_count", 0) or 0)
    finally:
        conn.infile_data = None


COM_STMT_PREPARE = 0x16
COM_STMT_EXECUTE = 0x17


def stmt_prepare(conn: LoadConnection, sql: str) -> tuple[int, int]:
    """``COM_STMT_PREPARE`` of ``sql`` on a pymysql connection: (statement id, parameter count).

    pymysql speaks the text protocol only; a restore's prepared INSERTs (``formats.mysql_params``)
    need just these two commands of the binary one, its key-range read-backs (``RawRows``) a third.
    """
    stmt_id, params, _fields = _prepare(conn, sql)
    return stmt_id, params


def _prepare(conn: Any, sql: str) -> tuple[int, int, list[Any]]:
    """(statement id, parameter count, result column definitions) of ``COM_STMT_PREPARE``. pymysql
    does not ask for DEPRECATE_EOF, so each list of definitions ends with an EOF packet."""
    conn._execute_command(COM_STMT_PREPARE, sql)
    first = conn._read_packet()
    stmt_id, columns, params = struct.unpack_from("<IHH", first.get_all_data(), 1)
    if params:
        for _ in range(params + 1):
            conn._read_packet()
    fields = []
    if columns:
        fields = [conn._read_packet(FieldDescriptorPacket) for _ in range(columns)]
        conn._read_packet()
    return stmt_id, params, fields


COM_STMT_CLOSE = 0x19


def declared_fields(conn: Any, sql: str, params: Any = ()) -> list[tuple[int, int]]:
    """Each result column's declared (type code, length) of ``sql`` (%-formatted with ``params``), from
    a ``COM_STMT_PREPARE`` whose statement is closed again (``COM_STMT_CLOSE`` has no reply)."""
    stmt_id, _params, fields = _prepare(conn, _statement(conn, sql, params))
    conn._execute_command(COM_STMT_CLOSE, struct.pack("<I", stmt_id))
    return [(f.type_code, f.length) for f in fields]


PIPELINE_DEPTH = 32  # statements written ahead of their replies (the replies stay a few KiB)


def stmt_execute(conn: LoadConnection, payloads: list[bytes]) -> tuple[int, int]:
    """``COM_STMT_EXECUTE`` of every payload (built by ``formats.mysql_params``), pipelined: up to
    ``PIPELINE_DEPTH`` are written ahead of their replies (the server runs commands in order and its
    replies wait in the socket), so the server never waits for Python between statements.
    (rows affected, warnings) summed; the first error is raised once every reply is in."""
    rows = warnings = 0
    first: BaseException | None = None
    seq: deque[int] = deque()  # each pending reply's packet number (1 unless its command took several packets)

    def reply() -> None:
        nonlocal rows, warnings, first
        conn._next_seq_id = seq.popleft()
        try:
            rows += int(conn._read_query_result() or 0)
            warnings += int(getattr(conn._result, "warning_count", 0) or 0)
        except pymysql.err.OperationalError as e:
            if e.args and e.args[0] in CR_CONNECTION_GONE:  # no more replies will come
                raise
            first = first or e
        except pymysql.MySQLError as e:
            first = first or e

    for i, payload in enumerate(payloads):
        if i >= PIPELINE_DEPTH:
            reply()
        conn._execute_command(COM_STMT_EXECUTE, payload)
        seq.append(conn._next_seq_id)
    for _ in range(min(len(payloads), PIPELINE_DEPTH)):
        reply()
    if first is not None:
        raise first
    return rows, warnings


def _statement(conn: pymysql.connections.Connection, sql: str, params: Any) -> str:
    """``sql`` with its parameters as literals (pymysql's escaping)."""
    with conn.cursor() as cur:
        return str(cur.mogrify(sql, tuple(params)))


def prepare_select(conn: pymysql.connections.Connection, sql: str, params: Any) -> tuple[int, list[tuple[int, int]]]:
    """``COM_STMT_PREPARE`` of a SELECT, its parameters inlined as literals: (statement id, each result
    column's declared (type code, length))."""
    stmt_id, _params, fields = _prepare(conn, _statement(conn, sql, params))
    return stmt_id, [(f.type_code, f.length) for f in fields]


def execute_select(conn: pymysql.connections.Connection, stmt_id: int) -> int:
    """``COM_STMT_EXECUTE`` of a prepared SELECT without a cursor, its column definitions read (an error
    packet raises): the packet number of the first row."""
    conn._execute_command(COM_STMT_EXECUTE, struct.pack("<IBI", stmt_id, 0, 1))
    ncols = conn._read_packet().read_length_encoded_integer()
    for _ in range(ncols + 1):  # definitions, then EOF
        conn._read_packet()
    return int(conn._next_seq_id)


class RawRows:
    """A prepared SELECT's binary row packets as the raw bytes on the socket (pymysql, unbuffered).

    ``query`` prepares the statement (``COM_STMT_PREPARE``, its parameters inlined as literals) and
    returns each column's declared (type code, length); ``execute`` runs it and reads the column
    definitions; ``matches(expected)`` reads exactly as many bytes as ``expected`` holds (never more:
    ``read1`` returns what has arrived) and compares; ``ends(seq)`` reads the packet after the rows and
    says whether it ends the result. After a mismatch the connection is mid-result: close it.
    """

    def __init__(self, conn: pymysql.connections.Connection) -> None:
        self.conn = conn
        self.stmt_id = 0

    def query(self, sql: str, params: Any) -> list[tuple[int, int]]:
        """Prepare ``sql`` (%-formatted with ``params``): each result column's (type code, length)."""
        self.stmt_id, fields = prepare_select(self.conn, sql, params)
        return fields

    def execute(self) -> int:
        """Run the prepared statement (no cursor): the packet number of the first row."""
        return execute_select(self.conn, self.stmt_id)

    def matches(self, expected: bytes) -> bool:
        rfile = self.conn._rfile
        pos, n = 0, len(expected)
        while pos < n:
            chunk = rfile.read1(min(1 << 20, n - pos))
            if not chunk or chunk != expected[pos:pos + len(chunk)]:
                return False
            pos += len(chunk)
        return True

    def ends(self, seq: int) -> bool:
        self.conn._next_seq_id = seq
        return bool(self.conn._read_packet().is_eof_packet())

    def close(self) -> None:
        """Close the connection, mid-result or not (the prepared statement's rows were read past
        pymysql, which holds no result for them)."""
        try:
            self.conn.close()
        except (pymysql.MySQLError, OSError):
            pass


class TextRows:
    """A SELECT's text-protocol row packets read raw off a pymysql socket, many rows at a time.

    ``query`` sends the statement (%-formatted with its parameters) and reads its column
    definitions; ``chunks()`` yields ``(data, starts)``: bytes holding whole row packets (about
    ``CHUNK`` of them) and the offsets of their 4-byte headers (numpy int64), for
    ``formats.mysql_text`` to split into columns without a Python object per value (docs/adr/0022).
    A row longer than one packet comes as a chunk of its own, its payloads joined behind one header
    whose length says ``MAX_PACKET`` (the row ends with the chunk).
    An error packet raises pymysql's error; the result's EOF packet ends the chunks and leaves the
    connection ready for its next statement.
    """

    CHUNK = 1 << 20
    READ = 1 << 16

    def __init__(self, conn: pymysql.connections.Connection) -> None:
        self.conn = conn
        self._buf = bytearray()

    def query(self, sql: str, params: Any) -> int:
        """Run ``sql`` (%-formatted with ``params``): the number of columns of its result."""
        self.conn.query(_statement(self.conn, sql, params), unbuffered=True)
        return len(self.conn._result.fields or ())

    def _more(self, need: int = 0) -> None:
        """Append what has arrived (up to ``READ`` bytes), or ``need`` bytes when that is more."""
        rfile = self.conn._rfile
        # read1 allocates the size it is asked for: READ (64 KiB) stays below malloc's mmap threshold
        got = rfile.read(need) if need > self.READ else rfile.read1(self.READ)
        if not got:
            raise pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query")
        self._buf += got

    def _finish(self) -> None:
        result = self.conn._result
        if result is not None:
            result.unbuffered_active = False
            result.has_next = False
        self.conn._result = None

    def abandon(self) -> None:
        """Leave the result unread: the connection is mid-result and must be closed, not reused
        (pymysql would otherwise read the rest when it collects the result)."""
        if self.conn._result is not None:
            self.conn._result.unbuffered_active = False

    def _long_row(self) -> bytes:
        """The row whose first (full) packet starts the buffer, behind one header; consumes it."""
        payloads, pos = [], 0
        while True:
            while len(self._buf) < pos + 4:
                self._more(pos + 4 - len(self._buf))
            n = self._length(self._buf, pos)
            while len(self._buf) < pos + 4 + n:
                self._more(pos + 4 + n - len(self._buf))
            payloads.append(bytes(self._buf[pos + 4:pos + 4 + n]))
            pos += 4 + n
            if n < MAX_PACKET:
                del self._buf[:pos]
                return b"\xff\xff\xff\0" + b"".join(payloads)  # length MAX_PACKET: to the end of the chunk

    @staticmethod
    def _length(buf: bytearray, pos: int) -> int:
        """The payload length in the packet header at ``pos``."""
        return buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16

    def _kind(self, buf: bytearray, pos: int) -> str | None:
        """What the (whole) packet at ``pos`` is when it is not a row: "long", "error" or "eof"."""
        n = self._length(buf, pos)
        first = buf[pos + 4] if n else 0
        if n == MAX_PACKET:
            return "long"
        if first == 0xFF:
            return "error"
        return "eof" if first == 0xFE and n < 9 else None

    @staticmethod
    def _first_not_row(buf: bytearray, starts: list[int]) -> int:
        """The index of the first packet of ``starts`` that is not a row (``_kind``), else len(starts)."""
        view = np.frombuffer(buf, dtype=np.uint8)
        at = np.array(starts, dtype=np.int64)
        n = view[at] | view[at + 1].astype(np.int64) << 8 | view[at + 2].astype(np.int64) << 16
        first = np.where(n > 0, view[np.minimum(at + 4, len(view) - 1)], 0)
        odd = np.flatnonzero((n == MAX_PACKET) | (first == 0xFF) | ((first == 0xFE) & (n < 9)))
        return int(odd[0]) if len(odd) else len(starts)

    def chunks(self) -> Iterator[tuple[bytes, np.ndarray]]:
        buf = self._buf
        starts: list[int] = []
        pos = 0
        while True:
            # Every whole packet from pos (one step per row, in C where built). Whether one is not a row
            # is checked for all of them at once, when a chunk is full or the last one may end the result.
            pos = packet_starts(buf, pos, starts)
            if pos > len(buf):  # the last packet has not fully arrived
                pos = starts.pop()
            if not starts or (pos < self.CHUNK and self._kind(buf, starts[-1]) is None):
                missing = 0
                if len(buf) - pos >= 4:
                    missing = pos + 4 + self._length(buf, pos) - len(buf)
                self._more(missing)
                continue
            k = self._first_not_row(buf, starts)
            odd = k < len(starts)  # a whole packet that is not a row starts at starts[k]
            if odd:
                pos = starts[k]
            if k:
                data = bytes(buf[:pos])
                rows = np.array(starts[:k], dtype=np.int64)
                del buf[:pos]
                yield data, rows
            starts, pos = [], 0
            if odd:
                kind = self._kind(buf, 0)
                if kind == "eof":
                    del buf[:]
                    self._finish()
                    return
                if kind == "error":
                    n = self._length(buf, 0)
                    self._finish()
                    pymysql.err.raise_mysql_exception(bytes(buf[4:4 + n]))
                if kind == "long":
                    yield self._long_row(), np.zeros(1, dtype=np.int64)


class PreparedRows(TextRows):
    """A prepared SELECT's binary row packets (``COM_STMT_EXECUTE``, no cursor), read raw like ``TextRows``.

    The framing is the text protocol's (a packet a row, long rows split at ``MAX_PACKET``, an EOF or
    error packet after the rows); a binary row starts with 0x00, which no EOF or error packet does. The
    server sends integers, doubles, dates and times as they are stored instead of formatting them as
    text: about half its CPU for a bulk read (docs/adr/0025). ``prepare`` prepares the statement (its
    parameters inlined as literals) and returns each result column's declared (type code, length);
    ``execute`` runs it; the statement is closed when its result ends.
    """

    def __init__(self, conn: pymysql.connections.Connection) -> None:
        super().__init__(conn)
        self.stmt_id: int | None = None

    def prepare(self, sql: str, params: Any) -> list[tuple[int, int]]:
        self.stmt_id, fields = prepare_select(self.conn, sql, params)
        return fields

    def execute(self) -> None:
        assert self.stmt_id is not None
        try:
            execute_select(self.conn, self.stmt_id)
        except BaseException:
            self.close_statement()
            raise

    def close_statement(self) -> None:
        """``COM_STMT_CLOSE`` (no reply) of the prepared statement, once."""
        if self.stmt_id is not None:
            stmt_id, self.stmt_id = self.stmt_id, None
            self.conn._execute_command(COM_STMT_CLOSE, struct.pack("<I", stmt_id))

    def _finish(self) -> None:
        super()._finish()
        self.close_statement()


def parse_mysql_uri(uri: str, what: str = "--source", user_optional: bool = False) -> tuple[str, str, int, str]:
    """(user, host, port, database) of ``mysql://USER@HOST[:PORT]/DB``; refuses embedded passwords.

    With ``user_optional`` (a --secret-id may name the user) ``mysql://HOST[:PORT]/DB`` gives user "".
    """
    if len(uri or "") > MAX_URI:
        raise InvalidInput(f"invalid {what}: {len(uri):,} characters is too long for mysql://USER@HOST[:PORT]/DB")
    m = _URI_RE.match(uri or "")
    if not m:
        if (uri or "").startswith("mysql://") and "@" in uri.split("/", 3)[2] and ":" in uri.split("/", 3)[2].split("@")[0]:
            raise InvalidInput(_password_in_uri(what))
        raise InvalidInput(f"invalid {what} '{_redact(uri)}': expected mysql://USER@HOST[:PORT]/DB")
    if m.group("auth") is None and not user_optional:
        raise InvalidInput(f"invalid {what} '{uri}': expected mysql://USER@HOST[:PORT]/DB")
    auth = m.group("auth") or ""
    if ":" in auth:
        raise InvalidInput(_password_in_uri(what))
    user = unquote(auth)
    if not user and not user_optional:
        raise InvalidInput(f"invalid {what} '{uri}': the user is missing (mysql://USER@HOST[:PORT]/DB)")
    port_text = m.group("port")
    if port_text in (None, ""):
        port = DEFAULT_PORT
    elif port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise InvalidInput(f"invalid {what} '{uri}': port '{port_text}' is not a number between 1 and 65535")
    return user, m.group("host"), port, check_identifier(unquote(m.group("db")), f"database of {what}")


MAX_URI = 1024
MAX_IDENTIFIER = 64  # MySQL's limit for database and table names


def check_identifier(name: str, what: str) -> str:
    """A database or table name MySQL can hold: 1 to 64 characters, no NUL; else InvalidInput (exit 2)."""
    if not name or len(name) > MAX_IDENTIFIER or "\x00" in name:
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise InvalidInput(f"invalid {what} '{shown}': a MySQL name is 1 to {MAX_IDENTIFIER} characters")
    return name


def _password_in_uri(what: str) -> str:
    return (
        f"{what} URI contains a password: passwords are never taken from the command line; "
        "use --password-file PATH, AWS Secrets Manager, MYSQL_PWD or ~/.my.cnf"
    )


def _redact(uri: str | None) -> str:
    return re.sub(r"(mysql://[^:@/]*):[^@/]*@", r"\1:***@", uri or "")


def _option_file_password() -> str | None:
    """``password`` of the ``[client]`` group of ~/.my.cnf (only the password is taken from it)."""
    path = Path("~/.my.cnf").expanduser()
    if not path.is_file():
        return None
    parser = configparser.RawConfigParser(allow_no_value=True, strict=False, comment_prefixes=("#", ";", "!"))
    try:
        parser.read(path, encoding="utf-8")
    # configparser's messages quote the offending lines - which may hold the password: name line numbers only.
    except configparser.MissingSectionHeaderError as e:
        raise InvalidInput(f"cannot read {path}: line {e.lineno} is not under a [group] header "
                           "(the password belongs under [client])") from None
    except configparser.ParsingError as e:
        lines = ", ".join(str(n) for n, _ in e.errors)
        raise InvalidInput(f"cannot read {path}: cannot parse line(s) {lines}") from None
    except (configparser.Error, AttributeError) as e:  # AttributeError: configparser on a valueless key + indent
        raise InvalidInput(f"cannot read {path}: not an option file ({type(e).__name__})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read {path}: {e}") from e
    if not parser.has_option("client", "password"):
        return None
    value = parser.get("client", "password") or ""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return value


def _client_fallback() -> tuple[str, str | None]:
    env = os.environ.get("MYSQL_PWD")
    if env is not None:
        return "env", env
    cnf = _option_file_password()
    if cnf is not None:
        return "option-file", cnf
    return "none", ""


def resolve_password(password_file: str | None, secret: SecretRef | None = None) -> tuple[str, str]:
    """(source, password): --password-file, else --secret-id, else MYSQL_PWD, else ~/.my.cnf, else empty."""
    r = _resolve(password_file, secret, _client_fallback)
    return r.source, r.password or ""


def make_settings(user: str, host: str, port: int, database: str, password_file: str | None,
                  secret: SecretRef | None = None, what: str = "--source",
                  default_user: str | None = None) -> MySQLSettings:
    """Settings with the password from its source (see ``backupctl.passwords``).

    The user is ``user``, else a JSON secret's ``username`` (when the secret is
    the password source), else ``default_user`` (e.g. an RDS instance's master
    user); none of them -> InvalidInput.
    """
    r = _resolve(password_file, secret, _client_fallback)
    user = user or r.username or default_user or ""
    if not user:
        raise InvalidInput(f"{what}: no user (name it in the URI, mysql://USER@HOST[:PORT]/DB"
                           + (f", or in the JSON of secret '{secret.secret_id}' as \"username\")"
                              if secret and r.source == "secret" else ")"))
    s = MySQLSettings(user=user, host=host, port=port, database=database, password_source=r.source,
                      password_file=str(Path(password_file).expanduser()) if password_file else None,
                      secret_id=secret.secret_id if r.source == "secret" and secret else None,
                      secret_region=secret.region if r.source == "secret" and secret else None)
    s.password = r.password or ""
    return s


def settings_from_uri(uri: str, password_file: str | None, what: str = "--source",
                      secret: SecretRef | None = None) -> MySQLSettings:
    user, host, port, db = parse_mysql_uri(uri, what, user_optional=secret is not None)
    return make_settings(user, host, port, db, password_file, secret, what)


def error_code(e: BaseException) -> int | None:
    if isinstance(e, pymysql.MySQLError) and e.args and isinstance(e.args[0], int):
        return int(e.args[0])
    return None


def value_refused(what: str, detail: str) -> FormatError:
    """The one error for values the server did not store as they are (an INSERT's error, LOAD DATA's
    warnings)."""
    return FormatError(f"{what}: the server did not take every value as it is ({detail})")


def translate(e: pymysql.MySQLError, what: str) -> BaseException:
    """A backupctl error for a pymysql error, or ``e`` itself when it is not a known kind."""
    code = error_code(e)
    msg = str(e.args[1]) if len(e.args) > 1 else str(e)
    if code in (ER_ACCESS_DENIED, ER_DBACCESS_DENIED, ER_TABLEACCESS_DENIED):
        return AuthError(f"{what}: access denied ({code}: {msg})")
    if code in (ER_BAD_DB, ER_NO_SUCH_TABLE):
        return NotFound(f"{what}: {msg}")
    if code in ER_BAD_NAMES:
        return InvalidInput(f"{what}: {msg}")
    if code == ER_DUP_ENTRY:
        return Conflict(f"{what}: {msg}")
    if code in ER_LOCAL_INFILE_DISABLED:
        return InvalidInput(f"{what}: the server refuses LOAD DATA LOCAL INFILE ({code}: {msg}); "
                            "use --load-method insert")
    if code in ER_VALUE_REFUSED:
        return value_refused(what, f"{code}: {msg}")
    if code in (CR_CONN_HOST_ERROR, CR_UNKNOWN_HOST):
        return DataPathError(f"{what}: cannot reach the server ({msg})")
    return e


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise a pymysql error from inside as its backupctl error (``translate``), others as they are."""
    try:
        yield
    except pymysql.MySQLError as e:
        t = translate(e, what)
        if isinstance(t, BackupctlError):
            raise t from e
        raise


def run_sql(conn: pymysql.connections.Connection, sql: str, params: Any = None, what: str = "querying") -> list[Any]:
    """Execute one statement (always %-formatted, see quote_ident) and return its rows, errors translated."""
    with translated(what), conn.cursor() as cur:
        cur.execute(sql, tuple(params) if params is not None else ())
        return list(cur.fetchall())


__all__ = [
    "MySQLSettings",
    "make_settings",
    "parse_mysql_uri",
    "quote_ident",
    "resolve_password",
    "run_sql",
    "settings_from_uri",
    "translate",
]
