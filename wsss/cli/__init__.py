"""The `wsss` command line: run stages and pipelines, evaluate masks, predict, export, run the demo.

User errors (:class:`wsss.errors.WsssError`) print as ``Error: <file>: <what> (<how to fix>)`` and exit with the
error's code: 2 for usage/config errors, 1 for bad data or a stage that cannot run. ``group.py`` holds the group
and the shared options; ``pipeline.py`` and ``results.py`` add their commands to it when imported.
"""

from __future__ import annotations

from wsss.cli import pipeline, results  # noqa: F401  (each adds its commands to the group)
from wsss.cli.group import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli(prog_name="wsss")
