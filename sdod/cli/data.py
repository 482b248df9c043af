"""CLI commands for data: sample data, ingest, pack, convert, tile, validate, rec-dump."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sdod.cli.base import EXIT_OK, EXIT_USER, Command, add_dataset_arguments
from sdod.errors import UserError

# --- make-sample-data ---------------------------------------------------------------


def _configure_sample_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder to write the dataset into")
    p.add_argument("--format", default="image-json", choices=["image-json", "manifest"])
    p.add_argument("--train", type=int, default=960, help="training images (default 960)")
    p.add_argument("--validation", type=int, default=60, help="validation images (default 60)")
    p.add_argument("--classes", type=int, default=3, help="shape classes, 1..8 (default 3)")
    p.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    p.add_argument(
        "--source-ref-prefix",
        default="",
        help="manifest only: prefix of each source-ref, e.g. s3://bucket/data/ "
        "(default: paths relative to the manifest)",
    )


def _run_sample_data(args: argparse.Namespace) -> dict[str, Any]:
    from sdod.demo.dataset import make_sample_data

    return make_sample_data(
        args.out,
        fmt=args.format,
        train=args.train,
        validation=args.validation,
        num_classes=args.classes,
        seed=args.seed,
        source_ref_prefix=args.source_ref_prefix,
    ).to_dict()


def _render_sample_data(r: dict[str, Any]) -> str:
    lines = [
        f"wrote {r['images']['train']} train + {r['images']['validation']} validation images "
        f"({r['boxes']['train'] + r['boxes']['validation']} boxes, {r['num_classes']} classes: "
        f"{', '.join(r['class_names'])}) in {r['format']} format to {r['out']}"
    ]
    lines += [f"  channel {name}: {r['out']}/{path}" for name, path in r["channels"].items()]
    return "\n".join(lines)


# --- ingest -------------------------------------------------------------------------


def _configure_ingest(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job-spec", required=True, help="CreateTrainingJob request (JSON file)")
    p.add_argument("--job-root", required=True, help="local job folder (SageMaker layout)")
    p.add_argument("--workers", type=int, default=8, help="parallel transfers (8)")


def _run_ingest(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import stages

    result = stages.ingest(job_spec=args.job_spec, job_root=args.job_root, workers=args.workers)
    return result.to_dict()


def _render_ingest(r: dict[str, Any]) -> str:
    lines = [f"job {r['job_name']}: {r['job_root']}"]
    for name, c in r["channels"].items():
        lines.append(
            f"  {name}: {c['objects']} objects from {c['source']} ({c['downloaded']} copied, "
            f"{c['skipped']} unchanged, {c['removed']} removed, {c['bytes'] / 1e6:.1f} MB)"
        )
    lines += [f"  {name}: Pipe mode, streamed during training" for name in r["pipe_channels"]]
    if r["ignored_fields"]:
        lines.append(f"  ignored (not used by sdod): {', '.join(r['ignored_fields'])}")
    return "\n".join(lines)


# --- pack ---------------------------------------------------------------------------


def _configure_pack(p: argparse.ArgumentParser) -> None:
    add_dataset_arguments(p, rec=False)
    p.add_argument("--lst", help="an im2rec .lst file (with --root)")
    p.add_argument("--root", help="folder the .lst image paths are relative to")
    p.add_argument("--out", required=True, help="output PREFIX: writes PREFIX.rec/.idx/.lst")
    p.add_argument("--resize", type=int, default=0, help="shorter edge in pixels (re-encodes)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality with --resize (95)")
    p.add_argument("--workers", type=int, default=1, help="parallel encoder processes (1)")
    p.add_argument("--shards", type=int, default=1, help="split into N shards that concatenate")


def _run_pack(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import tools

    result = tools.pack(
        out=args.out,
        images=args.images,
        annotations=args.annotations,
        manifest=args.manifest,
        lst=args.lst,
        root=args.root,
        resize=args.resize,
        quality=args.quality,
        workers=args.workers,
        shards=args.shards,
    )
    return result.to_dict()


def _render_pack(r: dict[str, Any]) -> str:
    rate = r["records"] / r["seconds"] if r["seconds"] else float("inf")
    return (
        f"packed {r['records']} records ({r['bytes'] / 1e6:.1f} MB) in {r['seconds']:.2f}s "
        f"({rate:.0f} img/s)\n  {r['rec']}\n  {r['idx']}\n  {r['lst']}"
    )


# --- convert --------------------------------------------------------------------------


def _configure_convert(p: argparse.ArgumentParser) -> None:
    add_dataset_arguments(p, images_help="image folder (with --annotations, --coco or --voc)")
    p.add_argument("--coco", help="COCO detection JSON (images in --images)")
    p.add_argument("--voc", help="folder of Pascal VOC .xml files (images in --images)")
    p.add_argument("--to", required=True, choices=["image-json", "manifest", "recordio"])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--channel", default="train", help="channel name of the output (train)")


def _inputs(args: argparse.Namespace) -> dict[str, str | None]:
    """The one dataset `convert` and `tile` read."""
    sources = [x for x in (args.annotations, args.manifest, args.rec, args.coco, args.voc) if x]
    if len(sources) != 1:
        raise UserError("give exactly one of --annotations, --manifest, --rec, --coco, --voc")
    names = ("images", "annotations", "manifest", "rec", "coco", "voc")
    return {name: getattr(args, name) for name in names}


def _run_convert(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import tools

    return tools.convert(to=args.to, out=args.out, channel=args.channel, **_inputs(args)).to_dict()


# --- tile -------------------------------------------------------------------------------


def _configure_tile(p: argparse.ArgumentParser) -> None:
    _configure_convert(p)
    p.add_argument("--size", type=int, required=True, help="tile width and height in pixels")
    p.add_argument("--overlap", type=int, help="pixels neighbouring tiles share (64)")
    p.add_argument(
        "--min-visible",
        type=float,
        help="keep a box in a tile when this share of its area is in the tile (0.6)",
    )
    p.add_argument("--empty-rate", type=float, help="share of tiles without a box kept (0.1)")
    p.add_argument("--seed", type=int, help="chooses the empty tiles kept (0)")
    p.add_argument("--max-pixels", type=int, help="refuse larger images (as `sdod serve`)")
    p.add_argument("--overwrite", action="store_true", help="replace this channel's tiles")


def _run_tile(args: argparse.Namespace) -> dict[str, Any]:
    from sdod.data.convert import read_inputs
    from sdod.data.tiling import TileOptions, tile

    given = {
        name: getattr(args, name)
        for name in ("overlap", "min_visible", "empty_rate", "seed", "max_pixels")
        if getattr(args, name) is not None
    }
    options = TileOptions(size=args.size, **given)  # refuses bad options before reading
    result = tile(
        read_inputs(**_inputs(args)),
        options,
        to=args.to,
        out=args.out,
        channel=args.channel,
        overwrite=args.overwrite,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    return {k: v for k, v in result.to_dict().items() if k != "lost"}


def _render_tile(r: dict[str, Any]) -> str:
    lost = (
        " (listed in the index: larger tiles, more overlap or a lower --min-visible keep them)"
        if r["objects_lost"]
        else ""
    )
    return (
        f"{r['images']} images -> {r['tiles']} tiles ({r['empty_kept']} of {r['empty_windows']} "
        f"empty tiles kept) as {r['to']} in {r['out']} ({r['seconds']:.1f} s)\n"
        f"  {r['objects']} objects -> {r['boxes']} boxes in tiles ({r['boxes_clipped']} clipped, "
        f"{r['boxes_dropped_partial']} dropped from a tile as less than --min-visible inside)\n"
        f"  {r['objects_lost']} objects in no tile{lost}\n"
        f"  index: {r['index']}"
    )


# --- validate ---------------------------------------------------------------------------


def _configure_validate(p: argparse.ArgumentParser) -> None:
    add_dataset_arguments(p)
    p.add_argument("--num-classes", type=int, required=True)
    p.add_argument("--label-width", type=int, default=350)
    from sdod.checks.policy import DEFAULT, GRAYSCALE_POLICIES, POLICIES

    p.add_argument("--policy", default=DEFAULT.policy, choices=POLICIES)
    p.add_argument(
        "--max-bad-fraction",
        type=float,
        default=DEFAULT.max_bad_fraction,
        help=f"quarantine at most this share, in [0, 1) ({DEFAULT.max_bad_fraction})",
    )
    p.add_argument(
        "--grayscale",
        default=DEFAULT.grayscale,
        choices=GRAYSCALE_POLICIES,
        help="non-RGB images: a warning (converted when training) or an error "
        f"({DEFAULT.grayscale})",
    )
    p.add_argument(
        "--max-class-ratio",
        type=float,
        default=DEFAULT.max_class_ratio,
        help="warn when train's most frequent class has more than this many times "
        f"the boxes of its rarest ({DEFAULT.max_class_ratio:g})",
    )
    p.add_argument(
        "--gx-project",
        help="keep a Great Expectations file context in this folder (suites, results, "
        "Data Docs across runs); default: an ephemeral context",
    )
    p.add_argument("--report", help="folder for report.json and Data Docs HTML")
    p.add_argument("--workers", type=int, default=2, help="parallel image decoders (2)")


def _run_validate(args: argparse.Namespace) -> int:
    from sdod import tools

    report = tools.validate(
        num_classes=args.num_classes,
        images=args.images,
        annotations=args.annotations,
        manifest=args.manifest,
        rec=args.rec,
        label_width=args.label_width,
        policy=args.policy,
        max_bad_fraction=args.max_bad_fraction,
        report=args.report,
        workers=args.workers,
        grayscale=args.grayscale,
        max_class_ratio=args.max_class_ratio,
        gx_project=args.gx_project,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        print(report.summary())
        if report.report_file:
            print(f"report: {report.report_file}\nData Docs: {report.data_docs}")
    return EXIT_OK if report.passed else EXIT_USER


# --- rec-dump -----------------------------------------------------------------------


def _configure_rec_dump(p: argparse.ArgumentParser) -> None:
    p.add_argument("rec", help="the .rec file (its sibling .idx is used when present)")
    p.add_argument("--limit", type=int, default=None, help="dump at most N records")
    p.add_argument("--label-width", type=int, default=350, help="warn when a label is longer (350)")


def _run_rec_dump(args: argparse.Namespace) -> int:
    from sdod.data.rec_samples import RecDiagnosis, dump_rows

    diagnosis = RecDiagnosis()
    for row in dump_rows(args.rec, diagnosis, args.limit):
        if args.json:
            print(json.dumps(row))
        else:
            label = " ".join(f"{v:g}" for v in row["label"])
            print(
                f"key={row['key']} flag={row['flag']} id={row['id']} id2={row['id2']} "
                f"image={row['image_len']}B sha256={row['image_sha256'][:12]} label=[{label}]"
            )
    for finding in diagnosis.findings(args.label_width):
        print(f"sdod rec-dump: warning: {finding}", file=sys.stderr)
    return EXIT_OK


COMMANDS: list[Command] = [
    Command(
        "make-sample-data",
        "write a small, real, learnable detection dataset in SageMaker's layout",
        _configure_sample_data,
        _run_sample_data,
        _render_sample_data,
    ),
    Command(
        "ingest",
        "copy each channel of a CreateTrainingJob spec into a local SageMaker-style job folder",
        _configure_ingest,
        _run_ingest,
        _render_ingest,
    ),
    Command(
        "pack",
        "pack images + annotations (or a manifest, or an im2rec .lst) into MXNet RecordIO",
        _configure_pack,
        _run_pack,
        _render_pack,
    ),
    Command(
        "convert",
        "COCO, VOC, manifest, .rec or image+JSON into image-json, manifest or recordio",
        _configure_convert,
        _run_convert,
    ),
    Command(
        "tile",
        "cut large images and their boxes into tiles for training (any input, any output)",
        _configure_tile,
        _run_tile,
        _render_tile,
    ),
    Command(
        "validate",
        "check annotations with the Great Expectations suite (exit 2 when the gate fails)",
        _configure_validate,
        _run_validate,
    ),
    Command(
        "rec-dump",
        "print what is inside a .rec, one line per record, and what looks wrong",
        _configure_rec_dump,
        _run_rec_dump,
    ),
]
