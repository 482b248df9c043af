"""Predictions from a model.tar.gz, in SageMaker's response shape.

`{"prediction": [[class_id, score, xmin, ymin, xmax, ymax], ...]}`, coordinates normalised
to 0..1 of the input image, all numbers floats (as the built-in algorithm returns them),
sorted by descending score.

`predict` is `prepare` (check and decode the image, resize it: safe to run in many
threads at once) then `forward` (the model: one call at a time when the model is shared);
`forward_many` runs a batch of prepared images in one pass (the server's dynamic batches,
batch transform), each image with its own threshold and top-k.
Images are decoded by `sdod.serve.images`: JPEG or PNG only, pixels bounded from the
header, a large JPEG decoded at a reduced scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sdod.artifact import ModelConfig, read_artifact
from sdod.data.dataset import eval_transform
from sdod.data.tiles import Window
from sdod.errors import DataError, UserError
from sdod.model.networks import build_network
from sdod.model.postprocess import detections, own_inference
from sdod.model.ssd import SSD
from sdod.serve.images import DEFAULT_MAX_PIXELS, decode_image
from sdod.serve.slicing import Slicing, merge, tiles

BACKENDS = ("torch", "onnxruntime")


class Predictor:
    """Holds one loaded model; `predict(image_bytes)` returns the SageMaker response dict.

    `backend="onnxruntime"` runs the artifact's `model.onnx` (add one with `sdod
    export-onnx`); pre- and post-processing are the same code for both backends.
    `max_pixels` bounds the pixels an image may declare (see `sdod.serve.images`).
    """

    def __init__(
        self,
        model: SSD,
        info: ModelConfig,
        device: torch.device,
        runner: Any = None,
        hyperparams: dict[str, str] | None = None,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.model, self.info, self.device = model, info, device
        self.hyperparams = hyperparams or {}
        if max_pixels < 1:
            raise UserError(f"--max-pixels must be positive, got {max_pixels}")
        self.max_pixels = max_pixels
        self.run = runner or model
        self.transform = eval_transform(info.image_shape)
        # SageMaker's networks (sdod/model/sagemaker_model.py) bring example/ssd's own
        # resize (OpenCV's, on the whole decoded image) and MultiBoxDetection decoding
        self.decode_size: int | None = info.image_shape
        resize = own_inference(model)
        if resize is not None:
            self.transform, self.decode_size = resize, None

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str = "cpu",
        backend: str = "torch",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> Predictor:
        from safetensors.torch import load

        artifact = read_artifact(path)
        info = artifact.model_config
        model = build_network(info)
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
        model = model.to(dev).eval()
        return cls(model, info, dev, runner, artifact.hyperparams, max_pixels=max_pixels)

    def prepare(self, data: bytes, where: str = "request body") -> torch.Tensor:
        """The model's input `[1, 3, S, S]` (uint8) from untrusted JPEG/PNG bytes."""
        image = decode_image(data, where, max_pixels=self.max_pixels, min_size=self.decode_size)
        return self.transform(image).unsqueeze(0)

    def forward(
        self, batch: torch.Tensor, *, score_threshold: float = 0.0, top_k: int | None = None
    ) -> dict[str, Any]:
        """The SageMaker response for a batch of one prepared image."""
        return self.forward_many(batch, [(score_threshold, top_k)])[0]

    @torch.no_grad()
    def forward_many(
        self, batch: torch.Tensor, options: list[tuple[float, int | None]]
    ) -> list[dict[str, Any]]:
        """One forward pass over `[N, 3, S, S]` prepared images; the N SageMaker responses,
        each under its own `(score_threshold, top_k)`."""
        if len(options) != len(batch):
            raise ValueError(f"{len(batch)} images but {len(options)} option pairs")
        for score_threshold, top_k in options:
            check_options(score_threshold, top_k)
        cls, box = self.run(batch.to(self.device))
        info = self.info
        found = detections(
            self.model, cls, box, nms_threshold=info.nms_threshold, nms_topk=info.nms_topk
        )
        size = float(info.image_shape)
        responses = []
        for det, (score_threshold, top_k) in zip(found, options, strict=True):
            keep = det.scores >= score_threshold
            boxes = (det.boxes[keep] / size).clamp(0.0, 1.0)
            labels = det.labels[keep, None].float()
            rows = torch.cat([labels, det.scores[keep, None], boxes], dim=1)
            rows = rows[rows[:, 1].argsort(descending=True)][:top_k]
            responses.append({"prediction": [[float(v) for v in r] for r in rows.tolist()]})
        return responses

    def prepare_tiles(
        self,
        data: bytes,
        slicing: Slicing,
        where: str = "request body",
        *,
        max_tiles: int | None = None,
    ) -> tuple[list[Window], torch.Tensor, tuple[int, int]]:
        """A large image's tiles as model inputs `[T, 3, S, S]`, their windows, and the
        image's (width, height): decoded at full size (within the pixel budget); more than
        `max_tiles` tiles is a DataError (rule `image_tiles`) before any is made."""
        image = decode_image(data, where, max_pixels=self.max_pixels)
        found, batch = self.tile_batch(image, slicing, max_tiles=max_tiles, where=where)
        return found, batch, (int(image.shape[-1]), int(image.shape[-2]))

    def tile_batch(
        self,
        image: torch.Tensor,
        slicing: Slicing,
        *,
        max_tiles: int | None = None,
        where: str = "image",
    ) -> tuple[list[Window], torch.Tensor]:
        """A decoded uint8 `[3, H, W]` image's windows and tiles as model inputs; more
        than `max_tiles` is refused before any tile is resized (crops are views)."""
        found, crops = tiles(image, slicing)
        if max_tiles is not None and len(found) > max_tiles:
            height, width = image.shape[-2:]
            reason = (
                f"a {width} x {height} image makes {len(found)} tiles of {slicing.size} "
                f"pixels, more than {max_tiles} a request may ask for; use larger tiles or "
                "less overlap"
            )
            raise DataError(f"{where}: {reason}", rule="image_tiles", where=where, reason=reason)
        return found, torch.stack([self.transform(crop) for crop in crops])

    def forward_tiles(self, batch: torch.Tensor, batch_size: int = 16) -> list[dict[str, Any]]:
        """Each tile's response (no threshold, no top-k), `batch_size` tiles per pass."""
        answers: list[dict[str, Any]] = []
        for start in range(0, len(batch), batch_size):
            chunk = batch[start : start + batch_size]
            answers += self.forward_many(chunk, [(0.0, None)] * len(chunk))
        return answers

    def merge_tiles(
        self,
        answers: list[dict[str, Any]],
        found: list[Window],
        size: tuple[int, int],
        slicing: Slicing,
        *,
        score_threshold: float = 0.0,
        top_k: int | None = None,
    ) -> dict[str, Any]:
        """The whole image's response from its tiles' (`sdod.serve.slicing.merge`)."""
        return merge(
            answers, found, size, slicing, nms_threshold=self.info.nms_threshold,
            score_threshold=score_threshold, top_k=top_k,
        )  # fmt: skip

    def predict_sliced(
        self,
        data: bytes,
        slicing: Slicing,
        *,
        score_threshold: float = 0.0,
        top_k: int | None = None,
        where: str = "request body",
        batch_size: int = 16,
    ) -> dict[str, Any]:
        """The SageMaker response for a large image, predicted tile by tile (in batches of
        `batch_size` tiles) and merged (see `sdod.serve.slicing`)."""
        check_options(score_threshold, top_k)
        found, batch, size = self.prepare_tiles(data, slicing, where)
        answers = self.forward_tiles(batch, batch_size)
        return self.merge_tiles(
            answers, found, size, slicing, score_threshold=score_threshold, top_k=top_k
        )

    def predict(
        self,
        data: bytes,
        *,
        score_threshold: float = 0.0,
        top_k: int | None = None,
        where: str = "request body",
    ) -> dict[str, Any]:
        """The SageMaker response for one image's bytes (`where` names it in errors)."""
        check_options(score_threshold, top_k)
        batch = self.prepare(data, where)
        return self.forward(batch, score_threshold=score_threshold, top_k=top_k)


def check_options(score_threshold: float, top_k: int | None) -> None:
    """Refuse a score threshold outside [0, 1] (or NaN) and a top-k below 1."""
    if not 0.0 <= score_threshold <= 1.0:
        raise UserError(f"score threshold must be in [0, 1], got {score_threshold}")
    if top_k is not None and top_k < 1:
        raise UserError(f"top-k must be a positive integer, got {top_k}")
