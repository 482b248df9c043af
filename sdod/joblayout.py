"""The local job layout, mirroring a SageMaker training container under one root.

```
<root>/input/config/hyperparameters.json   HyperParameters (string -> string)
<root>/input/config/inputdataconfig.json   per channel: ContentType, TrainingInputMode, ...
<root>/input/config/resourceconfig.json    current_host, hosts
<root>/input/config/trainingjob.json       the whole CreateTrainingJob spec (sdod)
<root>/input/data/<channel>/               File-mode channel contents
<root>/model/  <root>/checkpoints/  <root>/output/   (output/failure holds the error)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdod.errors import EXIT_INTERNAL, EXIT_OK
from sdod.jobspec import TrainingJobSpec
from sdod.storage import atomic_write_json

# a training job's exit codes (`sdod train`): Completed, Failed, Stopped by StoppingCondition
# or SIGTERM with a valid model; Failed by the user's input is `sdod.errors.EXIT_USER`
EXIT_COMPLETED, EXIT_FAILED, EXIT_STOPPED = EXIT_OK, EXIT_INTERNAL, 3


@dataclass(frozen=True)
class JobLayout:
    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "input" / "config"

    def channel_dir(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def spec_file(self) -> Path:
        return self.config_dir / "trainingjob.json"


def input_data_config(spec: TrainingJobSpec) -> dict[str, dict[str, Any]]:
    """`inputdataconfig.json` as SageMaker writes it into the container."""
    out: dict[str, dict[str, Any]] = {}
    for c in spec.channels:
        entry: dict[str, Any] = {
            "TrainingInputMode": c.input_mode,
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": c.record_wrapper or "None",
        }
        if c.content_type:
            entry["ContentType"] = c.content_type
        out[c.name] = entry
    return out


def write_config(layout: JobLayout, spec: TrainingJobSpec) -> list[Path]:
    """Write the `input/config/*.json` files for `spec`."""
    hosts = [f"algo-{i + 1}" for i in range(spec.instance_count)]
    return [
        atomic_write_json(layout.config_dir / "hyperparameters.json", spec.hyperparameters),
        atomic_write_json(layout.config_dir / "inputdataconfig.json", input_data_config(spec)),
        atomic_write_json(
            layout.config_dir / "resourceconfig.json", {"current_host": hosts[0], "hosts": hosts}
        ),
        atomic_write_json(layout.spec_file, spec.raw),
    ]
