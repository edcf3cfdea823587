"""How many concurrent load tasks a MySQL restore runs by default."""

from __future__ import annotations

import pytest

from backupctl.targets import mysql as mysql_target


@pytest.mark.parametrize(("cores", "plain", "reading_back"), [(None, 2, 3), (1, 2, 3), (2, 2, 3), (8, 8, 9)])
def test_one_loader_per_core_and_one_more_while_ranges_are_read_back(
        cores: int | None, plain: int, reading_back: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mysql_target.os, "cpu_count", lambda: cores)
    assert mysql_target.mysql_load_workers() == plain
    assert mysql_target.mysql_load_workers(reading_back=True) == reading_back
