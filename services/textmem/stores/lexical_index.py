"""An in-process BM25 index per cube over the SQLite store's memory text.

Why: SQLite's FTS5 table is one index over every cube. ``bm25()`` scores every
row that holds any of the query's words, in every cube, and only then does the
join drop the other cubes. Measured on the 2-core dev machine: 19 ms per
search with a 10,000-memory cube in the file, and about the same for each cube
of a fan-out however small that cube is, since the cost follows the table,
not the cube. Here each cube has postings of its own in flat arrays, and a
search costs what its cube's matching rows cost (well under a millisecond at
10,000 memories).

It stays exact with respect to the database. Triggers log every change of a
``memories`` row in ``memory_changes`` inside the writing transaction, and
every search first applies the changes logged for its cube since its copy was
taken; so a search sees every committed write, from this process or another,
as it would with FTS5. A copy that fell behind what the log still holds
(another process pruned it) is reloaded whole.

Scoring is FTS5's bm25 (k1 = 1.2, b = 0.75, its idf with the same floor) over
the same tokens as the FTS5 table's ``unicode61 remove_diacritics 2``
tokenizer (runs of letters and digits, case and diacritics folded), with one
deliberate difference: document counts and lengths are the cube's, not the
whole table's, so one tenant's vocabulary does not skew another's ranking.
Filters on tags are left to FTS5 (the caller falls back).
"""

from __future__ import annotations

import json
import logging
import math
import re
import sqlite3
import threading
import unicodedata
from array import array
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager

import numpy as np

from services.textmem.models import MEMORY_TYPES, STATUSES, Memory, MemoryFilter
from shared.errors import MemosError

log = logging.getLogger(__name__)

# Letters and digits (unicode61's token characters); underscores separate, as in FTS5.
WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Words too common to help BM25; dropping them keeps OR-queries small.
STOPWORDS = frozenset(
    "a an and are as at be but by do for from has have he her his i in is it its me my of on or our she so that the "
    "their them they this to was we what when where which who will with you your".split()
)
MAX_QUERY_WORDS = 64
BM25_K1 = 1.2
BM25_B = 0.75
# Log entries a cube may gather before a search prunes those it has applied.
PRUNE_AFTER = 4096
# Per cube, what searches keep between changes of the cube: the filter masks (a handful of
# filters recur) and each query word's BM25 term weights, so that a search repeats none of
# the per-row work an earlier one did. The weights hold 8 bytes per posting; past this many
# postings in all, the cache starts over.
MASK_CACHE = 16
TERM_CACHE_POSTINGS = 2_000_000
# Memories held read with their sources, per cube; past this many the least recently read go.
# A bound keeps a big cube's copy from holding every source it was ever asked for. Searches of a
# 10,000-memory cube with LoCoMo's questions keep coming back to ~6,000 memories: with 4,096
# and the cache starting over when full, a search read ~57 memories from SQL; with this, ~4.
FULL_CACHE_MEMORIES = 16384

CHANGE_LOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS memory_changes (
  change_id INTEGER PRIMARY KEY AUTOINCREMENT,
  cube_id TEXT NOT NULL,
  seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS memory_changes_cube ON memory_changes(cube_id, change_id);
-- Everything up to floor was pruned from the log: a copy taken before it must reload.
CREATE TABLE IF NOT EXISTS memory_change_floor (
  cube_id TEXT PRIMARY KEY,
  floor INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS memories_log_ai AFTER INSERT ON memories BEGIN
  INSERT INTO memory_changes(cube_id, seq) VALUES (new.cube_id, new.seq);
END;
CREATE TRIGGER IF NOT EXISTS memories_log_ad AFTER DELETE ON memories BEGIN
  INSERT INTO memory_changes(cube_id, seq) VALUES (old.cube_id, old.seq);
END;
-- Every column the copies hold (they also answer ranking's reads of memories without sources).
DROP TRIGGER IF EXISTS memories_log_au;
CREATE TRIGGER IF NOT EXISTS memories_log_au2
AFTER UPDATE OF memory, memory_type, status, user_id, session_id, created_at, event_time, tags, info, cube_id
ON memories BEGIN
  INSERT INTO memory_changes(cube_id, seq) VALUES (old.cube_id, old.seq);
  INSERT INTO memory_changes(cube_id, seq) SELECT new.cube_id, new.seq WHERE new.cube_id != old.cube_id;
END;
-- A link made or removed is logged as a change of its source memory: the copies cache links
-- until their cube changes, and a link can change without any memory row changing.
CREATE TRIGGER IF NOT EXISTS edges_log_ai AFTER INSERT ON edges BEGIN
  INSERT INTO memory_changes(cube_id, seq)
  SELECT new.cube_id, seq FROM memories WHERE id = new.src_id AND cube_id = new.cube_id;
END;
CREATE TRIGGER IF NOT EXISTS edges_log_ad AFTER DELETE ON edges BEGIN
  INSERT INTO memory_changes(cube_id, seq)
  SELECT old.cube_id, seq FROM memories WHERE id = old.src_id AND cube_id = old.cube_id;
END;
"""

_ROW_COLUMNS = "seq, id, memory, memory_type, status, user_id, session_id, created_at, event_time, tags, info"
_TYPE_CODE = {t: i for i, t in enumerate(MEMORY_TYPES)}
_STATUS_CODE = {s: i for i, s in enumerate(STATUSES)}


def fold(text: str) -> str:
    """Lower case without diacritics, as unicode61 with remove_diacritics 2 folds tokens."""
    text = text.lower()
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def tokens(text: str) -> list[str]:
    return WORD.findall(fold(text))


def query_words(text: str) -> list[str]:
    """The words a full-text query ORs together: stopwords dropped (unless nothing else is
    left), each once, at most MAX_QUERY_WORDS."""
    words = tokens(text)
    kept = [w for w in words if w not in STOPWORDS] or words
    return list(dict.fromkeys(kept))[:MAX_QUERY_WORDS]


def _allowed(codes: dict[str, int], values: Sequence[str]) -> np.ndarray:
    # Unknown values are stored as -1, which indexes the table's last slot, always False.
    table = np.zeros(len(codes) + 1, dtype=bool)
    for v in values:
        if v in codes:
            table[codes[v]] = True
    return table


class _CubeLexicon:
    """One cube's postings (term -> slots and term frequencies, append-only) and per-slot
    columns; a changed or deleted memory leaves a dead slot behind until the cube reloads."""

    def __init__(self, position: int) -> None:
        self.position = position  # the last change id applied
        self.ids: list[str] = []
        self.slot_of: dict[int, int] = {}  # memory seq -> slot
        self.live_slot: dict[str, int] = {}  # memory id -> its live slot
        # The row's other columns, as stored (tags and info as JSON text): ranking reads memories
        # without their sources from here instead of SQLite.
        self.rows: list[tuple] = []
        self.postings: dict[str, tuple[array, array]] = {}
        self.live = array("b")
        self.length = array("f")
        self.type_code = array("b")
        self.status_code = array("b")
        self.user = array("i")
        self.session = array("i")
        self.created = array("d")
        self.codes: dict[str, int] = {}  # user and session ids, interned per cube
        self.live_count = 0
        self.live_length = 0.0
        self.dead = 0
        # Bumped by every change: what the caches below were computed for.
        self.version = 0
        self._masks: dict[tuple, tuple[int, np.ndarray | None]] = {}
        self._terms: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
        self._terms_version = -1
        self._terms_postings = 0
        # Memories as ranking reads them, per slot, built on first read. A slot's row never
        # changes (a changed memory takes a new slot), and a memory's sources change only with
        # a logged change of its row (an insert, or a merge that sets its tags), so what was
        # built for a live slot stays right: no invalidation beyond dropping dead slots.
        self.lean: dict[int, Memory] = {}
        self.full: OrderedDict[int, Memory] = OrderedDict()  # least recently read first
        # Links per (edge type, memory id), valid while ``version`` stays at ``links_version``.
        self.links: dict[tuple[str, str], list[str]] = {}
        self.links_version = -1
        # Per connection, its stamp (LexicalIndex._stamp) when this copy was last brought up to
        # date through it: while a connection's stamp stays the same, the copy is current.
        self.stamps: dict[sqlite3.Connection, tuple[int, int]] = {}

    def _code(self, value: str) -> int:
        return self.codes.setdefault(value, len(self.codes))

    def remove(self, seq: int) -> None:
        slot = self.slot_of.pop(seq, None)
        if slot is not None:
            if self.live_slot.get(self.ids[slot]) == slot:
                del self.live_slot[self.ids[slot]]
            self.rows[slot] = ()
            self.lean.pop(slot, None)
            self.full.pop(slot, None)
            self.live[slot] = 0
            self.live_count -= 1
            self.live_length -= self.length[slot]
            self.dead += 1
            self.version += 1

    def put(self, row: Sequence) -> None:
        seq, mid, text, memory_type, status, user_id, session_id, created_at, event_time, tags, info = row
        self.remove(seq)
        slot = len(self.ids)
        self.ids.append(mid)
        self.slot_of[seq] = slot
        self.live_slot[mid] = slot
        self.rows.append((text, memory_type, status, user_id, session_id, created_at, event_time, tags, info))
        words = tokens(text)
        for term, tf in Counter(words).items():
            posting = self.postings.get(term)
            if posting is None:
                posting = self.postings[term] = (array("i"), array("f"))
            posting[0].append(slot)
            posting[1].append(tf)
        self.live.append(1)
        self.length.append(len(words))
        self.type_code.append(_TYPE_CODE.get(memory_type, -1))
        self.status_code.append(_STATUS_CODE.get(status, -1))
        self.user.append(self._code(user_id))
        self.session.append(self._code(session_id))
        self.created.append(created_at)
        self.live_count += 1
        self.live_length += len(words)
        self.version += 1

    def memories(self, cube_id: str, ids: Iterable[str]) -> dict[str, Memory]:
        out: dict[str, Memory] = {}
        for mid in ids:
            slot = self.live_slot.get(mid)
            if slot is None:
                continue
            m = self.lean.get(slot)
            if m is None:
                text, memory_type, status, user_id, session_id, created_at, event_time, tags, info = self.rows[slot]
                m = self.lean[slot] = Memory(
                    id=mid,
                    cube_id=cube_id,
                    memory=text,
                    user_id=user_id,
                    session_id=session_id,
                    memory_type=memory_type,
                    status=status,
                    tags=[] if tags == "[]" else json.loads(tags),
                    info={} if info == "{}" else json.loads(info),
                    created_at=created_at,
                    event_time=event_time,
                )
            out[mid] = m
        return out

    def worth_reloading(self) -> bool:
        return self.dead > 64 and self.dead * 2 > len(self.ids)

    def _mask(self, flt: MemoryFilter, live: np.ndarray) -> np.ndarray | None:
        m = live.astype(bool)
        m &= _allowed(_TYPE_CODE, flt.types())[np.frombuffer(self.type_code, dtype=np.int8)]
        m &= _allowed(_STATUS_CODE, flt.statuses())[np.frombuffer(self.status_code, dtype=np.int8)]
        for value, column in ((flt.user_id, self.user), (flt.session_id, self.session)):
            if value:
                code = self.codes.get(value)
                if code is None:
                    return None
                m &= np.frombuffer(column, dtype=np.int32) == code
        created = np.frombuffer(self.created, dtype=np.float64)
        if flt.created_after is not None:
            m &= created >= flt.created_after
        if flt.created_before is not None:
            m &= created < flt.created_before
        return m

    def mask(self, flt: MemoryFilter) -> np.ndarray | None:
        """Live rows passing the filter (None: none can), kept until the cube changes: its cost
        is a few passes over every row of the cube, the same for every search."""
        key = (flt.types(), flt.statuses(), flt.user_id, flt.session_id, flt.created_after, flt.created_before)
        got = self._masks.get(key)
        if got is not None and got[0] == self.version:
            return got[1]
        m = self._mask(flt, np.frombuffer(self.live, dtype=np.int8))
        if len(self._masks) >= MASK_CACHE:
            self._masks.clear()
        self._masks[key] = (self.version, m)
        return m

    def count(self, flt: MemoryFilter) -> int:
        if not self.ids:
            return 0
        m = self.mask(flt)
        return 0 if m is None else int(np.count_nonzero(m))

    def _term(self, word: str, live: np.ndarray, length: np.ndarray, avg_length: float):  # type: ignore[no-untyped-def]
        """A word's live document count, its postings' slots and their BM25 term weights
        (without idf), or None when no live row holds it; cached until the cube changes."""
        if self._terms_version != self.version or self._terms_postings > TERM_CACHE_POSTINGS:
            self._terms.clear()
            self._terms_version = self.version
            self._terms_postings = 0
        got = self._terms.get(word)
        if got is not None:
            return got
        posting = self.postings.get(word)
        if posting is None:
            return None
        # A copy: a view kept in the cache would stop the posting's array from growing.
        slots = np.frombuffer(posting[0], dtype=np.int32).copy()
        tf = np.frombuffer(posting[1], dtype=np.float32).astype(np.float64)
        df = int(np.count_nonzero(live[slots]))
        if df == 0:
            return None
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length[slots] / avg_length)
        got = self._terms[word] = (df, slots, tf * (BM25_K1 + 1) / (tf + norm))
        self._terms_postings += len(slots)
        return got

    def search(self, words: Sequence[str], flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        n = len(self.ids)
        if n == 0 or self.live_count == 0 or limit <= 0:
            return []
        live = np.frombuffer(self.live, dtype=np.int8)
        length = np.frombuffer(self.length, dtype=np.float32)
        docs = self.live_count
        avg_length = max(self.live_length / docs, 1e-9)
        parts_slots: list[np.ndarray] = []
        parts_scores: list[np.ndarray] = []
        for word in words:
            term = self._term(word, live, length, avg_length)
            if term is None:
                continue
            df, slots, weight = term
            # FTS5's idf, floored the same way so that a word in most rows still counts a little.
            idf = math.log((docs - df + 0.5) / (df + 0.5))
            if idf <= 0:
                idf = 1e-6
            parts_slots.append(slots)
            parts_scores.append(idf * weight)
        if not parts_slots:
            return []
        m = self.mask(flt)
        if m is None:
            return []
        # One pass adding every word's scores, in the words' order (the sums equal a word-by-word
        # accumulation); a slot's total is the same whatever words hold it.
        if len(parts_slots) == 1:
            slots, contrib = parts_slots[0], parts_scores[0]
        else:
            slots, contrib = np.concatenate(parts_slots), np.concatenate(parts_scores)
        scores = np.bincount(slots, weights=contrib, minlength=n)
        hits = np.flatnonzero(m & (scores > 0))
        if len(hits) == 0:
            return []
        k = min(limit, len(hits))
        top = hits[np.argpartition(-scores[hits], k - 1)[:k]] if k < len(hits) else hits
        # Ties go to the older memory, as FTS5's rowid order would have it.
        order = sorted(top.tolist(), key=lambda s: (-scores[s], s))
        return [(self.ids[s], float(scores[s])) for s in order]


class LexicalIndex:
    """Per-cube BM25 copies of a SQLite database's memory text, kept current from its change
    log. ``connect`` gives this thread's connection (autocommit mode); ``write`` opens a write
    transaction (used only to prune the log); ``writes`` counts the transactions committed
    through the store's own connections, bumped after each commit (see :meth:`_stamp`)."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        write: Callable[[], AbstractContextManager[sqlite3.Connection]],
        writes: Callable[[], int] | None = None,
    ) -> None:
        self._connect = connect
        self._write = write
        self._writes = writes
        self._cubes: dict[str, _CubeLexicon] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._closing = threading.Event()
        self._prewarmer: threading.Thread | None = None

    def _lock(self, cube_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(cube_id, threading.Lock())

    def _load(self, conn: sqlite3.Connection, cube_id: str) -> _CubeLexicon:
        # One read transaction: the rows and the log position are of the same snapshot.
        conn.execute("BEGIN")
        try:
            position = conn.execute("SELECT COALESCE(MAX(change_id), 0) FROM memory_changes").fetchone()[0]
            cube = _CubeLexicon(position)
            for row in conn.execute(f"SELECT {_ROW_COLUMNS} FROM memories WHERE cube_id = ? ORDER BY seq", (cube_id,)):
                cube.put(tuple(row))
        finally:
            conn.execute("COMMIT")
        return cube

    def _refresh(self, conn: sqlite3.Connection, cube_id: str, cube: _CubeLexicon) -> _CubeLexicon:
        conn.execute("BEGIN")
        try:
            floor = conn.execute("SELECT floor FROM memory_change_floor WHERE cube_id = ?", (cube_id,)).fetchone()
            if floor is not None and floor[0] > cube.position:
                conn.execute("COMMIT")
                return self._load(conn, cube_id)
            changes = conn.execute(
                "SELECT change_id, seq FROM memory_changes WHERE cube_id = ? AND change_id > ? ORDER BY change_id",
                (cube_id, cube.position),
            ).fetchall()
            if not changes:
                return cube
            seqs = list(dict.fromkeys(seq for _, seq in changes))
            rows: dict[int, tuple] = {}
            for i in range(0, len(seqs), 500):
                chunk = seqs[i : i + 500]
                for row in conn.execute(
                    f"SELECT {_ROW_COLUMNS} FROM memories WHERE cube_id = ? AND seq IN ({','.join('?' * len(chunk))})",
                    [cube_id, *chunk],
                ):
                    rows[row[0]] = tuple(row)
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
        for seq in seqs:
            if seq in rows:
                cube.put(rows[seq])
            else:
                cube.remove(seq)
        cube.position = changes[-1][0]
        if cube.worth_reloading():
            return self._load(conn, cube_id)
        if len(changes) >= PRUNE_AFTER or self._logged(conn, cube_id) >= PRUNE_AFTER:
            self._prune(cube_id, cube.position)
        return cube

    @staticmethod
    def _logged(conn: sqlite3.Connection, cube_id: str) -> int:
        return conn.execute(
            "SELECT COUNT(*) FROM (SELECT 1 FROM memory_changes WHERE cube_id = ? LIMIT ?)", (cube_id, PRUNE_AFTER)
        ).fetchone()[0]

    def _prune(self, cube_id: str, through: int) -> None:
        try:
            with self._write() as conn:
                conn.execute("DELETE FROM memory_changes WHERE cube_id = ? AND change_id <= ?", (cube_id, through))
                conn.execute(
                    "INSERT INTO memory_change_floor(cube_id, floor) VALUES (?, ?)"
                    " ON CONFLICT(cube_id) DO UPDATE SET floor = MAX(floor, excluded.floor)",
                    (cube_id, through),
                )
        except (sqlite3.Error, MemosError):  # busy: a later search prunes; nothing depends on it now
            log.debug("pruning the change log failed", exc_info=True)

    def _stamp(self, conn: sqlite3.Connection) -> tuple[int, int] | None:
        """What ``conn`` can tell of the database's commits so far, or None when it cannot.

        ``PRAGMA data_version`` changes when a commit is made through any other connection
        (another thread's, another store object's, another process's), never for the
        connection's own commits; those go through the store's write transactions, which bump
        ``writes`` once committed. So if a connection's stamp is the same as when a copy was
        refreshed through it, nothing was committed since, and the copy is current: one
        statement instead of the refresh's four (~10 cube reads a search each ask)."""
        if self._writes is None:
            return None
        writes = self._writes()  # read first: a commit racing with this is seen next time
        return conn.execute("PRAGMA data_version").fetchone()[0], writes

    def _current(self, cube_id: str) -> _CubeLexicon:
        """The cube's copy, brought up to date; call with the cube's lock held."""
        conn = self._connect()
        cube = self._cubes.get(cube_id)
        stamp = self._stamp(conn)
        if cube is not None and stamp is not None and cube.stamps.get(conn) == stamp:
            return cube
        cube = self._load(conn, cube_id) if cube is None else self._refresh(conn, cube_id, cube)
        if stamp is not None:
            # Taken before the refresh: a commit after it changes the stamp, so is never missed.
            cube.stamps[conn] = stamp
        self._cubes[cube_id] = cube
        return cube

    def search(self, cube_id: str, query: str, flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        """The cube's best matches for any of the query's words, as (id, BM25 score), best first."""
        words = query_words(query)
        if not words:
            return []
        with self._lock(cube_id):
            return self._current(cube_id).search(words, flt, limit)

    def memories_if_loaded(self, cube_id: str, ids: Sequence[str]) -> dict[str, Memory] | None:
        """The cube's memories among ``ids`` as its copy holds them: every column but the ones
        ranking does not read (key, background, confidence, updated_at, version), and no sources.
        None when the cube has no copy yet. Ranking reads ~100 neighbours a search this way, in
        a fraction of a millisecond instead of ~2 ms of SQL and JSON. The memories are shared
        between calls: callers only read them."""
        if cube_id not in self._cubes:
            return None
        with self._lock(cube_id):
            return self._current(cube_id).memories(cube_id, ids)

    def full_memories_if_loaded(
        self, cube_id: str, ids: Sequence[str], read: Callable[[list[str]], dict[str, Memory]]
    ) -> dict[str, Memory] | None:
        """The cube's memories among ``ids`` with their sources: those read before since their
        last change from the copy's cache, the others by ``read`` (SQL, outside the cube's lock,
        so that searches of one cube do not queue behind each other's reads). None when the cube
        has no copy yet. Shared between calls like :meth:`memories_if_loaded`'s."""
        if cube_id not in self._cubes:
            return None
        with self._lock(cube_id):
            cube = self._current(cube_id)
            out: dict[str, Memory] = {}
            missing: dict[str, int] = {}  # id -> its live slot
            for mid in dict.fromkeys(ids):
                slot = cube.live_slot.get(mid)
                if slot is None:
                    continue  # not in the cube as of the refresh, as SQL would have answered
                m = cube.full.get(slot)
                if m is None:
                    missing[mid] = slot
                else:
                    cube.full.move_to_end(slot)
                    out[mid] = m
        if missing:
            got = read(list(missing))
            # Read after the refresh, so at least as new as the slots; a change applied meanwhile
            # has killed its slot, and one not yet applied will: neither is ever served stale.
            with self._lock(cube_id):
                if self._cubes.get(cube_id) is cube:
                    for mid, m in got.items():
                        if cube.live_slot.get(mid) == missing.get(mid):
                            cube.full[missing[mid]] = m
                    while len(cube.full) > FULL_CACHE_MEMORIES:
                        cube.full.popitem(last=False)
            out.update(got)
        return out

    def links_if_loaded(
        self,
        cube_id: str,
        ids: Sequence[str],
        edge_type: str,
        read: Callable[[list[str]], dict[str, list[str]]],
    ) -> dict[str, list[str]] | None:
        """The ``edge_type`` links of each id (every id a key): from the copy's cache when its
        cube has not changed since they were read, the others by ``read`` (outside the lock).
        None when the cube has no copy yet. Shared between calls: callers only read them."""
        if cube_id not in self._cubes:
            return None
        with self._lock(cube_id):
            cube = self._current(cube_id)
            if cube.links_version != cube.version:
                cube.links.clear()
                cube.links_version = cube.version
            version = cube.version
            out: dict[str, list[str]] = {}
            missing: list[str] = []
            for mid in dict.fromkeys(ids):
                held = cube.links.get((edge_type, mid))
                if held is None:
                    missing.append(mid)
                else:
                    out[mid] = held
        if missing:
            got = read(missing)
            with self._lock(cube_id):
                # Cached only if no change was applied since the refresh: links read after a
                # change the copy has not applied yet are dropped at the refresh that applies it.
                if self._cubes.get(cube_id) is cube and cube.version == version == cube.links_version:
                    for mid, others in got.items():
                        cube.links[(edge_type, mid)] = others
            out.update(got)
        return out

    def count_if_loaded(self, cube_id: str, flt: MemoryFilter | None) -> int | None:
        """How many of the cube's memories pass the filter (all of them without one), from its
        copy brought up to date; None when the cube has no copy yet (loading one just to count
        would cost far more than SQL's count). A search's count costs microseconds this way
        instead of ~0.7 ms of SQL, per cube of a fan-out."""
        if cube_id not in self._cubes or (flt is not None and flt.tags):
            return None
        with self._lock(cube_id):
            cube = self._current(cube_id)
            return cube.live_count if flt is None else cube.count(flt)

    def start_prewarm(self, cube_ids: Callable[[], Iterable[str]]) -> None:
        """Loads the given cubes in a background thread, so that their first searches after a
        restart do not wait for the load (about a second per 10,000 memories here)."""

        def run() -> None:
            try:
                for cube_id in cube_ids():
                    if self._closing.is_set():
                        return
                    with self._lock(cube_id):
                        self._current(cube_id)
            except Exception:  # a failed prewarm only means the first search loads the cube
                log.warning("prewarming the full-text index failed; cubes load on first use", exc_info=True)

        self._prewarmer = threading.Thread(target=run, name="lexical-index-prewarm", daemon=True)
        self._prewarmer.start()

    def loaded_cubes(self) -> set[str]:
        with self._guard:
            return set(self._cubes)

    def close(self) -> None:
        self._closing.set()
        if self._prewarmer is not None:
            self._prewarmer.join(timeout=10)
        with self._guard:
            self._cubes.clear()
