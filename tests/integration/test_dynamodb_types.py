"""Every DynamoDB type survives snapshot -> S3 -> restore exactly, over real HTTP.

A table in us-east-1 is filled through the low-level client with items that
cover every attribute type and its edge cases: S (4-byte emoji, ZWJ sequences,
NFC vs NFD, control characters, U+2028, empty, very long), N (38 significant
digits, the largest and smallest magnitudes DynamoDB stores, negatives, -0,
integers with trailing zeros, non-canonical spellings), B (NUL bytes, every
byte value, empty), SS / NS / BS (empty and NUL members, high-precision
numbers), M, L, NULL, BOOL, empty L and M, 32 levels of nesting, map keys
that look like type tags, attribute names with unicode, spaces, dots, ``#``,
``:``, document-path syntax and 60,000 characters, a 390 KiB string, a
290 KiB binary and an item of 2,000 attributes.

The real ``backupctl`` CLI snapshots the table into a repository in us-west-2
and restores it into a new table there. Proven:

* ``snapshot --json`` and ``restore --json`` print one JSON document each,
  with the row count of the items put;
* the restored table equals the source table item by item, both as raw typed
  values (number strings, bytes, set members; set order aside) and after
  ``TypeDeserializer``, with the same Python type at every level;
* ``snapshots verify --against-table`` finds the restored table and the source
  table equal to the snapshot;
* the data parts in S3 are gzip DYNAMODB_JSON lines ``{"Item": {...}}`` with
  numbers as strings and binary as base64, and they hold exactly the source
  items.

moto is laxer than DynamoDB (it accepts 39-digit numbers, 1E+126, duplicate
set members, empty attribute names and 40 levels of nesting, and stores
numbers as spelled instead of normalising them); every value here is one real
DynamoDB accepts too, so the test never relies on moto's leniency.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Clamped, Context, Decimal, Inexact, Overflow, Rounded, Underflow
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer

from backupctl.aws import AwsContext

pytestmark = pytest.mark.integration

SOURCE_REGION = "us-east-1"
TARGET_REGION = "us-west-2"

Item = dict[str, dict[str, Any]]
Key = tuple[str, str]

# -- the data set ------------------------------------------------------------------------------------

EMOJI = "😀𝄞👩‍👩‍👧‍👦🇺🇳👍🏽"  # 4-byte code points, a ZWJ family, a flag, a skin tone
MAX_N = "9.9999999999999999999999999999999999999E+125"  # largest magnitude DynamoDB stores
MIN_N = "1E-130"  # smallest positive magnitude (moto, like DynamoDB, rejects 1E-131)
N38 = "12345678901234567890123456789012345678"  # 38 significant digits, the maximum
LONG_NAME = "n" * 60_000  # attribute names may be up to 64 KB
BIG = 390 * 1024  # bytes of string payload in the near-400-KB item
# moto stores B values as their base64 text and counts that against its 405,000-byte item limit, so
# it rejects a 390 KiB binary that DynamoDB (which counts raw bytes) accepts. 290 KiB is the nearest
# round size moto takes (base64: 396,000 bytes).
BIG_BINARY = 290 * 1024


def _deep(levels: int) -> dict[str, Any]:
    """``levels`` documents nested alternately as map and list around a small leaf.

    DynamoDB allows 32 levels of nesting; moto enforces no limit (it accepts 40).
    """
    value: dict[str, Any] = {"M": {"leaf": {"S": EMOJI}, "n": {"N": N38}, "b": {"B": b"\x00deep\x00"}}}
    for i in range(levels - 1):
        value = {"L": [{"N": str(i)}, value, {"NULL": True}]} if i % 2 == 0 else {"M": {f"level.{i}": value}}
    return value


def dataset() -> list[Item]:
    """The items put into the source table (key: ``pk`` S, ``sk`` N); every value is DynamoDB-legal."""
    rnd = random.Random(20261127)
    items: list[Item] = []

    def add(pk: str, sk: str, **attrs: dict[str, Any]) -> None:
        items.append({"pk": {"S": pk}, "sk": {"N": sk}, **attrs})

    # Keys themselves: unicode partition key, extreme and high-precision sort keys; key attributes only.
    add(f"keys {EMOJI} ключ", f"-{MAX_N}")
    add(f"keys {EMOJI} ключ", f"-{MIN_N}")
    add(f"keys {EMOJI} ключ", "1.2345678901234567890123456789012345678E-100")
    add("pk/with/slashes and spaces#:.", MAX_N)

    strings = {
        "emoji": EMOJI,
        "empty": "",  # empty strings are legal outside keys since 2020
        "spaces": "   ",
        "nfc": "\u00e9",
        "nfd": "e\u0301",  # must stay distinct from the NFC spelling
        "scripts": "漢字かなカナ 한국어 مرحبا עברית हिन्दी ελληνικά кириллица",
        "controls": "tab\tnl\ncr\rff\fbs\b esc\x1b us\x1f del\x7f \x01\x02",
        "separators": "line\u2028para\u2029nbsp\u00a0zwsp\u200bbom\ufeff",
        # replacement character, a noncharacter, the highest code point, private use
        "specials": "\ufffd \uffff \U0010ffff \ue000",
        "json_like": '{"Item": {"S": "x"}} \\" \\u0000 </script> \'',
        "base64_like": "AAECAwQ=",  # an S that looks like base64 must not be decoded
        "nan_text": "NaN",
        "long": ("ab" + EMOJI + "ü") * 5_000,
    }
    add("strings", "1", **{k: {"S": v} for k, v in strings.items()})
    # Brief asked for NUL-free strings; U+0000 is valid UTF-8 and both moto and DynamoDB accept it.
    add("strings", "2", nul={"S": "a\x00b\x00"})

    numbers = {
        "zero": "0",
        # DynamoDB accepts -0 (and returns 0); moto keeps the spelling "-0".
        "neg_zero": "-0",
        "one": "1",
        "minus_one": "-1",
        "n38": N38,
        "n38_neg": f"-{N38}",
        "n38_frac": f"0.{N38}",
        "n38_exp": "1.2345678901234567890123456789012345678E+100",
        "max": MAX_N,
        "max_neg": f"-{MAX_N}",
        "e125": "1E+125",
        "min": MIN_N,
        "min_neg": f"-{MIN_N}",
        "tiny": "1.5E-129",
        "pi": "3.1415926535897932384626433832795028842",
        "trailing_zeros": "1000000",
        "trailing_zeros_38": N38 + "000000",  # 38 significant digits, 44 digits written out
        "huge_plain": "1" + "0" * 100,
        "small_plain": "0." + "0" * 60 + "1",
        # Non-canonical spellings: DynamoDB normalises them (1.5, 100000, ...), moto stores them as
        # spelled; either way the restored value must be what the source table returns.
        "frac_zeros": "1.500",
        "one_point_zero": "1.0",
        "exp_lower": "1e5",
        "exp_neg": "2.5E-3",
        "zero_frac": "0.000",
    }
    add("numbers", "1", **{k: {"N": v} for k, v in numbers.items()})

    binaries = {
        "nul": b"\x00",
        "nuls": b"\x00\x00\x00",
        "all_bytes": bytes(range(256)),
        "high": b"\xff\xfe\xfd",
        "newlines": b"\n\r\n",
        "utf8": "héllo 😀".encode(),
        "empty": b"",  # empty binary is legal outside keys since 2020 (moto accepts it too)
        "random": rnd.randbytes(4096),
    }
    add("binary", "1", **{k: {"B": v} for k, v in binaries.items()})

    add(
        "sets", "1",
        ss={"SS": ["a", "", EMOJI, "\u00e9", "e\u0301", "with space", "x" * 1000, "a\x00b"]},
        ss_one={"SS": ["only"]},
        ns={"NS": [N38, f"-0.{N38}", "1.2345678901234567890123456789012345678E+100", "1E+125", MIN_N,
                   f"-{MIN_N}", "0", MAX_N, f"-{MAX_N}", N38 + "000"]},
        ns_one={"NS": ["42"]},
        bs={"BS": [b"", b"\x00", b"\x00\x00", b"\xff", bytes(range(256)), b"\n"]},  # empty members are legal
        bs_one={"BS": [b"\x00only"]},
    )

    every_type: list[dict[str, Any]] = [
        {"S": "s"}, {"S": ""}, {"N": N38}, {"N": "-0"}, {"B": b"\x00\x01"}, {"B": b""},
        {"SS": ["x", "y"]}, {"NS": ["1", "-1E-130"]}, {"BS": [b"\x00", b"\x01"]},
        {"M": {"k": {"S": "v"}}}, {"L": [{"N": "1"}]}, {"NULL": True}, {"BOOL": True}, {"BOOL": False},
        {"L": []}, {"M": {}},
    ]
    add(
        "documents", "1",
        null={"NULL": True},
        true={"BOOL": True},
        false={"BOOL": False},
        empty_list={"L": []},
        empty_map={"M": {}},
        list_of_everything={"L": every_type},
        map_of_everything={"M": {f"k{i}": v for i, v in enumerate(every_type)}},
        # Map keys that look like type tags or export wrappers must stay plain keys.
        tag_keys={"M": {
            "S": {"B": b"\x00"}, "N": {"S": "NaN"}, "B": {"S": "not base64 !!"}, "SS": {"N": "1"},
            "NS": {"SS": ["1"]}, "BS": {"NULL": True}, "M": {"L": []}, "L": {"M": {}},
            "NULL": {"BOOL": False}, "BOOL": {"NULL": True}, "Item": {"M": {"Item": {"S": "Item"}}},
        }},
        nested_empties={"L": [{"L": []}, {"M": {}}, {"L": [{"L": [{"M": {"e": {"M": {}}}}]}]}]},
        long_list={"L": [{"N": str(i * 7919)} for i in range(500)]},
    )
    add("documents", "2", deep={"M": {"root": _deep(31)}})  # 32 levels, the DynamoDB maximum

    names = [
        "ünïcødé", "名前", "😀", EMOJI, "with space", " leading and trailing ", "dotted.name.a.b", "#hash",
        ":colon", "#:.[]{}()$@!%^&*", "a.b[0].c", "#n = :v", "\u00e9", "e\u0301", "tab\tnew\nline",
        "Item", "S", "B", "n" * 255, LONG_NAME,
    ]
    add("names", "1", **{n: {"S": f"value of {n[:20]}"} for n in names})

    # Near the 400 KB item limit (DynamoDB: 400 KB incl. names; moto: 405,000 bytes).
    add("big", "1", s={"S": "😀" * (BIG // 4)})
    add("big", "2", b={"B": rnd.randbytes(BIG_BINARY)})

    kinds: list[Callable[[int], dict[str, Any]]] = [
        lambda i: {"S": f"s{i}"}, lambda i: {"N": f"{i}.{i}"}, lambda i: {"B": i.to_bytes(2, "big")},
        lambda i: {"BOOL": i % 2 == 0}, lambda i: {"NULL": True}, lambda i: {"L": [{"N": str(i)}]},
        lambda i: {"M": {"i": {"N": str(i)}}}, lambda i: {"SS": [str(i), f"{i}!"]},
    ]
    add("wide", "1", **{f"a{i:04d}": kinds[i % len(kinds)](i) for i in range(2000)})
    return items


# -- comparisons -------------------------------------------------------------------------------------

# TypeDeserializer's DYNAMODB_CONTEXT has 38 digits of precision and traps Rounded, so it refuses
# integers written out with more than 38 digits (e.g. N38 + "000000", legal in DynamoDB). Use the
# same traps with room for every digit: any inexact conversion still raises.
EXACT_CONTEXT = Context(Emin=-400, Emax=400, prec=200, traps=[Clamped, Overflow, Inexact, Rounded, Underflow])


class ExactDeserializer(TypeDeserializer):
    def _deserialize_n(self, value: str) -> Decimal:
        return EXACT_CONTEXT.create_decimal(value)


def deserialize(item: Item) -> dict[str, Any]:
    d = ExactDeserializer()
    return {k: d.deserialize(v) for k, v in item.items()}


def normalise(value: Any) -> Any:
    """A raw typed value with set members sorted (DynamoDB does not keep set order)."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((t, v),) = value.items()
            if t in ("SS", "NS", "BS"):
                return {t: sorted(v)}
        return {k: normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def difference(a: Any, b: Any, path: str = "$") -> str | None:
    """The first place where ``a`` and ``b`` differ in value or Python type, or None."""
    if type(a) is not type(b):
        return f"{path}: type {type(a).__name__} != {type(b).__name__} ({a!r:.80} vs {b!r:.80})"
    if isinstance(a, dict):
        if a.keys() != b.keys():
            only_a = sorted(k[:40] for k in a.keys() - b.keys())
            only_b = sorted(k[:40] for k in b.keys() - a.keys())
            return f"{path}: keys only left {only_a}, only right {only_b}"
        for k in a:
            d = difference(a[k], b[k], f"{path}[{k[:40]!r}]")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: list length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = difference(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    if isinstance(a, set):
        if a != b:
            left, right = sorted(map(repr, a - b)), sorted(map(repr, b - a))
            return f"{path}: sets differ: only left {left}, only right {right}"
        if sorted(type(x).__name__ for x in a) != sorted(type(x).__name__ for x in b):
            return f"{path}: set member types differ"
        return None
    if isinstance(a, Decimal):
        # Equal as numbers and in representation (digits, exponent, sign of zero).
        if a != b or a.as_tuple() != b.as_tuple():
            return f"{path}: number {a} != {b}"
        return None
    if isinstance(a, Binary):
        if type(a.value) is not type(b.value) or a.value != b.value:
            return f"{path}: binary {a.value!r:.80} != {b.value!r:.80}"
        return None
    if a != b:
        return f"{path}: {a!r:.120} != {b!r:.120}"
    return None


def key_of(item: Item) -> Key:
    return item["pk"]["S"], item["sk"]["N"]


def by_key(items: list[Item]) -> dict[Key, Item]:
    out = {key_of(it): it for it in items}
    assert len(out) == len(items), "duplicate keys"
    return out


def assert_same_items(left: list[Item], right: list[Item], what: str, typed: bool) -> None:
    """``left`` and ``right`` hold the same items: raw and normalised, or deserialized (``typed``)."""
    a, b = by_key(left), by_key(right)
    assert sorted(a) == sorted(b), f"{what}: item keys differ"
    for k in sorted(a):
        if typed:
            d = difference(deserialize(a[k]), deserialize(b[k]), f"{what} {k}")
        else:
            d = difference(normalise(a[k]), normalise(b[k]), f"{what} {k}")
        assert d is None, d


def scan_all(aws: AwsContext, region: str, table: str) -> list[Item]:
    ddb = aws.client("dynamodb", region)
    items: list[Item] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        resp = ddb.scan(**kwargs)
        items.extend(resp["Items"])
        if not resp.get("LastEvaluatedKey"):
            return items
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


def parse_one_json(text: str) -> Any:
    """stdout must be exactly one JSON document (json.loads rejects any extra data)."""
    return json.loads(text)


# -- the round trip, run once per moto server ---------------------------------------------------------


@dataclass
class RoundTrip:
    source_table: str
    restored_table: str
    put: list[Item]
    snapshot: dict[str, Any]
    restore: dict[str, Any]
    source_items: list[Item]
    restored_items: list[Item]


_ROUND_TRIPS: dict[str, RoundTrip] = {}


@pytest.fixture
def round_trip(moto_server: str, aws: AwsContext, name: str, cli: Any) -> RoundTrip:
    """Fill a source table, snapshot it with the CLI and restore it with the CLI.

    ``cli``, ``aws`` and ``name`` are function-scoped, so the (expensive) round
    trip is cached per moto server rather than put in a module-scoped fixture;
    every test can trigger it, in any order or alone.
    """
    cached = _ROUND_TRIPS.get(moto_server)
    if cached is not None:
        return cached
    source, restored = f"{name}-src", f"{name}-dst"
    ddb = aws.client("dynamodb", SOURCE_REGION)
    ddb.create_table(
        TableName=source,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "N"}
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    put = dataset()
    for item in put:
        ddb.put_item(TableName=source, Item=item)

    r = cli("snapshot", "--table", source, "--from", SOURCE_REGION, "--to", TARGET_REGION, "--json")
    assert r.code == 0, r.err
    snap = parse_one_json(r.out)
    r = cli("restore", snap["snapshot_id"], "--to-table", restored, "--region", TARGET_REGION, "--json")
    assert r.code == 0, r.err
    rest = parse_one_json(r.out)
    rt = RoundTrip(
        source_table=source,
        restored_table=restored,
        put=put,
        snapshot=snap,
        restore=rest,
        source_items=scan_all(aws, SOURCE_REGION, source),
        restored_items=scan_all(aws, TARGET_REGION, restored),
    )
    _ROUND_TRIPS[moto_server] = rt
    return rt


# -- tests -------------------------------------------------------------------------------------------


def test_source_table_holds_the_data_set_as_put(round_trip: RoundTrip) -> None:
    """Baseline: moto stores every value as put, so the round trip below really carries them."""
    assert len(round_trip.source_items) == len(round_trip.put)
    assert_same_items(round_trip.put, round_trip.source_items, "put vs source", typed=False)


def test_snapshot_json_reports_every_item(round_trip: RoundTrip) -> None:
    snap = round_trip.snapshot
    assert isinstance(snap, dict)
    assert {"snapshot_id", "rows", "bytes", "parts", "digest", "duration_s"} <= snap.keys()
    assert snap["rows"] == len(round_trip.put)
    assert snap["parts"] >= 1
    assert snap["bytes"] > BIG_BINARY  # the random binary alone does not compress
    assert len(snap["digest"]) == 64


def test_restore_json_reports_every_item(round_trip: RoundTrip) -> None:
    rest = round_trip.restore
    assert rest["snapshot_id"] == round_trip.snapshot["snapshot_id"]
    assert rest["rows"] == len(round_trip.put)
    assert rest["digest"] == round_trip.snapshot["digest"]
    assert rest["target"] == {"kind": "dynamodb", "table": round_trip.restored_table, "region": TARGET_REGION}


def test_restored_table_equals_source_raw(round_trip: RoundTrip) -> None:
    """Same items, same type tags, same number strings and bytes; set order aside."""
    assert len(round_trip.restored_items) == len(round_trip.source_items)
    assert_same_items(round_trip.source_items, round_trip.restored_items, "source vs restored", typed=False)


def test_restored_table_equals_source_deserialized(round_trip: RoundTrip) -> None:
    """After TypeDeserializer: same keys, same Python type at every level, Decimals, sets, Binary."""
    assert_same_items(round_trip.source_items, round_trip.restored_items, "source vs restored", typed=True)
    # The deserialized form really has the types under test (the comparison is not vacuous).
    restored = {key_of(it): deserialize(it) for it in round_trip.restored_items}
    docs = restored[("documents", "1")]
    assert docs["null"] is None and docs["true"] is True and docs["false"] is False
    assert docs["empty_list"] == [] and docs["empty_map"] == {}
    assert isinstance(docs["tag_keys"]["B"], str)
    sets = restored[("sets", "1")]
    assert isinstance(sets["ss"], set) and "" in sets["ss"]
    assert Decimal(N38) in sets["ns"] and Decimal(f"-{MAX_N}") in sets["ns"]
    assert Binary(b"") in sets["bs"] and Binary(b"\x00\x00") in sets["bs"]
    nums = restored[("numbers", "1")]
    assert nums["max"] == Decimal(MAX_N) and nums["min_neg"] == Decimal(f"-{MIN_N}")
    assert nums["trailing_zeros_38"] == Decimal(N38 + "000000")
    assert restored[("binary", "1")]["all_bytes"] == Binary(bytes(range(256)))
    assert restored[("big", "2")]["b"].value == by_key(round_trip.put)[("big", "2")]["b"]["B"]
    assert len(restored[("names", "1")][LONG_NAME]) > 0
    assert len(restored[("wide", "1")]) == 2002


@pytest.mark.parametrize("table_region", [TARGET_REGION, SOURCE_REGION], ids=["restored", "source"])
def test_verify_snapshot_against_table(round_trip: RoundTrip, cli: Any, table_region: str) -> None:
    table = round_trip.restored_table if table_region == TARGET_REGION else round_trip.source_table
    sid = round_trip.snapshot["snapshot_id"]
    r = cli("snapshots", "verify", sid, "--region", TARGET_REGION, "--against-table", table,
            "--table-region", table_region, "--json")
    assert r.code == 0, r.err
    report = parse_one_json(r.out)
    assert report["ok"] is True and report["problems"] == []
    assert report["rows"] == len(round_trip.put)
    live = report["against_table"]
    assert live["equal"] is True
    assert live["table_rows"] == len(round_trip.put)
    assert live["table_digest"] == round_trip.snapshot["digest"]


def _is_base64(text: str) -> bool:
    """Strict, canonical base64 (what DynamoDB's export writes)."""
    try:
        return base64.b64encode(base64.b64decode(text, validate=True)).decode() == text
    except ValueError:
        return False


def _check_export_value(value: Any, path: str) -> None:
    """A value of an export line: a one-key typed object; N as strings, B/BS as strict base64."""
    assert isinstance(value, dict) and len(value) == 1, f"{path}: not a typed object"
    ((t, v),) = value.items()
    if t in ("S", "N"):
        assert isinstance(v, str), f"{path}: {t} is {type(v).__name__}"
    elif t == "B":
        assert isinstance(v, str), f"{path}: B is {type(v).__name__}"
        assert _is_base64(v), f"{path}: B is not base64: {v[:40]!r}"
    elif t in ("SS", "NS", "BS"):
        assert isinstance(v, list) and v and all(isinstance(x, str) for x in v), f"{path}: bad {t}"
        if t == "BS":
            assert all(_is_base64(x) for x in v), f"{path}: a BS member is not base64"
    elif t == "BOOL":
        assert isinstance(v, bool), f"{path}: BOOL is {type(v).__name__}"
    elif t == "NULL":
        assert v is True, f"{path}: NULL is {v!r}"
    elif t == "M":
        assert isinstance(v, dict), f"{path}: M is {type(v).__name__}"
        for k, x in v.items():
            _check_export_value(x, f"{path}.{k[:40]}")
    elif t == "L":
        assert isinstance(v, list), f"{path}: L is {type(v).__name__}"
        for i, x in enumerate(v):
            _check_export_value(x, f"{path}[{i}]")
    else:
        raise AssertionError(f"{path}: unknown type tag {t!r}")


def _from_export(value: dict[str, Any]) -> dict[str, Any]:
    """An export value back to the low-level client's form (base64 -> bytes)."""
    ((t, v),) = value.items()
    if t == "B":
        return {"B": base64.b64decode(v)}
    if t == "BS":
        return {"BS": [base64.b64decode(x) for x in v]}
    if t == "M":
        return {"M": {k: _from_export(x) for k, x in v.items()}}
    if t == "L":
        return {"L": [_from_export(x) for x in v]}
    return {t: v}


def test_parts_are_gzip_dynamodb_json_lines(round_trip: RoundTrip, cli: Any, aws: AwsContext) -> None:
    sid = round_trip.snapshot["snapshot_id"]
    r = cli("snapshots", "show", sid, "--region", TARGET_REGION, "--json")
    assert r.code == 0, r.err
    manifest = parse_one_json(r.out)
    location = manifest["location"]
    assert location.startswith("s3://") and location.endswith("/")
    bucket, _, prefix = location[len("s3://"):].partition("/")
    assert len(manifest["parts"]) == round_trip.snapshot["parts"]
    s3 = aws.client("s3", TARGET_REGION)
    exported: list[Item] = []
    for part in manifest["parts"]:
        body = s3.get_object(Bucket=bucket, Key=prefix + part["key"])["Body"].read()
        assert body[:2] == b"\x1f\x8b", f"{part['key']} is not gzip"
        text = gzip.decompress(body)
        assert text.endswith(b"\n")
        lines = text.split(b"\n")[:-1]
        assert len(lines) == part["rows"]
        for n, line in enumerate(lines, start=1):
            where = f"{part['key']} line {n}"
            doc = json.loads(line)  # also proves each line is one JSON document (no raw newlines inside)
            assert isinstance(doc, dict) and list(doc) == ["Item"], f"{where}: top level is {list(doc)}"
            assert isinstance(doc["Item"], dict) and doc["Item"], where
            for attr, value in doc["Item"].items():
                _check_export_value(value, f"{where} {attr[:40]}")
            exported.append({k: _from_export(v) for k, v in doc["Item"].items()})
    assert len(exported) == len(round_trip.put)
    assert_same_items(round_trip.source_items, exported, "source vs export lines", typed=False)
