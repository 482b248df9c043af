"""Local sync (file:// and plain paths) and the ingest CLI on local folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sdod.errors import UserError
from sdod.storage import with_retries
from sdod.transfer import sync_to_local


def test_sync_from_a_local_folder_skips_unchanged_and_mirrors_deletes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("bb")
    first = sync_to_local(f"file://{src}", tmp_path / "dst", progress=False)
    assert (first.objects, first.downloaded, first.bytes) == (2, 2, 3)
    assert (tmp_path / "dst" / "sub" / "b.txt").read_text() == "bb"
    again = sync_to_local(str(src), tmp_path / "dst", progress=False)
    assert (again.downloaded, again.skipped) == (0, 2)
    (src / "a.txt").unlink()
    third = sync_to_local(str(src), tmp_path / "dst", progress=False)
    assert third.removed == 1 and not (tmp_path / "dst" / "a.txt").exists()
    assert not list((tmp_path / "dst").rglob("*.part"))


def test_sync_of_a_missing_source_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file or folder"):
        sync_to_local(str(tmp_path / "nope"), tmp_path / "dst", progress=False)
    with pytest.raises(UserError, match="unsupported URI scheme"):
        sync_to_local("gs://bucket/x", tmp_path / "dst", progress=False)


def test_retries_back_off_then_give_up() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset by peer")
        return "ok"

    assert with_retries("x", flaky, base_delay=0.001) == "ok" and len(calls) == 3
    with pytest.raises(ConnectionResetError):
        with_retries(
            "x", lambda: (_ for _ in ()).throw(ConnectionResetError()), retries=1, base_delay=0.001
        )


def test_ingest_cli_on_local_folders(tmp_path: Path) -> None:
    from sdod.demo.dataset import make_sample_data

    make_sample_data(tmp_path / "bucket", train=2, validation=1)
    spec = {
        "TrainingJobName": "local-job",
        "InputDataConfig": [
            {"ChannelName": ch, "ContentType": "image/jpeg",
             "DataSource": {"S3DataSource": {"S3Uri": str(tmp_path / "bucket" / ch)}}}
            for ch in ("train", "train_annotation")
        ],
        "OutputDataConfig": {"S3OutputPath": str(tmp_path / "out")},
    }  # fmt: skip
    (tmp_path / "job.json").write_text(json.dumps(spec))
    cmd = [sys.executable, "-m", "sdod", "ingest", "--job-spec", str(tmp_path / "job.json"),
           "--job-root", str(tmp_path / "root"), "--json"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["channels"]["train"]["objects"] == 2
    assert len(list((tmp_path / "root/input/data/train_annotation").iterdir())) == 2
    spec["TrainingJobName"] = "bad_name"
    (tmp_path / "job.json").write_text(json.dumps(spec))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "TrainingJobName 'bad_name'" in out.stderr


def test_sync_of_a_single_object_uri_copies_that_file(tmp_path: Path) -> None:
    (tmp_path / "train.rec").write_bytes(b"records")
    first = sync_to_local(str(tmp_path / "train.rec"), tmp_path / "dst", progress=False)
    assert (first.objects, first.downloaded) == (1, 1)
    assert (tmp_path / "dst" / "train.rec").read_bytes() == b"records"
    assert (
        sync_to_local(f"file://{tmp_path / 'train.rec'}", tmp_path / "dst", progress=False).skipped
        == 1
    )
