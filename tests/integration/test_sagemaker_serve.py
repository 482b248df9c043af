"""`sdod serve` on SageMaker's own model.tar.gz, called as a SageMaker endpoint is: boto3's
`sagemaker-runtime` `invoke_endpoint` with the JPEG bytes. The response pairs with MXNet's
detections by the fixture README's rule (tests/integration/test_sagemaker_models.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_sagemaker_models import MX, RESNET, VGG, assert_pairs, mxnet_rows

pytestmark = pytest.mark.integration
# the largest photo (06_hubble, past MXNet's top-400 cut), a grey one and a small one
PHOTOS = ("06_hubble.jpg", "17_coins_gray.jpg", "05_motorcycle_right_small.jpg")


@pytest.fixture(params=[RESNET, VGG], ids=lambda f: f.name)
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A real `sdod serve --model <SageMaker's model.tar.gz> --port 0` process and its URL."""
    folder: Path = request.param
    env = {**os.environ, "SDOD_CACHE_DIR": str(tmp_path / "cache")}
    argv = ["serve", "--model", str(folder / "model.tar.gz"), "--port", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdod", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()  # printed once the model is converted and listening
        if " on http://" not in line:
            proc.kill()
            pytest.fail(f"sdod serve did not start: {line!r} {proc.stderr.read()[-2000:]}")
        yield folder, line.split(" on ")[1].split()[0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_invoke_endpoint_answers_as_sagemaker_did(endpoint: tuple[Path, str]) -> None:
    import boto3

    folder, url = endpoint
    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    for photo in PHOTOS:
        response = runtime.invoke_endpoint(
            EndpointName="x",
            ContentType="application/x-image",
            Body=(MX / "images" / photo).read_bytes(),
        )
        assert response["ContentType"] == "application/json"
        got = json.loads(response["Body"].read())["prediction"]
        want, floor = mxnet_rows(folder, photo)
        assert all(len(row) == 6 and isinstance(row[0], float) for row in got)
        assert_pairs(got, want, floor)
        assert abs(len(got) - len(want)) <= 3, photo
