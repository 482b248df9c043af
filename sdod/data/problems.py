"""Collecting every problem in a file set before failing, so one run reports them all."""

from __future__ import annotations

from dataclasses import dataclass

from sdod.errors import DataError

MAX_LISTED = 10


@dataclass(frozen=True)
class Problem:
    """One file (or line, or record) a reader could not take: where, which rule, why."""

    file: str
    rule: str
    message: str
    names_file: bool = False  # the message already starts with where it is

    def __str__(self) -> str:
        return self.message if self.names_file else f"{self.file}: {self.message}"


class Problems:
    """Accumulates Problems; `raise_if_any` raises one DataError for all of them."""

    def __init__(self, context: str) -> None:
        self.context = context
        self.records: list[Problem] = []

    def add(self, where: str, what: str, rule: str = "annotation_valid") -> None:
        self.records.append(Problem(where, rule, what))

    def add_error(self, exc: Exception, where: str, rule: str = "annotation_valid") -> None:
        """An exception whose message already names the file."""
        self.records.append(Problem(where, rule, str(exc), names_file=True))

    def __bool__(self) -> bool:
        return bool(self.records)

    def raise_if_any(self) -> None:
        if not self.records:
            return
        shown = "; ".join(str(p) for p in self.records[:MAX_LISTED])
        more = len(self.records) - MAX_LISTED
        tail = f"; and {more} more" if more > 0 else ""
        raise DataError(f"{self.context}: {len(self.records)} problem(s): {shown}{tail}")
