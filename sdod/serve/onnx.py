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
from sdod.model.ssd import SSD


def export_onnx(model: SSD) -> bytes:
    """The network as ONNX bytes (torch's dynamo exporter), input `image` uint8 `[1,3,S,S]`."""
    size = model.config.image_size
    example = torch.zeros(1, 3, size, size, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(), (example,), dynamo=True, input_names=["image"],
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

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cls, box = self.session.run(None, {"image": np.ascontiguousarray(images.cpu().numpy())})
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
    network = artifact.model_config.build()
    network.load_state_dict(load(artifact.weights))
    artifact.onnx = export_onnx(network)
    written = write_artifact(out or model, artifact)
    return {"model": str(written), "onnx_bytes": len(artifact.onnx)}
