"""Predictions from a model.tar.gz, in SageMaker's response shape.

`{"prediction": [[class_id, score, xmin, ymin, xmax, ymax], ...]}`, coordinates normalised
to 0..1 of the input image, all numbers floats (as the built-in algorithm returns them),
sorted by descending score.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdod.artifact import ModelConfig, read_artifact
from sdod.data.dataset import decode_rgb, eval_transform
from sdod.errors import DataError, UserError
from sdod.model.postprocess import postprocess
from sdod.model.ssd import SSD

BACKENDS = ("torch", "onnxruntime")


class Predictor:
    """Holds one loaded model; `predict(image_bytes)` returns the SageMaker response dict.

    `backend="onnxruntime"` runs the artifact's `model.onnx` (add one with `sdod
    export-onnx`); pre- and post-processing are the same code for both backends.
    """

    def __init__(
        self,
        model: SSD,
        info: ModelConfig,
        device: torch.device,
        runner: Any = None,
        hyperparams: dict[str, str] | None = None,
    ) -> None:
        self.model, self.info, self.device = model, info, device
        self.hyperparams = hyperparams or {}
        self.run = runner or model
        self.transform = eval_transform(info.image_shape)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu", backend: str = "torch") -> Predictor:
        from safetensors.torch import load

        artifact = read_artifact(path)
        info = artifact.model_config
        model = info.build()
        try:
            model.load_state_dict(load(artifact.weights))
        except RuntimeError as exc:
            raise DataError(f"{path}: weights do not fit {info.base_network} ({exc})") from None
        dev = torch.device(device)
        if backend not in BACKENDS:
            raise UserError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        runner = None
        if backend == "onnxruntime":
            if artifact.onnx is None:
                raise UserError(
                    f"{path} holds no model.onnx; add one with `sdod export-onnx --model {path}`"
                )
            from sdod.serve.onnx import OnnxRunner

            runner, dev = OnnxRunner(artifact.onnx), torch.device("cpu")
        return cls(model.to(dev).eval(), info, dev, runner, artifact.hyperparams)

    @torch.no_grad()
    def predict(
        self, data: bytes, *, score_threshold: float = 0.0, top_k: int | None = None
    ) -> dict[str, Any]:
        if not 0.0 <= score_threshold <= 1.0:
            raise UserError(f"score threshold must be in [0, 1], got {score_threshold}")
        if top_k is not None and top_k < 1:
            raise UserError(f"top-k must be a positive integer, got {top_k}")
        image = decode_rgb(data, "request body")
        batch = self.transform(image).unsqueeze(0).to(self.device)
        cls, box = self.run(batch)
        det = postprocess(cls, box, self.model.anchors, nms_threshold=self.info.nms_threshold)[0]
        size = float(self.info.image_shape)
        keep = det.scores >= score_threshold
        boxes = (det.boxes[keep] / size).clamp(0.0, 1.0)
        rows = torch.cat([det.labels[keep, None].float(), det.scores[keep, None], boxes], dim=1)
        rows = rows[rows[:, 1].argsort(descending=True)]
        if top_k is not None:
            rows = rows[:top_k]
        return {"prediction": [[float(v) for v in row] for row in rows.tolist()]}
