"""model.tar.gz: write, read safely, validate.

Members: `model.safetensors` (weights), `hyperparams.json` (SageMaker's string map),
`model_config.json` (base network, image shape, classes, anchors), `metrics.json`, and
optionally `model.onnx`. Reading never unpickles and never writes outside its target:
absolute names, `..`, links, devices, unknown or oversized members are refused with a
message that names the member.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdod.errors import DataError

FORMAT_VERSION = 1
REQUIRED = ("model.safetensors", "hyperparams.json", "model_config.json", "metrics.json")
OPTIONAL = ("model.onnx",)
MAX_MEMBER_BYTES = 2 << 30  # 2 GiB: far above any SSD's weights
MAX_JSON_BYTES = 16 << 20
PICKLE_PREFIXES = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")


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

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "base_network": self.base_network,
            "num_classes": self.num_classes,
            "image_shape": self.image_shape,
            "class_names": list(self.class_names),
            "nms_threshold": self.nms_threshold,
        }
        if self.variant:
            out["variant"] = self.variant
        if self.anchor_count is not None:
            out["anchors"] = {"count": self.anchor_count, "format": "cx,cy,w,h input pixels"}
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "model_config.json") -> ModelConfig:
        for key in ("base_network", "num_classes", "image_shape"):
            if key not in raw:
                raise DataError(f"{where}: model_config.json has no {key!r}")
        try:
            anchors = raw.get("anchors") or {}
            return cls(
                str(raw["base_network"]),
                int(raw["num_classes"]),
                int(raw["image_shape"]),
                tuple(str(n) for n in raw.get("class_names", [])),
                float(raw.get("nms_threshold", 0.45)),
                int(anchors["count"]) if "count" in anchors else None,
                str(raw.get("variant", "")),
            )
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}: model_config.json has a bad value ({exc})") from None

    def names(self) -> list[str]:
        """Class names, or the class ids as text when the model has none."""
        return list(self.class_names) or [str(c) for c in range(self.num_classes)]

    def build(self, backbone_weights: Any = None) -> Any:
        """The (untrained) SSD this config describes."""
        from sdod.model.ssd import SSD, SSDConfig

        config = SSDConfig(self.base_network, self.num_classes, self.image_shape, self.variant)
        try:
            return SSD(config, backbone_weights=backbone_weights)
        except ValueError as exc:  # an unknown base_network or variant in model_config.json
            raise DataError(f"model_config.json: {exc}") from None


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
    """The archive's members, name -> bytes."""
    members = {
        "model.safetensors": artifact.weights,
        "hyperparams.json": json.dumps(artifact.hyperparams, indent=2, sort_keys=True).encode(),
        "model_config.json": json.dumps(
            {"format_version": FORMAT_VERSION, **artifact.config}, indent=2
        ).encode(),
        "metrics.json": json.dumps(artifact.metrics, indent=2).encode(),
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
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for name, data in members.items():
                _add(tar, name, data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _check_member(member: tarfile.TarInfo, where: str) -> None:
    name = member.name
    if name.startswith("/") or Path(name).is_absolute():
        raise DataError(f"{where}: member {name!r} has an absolute path; refusing the archive")
    if ".." in Path(name).parts:
        raise DataError(f"{where}: member {name!r} points outside the archive ('..'); refusing it")
    if member.issym() or member.islnk():
        raise DataError(f"{where}: member {name!r} is a link; model archives hold plain files only")
    if not member.isfile():
        raise DataError(f"{where}: member {name!r} is not a regular file (device, fifo or folder)")
    if member.size > MAX_MEMBER_BYTES:
        raise DataError(
            f"{where}: member {name!r} is {member.size} bytes, over the limit of {MAX_MEMBER_BYTES}"
        )
    base = Path(name).name
    if base not in REQUIRED + OPTIONAL:
        raise DataError(
            f"{where}: unexpected member {name!r} (pickled weights such as .pt/.params are "
            "not loaded); expected model.safetensors, hyperparams.json, model_config.json, "
            "metrics.json"
        )
    if base.endswith(".json") and member.size > MAX_JSON_BYTES:
        raise DataError(f"{where}: {name!r} is {member.size} bytes, too large for a JSON config")


def read_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Read and validate a model.tar.gz entirely in memory (nothing is extracted)."""
    where = str(path)
    members: dict[str, bytes] = {}
    if Path(path).is_dir():  # the unpacked files (SageMaker's /opt/ml/model)
        for name in (*REQUIRED, *OPTIONAL):
            if (Path(path) / name).is_file():
                members[name] = (Path(path) / name).read_bytes()
        return _validated(members, where)
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                _check_member(member, where)
                f = tar.extractfile(member)
                members[Path(member.name).name] = f.read() if f else b""
    except FileNotFoundError:
        raise DataError(f"{where}: no such model archive") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{where}: not a readable .tar.gz ({exc})") from None
    return _validated(members, where)


def _validated(members: dict[str, bytes], where: str) -> Artifact:
    missing = [name for name in REQUIRED if name not in members]
    if missing:
        raise DataError(f"{where}: missing member(s) {', '.join(missing)}")
    weights = members["model.safetensors"]
    if weights.startswith(PICKLE_PREFIXES):
        raise DataError(
            f"{where}: model.safetensors holds a pickle or a zip, not safetensors; refusing it"
        )
    try:
        parsed = {name: json.loads(members[name]) for name in REQUIRED[1:]}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: a JSON member does not parse ({exc})") from None
    config = parsed["model_config.json"]
    ModelConfig.from_dict(config, where)  # validates
    return Artifact(
        weights,
        parsed["hyperparams.json"],
        config,
        parsed["metrics.json"],
        members.get("model.onnx"),
    )
