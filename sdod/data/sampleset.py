"""A list of Samples plus the class names that came with them."""

from __future__ import annotations

from dataclasses import dataclass, field

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
