"""Dynamic batching (`sdod.serve.batching`), the batched forward pass, the Open Inference
Protocol's request rules (`sdod.serve.oip`) and the serve options."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import threading
import time
from pathlib import Path

import pytest
import torch

from sdod.errors import UserError
from sdod.serve import oip
from sdod.serve.batching import Batcher, Busy
from sdod.serve.options import ServeOptions, default_workers, environment_port, from_environment
from sdod.serve.predictor import Predictor
from tests.security.conftest import noise_jpeg, write_tiny_model


def _jpeg(seed: int) -> bytes:
    return noise_jpeg(seed, (120, 90))


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    path = write_tiny_model(tmp_path_factory.mktemp("batching") / "model.tar.gz")
    return Predictor.load(Path(path))


def test_forward_many_answers_each_image_as_alone_with_its_own_options(
    predictor: Predictor,
) -> None:
    images = [predictor.prepare(_jpeg(seed)) for seed in range(5)]
    options = [(0.0, 3), (0.0, None), (0.3, None), (0.0, 1), (1.0, None)]
    together = predictor.forward_many(torch.cat(images), options)
    for image, (threshold, top_k), answer in zip(images, options, together, strict=True):
        alone = predictor.forward(image, score_threshold=threshold, top_k=top_k)["prediction"]
        assert len(answer["prediction"]) == len(alone)
        got = [row[1] for row in answer["prediction"]]
        assert got == pytest.approx([row[1] for row in alone], abs=1e-5)
        assert all(row[1] >= threshold for row in answer["prediction"])
    assert len(together[0]["prediction"]) <= 3 and len(together[3]["prediction"]) <= 1
    with pytest.raises(UserError, match="top-k"):
        predictor.forward_many(torch.cat(images[:1]), [(0.0, 0)])


class Gate:
    """Wraps a predictor's forward_many: records batch sizes, can hold the model."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor, self.sizes = predictor, []
        self.open = threading.Event()
        self.open.set()

    def forward_many(self, images: torch.Tensor, options: list) -> list:
        self.open.wait(30)
        self.sizes.append(len(images))
        return self.predictor.forward_many(images, options)


def _run(coro):
    return asyncio.run(coro)


def test_waiting_images_share_forward_passes_up_to_max_batch(predictor: Predictor) -> None:
    gate = Gate(predictor)
    options = ServeOptions(max_batch=4, max_delay_ms=200, max_queue=64)
    image = predictor.prepare(_jpeg(1))

    async def main() -> list:
        batcher = Batcher(gate, options)  # type: ignore[arg-type]
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit(image, 0.0, 2) for _ in range(10)))
        await batcher.stop()
        return answers

    answers = _run(main())
    assert len(answers) == 10 and all(len(a["prediction"]) <= 2 for a in answers)
    assert sum(gate.sizes) == 10 and max(gate.sizes) == 4 and len(gate.sizes) == 3


def test_a_lone_image_waits_at_most_max_delay(predictor: Predictor) -> None:
    options = ServeOptions(max_batch=8, max_delay_ms=50)
    image = predictor.prepare(_jpeg(2))

    async def main() -> float:
        batcher = Batcher(predictor, options)
        batcher.start()
        await batcher.submit(image, 0.0, None)  # warm
        started = time.monotonic()
        await batcher.submit(image, 0.0, None)
        took = time.monotonic() - started
        await batcher.stop()
        return took

    assert _run(main()) < 0.05 + 1.0


def test_a_full_queue_and_a_long_wait_are_busy_and_taken_images_are_answered(
    predictor: Predictor,
) -> None:
    gate = Gate(predictor)
    options = ServeOptions(max_batch=1, max_delay_ms=1, max_queue=2, queue_timeout=0.3)
    image = predictor.prepare(_jpeg(3))

    async def main() -> list:
        batcher = Batcher(gate, options)  # type: ignore[arg-type]
        batcher.start()
        gate.open.clear()  # the model is stuck on the first image
        first = asyncio.create_task(batcher.submit(image, 0.0, None))
        await asyncio.sleep(0.05)
        waiting = [asyncio.create_task(batcher.submit(image, 0.0, None)) for _ in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(Busy, match="already waiting"):
            await batcher.submit(image, 0.0, None)
        results = await asyncio.gather(*waiting, return_exceptions=True)
        gate.open.set()
        answered = await first  # taken before the timeout: answered, however long it took
        await batcher.stop()
        return [answered, *results]

    answered, *timed_out = _run(main())
    assert "prediction" in answered
    assert all(isinstance(r, Busy) and "waited 0.3 s" in str(r) for r in timed_out)


def _infer(images: list[bytes], **extra: object) -> bytes:
    data = [base64.b64encode(i).decode() for i in images]
    inputs = [{"name": "image", "datatype": "BYTES", "shape": [len(images)], "data": data}]
    return json.dumps({"inputs": inputs, **extra}).encode()


def test_infer_requests_in_json_and_binary() -> None:
    request = oip.parse_infer(_infer([b"ab", b"c"], parameters={"score_threshold": 0.5}), None)
    assert request.images == [b"ab", b"c"] and request.score_threshold == 0.5
    assert request.outputs == dict.fromkeys(oip.OUTPUTS, False)
    raw = struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"
    tensor = {
        "name": "image",
        "datatype": "BYTES",
        "shape": [2],
        "parameters": {"binary_data_size": len(raw)},
    }
    head = json.dumps(
        {"inputs": [tensor], "outputs": [{"name": "boxes", "parameters": {"binary_data": True}}]}
    ).encode()
    request = oip.parse_infer(head + raw, str(len(head)))
    assert request.images == [b"ab", b"c"] and request.outputs == {"boxes": True}
    for bad_raw in (raw[:-1], raw + b"\x00", struct.pack("<I", 2**31) + b"ab"):
        bad_head = head.replace(str(len(raw)).encode(), str(len(bad_raw)).encode())
        with pytest.raises(UserError, match="inputs\\[0\\]"):
            oip.parse_infer(bad_head + bad_raw, str(len(bad_head)))
    with pytest.raises(UserError, match="1 to 64 images"):
        oip.parse_infer(_infer([b"x"] * 65), None)
    for header in ("0", "-1", "abc", str(len(head) + len(raw) + 1)):
        with pytest.raises(UserError, match="inference-header-content-length"):
            oip.parse_infer(head + raw, header)
    with pytest.raises(UserError, match="outputs"):
        oip.parse_infer(_infer([b"x"], outputs=[{"name": "logits"}]), None)


def test_infer_response_pads_to_the_image_with_most_detections() -> None:
    request = oip.parse_infer(_infer([b"a", b"b"], id="q"), None)
    rows = [[[1.0, 0.9, 0.1, 0.2, 0.3, 0.4], [0.0, 0.5, 0.0, 0.0, 1.0, 1.0]], []]
    body, headers = oip.infer_response("m", request, rows)
    answer = json.loads(body)
    assert headers["content-type"] == "application/json" and answer["id"] == "q"
    out = {o["name"]: o for o in answer["outputs"]}
    assert out["num_detections"]["data"] == [2, 0]
    assert out["classes"] == {
        "name": "classes",
        "datatype": "INT32",
        "shape": [2, 2],
        "data": [1, 0, -1, -1],
    }
    assert out["scores"]["data"] == [0.9, 0.5, 0.0, 0.0]
    assert out["boxes"]["shape"] == [2, 2, 4] and out["boxes"]["data"][:4] == [0.1, 0.2, 0.3, 0.4]


def test_serve_options_from_sagemaker_environment_and_defaults() -> None:
    env = {
        "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "60",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6",
    }
    options = ServeOptions().merged(from_environment(env)).merged({"workers": None, "max_batch": 4})
    assert (options.workers, options.queue_timeout, options.max_batch) == (3, 60.0, 4)
    assert options.max_request_bytes == 6 << 20
    assert environment_port({"SAGEMAKER_BIND_TO_PORT": "8081"}) == 8081
    for bad in ({"SAGEMAKER_MODEL_SERVER_WORKERS": "two"}, {"SAGEMAKER_MODEL_SERVER_WORKERS": "0"}):
        with pytest.raises(UserError, match=r"SAGEMAKER_MODEL_SERVER_WORKERS|--workers"):
            ServeOptions().merged(from_environment(bad))
    with pytest.raises(UserError, match="SAGEMAKER_BIND_TO_PORT"):
        environment_port({"SAGEMAKER_BIND_TO_PORT": "99999"})
    with pytest.raises(UserError, match="--max-batch must be a positive number"):
        ServeOptions(max_batch=0)
    assert default_workers(50 << 20, cpus=2, memory=24 << 30) == 2
    assert default_workers(50 << 20, cpus=1, memory=24 << 30) == 1
    assert default_workers(50 << 20, cpus=16, memory=24 << 30) == 8
    assert default_workers(4 << 30, cpus=64, memory=16 << 30) == 1  # memory-bound
