"""Error types and the one table that maps them to exit codes.

Every failure a user can cause or meet is a ``BackupctlError`` subclass with a
one-line message; the CLI prints that line (a traceback only with ``--debug``)
and exits with the class's ``exit_code``. The codes are part of the CLI
contract and are listed in ``backupctl --help`` and the README.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_VERIFY_FAILED = 5
EXIT_AUTH = 6
EXIT_DATA_PATH = 7
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes:
  0    success
  1    internal error (a bug: please report it with --debug output)
  2    bad input: invalid option, region, URI or value
  3    not found: table, snapshot, bucket or repository does not exist
  4    conflict: target exists / is not empty, or a lock is held
  5    verification failed: counts, checksums or digests differ
  6    credentials missing or access denied
  7    data path failed after retries (throttling, server errors); nothing was dropped
  130  interrupted (Ctrl-C)"""


class BackupctlError(Exception):
    """Base class: a failure with a one-line, user-facing message."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(BackupctlError):
    """The user gave a value that cannot work (bad region, malformed URI...)."""

    exit_code = EXIT_USAGE


class NotFound(BackupctlError):
    """A table, snapshot, bucket or repository does not exist."""

    exit_code = EXIT_NOT_FOUND


class SnapshotNotFound(NotFound):
    pass


class Conflict(BackupctlError):
    """The target is in a state that the requested mode refuses."""

    exit_code = EXIT_CONFLICT


class VerificationFailed(BackupctlError):
    """Counts, checksums or content digests do not match."""

    exit_code = EXIT_VERIFY_FAILED


class AuthError(BackupctlError):
    """No credentials, expired credentials or access denied."""

    exit_code = EXIT_AUTH


class DataPathError(BackupctlError):
    """Reading or writing data failed after every retry. Never swallowed."""

    exit_code = EXIT_DATA_PATH


class FormatError(BackupctlError):
    """A repository object does not follow the repository format."""

    exit_code = EXIT_VERIFY_FAILED


class Interrupted(BackupctlError):
    exit_code = EXIT_INTERRUPTED
