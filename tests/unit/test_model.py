"""Manifest, ids and part keys: what readers accept and refuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backupctl.errors import FormatError, InvalidInput
from backupctl.model import (
    Manifest,
    PartResult,
    check_part_key,
    check_snapshot_id,
    new_snapshot_id,
    newest_by_name,
    source_key,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def golden_manifest() -> Manifest:
    return Manifest(
        id="20261127T013000Z-1a2b3c",
        source={"kind": "dynamodb", "region": "us-east-1", "table": "orders",
                "arn": "arn:aws:dynamodb:us-east-1:123456789012:table/orders"},
        source_key="dynamodb.us-east-1.orders",
        mode="full",
        created_at="2026-11-27T01:30:00.000000Z",
        completed_at="2026-11-27T01:31:00.000000Z",
        engine="local",
        parts=[PartResult("data/part-00000-0000.json.gz", 2, 120, "a" * 64, "b" * 64)],
        content_digest="b" * 64,
        digest_algorithm="multiset-sha256-v1",
        read={"segments": 1, "read_budget_rcu_per_s": 5.0, "billing_mode": "PROVISIONED"},
        tool={"name": "backupctl", "version": "0.1.0"},
    )


def test_manifest_matches_golden_file() -> None:
    """Format v1 manifest layout is pinned: a change here is a format change."""
    doc = golden_manifest().to_dict()
    assert doc == json.loads((GOLDEN / "manifest-v1.json").read_text())


def test_manifest_round_trip() -> None:
    m = golden_manifest()
    again = Manifest.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again.to_dict() == m.to_dict()
    assert again.rows == 2 and again.bytes == 120


def test_reader_refuses_unknown_major_version() -> None:
    doc = golden_manifest().to_dict()
    doc["format_version"] = "2.0"
    with pytest.raises(FormatError, match="format version 2.0 is not supported"):
        Manifest.from_dict(doc)


def test_reader_accepts_newer_minor_version() -> None:
    doc = golden_manifest().to_dict()
    doc["format_version"] = "1.7"
    doc["some_future_field"] = {"x": 1}
    assert Manifest.from_dict(doc).id == "20261127T013000Z-1a2b3c"


def test_reader_refuses_inconsistent_totals() -> None:
    doc = golden_manifest().to_dict()
    doc["totals"]["rows"] = 3
    with pytest.raises(FormatError, match="totals"):
        Manifest.from_dict(doc)


@pytest.mark.parametrize(
    "key",
    ["../../etc/passwd", "data/../manifest.json", "data/part-00000-0000.json.gz/../../x", "/data/part-00000-0000.json.gz",
     "data/part-0-0.json.gz", "other/part-00000-0000.json.gz", "data/part-00000-0000.exe"],
)
def test_part_keys_cannot_escape_data(key: str) -> None:
    with pytest.raises(FormatError):
        check_part_key(key)
    doc = golden_manifest().to_dict()
    doc["parts"][0]["key"] = key
    with pytest.raises(FormatError):
        Manifest.from_dict(doc)


@pytest.mark.parametrize("doc", [None, [1, 2], "manifest", 7])
def test_reader_refuses_a_manifest_that_is_not_an_object(doc: object) -> None:
    with pytest.raises(FormatError, match="not a JSON object"):
        Manifest.from_dict(doc)  # type: ignore[arg-type]


@pytest.mark.parametrize("field,value", [("rows", -5), ("rows", 10**30), ("rows", float("inf")), ("rows", 2.0),
                                         ("rows", "2"), ("rows", True), ("bytes", -1), ("bytes", 2**63)])
def test_reader_refuses_counts_that_are_not_counts(field: str, value: object) -> None:
    doc = golden_manifest().to_dict()
    doc["parts"][0][field] = value
    doc.pop("totals")
    with pytest.raises(FormatError, match="not a count"):
        Manifest.from_dict(doc)


@pytest.mark.parametrize("totals", [{"rows": "x", "parts": 1}, {"rows": [2], "parts": 1}, {"rows": float("inf")}, "2"])
def test_reader_refuses_totals_that_are_not_numbers(totals: object) -> None:
    doc = golden_manifest().to_dict()
    doc["totals"] = totals
    with pytest.raises(FormatError, match="totals"):
        Manifest.from_dict(doc)


def test_snapshot_ids_sort_by_time_and_validate() -> None:
    a = new_snapshot_id()
    assert check_snapshot_id(a) == a
    for bad in ("", "latest", "20261127T013000Z-XYZ123", "../20261127T013000Z-1a2b3c"):
        with pytest.raises(InvalidInput):
            check_snapshot_id(bad)


def test_newest_of_one_second_is_decided_by_creation_time_not_by_id() -> None:
    # three snapshots made in one second: their random suffixes sort against their order of creation
    created = {"20261127T141819Z-ffffff": "2026-11-27T14:18:19.100000Z",
               "20261127T141819Z-dc9a56": "2026-11-27T14:18:19.900000Z",  # the newest
               "20261127T141819Z-000001": "2026-11-27T14:18:19.500000Z",
               "20261127T141818Z-aaaaaa": "2026-11-27T14:18:18.999999Z",
               "20261127T141820Z-eeeeee": None}  # in progress: no manifest
    reads: list[str] = []

    def read(sid: str) -> tuple[str, str] | None:
        reads.append(sid)
        return None if created[sid] is None else (str(created[sid]), sid)

    got = newest_by_name(created, lambda sid: sid[:16], read, lambda v: v)
    assert got == ("2026-11-27T14:18:19.900000Z", "20261127T141819Z-dc9a56")
    assert "20261127T141818Z-aaaaaa" not in reads  # an older second is never read
    assert newest_by_name(["20261127T141820Z-eeeeee"], lambda sid: sid[:16], read, lambda v: v) is None


def test_source_key_is_one_safe_path_segment() -> None:
    assert source_key("dynamodb", "us-east-1", "orders.v2-x_y") == "dynamodb.us-east-1.orders.v2-x_y"
    k = source_key("mysql", "us-east-1", "db/x`; DROP TABLE y; --")
    assert "/" not in k and " " not in k and "`" not in k
