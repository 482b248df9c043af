"""Indexing a .rec keeps labels and offsets, never the image bytes (COCO-sized files must
train on machines with less memory than the file)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from sdod.data.recordio import RecordWriter, pack_record

RECORDS, PADDING = 2000, 128 << 10  # 2,000 records of ~128 KiB: a 256 MiB file

MEASURE = """
import resource, sys
from sdod.data.rec_samples import read_rec
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
samples = read_rec(sys.argv[1]).samples
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(samples), samples[7].width, samples[7].height, (after - before) // 1024)
"""


def _big_rec(path: Path) -> Path:
    """Real JPEGs, each followed by 128 KiB of bytes after its end marker (decoders ignore
    them): a file whose image bytes dwarf its labels."""
    buf = io.BytesIO()
    Image.new("RGB", (320, 240), (90, 120, 200)).save(buf, "JPEG")
    jpeg = buf.getvalue() + bytes(PADDING)
    label = np.array([2, 5, 1, 0.1, 0.2, 0.5, 0.6], dtype=np.float32)  # im2rec's layout
    with RecordWriter(path) as writer:
        for key in range(RECORDS):
            writer.write(key, pack_record(label, jpeg, id=key))
    return path


def test_indexing_a_rec_does_not_hold_its_image_bytes(tmp_path: Path) -> None:
    rec = _big_rec(tmp_path / "big.rec")
    assert rec.stat().st_size > RECORDS * PADDING  # 256 MiB of image bytes
    run = subprocess.run(
        [sys.executable, "-c", MEASURE, str(rec)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    count, width, height, grown_mib = map(int, run.stdout.split())
    assert (count, width, height) == (RECORDS, 320, 240)
    # holding the payloads would take > 256 MiB; labels and offsets take a few
    assert grown_mib < 48, f"indexing grew the process by {grown_mib} MiB"


def test_header_size_reads_what_pillow_reads_or_says_it_cannot() -> None:
    from sdod.data.rec_samples import _header_size, image_size

    cases = []
    for mode, fmt, extra in (("RGB", "JPEG", {}), ("L", "JPEG", {"progressive": True}),
                             ("RGB", "JPEG", {"exif": b"Exif\x00\x00" + bytes(30000)}),
                             ("RGBA", "PNG", {}), ("P", "PNG", {})):  # fmt: skip
        buf = io.BytesIO()
        Image.new(mode, (123, 45)).save(buf, fmt, **extra)
        cases.append(buf.getvalue())
    for data in cases:
        assert _header_size(data) == (123, 45) == image_size(data, "x")
    assert _header_size(cases[2][:4096]) is None  # the EXIF block hides the SOF: read more
    assert _header_size(b"GIF89a....") is None
