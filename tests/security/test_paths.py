"""Nothing is written outside its place: object keys, channel names, `.lst` paths and lock
files from outside cannot name a file beyond the folder they are synced, packed or locked in.
Each case runs through the CLI against the real S3 endpoint (moto's server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.security.conftest import S3Endpoint

pytestmark = pytest.mark.integration


def _sdod(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdod", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def _refused(run: subprocess.CompletedProcess[str], *says: str) -> None:
    """Exit 2, one line on stderr naming what was refused, no traceback."""
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    for text in says:
        assert text in run.stderr, run.stderr


def _client(s3: S3Endpoint):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=s3.url)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdod.demo.dataset import make_sample_data

    root = tmp_path_factory.mktemp("data")
    make_sample_data(root, train=3, validation=2, num_classes=2, seed=5)
    return root


def _spec(name: str, data_uri: str, out: str, **extra: object) -> dict:
    from sdod.jobspec.form import spec_from_form

    hp = {"base_network": "resnet-lite", "use_pretrained_model": "0", "num_classes": "2",
          "num_training_samples": "3", "epochs": "1", "mini_batch_size": "2",
          "image_shape": "300"}  # fmt: skip
    spec = spec_from_form(
        job_name=name, data_uri=data_uri, output_uri=out, hyperparameters=hp,
        max_runtime_seconds=300,
    )  # fmt: skip
    spec.update(extra)
    return spec


def _escape_target(tmp_path: Path) -> tuple[Path, str]:
    """A file outside every job folder, and a key suffix that climbs to it."""
    victim = tmp_path / "outside" / f"x-{uuid.uuid4().hex}.sh"
    return victim, "../" * 24 + str(victim).lstrip("/")


@pytest.mark.parametrize("command", ["ingest", "train"])
def test_an_object_key_with_dotdot_writes_nothing_outside_the_job(
    command: str, s3_endpoint: S3Endpoint, data: Path, tmp_path: Path
) -> None:
    prefix = f"escape-{command}"
    uri = s3_endpoint.upload_dir(data, prefix)
    victim, climb = _escape_target(tmp_path)
    _client(s3_endpoint).put_object(
        Bucket=s3_endpoint.bucket, Key=f"{prefix}/train/{climb}", Body=b"#!/bin/sh\necho owned\n"
    )
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(_spec("escape", uri, str(tmp_path / "out"))))
    run = _sdod(command, "--job-spec", str(spec), "--job-root", str(tmp_path / "job"))
    _refused(run, "'..' component", f"{prefix}/train")
    assert not victim.exists() and not victim.parent.exists()
    assert not (tmp_path / "out").exists()  # no model, no failure: the job never started


def test_a_checkpoint_prefix_with_a_hostile_key_is_refused_not_ignored(
    s3_endpoint: S3Endpoint, data: Path, tmp_path: Path
) -> None:
    bucket = s3_endpoint.bucket
    victim, climb = _escape_target(tmp_path)
    _client(s3_endpoint).put_object(Bucket=bucket, Key=f"ckpt-escape/{climb}", Body=b"x")
    spec = _spec(
        "ckpt-escape", str(data), str(tmp_path / "out"),
        CheckpointConfig={"S3Uri": f"s3://{bucket}/ckpt-escape/"},
    )  # fmt: skip
    (tmp_path / "job.json").write_text(json.dumps(spec))
    run = _sdod("train", "--job-spec", str(tmp_path / "job.json"), "--job-root",
                str(tmp_path / "job"))  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert "'..' component" in run.stdout + run.stderr
    assert not victim.exists()


def test_batch_predict_never_writes_outside_its_output(
    s3_endpoint: S3Endpoint, data: Path, tmp_path: Path, tiny_model: Path
) -> None:
    client = _client(s3_endpoint)
    image = next((data / "validation").iterdir()).read_bytes()
    victim, climb = _escape_target(tmp_path)
    client.put_object(Bucket=s3_endpoint.bucket, Key="batch-in/good.jpg", Body=image)
    client.put_object(Bucket=s3_endpoint.bucket, Key=f"batch-in/{climb}.jpg", Body=image)
    out = tmp_path / "predictions"
    run = _sdod("batch-predict", "--model", str(tiny_model), "--input",
                f"s3://{s3_endpoint.bucket}/batch-in/", "--output", str(out), "--json")  # fmt: skip
    assert "Traceback" not in run.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["_failures.json", "good.jpg.out"]
    failures = json.loads((out / "_failures.json").read_text())
    assert len(failures) == 1 and "'..' component" in failures[0]["error"]
    assert not Path(f"{victim}.jpg.out").exists() and not victim.parent.exists()


@pytest.mark.parametrize("name", ["..", ".", "..."])
def test_a_channel_named_dots_is_refused_before_anything_is_deleted(
    name: str, data: Path, tmp_path: Path
) -> None:
    spec = _spec("dots", str(data), str(tmp_path / "out"))
    spec["InputDataConfig"][1]["ChannelName"] = name
    (tmp_path / "job.json").write_text(json.dumps(spec))
    _refused(_sdod("validate-job", str(tmp_path / "job.json")), repr(name))
    root = tmp_path / "job"
    keep = root / "input" / "config" / "resourceconfig.json"
    keep.parent.mkdir(parents=True)
    keep.write_text("{}")
    run = _sdod("ingest", "--job-spec", str(tmp_path / "job.json"), "--job-root", str(root))
    _refused(run, f"ChannelName {name!r}")
    assert keep.read_text() == "{}"


def test_a_job_name_ending_in_a_newline_is_refused(data: Path, tmp_path: Path) -> None:
    spec = _spec("fine", str(data), str(tmp_path / "out"))
    spec["TrainingJobName"] = "fine\n"
    (tmp_path / "job.json").write_text(json.dumps(spec))
    _refused(_sdod("validate-job", str(tmp_path / "job.json")), "TrainingJobName")


def test_pack_lst_paths_stay_inside_root(data: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(next((data / "train").iterdir()).read_bytes())
    root = tmp_path / "root"
    root.mkdir()
    lst = tmp_path / "in.lst"
    lst.write_text("0\t2\t5\t0\t0.1\t0.1\t0.5\t0.5\t../secret.jpg\n")
    run = _sdod("pack", "--lst", str(lst), "--root", str(root), "--out", str(tmp_path / "o"))
    _refused(run, f"{lst}:1", "../secret.jpg")
    assert not (tmp_path / "o.rec").exists()
    (root / "link").symlink_to(tmp_path)  # a link inside the root that leads out of it
    lst.write_text("0\t2\t5\t0\t0.1\t0.1\t0.5\t0.5\tlink/secret.jpg\n")
    run = _sdod("pack", "--lst", str(lst), "--root", str(root), "--out", str(tmp_path / "o"))
    _refused(run, "link/secret.jpg", "outside")


@pytest.mark.parametrize("lock", ["slot-0.lock", "job-locked.lock"])
def test_a_lock_file_planted_as_a_symlink_is_refused_and_its_target_kept(
    lock: str, data: Path, tmp_path: Path
) -> None:
    slots = tmp_path / "slots"
    slots.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me\n")
    (slots / lock).symlink_to(victim)
    (tmp_path / "job.json").write_text(json.dumps(_spec("locked", str(data), str(tmp_path / "o"))))
    run = _sdod("train", "--job-spec", str(tmp_path / "job.json"), "--job-root",
                str(tmp_path / "job"), env={"SDOD_SLOT_DIR": str(slots)})  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert "cannot be opened safely" in run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert victim.read_text() == "do not truncate me\n"


def test_safe_relative_refuses_every_escape() -> None:
    from sdod.errors import DataError
    from sdod.safe_paths import inside, safe_relative

    for bad in ("", "/etc/passwd", "a/../../b", "..", "./a", "a//b", "a/./b", "a\x00b", "a\nb"):
        with pytest.raises(DataError) as caught:
            safe_relative(bad)
        assert caught.value.rule == "unsafe_name"
    for good in ("a.jpg", "a/b/c.jpg", "..a/b..", "a b/ü.png", "a\\b"):
        assert safe_relative(good) == good
    assert inside("/srv/data", "x/y.jpg") == Path("/srv/data/x/y.jpg")
