"""`sdod convert`: any input format into one of SageMaker's three training formats.

Inputs: image+JSON channels, an augmented manifest, a `.rec`, COCO JSON, Pascal VOC XML.
Outputs under `out/`: `image-json` (`<channel>/` + `<channel>_annotation/`), `manifest`
(`<channel>/` + `<channel>.manifest`), `recordio` (`<channel>.rec/.idx/.lst`).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdod.data.imagejson import write_image_json
from sdod.data.images import read_image_bytes
from sdod.data.manifest import write_manifest
from sdod.data.sample import Sample, SampleSet
from sdod.errors import UserError
from sdod.storage import atomic_write_bytes

TARGETS = ("image-json", "manifest", "recordio")


@dataclass(frozen=True)
class ConvertResult:
    to: str
    out: str
    images: int
    boxes: int
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _suffix(data: bytes) -> str:
    return ".png" if data[:8] == b"\x89PNG\r\n\x1a\n" else ".jpg"


def _materialise(sampleset: SampleSet, images_dir: Path) -> SampleSet:
    """Copy every image (from files or from .rec records) into `images_dir`."""
    images_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for s in sampleset.samples:
        data = read_image_bytes(s.image)
        name = Path(s.key).name + (
            Path(s.image).suffix.lower() if ".rec#" not in s.image else _suffix(data)
        )
        target = images_dir / name
        if ".rec#" in s.image:
            atomic_write_bytes(target, data)
        else:
            shutil.copyfile(s.image, target)
        out.append(Sample(s.key, str(target), s.width, s.height, s.boxes, s.labels, s.difficult))
    return SampleSet(out, sampleset.categories)


def convert(
    sampleset: SampleSet, *, to: str, out: str | Path, channel: str = "train"
) -> ConvertResult:
    if to not in TARGETS:
        raise UserError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    if not channel.replace("_", "").isalnum():
        raise UserError(f"--channel {channel!r} must be a plain name such as train or validation")
    out = Path(out)
    if to == "recordio":
        from sdod.data.pack import items_from_samples, pack

        root = Path(sampleset.samples[0].image).parent if sampleset.samples else None
        inside = root is not None and all(Path(s.image).parent == root for s in sampleset.samples)
        result = pack(
            items_from_samples(sampleset, root if inside else None), out / channel, progress=False
        )
        files = [result.rec, result.idx, result.lst]
    else:
        copied = _materialise(sampleset, out / channel)
        if to == "image-json":
            files = [
                str(p)
                for p in write_image_json(copied, out / channel, out / f"{channel}_annotation")
            ]
        else:
            refs = [f"{channel}/{Path(s.image).name}" for s in copied.samples]
            files = [str(write_manifest(copied, out / f"{channel}.manifest", source_refs=refs))]
    return ConvertResult(to, str(out), len(sampleset), sampleset.num_boxes, files)


def convert_inputs(
    *,
    to: str,
    out: str,
    channel: str = "train",
    images: str | None = None,
    annotations: str | None = None,
    manifest: str | None = None,
    rec: str | None = None,
    coco: str | None = None,
    voc: str | None = None,
) -> Any:
    """Read any supported input and write it in one of SageMaker's training formats."""
    sampleset = read_inputs(
        images=images, annotations=annotations, manifest=manifest, rec=rec, coco=coco, voc=voc
    )
    return convert(sampleset, to=to, out=out, channel=channel)


def read_inputs(
    *,
    images: str | None = None,
    annotations: str | None = None,
    manifest: str | None = None,
    rec: str | None = None,
    coco: str | None = None,
    voc: str | None = None,
) -> SampleSet:
    """Samples from any input `convert` reads (also `sdod tile`'s inputs)."""
    if coco or voc:
        if not images:
            raise UserError("--coco/--voc need --images, the folder holding the image files")
        from sdod.data.importers import read_coco, read_voc

        sampleset = read_coco(coco, images) if coco else read_voc(voc, images)  # type: ignore[arg-type]
    elif rec:
        from sdod.data.rec_samples import read_rec

        sampleset = read_rec(rec)
    else:
        from sdod.data.channels import samples_from_paths

        sampleset = samples_from_paths(images=images, annotations=annotations, manifest=manifest)[0]
    return sampleset
