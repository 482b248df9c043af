"""model.tar.gz: round trip, and hostile archives each refused with their own message."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import pytest

from sdod.artifact import Artifact, read_artifact, write_artifact
from sdod.errors import DataError

CONFIG = {"base_network": "mobilenet-v3", "num_classes": 2, "image_shape": 300}


def _good() -> Artifact:
    import torch
    from safetensors.torch import save

    return Artifact(
        save({"w": torch.ones(2)}), {"num_classes": "2"}, dict(CONFIG), {"validation:mAP": 0.5}
    )


def test_round_trip_and_deterministic_bytes(tmp_path: Path) -> None:
    a = write_artifact(tmp_path / "a" / "model.tar.gz", _good())
    b = write_artifact(tmp_path / "b" / "model.tar.gz", _good())
    assert a.read_bytes() == b.read_bytes()
    back = read_artifact(a)
    assert back.config["base_network"] == "mobilenet-v3" and back.config["format_version"] == 1
    assert back.metrics == {"validation:mAP": 0.5} and back.hyperparams == {"num_classes": "2"}


def _tar(tmp_path: Path, build) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w") as tar:  # uncompressed is fine: the reader opens "r:*"
        good = _good()
        for name, data in (("hyperparams.json", b"{}"), ("metrics.json", b"{}"),
                           ("model_config.json", b'{"base_network": "mobilenet-v3", "num_classes": 1, "image_shape": 300}'),
                           ("model.safetensors", good.weights)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        build(tar)
    return path


def _file(name: str, data: bytes = b"x"):  # type: ignore[no-untyped-def]
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    return add


def _link(name: str, kind: bytes):  # type: ignore[no-untyped-def]
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, "/etc/passwd"
        tar.addfile(info)

    return add


def _huge(tar: tarfile.TarFile) -> None:
    info = tarfile.TarInfo("model.onnx")
    info.size = (2 << 30) + 1  # a header that claims 2 GiB: refused before any byte is read
    tar.fileobj.write(info.tobuf(tarfile.GNU_FORMAT))
    tar.offset += 512


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (_file("../escape.json"), r"'\.\./escape\.json' points outside the archive"),
        (_file("/etc/cron.d/x"), r"'/etc/cron\.d/x' has an absolute path"),
        (_link("model.onnx", tarfile.SYMTYPE), r"'model\.onnx' is a link"),
        (_link("model.onnx", tarfile.LNKTYPE), r"'model\.onnx' is a link"),
        (_link("model.onnx", tarfile.CHRTYPE), "not a regular file"),
        (_file("model.params", pickle.dumps({"w": 1})), r"unexpected member 'model\.params'"),
        (_huge, "over the limit of"),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink", "device", "pickle-member", "huge"],
)
def test_hostile_members_are_refused(tmp_path: Path, build, message: str) -> None:  # type: ignore[no-untyped-def]
    path = _tar(tmp_path, build)
    with pytest.raises(DataError, match=message):
        read_artifact(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz"]  # nothing extracted


def test_pickle_posing_as_safetensors_is_refused(tmp_path: Path) -> None:
    bad = _good()
    bad.weights = pickle.dumps({"w": 1}, protocol=4)
    path = write_artifact(tmp_path / "model.tar.gz", bad)
    with pytest.raises(DataError, match="holds a pickle or a zip, not safetensors"):
        read_artifact(path)


def test_not_an_archive_and_missing_members(tmp_path: Path) -> None:
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(DataError, match=r"not a readable \.tar\.gz"):
        read_artifact(tmp_path / "junk.tar.gz")
    with tarfile.open(tmp_path / "empty.tar.gz", "w:gz"):
        pass
    with pytest.raises(DataError, match="missing member"):
        read_artifact(tmp_path / "empty.tar.gz")


def test_weight_limits_hold_every_network_with_little_room() -> None:
    """`weights_limit` bounds each network's float32 state dict (every image shape and
    variant) from above, by at most 20% and the safetensors header's slack."""
    import torch

    from sdod.artifact_members import WEIGHTS_SLACK, weights_limit
    from sdod.model.ssd import SSD, SSDConfig

    for net in ("vgg-16", "resnet-50", "mobilenet-v3", "resnet-lite"):
        for size, variant, classes in ((300, "", 1), (512, "gluoncv", 20), (1024, "", 1000)):
            with torch.device("meta"):
                state = SSD(SSDConfig(net, classes, size, variant)).state_dict()
            held = sum(t.numel() * t.element_size() for t in state.values())
            room = weights_limit(net, classes) - WEIGHTS_SLACK
            assert held <= room <= 1.2 * held, (net, size, variant, classes, held, room)
