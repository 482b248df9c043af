"""SageMaker Object Detection's `model.tar.gz`, read and turned into an sdod model.

SageMaker's archive holds `<prefix>-symbol.json` (example/ssd's graph), `<prefix>-NNNN.params`
(MXNet's NDArray file) and `hyperparams.json` (SageMaker's string table). sdod reads it
without MXNet and without unpickling or executing anything:

- the archive: plain files only, no links or paths, at most one symbol and one `.params` of
  the same prefix, sizes bounded; anything else is refused with the member named;
- the graph (`sagemaker_graph.read_graph`): every node on the inference path is a known op
  with known attributes, or it is refused with its name and op;
- the weights: every parameter the graph names is in the `.params` file with the shape the
  graph implies, and the file names nothing the graph does not;
- `hyperparams.json`: `base_network`, `num_classes` and `image_shape` agree with the graph.

`import_sagemaker` writes a normal sdod `model.tar.gz` (variant `sagemaker`, the graph kept
in `model_config.json` so it can be rebuilt); `converted_artifact` is the hook through which
every command that reads a model takes SageMaker's archive as it is (converted once, cached
by content hash).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sdod.archive import tar_members
from sdod.errors import UserError

if TYPE_CHECKING:
    from sdod.artifact import Artifact, ModelConfig
    from sdod.model.sagemaker_model import SageMakerSSD

SYMBOL = re.compile(r"(?P<prefix>.+)-symbol\.json")
PARAMS = re.compile(r"(?P<prefix>.+)-(?P<epoch>\d{4})\.params")
HYPERPARAMS = "hyperparams.json"
SUFFIXES = {"symbol": "symbol.json", "params": "NNNN.params"}
MAX_PARAMS_BYTES = 1 << 30  # example/ssd's largest (resnet-50 at 512) holds ~200 MB
MAX_JSON_BYTES = 16 << 20
MAX_STREAM = MAX_PARAMS_BYTES + 4 * MAX_JSON_BYTES + (1 << 20)  # the tar, decompressed
DEFAULT_IMAGE_SHAPE = 300  # SageMaker's default image_shape
CONVERTER = "sdod-sagemaker-1"  # part of the cache key: bump when the conversion changes


@dataclass(frozen=True)
class SageMakerArchive:
    """The three files of SageMaker's model.tar.gz, read into memory."""

    where: str
    symbol_name: str
    symbol: bytes
    params_name: str
    params: bytes
    hyperparams: dict[str, str]
    sha256: str

    @property
    def epoch(self) -> int:
        m = PARAMS.fullmatch(self.params_name)
        return int(m["epoch"]) if m else 0


def _member_name(name: str, where: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise UserError(f"{where}: member {name!r} points outside the archive; refusing it")
    return path.name


def _limit(name: str, size: int, where: str) -> None:
    limit = MAX_PARAMS_BYTES if name.endswith(".params") else MAX_JSON_BYTES
    if size > limit:
        raise UserError(f"{where}: member {name!r} is {size} bytes, over the limit of {limit}")


def _kind(name: str) -> str | None:
    if SYMBOL.fullmatch(name):
        return "symbol"
    if PARAMS.fullmatch(name):
        return "params"
    return "hyperparams" if name == HYPERPARAMS else None


def _tar_members(path: Path, where: str) -> dict[str, bytes]:
    """The archive's members, read through sdod's bounded tar reader: each header judged
    (name, kind, size) before a byte of its member is read, the stream capped."""
    members: dict[str, bytes] = {}

    def wanted(member: tarfile.TarInfo) -> bool:
        base = _member_name(member.name, where)
        if member.isdir() and base in ("", "."):
            return False
        if not member.isfile() or member.issparse():
            raise UserError(f"{where}: member {member.name!r} is not a regular file")
        if _kind(base) is None:
            raise UserError(
                f"{where}: unexpected member {member.name!r}; SageMaker's model.tar.gz "
                "holds <prefix>-symbol.json, <prefix>-NNNN.params and hyperparams.json"
            )
        _limit(base, member.size, where)
        if base in members:
            raise UserError(f"{where}: member {base!r} appears twice; refusing the archive")
        members[base] = b""  # claimed: a second one is refused above
        return True

    for member, data in tar_members(path, where, wanted, max_stream_bytes=MAX_STREAM):
        if data is not None:
            members[_member_name(member.name, where)] = data
    return members


def _folder_members(path: Path, where: str) -> dict[str, bytes]:
    members = {}
    for file in sorted(path.iterdir()):
        if file.is_file() and not file.is_symlink() and _kind(file.name) is not None:
            _limit(file.name, file.stat().st_size, where)
            members[file.name] = file.read_bytes()
    return members


def _one(members: dict[str, bytes], kind: str, where: str) -> str:
    names = sorted(n for n in members if _kind(n) == kind)
    if len(names) != 1:
        raise UserError(
            f"{where}: {len(names)} {kind} files ({', '.join(names) or 'none'}); SageMaker's "
            f"model.tar.gz holds exactly one <prefix>-{SUFFIXES[kind]}"
        )
    return names[0]


def read_archive(path: str | os.PathLike[str]) -> SageMakerArchive:
    """SageMaker's model.tar.gz (or the folder it unpacks to), checked and in memory."""
    where, local = str(path), Path(path)
    members = _folder_members(local, where) if local.is_dir() else _tar_members(local, where)
    symbol, params = _one(members, "symbol", where), _one(members, "params", where)
    prefix_s, prefix_p = SYMBOL.fullmatch(symbol), PARAMS.fullmatch(params)
    assert prefix_s is not None and prefix_p is not None
    if prefix_s["prefix"] != prefix_p["prefix"]:
        raise UserError(f"{where}: {symbol} and {params} have different prefixes")
    hyperparams: dict[str, str] = {}
    if HYPERPARAMS in members:
        try:
            raw = json.loads(members[HYPERPARAMS])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{where}: hyperparams.json does not parse ({exc})") from None
        if not isinstance(raw, dict):
            raise UserError(f"{where}: hyperparams.json is not an object of strings")
        hyperparams = {str(k): str(v) for k, v in raw.items()}
    digest = hashlib.sha256()
    for name in sorted(members):
        digest.update(name.encode() + b"\0" + members[name])
    return SageMakerArchive(
        where, symbol, members[symbol], params, members[params], hyperparams, digest.hexdigest()
    )


def _image_shape(archive: SageMakerArchive) -> int:
    text = archive.hyperparams.get("image_shape", str(DEFAULT_IMAGE_SHAPE))
    try:
        value = int(text)
    except ValueError:
        raise UserError(
            f"{archive.where}: hyperparams.json image_shape {text!r} is not an integer"
        ) from None
    if not 32 <= value <= 2048:
        raise UserError(f"{archive.where}: hyperparams.json image_shape {value} is out of range")
    return value


def check_hyperparams(archive: SageMakerArchive, model: SageMakerSSD) -> None:
    """`hyperparams.json`'s network and class count must be the graph's."""
    hp, config = archive.hyperparams, model.config
    base = hp.get("base_network")
    if base is not None and base != config.base_network:
        raise UserError(
            f"{archive.where}: hyperparams.json says base_network {base!r}, but "
            f"{archive.symbol_name} is example/ssd's {config.base_network} graph; the archive "
            "mixes files of two models"
        )
    classes = hp.get("num_classes")
    if classes is not None and classes.strip() != str(config.num_classes):
        raise UserError(
            f"{archive.where}: hyperparams.json says num_classes {classes!r}, but the graph's "
            f"class predictors have {config.num_classes} classes (plus background); the archive "
            "mixes files of two models"
        )


def load_model(archive: SageMakerArchive) -> SageMakerSSD:
    """The network of a SageMaker archive, its weights loaded and every check passed."""
    from sdod.model.mxnet_params import read_params_bytes
    from sdod.model.sagemaker_model import build

    where = f"{archive.where}:{archive.symbol_name}"
    model = build(archive.symbol, _image_shape(archive), where)
    check_hyperparams(archive, model)
    arrays = read_params_bytes(archive.params, f"{archive.where}:{archive.params_name}")
    model.load_mxnet(arrays, f"{archive.where}:{archive.params_name}")
    return model.eval()


def network_config(symbol: bytes, model: SageMakerSSD) -> dict[str, Any]:
    """`model_config.json`'s `network`: the graph (to rebuild it) and what it says."""
    return {
        "source": "sagemaker-object-detection",
        "symbol": json.loads(symbol),
        "mean_rgb": list(model.mean.flatten().tolist()),
        "std": None,
        "resize": "cv2.INTER_LINEAR, aspect ratio not kept",
        "detection": model.graph.detection.to_dict(),
        "anchors": model.priors,
    }


def to_artifact(
    archive: SageMakerArchive, model: SageMakerSSD, classes: list[str] | None = None
) -> Artifact:
    """An sdod Artifact holding the converted model."""
    from sdod.artifact import Artifact, ModelConfig, weights_bytes

    config = model.config
    if classes is not None and len(classes) != config.num_classes:
        raise UserError(
            f"--classes names {len(classes)} classes, but {archive.where} was trained for "
            f"{config.num_classes}"
        )
    hp = {
        **archive.hyperparams,
        "base_network": config.base_network,
        "num_classes": str(config.num_classes),
        "image_shape": str(config.image_size),
    }
    model.network = network_config(archive.symbol, model)
    model_config = ModelConfig(
        config.base_network,
        config.num_classes,
        config.image_size,
        tuple(classes or ()),
        model.graph.detection.nms_threshold,
        int(model.anchors.shape[0]),
        "sagemaker",
        network=model.network,
    )
    metrics = {
        "source": "sagemaker",
        "symbol": archive.symbol_name,
        "params": archive.params_name,
        "epochs_completed": archive.epoch + 1,
        "archive_sha256": archive.sha256,
    }
    return Artifact(weights_bytes(model.state_dict()), hp, model_config.to_dict(), metrics)


def import_sagemaker(
    *, model: str | os.PathLike[str], out: str | os.PathLike[str], classes: list[str] | None = None
) -> dict[str, Any]:
    """An sdod model.tar.gz from SageMaker's (a local file or folder)."""
    from sdod.artifact import write_artifact

    archive = read_archive(model)
    network = load_model(archive)
    artifact = to_artifact(archive, network, classes)
    path = write_artifact(out, artifact)
    config = artifact.model_config
    return {
        "model": str(path),
        "source": str(model),
        "base_network": config.base_network,
        "image_shape": config.image_shape,
        "num_classes": config.num_classes,
        "classes": config.names(),
        "anchors": config.anchor_count,
        "detection": network.graph.detection.to_dict(),
        "archive_sha256": archive.sha256,
    }


def is_sagemaker_archive(path: str | os.PathLike[str]) -> bool:
    """True for SageMaker's archive (or its unpacked folder); cheap for sdod's own archives:
    only the headers before the first member that tells them apart are read."""
    local = Path(path)
    if local.is_dir():
        return any(SYMBOL.fullmatch(f.name) for f in local.iterdir())
    # bounded: extended-header and stream bombs stop
    headers = tar_members(local, str(local), lambda member: False, max_stream_bytes=MAX_STREAM)
    try:
        for _, (member, _data) in zip(range(3), headers, strict=False):  # in any order
            kind = _kind(PurePosixPath(member.name).name)
            if kind in ("symbol", "params"):
                return True
            if kind is None or member.size > MAX_JSON_BYTES:
                return False
    except UserError:  # read_artifact names what is wrong
        return False
    return False


def converted_artifact(path: str | os.PathLike[str]) -> Path | None:
    """For SageMaker's archive: the sdod model converted from it, as the unpacked folder
    `read_artifact` reads (made once, cached by content hash under the sdod cache, renamed
    into place whole); None for anything else."""
    if not is_sagemaker_archive(path):
        return None
    import shutil
    import tempfile

    from sdod.artifact import write_artifact_files
    from sdod.storage import cache_root

    archive = read_archive(path)
    target = cache_root() / "sagemaker" / f"{archive.sha256[:32]}-{CONVERTER}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        write_artifact_files(tmp, to_artifact(archive, load_model(archive)))
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():  # not another process converting the same archive first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def network_from_graph(config: ModelConfig) -> SageMakerSSD:
    """The untrained network of a `sagemaker` model_config.json (its stored graph)."""
    from sdod.errors import DataError
    from sdod.model.sagemaker_model import build

    network = config.network or {}
    symbol = network.get("symbol")
    if not isinstance(symbol, dict):
        raise DataError("model_config.json: variant 'sagemaker' needs network.symbol (the graph)")
    model = build(json.dumps(symbol).encode(), config.image_shape, "model_config.json network")
    if model.config.num_classes != config.num_classes:
        raise DataError(
            f"model_config.json: num_classes {config.num_classes} but its graph has "
            f"{model.config.num_classes}"
        )
    nms = config.nms_threshold  # a later (incremental) job's nms_threshold, as SageMaker's
    if nms != model.detection.nms_threshold:  # training rebuilds its graph with the job's
        if not 0 < nms <= 1:
            raise DataError(f"model_config.json: nms_threshold {nms} is not in (0, 1]")
        model.detection = replace(model.detection, nms_threshold=nms)
        network = {**network, "detection": {**network.get("detection", {}), "nms_threshold": nms}}
    model.network = network
    return model
