"""CLI commands for inference: predict, batch-predict, serve, export-onnx."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from sdod.cli.base import EXIT_OK, Command, add_slicing_arguments, slicing_from
from sdod.cli.model import MODEL_HELP
from sdod.errors import UserError

BACKENDS = ["torch", "onnxruntime"]


def _configure_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("images", nargs="+", help="JPEG or PNG files")
    p.add_argument("--score-threshold", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    add_slicing_arguments(p)


def _run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sdod import tools
    from sdod.serve.predictor import Predictor

    slicing = slicing_from(args)
    predictor = Predictor.load(tools.resolve_model(args.model), backend=args.backend)
    for image in args.images:
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            raise UserError(f"{image}: cannot read ({exc.strerror})") from None
        options = {"score_threshold": args.score_threshold, "top_k": args.top_k, "where": image}
        if slicing is not None:
            response = predictor.predict_sliced(data, slicing, **options)
        else:
            response = predictor.predict(data, **options)
        many = len(args.images) > 1
        print(json.dumps({"image": image, **response}) if many else json.dumps(response))
    return EXIT_OK


def _configure_batch_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help=MODEL_HELP)
    p.add_argument("--input", required=True, help="folder or s3:// prefix of JPEG/PNG images")
    p.add_argument("--output", required=True, help="folder or s3:// prefix for the responses")
    p.add_argument("--score-threshold", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (8)")
    p.add_argument(
        "--on-error",
        default="skip",
        choices=["skip", "fail"],
        help="a bad image: count it and go on (skip, default; listed in _failures.json) or stop",
    )
    p.add_argument("--suffix", default=".out", help="appended to each image's name (.out)")
    add_slicing_arguments(p)


def _run_batch_predict(args: argparse.Namespace) -> int:
    from sdod import tools
    from sdod.serve.batch import batch_predict
    from sdod.serve.predictor import Predictor

    slicing = slicing_from(args)
    predictor = Predictor.load(tools.resolve_model(args.model), backend=args.backend)
    result = batch_predict(
        predictor,
        args.input,
        args.output,
        score_threshold=args.score_threshold,
        top_k=args.top_k,
        on_error=args.on_error,
        suffix=args.suffix,
        batch_size=args.batch_size,
        slicing=slicing,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(
            f"{result.written} of {result.images} images predicted into {result.dest} "
            f"in {result.seconds} s; {len(result.failed)} failed"
        )
        for failure in result.failed[:10]:
            print(f"  {failure['file']}: {failure['error']}")
    return EXIT_OK


def _configure_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help=MODEL_HELP + "; default: /opt/ml/model (a SageMaker container), on 0.0.0.0",
    )
    p.add_argument("--host", default=None, help="(127.0.0.1; 0.0.0.0 for /opt/ml/model)")
    p.add_argument(
        "--port", type=int, default=None, help="(8080, as SageMaker; or $SAGEMAKER_BIND_TO_PORT)"
    )
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--name", default="model", help="the model's name on /v2/models/<name>")
    limits = p.add_argument_group("shape and limits ($SAGEMAKER_* set those left unset)")
    for flag, kind, text in SERVE_FLAGS:
        limits.add_argument(flag, type=kind, help=text)


SERVE_FLAGS = [
    ("--workers", int, "processes, each with its own model (one per CPU up to 4; memory)"),
    ("--max-batch", int, "images per forward pass (8)"),
    (
        "--max-delay-ms",
        float,
        "ms a batch's first image waits for company (0: those queued meanwhile)",
    ),
    ("--max-queue", int, "images waiting for the model (64; more: 503 with Retry-After)"),
    ("--queue-timeout", float, "seconds an image may wait for the model (10; then 503)"),
    ("--max-request-bytes", int, "(20 MiB; more: 413)"),
    ("--max-pixels", int, "pixels an image may declare (40 M; more: 413)"),
    ("--timeout", float, "seconds to send a whole request (30; then 408)"),
    ("--max-connections", int, "open at once (128; more: 503 with Retry-After)"),
    ("--keep-alive", float, "seconds an idle connection stays open (5)"),
    ("--graceful-timeout", float, "seconds SIGTERM leaves in-flight requests (30)"),
]


def _run_serve(args: argparse.Namespace) -> int:
    from sdod import tools
    from sdod.serve.options import ServeOptions, environment_port, from_environment
    from sdod.serve.server import ServeSpec, serve

    if args.model is None:  # SageMaker hosting: the model's files in /opt/ml/model
        from sdod.container import sagemaker_root

        args.model = str(sagemaker_root() / "model")
        args.host = args.host or "0.0.0.0"
    host = args.host or "127.0.0.1"
    port = args.port if args.port is not None else environment_port() or 8080
    options = ServeOptions().merged(from_environment()).merged(vars(args))
    spec = ServeSpec(
        model=str(tools.resolve_model(args.model)), backend=args.backend,
        device=args.device, max_pixels=args.max_pixels or 0, name=args.name, options=options,
    )  # fmt: skip

    def announce(url: str, workers: int) -> None:
        routes = f"GET /ping, POST /invocations, /v2/models/{args.name}/infer, GET /metrics"
        print(f"sdod serve: {args.model} on {url} ({routes}; {workers} worker(s))", flush=True)

    serve(spec, host, port, announce)
    return EXIT_OK


def _configure_export_onnx(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model.tar.gz to add model.onnx to")
    p.add_argument("--out", help="write the new archive here instead of replacing --model")


def _run_export_onnx(args: argparse.Namespace) -> dict[str, Any]:
    from sdod import tools

    return tools.export_onnx(model=args.model, out=args.out)


COMMANDS = [
    Command("predict", "SageMaker response JSON for each image", _configure_predict, _run_predict),
    Command(
        "batch-predict",
        "Batch Transform: one response per image under a folder or S3 prefix",
        _configure_batch_predict,
        _run_batch_predict,
    ),
    Command(
        "serve",
        "HTTP endpoint: SageMaker's /invocations, the Open Inference Protocol v2, /metrics",
        _configure_serve,
        _run_serve,
    ),
    Command(
        "export-onnx", "add model.onnx to a model.tar.gz", _configure_export_onnx, _run_export_onnx
    ),
]
