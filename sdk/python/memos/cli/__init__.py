"""The ``memos`` command line: ``python -m memos.cli`` (or ``tools/memos``); see docs/cli.md."""

from memos.cli.app import main

__all__ = ["main"]
