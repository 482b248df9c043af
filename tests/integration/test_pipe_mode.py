"""Pipe mode: records streamed from S3 (moto over HTTP) without a full download; the train
channel's ShuffleConfig.Seed orders its batches."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sdod.data.pipe import stream_records
from sdod.data.rec_samples import read_records
from sdod.data.recordio import RecordStream
from sdod.storage import open_stream
from tests.integration.conftest import S3Endpoint

pytestmark = pytest.mark.integration
MX_REC = Path(__file__).resolve().parents[1] / "fixtures" / "mxnet" / "rec"


@pytest.fixture(scope="module")
def rec_uri(s3_endpoint: S3Endpoint, tmp_path_factory: pytest.TempPathFactory) -> str:
    local = tmp_path_factory.mktemp("rec")
    shutil.copy(MX_REC / "train.rec", local / "train.rec")
    return s3_endpoint.upload_dir(local, "pipe") + "/train.rec"


def test_streamed_records_equal_the_local_file(rec_uri: str) -> None:
    local = [
        (offset, r.id, r.label.tolist(), r.image)
        for _, offset, r in read_records(MX_REC / "train.rec")
    ]
    streamed = [(offset, r.id, r.label.tolist(), r.image) for offset, r in stream_records(rec_uri)]
    assert streamed == local


def test_reading_the_first_record_does_not_download_the_file(rec_uri: str) -> None:
    size = (MX_REC / "train.rec").stat().st_size
    with open_stream(rec_uri, block_size=64 * 1024) as f:
        first = RecordStream(f, rec_uri).next()
        assert first is not None and len(first) > 60_000
        assert f.cache.total_requested_bytes < size / 4


def _pipe_spec(name: str, channels: list[dict], out: str) -> dict:
    return {
        "TrainingJobName": name,
        "HyperParameters": {
            "base_network": "mobilenet-v3",
            "use_pretrained_model": "0",
            "num_classes": "3",
            "num_training_samples": "6",
            "epochs": "2",
            "mini_batch_size": "2",
        },
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": out},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def _channel(name: str, uri: str, **extra: object) -> dict:
    source = {"S3DataType": extra.pop("S3DataType", "S3Prefix"), "S3Uri": uri, **extra}
    return {
        "ChannelName": name,
        "InputMode": "Pipe",
        "ContentType": "application/x-recordio",
        "DataSource": {"S3DataSource": source},
    }


def _train_pipe(spec: dict, root: Path) -> list[str]:
    from sdod import stages

    ingested = stages.ingest(job_spec=spec, job_root=str(root))
    assert sorted(ingested.pipe_channels) == ["train", "validation"] and ingested.channels == {}
    lines: list[str] = []
    outcome = stages.train(job_root=str(root), log=lines.append)
    assert outcome.status == "Completed", outcome.message + "\n".join(lines)
    assert outcome.metrics["epochs_completed"] == 2
    return lines


def test_training_in_pipe_mode_streams_recordio_from_s3(
    s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    from sdod import tools
    from sdod.demo.dataset import make_sample_data

    make_sample_data(tmp_path / "d", train=6, validation=2, num_classes=3, seed=5)
    for ch in ("train", "validation"):
        (tmp_path / "rec" / ch).mkdir(parents=True)
        tools.pack(
            out=str(tmp_path / "rec" / ch / ch),
            images=str(tmp_path / "d" / ch),
            annotations=str(tmp_path / "d" / f"{ch}_annotation"),
        )
    prefix = s3_endpoint.upload_dir(tmp_path / "rec", "pipe-train")
    spec = _pipe_spec(
        "pipe-rec",
        [_channel(ch, f"{prefix}/{ch}/") for ch in ("train", "validation")],
        f"s3://{s3_endpoint.bucket}/out",
    )
    root = tmp_path / "job"
    lines = _train_pipe(spec, root)
    assert any("6 train, 2 validation images" in line for line in lines)
    # nothing of the data landed on disk: the records were streamed
    assert not list(root.rglob("*.rec")) and not list(root.rglob("*.jpg"))
    assert (root / "model" / "model.tar.gz").is_file()


def test_training_in_pipe_mode_streams_an_augmented_manifest(
    s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    from sdod.demo.dataset import make_sample_data

    prefix = f"s3://{s3_endpoint.bucket}/pipe-manifest/"
    make_sample_data(
        tmp_path / "d", fmt="manifest", train=6, validation=2, seed=5, source_ref_prefix=prefix
    )
    s3_endpoint.upload_dir(tmp_path / "d", "pipe-manifest")
    attrs = {"AttributeNames": ["source-ref", "bounding-box"]}
    channels = [
        {**_channel(ch, f"{prefix}{ch}.manifest", S3DataType="AugmentedManifestFile"),
         "RecordWrapperType": "RecordIO", **attrs}
        for ch in ("train", "validation")
    ]  # fmt: skip
    root = tmp_path / "job"
    _train_pipe(_pipe_spec("pipe-manifest", channels, f"{prefix}out"), root)
    assert not list(root.rglob("*.jpg"))  # images fetched one by one, never stored


def test_job_level_input_mode_fastfile_and_a_gzip_manifest_stream_too(
    s3_endpoint: S3Endpoint, tmp_path: Path
) -> None:
    """AlgorithmSpecification.TrainingInputMode is the channels' default; FastFile streams
    like Pipe; CompressionType Gzip decompresses the augmented manifest."""
    import gzip

    from sdod.demo.dataset import make_sample_data

    prefix = f"s3://{s3_endpoint.bucket}/fastfile-manifest/"
    make_sample_data(
        tmp_path / "d", fmt="manifest", train=6, validation=2, seed=5, source_ref_prefix=prefix
    )
    for ch in ("train", "validation"):
        plain = tmp_path / "d" / f"{ch}.manifest"
        (tmp_path / "d" / f"{ch}.manifest.gz").write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    s3_endpoint.upload_dir(tmp_path / "d", "fastfile-manifest")
    channels = []
    for ch in ("train", "validation"):
        entry = _channel(ch, f"{prefix}{ch}.manifest.gz", S3DataType="AugmentedManifestFile",
                         AttributeNames=["source-ref", "bounding-box"])  # fmt: skip
        del entry["InputMode"]  # from AlgorithmSpecification.TrainingInputMode
        channels.append({**entry, "CompressionType": "Gzip", "RecordWrapperType": "RecordIO"})
    spec = _pipe_spec("fastfile-manifest", channels, f"{prefix}out")
    spec["AlgorithmSpecification"] = {"TrainingInputMode": "FastFile", "TrainingImage": "x"}
    root = tmp_path / "job"
    _train_pipe(spec, root)
    assert not list(root.rglob("*.jpg"))


def test_shuffle_config_seed_of_a_pipe_channel_orders_the_batches(
    s3_endpoint: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same initial weights (SDOD_SEED), one epoch of 3 batches: the same ShuffleConfig.Seed
    trains the same weights bit for bit, another seed other weights (another batch order)."""
    from sdod import stages, tools
    from sdod.artifact import read_artifact
    from sdod.demo.dataset import make_sample_data

    monkeypatch.setenv("SDOD_SEED", "11")
    monkeypatch.setenv("SDOD_DATA_WORKERS", "0")
    make_sample_data(tmp_path / "d", train=6, validation=2, num_classes=3, seed=5)
    for ch in ("train", "validation"):
        (tmp_path / "rec" / ch).mkdir(parents=True)
        tools.pack(out=str(tmp_path / "rec" / ch / ch), images=str(tmp_path / "d" / ch),
                    annotations=str(tmp_path / "d" / f"{ch}_annotation"))  # fmt: skip
    prefix = s3_endpoint.upload_dir(tmp_path / "rec", "pipe-shuffle")

    def weights(shuffle_seed: int, run: str) -> bytes:
        train = {**_channel("train", f"{prefix}/train/"), "ShuffleConfig": {"Seed": shuffle_seed}}
        spec = _pipe_spec(f"shuffle-{run}", [train, _channel("validation", f"{prefix}/validation/")],
                          f"s3://{s3_endpoint.bucket}/shuffle-out")  # fmt: skip
        spec["HyperParameters"].update(epochs="1", augmentation="none")
        root = tmp_path / run
        stages.ingest(job_spec=spec, job_root=str(root))
        outcome = stages.train(job_root=str(root), log=lambda _: None)
        assert outcome.status == "Completed", outcome.message
        return read_artifact(root / "model" / "model.tar.gz").weights

    first = weights(7, "a")
    assert weights(7, "b") == first
    assert weights(8, "c") != first
