"""bench/gpu_check.sh's helper: the machine's facts, the job spec, what a job's log and
nvidia-smi's samples say, and the summary table with the targets of issue 32.

Standard library only (torch only for `env`): it runs on the GPU machine's python3.

    _gpu_report.py env --out FILE            versions, the GPU, the cores
    _gpu_report.py all-skipped JUNIT.xml     exit 0 when every test there was skipped
    _gpu_report.py spec --name N --data DIR --output DIR --batch B --samples N
    _gpu_report.py job --name N --log LOG --smi CSV --rc RC --predict-rc RC --out FILE
    _gpu_report.py summary --steps JSONL --results DIR --dry-run 0|1 --command CMD
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _gpu_job import job_report
from _gpu_summary import summarise

NUM_CLASSES = 3  # make-sample-data's default shapes


def env_facts(out: Path) -> None:
    """Versions, the GPU and the machine, to `out` (JSON) and stdout."""
    import numpy
    import PIL
    import torch
    import torchvision

    facts: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "bf16": torch.cuda.is_bf16_supported(),
        }
    out.write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts, indent=2))


def all_skipped(junit: Path) -> int:
    """0 when the JUnit report holds tests and every one was skipped (none failed)."""
    root = ET.parse(junit).getroot()
    suite = root.find("testsuite") if root.tag == "testsuites" else root
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "skipped", "failures", "errors")}
    print(f"without CUDA: {counts}")
    ok = counts["tests"] > 0 and counts["skipped"] == counts["tests"]
    return 0 if ok and counts["failures"] == counts["errors"] == 0 else 1


def job_spec(name: str, data: Path, output: Path, *, net: str, batch: int, samples: int) -> dict:
    """A CreateTrainingJob request: `net` (vgg-16) SSD300 from scratch, full `ssd`
    augmentation, two epochs over the packed RecordIO channels `data/train` and
    `data/validation`."""

    def channel(name: str) -> dict:
        uri = {"S3DataType": "S3Prefix", "S3Uri": str(data / name)}
        return {
            "ChannelName": name,
            "ContentType": "application/x-recordio",
            "DataSource": {"S3DataSource": uri},
        }

    hp = {
        "base_network": net,
        "use_pretrained_model": 0,
        "num_classes": NUM_CLASSES,
        "num_training_samples": samples,
        "mini_batch_size": batch,
        "epochs": 2,
        "optimizer": "sgd",  # SageMaker's defaults for the rest
        "learning_rate": 0.001,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "image_shape": 300,
        "augmentation": "ssd",
    }
    return {
        "TrainingJobName": name,
        "HyperParameters": {k: str(v) for k, v in hp.items()},
        "InputDataConfig": [channel("train"), channel("validation")],
        "OutputDataConfig": {"S3OutputPath": str(output)},
        "ResourceConfig": {"InstanceCount": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 900},
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("env").add_argument("--out", type=Path, required=True)
    sub.add_parser("all-skipped").add_argument("junit", type=Path)
    spec = sub.add_parser("spec")
    spec.add_argument("--name", required=True)
    spec.add_argument("--data", type=Path, required=True)
    spec.add_argument("--output", type=Path, required=True)
    spec.add_argument("--net", default="vgg-16")
    spec.add_argument("--batch", type=int, required=True)
    spec.add_argument("--samples", type=int, required=True)
    job = sub.add_parser("job")
    job.add_argument("--name", required=True)
    job.add_argument("--log", type=Path, required=True)
    job.add_argument("--smi", type=Path, required=True)
    job.add_argument("--rc", type=int, required=True)
    job.add_argument("--predict-rc", type=int, required=True)
    job.add_argument("--out", type=Path, required=True)
    summary = sub.add_parser("summary")
    summary.add_argument("--steps", type=Path, required=True)
    summary.add_argument("--results", type=Path, required=True)
    summary.add_argument("--dry-run", type=int, default=0)
    summary.add_argument("--command", default="bash bench/gpu_check.sh")
    summary.add_argument("--net", default="vgg-16", help="the job's base network")
    summary.add_argument("--batch", type=int, help="the job's mini_batch_size")
    return parser


def main() -> int:
    args = _parser().parse_args()
    if args.what == "env":
        env_facts(args.out)
    elif args.what == "all-skipped":
        return all_skipped(args.junit)
    elif args.what == "spec":
        spec = job_spec(
            args.name, args.data, args.output, net=args.net, batch=args.batch, samples=args.samples
        )
        print(json.dumps(spec, indent=2))
    elif args.what == "job":
        report = job_report(args.name, args.log, args.smi, args.rc, args.predict_rc)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps({k: v for k, v in report.items() if k not in ("samples", "log_tail")}))
    else:
        return summarise(
            args.steps,
            args.results,
            dry_run=bool(args.dry_run),
            command=args.command,
            job=(args.net, args.batch),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
