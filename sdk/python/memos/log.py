"""MemOS's ``memos.log.get_logger``: standard :mod:`logging` loggers under one handler."""

from __future__ import annotations

import logging
import os

_configured = False


def get_logger(name: str | None = None) -> logging.Logger:
    """A logger; the first call gives the ``memos`` loggers a stderr handler unless logging is set up.

    The level comes from ``MEMOS_LOG_LEVEL`` (INFO by default), as for the services.
    """
    global _configured
    if not _configured:
        _configured = True
        root = logging.getLogger()
        if not root.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            root.addHandler(handler)
            root.setLevel(os.environ.get("MEMOS_LOG_LEVEL", "INFO").upper())
    return logging.getLogger(name)
