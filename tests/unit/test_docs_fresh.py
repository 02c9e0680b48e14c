"""docs/reference/ is what tools/gen_docs.py generates from protos/ and the settings classes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_reference_docs_are_fresh() -> None:
    # A subprocess: the generator imports every settings module and runs buf, and must see the
    # repository as `make docs` does, not this test session's patched environment.
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gen_docs.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (
        "docs/reference/ is stale; run `make docs` (or .venv/bin/python tools/gen_docs.py)\n"
        + result.stdout[-4000:]
        + result.stderr[-2000:]
    )
