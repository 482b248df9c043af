"""`sdod serve` as production inference, through real clients against a real server process:
boto3's `invoke_endpoint`, the Open Inference Protocol v2 over HTTP (JSON and the binary
extension), `/metrics` read by prometheus_client's parser, dynamic batching under
concurrent load, the queue's 503s, SIGTERM during a burst, several workers, and
SageMaker's hosting environment."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.security.conftest import Server, noise_jpeg, start_server, write_tiny_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("endpoint") / "model.tar.gz")


@pytest.fixture(scope="module")
def server(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_server(
        model, tmp_path_factory.mktemp("batched"), "--max-batch", "8", "--max-delay-ms", "100"
    )
    try:
        yield started
    finally:
        started.stop()


def call(
    port: int, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def invoke(port: int, image: bytes, query: str = "") -> tuple[int, dict[str, str], Any]:
    status, headers, body = call(
        port, "POST", "/invocations" + query, image, **{"Content-Type": "image/jpeg"}
    )
    return status, headers, json.loads(body)


def scores(prediction: list[list[float]]) -> list[float]:
    return [row[1] for row in prediction]


def metric_samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    status, headers, body = call(port, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_concurrent_requests_are_batched_and_answered_as_alone(server: Server) -> None:
    images = [noise_jpeg(seed) for seed in range(16)]
    alone = [invoke(server.port, image, "?top_k=20")[2]["prediction"] for image in images]
    before = metric_samples(server.port)
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda im: invoke(server.port, im, "?top_k=20"), images))
    for (status, _, body), single in zip(together, alone, strict=True):
        assert status == 200
        assert len(body["prediction"]) == len(single)
        assert scores(body["prediction"]) == pytest.approx(scores(single), abs=1e-4)
    after = metric_samples(server.port)
    batches = after[("sdod_batch_size_count", ())] - before[("sdod_batch_size_count", ())]
    images_run = after[("sdod_batch_size_sum", ())] - before[("sdod_batch_size_sum", ())]
    assert images_run == 16 and batches < 16  # some forward passes took several images
    ok = (("route", "invocations"), ("status", "200"))
    assert after[("sdod_requests_total", ok)] - before.get(("sdod_requests_total", ok), 0) == 16
    assert ("sdod_queue_depth", ()) in after
    assert after[("sdod_request_duration_seconds_count", (("route", "invocations"),))] >= 32


def test_boto3_invoke_endpoint_with_custom_attributes_and_accept(server: Server) -> None:
    import boto3

    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=f"http://127.0.0.1:{server.port}",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    answer = runtime.invoke_endpoint(
        EndpointName="my-endpoint",
        Body=noise_jpeg(1),
        ContentType="image/jpeg",
        Accept="application/json",
        CustomAttributes="top_k=3,score_threshold=0.0",
    )
    rows = json.loads(answer["Body"].read())["prediction"]
    assert answer["ContentType"] == "application/json" and 0 < len(rows) <= 3
    status, _, body = call(
        server.port,
        "POST",
        "/invocations",
        noise_jpeg(1),
        **{"Content-Type": "image/jpeg", "Accept": "text/csv"},
    )
    assert status == 406 and "application/json" in json.loads(body)["error"]


def test_open_inference_protocol_json_and_binary(server: Server) -> None:
    port = server.port
    assert call(port, "GET", "/v2/health/live")[0] == 200
    assert call(port, "GET", "/v2/health/ready")[0] == 200
    assert call(port, "GET", "/v2/models/model/ready")[0] == 200
    status, _, meta = call(port, "GET", "/v2/models/model")
    meta = json.loads(meta)
    assert status == 200 and meta["inputs"][0] == {
        "name": "image",
        "datatype": "BYTES",
        "shape": [-1],
    }
    assert {o["name"] for o in meta["outputs"]} == {"num_detections", "classes", "scores", "boxes"}
    images = [noise_jpeg(2), noise_jpeg(3, (300, 200))]
    singles = [invoke(port, image, "?top_k=5")[2]["prediction"] for image in images]
    request = {
        "id": "r1",
        "parameters": {"top_k": 5},
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [2],
                "data": [base64.b64encode(i).decode() for i in images],
            }
        ],
    }
    status, _, body = call(port, "POST", "/v2/models/model/infer", json.dumps(request).encode())
    answer = json.loads(body)
    assert status == 200 and answer["id"] == "r1" and answer["model_name"] == "model"
    out = {o["name"]: o for o in answer["outputs"]}
    n = max(len(s) for s in singles)
    assert out["num_detections"]["data"] == [len(s) for s in singles]
    assert out["boxes"]["shape"] == [2, n, 4] and out["scores"]["shape"] == [2, n]
    for k, single in enumerate(singles):
        got = out["scores"]["data"][k * n : k * n + len(single)]
        assert got == pytest.approx(scores(single), abs=1e-4)
    # Triton's binary extension: raw BYTES in, binary FP32 scores out
    raw = b"".join(struct.pack("<I", len(i)) + i for i in images)
    head = dict(
        request,
        inputs=[
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [2],
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
    )
    head["outputs"] = [{"name": "scores", "parameters": {"binary_data": True}}]
    text = json.dumps(head).encode()
    status, headers, body = call(
        port,
        "POST",
        "/v2/models/model/infer",
        text + raw,
        **{"Inference-Header-Content-Length": str(len(text))},
    )
    assert status == 200, body
    split = int(headers["inference-header-content-length"])
    (scores_out,) = json.loads(body[:split])["outputs"]
    values = struct.unpack(f"<{2 * n}f", body[split:])
    assert scores_out["parameters"]["binary_data_size"] == 8 * n
    assert list(values[: len(singles[0])]) == pytest.approx(scores(singles[0]), abs=1e-4)


@pytest.mark.parametrize(
    "path, body, status, words",
    [
        ("/v2/models/model/infer", b"[" * 100_000, 400, "JSON"),
        (
            "/v2/models/model/infer",
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": [1]}]}',
            400,
            "parameters",
        ),
        (
            "/v2/models/model/infer",
            b'{"parameters": {"score_threshold": 1.5}, "inputs": []}',
            400,
            "inputs",
        ),
        ("/v2/models/other/infer", b"{}", 404, "serves 'model'"),
        ("/v2/models/model/infer", b"not json", 400, "not JSON"),
        (
            "/v2/models/model/infer",
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}',
            400,
            "BYTES",
        ),
        (
            "/v2/models/model/infer",
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}',
            400,
            "base64",
        ),
        (
            "/v2/models/model/infer",
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [2], "data": ["AAAA"]}]}',
            400,
            "shape says 2",
        ),
        (
            "/v2/models/model/infer",
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["AAAA"]}]}',
            415,
            "JPEG or PNG",
        ),
        (
            "/v2/models/model/infer",
            b'{"parameters": {"top_k": 0}, "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["AAAA"]}]}',
            400,
            "top_k",
        ),
    ],
)
def test_open_inference_protocol_refusals(
    server: Server, path: str, body: bytes, status: int, words: str
) -> None:
    got, headers, answer = call(server.port, "POST", path, body)
    assert got == status and words in json.loads(answer)["error"], answer
    assert headers["connection"] == "close"


def test_keep_alive_connection_serves_many_requests(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for seed in range(5):
            conn.request(
                "POST", "/invocations", body=noise_jpeg(seed), headers={"Content-Type": "image/png"}
            )
            response = conn.getresponse()
            assert response.status in (200, 415)
            response.read()
            conn.request("GET", "/ping")
            pong = conn.getresponse()
            pong.read()
            assert pong.status == 200
    finally:
        conn.close()


def test_a_full_queue_answers_503_with_retry_after_and_nobody_waits_past_the_timeout(
    model: Path, tmp_path: Path
) -> None:
    server = start_server(
        model,
        tmp_path,
        "--max-queue",
        "4",
        "--queue-timeout",
        "1",
        "--max-batch",
        "1",
        "--workers",
        "1",
    )
    images = [noise_jpeg(seed, (640, 480)) for seed in range(8)]

    def one(k: int) -> tuple[int, dict[str, str], float]:
        started = time.monotonic()
        status, headers, _ = call(
            server.port, "POST", "/invocations", images[k % 8], **{"Content-Type": "image/jpeg"}
        )
        return status, headers, time.monotonic() - started

    try:
        with ThreadPoolExecutor(64) as pool:
            results = list(pool.map(one, range(64)))
        statuses = [s for s, _, _ in results]
        assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses
        for status, headers, _ in results:
            if status == 503:
                assert headers["retry-after"].isdigit()
        waited = [seconds for status, _, seconds in results if status == 200]
        assert max(waited) < 1 + 3  # the queue timeout, one batch and a decode (loaded CI)
        assert server.ping() == 200 and "Traceback" not in server.log()
    finally:
        server.stop()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_during_a_burst_answers_every_accepted_request(
    model: Path, tmp_path: Path, workers: str
) -> None:
    server = start_server(
        model, tmp_path, "--max-batch", "32", "--max-delay-ms", "700", "--workers", workers
    )
    answers: list[int] = []
    lock = threading.Lock()

    def one(seed: int) -> None:
        status, _, _ = call(
            server.port, "POST", "/invocations", noise_jpeg(seed), **{"Content-Type": "image/jpeg"}
        )
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=one, args=(seed,)) for seed in range(12)]
    for thread in threads:
        thread.start()
    time.sleep(0.4)  # all accepted, waiting in the batcher for company
    server.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(60)
    assert server.proc.wait(timeout=60) == 0
    assert answers == [200] * 12
    assert "Traceback" not in server.log()


def test_two_workers_share_the_port_and_the_metrics(model: Path, tmp_path: Path) -> None:
    server = start_server(model, tmp_path, "--workers", "2")
    try:
        for seed in range(12):
            assert invoke(server.port, noise_jpeg(seed))[0] == 200
        children = subprocess.run(
            ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) >= 2
        samples = metric_samples(server.port)
        ok = ("sdod_requests_total", (("route", "invocations"), ("status", "200")))
        assert samples[ok] == 12  # counted by whichever worker answered, summed
    finally:
        server.stop()
    assert server.proc.returncode == 0


def test_sagemaker_hosting_environment_sets_port_and_workers(model: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdod", "serve", "--model", str(model), "--host", "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f":{port} " in line and "2 worker(s)" in line, line
        deadline = time.monotonic() + 60
        while True:
            try:
                if call(port, "GET", "/ping")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    bad = {**os.environ, "SAGEMAKER_MODEL_SERVER_WORKERS": "two"}
    result = subprocess.run(
        [sys.executable, "-m", "sdod", "serve", "--model", str(model), "--port", "0"],
        capture_output=True, text=True, env=bad, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "SAGEMAKER_MODEL_SERVER_WORKERS" in result.stderr
    assert re.search(r"Traceback", result.stderr) is None


def test_onnxruntime_backend_batches_and_agrees_with_torch(
    server: Server, model: Path, tmp_path: Path
) -> None:
    exported = tmp_path / "model-onnx.tar.gz"
    result = subprocess.run(
        [sys.executable, "-m", "sdod", "export-onnx", "--model", str(model), "--out", str(exported)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    onnx = start_server(
        exported, tmp_path, "--backend", "onnxruntime", "--max-batch", "8", "--max-delay-ms", "100"
    )
    try:
        images = [noise_jpeg(seed) for seed in range(8)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda im: invoke(onnx.port, im, "?top_k=10"), images))
        for image, (status, _, body) in zip(images, answers, strict=True):
            reference = invoke(server.port, image, "?top_k=10")[2]["prediction"]
            assert status == 200
            assert scores(body["prediction"]) == pytest.approx(scores(reference), abs=1e-4)
        samples = metric_samples(onnx.port)
        assert samples[("sdod_batch_size_count", ())] < 8  # batched on onnxruntime too
    finally:
        onnx.stop()


def test_a_large_image_tile_by_tile_through_custom_attributes(server: Server, model: Path) -> None:
    from sdod.serve.predictor import Predictor
    from sdod.serve.slicing import Slicing

    image = noise_jpeg(7, (1100, 800))
    status, _, body = call(
        server.port, "POST", "/invocations", image,
        **{"Content-Type": "image/jpeg", "X-Amzn-SageMaker-Custom-Attributes": "tile_size=400,tile_overlap=100,top_k=20"},
    )  # fmt: skip
    assert status == 200, body
    expected = Predictor.load(model).predict_sliced(image, Slicing(400, 100), top_k=20)
    got = json.loads(body)["prediction"]
    assert scores(got) == pytest.approx(scores(expected["prediction"]), abs=1e-4)
    status, _, body = call(
        server.port, "POST", "/invocations?tile_size=10", image, **{"Content-Type": "image/jpeg"}
    )
    assert status == 400 and "tile size" in json.loads(body)["error"]


def test_hostile_requests_leave_the_connection_count_whole(server: Server) -> None:
    """WebSocket upgrades, a non-digit binary header, a request asking for thousands of
    tiles: each answered as JSON, none holding a connection slot afterwards."""
    upgrade = b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    for _ in range(140):  # more than the 128 connections the server allows
        assert server.send(upgrade).status in (200, 400)
    status, _, body = call(
        server.port,
        "POST",
        "/v2/models/model/infer",
        b"{}",
        **{"Inference-Header-Content-Length": "\u00b2"},
    )
    assert status == 400 and "error" in json.loads(body)
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (3200, 3200), (9, 9, 9)).save(buf, "PNG")
    started = time.monotonic()
    status, _, body = call(
        server.port,
        "POST",
        "/invocations?tile_size=32&tile_overlap=0",
        buf.getvalue(),
        **{"Content-Type": "image/png"},
    )
    assert status == 413 and "tiles" in json.loads(body)["error"]
    assert time.monotonic() - started < 10
    assert server.ping() == 200 and "Traceback" not in server.log()
