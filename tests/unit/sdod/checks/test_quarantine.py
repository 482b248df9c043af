"""The quarantine list: one writer, one reader, one key format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdod.checks.quarantine import Quarantine, quarantine_key, read_quarantine
from sdod.errors import UserError


def test_entries_round_trip_and_match_by_key_and_by_job_relative_file(tmp_path: Path) -> None:
    root = tmp_path / "cache" / "job"
    listed = [
        {"key": quarantine_key("train", "img_7"), "file": str(root / "input/data/train/img_7.jpg"),
         "reasons": ["class_id_in_range"]},
        {"key": None, "file": str(root / "input/data/train_annotation/broken.json"), "reasons": []},
    ]  # fmt: skip
    q = Quarantine.of(listed, root)
    assert q.drops("train", "img_7") and not q.drops("validation", "img_7")
    assert q.lists_file("input/data/train_annotation/broken.json")  # relative: any worker's cache
    path = tmp_path / "quarantine.json"
    path.write_text(json.dumps(q.to_json()))
    again = read_quarantine(str(path))
    assert again == q and len(again) == 2


def test_no_list_means_nothing_quarantined_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    assert len(read_quarantine(None)) == 0
    bad = tmp_path / "q.json"
    bad.write_text('{"key": "train/x"}')
    with pytest.raises(UserError, match="a quarantine list must be a JSON array of objects"):
        read_quarantine(str(bad))
    with pytest.raises(UserError, match="run the check first"):
        read_quarantine(str(tmp_path / "missing.json"))
