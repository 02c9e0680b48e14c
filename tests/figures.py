"""Figures that tests report (attempts made, inputs tried, ...), printed after the run.

A module of its own: pytest imports tests/conftest.py under another name than
``tests.conftest``, so a list kept there would exist twice.
"""

from __future__ import annotations

FIGURES: list[tuple[str, str]] = []


def report_figure(topic: str, line: str) -> None:
    """Records ``line`` under ``topic`` for the summary at the end of the run."""
    FIGURES.append((topic, line))
