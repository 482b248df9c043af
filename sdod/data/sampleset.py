"""A list of Samples plus the class names that came with them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sdod.data.sample import Sample


@dataclass
class SampleSet:
    """Samples of one channel and the `class_id -> name` map its annotations declared."""

    samples: list[Sample]
    categories: dict[int, str] = field(default_factory=dict)
    # problems a non-strict reader skipped ({"file", "rule", "message"}); the gate reports them
    problems: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def num_boxes(self) -> int:
        return sum(s.num_objects for s in self.samples)

    def to_json(self) -> dict[str, Any]:
        """Labels and image addresses only (no pixels): an index other processes can load."""
        return {
            "categories": {str(k): v for k, v in self.categories.items()},
            "samples": [
                [s.key, s.image, s.width, s.height, s.boxes.reshape(-1).tolist(),
                 s.labels.tolist(), s.difficult.astype(int).tolist()]
                for s in self.samples
            ],
        }  # fmt: skip

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SampleSet:
        samples = [
            Sample(key, image, width, height, boxes, labels, np.asarray(difficult, dtype=bool))
            for key, image, width, height, boxes, labels, difficult in raw["samples"]
        ]
        return cls(samples, {int(k): v for k, v in raw["categories"].items()})
