"""sdod's environment settings, read once at the edge of a process and passed down. No
other module reads an `SDOD_*` variable (a test holds that), so each has one default.

A training process (`RuntimeSettings`):

| variable | what | default |
| --- | --- | --- |
| `SDOD_SEED` | seeds the initial weights (reproducible runs) | a fresh draw |
| `SDOD_DATA_WORKERS` | data-loader workers per training process | the CPUs shared out, 1-8 |
| `SDOD_TRAINING_SLOTS` | training jobs at a time on this machine | 1 |
| `SDOD_SLOT_DIR` | where the slots' lock files live | `<tmp>/sdod-slots` |
| `SDOD_RDZV_ENDPOINT` | HOST[:PORT] of the first machine (InstanceCount > 1) | none; port 29400 |
| `SDOD_PRETRAINED_DIR` | a folder of ImageNet weight files | none |
| `TORCH_HOME` | torchvision's cache (`hub/checkpoints`) | `~/.cache/torch` |
| `SDOD_NO_DOWNLOAD` | never download ImageNet weights | downloads allowed |
| `SDOD_MLFLOW_PARENT_RUN_ID` | the MLflow run a job's run nests in (tuning sets it) | none |

Where an installation keeps its state and its stages hand over (`SiteSettings`: the
Airflow tasks and DAG forms, tuning jobs, caches):

| variable | what | default |
| --- | --- | --- |
| `SDOD_STATE_DIR` | the local state folder (the embedded default's data) | `./.state` |
| `SDOD_WORK_URI` | where tasks hand over: snapshots, RecordIO, checkpoints | `<state>/work` |
| `SDOD_MODEL_REGISTRY_URI` | the model registry (`<registry>/<group>/v<N>/`) | `<state>/registry` |
| `SDOD_TUNING_STORAGE` | the tuning studies' database URL | `sqlite:///<state>/tuning.db` |
| `SDOD_CACHE_DIR` | this machine's cache of task inputs (only caches) | `<tmp>/sdod-cache-<uid>` |
| `SDOD_TRAIN_QUEUE` | the Airflow queue of training tasks | `default` |
| `SDOD_TRAIN_DATA_URI` | `sdod_train`'s default data (its trigger form) | `<state>/demo/bucket` |
| `SDOD_TRAIN_OUTPUT_URI` | `sdod_train`'s default S3OutputPath | `<state>/demo/output` |
| `SDOD_RETRAIN_DATA_URI` | `sdod_retrain`'s default data | `<state>/demo/bucket` |
| `SDOD_RETRAIN_OUTPUT_URI` | `sdod_retrain`'s default S3OutputPath | `<state>/retrain/output` |

Inside a SageMaker training container (`ContainerSettings`):

| variable | what | default |
| --- | --- | --- |
| `SDOD_SAGEMAKER_ROOT` | relocates `/opt/ml` (the tests use a temporary folder) | `/opt/ml` |
| `TRAINING_JOB_NAME` | the job's name (SageMaker sets it) | `sagemaker-job` |
| `SDOD_MAX_RUNTIME_SECONDS` | MaxRuntime (SageMaker enforces its own) | the API's limit, 28 days |

A bad value is refused when the settings are read, naming the variable and the rule. This
module imports nothing heavy: DAG files and plugins read it at parse time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sdod.errors import UserError

RDZV_PORT = 29400  # the rendezvous port on the first machine when SDOD_RDZV_ENDPOINT has none
# set by a tuning job for its trials' processes (`RuntimeSettings.mlflow_parent_run`)
MLFLOW_PARENT_RUN_VARIABLE = "SDOD_MLFLOW_PARENT_RUN_ID"


def _int(env: Mapping[str, str], name: str, lo: int) -> int | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = lo - 1
    if value < lo:
        rule = "a positive integer" if lo == 1 else f"a whole number >= {lo}"
        raise UserError(f"{name} must be {rule}, got {raw!r}")
    return value


@dataclass(frozen=True)
class RuntimeSettings:
    seed: int | None = None
    data_workers: int | None = None
    training_slots: int = 1
    slot_dir: Path = Path(tempfile.gettempdir()) / "sdod-slots"
    rdzv_endpoint: str | None = None
    pretrained_dir: Path | None = None
    torch_home: Path = Path.home() / ".cache" / "torch"
    no_download: bool = False
    mlflow_parent_run: str | None = None  # a tuning job's run (MLflow: `MLFLOW_TRACKING_URI`)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        env = os.environ if env is None else env
        seed = env.get("SDOD_SEED")
        try:
            seed_value = int(seed) if seed not in (None, "") else None
        except ValueError:
            raise UserError(f"SDOD_SEED must be an integer, got {seed!r}") from None
        default = cls()
        pretrained = env.get("SDOD_PRETRAINED_DIR")
        return cls(
            seed=seed_value,
            data_workers=_int(env, "SDOD_DATA_WORKERS", 0),
            training_slots=_int(env, "SDOD_TRAINING_SLOTS", 1) or 1,
            slot_dir=Path(env.get("SDOD_SLOT_DIR") or default.slot_dir),
            rdzv_endpoint=env.get("SDOD_RDZV_ENDPOINT") or None,
            pretrained_dir=Path(pretrained) if pretrained else None,
            torch_home=Path(env.get("TORCH_HOME") or default.torch_home),
            no_download=env.get("SDOD_NO_DOWNLOAD", "") not in ("", "0"),
            mlflow_parent_run=env.get(MLFLOW_PARENT_RUN_VARIABLE) or None,
        )


@dataclass(frozen=True)
class SiteSettings:
    """Where this installation keeps its state and where its stages hand over."""

    state_dir: Path
    work_uri: str
    model_registry_uri: str
    tuning_storage: str
    cache_dir: Path
    train_queue: str = "default"
    retrain_data_uri: str = ""
    retrain_output_uri: str = ""
    train_data_uri: str = ""
    train_output_uri: str = ""

    @property
    def demo_data_uri(self) -> str:
        """The embedded default's bucket (`make demo` writes the sample data there)."""
        return str(self.state_dir / "demo" / "bucket")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SiteSettings:
        env = os.environ if env is None else env
        # absolute: the URIs below are handed between processes that may not share a cwd
        state = Path(env.get("SDOD_STATE_DIR") or ".state").absolute()
        cache = env.get("SDOD_CACHE_DIR")
        return cls(
            state_dir=state,
            work_uri=env.get("SDOD_WORK_URI") or str(state / "work"),
            model_registry_uri=env.get("SDOD_MODEL_REGISTRY_URI") or str(state / "registry"),
            tuning_storage=env.get("SDOD_TUNING_STORAGE") or f"sqlite:///{state / 'tuning.db'}",
            cache_dir=Path(cache or Path(tempfile.gettempdir()) / f"sdod-cache-{os.getuid()}"),
            train_queue=env.get("SDOD_TRAIN_QUEUE") or "default",
            retrain_data_uri=env.get("SDOD_RETRAIN_DATA_URI") or str(state / "demo" / "bucket"),
            retrain_output_uri=(
                env.get("SDOD_RETRAIN_OUTPUT_URI") or str(state / "retrain" / "output")
            ),
            train_data_uri=env.get("SDOD_TRAIN_DATA_URI") or str(state / "demo" / "bucket"),
            train_output_uri=env.get("SDOD_TRAIN_OUTPUT_URI") or str(state / "demo" / "output"),
        )


@dataclass(frozen=True)
class ContainerSettings:
    """A SageMaker training container's environment (`sdod.container` reads `/opt/ml`)."""

    root: Path = Path("/opt/ml")
    job_name: str = "sagemaker-job"
    max_runtime_seconds: int | None = None  # None: the API's limit (sdod.jobspec.MAX_RUNTIME)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ContainerSettings:
        env = os.environ if env is None else env
        default = cls()
        return cls(
            root=Path(env.get("SDOD_SAGEMAKER_ROOT") or default.root),
            job_name=env.get("TRAINING_JOB_NAME") or default.job_name,
            max_runtime_seconds=_int(env, "SDOD_MAX_RUNTIME_SECONDS", 1),
        )
