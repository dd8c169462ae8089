"""User-facing errors, raised where bad input enters and turned into `Error: ...` by the CLI.

Every message has the shape ``<file or key>: <what is wrong> (<how to fix it>)`` so that a user
reading one line knows where to look and what to do. Never use ``assert`` for user input.
"""

from __future__ import annotations

import os
from collections.abc import Iterable


def printable(text: object) -> str:
    """``text`` as a string any terminal can print: a file name that is not valid UTF-8 (Python holds its bytes as
    surrogates) shows its undecodable bytes as ``\\xNN`` escapes instead of failing to encode."""
    s = str(text)
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(s).decode("utf-8", "backslashreplace") if os.name == "posix" else ascii(s)[1:-1]
    return s


class WsssError(Exception):
    """Base class: a problem the user can fix. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, where: object, what: str, fix: str | None = None):
        self.where = printable(where)
        self.what = printable(what)
        self.fix = printable(fix) if fix is not None else None
        super().__init__(self.format())

    def __reduce__(self):  # picklable, so an error raised in a worker process arrives intact
        return (type(self), (self.where, self.what, self.fix))

    def format(self) -> str:
        msg = f"{self.where}: {self.what}"
        return f"{msg} ({self.fix})" if self.fix else msg


class ConfigError(WsssError):
    """Invalid configuration, command line or override: a usage error (exit code 2)."""

    exit_code = 2


class DataError(WsssError):
    """Invalid dataset file (image, mask, CSV, layout): exit code 1."""


class StageError(WsssError):
    """A stage cannot run: missing or inconsistent upstream artifacts."""


class ManyErrors(WsssError):
    """Several problems found in one pass, reported all at once instead of only the first."""

    def __init__(self, errors: Iterable[WsssError], summary: str = "invalid input"):
        self.errors = list(errors)
        if not self.errors:
            raise ValueError("ManyErrors needs at least one error")
        self.exit_code = max(e.exit_code for e in self.errors)
        Exception.__init__(self, self.format_all(summary))
        self.where, self.what, self.fix = "", summary, None

    def __reduce__(self):
        return (type(self), (self.errors, self.what))

    def format_all(self, summary: str) -> str:
        lines = [f"{len(self.errors)} problem(s): {summary}"]
        lines += [f"  - {e.format()}" for e in self.errors]
        return "\n".join(lines)

    def format(self) -> str:
        return str(self)


def raise_all(errors: list[WsssError], summary: str) -> None:
    """Raise nothing, the single error, or a :class:`ManyErrors` listing all of them."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ManyErrors(errors, summary)
