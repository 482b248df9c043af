"""Exceptions that carry a message for a human.

`UserError` is anything the user can fix (bad input data, bad configuration, a missing
file): the CLI prints its message on one line and exits 2. Anything else is a bug or an
environment failure and exits 1.
"""

# how an sdod process exits (the CLI, a training job; `sdod.joblayout` adds Stopped)
EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2


class UserError(Exception):
    """Bad input or configuration; the message says what, where, and what to do."""


class DataError(UserError):
    """A data file breaks a format rule; the message names the file/record and the rule.

    Code that must tell errors apart matches `rule` (a stable id, e.g.
    `annotation_pairing`), never the message text; `where` is the file, record or field,
    `reason` the message without it."""

    def __init__(
        self,
        message: str,
        *,
        rule: str | None = None,
        where: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.rule, self.where, self.reason = rule, where, reason
