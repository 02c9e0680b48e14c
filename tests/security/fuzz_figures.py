"""What the gateway fuzz tests tried, and how each input ended.

Counted per section (structured messages, mutated wire bytes, ...) and RPC; :meth:`report`
hands the figures to the run's summary (tests/figures.py, printed by tests/conftest.py) and
writes them to ``benchmarks/results/security_fuzz.json``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

from tests.figures import report_figure

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "security_fuzz.json"
TOPIC = "hostile input"


class FuzzFigures:
    def __init__(self) -> None:
        # section -> rpc -> outcome ("OK", a status code name, "undecodable->CODE") -> count
        self.outcomes: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
        self.reasons: Counter[str] = Counter()
        self.rpc_reasons: dict[str, Counter[str]] = defaultdict(Counter)
        self.notes: dict[str, str] = {}
        self.examples: dict[str, str] = {}
        self.violations = 0

    def record(self, section: str, rpc: str, outcome: str, reason: str = "", example: str = "") -> None:
        self.outcomes[section][rpc][outcome] += 1
        key = f"{section}/{rpc}/{outcome}/{reason}"
        if example and key not in self.examples:
            self.examples[key] = example[:400]  # the first input of each kind, for the JSON
        if reason:
            self.reasons[f"{outcome}/{reason}"] += 1
            self.rpc_reasons[f"{section}/{rpc}"][f"{outcome}/{reason}"] += 1

    def tried(self, section: str) -> int:
        return sum(sum(c.values()) for c in self.outcomes[section].values())

    def lines(self) -> list[str]:
        out = []
        total = sum(self.tried(s) for s in self.outcomes)
        rpcs = sorted({rpc for per_rpc in self.outcomes.values() for rpc in per_rpc})
        out.append(
            f"{total} inputs over {len(rpcs)} gateway RPCs; contract violations (INTERNAL/UNKNOWN from memos code, "
            f"error without a reason, half-written item): {self.violations}"
        )
        for section, per_rpc in self.outcomes.items():
            out.append(f"{section}: {self.tried(section)} inputs")
            for rpc, counts in per_rpc.items():
                detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
                out.append(f"  {rpc:<15} {sum(counts.values()):>4}  {detail}")
        by_code: Counter[str] = Counter()
        for per_rpc in self.outcomes.values():
            for counts in per_rpc.values():
                by_code.update(counts)
        out.append("by code: " + ", ".join(f"{k} {v}" for k, v in by_code.most_common()))
        if self.reasons:
            out.append("top reasons: " + ", ".join(f"{k} {v}" for k, v in self.reasons.most_common(10)))
        out.extend(f"{k}: {v}" for k, v in self.notes.items())
        return out

    def report(self) -> None:
        if not self.outcomes:
            return
        for line in self.lines():
            report_figure(TOPIC, line)
        try:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            data = {
                "sections": {s: {rpc: dict(c) for rpc, c in per.items()} for s, per in self.outcomes.items()},
                "reasons": dict(self.reasons.most_common()),
                "reasons_per_rpc": {k: dict(c.most_common()) for k, c in self.rpc_reasons.items()},
                "violations": self.violations,
                "examples": self.examples,
                **self.notes,
            }
            RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True))
        except OSError:
            pass  # a read-only checkout still prints the figures


FIGURES = FuzzFigures()
