"""The DYNAMODB_JSON line codec and the content digest, pinned by golden files."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from backupctl.errors import FormatError
from backupctl.formats.dynamodb_json import (
    Digest,
    canonical_number,
    decode_line,
    encode_line,
    encode_lines,
    item_hash,
)

GOLDEN = Path(__file__).resolve().parents[2] / "golden"

ITEMS = [
    {"Id": {"N": "103"}, "Tags": {"SS": ["a", "b"]}},
    {
        "Id": {"N": "-1.5E+10"},
        "Blob": {"B": b"\x00\x01\xff"},
        "Blobs": {"BS": [b"\x00", b"z"]},
        "Nums": {"NS": ["1", "2.50"]},
        "Map": {"M": {"nested": {"L": [{"NULL": True}, {"BOOL": False}, {"S": ""}]}}},
        "Uni": {"S": "héllo ✓ 😀"},
    },
]


def test_encode_line_is_dynamodb_export_format() -> None:
    line = encode_line(ITEMS[0])
    assert line == b'{"Item":{"Id":{"N":"103"},"Tags":{"SS":["a","b"]}}}\n'


def test_golden_part_lines() -> None:
    """The exact bytes of a part's lines (before gzip) are pinned."""
    data = encode_lines(ITEMS)
    assert data == (GOLDEN / "dynamodb-part.jsonl").read_bytes()


def test_gzip_part_is_deterministic() -> None:
    data = encode_lines(ITEMS)
    a = gzip.compress(data, compresslevel=6, mtime=0)
    b = gzip.compress(data, compresslevel=6, mtime=0)
    assert a == b
    assert gzip.decompress(a) == data


def test_decode_round_trip_restores_bytes() -> None:
    for item in ITEMS:
        assert decode_line(encode_line(item)) == item
    decoded = decode_line(encode_line(ITEMS[1]))
    assert decoded["Blob"]["B"] == b"\x00\x01\xff"
    assert isinstance(decoded["Blobs"]["BS"][0], bytes)


def test_binary_is_base64_in_lines() -> None:
    doc = json.loads(encode_line({"b": {"B": b"\x00\xff"}}))
    assert doc == {"Item": {"b": {"B": "AP8="}}}


@pytest.mark.parametrize(
    "line",
    [b"not json", b'{"NotItem":{}}', b'{"Item":[1]}', b'{"Item":{"a":"plain"}}', b'{"Item":{"b":{"B":"***"}}}'],
)
def test_decode_rejects_malformed_lines(line: bytes) -> None:
    with pytest.raises(FormatError):
        decode_line(line)


@pytest.mark.parametrize(
    ("a", "b"),
    [("1", "1.0"), ("1", "10E-1"), ("100", "1E2"), ("-0.5", "-5e-1"), ("0", "-0"), ("0", "0.000")],
)
def test_canonical_number_equal_spellings(a: str, b: str) -> None:
    assert canonical_number(a) == canonical_number(b)


def test_canonical_number_keeps_38_digits() -> None:
    x = "12345678901234567890123456789012345678"
    y = "12345678901234567890123456789012345679"
    assert canonical_number(x) != canonical_number(y)
    assert canonical_number("1E-130") != canonical_number("1E-129")


def test_canonical_number_rejects_garbage() -> None:
    for bad in ("abc", "NaN", "Infinity", ""):
        with pytest.raises(FormatError):
            canonical_number(bad)


def test_digest_is_order_independent_and_multiset_sensitive() -> None:
    a, b = ITEMS
    d1, d2, d3 = Digest(), Digest(), Digest()
    for it in (a, b):
        d1.add(it)
    for it in (b, a):
        d2.add(it)
    for it in (a, a):
        d3.add(it)
    assert d1.hexdigest() == d2.hexdigest()
    assert d1.count == 2
    assert d3.hexdigest() != d1.hexdigest()


def test_digest_ignores_set_order_and_number_spelling_but_not_types() -> None:
    assert item_hash({"s": {"SS": ["b", "a"]}}) == item_hash({"s": {"SS": ["a", "b"]}})
    assert item_hash({"n": {"N": "1.0"}}) == item_hash({"n": {"N": "1"}})
    assert item_hash({"n": {"N": "1"}}) != item_hash({"n": {"S": "1"}})
    assert item_hash({"l": {"L": [{"S": "a"}, {"S": "b"}]}}) != item_hash({"l": {"L": [{"S": "b"}, {"S": "a"}]}})


def test_golden_digest() -> None:
    """The digest algorithm (multiset-sha256-v1) is part of the format: pinned."""
    d = Digest()
    for it in ITEMS:
        d.add(it)
    golden = json.loads((GOLDEN / "dynamodb-digest.json").read_text())
    assert d.hexdigest() == golden["digest"]
    assert d.count == golden["count"]
    assert hashlib.sha256(encode_lines(ITEMS)).hexdigest() == golden["lines_sha256"]


def test_merge_equals_adding() -> None:
    whole, a, b = Digest(), Digest(), Digest()
    for it in ITEMS:
        whole.add(it)
    a.add(ITEMS[0])
    b.add(ITEMS[1])
    a.merge(b)
    assert (a.hexdigest(), a.count) == (whole.hexdigest(), whole.count)
