"""The CreateTrainingJob requests of SageMaker's documentation (`include/jobs/`) go through
`sdod validate-job` unchanged, and train for real once pointed at data (one tiny epoch)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import S3Endpoint

pytestmark = pytest.mark.integration
JOBS = sorted((Path(__file__).resolve().parents[2] / "include" / "jobs").glob("*.json"))
TINY = {"base_network": "mobilenet-v3", "use_pretrained_model": "0", "num_classes": "3",
        "num_training_samples": "6", "epochs": "1", "mini_batch_size": "3"}  # fmt: skip


@pytest.mark.parametrize("path", JOBS, ids=[p.stem for p in JOBS])
def test_documented_requests_validate_unchanged(path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "sdod", "validate-job", str(path), "--json"],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    raw = json.loads(path.read_text())
    assert plan["TrainingJobName"] == raw["TrainingJobName"]
    assert [c["name"] for c in plan["channels"]] == [
        c["ChannelName"] for c in raw["InputDataConfig"]
    ]
    assert "RoleArn" in plan["ignored_fields"]
    for key, value in raw["HyperParameters"].items():  # normalised, defaults filled in
        if key != "freeze_layer_pattern":
            assert plan["HyperParameters"][key].lower() == value.lower(), key
    assert len(plan["HyperParameters"]) > len(raw["HyperParameters"])


def test_a_bad_request_lists_every_problem(tmp_path: Path) -> None:
    raw = json.loads(JOBS[0].read_text())
    raw["TrainingJobName"] = "not_valid"
    raw["HyperParameters"]["epochs"] = "zero"
    raw["HyperParameters"]["learnig_rate"] = "0.1"
    raw["StoppingCondition"]["MaxRuntimeInSeconds"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    run = subprocess.run([sys.executable, "-m", "sdod", "validate-job", str(tmp_path / "bad.json")],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "4 problem(s)" in run.stderr
    for says in ("TrainingJobName 'not_valid'", "epochs='zero'", "did you mean learning_rate",
                 "MaxRuntimeInSeconds must be 1 to 2419200"):  # fmt: skip
        assert says in run.stderr, says


def _data(kind: str, root: Path, s3: S3Endpoint) -> str:
    """Sample data in the format a documented request expects, on the S3 endpoint."""
    from sdod import tools
    from sdod.demo.dataset import make_sample_data

    prefix = f"s3://{s3.bucket}/documented/{kind}/"
    if kind == "manifest":
        make_sample_data(root, fmt="manifest", train=6, validation=3, seed=8,
                         source_ref_prefix=prefix)  # fmt: skip
    else:
        make_sample_data(root / "img", train=6, validation=3, seed=8)
        if kind == "recordio":
            for ch in ("train", "validation"):
                (root / ch).mkdir(parents=True)
                tools.pack(out=str(root / ch / ch), images=str(root / "img" / ch),
                            annotations=str(root / "img" / f"{ch}_annotation"))  # fmt: skip
        else:
            root = root / "img"
    s3.upload_dir(root, f"documented/{kind}")
    return prefix


@pytest.mark.parametrize("path", JOBS, ids=[p.stem for p in JOBS])
def test_documented_requests_train_once_pointed_at_data(
    path: Path, s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    from sdod import stages

    raw = json.loads(path.read_text())
    channels = raw["InputDataConfig"]
    manifest = (
        channels[0]["DataSource"]["S3DataSource"].get("S3DataType") == "AugmentedManifestFile"
    )
    recordio = channels[0]["ContentType"] == "application/x-recordio"
    kind = "manifest" if manifest else "recordio" if recordio else "images"
    prefix = _data(kind, tmp_path / "data", s3_endpoint)
    spec = copy.deepcopy(raw)  # only where the data is, and a tiny budget, change
    for channel in spec["InputDataConfig"]:
        name = channel["ChannelName"]
        channel["DataSource"]["S3DataSource"]["S3Uri"] = (
            f"{prefix}{name}.manifest" if manifest else f"{prefix}{name}/"
        )
    spec["HyperParameters"].update(TINY)
    spec["OutputDataConfig"]["S3OutputPath"] = f"s3://{s3_endpoint.bucket}/documented-out"
    lines: list[str] = []
    outcome = stages.train(job_spec=spec, job_root=str(tmp_path / "job"), log=lines.append)
    assert outcome.status == "Completed", outcome.message + "\n".join(lines[-20:])
    assert outcome.model_uri == (
        f"s3://{s3_endpoint.bucket}/documented-out/{raw['TrainingJobName']}/output/model.tar.gz"
    )


def _imagenet_files(folder: Path) -> Path:
    """MXNet's ImageNet files under their names, stood in for by the fixture artifacts'
    `.params` (the same format, and the base networks' names and shapes)."""
    import tarfile

    sm = Path(__file__).resolve().parents[1] / "fixtures" / "mxnet" / "sagemaker_ssd"
    folder.mkdir()
    for artifact, name in (("vgg16_reduced_300_c3", "vgg16_reduced-0001.params"),
                           ("resnet50_300_c2", "resnet-50-0000.params")):  # fmt: skip
        with tarfile.open(sm / artifact / "model.tar.gz") as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(".params"))
            data = tar.extractfile(member)
            assert data is not None
            (folder / name).write_bytes(data.read())
    return folder


@pytest.mark.parametrize("network", ["vgg-16", "resnet-50"])
def test_a_documented_request_trains_sagemakers_network_from_imagenet_weights(
    network: str, s3_endpoint: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdod import stages
    from sdod.artifact import read_artifact
    from sdod.model.sagemaker_layout import SOURCE

    path = next(p for p in JOBS if p.stem == "image-format")
    spec = json.loads(path.read_text())
    prefix = _data("images", tmp_path / "data", s3_endpoint)
    for channel in spec["InputDataConfig"]:
        channel["DataSource"]["S3DataSource"]["S3Uri"] = f"{prefix}{channel['ChannelName']}/"
    spec["HyperParameters"].update(
        {**TINY, "base_network": network, "use_pretrained_model": "1", "epochs": "1"}
    )
    spec["OutputDataConfig"]["S3OutputPath"] = f"s3://{s3_endpoint.bucket}/nets-{network}"
    monkeypatch.setenv("SDOD_PRETRAINED_DIR", str(_imagenet_files(tmp_path / "imagenet")))
    lines: list[str] = []
    outcome = stages.train(job_spec=spec, job_root=str(tmp_path / "job"), log=lines.append)
    assert outcome.status == "Completed", outcome.message + "\n".join(lines[-20:])
    said = next(line for line in lines if "pretrained:" in line)
    assert ("vgg16_reduced-0001.params" if network == "vgg-16" else "resnet-50-0000.params") in said
    config = read_artifact(tmp_path / "job" / "model" / "model.tar.gz").model_config
    assert config.variant == "sagemaker" and config.base_network == network
    assert config.network is not None and config.network["source"] == SOURCE
    assert config.anchor_count == (8732 if network == "vgg-16" else 2268)
    assert config.nms_topk == 400
