"""DynamoDB items <-> DYNAMODB_JSON export lines, and the content digest.

Items are handled in the low-level typed form botocore uses
(``{"Id": {"N": "103"}, "Blob": {"B": b"..."}}``). A part is gzip text of one
line per item, exactly DynamoDB's own export format::

    {"Item":{"Id":{"N":"103"},"Tags":{"SS":["a","b"]}}}

binary values (B, BS) are base64 in the line and ``bytes`` in memory.

The content digest is order-independent: every item is put in a canonical
form (sorted attribute names, numbers normalised, sets sorted), hashed with
SHA-256, and the hashes are added modulo 2**256. Two multisets of items have
the same digest exactly when they hold the same items (up to hash collisions),
whatever order a scan returned them in, so a live table, a snapshot and a
restored copy can be compared without sorting.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from backupctl.errors import FormatError

DIGEST_ALGORITHM = "multiset-sha256-v1"
_MOD = 1 << 256

Item = dict[str, dict[str, Any]]


# -- line codec ---------------------------------------------------------------


def _default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot encode {type(obj).__name__}")


def encode_line(item: Item) -> bytes:
    """One export line (with trailing newline) for a typed item."""
    return orjson.dumps({"Item": item}, default=_default) + b"\n"


def encode_lines(items: Iterable[Item]) -> bytes:
    return b"".join(orjson.dumps({"Item": it}, default=_default) + b"\n" for it in items)


def _unb64(value: Any) -> Any:
    if isinstance(value, dict):
        ((t, v),) = value.items()
        if t == "B":
            return {"B": base64.b64decode(v, validate=True)}
        if t == "BS":
            return {"BS": [base64.b64decode(x, validate=True) for x in v]}
        if t == "M":
            return {"M": {k: _unb64(x) for k, x in v.items()}}
        if t == "L":
            return {"L": [_unb64(x) for x in v]}
        return value
    raise FormatError(f"attribute value is not a typed object: {value!r:.60}")


def decode_line(line: bytes | str) -> Item:
    """Parse one export line into a typed item (binary values as bytes)."""
    try:
        doc = orjson.loads(line)
        item = doc["Item"]
        if not isinstance(item, dict):
            raise TypeError("Item is not an object")
        return {k: _unb64(v) for k, v in item.items()}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise FormatError(f"not a DYNAMODB_JSON line: {e}") from e


def iter_lines(data: bytes) -> Iterator[bytes]:
    """The non-empty lines of an (uncompressed) part."""
    for line in data.split(b"\n"):
        if line:
            yield line


# -- canonical form and digest --------------------------------------------------


def canonical_number(text: str) -> str:
    """A number string in one spelling: ``1``, ``1.0`` and ``10E-1`` all give ``1e0``."""
    try:
        d = Decimal(text)
    except InvalidOperation as e:
        raise FormatError(f"invalid number {text!r}") from e
    if not d.is_finite():
        raise FormatError(f"invalid number {text!r}")
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    ds = "".join(map(str, digits)).lstrip("0")
    if not ds:
        return "0"
    stripped = ds.rstrip("0")
    exponent += len(ds) - len(stripped)
    return f"{'-' if sign else ''}{stripped}e{exponent}"


def _canon(value: dict[str, Any]) -> Any:
    ((t, v),) = value.items()
    if t == "S" or t == "BOOL" or t == "NULL":
        return [t, v]
    if t == "N":
        return ["N", canonical_number(v)]
    if t == "B":
        return ["B", base64.b64encode(bytes(v)).decode()]
    if t == "SS":
        return ["SS", sorted(v)]
    if t == "NS":
        return ["NS", sorted(canonical_number(x) for x in v)]
    if t == "BS":
        return ["BS", [base64.b64encode(x).decode() for x in sorted(bytes(x) for x in v)]]
    if t == "M":
        return ["M", {k: _canon(x) for k, x in v.items()}]
    if t == "L":
        return ["L", [_canon(x) for x in v]]
    raise FormatError(f"unknown DynamoDB type {t!r}")


def canonical_bytes(item: Item) -> bytes:
    """The canonical serialisation of an item that its hash is taken over."""
    return orjson.dumps({k: _canon(v) for k, v in item.items()}, option=orjson.OPT_SORT_KEYS)


def item_hash(item: Item) -> int:
    return int.from_bytes(hashlib.sha256(canonical_bytes(item)).digest(), "big")


class Digest:
    """Accumulates the order-independent content digest of a multiset of items."""

    __slots__ = ("value", "count")

    def __init__(self, value: int = 0, count: int = 0) -> None:
        self.value = value
        self.count = count

    def add(self, item: Item) -> None:
        self.value = (self.value + item_hash(item)) % _MOD
        self.count += 1

    def add_hash(self, h: int) -> None:
        self.value = (self.value + h) % _MOD
        self.count += 1

    def merge(self, other: Digest) -> None:
        self.value = (self.value + other.value) % _MOD
        self.count += other.count

    def hexdigest(self) -> str:
        return f"{self.value:064x}"

    @classmethod
    def from_hex(cls, text: str, count: int = 0) -> Digest:
        return cls(int(text, 16), count)


def combine_hex(digests: Iterable[str]) -> str:
    total = 0
    for h in digests:
        total = (total + int(h, 16)) % _MOD
    return f"{total:064x}"


def item_size(item: Item) -> int:
    """DynamoDB's billing size of an item (names + values), for capacity estimates."""
    return sum(len(k.encode()) + _value_size(v) for k, v in item.items())


def _value_size(value: dict[str, Any]) -> int:
    ((t, v),) = value.items()
    if t == "S":
        return len(v.encode())
    if t == "N":
        return (len(v) + 1) // 2 + 1
    if t == "B":
        return len(v)
    if t in ("BOOL", "NULL"):
        return 1
    if t == "SS":
        return sum(len(x.encode()) for x in v)
    if t == "NS":
        return sum((len(x) + 1) // 2 + 1 for x in v)
    if t == "BS":
        return sum(len(x) for x in v)
    if t == "M":
        return 3 + sum(len(k.encode()) + 1 + _value_size(x) for k, x in v.items())
    if t == "L":
        return 3 + sum(1 + _value_size(x) for x in v)
    return 0
