"""Pipe mode: records streamed from S3 (moto over HTTP) without a full download, seeded shuffle."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sdod.data.pipe import shuffle_buffer, stream_records
from sdod.data.recfile import read_records
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


def test_seeded_shuffle_is_a_deterministic_permutation(rec_uri: str) -> None:
    def order(seed: int) -> list[int]:
        return [r.id for _, r in stream_records(rec_uri, shuffle_seed=seed, buffer_size=8)]

    assert sorted(order(1)) == list(range(20))
    assert order(1) == order(1)
    assert order(1) != order(2)
    assert order(1) != list(range(20))


def test_reading_the_first_record_does_not_download_the_file(rec_uri: str) -> None:
    size = (MX_REC / "train.rec").stat().st_size
    with open_stream(rec_uri, block_size=64 * 1024) as f:
        first = RecordStream(f, rec_uri).next()
        assert first is not None and len(first) > 60_000
        assert f.cache.total_requested_bytes < size / 4


def test_shuffle_buffer_keeps_every_item() -> None:
    items = list(range(1000))
    out = list(shuffle_buffer(iter(items), seed=3, size=64))
    assert sorted(out) == items and out != items
