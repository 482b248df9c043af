"""KServe's Open Inference Protocol (v2) over HTTP/REST, as Triton, MLServer and KServe
speak it: the request and response bodies of `/v2/models/<name>/infer` and the metadata.

Input: one tensor `image` of datatype `BYTES`, shape `[k]`: k encoded JPEG/PNG images.
In JSON its `data` holds base64 strings; with the binary-data extension (Triton's: the
`Inference-Header-Content-Length` header, then the raw tensor after the JSON, each BYTES
element as a 4-byte little-endian length and its bytes) the images travel as they are.
Request `parameters` `score_threshold` and `top_k` act as on `/invocations`.

Outputs, for k images, each padded to the N detections of the image with the most:
`num_detections` INT32 `[k]`, `classes` INT32 `[k, N]` (0-based class ids, -1 padding),
`scores` FP32 `[k, N]` (descending; 0 padding), `boxes` FP32 `[k, N, 4]` (xmin, ymin,
xmax, ymax normalised to the image, as SageMaker's response; 0 padding). An `outputs`
list selects them and asks for binary data (`parameters.binary_data`).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass
from typing import Any

from sdod.errors import UserError
from sdod.serve.options import DIGITS, parameter_options

INPUT = "image"
OUTPUTS = {"num_detections": "INT32", "classes": "INT32", "scores": "FP32", "boxes": "FP32"}
HEADER = "inference-header-content-length"
MAX_IMAGES = 64  # images in one infer request
MAX_JSON = 1 << 20  # the JSON part of a request with binary data


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    images: list[bytes]
    score_threshold: float
    top_k: int | None
    outputs: dict[str, bool]  # name -> binary


def _json(text: bytes, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: not JSON ({exc})") from None
    except RecursionError:
        raise UserError(f"{where}: JSON nested too deeply") from None
    if not isinstance(value, dict):
        raise UserError(f"{where}: must be a JSON object")
    return value


def parse_infer(body: bytes, header_length: str | None) -> InferRequest:
    """The request of `POST /v2/models/<name>/infer`, checked; UserError names the field."""
    binary = b""
    if header_length is not None:
        digits = DIGITS.fullmatch(header_length) and len(header_length) < 10
        if not digits or not 0 < int(header_length) <= min(len(body), MAX_JSON):
            raise UserError(f"{HEADER} must be the JSON part's length, at most {len(body)}")
        split = int(header_length)
        body, binary = body[:split], body[split:]
    request = _json(body, "infer request")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise UserError(f"inputs: exactly one input, {INPUT!r} of datatype BYTES")
    images = _images(inputs[0], binary)
    threshold, top_k = parameter_options(request.get("parameters"), "parameters")
    ident = request.get("id")
    if ident is not None and not isinstance(ident, str):
        raise UserError("id must be a string")
    return InferRequest(ident, images, threshold, top_k, _outputs(request.get("outputs")))


def _images(tensor: dict[str, Any], binary: bytes) -> list[bytes]:
    name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
    if name != INPUT or datatype != "BYTES":
        raise UserError(
            f"inputs[0]: must be named {INPUT!r} with datatype BYTES, got {name!r} {datatype!r}"
        )
    if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int)):
        raise UserError("inputs[0].shape must be [k], k images")
    count = shape[0]
    if not 0 < count <= MAX_IMAGES:
        raise UserError(f"inputs[0].shape: 1 to {MAX_IMAGES} images, got {count}")
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise UserError("inputs[0].parameters must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size != len(binary):
            where = "inputs[0].parameters.binary_data_size"
            raise UserError(f"{where}: {len(binary)} bytes follow the JSON")
        images = _unpack_bytes(binary)
    else:
        data = tensor.get("data")
        if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
            raise UserError("inputs[0].data: base64 strings, one per image")
        images = [_b64(d, i) for i, d in enumerate(data)]
    if len(images) != count:
        raise UserError(f"inputs[0]: shape says {count} images, the data holds {len(images)}")
    return images


def _b64(text: str, index: int) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"inputs[0].data[{index}]: not base64") from None


def _unpack_bytes(binary: bytes) -> list[bytes]:
    """BYTES elements: each a 4-byte little-endian length, then that many bytes."""
    out: list[bytes] = []
    at = 0
    while at < len(binary):
        if at + 4 > len(binary) or len(out) >= MAX_IMAGES:
            raise UserError("inputs[0]: binary data is not length-prefixed BYTES elements")
        (n,) = struct.unpack_from("<I", binary, at)
        if at + 4 + n > len(binary):
            raise UserError(f"inputs[0]: element {len(out)} claims {n} bytes past the end")
        out.append(binary[at + 4 : at + 4 + n])
        at += 4 + n
    return out


def _outputs(asked: Any) -> dict[str, bool]:
    if asked is None:
        return dict.fromkeys(OUTPUTS, False)
    if not isinstance(asked, list) or not asked:
        raise UserError("outputs: a non-empty list of {name, parameters}")
    chosen = {}
    for entry in asked:
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in OUTPUTS:
            raise UserError(f"outputs: {name!r} is not one of {', '.join(OUTPUTS)}")
        params = entry.get("parameters") or {}
        chosen[name] = bool(params.get("binary_data")) if isinstance(params, dict) else False
    return chosen


def _tensors(predictions: list[list[list[float]]]) -> dict[str, tuple[list[int], list[Any]]]:
    """Shape and flat data of each output for the images' SageMaker prediction rows."""
    k, n = len(predictions), max((len(rows) for rows in predictions), default=0)
    classes, scores, boxes = [], [], []
    for rows in predictions:
        pad = n - len(rows)
        classes += [int(r[0]) for r in rows] + [-1] * pad
        scores += [r[1] for r in rows] + [0.0] * pad
        boxes += [v for r in rows for v in r[2:6]] + [0.0] * (4 * pad)
    return {
        "num_detections": ([k], [len(rows) for rows in predictions]),
        "classes": ([k, n], classes),
        "scores": ([k, n], scores),
        "boxes": ([k, n, 4], boxes),
    }


def infer_response(
    model: str, request: InferRequest, predictions: list[list[list[float]]]
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (binary outputs after the JSON)."""
    tensors, outputs, binary = _tensors(predictions), [], b""
    for name, as_binary in request.outputs.items():
        shape, data = tensors[name]
        entry: dict[str, Any] = {"name": name, "datatype": OUTPUTS[name], "shape": shape}
        if as_binary:
            code = f"<{len(data)}{'i' if OUTPUTS[name] == 'INT32' else 'f'}"
            raw = struct.pack(code, *data)
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary += raw
        else:
            entry["data"] = data
        outputs.append(entry)
    head: dict[str, Any] = {"model_name": model, "outputs": outputs}
    if request.id is not None:
        head["id"] = request.id
    text = json.dumps(head).encode()
    if not binary:
        return text, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER: str(len(text))}
    return text + binary, headers


def model_metadata(model: str, platform: str) -> dict[str, Any]:
    """`GET /v2/models/<name>`."""
    k, n = -1, -1
    shapes = {"num_detections": [k], "classes": [k, n], "scores": [k, n], "boxes": [k, n, 4]}
    return {
        "name": model,
        "versions": ["1"],
        "platform": platform,
        "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [{"name": o, "datatype": t, "shape": shapes[o]} for o, t in OUTPUTS.items()],
    }
