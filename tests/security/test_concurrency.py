"""Nothing lost to concurrent writers: racing publishers each get their own registry version
with their own model intact; two jobs of one name never both run or both deliver; a
checkpoint resumes only the job (and hyperparameters) that wrote it; a model without a
usable mAP is not published unless forced. Races run for real, many rounds."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from tests.security.conftest import S3Endpoint, write_tiny_model

pytestmark = pytest.mark.integration
ROUNDS = 20
RACERS = 3


def _sdod(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdod", *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """RACERS models with different weights (so different bytes)."""
    folder = tmp_path_factory.mktemp("racers")
    return [write_tiny_model(folder / f"m{i}.tar.gz", seed=i) for i in range(RACERS)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _together(calls: list[Callable[[], object]]) -> list[object]:
    """Run the calls at once, one thread each released by one barrier; their results (an
    exception is returned, not raised, so the assertion can name it)."""
    start, results = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _race(models: list[Path], group: str) -> list[int]:
    """Publish every model into `group` at once; the version each one got."""
    from sdod import stages

    results = _together(
        [partial(stages.publish, model=str(m), to=group, force=True) for m in models]
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    return [r.version for r in results]  # type: ignore[attr-defined]


@pytest.mark.parametrize("store", ["s3", "folder"])
def test_racing_publishers_each_get_their_own_version_and_keep_their_model(
    store: str, models: list[Path], s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    from sdod import registry
    from sdod.storage import read_bytes

    base = f"s3://{s3_endpoint.bucket}/race-registry" if store == "s3" else str(tmp_path)
    racers = models[:2] if store == "s3" else models  # two, as the reported race; 11 MB each
    expected = {i: _sha(m.read_bytes()) for i, m in enumerate(racers)}
    for round_ in range(ROUNDS):
        group = f"{base}/group-{round_}"
        versions = _race(racers, group)
        assert sorted(versions) == list(range(1, len(racers) + 1)), versions
        listed = registry.list_versions(group)
        assert [v.number for v in listed] == list(range(1, len(racers) + 1))
        for i, number in enumerate(versions):
            held = read_bytes(f"{group}/v{number}/model.tar.gz")
            assert _sha(held) == expected[i], f"round {round_}: v{number} is not model {i}"


def test_publishers_racing_through_the_cli_into_s3(
    models: list[Path], s3_endpoint: S3Endpoint
) -> None:
    group = f"s3://{s3_endpoint.bucket}/race-cli/detector"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sdod", "publish", "--model", str(m), "--to", group, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in models
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    versions = sorted(json.loads(out)["version"] for out, _ in outs)
    assert versions == list(range(1, RACERS + 1))


def test_temporary_names_are_never_shared_by_two_writers(tmp_path: Path) -> None:
    from sdod.storage import fetch_file, upload_file

    sources = []
    for i in range(4):
        src = tmp_path / f"src-{i}.bin"
        src.write_bytes(bytes([i]) * (1 << 20))
        sources.append(src)
    for round_ in range(ROUNDS):
        target = tmp_path / "dest" / f"r{round_}" / "model.tar.gz"
        calls: list[Callable[[], object]] = [
            partial(upload_file, s, str(target)) for s in sources[:2]
        ]
        calls += [partial(fetch_file, str(s), target) for s in sources[2:]]
        results = _together(calls)
        assert not [r for r in results if isinstance(r, Exception)], results
        assert target.read_bytes() in {s.read_bytes() for s in sources}  # one whole file
        assert [p.name for p in target.parent.iterdir()] == ["model.tar.gz"]  # no leftovers


def _job_spec(tmp_path: Path, data: Path, name: str, lr: str, **extra: object) -> Path:
    from sdod.jobspec.form import spec_from_form

    hp = {"base_network": "resnet-lite", "use_pretrained_model": "0", "num_classes": "2",
          "num_training_samples": "3", "epochs": "2", "mini_batch_size": "3",
          "learning_rate": lr, "optimizer": "adam", "augmentation": "none"}  # fmt: skip
    spec = spec_from_form(
        job_name=name, data_uri=str(data), output_uri=str(tmp_path / "out"),
        hyperparameters=hp, max_runtime_seconds=300,
    )  # fmt: skip
    spec.update(extra)
    path = tmp_path / f"{name}-{lr}.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdod.demo.dataset import make_sample_data

    root = tmp_path_factory.mktemp("data")
    make_sample_data(root, train=3, validation=2, num_classes=2, seed=5)
    return root


def test_two_jobs_of_one_name_started_together_one_is_refused(data: Path, tmp_path: Path) -> None:
    from sdod.artifact import read_artifact

    specs = [_job_spec(tmp_path, data, "same-name", lr) for lr in ("0.001", "0.004")]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sdod",
                "train",
                "--job-spec",
                str(spec),
                "--job-root",
                str(tmp_path / f"root-{i}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, spec in enumerate(specs)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    loser = next(err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode == 2)
    assert "ResourceInUse" in loser and "same-name" in loser and "Traceback" not in loser
    winner = next(i for i, p in enumerate(procs) if p.returncode == 0)
    model = tmp_path / "out" / "same-name" / "output" / "model.tar.gz"
    lr = json.loads(specs[winner].read_text())["HyperParameters"]["learning_rate"]
    assert read_artifact(model).hyperparams["learning_rate"] == lr  # the winner's, whole
    again = _sdod("train", "--job-spec", str(specs[0]), "--job-root", str(tmp_path / "r3"))
    assert again.returncode == 2 and "already delivered" in again.stderr, again.stderr


def test_a_checkpoint_resumes_only_the_job_and_hyperparameters_that_wrote_it(
    data: Path, tmp_path: Path
) -> None:
    ckpt = {"CheckpointConfig": {"S3Uri": str(tmp_path / "shared-checkpoints")}}
    first = _sdod("train", "--job-spec", str(_job_spec(tmp_path, data, "ck-a", "0.001", **ckpt)),
                  "--job-root", str(tmp_path / "a"))  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "shared-checkpoints" / "checkpoint.pt").is_file()

    other = _sdod("train", "--job-spec", str(_job_spec(tmp_path, data, "ck-b", "0.001", **ckpt)),
                  "--job-root", str(tmp_path / "b"))  # fmt: skip
    assert other.returncode == 2, other.stdout + other.stderr
    assert "written by training job 'ck-a', not 'ck-b'" in other.stdout
    assert not (tmp_path / "out" / "ck-b" / "output" / "model.tar.gz").exists()

    changed = _job_spec(tmp_path, data, "ck-a", "0.01", **ckpt)  # same job, rerun, new lr
    ingest = _sdod("ingest", "--job-spec", str(changed), "--job-root", str(tmp_path / "a"))
    assert ingest.returncode == 0, ingest.stderr
    rerun = _sdod("train", "--job-root", str(tmp_path / "a"))
    assert rerun.returncode == 2, rerun.stdout + rerun.stderr
    assert "other hyperparameters (learning_rate: 0.001 -> 0.01)" in rerun.stdout


def test_a_model_without_a_usable_map_is_not_published_unless_forced(tmp_path: Path) -> None:
    good = write_tiny_model(tmp_path / "good.tar.gz", metrics={"validation:mAP": 0.6})
    null = write_tiny_model(tmp_path / "null.tar.gz", metrics={"validation:mAP": None})
    worse = write_tiny_model(tmp_path / "worse.tar.gz", metrics={"validation:mAP": 0.5})
    group = str(tmp_path / "registry" / "detector")
    assert _sdod("publish", "--model", str(good), "--to", group).returncode == 0
    refused = _sdod("publish", "--model", str(null), "--to", group)
    assert refused.returncode == 2 and "not a usable score" in refused.stderr, refused.stderr
    assert not (tmp_path / "registry" / "detector" / "v2").exists()
    forced = _sdod("publish", "--model", str(null), "--to", group, "--force", "--json")
    assert forced.returncode == 0 and json.loads(forced.stdout)["version"] == 2
    # the null version does not switch the rule off: v1's 0.6 still holds the line
    below = _sdod("publish", "--model", str(worse), "--to", group)
    assert below.returncode == 2 and "below version v1's 0.6" in below.stderr, below.stderr
    assert sorted(os.listdir(tmp_path / "registry" / "detector")) == ["v1", "v2"]
