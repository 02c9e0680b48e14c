"""Extracts the Python code blocks of the MemOS examples file (the seed).

    python examples/seed_blocks.py ../shared/seed/memos_examples.md OUT_DIR

writes example_<n>.py for every ```python block, in order, unchanged except
where ``--substitute OLD=NEW`` asks (public URLs to loopback, model paths).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

_BLOCK = re.compile(r"^```python\n(.*?)^`{3,4}\s*$", re.S | re.M)


def python_blocks(markdown: str) -> list[str]:
    return [m.group(1) for m in _BLOCK.finditer(markdown)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("seed")
    ap.add_argument("out_dir")
    ap.add_argument("--substitute", action="append", default=[], metavar="OLD=NEW")
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for n, block in enumerate(python_blocks(Path(args.seed).read_text(encoding="utf-8")), start=1):
        for sub in args.substitute:
            old, _, new = sub.partition("=")
            block = block.replace(old, new)
        (out / f"example_{n}.py").write_text(block, encoding="utf-8")
        print(out / f"example_{n}.py")


if __name__ == "__main__":
    main()
