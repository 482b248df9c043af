"""Collecting every problem in a file set before failing, so one run reports them all."""

from __future__ import annotations

from sdod.errors import DataError

MAX_LISTED = 10


class Problems:
    """Accumulates `where: what` messages; `raise_if_any` raises one DataError for all."""

    def __init__(self, context: str) -> None:
        self.context = context
        self.items: list[str] = []
        self.records: list[
            dict[str, str]
        ] = []  # {"file", "rule", "message"}: for the gate's report

    def add(self, where: str, what: str, rule: str = "annotation_valid") -> None:
        self.items.append(f"{where}: {what}")
        self.records.append({"file": where, "rule": rule, "message": what})

    def add_error(self, exc: Exception, where: str, rule: str = "annotation_valid") -> None:
        """An exception whose message already names the file."""
        self.items.append(str(exc))
        self.records.append({"file": where, "rule": rule, "message": str(exc)})

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = "; ".join(self.items[:MAX_LISTED])
        more = len(self.items) - MAX_LISTED
        tail = f"; and {more} more" if more > 0 else ""
        raise DataError(f"{self.context}: {len(self.items)} problem(s): {shown}{tail}")
