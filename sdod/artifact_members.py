"""The members of a model.tar.gz, judged one by one: their names, their size limits and
what their contents must be. `sdod.artifact` reads archives through these rules.

Members, each once and all at the archive's root: REQUIRED and OPTIONAL. A member's size is
bounded by its kind (the weights by what the configured network holds), the archive by
MAX_TOTAL_BYTES and its decompressed stream by MAX_STREAM_BYTES. The weights must be a
safetensors file (never a pickle), `hyperparams.json` and `metrics.json` JSON objects.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import PurePosixPath
from typing import Any

from sdod.errors import DataError
from sdod.hyperparameters import MAX_NUM_CLASSES

REQUIRED = ("model.safetensors", "hyperparams.json", "model_config.json", "metrics.json")
OPTIONAL = ("model.onnx",)

# float32 state-dict bytes of each network, fixed + per_class * (num_classes + 1): 10% over
# the most any image shape or variant holds (tests/unit/sdod/test_artifact.py measures it;
# SageMaker's own MXNet networks hold a little more than sdod's)
WEIGHT_BYTES = {
    "vgg-16": (107_000_000, 660_000),
    "resnet-50": (141_000_000, 980_000),
    "mobilenet-v3": (10_000_000, 350_000),
    "resnet-lite": (13_000_000, 230_000),
}
WEIGHTS_SLACK = 4 << 20  # safetensors' JSON header
ONNX_SLACK = 32 << 20  # the graph, anchors and constants beside the weights
MAX_JSON_BYTES = 4 << 20
PICKLE_PREFIXES = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")
RULE = "model_archive_valid"


def weights_limit(base_network: str, num_classes: int) -> int:
    """The most bytes `model.safetensors` may hold for this network (float32 weights)."""
    fixed, per_class = WEIGHT_BYTES[base_network]
    return fixed + per_class * (num_classes + 1) + WEIGHTS_SLACK


MAX_WEIGHTS_BYTES = max(weights_limit(net, MAX_NUM_CLASSES) for net in WEIGHT_BYTES)
MAX_ONNX_BYTES = MAX_WEIGHTS_BYTES + ONNX_SLACK
MAX_TOTAL_BYTES = MAX_WEIGHTS_BYTES + MAX_ONNX_BYTES + 3 * MAX_JSON_BYTES
MAX_STREAM_BYTES = MAX_TOTAL_BYTES + (1 << 20)  # tar headers, padding and end blocks


def refuse(where: str, what: str, member: str | None = None) -> DataError:
    """The DataError for a bad model archive at `where` (naming the member, if any)."""
    return DataError(f"{where}: {what}", rule=RULE, where=f"{where}:{member}" if member else where)


def member_name(member: tarfile.TarInfo, seen: dict[str, bytes], where: str) -> str | None:
    """The member's name at the root, None for the root folder itself (`tar -C dir .`);
    DataError for anything but a known, plain, first-seen file at the root."""
    name, path = member.name, PurePosixPath(member.name)
    problem = None
    if path.is_absolute():
        problem = "has an absolute path; refusing the archive"
    elif ".." in path.parts:
        problem = "points outside the archive ('..'); refusing it"
    elif member.issym() or member.islnk():
        problem = "is a link; model archives hold plain files only"
    elif member.isdir() and path == PurePosixPath("."):
        return None
    elif not member.isfile() or member.issparse():
        problem = "is not a regular file (device, fifo, folder or sparse file)"
    elif len(path.parts) != 1:
        problem = "is not at the archive's root; model archives hold their members at the root only"
    elif path.name not in REQUIRED + OPTIONAL:
        what = f"unexpected member {name!r} (pickled weights such as .pt/.params are not loaded)"
        raise refuse(where, f"{what}; expected {', '.join(REQUIRED + OPTIONAL)}", name)
    elif path.name in seen:
        problem = "appears twice; an archive holds each member once"
    if problem:
        raise refuse(where, f"member {name!r} {problem}", name)
    return path.name


def parse_json(data: bytes, name: str, where: str) -> Any:
    """A JSON member parsed; DataError naming it when it does not parse."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise refuse(where, f"{name} does not parse as JSON ({exc})", name) from None


def check_safetensors(data: bytes, where: str) -> None:
    """The weights are a safetensors file: a bounded JSON header, its tensors inside."""
    if data.startswith(PICKLE_PREFIXES):
        what = "model.safetensors holds a pickle or a zip, not safetensors; refusing it"
        raise refuse(where, what, "model.safetensors")
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    header = (
        parse_json(data[8 : 8 + n], "model.safetensors", where) if 2 <= n <= len(data) - 8 else 0
    )
    body, tensors = len(data) - 8 - n, header.items() if isinstance(header, dict) else [("", 0)]
    for key, info in tensors:
        span = info.get("data_offsets") if isinstance(info, dict) else None
        if key != "__metadata__" and not _span_inside(span, body):
            what = f"model.safetensors is not a safetensors file (tensor {key!r} is unreadable)"
            raise refuse(where, what, "model.safetensors")


def _span_inside(span: Any, size: int) -> bool:
    pair = isinstance(span, list) and len(span) == 2 and all(type(o) is int for o in span)
    return pair and 0 <= span[0] <= span[1] <= size


def check_metrics(parsed: dict[str, Any], where: str) -> None:
    """hyperparams.json and metrics.json are objects; the mAP a number (or null)."""
    for name in ("hyperparams.json", "metrics.json"):
        if not isinstance(parsed[name], dict):
            raise refuse(where, f"{name} must be a JSON object", name)
    score = parsed["metrics.json"].get("validation:mAP")
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
        what = f"metrics.json field 'validation:mAP' is {score!r}; it must be a number or null"
        raise refuse(where, what, "metrics.json:validation:mAP")
    reason = parsed["metrics.json"].get("stop_reason", "")
    if not isinstance(reason, str):
        what = f"metrics.json field 'stop_reason' is {reason!r}; it must be text"
        raise refuse(where, what, "metrics.json:stop_reason")
