"""Retrieval quality on LoCoMo (``make bench-locomo``): recall at word budgets, no LLM.

The benchmark defined in ``../shared/data/README.md``:

- every LoCoMo conversation is added through the gateway in fast mode, one cube per
  conversation and one add per session; each turn is a message whose role comes from the
  speaker (the first speaker is ``user``, the second ``assistant``, the name is kept in
  ``name``), whose text is the turn's text plus `` [shares image: <blip_caption>]`` where
  the turn has one, and whose ``chat_time`` is the session's date;
- every question of categories 1-4 whose evidence ids exist after normalising (split on
  ``[;,\\s]+``, match ``D:?(\\d+):0*(\\d+)$``) is asked (1,536 questions on the full file);
- a gold turn counts as retrieved when its text appears in the returned memories,
  concatenated in rank order and cut at a word budget (250 / 500 / 1000 words);
- reported: mean fractional recall |gold found| / |gold| overall and per category, and the
  search latency (p50/p99) seen by the client.

The suite (textmem, ingest, gateway: the embedded defaults, Milvus Lite and SQLite under a
temporary directory) runs in this process on loopback ports. The memories are added once;
every retrieval recipe of the ablation (``services/textmem/ranking.py``: lexical only,
dense only, fused, and each improvement) is then asked the same questions in the same run,
by switching the textmem's recipe between passes. The first recipe named in ``--recipes``
gets an unmeasured warm-up pass over the first questions, so no recipe pays for
cold caches; the query embedding cache is shared, so every recipe after the first sees
cached query embeddings (latencies are comparable among those; the first pass includes
embedding each query once).

Prints one table per recipe and the ablation side by side, with R@500w on the first
``--split`` conversations (those the recipes' parameters were tuned on) and on the rest (held
out), so that a gain that only holds where it was tuned shows; writes JSON to
``benchmarks/results/locomo-<time>.json`` (and ``locomo-latest.json``). A ``--data-dir`` that
a previous run filled is reused (the adds are replayed by request id in seconds), so comparing
recipes again costs only the searches.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "gen" / "python", ROOT / "sdk" / "python"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from memos.client import MemosClient  # noqa: E402
from services.textmem.ranking import DEFAULT_RECIPE, RECIPES  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo10.json"
RESULTS_DIR = ROOT / "benchmarks" / "results"
BUDGETS = (250, 500, 1000)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}
USER = "locomo-bench"
EVIDENCE_SPLIT = re.compile(r"[;,\s]+")
EVIDENCE_ID = re.compile(r"D:?(\d+):0*(\d+)$")
SESSION_KEY = re.compile(r"session_(\d+)")
WARMUP_QUERIES = 20
TARGET_R500 = 0.80


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# data -------------------------------------------------------------------------------------------
@dataclass
class Question:
    text: str
    category: int
    gold: list[str]  # the gold turns' texts, as added


@dataclass
class Conversation:
    sample_id: str
    sessions: list[tuple[int, list[dict[str, Any]]]]  # (session number, OpenAI-format messages)
    questions: list[Question] = field(default_factory=list)

    @property
    def cube_id(self) -> str:
        return f"locomo-{self.sample_id}"


def parse_session_time(value: str) -> str | None:
    """LoCoMo's '1:56 pm on 8 May, 2023' as ISO-8601 (UTC)."""
    try:
        parsed = dt.datetime.strptime(value.strip(), "%I:%M %p on %d %B, %Y")
    except ValueError:
        return None
    return parsed.replace(tzinfo=dt.UTC).isoformat()


def turn_text(turn: dict[str, Any]) -> str:
    text = str(turn.get("text") or "")
    caption = turn.get("blip_caption")
    return f"{text} [shares image: {caption}]" if caption else text


def evidence_keys(evidence: Sequence[str]) -> list[tuple[int, int]]:
    keys: list[tuple[int, int]] = []
    for entry in evidence:
        for piece in EVIDENCE_SPLIT.split(str(entry)):
            m = EVIDENCE_ID.match(piece)
            if m:
                keys.append((int(m.group(1)), int(m.group(2))))
    return list(dict.fromkeys(keys))


def load_conversations(path: Path) -> list[Conversation]:
    raw = json.loads(path.read_text())
    out = []
    for sample in raw:
        conv = sample["conversation"]
        first_speaker = conv.get("speaker_a")
        numbers = sorted(int(m.group(1)) for k in conv if (m := SESSION_KEY.fullmatch(k)))
        sessions = []
        texts: dict[tuple[int, int], str] = {}
        for n in numbers:
            when = parse_session_time(str(conv.get(f"session_{n}_date_time", "")))
            messages = []
            for turn in conv[f"session_{n}"]:
                text = turn_text(turn)
                m = EVIDENCE_ID.match(str(turn.get("dia_id", "")))
                if m:
                    texts[(int(m.group(1)), int(m.group(2)))] = text
                msg: dict[str, Any] = {
                    "role": "user" if turn["speaker"] == first_speaker else "assistant",
                    "name": turn["speaker"],
                    "content": text,
                }
                if when:
                    msg["chat_time"] = when
                messages.append(msg)
            if messages:
                sessions.append((n, messages))
        c = Conversation(str(sample.get("sample_id", len(out))), sessions)
        for qa in sample.get("qa", []):
            if qa.get("category") not in CATEGORIES:
                continue
            gold = [texts[k] for k in evidence_keys(qa.get("evidence") or []) if k in texts]
            if gold:
                c.questions.append(Question(str(qa["question"]), int(qa["category"]), gold))
        out.append(c)
    return out


# scoring ----------------------------------------------------------------------------------------
def _norm(text: str) -> str:
    return " ".join(text.split())


def recall_at_budgets(memories: Sequence[str], gold: Sequence[str], budgets: Sequence[int] = BUDGETS) -> list[float]:
    """Fraction of gold texts found in the memories, concatenated in order and cut at each budget (words)."""
    words: list[str] = []
    for text in memories:
        words.extend(text.split())
        if len(words) >= max(budgets):
            break
    wanted = [_norm(g) for g in gold]
    out = []
    for b in budgets:
        window = " ".join(words[:b])
        out.append(sum(1 for g in wanted if g and g in window) / len(wanted))
    return out


@dataclass
class RecipeResult:
    recipe: str
    recall: dict[str, list[float]]  # "all" or category name -> [R@250, R@500, R@1000]
    count: dict[str, int]
    latency_ms: dict[str, float]
    words_returned_mean: float


def split_names(split: int) -> tuple[str, str]:
    """Names of the two conversation groups (first ``split`` conversations, the rest)."""
    return f"convs<{split}", f"convs>={split}"


def summarise(recipe: str, rows: list[tuple[int, list[float], float, int, int]], split: int = 0) -> RecipeResult:
    """rows: (category, recalls, seconds, words returned, conversation index)."""
    recall: dict[str, list[float]] = {}
    count: dict[str, int] = {}
    groups: dict[str, list[list[float]]] = {"all": [r[1] for r in rows]}
    for cat, name in CATEGORIES.items():
        groups[name] = [r[1] for r in rows if r[0] == cat]
    if split:
        first, rest = split_names(split)
        groups[first] = [r[1] for r in rows if r[4] < split]
        groups[rest] = [r[1] for r in rows if r[4] >= split]
    for name, vals in groups.items():
        count[name] = len(vals)
        recall[name] = [round(float(x), 4) for x in np.mean(vals, axis=0)] if vals else [0.0] * len(BUDGETS)
    lat = np.array([r[2] for r in rows]) * 1000.0
    return RecipeResult(
        recipe,
        recall,
        count,
        {
            "p50": round(float(np.percentile(lat, 50)), 2),
            "p99": round(float(np.percentile(lat, 99)), 2),
            "mean": round(float(lat.mean()), 2),
        },
        round(float(np.mean([r[3] for r in rows])), 1),
    )


# the suite --------------------------------------------------------------------------------------
class Suite:
    """textmem, ingest and gateway on loopback in a background event loop; keeps the TextMemory."""

    def __init__(self, data_dir: Path, window_size: int | None, window_overlap: int | None) -> None:
        self.data_dir = data_dir
        self.window = {}
        if window_size is not None:
            self.window["window_size"] = window_size
        if window_overlap is not None:
            self.window["window_overlap"] = window_overlap
        self.memory: Any = None
        self.gateway_address = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="locomo-suite", daemon=True)

    def start(self) -> str:
        self._thread.start()
        if not self._ready.wait(600):
            raise TimeoutError("the suite did not start")
        if self._error is not None:
            raise self._error
        return self.gateway_address

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        from services.gateway.app import build_server as build_gateway
        from services.gateway.settings import GatewaySettings
        from services.ingest.app import build_server as build_ingest
        from services.ingest.settings import IngestSettings
        from services.textmem.app import build_memory
        from services.textmem.app import build_server as build_textmem
        from services.textmem.settings import TextMemSettings

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        tm_settings = TextMemSettings(
            listen_addr="127.0.0.1:0", data_dir=self.data_dir, log_level="WARNING", **self.window
        )
        self.memory = build_memory(tm_settings)
        textmem = build_textmem(tm_settings, self.memory)
        await textmem.start()
        ingest = build_ingest(
            IngestSettings(listen_addr="127.0.0.1:0", textmem_addr=textmem.address, log_level="WARNING", **self.window)
        )
        await ingest.start()
        gateway = build_gateway(
            GatewaySettings(
                listen_addr="127.0.0.1:0",
                textmem_addr=textmem.address,
                ingest_addr=ingest.address,
                log_level="WARNING",
            )
        )
        await gateway.start()
        self.gateway_address = gateway.address
        self._ready.set()
        await self._stop.wait()
        await gateway.stop(1.0)
        await ingest.stop(1.0)
        await textmem.stop(1.0)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:
                pass
        self._thread.join(timeout=30)


# run --------------------------------------------------------------------------------------------
def add_conversations(client: MemosClient, conversations: Sequence[Conversation]) -> tuple[float, int]:
    started = time.perf_counter()
    turns = 0
    for i, conv in enumerate(conversations):
        for number, messages in conv.sessions:
            client.add_memories(
                USER,
                [conv.cube_id],
                messages,
                mode="fast",
                session_id=f"session_{number}",
                request_id=f"locomo-{conv.sample_id}-s{number}",
                timeout=600,
            )
            turns += len(messages)
        log(f"  added conversation {i + 1}/{len(conversations)} ({conv.sample_id}): {turns} turns so far")
    return time.perf_counter() - started, turns


def ask(client: MemosClient, conv: Conversation, q: Question, top_k: int) -> tuple[list[str], float]:
    started = time.perf_counter()
    resp = client.search_memories(USER, [conv.cube_id], q.text, top_k=top_k, timeout=60)
    elapsed = time.perf_counter() - started
    bucket = resp.text_mem[0]
    if bucket.status.code != 0:
        raise RuntimeError(f"search of {conv.cube_id} failed: {bucket.status.message}")
    return [m.item.memory for m in bucket.memories], elapsed


def run_recipe(
    client: MemosClient, suite: Suite, recipe: str, conversations: Sequence[Conversation], top_k: int, split: int = 0
) -> RecipeResult:
    suite.memory.recipe = RECIPES[recipe]
    rows: list[tuple[int, list[float], float, int, int]] = []
    for index, conv in enumerate(conversations):
        for q in conv.questions:
            memories, elapsed = ask(client, conv, q, top_k)
            words = sum(len(m.split()) for m in memories)
            rows.append((q.category, recall_at_budgets(memories, q.gold), elapsed, words, index))
    return summarise(recipe, rows, split)


def fmt_row(label: str, vals: Sequence[float]) -> str:
    return f"{label:<34}" + "".join(f"{v:>9.3f}" for v in vals)


def print_report(results: list[RecipeResult], questions: int, split: int = 0) -> None:
    cats = ["all", *CATEGORIES.values()]
    halves = [h for h in split_names(split) if split and h in results[0].recall]
    for r in results:
        print(f"\nrecipe {r.recipe}: recall at 250/500/1000 words ({questions} questions)")
        print(f"{'':<34}{'R@250w':>9}{'R@500w':>9}{'R@1000w':>9}{'n':>7}")
        for c in cats:
            print(fmt_row(c, r.recall[c]) + f"{r.count[c]:>7}")
        print(
            f"search latency: p50 {r.latency_ms['p50']:.1f} ms, p99 {r.latency_ms['p99']:.1f} ms"
            f" (words returned per search: {r.words_returned_mean:.0f})"
        )
    print("\nablation (same memories, same questions, same run): R@250w / R@500w / R@1000w")
    header = f"{'recipe':<28}" + "".join(f"{c:>20}" for c in cats) + f"{'p50 ms':>9}{'p99 ms':>9}"
    header += "".join(f"{'R@500 ' + h:>16}" for h in halves)
    print(header)
    for r in results:
        cells = "".join(f"{'/'.join(f'{v:.3f}' for v in r.recall[c]):>20}" for c in cats)
        cells += f"{r.latency_ms['p50']:>9.1f}{r.latency_ms['p99']:>9.1f}"
        cells += "".join(f"{r.recall[h][1]:>16.3f}" for h in halves)
        print(f"{r.recipe:<28}{cells}")
    if halves:
        print(
            f"(R@500 {halves[0]} / {halves[1]}: the conversations parameters were tuned on / held out;"
            " --split sets where the two groups part)"
        )
    best = max(results, key=lambda r: r.recall["all"][1])
    met = "met" if best.recall["all"][1] >= TARGET_R500 else "missed"
    print(
        f"\ntarget R@500w >= {TARGET_R500:.2f} (fast mode, no LLM): best {best.recipe} "
        f"{best.recall['all'][1]:.3f}, {met}; reference RRF over raw turns 0.643"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path of locomo10.json (never copy it here)")
    ap.add_argument("--limit-conversations", type=int, default=0, help="only the first N conversations (0: all)")
    ap.add_argument(
        "--recipes",
        default=",".join(RECIPES),
        help=f"comma-separated retrieval recipes to compare (known: {', '.join(RECIPES)}; default: all)",
    )
    ap.add_argument("--top-k", type=int, default=100, help="memories per search (enough to fill 1000 words)")
    ap.add_argument("--window-size", type=int, default=None, help="fast-mode window size (default: the setting's)")
    ap.add_argument("--window-overlap", type=int, default=None, help="fast-mode window overlap (default: setting's)")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the stores live (default: a temporary dir); a directory a previous run with the same\n"
        "window settings filled is reused: its adds are replayed (request ids), so comparing recipes\n"
        "again costs only the searches",
    )
    ap.add_argument(
        "--split",
        type=int,
        default=5,
        help="also report R@500w on the first N conversations and on the rest (tuning vs held out; 0: off)",
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default: benchmarks/results/locomo-*.json)")
    args = ap.parse_args(argv)

    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        ap.error(f"unknown recipes {unknown}; known: {list(RECIPES)}")
    if not args.data.is_file():
        ap.error(f"{args.data} not found (pass --data PATH to locomo10.json)")
    conversations = load_conversations(args.data)
    if args.limit_conversations:
        conversations = conversations[: args.limit_conversations]
    questions = sum(len(c.questions) for c in conversations)
    split = args.split if 0 < args.split < len(conversations) else 0
    turns = sum(len(m) for c in conversations for _, m in c.sessions)
    log(f"{len(conversations)} conversations, {turns} turns, {questions} questions")

    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        tmp = tempfile.mkdtemp(prefix="memos-locomo-")
        data_dir = Path(tmp)
    suite = Suite(data_dir, args.window_size, args.window_overlap)
    try:
        address = suite.start()
        log(f"suite on {address} (data in {data_dir})")
        with MemosClient(address) as client:
            add_s, added = add_conversations(client, conversations)
            log(f"added {added} turns in {add_s:.1f} s ({added / add_s:.0f} turns/s)")
            time.sleep(2.0)  # let Milvus Lite seal the new rows (its flush interval), as a settled store would
            suite.memory.recipe = RECIPES[recipes[0]]
            warm = [(c, q) for c in conversations for q in c.questions][:WARMUP_QUERIES]
            for c, q in warm:
                ask(client, c, q, args.top_k)
            results = []
            for name in recipes:
                started = time.perf_counter()
                results.append(run_recipe(client, suite, name, conversations, args.top_k, split))
                log(f"  recipe {name}: {time.perf_counter() - started:.0f} s")
    finally:
        suite.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    print_report(results, questions, split)
    payload = {
        "benchmark": "locomo-retrieval",
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "data": str(args.data),
        "conversations": len(conversations),
        "turns": added,
        "questions": questions,
        "top_k": args.top_k,
        "window": {"size": suite.memory.window_size, "overlap": suite.memory.window_overlap},
        "default_recipe": DEFAULT_RECIPE,
        "add_seconds": round(add_s, 1),
        "budgets_words": list(BUDGETS),
        "target_r500": TARGET_R500,
        "results": [r.__dict__ for r in results],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = args.out or RESULTS_DIR / f"locomo-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(payload, indent=2))
    if args.out is None:
        (RESULTS_DIR / "locomo-latest.json").write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
