"""Reading a password file: the one code path for --password-file of every database target."""

from __future__ import annotations

from pathlib import Path

from backupctl.errors import InvalidInput


def read_password_file(password_file: str) -> str:
    """The file's text without its trailing newline; InvalidInput naming the file when unreadable."""
    try:
        text = Path(password_file).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise InvalidInput(f"--password-file {password_file} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read --password-file {password_file}: {e}") from e
    return text.rstrip("\r\n")
