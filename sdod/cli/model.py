"""CLI commands for models: train, evaluate, score, inspect, publish, layers, importers
(inference: `sdod.cli.serve`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from sdod.cli.base import EXIT_OK, Command, add_slicing_arguments, slicing_from
from sdod.hyperparameters import BASE_NETWORKS

# --- train --------------------------------------------------------------------------


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--job-root", help="job folder made by `sdod ingest` (SageMaker layout)")
    p.add_argument("--job-spec", help="CreateTrainingJob request (JSON): ingest, then train")
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=None,
        help="training processes on this machine (DDP under torchrun); default: "
        "ResourceConfig.GpusPerInstance or every visible GPU, 1 on CPU",
    )
    p.add_argument(
        "--rdzv-endpoint",
        default=None,
        help="HOST[:PORT] of the first machine, for InstanceCount > 1 (or SDOD_RDZV_ENDPOINT)",
    )


def _run_train(args: argparse.Namespace) -> int:
    # First thing, before torch is imported: a SIGTERM that arrives while the job is still
    # starting must stop it cleanly (exit 3 with a model), not kill it.
    from sdod.train.stopping import StopFlag

    stop = StopFlag()
    stop.install_signal_handlers()
    from sdod import stages

    def log(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    outcome = stages.train(  # with neither: the SageMaker container's /opt/ml
        job_root=args.job_root,
        job_spec=args.job_spec,
        log=log,
        stop=stop,
        nproc_per_node=args.nproc_per_node,
        rdzv_endpoint=args.rdzv_endpoint,
    )
    # The outcome is decided and written: a late SIGTERM (e.g. the deadline arriving while
    # the process tears down) must not turn a saved model into a killed job.
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.json:
        print(json.dumps(outcome.to_dict(), indent=2))
    elif outcome.status == "Failed":
        print(f"sdod train: error: {outcome.message}", file=sys.stderr)
    if "LOCAL_RANK" in os.environ and outcome.status != "Failed":
        # a worker under torchrun: its launcher reads the outcome file; a non-zero exit
        # would make torchrun report a stopped job as a crashed one
        return EXIT_OK
    return outcome.exit_code


# --- evaluate / predict / inspect-model / publish ------------------------------------


def _configure_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--data", help="a .rec file or a .manifest file")
    p.add_argument("--images", help="image channel folder (with --annotations)")
    p.add_argument("--annotations", help="annotation channel folder")
    p.add_argument(
        "--metric",
        default="voc07",
        choices=["voc07", "voc", "coco"],
        help="voc07 (11-point, default), voc (area), coco (AP .50:.95, AP50, AP75, by size)",
    )
    p.add_argument("--overlap-threshold", type=float, default=None, help="(the model's)")
    p.add_argument(
        "--out",
        help="folder for metrics.json, per_class_ap.csv, pr_curves/*.png, examples/*.png",
    )
    p.add_argument("--examples", type=int, default=4, help="example images drawn (4)")
    add_slicing_arguments(p)


def _run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import tools

    data = args.data or ""
    return tools.evaluate(
        model=args.model,
        images=args.images,
        annotations=args.annotations,
        manifest=data if data.endswith(".manifest") else None,
        rec=data if data.endswith(".rec") else None,
        metric=args.metric,
        overlap_threshold=args.overlap_threshold,
        out=args.out,
        examples=args.examples,
        slicing=slicing_from(args),
    ).to_dict()


MODEL_HELP = (
    "model.tar.gz: a file, an s3:// object, a registry version (<registry>/<group>/v<N>/) "
    "or a model group (its latest approved version)"
)


def _configure_inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help=MODEL_HELP)


def _run_inspect(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import tools
    from sdod.artifact import read_artifact
    from sdod.registry import approval_of

    path = tools.resolve_model(args.model)
    artifact = read_artifact(path)
    metrics = {k: v for k, v in artifact.metrics.items() if k != "history"}
    return {
        "model": args.model,
        "approval": approval_of(args.model),
        "config": artifact.config,
        "hyperparameters": artifact.hyperparams,
        "metrics": metrics,
        "onnx": artifact.onnx is not None,
    }


def _render_inspect(r: dict[str, Any]) -> str:
    c, m = r["config"], r["metrics"]
    score = m.get("validation:mAP")
    status = "Stopped (" + m.get("stop_reason", "") + ")" if m.get("stopped") else "Completed"
    return "\n".join(
        [
            f"model: {c['base_network']} SSD{c['image_shape']}, {c['num_classes']} classes "
            f"({', '.join(c.get('class_names', []))})",
            f"training: {status}, {m.get('epochs_completed')} of {m.get('epochs')} epochs "
            f"in {m.get('train_seconds')} s",
            f"validation mAP: {'n/a' if score is None else f'{score:.4f}'} "
            f"(best epoch {m.get('best_epoch')})",
            f"hyperparameters: {json.dumps(r['hyperparameters'])}",
        ]
        + (
            [
                f"registry: version {a['ModelPackageVersion']} of {a['ModelPackageGroupName']}, "
                f"{a['ModelApprovalStatus']} at {a['CreationTime']}, {a['mAP_source']} mAP "
                f"{a['mAP']}"
            ]
            if (a := r.get("approval"))
            else []
        )
    )


def _configure_publish(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument(
        "--to", required=True, help="the model group: <registry>/<group> (s3:// or a folder)"
    )
    p.add_argument(
        "--evaluation",
        help="metrics.json of `sdod evaluate --out` to gate on (default: the training mAP)",
    )
    p.add_argument("--min-map", type=float, default=None, help="refuse below this mAP")
    p.add_argument(
        "--force",
        action="store_true",
        help="publish even below the latest approved version, or without a usable mAP",
    )


def _run_publish(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import stages

    return stages.publish(
        model=args.model,
        to=args.to,
        evaluation=args.evaluation,
        min_map=args.min_map,
        force=args.force,
    ).to_dict()


# --- layers -------------------------------------------------------------------------


def _configure_layers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-network", required=True, choices=BASE_NETWORKS)
    p.add_argument("--image-shape", type=int, default=300)
    p.add_argument("--pattern", help="show only the layers this freeze_layer_pattern matches")


def _run_layers(args: argparse.Namespace) -> int:
    from sdod import tools

    names = tools.layers(
        base_network=args.base_network, image_shape=args.image_shape, pattern=args.pattern
    )
    print(json.dumps(names) if args.json else "\n".join(names))
    return EXIT_OK


# --- import-gluoncv -----------------------------------------------------------------


def _configure_import_gluoncv(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help="GluonCV/MXNet .params file")
    p.add_argument(
        "--network",
        required=True,
        help="GluonCV model name: ssd_300_vgg16_atrous_<dataset>, ssd_512_vgg16_atrous_<dataset> "
        "or ssd_512_resnet50_v1_<dataset> (e.g. ssd_300_vgg16_atrous_voc)",
    )
    p.add_argument(
        "--classes",
        help="class names, comma-separated, in the model's class order "
        "(default: VOC's 20 for a *_voc model, else the class ids)",
    )
    p.add_argument("--nms-threshold", type=float, default=0.45, help="(0.45, as GluonCV)")
    p.add_argument("--out", required=True, help="model.tar.gz to write")


def _run_import_gluoncv(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import tools

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    return tools.import_gluoncv(
        params=args.params,
        network=args.network,
        out=args.out,
        classes=classes,
        nms_threshold=args.nms_threshold,
    )


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
        "train",
        "run a training job; exit 0 Completed, 3 Stopped (artifact written), 1/2 Failed",
        _configure_train,
        _run_train,
    ),
    Command(
        "evaluate",
        "mAP of a model on a dataset (VOC07, VOC or COCO), per-class table and plots",
        _configure_evaluate,
        _run_evaluate,
    ),
    Command(
        "inspect-model",
        "validate a model.tar.gz and print its config",
        _configure_inspect,
        _run_inspect,
        _render_inspect,
    ),
    Command("publish", "gated upload of a model.tar.gz", _configure_publish, _run_publish),
    Command(
        "import-gluoncv",
        "a model.tar.gz from GluonCV SSD weights (.params), no MXNet needed",
        _configure_import_gluoncv,
        _run_import_gluoncv,
    ),
    Command(
        "layers", "layer names that freeze_layer_pattern matches", _configure_layers, _run_layers
    ),
    Command(
        "score-detections",
        "VOC mAP (GluonCV semantics) of precomputed detections in a case JSON",
        _configure_score,
        _run_score,
        _render_score,
    ),
]


# --- import-sagemaker (SageMaker's own model.tar.gz; sdod/model/sagemaker.py) ---------


def _configure_import_sagemaker(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        help="SageMaker Object Detection model.tar.gz (model_algo_1-symbol.json, "
        "model_algo_1-NNNN.params, hyperparams.json): a file, its unpacked folder or s3://…",
    )
    p.add_argument("--classes", help="class names, comma-separated, in the model's class order")
    p.add_argument("--out", required=True, help="sdod model.tar.gz to write")


def _run_import_sagemaker(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import tools
    from sdod.model.sagemaker import import_sagemaker
    from sdod.storage import is_s3

    source = str(tools.resolve_model(args.model)) if is_s3(args.model) else args.model
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    return import_sagemaker(model=source, out=args.out, classes=classes)


COMMANDS.append(
    Command(
        "import-sagemaker",
        "an sdod model.tar.gz from a SageMaker Object Detection model.tar.gz, no MXNet needed",
        _configure_import_sagemaker,
        _run_import_sagemaker,
    )
)
