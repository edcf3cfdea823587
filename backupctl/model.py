"""The data model shared by every source, target and engine.

* ``TaskSpec`` - a JSON-serialisable description of one unit of work (scan one
  segment, load one part). Same spec, same output keys: running it twice
  overwrites, never duplicates.
* ``PartResult`` - what a task wrote: key, rows, bytes, sha256, content digest.
* ``Manifest`` - the commit record of a snapshot (docs/REPOSITORY_FORMAT.md).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from backupctl import __version__
from backupctl.errors import FormatError, InvalidInput

T = TypeVar("T")

FORMAT_VERSION = "1.0"
FORMAT_MAJOR = 1

SNAPSHOT_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
PART_KEY_RE = re.compile(r"^data/part-\d{5}-\d{4}\.(json\.gz|parquet)$")

TaskSpec = dict[str, Any]


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def new_snapshot_id(now: datetime | None = None) -> str:
    """A snapshot id that sorts by creation time: ``20261127T013000Z-1a2b3c``."""
    now = now or utcnow()
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def newest_by_name(names: Iterable[str], second: Callable[[str], str], read: Callable[[str], T | None],
                   order: Callable[[T], Any]) -> T | None:
    """The newest of ``names`` (snapshot or drill ids, keys) whose ``read`` gives a value (None: skipped).

    Such names sort by creation time to the second only (``second(name)`` is that part): several made
    in one second sort at random among themselves. So every readable one of the newest second is read
    and ``order`` (e.g. created_at with microseconds, then the id) picks among them.
    """
    best: T | None = None
    best_second: str | None = None
    for name in sorted(names, reverse=True):
        if best_second is not None and second(name) != best_second:
            break
        value = read(name)
        if value is None:
            continue
        best_second = second(name)
        if best is None or order(value) > order(best):
            best = value
    return best


def check_snapshot_id(text: str) -> str:
    if not SNAPSHOT_ID_RE.match(text or ""):
        raise InvalidInput(f"invalid snapshot id '{text}': expected the form 20261127T013000Z-1a2b3c")
    return text


def check_part_key(key: str) -> str:
    """Refuse a part key that could point outside the snapshot's data/ folder."""
    if not isinstance(key, str) or not PART_KEY_RE.match(key) or ".." in key:
        raise FormatError(f"manifest names an invalid part key {key!r}")
    return key


MAX_COUNT = 2**63 - 1  # a row or byte count: S3 and the databases count in 64 bits


def check_count(value: Any, what: str) -> int:
    """A manifest's row or byte count: an integer from 0 to 2^63-1 (not a float, a string or a bool), else FormatError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise FormatError(f"manifest gives {what} {shown}: not a count (an integer from 0 to 2^63-1)")
    return value


def part_key(task_index: int, chunk: int, ext: str) -> str:
    return f"data/part-{task_index:05d}-{chunk:04d}.{ext}"


def source_key(kind: str, region: str, name: str) -> str:
    """One path segment naming a source: ``dynamodb.us-east-1.orders``.

    Characters outside ``[A-Za-z0-9_.-]`` are percent-encoded, so any MySQL
    identifier maps to a safe, reversible key.
    """
    safe = "".join(c if (c.isascii() and (c.isalnum() or c in "_.-")) else "".join(f"%{b:02X}" for b in c.encode()) for c in name)
    return f"{kind}.{region}.{safe}"


@dataclass
class PartResult:
    key: str
    rows: int
    bytes: int
    sha256: str
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartResult:
        key = check_part_key(d["key"])
        return cls(
            key=key,
            rows=check_count(d["rows"], f"part {key} rows"),
            bytes=check_count(d["bytes"], f"part {key} bytes"),
            sha256=str(d["sha256"]),
            digest=str(d["digest"]),
        )


def _sha256_or_none(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"schema_sha256 {str(value)[:80]!r} is not a SHA-256 in hex")
    return value


@dataclass
class Manifest:
    """The commit record of one snapshot; written last, read first."""

    id: str
    source: dict[str, Any]
    source_key: str
    mode: str
    created_at: str
    completed_at: str
    engine: str
    parts: list[PartResult]
    content_digest: str
    digest_algorithm: str
    parent_id: str | None = None
    window: dict[str, Any] | None = None
    read: dict[str, Any] = field(default_factory=dict)
    tool: dict[str, Any] = field(default_factory=lambda: {"name": "backupctl", "version": __version__})
    format_version: str = FORMAT_VERSION
    schema_sha256: str | None = None  # SHA-256 of schema.json's bytes (None: written before backupctl recorded it)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "id": self.id,
            "source": self.source,
            "source_key": self.source_key,
            "mode": self.mode,
            "parent_id": self.parent_id,
            "window": self.window,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "tool": self.tool,
            "engine": self.engine,
            "read": self.read,
            "parts": [p.to_dict() for p in self.parts],
            "totals": {"parts": len(self.parts), "rows": self.rows, "bytes": self.bytes},
            "content_digest": {"algorithm": self.digest_algorithm, "value": self.content_digest},
            **({"schema_sha256": self.schema_sha256} if self.schema_sha256 is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        if not isinstance(d, dict):
            raise FormatError(f"manifest is not a JSON object but {type(d).__name__}")
        try:
            version = str(d["format_version"])
            major = int(version.split(".")[0])
        except (KeyError, ValueError, AttributeError) as e:
            raise FormatError("manifest has no valid format_version") from e
        if major != FORMAT_MAJOR:
            raise FormatError(
                f"manifest format version {version} is not supported by this backupctl "
                f"(reads {FORMAT_MAJOR}.x); upgrade backupctl"
            )
        try:
            m = cls(
                id=check_snapshot_id(d["id"]),
                source=dict(d["source"]),
                source_key=str(d["source_key"]),
                mode=str(d["mode"]),
                created_at=str(d["created_at"]),
                completed_at=str(d["completed_at"]),
                engine=str(d.get("engine", "local")),
                parts=[PartResult.from_dict(p) for p in d["parts"]],
                content_digest=str(d["content_digest"]["value"]),
                digest_algorithm=str(d["content_digest"]["algorithm"]),
                parent_id=d.get("parent_id"),
                window=d.get("window"),
                read=dict(d.get("read") or {}),
                tool=dict(d.get("tool") or {}),
                format_version=version,
                schema_sha256=_sha256_or_none(d.get("schema_sha256")),
            )
        except (KeyError, TypeError, ValueError, OverflowError, InvalidInput) as e:
            raise FormatError(f"manifest is malformed: {e}") from e
        totals = d.get("totals") or {}
        try:
            bad = bool(totals) and (int(totals.get("rows", -1)) != m.rows or int(totals.get("parts", -1)) != len(m.parts))
        except (AttributeError, TypeError, ValueError, OverflowError):
            bad = True
        if bad:
            raise FormatError("manifest totals disagree with its parts")
        return m

    def summary(self) -> dict[str, Any]:
        return {
            "snapshot_id": self.id,
            "source": self.source,
            "mode": self.mode,
            "parent_id": self.parent_id,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "rows": self.rows,
            "bytes": self.bytes,
            "parts": len(self.parts),
            "digest": self.content_digest,
            "engine": self.engine,
        }


def cpu_count() -> int:
    return os.cpu_count() or 2
