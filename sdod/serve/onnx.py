"""ONNX export of the SSD network (uint8 image in, raw class logits and box offsets out) and
an onnxruntime runner with the same interface, so post-processing is shared."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdod.errors import UserError
from sdod.model.networks import build_network
from sdod.model.ssd import SSD


def export_onnx(model: SSD) -> bytes:
    """The network as ONNX bytes (torch's dynamo exporter), input `image` uint8 `[N,3,S,S]`
    (the batch axis dynamic, for the server's batches)."""
    size = model.config.image_size
    example = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    dynamic = {"images": {0: torch.export.Dim("batch", min=1, max=1024)}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(), (example,), dynamo=True, input_names=["image"], dynamic_shapes=dynamic,
            output_names=["cls_logits", "box_offsets"], verbose=False,
        )  # fmt: skip
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        program.save(path)
        return path.read_bytes()


class OnnxRunner:
    """Runs the exported graph on the CPU; call it like the torch model."""

    def __init__(self, onnx_bytes: bytes) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])

        batch = self.session.get_inputs()[0].shape[0]
        self.one_at_a_time = batch == 1  # graphs exported before the batch axis was dynamic

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        array = np.ascontiguousarray(images.cpu().numpy())
        if not self.one_at_a_time or len(array) == 1:
            cls, box = self.session.run(None, {"image": array})
            return torch.from_numpy(cls), torch.from_numpy(box)
        outputs = [self.session.run(None, {"image": array[i : i + 1]}) for i in range(len(array))]
        cls = np.concatenate([o[0] for o in outputs])
        box = np.concatenate([o[1] for o in outputs])
        return torch.from_numpy(cls), torch.from_numpy(box)


def add_onnx(model: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Add `model.onnx` to the archive `model` (rewritten in place, or written to `out`)."""
    from safetensors.torch import load

    from sdod.artifact import read_artifact, write_artifact
    from sdod.model.sagemaker import is_sagemaker_archive

    if out is None and Path(model).exists() and is_sagemaker_archive(model):
        raise UserError(
            f"{model} is SageMaker's own model archive; export-onnx does not replace it "
            "with an sdod one: name the new archive with --out (e.g. --out model-onnx.tar.gz)"
        )
    artifact = read_artifact(model)
    network = build_network(artifact.model_config)
    network.load_state_dict(load(artifact.weights))
    artifact.onnx = export_onnx(network)
    written = write_artifact(out or model, artifact)
    return {"model": str(written), "onnx_bytes": len(artifact.onnx)}
