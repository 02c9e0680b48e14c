"""GraphStore on SQLite: the embedded default.

One file holds memories, their sources (one row per source), edges, tags,
cubes and idempotency records. Lexical search is BM25 from per-cube in-process
copies kept current from a change log (stores/lexical_index.py); an FTS5 index
over memory text serves tag-filtered searches and deployments that turn the
copies off. WAL mode lets searches run while an add commits. Every value
is bound as a parameter; nothing from a request is spliced into SQL.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from services.textmem.conflicts import SUPERSEDED_BY_KEY, Archive
from services.textmem.dedupe import (
    Merge,
    TextKey,
    is_merge_target,
    merged_fields,
    text_added_meanwhile,
    text_hash,
    unique_text_keys,
)
from services.textmem.models import SEARCHABLE_STATUSES, Cube, Edge, Memory, MemoryFilter, Source
from services.textmem.quota import UNCOUNTED_TYPE, CubeQuota, CubeUsage, update_growth
from services.textmem.stores.graph import MemoryStats
from services.textmem.stores.lexical_index import CHANGE_LOG_SCHEMA, LexicalIndex, query_words
from shared.errors import AlreadyExists, NotFound, Unavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  cube_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  session_id TEXT NOT NULL,
  memory TEXT NOT NULL,
  memory_type TEXT NOT NULL,
  status TEXT NOT NULL,
  key TEXT NOT NULL,
  tags TEXT NOT NULL,
  background TEXT NOT NULL,
  confidence REAL NOT NULL,
  info TEXT NOT NULL,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  event_time REAL,
  version INTEGER NOT NULL,
  -- dedupe.text_hash(memory): exact dedupe on add looks memories up by it (index: _migrate).
  text_hash TEXT
);
CREATE INDEX IF NOT EXISTS memories_cube ON memories(cube_id, seq);
-- Serves the per-search count of a cube's searchable memories without reading the rows.
CREATE INDEX IF NOT EXISTS memories_cube_type_status ON memories(cube_id, memory_type, status);
-- Finds the cubes holding a user's memories (erasure of a user's data).
CREATE INDEX IF NOT EXISTS memories_user ON memories(user_id, cube_id);
-- The versions updates replaced (body: the memory's fields as JSON, without sources); they go
-- with the memory (ON DELETE CASCADE), so a hard delete leaves no history behind.
CREATE TABLE IF NOT EXISTS memory_history (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  memory_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
  cube_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memory_history_memory ON memory_history(memory_id, seq);
CREATE TABLE IF NOT EXISTS sources (
  memory_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY (memory_id, position)
);
CREATE TABLE IF NOT EXISTS memory_tags (
  memory_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
  tag TEXT NOT NULL,
  PRIMARY KEY (memory_id, tag)
);
CREATE TABLE IF NOT EXISTS edges (
  cube_id TEXT NOT NULL,
  src_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
  dst_id TEXT NOT NULL REFERENCES memories(id) ON DELETE CASCADE,
  type TEXT NOT NULL,
  PRIMARY KEY (src_id, dst_id, type)
);
CREATE INDEX IF NOT EXISTS edges_dst ON edges(dst_id);
CREATE TABLE IF NOT EXISTS requests (
  cube_id TEXT NOT NULL,
  request_id TEXT NOT NULL,
  memory_ids TEXT NOT NULL,
  created_at REAL NOT NULL,
  -- Ids among memory_ids that existed before the request and got its content merged in (dedupe).
  merged_ids TEXT NOT NULL DEFAULT '[]',
  PRIMARY KEY (cube_id, request_id)
);
CREATE TABLE IF NOT EXISTS cubes (
  cube_id TEXT PRIMARY KEY,
  owner_id TEXT NOT NULL,
  name TEXT NOT NULL,
  created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cube_members (
  cube_id TEXT NOT NULL REFERENCES cubes(cube_id) ON DELETE CASCADE,
  user_id TEXT NOT NULL,
  role TEXT NOT NULL,
  PRIMARY KEY (cube_id, user_id)
);
CREATE INDEX IF NOT EXISTS cube_members_user ON cube_members(user_id);
CREATE INDEX IF NOT EXISTS cubes_owner ON cubes(owner_id);
-- Write-ahead marks: these memories' vectors are being changed (TextMemory.repair_vector_writes).
CREATE TABLE IF NOT EXISTS pending_vector_writes (
  cube_id TEXT NOT NULL,
  memory_id TEXT NOT NULL,
  marked_at REAL NOT NULL,
  PRIMARY KEY (cube_id, memory_id)
);
CREATE INDEX IF NOT EXISTS pending_vector_writes_at ON pending_vector_writes(marked_at);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
  memory, content='memories', content_rowid='seq', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS memories_ai AFTER INSERT ON memories BEGIN
  INSERT INTO memories_fts(rowid, memory) VALUES (new.seq, new.memory);
END;
CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN
  INSERT INTO memories_fts(memories_fts, rowid, memory) VALUES ('delete', old.seq, old.memory);
END;
CREATE TRIGGER IF NOT EXISTS memories_au AFTER UPDATE OF memory ON memories BEGIN
  INSERT INTO memories_fts(memories_fts, rowid, memory) VALUES ('delete', old.seq, old.memory);
  INSERT INTO memories_fts(rowid, memory) VALUES (new.seq, new.memory);
END;
"""

# Each cube's usage as the quotas count it (services/textmem/quota.py), kept by triggers in the
# transaction of every insert, delete and update, so that reading it costs one row whatever the
# cube's size. length(CAST(text AS BLOB)) is the text's UTF-8 size (the database is UTF-8).
# Created (and filled from the memories) by _migrate, so that files from before it get it too.
_USAGE_SCHEMA = f"""
CREATE TABLE cube_usage (
  cube_id TEXT PRIMARY KEY,
  memories INTEGER NOT NULL,
  bytes INTEGER NOT NULL
);
INSERT INTO cube_usage(cube_id, memories, bytes)
  SELECT cube_id, COUNT(*), COALESCE(SUM(length(CAST(memory AS BLOB))), 0) FROM memories
  WHERE memory_type != '{UNCOUNTED_TYPE}' GROUP BY cube_id;
CREATE TRIGGER cube_usage_ai AFTER INSERT ON memories WHEN new.memory_type != '{UNCOUNTED_TYPE}' BEGIN
  INSERT INTO cube_usage(cube_id, memories, bytes) VALUES (new.cube_id, 1, length(CAST(new.memory AS BLOB)))
  ON CONFLICT(cube_id) DO UPDATE SET memories = memories + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER cube_usage_ad AFTER DELETE ON memories WHEN old.memory_type != '{UNCOUNTED_TYPE}' BEGIN
  UPDATE cube_usage SET memories = memories - 1, bytes = bytes - length(CAST(old.memory AS BLOB))
  WHERE cube_id = old.cube_id;
END;
CREATE TRIGGER cube_usage_au AFTER UPDATE OF memory, memory_type ON memories BEGIN
  UPDATE cube_usage SET memories = memories - 1, bytes = bytes - length(CAST(old.memory AS BLOB))
  WHERE cube_id = old.cube_id AND old.memory_type != '{UNCOUNTED_TYPE}';
  INSERT INTO cube_usage(cube_id, memories, bytes)
  SELECT new.cube_id, 1, length(CAST(new.memory AS BLOB)) WHERE new.memory_type != '{UNCOUNTED_TYPE}'
  ON CONFLICT(cube_id) DO UPDATE SET memories = memories + 1, bytes = bytes + excluded.bytes;
END;
"""


def fts_query(text: str) -> str:
    """An FTS5 OR-query of the text's words, each quoted so no syntax leaks in."""
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in query_words(text))


def _filter_sql(flt: MemoryFilter, alias: str = "m") -> tuple[str, list]:
    clauses = [f"{alias}.memory_type IN ({','.join('?' * len(flt.types()))})"]
    params: list = list(flt.types())
    clauses.append(f"{alias}.status IN ({','.join('?' * len(flt.statuses()))})")
    params.extend(flt.statuses())
    if flt.user_id:
        clauses.append(f"{alias}.user_id = ?")
        params.append(flt.user_id)
    if flt.session_id:
        clauses.append(f"{alias}.session_id = ?")
        params.append(flt.session_id)
    if flt.created_after is not None:
        clauses.append(f"{alias}.created_at >= ?")
        params.append(flt.created_after)
    if flt.created_before is not None:
        clauses.append(f"{alias}.created_at < ?")
        params.append(flt.created_before)
    for tag in flt.tags:
        clauses.append(f"EXISTS (SELECT 1 FROM memory_tags t WHERE t.memory_id = {alias}.id AND t.tag = ?)")
        params.append(tag)
    return " AND ".join(clauses), params


class SqliteGraphStore:
    def __init__(self, path: Path | str, lexical_index: bool = True) -> None:
        """``lexical_index``: answer full-text searches from per-cube in-process BM25 copies
        (stores/lexical_index.py) rather than FTS5, except those filtered by tag."""
        self._path = str(path)
        if self._path != ":memory:":
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        # Write transactions committed through this object, bumped after each commit: with
        # PRAGMA data_version (other connections' commits), tells the full-text copies when
        # nothing changed (LexicalIndex._stamp).
        self._commits = 0
        self._all_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        with self._write_lock:
            self._conn().executescript(_SCHEMA)
            _migrate(self._conn())
            self._conn().executescript(CHANGE_LOG_SCHEMA)
        self._lexicon = LexicalIndex(self._conn, self._tx, lambda: self._commits) if lexical_index else None

    # connections ----------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._conns_lock:
                self._all_conns.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise Unavailable(f"graph store busy: {exc}", reason="GRAPH_STORE_BUSY") from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                try:
                    conn.execute("COMMIT")
                finally:
                    # Even after a failed COMMIT: a spurious bump costs one refresh, a missed one
                    # a stale copy.
                    self._commits += 1

    def start_lexical_prewarm(self, cube_ids: Callable[[], Iterable[str]]) -> None:
        """Loads these cubes' full-text copies in the background (no-op without the index)."""
        if self._lexicon is not None:
            self._lexicon.start_prewarm(cube_ids)

    def close(self) -> None:
        if self._lexicon is not None:
            self._lexicon.close()
        with self._conns_lock:
            for conn in self._all_conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all_conns.clear()
        self._local = threading.local()

    # memories -------------------------------------------------------------
    def insert_memories(
        self,
        cube_id: str,
        memories: Sequence[Memory],
        edges: Sequence[Edge] = (),
        request_id: str = "",
        merges: Sequence[Merge] = (),
        result_ids: Sequence[str] | None = None,
        quota: CubeQuota | None = None,
        archives: Sequence[Archive] = (),
        unique_texts: bool = False,
    ) -> None:
        ids = [m.id for m in memories] if result_ids is None else list(result_ids)
        adding = CubeUsage.of(memories)
        guarded = unique_text_keys(memories) if unique_texts else set()
        with self._tx() as conn:
            if quota is not None and quota.enabled and adding.memories:
                # Under the store's write lock: no other insert can slip in between check and write.
                quota.check(cube_id, self._usage(conn, cube_id), adding)
            if guarded and self._live_text_keys(conn, cube_id, guarded):
                raise text_added_meanwhile()
            if request_id:
                try:
                    conn.execute(
                        "INSERT INTO requests(cube_id, request_id, memory_ids, created_at, merged_ids)"
                        " VALUES (?,?,?,?,?)",
                        (cube_id, request_id, json.dumps(ids), time.time(), json.dumps([g.target_id for g in merges])),
                    )
                except sqlite3.IntegrityError as exc:
                    raise AlreadyExists("request id already used", reason="DUPLICATE_REQUEST") from exc
            for m in memories:
                if m.cube_id != cube_id:
                    raise ValueError("memory of another cube in insert")
                conn.execute(
                    "INSERT INTO memories(id, cube_id, user_id, session_id, memory, memory_type, status, key, tags,"
                    " background, confidence, info, created_at, updated_at, event_time, version, text_hash)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        m.id,
                        m.cube_id,
                        m.user_id,
                        m.session_id,
                        m.memory,
                        m.memory_type,
                        m.status,
                        m.key,
                        json.dumps(m.tags),
                        m.background,
                        m.confidence,
                        json.dumps(m.info),
                        m.created_at,
                        m.updated_at,
                        m.event_time,
                        m.version,
                        text_hash(m.memory),
                    ),
                )
                conn.executemany(
                    "INSERT INTO sources(memory_id, position, body) VALUES (?,?,?)",
                    [(m.id, i, json.dumps(s.to_dict())) for i, s in enumerate(m.sources)],
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO memory_tags(memory_id, tag) VALUES (?,?)", [(m.id, t) for t in m.tags]
                )
            for g in merges:
                self._apply_merge(conn, cube_id, g)
            for a in archives:
                self._apply_archive(conn, cube_id, a)
            for e in edges:
                conn.execute(
                    "INSERT OR IGNORE INTO edges(cube_id, src_id, dst_id, type)"
                    " SELECT ?,?,?,? WHERE (SELECT COUNT(*) FROM memories WHERE id IN (?,?) AND cube_id = ?) = 2",
                    (cube_id, e.src_id, e.dst_id, e.type, e.src_id, e.dst_id, cube_id),
                )

    @staticmethod
    def _live_text_keys(conn: sqlite3.Connection, cube_id: str, keys: set[TextKey]) -> set[TextKey]:
        """Which of ``keys`` live merge targets of the cube have (the text hash index)."""
        hashes = list({h for h, _, _ in keys})
        found: set[TextKey] = set()
        for chunk in _chunks(hashes, 500):
            for r in conn.execute(
                "SELECT text_hash, memory_type, user_id FROM memories INDEXED BY memories_text_hash"
                f" WHERE cube_id = ? AND text_hash IN ({','.join('?' * len(chunk))})"
                f" AND memory_type != 'WorkingMemory' AND status IN ({','.join('?' * len(SEARCHABLE_STATUSES))})",
                [cube_id, *chunk, *SEARCHABLE_STATUSES],
            ):
                key = (r["text_hash"], r["memory_type"], r["user_id"])
                if key in keys:
                    found.add(key)
        return found

    def _apply_merge(self, conn: sqlite3.Connection, cube_id: str, merge: Merge) -> None:
        row = conn.execute("SELECT * FROM memories WHERE id = ? AND cube_id = ?", (merge.target_id, cube_id)).fetchone()
        target = self._rows_to_memories([row])[0] if row is not None else None
        if target is None or not is_merge_target(target):
            raise NotFound("the memory to merge into is gone", reason="MERGE_TARGET_GONE")
        f = merged_fields(target, merge)
        conn.execute(
            "UPDATE memories SET tags = ?, info = ?, updated_at = ?, event_time = ? WHERE id = ?",
            (json.dumps(f.tags), json.dumps(f.info), f.updated_at, f.event_time, target.id),
        )
        start = conn.execute(
            "SELECT COALESCE(MAX(position), -1) + 1 AS n FROM sources WHERE memory_id = ?", (target.id,)
        ).fetchone()["n"]
        conn.executemany(
            "INSERT INTO sources(memory_id, position, body) VALUES (?,?,?)",
            [(target.id, start + i, json.dumps(s.to_dict())) for i, s in enumerate(f.appended)],
        )
        conn.executemany(
            "INSERT OR IGNORE INTO memory_tags(memory_id, tag) VALUES (?,?)", [(target.id, t) for t in f.tags]
        )

    def _apply_archive(self, conn: sqlite3.Connection, cube_id: str, archive: Archive) -> None:
        row = conn.execute(
            "SELECT * FROM memories WHERE id = ? AND cube_id = ?", (archive.memory_id, cube_id)
        ).fetchone()
        target = self._rows_to_memories([row])[0] if row is not None else None
        if target is None or not is_merge_target(target):
            raise NotFound("the memory to archive is gone or no longer live", reason="ARCHIVE_TARGET_GONE")
        # As an update to status archived would: the live version goes to the history.
        conn.execute(
            "INSERT INTO memory_history(memory_id, cube_id, version, body) VALUES (?,?,?,?)",
            (row["id"], row["cube_id"], row["version"], json.dumps({k: row[k] for k in _HISTORY_FIELDS})),
        )
        info = {**target.info, SUPERSEDED_BY_KEY: archive.superseded_by}
        conn.execute(
            "UPDATE memories SET status = 'archived', info = ?, updated_at = ?, version = version + 1 WHERE id = ?",
            (json.dumps(info), time.time(), target.id),
        )

    def find_by_text_hash(self, cube_id: str, memory_type: str, hashes: Sequence[str]) -> dict[str, str]:
        oldest: dict[str, tuple[int, str]] = {}
        conn = self._conn()
        statuses = list(SEARCHABLE_STATUSES)
        for chunk in _chunks(list(dict.fromkeys(hashes)), 500):
            # INDEXED BY: without statistics the planner prefers the (cube_id, seq) index and
            # would read the whole cube.
            rows = conn.execute(
                "SELECT text_hash, id, seq FROM memories INDEXED BY memories_text_hash"
                f" WHERE cube_id = ? AND text_hash IN ({','.join('?' * len(chunk))})"
                " AND memory_type = ? AND memory_type != 'WorkingMemory'"
                f" AND status IN ({','.join('?' * len(statuses))})",
                [cube_id, *chunk, memory_type, *statuses],
            )
            for r in rows:
                if r["text_hash"] not in oldest or r["seq"] < oldest[r["text_hash"]][0]:
                    oldest[r["text_hash"]] = (r["seq"], r["id"])
        return {h: mid for h, (_, mid) in oldest.items()}

    def merged_ids_for_request(self, cube_id: str, request_id: str) -> list[str]:
        row = (
            self._conn()
            .execute("SELECT merged_ids FROM requests WHERE cube_id = ? AND request_id = ?", (cube_id, request_id))
            .fetchone()
        )
        return [] if row is None else json.loads(row["merged_ids"])

    def forget_request(self, cube_id: str, request_id: str) -> bool:
        with self._tx() as conn:
            cur = conn.execute("DELETE FROM requests WHERE cube_id = ? AND request_id = ?", (cube_id, request_id))
        return cur.rowcount > 0

    def memory_ids_for_request(self, cube_id: str, request_id: str) -> list[str] | None:
        row = (
            self._conn()
            .execute("SELECT memory_ids FROM requests WHERE cube_id = ? AND request_id = ?", (cube_id, request_id))
            .fetchone()
        )
        return None if row is None else json.loads(row["memory_ids"])

    def _rows_to_memories(self, rows: list[sqlite3.Row], with_sources: bool = True) -> list[Memory]:
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        sources: dict[str, list[Source]] = {i: [] for i in ids}
        conn = self._conn()
        for chunk in _chunks(ids, 500) if with_sources else ():
            for s in conn.execute(
                f"SELECT memory_id, body FROM sources WHERE memory_id IN ({','.join('?' * len(chunk))})"
                " ORDER BY memory_id, position",
                chunk,
            ):
                sources[s["memory_id"]].append(Source.from_dict(json.loads(s["body"])))
        return [
            Memory(
                id=r["id"],
                cube_id=r["cube_id"],
                user_id=r["user_id"],
                session_id=r["session_id"],
                memory=r["memory"],
                memory_type=r["memory_type"],
                status=r["status"],
                key=r["key"],
                tags=_json_list(r["tags"]),
                sources=sources[r["id"]],
                background=r["background"],
                confidence=r["confidence"],
                info=_json_dict(r["info"]),
                created_at=r["created_at"],
                updated_at=r["updated_at"],
                event_time=r["event_time"],
                version=r["version"],
            )
            for r in rows
        ]

    def get_memories(
        self, cube_id: str, ids: Sequence[str], with_sources: bool = True, *, shared: bool = False
    ) -> dict[str, Memory]:
        if self._lexicon is not None and not with_sources:
            held = self._lexicon.memories_if_loaded(cube_id, ids)
            if held is not None:
                return held
        if self._lexicon is not None and shared:
            held = self._lexicon.full_memories_if_loaded(cube_id, ids, lambda need: self._read_memories(cube_id, need))
            if held is not None:
                return held
        return self._read_memories(cube_id, ids, with_sources)

    def _read_memories(self, cube_id: str, ids: Sequence[str], with_sources: bool = True) -> dict[str, Memory]:
        rows: list[sqlite3.Row] = []
        conn = self._conn()
        for chunk in _chunks(list(dict.fromkeys(ids)), 500):
            rows.extend(
                conn.execute(
                    # "+cube_id" keeps the planner on the id index: the cube index would scan the whole cube.
                    f"SELECT * FROM memories WHERE +cube_id = ? AND id IN ({','.join('?' * len(chunk))})",
                    [cube_id, *chunk],
                ).fetchall()
            )
        return {m.id: m for m in self._rows_to_memories(rows, with_sources)}

    def list_memories(self, cube_id: str, flt: MemoryFilter, limit: int, after: int = 0) -> tuple[list[Memory], int]:
        where, params = _filter_sql(flt)
        rows = (
            self._conn()
            .execute(
                f"SELECT * FROM memories m WHERE m.cube_id = ? AND m.seq > ? AND {where} ORDER BY m.seq LIMIT ?",
                [cube_id, after, *params, limit + 1],
            )
            .fetchall()
        )
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = rows[-1]["seq"] if more and rows else 0
        return self._rows_to_memories(rows), cursor

    def update_memory(self, memory: Memory, quota: CubeQuota | None = None) -> None:
        with self._tx() as conn:
            old = conn.execute(
                "SELECT * FROM memories WHERE id = ? AND cube_id = ?", (memory.id, memory.cube_id)
            ).fetchone()
            if old is None:
                raise NotFound(f"memory {memory.id} not found in cube", reason="MEMORY_NOT_FOUND")
            if quota is not None and quota.enabled:
                growth = update_growth(old["memory_type"], old["memory"], memory)
                quota.check(memory.cube_id, self._usage(conn, memory.cube_id), growth)
            conn.execute(
                "INSERT INTO memory_history(memory_id, cube_id, version, body) VALUES (?,?,?,?)",
                (old["id"], old["cube_id"], old["version"], json.dumps({k: old[k] for k in _HISTORY_FIELDS})),
            )
            cur = conn.execute(
                "UPDATE memories SET memory=?, memory_type=?, status=?, key=?, tags=?, background=?, confidence=?,"
                " info=?, updated_at=?, version=?, text_hash=? WHERE id = ? AND cube_id = ?",
                (
                    memory.memory,
                    memory.memory_type,
                    memory.status,
                    memory.key,
                    json.dumps(memory.tags),
                    memory.background,
                    memory.confidence,
                    json.dumps(memory.info),
                    memory.updated_at,
                    memory.version,
                    text_hash(memory.memory),
                    memory.id,
                    memory.cube_id,
                ),
            )
            if cur.rowcount == 0:
                raise NotFound(f"memory {memory.id} not found in cube", reason="MEMORY_NOT_FOUND")
            conn.execute("DELETE FROM memory_tags WHERE memory_id = ?", (memory.id,))
            conn.executemany(
                "INSERT OR IGNORE INTO memory_tags(memory_id, tag) VALUES (?,?)", [(memory.id, t) for t in memory.tags]
            )

    def delete_memories(self, cube_id: str, ids: Sequence[str]) -> list[str]:
        deleted: list[str] = []
        with self._tx() as conn:
            for chunk in _chunks(list(dict.fromkeys(ids)), 500):
                marks = ",".join("?" * len(chunk))
                found = [
                    r["id"]
                    for r in conn.execute(
                        f"SELECT id FROM memories WHERE cube_id = ? AND id IN ({marks})", [cube_id, *chunk]
                    )
                ]
                if found:
                    fm = ",".join("?" * len(found))
                    conn.execute(f"DELETE FROM edges WHERE src_id IN ({fm}) OR dst_id IN ({fm})", [*found, *found])
                    conn.execute(f"DELETE FROM memories WHERE id IN ({fm})", found)
                deleted.extend(found)
        return deleted

    def memory_history(self, cube_id: str, memory_id: str) -> list[Memory]:
        rows = (
            self._conn()
            .execute(
                "SELECT body FROM memory_history WHERE memory_id = ? AND cube_id = ? ORDER BY seq DESC",
                (memory_id, cube_id),
            )
            .fetchall()
        )
        out = []
        for r in rows:
            body = json.loads(r["body"])
            body["tags"], body["info"] = json.loads(body["tags"]), json.loads(body["info"])
            out.append(Memory(id=memory_id, cube_id=cube_id, **body))
        return out

    def delete_memories_matching(self, cube_id: str, flt: MemoryFilter, limit: int) -> list[str]:
        where, params = _filter_sql(flt)
        with self._tx() as conn:
            found = [
                r["id"]
                for r in conn.execute(
                    f"SELECT m.id AS id FROM memories m WHERE m.cube_id = ? AND {where} ORDER BY m.seq LIMIT ?",
                    [cube_id, *params, limit],
                )
            ]
            for chunk in _chunks(found, 500):
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM edges WHERE src_id IN ({marks}) OR dst_id IN ({marks})", [*chunk, *chunk])
                conn.execute(f"DELETE FROM memories WHERE id IN ({marks})", chunk)
        return found

    def user_memory_cubes(self, user_id: str) -> list[str]:
        rows = self._conn().execute(
            "SELECT DISTINCT cube_id FROM memories WHERE user_id = ? ORDER BY cube_id", (user_id,)
        )
        return [r["cube_id"] for r in rows]

    def delete_cube_memories(self, cube_id: str) -> list[str]:
        with self._tx() as conn:
            ids = [r["id"] for r in conn.execute("SELECT id FROM memories WHERE cube_id = ?", (cube_id,))]
            conn.execute("DELETE FROM edges WHERE cube_id = ?", (cube_id,))
            conn.execute("DELETE FROM memories WHERE cube_id = ?", (cube_id,))
            conn.execute("DELETE FROM requests WHERE cube_id = ?", (cube_id,))
        return ids

    def search_lexical(self, cube_id: str, query: str, flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        if self._lexicon is not None and not flt.tags:
            return self._lexicon.search(cube_id, query, flt, limit)
        match = fts_query(query)
        if not match:
            return []
        where, params = _filter_sql(flt)
        rows = (
            self._conn()
            .execute(
                "SELECT m.id AS id, bm25(memories_fts) AS rank FROM memories_fts JOIN memories m ON m.seq = memories_fts.rowid"
                f" WHERE memories_fts MATCH ? AND m.cube_id = ? AND {where} ORDER BY rank LIMIT ?",
                [match, cube_id, *params, limit],
            )
            .fetchall()
        )
        # bm25() is lower-is-better and negative; flip it so higher is better.
        return [(r["id"], -float(r["rank"])) for r in rows]

    def count(self, cube_id: str, flt: MemoryFilter | None = None) -> int:
        counted = self._lexicon.count_if_loaded(cube_id, flt) if self._lexicon is not None else None
        if counted is not None:
            return counted
        if flt is None:
            row = self._conn().execute("SELECT COUNT(*) AS n FROM memories WHERE cube_id = ?", (cube_id,)).fetchone()
        else:
            where, params = _filter_sql(flt)
            row = (
                self._conn()
                .execute(f"SELECT COUNT(*) AS n FROM memories m WHERE m.cube_id = ? AND {where}", [cube_id, *params])
                .fetchone()
            )
        return int(row["n"])

    def cube_usage(self, cube_id: str) -> CubeUsage:
        return self._usage(self._conn(), cube_id)

    @staticmethod
    def _usage(conn: sqlite3.Connection, cube_id: str) -> CubeUsage:
        row = conn.execute("SELECT memories, bytes FROM cube_usage WHERE cube_id = ?", (cube_id,)).fetchone()
        return CubeUsage() if row is None else CubeUsage(int(row["memories"]), int(row["bytes"]))

    # write-ahead marks of vector writes ------------------------------------------------
    def mark_vector_writes(self, cube_id: str, ids: Sequence[str]) -> None:
        now = time.time()
        with self._tx() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO pending_vector_writes(cube_id, memory_id, marked_at) VALUES (?,?,?)",
                [(cube_id, i, now) for i in dict.fromkeys(ids)],
            )

    def clear_vector_writes(self, cube_id: str, ids: Sequence[str]) -> None:
        with self._tx() as conn:
            for chunk in _chunks(list(dict.fromkeys(ids)), 500):
                conn.execute(
                    f"DELETE FROM pending_vector_writes WHERE cube_id = ? AND memory_id IN ({','.join('?' * len(chunk))})",
                    [cube_id, *chunk],
                )

    def pending_vector_writes(self, before: float, limit: int) -> list[tuple[str, str]]:
        rows = (
            self._conn()
            .execute(
                "SELECT cube_id, memory_id FROM pending_vector_writes WHERE marked_at < ? ORDER BY marked_at LIMIT ?",
                (before, limit),
            )
            .fetchall()
        )
        return [(r["cube_id"], r["memory_id"]) for r in rows]

    def neighbours(self, cube_id: str, memory_id: str, edge_type: str) -> list[str]:
        rows = (
            self._conn()
            .execute(
                "SELECT dst_id AS id FROM edges WHERE cube_id = ? AND src_id = ? AND type = ?"
                " UNION SELECT src_id AS id FROM edges WHERE cube_id = ? AND dst_id = ? AND type = ?",
                (cube_id, memory_id, edge_type, cube_id, memory_id, edge_type),
            )
            .fetchall()
        )
        return [r["id"] for r in rows]

    def neighbours_many(self, cube_id: str, memory_ids: Sequence[str], edge_type: str) -> dict[str, list[str]]:
        if self._lexicon is not None:
            held = self._lexicon.links_if_loaded(
                cube_id, memory_ids, edge_type, lambda need: self._read_neighbours(cube_id, need, edge_type)
            )
            if held is not None:
                return held
        return self._read_neighbours(cube_id, memory_ids, edge_type)

    def _read_neighbours(self, cube_id: str, memory_ids: Sequence[str], edge_type: str) -> dict[str, list[str]]:
        unique = list(dict.fromkeys(memory_ids))
        out: dict[str, set[str]] = {mid: set() for mid in unique}
        conn = self._conn()
        for chunk in _chunks(unique, 400):
            marks = ",".join("?" * len(chunk))
            for r in conn.execute(
                f"SELECT src_id AS id, dst_id AS other FROM edges WHERE cube_id = ? AND type = ? AND src_id IN ({marks})"
                f" UNION SELECT dst_id AS id, src_id AS other FROM edges WHERE cube_id = ? AND type = ?"
                f" AND dst_id IN ({marks})",
                (cube_id, edge_type, *chunk, cube_id, edge_type, *chunk),
            ):
                out[r["id"]].add(r["other"])
        # Sorted: the same answer whatever order SQLite returns the rows in.
        return {mid: sorted(others) for mid, others in out.items()}

    # cubes ----------------------------------------------------------------
    def _load_cube(self, conn: sqlite3.Connection, cube_id: str) -> Cube | None:
        row = conn.execute("SELECT * FROM cubes WHERE cube_id = ?", (cube_id,)).fetchone()
        if row is None:
            return None
        members = {
            r["user_id"]: r["role"]
            for r in conn.execute("SELECT user_id, role FROM cube_members WHERE cube_id = ?", (cube_id,))
        }
        return Cube(row["cube_id"], row["owner_id"], row["name"], members, row["created_at"])

    def create_cube(self, cube: Cube) -> Cube:
        with self._tx() as conn:
            try:
                conn.execute(
                    "INSERT INTO cubes(cube_id, owner_id, name, created_at) VALUES (?,?,?,?)",
                    (cube.cube_id, cube.owner_id, cube.name, cube.created_at),
                )
            except sqlite3.IntegrityError as exc:
                raise AlreadyExists(f"cube {cube.cube_id!r} already exists", reason="CUBE_EXISTS") from exc
            conn.executemany(
                "INSERT INTO cube_members(cube_id, user_id, role) VALUES (?,?,?)",
                [(cube.cube_id, u, r) for u, r in cube.members.items()],
            )
        return cube

    def get_cube(self, cube_id: str) -> Cube | None:
        return self._load_cube(self._conn(), cube_id)

    def list_cubes(self, user_id: str) -> list[Cube]:
        conn = self._conn()
        ids = [
            r["cube_id"]
            for r in conn.execute(
                "SELECT cube_id FROM cubes WHERE owner_id = ?"
                " UNION SELECT cube_id FROM cube_members WHERE user_id = ? ORDER BY cube_id",
                (user_id, user_id),
            )
        ]
        return [c for c in (self._load_cube(conn, i) for i in ids) if c is not None]

    def set_member(self, cube_id: str, user_id: str, role: str) -> Cube:
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM cubes WHERE cube_id = ?", (cube_id,)).fetchone() is None:
                raise NotFound(f"cube {cube_id!r} not found", reason="CUBE_NOT_FOUND")
            if role:
                conn.execute(
                    "INSERT INTO cube_members(cube_id, user_id, role) VALUES (?,?,?)"
                    " ON CONFLICT(cube_id, user_id) DO UPDATE SET role = excluded.role",
                    (cube_id, user_id, role),
                )
            else:
                conn.execute("DELETE FROM cube_members WHERE cube_id = ? AND user_id = ?", (cube_id, user_id))
            cube = self._load_cube(conn, cube_id)
        assert cube is not None
        return cube

    def delete_cube(self, cube_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM cubes WHERE cube_id = ?", (cube_id,))
            # Its memories went first; the triggers left a row of zeros.
            conn.execute("DELETE FROM cube_usage WHERE cube_id = ? AND memories = 0", (cube_id,))

    # metrics --------------------------------------------------------------
    def memory_stats(self, top_cubes: int) -> MemoryStats:
        conn = self._conn()
        by_type = {
            r["memory_type"]: int(r["n"])
            for r in conn.execute("SELECT memory_type, COUNT(*) AS n FROM memories GROUP BY memory_type")
        }
        cubes = int(conn.execute("SELECT COUNT(*) AS n FROM cubes").fetchone()["n"])
        largest: list[tuple[str, int]] = []
        if top_cubes > 0:
            # Reads the (cube_id, seq) index only, never the rows.
            rows = conn.execute(
                "SELECT cube_id, COUNT(*) AS n FROM memories GROUP BY cube_id ORDER BY n DESC, cube_id LIMIT ?",
                (top_cubes,),
            )
            largest = [(r["cube_id"], int(r["n"])) for r in rows]
        return MemoryStats(by_type=by_type, cubes=cubes, largest=largest)


# The columns of a memory a history entry keeps (everything an update may change, and the rest).
_HISTORY_FIELDS = (
    "memory",
    "user_id",
    "session_id",
    "memory_type",
    "status",
    "key",
    "tags",
    "background",
    "confidence",
    "info",
    "created_at",
    "updated_at",
    "event_time",
    "version",
)


def _migrate(conn: sqlite3.Connection) -> None:
    """Brings a file made by an earlier version up to the schema (idempotent; one transaction)."""

    def columns(table: str) -> set[str]:
        return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}

    if "text_hash" not in columns("memories") or "merged_ids" not in columns("requests"):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if "text_hash" not in columns("memories"):
                conn.execute("ALTER TABLE memories ADD COLUMN text_hash TEXT")
                rows = conn.execute("SELECT seq, memory FROM memories").fetchall()
                conn.executemany(
                    "UPDATE memories SET text_hash = ? WHERE seq = ?", [(text_hash(r[1]), r[0]) for r in rows]
                )
            if "merged_ids" not in columns("requests"):
                conn.execute("ALTER TABLE requests ADD COLUMN merged_ids TEXT NOT NULL DEFAULT '[]'")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    conn.execute("CREATE INDEX IF NOT EXISTS memories_text_hash ON memories(cube_id, text_hash)")
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cube_usage'").fetchone() is None:
        # The table, its fill from the memories there are and its triggers in one transaction:
        # no write can fall between the fill and the triggers.
        try:
            conn.executescript(f"BEGIN IMMEDIATE;{_USAGE_SCHEMA}COMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _json_list(text: str) -> list:
    # Most memories have no tags and no info: skip the decoder for those (a search hydrates ~100).
    return [] if text == "[]" else json.loads(text)


def _json_dict(text: str) -> dict:
    return {} if text == "{}" else json.loads(text)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
