"""CPU latency of one 300x300 image, end to end (decode, resize, network, NMS), for each
base network and both backends (torch, onnxruntime). Weights are random: latency does not
depend on them. Run: `.venv/bin/python bench/latency.py [--runs 20]`.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import table, write_results

from sdod.artifact import ModelConfig
from sdod.model.ssd import SSD, SSDConfig
from sdod.serve.onnx import OnnxRunner, export_onnx
from sdod.serve.predictor import Predictor

IMAGE = (
    Path(__file__).resolve().parents[1]
    / "tests"
    / "fixtures"
    / "mxnet"
    / "images"
    / "00_astronaut.jpg"
)


def jpeg_300() -> bytes:
    buf = io.BytesIO()
    Image.open(IMAGE).convert("RGB").resize((300, 300)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def median_ms(predictor: Predictor, data: bytes, runs: int) -> float:
    for _ in range(3):
        predictor.predict(data)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        predictor.predict(data)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    data = jpeg_300()
    rows = []
    for net in ("vgg-16", "resnet-50", "mobilenet-v3"):
        model = SSD(SSDConfig(net, 20, 300)).eval()
        info = ModelConfig(net, 20, 300)
        cpu = torch.device("cpu")
        rows.append(
            {
                "base_network": net,
                "backend": "torch",
                "threads": torch.get_num_threads(),
                "ms_per_image": median_ms(Predictor(model, info, cpu), data, args.runs),
            }
        )
        onnx = Predictor(model, info, cpu, OnnxRunner(export_onnx(model)))
        rows.append(
            {
                "base_network": net,
                "backend": "onnxruntime",
                "threads": torch.get_num_threads(),
                "ms_per_image": median_ms(onnx, data, args.runs),
            }
        )
        print(rows[-2], rows[-1], flush=True)
    print(table(rows, ["base_network", "backend", "threads", "ms_per_image"]))
    print(f"raw numbers: {write_results('latency', rows)}")


if __name__ == "__main__":
    main()
