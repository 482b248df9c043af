"""Model archives that passed `inspect-model` but could not be used: bombs, absurd configs,
members in subfolders or twice. `inspect-model`, `publish` and `predict` each refuse them
with one line naming the member or field, exit 2, quickly and in little memory."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import sdod
from sdod import artifact
from sdod.artifact import read_artifact
from sdod.errors import DataError

MiB, GiB = 1 << 20, 1 << 30
CONFIG = {
    "base_network": "resnet-lite",
    "num_classes": 2,
    "image_shape": 300,
    "class_names": ["cat", "dog"],
    "nms_threshold": 0.45,
}
REPO = Path(sdod.__file__).resolve().parents[1]  # the code under test, for the subprocesses


def _deflate(data: bytes) -> bytes:
    """A raw deflate segment ending in a full flush: segments concatenate into one stream."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)


ZERO_MIB = bytes(MiB)
ZERO_SEGMENT = _deflate(ZERO_MIB)  # 1 MiB of zeros: ~1 KB, the same bytes every time


class GzipStream:
    """Writes a valid gzip file in which runs of zeros cost ~1 KB per MiB to write, so a
    2 GiB member takes 2 MB of disk and no memory."""

    def __init__(self, path: Path) -> None:
        self.f = path.open("wb")
        self.f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff")
        self.crc = self.size = 0

    def write(self, data: bytes) -> None:
        self.f.write(_deflate(data))
        self.crc, self.size = zlib.crc32(data, self.crc), self.size + len(data)

    def zeros(self, n: int) -> None:
        full, rest = divmod(n, MiB)
        for _ in range(full):
            self.f.write(ZERO_SEGMENT)
            self.crc = zlib.crc32(ZERO_MIB, self.crc)
        self.size += full * MiB
        if rest:
            self.write(bytes(rest))

    def close(self) -> None:
        self.f.write(zlib.compressobj(9, zlib.DEFLATED, -15).flush())  # the final block
        self.f.write(struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))
        self.f.close()


def write_tar_gz(path: Path, members: list[tuple[str | tarfile.TarInfo, bytes | int]]) -> Path:
    """A tar.gz of `(name or TarInfo, bytes or a number of zero bytes)`, in that order."""
    out = GzipStream(path)
    for name, data in members:
        info = name if isinstance(name, tarfile.TarInfo) else tarfile.TarInfo(name)
        info.size = data if isinstance(data, int) else len(data)
        out.write(info.tobuf(tarfile.GNU_FORMAT))
        out.zeros(info.size) if isinstance(data, int) else out.write(data)
        out.zeros(-info.size % 512)
    out.write(bytes(1024))  # end of archive
    out.close()
    return path


def _members(
    weights: bytes | int, config: dict[str, Any] | None = None
) -> list[tuple[str | tarfile.TarInfo, bytes | int]]:
    return [
        ("hyperparams.json", b'{"num_classes": "2"}'),
        ("metrics.json", b'{"validation:mAP": 0.5}'),
        ("model_config.json", json.dumps(config or CONFIG).encode()),
        ("model.safetensors", weights),
    ]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    max_rss_mb: float


# A small launcher runs sdod and reports its peak memory: measured from the test process
# itself, a child's ru_maxrss would include the test process's pages from before the exec.
LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def sdod_cli(*args: str, cwd: Path) -> Run:
    """`python -m sdod ARGS` as its own process, timed, with its peak memory (wait4)."""
    out, err, rss = cwd / ".stdout", cwd / ".stderr", cwd / ".maxrss"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", LAUNCHER, str(rss), sys.executable, "-m", "sdod", *args]
    start = time.perf_counter()
    with out.open("wb") as o, err.open("wb") as e:
        code = subprocess.run(command, stdout=o, stderr=e, cwd=cwd, env=env, timeout=300).returncode
    seconds = time.perf_counter() - start
    return Run(code, out.read_text(), err.read_text(), seconds, int(rss.read_text()) / 1024)


def refused(run: Run, *says: str) -> None:
    """Exit 2 and one line on stderr that says what was refused; no traceback."""
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    for text in says:
        assert text in run.stderr, run.stderr


@pytest.fixture(scope="module")
def weights(tiny_model: Path) -> bytes:
    return read_artifact(tiny_model).weights


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("image") / "image.jpg"
    Image.new("RGB", (64, 48), (120, 30, 200)).save(path)
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two members of 2 GiB of zeros each in a 4 MB archive (weights first, as SageMaker's
    own tar may order them)."""
    members = _members(2 * GiB)
    members.insert(0, members.pop())
    path = tmp_path_factory.mktemp("bomb") / "model.tar.gz"
    return write_tar_gz(path, [*members, ("model.onnx", 2 * GiB)])


def test_the_bomb_is_small_and_well_formed(bomb: Path) -> None:
    assert bomb.stat().st_size < 8 * MiB
    with tarfile.open(bomb) as tar:  # a real tar.gz: headers as declared
        first = tar.next()
    assert first is not None and (first.name, first.size) == ("model.safetensors", 2 * GiB)


@pytest.mark.parametrize("command", ["inspect-model", "publish", "predict"])
def test_a_bomb_is_refused_at_its_headers(
    bomb: Path, image: Path, tmp_path: Path, command: str
) -> None:
    args = {
        "inspect-model": [str(bomb)],
        "publish": ["--model", str(bomb), "--to", str(tmp_path / "registry" / "group")],
        "predict": ["--model", str(bomb), str(image)],
    }[command]
    run = sdod_cli(command, *args, cwd=tmp_path)
    refused(run, "member 'model.safetensors' is 2147483648 bytes, over the limit of")
    assert not (tmp_path / "registry").exists()
    if command != "predict":  # predict imports torch first (~2 s, ~400 MB) on its own
        assert run.seconds < 2.0, run
        assert run.max_rss_mb < 200, run
    assert run.max_rss_mb < 1024, run


def test_an_extended_header_bomb_is_refused_before_it_is_read(
    tmp_path: Path, weights: bytes
) -> None:
    """A pax header is read whole into memory by tarfile: one declaring 1 GiB is refused
    before a byte of it is read."""
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type = tarfile.XHDTYPE
    path = write_tar_gz(tmp_path / "model.tar.gz", [(pax, 1 * GiB), *_members(weights)])
    run = sdod_cli("inspect-model", str(path), cwd=tmp_path)
    refused(run, "extended header of 1073741824 bytes, over the limit of 65536")
    assert run.seconds < 2.0 and run.max_rss_mb < 200, run


def test_weights_larger_than_the_network_are_refused_before_reading(tmp_path: Path) -> None:
    """300 MB under the absolute cap, but a 2-class resnet-lite holds ~13 MB."""
    path = write_tar_gz(tmp_path / "model.tar.gz", _members(300 * MiB))
    run = sdod_cli("inspect-model", str(path), cwd=tmp_path)
    limit = artifact.weights_limit("resnet-lite", 2)
    refused(run, f"member 'model.safetensors' is {300 * MiB} bytes, over the limit of {limit}")
    assert run.seconds < 2.0 and run.max_rss_mb < 200, run


def test_weights_before_the_config_are_checked_against_it_after(tmp_path: Path) -> None:
    members = _members(40 * MiB)
    members.insert(0, members.pop())
    with pytest.raises(DataError, match=r"'model\.safetensors' is 41943040 bytes, over the limit"):
        read_artifact(write_tar_gz(tmp_path / "model.tar.gz", members))


def test_the_default_limits_hold_on_headers_alone(tmp_path: Path) -> None:
    """Archives cut right after a header that declares one byte over each default limit:
    refused on the header (reading would fail with 'not a readable' instead)."""
    for name, limit in (
        ("model.safetensors", artifact.MAX_WEIGHTS_BYTES),
        ("model.onnx", artifact.MAX_ONNX_BYTES),
        ("metrics.json", artifact.MAX_JSON_BYTES),
    ):
        info = tarfile.TarInfo(name)
        info.size = limit + 1
        path = tmp_path / f"{name}.tar"
        path.write_bytes(info.tobuf(tarfile.GNU_FORMAT))
        with pytest.raises(
            DataError, match=f"'{name}' is {limit + 1} bytes, over the limit of {limit}"
        ):
            read_artifact(path)
    assert 900 * MiB < artifact.MAX_WEIGHTS_BYTES < 1100 * MiB  # resnet-50, 1000 classes


def test_the_decompressed_stream_is_capped(
    tmp_path: Path, weights: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the headers say, decompression stops at the cap (lowered here to 1 MiB)."""
    path = write_tar_gz(tmp_path / "model.tar.gz", _members(weights))
    monkeypatch.setattr(artifact, "MAX_STREAM_BYTES", MiB)
    with pytest.raises(DataError, match=f"decompresses to more than {MiB} bytes"):
        read_artifact(path)


BAD_CONFIGS: dict[str, tuple[dict[str, Any], str]] = {
    "num_classes": ({"num_classes": 10**9, "class_names": []}, "'num_classes' is 1000000000"),
    "image_shape": ({"image_shape": 10**6}, "'image_shape' is 1000000"),
    "image_shape_small": (
        {"image_shape": 32},
        "'image_shape' is 32; it must be an integer in [300, 1024]",
    ),
    "num_classes_text": ({"num_classes": "2"}, "'num_classes' is '2'"),
    "base_network": ({"base_network": "vgg-19"}, "'base_network' is 'vgg-19'"),
    "nms_nan": ({"nms_threshold": float("nan")}, "'nms_threshold' is nan"),
    "class_names": ({"class_names": ["cat"]}, "'class_names' lists 1 names for num_classes=2"),
    "anchors": ({"anchors": {"count": 10**9}}, "'anchors.count' is 1000000000"),
    "variant": ({"variant": "evil"}, "'variant' is 'evil'"),
    "newer_format": ({"format_version": 7}, "'format_version' is 7"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_config_values_outside_their_ranges_are_refused(
    tmp_path: Path, weights: bytes, case: str
) -> None:
    change, says = BAD_CONFIGS[case]
    path = write_tar_gz(tmp_path / "model.tar.gz", _members(weights, {**CONFIG, **change}))
    refused(sdod_cli("inspect-model", str(path), cwd=tmp_path), "model_config.json field", says)


@pytest.mark.parametrize("case", ["num_classes", "image_shape"])
def test_absurd_configs_are_neither_published_nor_loaded(
    tmp_path: Path, weights: bytes, image: Path, case: str
) -> None:
    change, says = BAD_CONFIGS[case]
    path = write_tar_gz(tmp_path / "model.tar.gz", _members(weights, {**CONFIG, **change}))
    group = tmp_path / "registry" / "group"
    refused(sdod_cli("publish", "--model", str(path), "--to", str(group), cwd=tmp_path), says)
    assert not group.exists()
    refused(sdod_cli("predict", "--model", str(path), str(image), cwd=tmp_path), says)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (
            ("sub/model_config.json", b'{"base_network": "vgg-16"}'),
            "member 'sub/model_config.json' is not at the archive's root",
        ),
        (
            ("model_config.json", json.dumps({**CONFIG, "num_classes": 1}).encode()),
            "member 'model_config.json' appears twice",
        ),
        (
            ("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "),
            "member 'model.safetensors' appears twice",
        ),
    ],
    ids=["config-in-subfolder", "config-twice", "weights-twice"],
)
def test_one_member_of_each_name_at_the_root_only(
    tmp_path: Path, weights: bytes, extra: tuple[str, bytes], says: str
) -> None:
    path = write_tar_gz(tmp_path / "model.tar.gz", [*_members(weights), extra])
    refused(sdod_cli("inspect-model", str(path), cwd=tmp_path), says)


def test_weights_that_are_not_safetensors_are_refused(
    tmp_path: Path, image: Path, weights: bytes
) -> None:
    zeros = write_tar_gz(tmp_path / "zeros.tar.gz", _members(bytes(5 * MiB)))
    says = "model.safetensors is not a safetensors file"
    refused(sdod_cli("inspect-model", str(zeros), cwd=tmp_path), says)
    refused(sdod_cli("predict", "--model", str(zeros), str(image), cwd=tmp_path), says)
    cut = write_tar_gz(tmp_path / "cut.tar.gz", _members(weights[: len(weights) // 2]))
    refused(sdod_cli("inspect-model", str(cut), cwd=tmp_path), says)


@pytest.mark.parametrize(
    ("metrics", "says"),
    [
        (b'{"validation:mAP": "high"}', "'validation:mAP' is 'high'"),
        (b'{"stopped": true, "stop_reason": 7}', "'stop_reason' is 7"),
        (b"[1, 2]", "metrics.json must be a JSON object"),
    ],
)
def test_a_metrics_file_inspect_cannot_show_is_refused(
    tmp_path: Path, weights: bytes, metrics: bytes, says: str
) -> None:
    members = _members(weights)
    members[1] = ("metrics.json", metrics)
    path = write_tar_gz(tmp_path / "model.tar.gz", members)
    refused(sdod_cli("inspect-model", str(path), cwd=tmp_path), says)


def test_a_good_archive_still_reads_and_predicts(
    tmp_path: Path, tiny_model: Path, image: Path
) -> None:
    run = sdod_cli("inspect-model", str(tiny_model), cwd=tmp_path)
    assert run.returncode == 0 and "resnet-lite SSD300, 2 classes (cat, dog)" in run.stdout, run
    run = sdod_cli("predict", "--model", str(tiny_model), str(image), cwd=tmp_path)
    assert run.returncode == 0 and json.loads(run.stdout)["prediction"] is not None, run
    with tarfile.open(tiny_model) as tar:  # the config comes before the weights
        assert tar.getnames().index("model_config.json") < tar.getnames().index("model.safetensors")
