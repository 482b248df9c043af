"""The in-memory record every reader produces and every writer consumes (`Sample`), and a
channel's worth of them with its class names (`SampleSet`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sdod.data.problems import Problem


def _boxes(values: object) -> npt.NDArray[np.float32]:
    return np.asarray(values, dtype=np.float32).reshape(-1, 4)


@dataclass(eq=False)
class Sample:
    """One annotated image.

    `boxes` is float32 `[N, 4]`, absolute pixel `xmin, ymin, xmax, ymax`; `labels` int64
    `[N]`; `difficult` bool `[N]`. `image` is a URI or path to the image file; `key` is
    unique within a dataset (the file stem for image+JSON data).
    """

    key: str
    image: str
    width: int
    height: int
    boxes: npt.NDArray[np.float32] = field(default_factory=lambda: _boxes([]))
    labels: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    difficult: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))

    def __post_init__(self) -> None:
        self.boxes = _boxes(self.boxes)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n = len(self.boxes)
        if self.difficult is None or len(self.difficult) == 0:
            self.difficult = np.zeros(n, dtype=bool)
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        if len(self.labels) != n or len(self.difficult) != n:
            raise ValueError(
                f"sample {self.key!r}: boxes {self.boxes.shape}, labels {self.labels.shape} "
                f"and difficult {self.difficult.shape} must have the same length"
            )

    @property
    def num_objects(self) -> int:
        return len(self.boxes)

    def normalized_boxes(self) -> npt.NDArray[np.float32]:
        """Boxes divided by the image size: `[N, 4]` in 0..1 (the RecordIO convention)."""
        scale = np.array([self.width, self.height, self.width, self.height], np.float32)
        return self.boxes / scale


@dataclass
class SampleSet:
    """Samples of one channel and the `class_id -> name` map its annotations declared."""

    samples: list[Sample]
    categories: dict[int, str] = field(default_factory=dict)
    # what a non-strict reader skipped (file, rule, message); the gate reports them
    problems: list[Problem] = field(default_factory=list)

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
