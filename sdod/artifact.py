"""model.tar.gz: write, read safely, validate.

Members, each once and all at the archive's root: `model.safetensors` (weights),
`hyperparams.json` (SageMaker's string map), `model_config.json` (base network, image
shape, classes, anchors), `metrics.json`, and optionally `model.onnx`. Reading never
unpickles and never extracts: absolute names, `..`, subfolders, duplicates, links,
devices, sparse files and unknown members are refused with a message naming the member.
Sizes are bounded before a byte is read: each member by its kind (the weights by what the
configured network holds), the archive in total, extended tar headers, and the
decompressed stream itself, so a bomb with a lying header stops at the cap. Each member's
rules (name, size limit, contents) are `sdod.artifact_members`'.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sdod import archive
from sdod.artifact_members import (
    MAX_JSON_BYTES,
    MAX_ONNX_BYTES,
    MAX_STREAM_BYTES,
    MAX_TOTAL_BYTES,
    MAX_WEIGHTS_BYTES,
    ONNX_SLACK,
    OPTIONAL,
    REQUIRED,
    check_metrics,
    check_safetensors,
    member_name,
    parse_json,
    weights_limit,
)
from sdod.artifact_members import refuse as _refuse
from sdod.errors import DataError
from sdod.hyperparameters import BASE_NETWORKS, MAX_IMAGE_SHAPE, MAX_NMS_TOPK, MAX_NUM_CLASSES

FORMAT_VERSION = 1
MAX_ANCHORS = 131072  # the largest network at MAX_IMAGE_SHAPE has 98,276
MAX_CLASS_NAME = 256
VARIANTS = ("", "gluoncv", "sagemaker")


def _config_error(where: str, key: str, what: str) -> DataError:
    return _refuse(where, f"model_config.json field {key!r} {what}", f"model_config.json:{key}")


def _integer(value: Any, key: str, lo: int, hi: int, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _config_error(where, key, f"is {value!r}; it must be an integer in [{lo}, {hi}]")
    return value


def _choice(value: Any, key: str, options: tuple[str, ...], where: str) -> str:
    if value not in options:
        shown = ", ".join(repr(o) for o in options)
        raise _config_error(where, key, f"is {value!r}; it must be one of {shown}")
    return str(value)


def _class_names(raw: dict[str, Any], num_classes: int, where: str) -> tuple[str, ...]:
    names = raw.get("class_names", [])
    if not isinstance(names, list) or not all(
        isinstance(n, str) and len(n) <= MAX_CLASS_NAME for n in names
    ):
        what = f"must be a list of names of at most {MAX_CLASS_NAME} characters"
        raise _config_error(where, "class_names", what)
    if names and len(names) != num_classes:
        what = f"lists {len(names)} names for num_classes={num_classes}; give one per class or none"
        raise _config_error(where, "class_names", what)
    return tuple(names)


def _nms_threshold(raw: dict[str, Any], where: str) -> float:
    value = raw.get("nms_threshold", 0.45)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise _config_error(where, "nms_threshold", f"is {value!r}; it must be a number in (0, 1]")
    return float(value)


def _anchor_count(raw: dict[str, Any], where: str) -> int | None:
    anchors = raw.get("anchors")
    if anchors is None:
        return None
    if not isinstance(anchors, dict) or "count" not in anchors:
        raise _config_error(where, "anchors", f"is {anchors!r}; it must be an object with a count")
    return _integer(anchors["count"], "anchors.count", 1, MAX_ANCHORS, where)


@dataclass(frozen=True)
class ModelConfig:
    """What it takes to rebuild the network and read its outputs (`model_config.json`);
    training writes it, the predictor, ONNX export and evaluate read it."""

    base_network: str
    num_classes: int
    image_shape: int
    class_names: tuple[str, ...] = ()
    nms_threshold: float = 0.45
    anchor_count: int | None = None
    variant: str = ""  # "gluoncv": imported GluonCV weights (see sdod/model/gluoncv.py)
    # variant "sagemaker": the SageMaker graph it is built from (sdod/model/sagemaker.py)
    network: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    nms_topk: int = 400  # the most detections an image keeps (hyperparameter nms_topk)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "base_network": self.base_network,
            "num_classes": self.num_classes,
            "image_shape": self.image_shape,
            "class_names": list(self.class_names),
            "nms_threshold": self.nms_threshold,
            "nms_topk": self.nms_topk,
        }
        if self.variant:
            out["variant"] = self.variant
        if self.anchor_count is not None:
            out["anchors"] = {"count": self.anchor_count, "format": "cx,cy,w,h input pixels"}
        if self.network is not None:
            out["network"] = self.network
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str = "model_config.json") -> ModelConfig:
        """Validate `model_config.json`: every value within the range its hyperparameter
        allows (num_classes and image_shape also capped), DataError naming the field."""
        if not isinstance(raw, dict):
            raise _refuse(where, "model_config.json must be a JSON object", "model_config.json")
        for key in ("base_network", "num_classes", "image_shape"):
            if key not in raw:
                raise _config_error(where, key, "is missing")
        if "format_version" in raw:
            _integer(raw["format_version"], "format_version", 1, FORMAT_VERSION, where)
        num_classes = _integer(raw["num_classes"], "num_classes", 1, MAX_NUM_CLASSES, where)
        return cls(
            _choice(raw["base_network"], "base_network", BASE_NETWORKS, where),
            num_classes,
            _integer(raw["image_shape"], "image_shape", 300, MAX_IMAGE_SHAPE, where),
            _class_names(raw, num_classes, where),
            _nms_threshold(raw, where),
            _anchor_count(raw, where),
            _choice(raw.get("variant", ""), "variant", VARIANTS, where),
            raw.get("network") if isinstance(raw.get("network"), dict) else None,
            _integer(raw.get("nms_topk", 400), "nms_topk", 1, MAX_NMS_TOPK, where),
        )

    def names(self) -> list[str]:
        """Class names, or the class ids as text when the model has none."""
        return list(self.class_names) or [str(c) for c in range(self.num_classes)]


@dataclass
class Artifact:
    weights: bytes
    hyperparams: dict[str, str]
    config: dict[str, Any]
    metrics: dict[str, Any]
    onnx: bytes | None = None
    extra: dict[str, bytes] = field(default_factory=dict)

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.config)


def weights_bytes(state: dict[str, Any]) -> bytes:
    """A state dict of tensors as `model.safetensors` bytes."""
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _members(artifact: Artifact) -> dict[str, bytes]:
    """The archive's members, name -> bytes; the config comes before the weights, so a
    reader bounds the weights by the network before reading them."""
    members = {
        "hyperparams.json": json.dumps(artifact.hyperparams, indent=2, sort_keys=True).encode(),
        "model_config.json": json.dumps(
            {"format_version": FORMAT_VERSION, **artifact.config}, indent=2
        ).encode(),
        "metrics.json": json.dumps(artifact.metrics, indent=2).encode(),
        "model.safetensors": artifact.weights,
    }
    if artifact.onnx is not None:
        members["model.onnx"] = artifact.onnx
    return members


def write_artifact_files(folder: str | os.PathLike[str], artifact: Artifact) -> Path:
    """The archive's members as files in `folder` (SageMaker's `/opt/ml/model`, which
    SageMaker tars itself), each written atomically; `read_artifact` reads the folder."""
    from sdod.storage import atomic_write_bytes

    for name, data in _members(artifact).items():
        atomic_write_bytes(Path(folder) / name, data)
    return Path(folder)


def write_artifact(path: str | os.PathLike[str], artifact: Artifact) -> Path:
    """Write a deterministic model.tar.gz atomically (temporary name, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    members = _members(artifact)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # gzip level 1: float weights hardly compress (level 9 was 4 % smaller, 10x slower)
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as tar,
        ):
            for name, data in members.items():
                _add(tar, name, data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def member_limit(name: str, config: ModelConfig | None = None) -> int:
    """The most bytes a member may hold: JSON small; the weights (and model.onnx) what the
    configured network holds, or what the largest one allowed holds before the config is
    known."""
    if name.endswith(".json"):
        return MAX_JSON_BYTES
    if config is None:
        return MAX_WEIGHTS_BYTES if name == "model.safetensors" else MAX_ONNX_BYTES
    limit = weights_limit(config.base_network, config.num_classes)
    return limit if name == "model.safetensors" else limit + ONNX_SLACK


class _Members(dict[str, bytes]):
    """Members taken one by one, each size checked against its limit before it is read."""

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where, self.total = where, 0
        self.config: ModelConfig | None = None

    def check_size(self, name: str, size: int) -> None:
        limit = member_limit(name, self.config)
        self.total += size
        if size > limit:
            what = f"member {name!r} is {size} bytes, over the limit of {limit} for this model"
            raise _refuse(self.where, what, name)
        if self.total > MAX_TOTAL_BYTES:
            what = f"members add up to {self.total} bytes, over the limit of {MAX_TOTAL_BYTES}"
            raise _refuse(self.where, what, name)

    def add(self, name: str, data: bytes) -> None:
        self[name] = data
        if name == "model_config.json":
            raw = parse_json(self[name], name, self.where)
            self.config = ModelConfig.from_dict(raw, self.where)


def tar_members(
    path: str | os.PathLike[str], where: str, wanted: Callable[[tarfile.TarInfo], bool]
) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
    """`sdod.archive.tar_members` with a model archive's stream cap (MAX_STREAM_BYTES)."""
    return archive.tar_members(path, where, wanted, max_stream_bytes=MAX_STREAM_BYTES)


def _read_tar(path: str | os.PathLike[str], where: str) -> _Members:
    taken = _Members(where)

    def wanted(member: tarfile.TarInfo) -> bool:
        name = member_name(member, taken, where)
        if name:
            taken.check_size(name, member.size)
        return name is not None

    for member, data in tar_members(path, where, wanted):
        if data is not None:
            taken.add(PurePosixPath(member.name).name, data)
    return taken


def _read_folder(folder: Path, where: str) -> _Members:
    """The unpacked files (SageMaker's /opt/ml/model), the config first."""
    taken = _Members(where)
    for name in sorted(REQUIRED + OPTIONAL, key=lambda n: n != "model_config.json"):
        if (folder / name).is_file():
            with (folder / name).open("rb") as f:
                taken.check_size(name, os.fstat(f.fileno()).st_size)
                taken.add(name, archive.read_all(f))
    return taken


def read_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Read and validate a model.tar.gz (or its unpacked folder) in memory: nothing is
    extracted, every size is bounded before it is read."""
    from sdod.model.sagemaker import converted_artifact  # SageMaker's own archive (issue 27)

    path = converted_artifact(path) or path
    where = str(path)
    taken = _read_folder(Path(path), where) if Path(path).is_dir() else _read_tar(path, where)
    missing = [name for name in REQUIRED if name not in taken]
    if missing:
        raise _refuse(where, f"missing member(s) {', '.join(missing)}")
    taken.total = 0  # the weights may come before the config: check them against it now
    for name, data in taken.items():
        taken.check_size(name, len(data))
    check_safetensors(taken["model.safetensors"], where)
    parsed = {name: parse_json(taken[name], name, where) for name in REQUIRED[1:]}
    check_metrics(parsed, where)
    return Artifact(
        taken["model.safetensors"],
        parsed["hyperparams.json"],
        parsed["model_config.json"],
        parsed["metrics.json"],
        taken.get("model.onnx"),
    )
