"""`python -m sdod <command>`: one subcommand per stage and tool (DESIGN.md's CLI contract).

Exit codes: 0 success, 2 user error (one line on stderr, no traceback), 1 internal failure.
`--json` prints the command's result as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sdod import __version__
from sdod.errors import UserError

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Any]
    render: Callable[[Any], str] | None = None


def _render_lines(result: dict[str, Any]) -> str:
    return "\n".join(
        f"{k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in result.items()
    )


# --- make-sample-data ---------------------------------------------------------------


def _configure_sample_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder to write the dataset into")
    p.add_argument("--format", default="image-json", choices=["image-json", "manifest"])
    p.add_argument("--train", type=int, default=240, help="training images (default 240)")
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
    from sdod.data.sampledata import make_sample_data

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


# --- train --------------------------------------------------------------------------


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job-root", help="job folder made by `sdod ingest` (SageMaker layout)")
    p.add_argument("--job-spec", help="CreateTrainingJob request (JSON): ingest, then train")


def _run_train(args: argparse.Namespace) -> int:
    from sdod import stages

    def log(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    if not (args.job_root or args.job_spec):
        raise UserError("give --job-root or --job-spec")
    outcome = stages.train(job_root=args.job_root, job_spec=args.job_spec, log=log)
    if args.json:
        print(json.dumps(outcome.to_dict(), indent=2))
    elif outcome.status == "Failed":
        print(f"sdod train: error: {outcome.message}", file=sys.stderr)
    return outcome.exit_code


# --- evaluate / predict / inspect-model / publish ------------------------------------


def _configure_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model.tar.gz")
    p.add_argument("--data", help="a .rec file or a .manifest file")
    p.add_argument("--images", help="image channel folder (with --annotations)")
    p.add_argument("--annotations", help="annotation channel folder")
    p.add_argument("--metric", default="voc07", choices=["voc07", "voc"])
    p.add_argument("--overlap-threshold", type=float, default=None, help="(the model's)")
    p.add_argument("--out", help="folder for metrics.json")


def _run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import stages

    data = args.data or ""
    return stages.evaluate(
        model=args.model,
        images=args.images,
        annotations=args.annotations,
        manifest=data if data.endswith(".manifest") else None,
        rec=data if data.endswith(".rec") else None,
        metric=args.metric,
        overlap_threshold=args.overlap_threshold,
        out=args.out,
    ).to_dict()


def _configure_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model.tar.gz")
    p.add_argument("images", nargs="+", help="JPEG or PNG files")
    p.add_argument("--score-threshold", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=None)


def _run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sdod.serve.predictor import Predictor

    predictor = Predictor.load(args.model)
    for image in args.images:
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            raise UserError(f"{image}: cannot read ({exc.strerror})") from None
        response = predictor.predict(data, score_threshold=args.score_threshold, top_k=args.top_k)
        print(
            json.dumps({"image": image, **response})
            if len(args.images) > 1
            else json.dumps(response)
        )
    return EXIT_OK


def _configure_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model.tar.gz")


def _run_inspect(args: argparse.Namespace) -> dict[str, Any]:
    from sdod.artifact import read_artifact

    artifact = read_artifact(args.model)
    metrics = {k: v for k, v in artifact.metrics.items() if k != "history"}
    return {"config": artifact.config, "hyperparameters": artifact.hyperparams, "metrics": metrics,
            "onnx": artifact.onnx is not None}  # fmt: skip


def _render_inspect(r: dict[str, Any]) -> str:
    c, m = r["config"], r["metrics"]
    score = m.get("validation:mAP")
    status = "Stopped (" + m.get("stop_reason", "") + ")" if m.get("stopped") else "Completed"
    return "\n".join([
        f"model: {c['base_network']} SSD{c['image_shape']}, {c['num_classes']} classes "
        f"({', '.join(c.get('class_names', []))})",
        f"training: {status}, {m.get('epochs_completed')} of {m.get('epochs')} epochs "
        f"in {m.get('train_seconds')} s",
        f"validation mAP: {'n/a' if score is None else f'{score:.4f}'} "
        f"(best epoch {m.get('best_epoch')})",
        f"hyperparameters: {json.dumps(r['hyperparameters'])}",
    ])  # fmt: skip


def _configure_publish(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model.tar.gz")
    p.add_argument("--to", required=True, help="s3://bucket/prefix/ or a local folder or .tar.gz")
    p.add_argument("--min-map", type=float, default=None, help="refuse below this mAP")
    p.add_argument("--force", action="store_true", help="replace a better published model")


def _run_publish(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import stages

    return stages.publish(
        model=args.model, to=args.to, min_map=args.min_map, force=args.force
    ).to_dict()


# --- layers -------------------------------------------------------------------------


def _configure_layers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-network", required=True, choices=["vgg-16", "resnet-50", "mobilenet-v3"])
    p.add_argument("--image-shape", type=int, default=300)
    p.add_argument("--pattern", help="show only the layers this freeze_layer_pattern matches")


def _run_layers(args: argparse.Namespace) -> int:
    import re

    import torch

    from sdod.model.ssd import SSD, SSDConfig

    with torch.device("meta"):  # names only: no memory, no compute
        names = list(SSD(SSDConfig(args.base_network, 1, args.image_shape)).layer_names())
    if args.pattern:
        try:
            regex = re.compile(args.pattern)
        except re.error as exc:
            raise UserError(
                f"--pattern {args.pattern!r} is not a valid regular expression ({exc})"
            ) from None
        names = [n for n in names if regex.search(n)]
        if not names:
            raise UserError(
                f"freeze_layer_pattern {args.pattern!r} matches no layer of {args.base_network}"
            )
    print(json.dumps(names) if args.json else "\n".join(names))
    return EXIT_OK


# --- pack ---------------------------------------------------------------------------


def _configure_pack(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", help="image channel folder (with --annotations)")
    p.add_argument("--annotations", help="annotation channel folder (SageMaker JSON)")
    p.add_argument("--manifest", help="augmented manifest (JSON Lines)")
    p.add_argument("--lst", help="an im2rec .lst file (with --root)")
    p.add_argument("--root", help="folder the .lst image paths are relative to")
    p.add_argument("--out", required=True, help="output PREFIX: writes PREFIX.rec/.idx/.lst")
    p.add_argument("--resize", type=int, default=0, help="shorter edge in pixels (re-encodes)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality with --resize (95)")
    p.add_argument("--workers", type=int, default=1, help="parallel encoder processes (1)")
    p.add_argument("--shards", type=int, default=1, help="split into N shards that concatenate")


def _run_pack(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import stages

    result = stages.pack(
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
    p.add_argument("--images", help="image folder (with --annotations, --coco or --voc)")
    p.add_argument("--annotations", help="SageMaker annotation channel folder")
    p.add_argument("--manifest", help="augmented manifest")
    p.add_argument("--rec", help="MXNet .rec file")
    p.add_argument("--coco", help="COCO detection JSON (images in --images)")
    p.add_argument("--voc", help="folder of Pascal VOC .xml files (images in --images)")
    p.add_argument("--to", required=True, choices=["image-json", "manifest", "recordio"])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--channel", default="train", help="channel name of the output (train)")


def _run_convert(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import stages

    sources = [x for x in (args.annotations, args.manifest, args.rec, args.coco, args.voc) if x]
    if len(sources) != 1:
        raise UserError("give exactly one of --annotations, --manifest, --rec, --coco, --voc")
    return stages.convert(
        images=args.images, annotations=args.annotations, manifest=args.manifest, rec=args.rec,
        coco=args.coco, voc=args.voc, to=args.to, out=args.out, channel=args.channel,
    ).to_dict()  # fmt: skip


# --- rec-dump -----------------------------------------------------------------------


def _configure_rec_dump(p: argparse.ArgumentParser) -> None:
    p.add_argument("rec", help="the .rec file (its sibling .idx is used when present)")
    p.add_argument("--limit", type=int, default=None, help="dump at most N records")
    p.add_argument("--label-width", type=int, default=350, help="warn when a label is longer (350)")


def _run_rec_dump(args: argparse.Namespace) -> int:
    from sdod.data.recfile import RecDiagnosis, dump_rows

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


# --- score-detections ---------------------------------------------------------------


def _configure_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("case", help="case JSON: num_classes, images[] with gt_* and det_* fields")
    p.add_argument("--metric", default="voc07", choices=["voc07", "voc"], help="(voc07)")
    p.add_argument("--iou", type=float, default=0.5, help="overlap threshold (0.5)")


def _run_score(args: argparse.Namespace) -> dict[str, Any]:
    from sdod.evaluate.score import score_detections

    return score_detections(args.case, metric=args.metric, iou=args.iou)


def _render_score(r: dict[str, Any]) -> str:
    return json.dumps({"per_class": r["per_class"], "mAP": r["mAP"]})


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
        "train",
        "run a training job; exit 0 Completed, 3 Stopped (artifact written), 1/2 Failed",
        _configure_train,
        _run_train,
    ),
    Command(
        "evaluate", "mAP of a model on a dataset (VOC07 or VOC)", _configure_evaluate, _run_evaluate
    ),
    Command("predict", "SageMaker response JSON for each image", _configure_predict, _run_predict),
    Command(
        "inspect-model",
        "validate a model.tar.gz and print its config",
        _configure_inspect,
        _run_inspect,
        _render_inspect,
    ),
    Command("publish", "gated upload of a model.tar.gz", _configure_publish, _run_publish),
    Command(
        "layers", "layer names that freeze_layer_pattern matches", _configure_layers, _run_layers
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
        "rec-dump",
        "print what is inside a .rec, one line per record, and what looks wrong",
        _configure_rec_dump,
        _run_rec_dump,
    ),
    Command(
        "score-detections",
        "VOC mAP (GluonCV semantics) of precomputed detections in a case JSON",
        _configure_score,
        _run_score,
        _render_score,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdod",
        description="SageMaker built-in Object Detection (SSD) on PyTorch: the pipeline stages.",
    )
    parser.add_argument("--version", action="version", version=f"sdod {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
        command.configure(p)
        p.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: Command = args._command
    try:
        result = command.run(args)
    except UserError as exc:
        print(f"sdod {command.name}: error: {exc}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print(f"sdod {command.name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, like cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # a bug or an environment failure: keep the traceback
        traceback.print_exc()
        print(f"sdod {command.name}: internal error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    if isinstance(result, int):
        return result
    if args.json:
        print(json.dumps(result, indent=2))
    elif result is not None:
        print((command.render or _render_lines)(result))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
