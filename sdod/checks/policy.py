"""What the annotation gate does with what it finds: one frozen, validated policy.

The defaults and the valid ranges live here only; the CLI, the DAG form (its JSON-schema
bounds come from `FORM_SCHEMA`), `stages.check` and the gate all take them from here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sdod.errors import UserError

POLICIES = ("fail", "quarantine")
GRAYSCALE_POLICIES = ("convert", "reject")


@dataclass(frozen=True)
class CheckPolicy:
    """`policy`: `fail` (any error fails the gate) or `quarantine` (drop the bad images
    while they are at most `max_bad_fraction` of all, in [0, 1)); `grayscale`: `convert`
    (a non-RGB image is a warning, training converts it) or `reject` (an error);
    `max_class_ratio` (>= 1): the class-balance warning's limit, most to least frequent."""

    policy: str = "fail"
    max_bad_fraction: float = 0.1
    grayscale: str = "convert"
    max_class_ratio: float = 10.0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise UserError(f"--policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.grayscale not in GRAYSCALE_POLICIES:
            raise UserError(
                f"--grayscale must be one of {', '.join(GRAYSCALE_POLICIES)}, "
                f"got {self.grayscale!r}"
            )
        if not self.max_class_ratio >= 1:
            raise UserError(f"max_class_ratio must be >= 1, got {self.max_class_ratio}")
        if not 0 <= self.max_bad_fraction < 1:
            raise UserError(f"max_bad_fraction must be in [0, 1), got {self.max_bad_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT = CheckPolicy()
# the same rules as JSON schema, for Airflow's trigger form
FORM_SCHEMA: dict[str, dict[str, Any]] = {
    "policy": {"enum": list(POLICIES)},
    "max_bad_fraction": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    "grayscale": {"enum": list(GRAYSCALE_POLICIES)},
    "max_class_ratio": {"type": "number", "minimum": 1},
}
