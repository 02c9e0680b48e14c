"""GraphStore on Neo4j 5 (Community or Enterprise) over Bolt.

One database holds every cube. The model::

    (:Memory {id, cube_id, cube_key, seq, memory, search_text, ...})
        -[:HAS_SOURCE {position}]->(:Source {cube_id, memory_id, type, role, ...})
    (:Memory)-[:EDGE {type, cube_id}]->(:Memory)          same cube only
    (:Memory)-[:HAS_VERSION]->(:MemoryVersion {id, cube_id, memory_id, version, memory, ...})
                                                          versions updates replaced
    (:Request {cube_id, request_id, memory_ids, merged_ids, created_at})
    (:MemorySeq {cube_id, value})                          list cursor counter
    (:User {user_id})-[:OWNS]->(:Cube {cube_id, owner_id, name, created_at})
    (:User)-[:MEMBER_OF {role}]->(:Cube)

Every value travels as a Cypher parameter; the query texts are constants
(filters only pick among constant fragments). Every query that reads or
changes memories matches ``cube_id = $cube`` as well as the ids, so an id of
another cube is invisible whatever it looks like.

Lexical search is Neo4j's full-text index (Lucene BM25) over ``search_text``
(the memory text, lowercased and stripped of diacritics like the SQLite
store's unicode61 tokenizer) and ``cube_key`` (hex SHA-256 of the cube id: one
token whatever the id contains), queried as ``+cube_key:<hex>^0 +(search_text:"w1"
search_text:"w2" ...)``. Each word of the user's query is a quoted phrase made
only of word characters, so Lucene syntax in the query is never interpreted;
the cube clause restricts Lucene to the cube before scoring and adds nothing to
the score (boost 0), so the score is the memory text's BM25, higher is better.
IDF statistics are those of the whole index (all cubes), unlike SQLite's.

List cursors come from a counter per cube (``MemorySeq``), bumped inside the
insert transaction: the counter's write lock is held until commit, so inserts
into one cube commit in sequence order and a page never skips a row that
commits later. Inserts into different cubes do not contend (a single counter
for the whole store would serialise every insert of every cube). The counter
outlives ``delete_cube_memories`` (so cursors stay monotonic) and goes with
``delete_cube``.

Driver errors map to the shared error model: a server that cannot be reached
(``ServiceUnavailable``, ``SessionExpired``) or stays busy past the driver's
retries (``TransientError``) raises ``Unavailable`` (retriable); uniqueness
violations raise ``AlreadyExists``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from neo4j import Driver, GraphDatabase, ManagedTransaction
from neo4j.exceptions import (
    ClientError,
    ConfigurationError,
    ConstraintError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)

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
from services.textmem.quota import UNCOUNTED_TYPE, CubeQuota, CubeUsage, text_bytes, update_growth
from services.textmem.stores.graph import MemoryStats
from shared.errors import AlreadyExists, NotFound, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

FULLTEXT_INDEX = "memory_text"
# Analyzer of the full-text index: Lucene's StandardTokenizer + lowercase, no stop words
# (a query of only stop words, "to be", must still match). Diacritics are folded in Python.
FULLTEXT_ANALYZER = "standard-no-stop-words"
TEXT_HASH_INDEX = "memory_text_hash"
# Quotas: each memory's UTF-8 text size (quota.text_bytes), summed per cube. The index's absence
# tells a database from before it, whose memories get the property first.
TEXT_BYTES_INDEX = "memory_text_bytes"

_SCHEMA = [
    "CREATE CONSTRAINT memory_id IF NOT EXISTS FOR (m:Memory) REQUIRE m.id IS UNIQUE",
    "CREATE CONSTRAINT cube_id IF NOT EXISTS FOR (c:Cube) REQUIRE c.cube_id IS UNIQUE",
    "CREATE CONSTRAINT user_id IF NOT EXISTS FOR (u:User) REQUIRE u.user_id IS UNIQUE",
    "CREATE CONSTRAINT memory_seq IF NOT EXISTS FOR (q:MemorySeq) REQUIRE q.cube_id IS UNIQUE",
    # Composite property uniqueness is a Community feature in Neo4j 5 (node keys are not).
    "CREATE CONSTRAINT request_key IF NOT EXISTS FOR (r:Request) REQUIRE (r.cube_id, r.request_id) IS UNIQUE",
    "CREATE INDEX memory_cube_seq IF NOT EXISTS FOR (m:Memory) ON (m.cube_id, m.seq)",
    # Every search counts its cube's searchable memories (type and status lists): with this index
    # the count is answered from index entries instead of reading every node of the cube.
    "CREATE INDEX memory_cube_type_status IF NOT EXISTS FOR (m:Memory) ON (m.cube_id, m.memory_type, m.status)",
    "CREATE INDEX source_cube IF NOT EXISTS FOR (s:Source) ON (s.cube_id)",
    # Exact dedupe on add: memories of a cube by dedupe.text_hash of their text.
    f"CREATE INDEX {TEXT_HASH_INDEX} IF NOT EXISTS FOR (m:Memory) ON (m.cube_id, m.text_hash)",
    f"CREATE INDEX {TEXT_BYTES_INDEX} IF NOT EXISTS FOR (m:Memory) ON (m.cube_id, m.text_bytes)",
    # Finds the cubes holding a user's memories (erasure of a user's data).
    "CREATE INDEX memory_user IF NOT EXISTS FOR (m:Memory) ON (m.user_id)",
    # Write-ahead marks of vector writes (TextMemory.repair_vector_writes).
    "CREATE CONSTRAINT pending_vector_write IF NOT EXISTS FOR (p:PendingVectorWrite) REQUIRE (p.cube_id, p.memory_id) IS UNIQUE",
    "CREATE INDEX pending_vector_write_at IF NOT EXISTS FOR (p:PendingVectorWrite) ON (p.marked_at)",
    f"CREATE FULLTEXT INDEX {FULLTEXT_INDEX} IF NOT EXISTS FOR (m:Memory) ON EACH [m.search_text, m.cube_key]"
    f" OPTIONS {{indexConfig: {{`fulltext.analyzer`: '{FULLTEXT_ANALYZER}', `fulltext.eventually_consistent`: false}}}}",
]

# Names of the indexes above (a constraint's backing index has the constraint's name).
_SCHEMA_NAMES = frozenset(
    {
        "memory_id",
        "cube_id",
        "user_id",
        "memory_seq",
        "request_key",
        "memory_cube_seq",
        "source_cube",
        "memory_user",
        "pending_vector_write",
        "pending_vector_write_at",
        TEXT_HASH_INDEX,
        TEXT_BYTES_INDEX,
        FULLTEXT_INDEX,
    }
)

_WORD = re.compile(r"\w+", re.UNICODE)
# Same list as the SQLite store: words too common to help BM25 are dropped unless nothing else is left.
_STOPWORDS = frozenset(
    "a an and are as at be but by do for from has have he her his i in is it its me my of on or our she so that the "
    "their them they this to was we what when where which who will with you your".split()
)
_MAX_QUERY_WORDS = 64
# Full-text hits asked of the index per search: this many times the limit, at least
# LEXICAL_MIN_FETCH (filters run after the index's limit; see search_lexical).
LEXICAL_OVERFETCH = 2
LEXICAL_MIN_FETCH = 64
# Memories deleted per transaction when a whole cube is cleared (bounds the server's transaction memory).
_DELETE_BATCH = 5000


def fold(text: str) -> str:
    """Lowercased text without diacritics ("Café" -> "cafe"): what the full-text index sees."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def cube_key(cube_id: str) -> str:
    """The cube's token in the full-text index: hex SHA-256, one Lucene term whatever the id holds."""
    return hashlib.sha256(cube_id.encode("utf-8", "surrogatepass")).hexdigest()


def lucene_query(cube_id: str, text: str) -> str:
    """A Lucene query for the text's words within one cube; "" if the text has no words.

    Every word is made only of word characters (``\\w``) and is quoted as a phrase, so no
    Lucene operator, wildcard, field, boost or range syntax in the text takes effect; quotes and
    backslashes are escaped all the same in case the word pattern ever widens.
    """
    words = _WORD.findall(fold(text))
    kept = [w for w in words if w not in _STOPWORDS] or words
    unique = list(dict.fromkeys(kept))[:_MAX_QUERY_WORDS]
    if not unique:
        return ""
    terms = " ".join('search_text:"' + w.replace("\\", "\\\\").replace('"', '\\"') + '"' for w in unique)
    return f"+cube_key:{cube_key(cube_id)}^0 +({terms})"


def _filter_cypher(flt: MemoryFilter, params: dict[str, Any]) -> str:
    """WHERE fragments over ``m`` for the filter; values go into ``params``, never into the text."""
    clauses = ["m.memory_type IN $f_types", "m.status IN $f_statuses"]
    params["f_types"] = list(flt.types())
    params["f_statuses"] = list(flt.statuses())
    if flt.user_id:
        clauses.append("m.user_id = $f_user")
        params["f_user"] = flt.user_id
    if flt.session_id:
        clauses.append("m.session_id = $f_session")
        params["f_session"] = flt.session_id
    if flt.created_after is not None:
        clauses.append("m.created_at >= $f_after")
        params["f_after"] = flt.created_after
    if flt.created_before is not None:
        clauses.append("m.created_at < $f_before")
        params["f_before"] = flt.created_before
    if flt.tags:
        clauses.append("all(t IN $f_tags WHERE t IN m.tags)")
        params["f_tags"] = list(flt.tags)
    return " AND ".join(clauses)


# Returns a memory's properties and its sources ([position, properties] pairs).
_RETURN_MEMORY = "RETURN properties(m) AS m, [(m)-[h:HAS_SOURCE]->(s:Source) | [h.position, properties(s)]] AS sources"


def _memory_props(m: Memory) -> dict[str, Any]:
    return {
        "id": m.id,
        "cube_id": m.cube_id,
        "cube_key": cube_key(m.cube_id),
        "user_id": m.user_id,
        "session_id": m.session_id,
        "memory": m.memory,
        "search_text": fold(m.memory),
        "text_hash": text_hash(m.memory),
        "text_bytes": text_bytes(m.memory),
        "memory_type": m.memory_type,
        "status": m.status,
        "key": m.key,
        "tags": list(m.tags),
        "background": m.background,
        "confidence": m.confidence,
        "info": json.dumps(m.info),
        "created_at": m.created_at,
        "updated_at": m.updated_at,
        "event_time": m.event_time,
        "version": m.version,
    }


def _source_props(m: Memory, s: Source) -> dict[str, Any]:
    """A source's non-empty fields as properties; nested values (``file``) as JSON under ``<name>_json``."""
    props: dict[str, Any] = {"cube_id": m.cube_id, "memory_id": m.id}
    for k, v in s.to_dict().items():
        if isinstance(v, dict | list):
            props[f"{k}_json"] = json.dumps(v)
        else:
            props[k] = v
    return props


def _source_of(props: dict[str, Any]) -> Source:
    d: dict[str, Any] = {}
    for k, v in props.items():
        if k.endswith("_json"):
            d[k[: -len("_json")]] = json.loads(v)
        else:
            d[k] = v
    return Source.from_dict(d)


def _memory_of(props: dict[str, Any], sources: list[list[Any]]) -> Memory:
    return Memory(
        id=props["id"],
        cube_id=props["cube_id"],
        memory=props["memory"],
        user_id=props["user_id"],
        session_id=props["session_id"],
        memory_type=props["memory_type"],
        status=props["status"],
        key=props["key"],
        tags=list(props.get("tags") or []),
        sources=[_source_of(p) for _, p in sorted(sources, key=lambda pair: pair[0])],
        background=props["background"],
        confidence=props["confidence"],
        info=json.loads(props["info"]),
        created_at=props["created_at"],
        updated_at=props["updated_at"],
        event_time=props.get("event_time"),
        version=props["version"],
    )


class Neo4jGraphStore:
    """GraphStore on a Neo4j 5 server (``bolt://`` or ``neo4j://`` URI)."""

    def __init__(
        self,
        uri: str,
        user: str = "",
        password: str = "",
        database: str = "neo4j",
        *,
        connection_timeout_s: float = 5.0,
        retry_time_s: float = 5.0,
        max_pool_size: int = 50,
    ) -> None:
        """Connects and creates the constraints and indexes (idempotent).

        ``user`` empty means no authentication (a server with auth disabled).
        ``retry_time_s`` bounds the driver's retries of a transaction on a
        transient failure or an unreachable server before ``Unavailable``.
        """
        self._database = database or None
        config: dict[str, Any] = {
            "auth": (user, password) if user else None,
            "connection_timeout": connection_timeout_s,
            "connection_acquisition_timeout": connection_timeout_s + retry_time_s,
            "max_transaction_retry_time": retry_time_s,
            "max_connection_pool_size": max_pool_size,
        }
        # Server notifications ("label Source does not exist yet" on an empty database, …) are
        # noise here. Servers before 5.7 cannot filter them and refuse the option: then log them.
        self._driver: Driver = GraphDatabase.driver(uri, notifications_min_severity="OFF", **config)
        try:
            try:
                self._ensure_schema()
            except ConfigurationError:
                self._driver.close()
                self._driver = GraphDatabase.driver(uri, **config)
                self._ensure_schema()
        except BaseException:
            self._driver.close()
            raise

    # plumbing -------------------------------------------------------------
    def _ensure_schema(self) -> None:
        def run() -> None:
            with self._driver.session(database=self._database) as session:
                try:
                    online = {r["name"] for r in session.run("SHOW INDEXES YIELD name, state WHERE state = 'ONLINE'")}
                except ClientError:  # e.g. a role without SHOW INDEX: create (idempotently) instead
                    online = set()
                if _SCHEMA_NAMES <= online:
                    return
                if TEXT_HASH_INDEX not in online:
                    _backfill_text_hash(session)
                if TEXT_BYTES_INDEX not in online:
                    _backfill_text_bytes(session)
                for stmt in _SCHEMA:
                    session.run(stmt).consume()  # type: ignore[arg-type]  # constant text
                # A new index is populated in the background; searches need it online.
                session.run("CALL db.awaitIndexes(300)").consume()

        self._guard(run)

    def _guard(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (ServiceUnavailable, SessionExpired) as exc:
            raise Unavailable(f"graph store unreachable: {exc}", reason="GRAPH_STORE_UNAVAILABLE") from exc
        except TransientError as exc:
            raise Unavailable(f"graph store busy: {exc}", reason="GRAPH_STORE_BUSY") from exc

    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            with self._driver.session(database=self._database) as session:
                return session.execute_write(fn, *args)

        return self._guard(run)

    def _read(self, fn: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            with self._driver.session(database=self._database) as session:
                return session.execute_read(fn, *args)

        return self._guard(run)

    def close(self) -> None:
        self._driver.close()

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
        for m in memories:
            if m.cube_id != cube_id:
                raise ValueError("memory of another cube in insert")
        memories = list(memories)
        ids = [m.id for m in memories] if result_ids is None else list(result_ids)
        adding = CubeUsage.of(memories)
        checked = quota is not None and quota.enabled and adding.memories > 0
        guarded = unique_text_keys(memories) if unique_texts else set()
        edge_rows = [{"src": e.src_id, "dst": e.dst_id, "type": e.type} for e in edges]

        def work(tx: ManagedTransaction) -> None:
            if request_id:
                # First, so that concurrent retries of one request queue on its unique key.
                try:
                    tx.run(
                        "CREATE (:Request {cube_id: $cube, request_id: $rid, memory_ids: $ids, merged_ids: $merged,"
                        " created_at: $now})",
                        cube=cube_id,
                        rid=request_id,
                        ids=ids,
                        merged=[g.target_id for g in merges],
                        now=time.time(),
                    ).consume()
                except ConstraintError as exc:
                    raise AlreadyExists("request id already used", reason="DUPLICATE_REQUEST") from exc
            if checked or guarded:
                # The cube's counter is locked before the count and the text check: a concurrent
                # insert into the cube (which bumps the counter first) has committed, or waits
                # until this one has.
                _lock_cube(tx, cube_id)
            if checked:
                assert quota is not None
                quota.check(cube_id, _usage(tx, cube_id), adding)
            if guarded and _live_text_keys(tx, cube_id, guarded):
                raise text_added_meanwhile()
            for g in merges:
                _apply_merge(tx, cube_id, g)
            for a in archives:
                _apply_archive(tx, cube_id, a)
            if not memories:
                return
            rows = [{"props": _memory_props(m), "sources": [_source_props(m, s) for s in m.sources]} for m in memories]
            try:
                # The cube's counter is bumped and locked first: the lock, held until commit, orders
                # concurrent inserts into the cube so that a list cursor never passes a later commit.
                tx.run(
                    "MERGE (q:MemorySeq {cube_id: $cube}) ON CREATE SET q.value = 0"
                    " SET q.value = q.value + size($rows)"
                    " WITH q.value - size($rows) AS base"
                    " UNWIND range(0, size($rows) - 1) AS i"
                    " WITH base + i + 1 AS seq, $rows[i] AS row"
                    " CREATE (m:Memory) SET m = row.props, m.seq = seq"
                    " WITH m, row UNWIND range(0, size(row.sources) - 1) AS pos"
                    " CREATE (m)-[:HAS_SOURCE {position: pos}]->(s:Source) SET s = row.sources[pos]",
                    cube=cube_id,
                    rows=rows,
                ).consume()
            except ConstraintError as exc:
                raise AlreadyExists("a memory with this id already exists", reason="MEMORY_EXISTS") from exc
            if edge_rows:
                tx.run(
                    "UNWIND $edges AS e"
                    " MATCH (a:Memory {id: e.src}) WHERE a.cube_id = $cube"
                    " MATCH (b:Memory {id: e.dst}) WHERE b.cube_id = $cube"
                    " MERGE (a)-[r:EDGE {type: e.type}]->(b) ON CREATE SET r.cube_id = $cube",
                    edges=edge_rows,
                    cube=cube_id,
                ).consume()

        self._write(work)

    def merged_ids_for_request(self, cube_id: str, request_id: str) -> list[str]:
        def work(tx: ManagedTransaction) -> list[str]:
            record = tx.run(
                "MATCH (r:Request {cube_id: $cube, request_id: $rid}) RETURN r.merged_ids AS ids",
                cube=cube_id,
                rid=request_id,
            ).single()
            return [] if record is None else list(record["ids"] or [])

        return self._read(work)

    def find_by_text_hash(self, cube_id: str, memory_type: str, hashes: Sequence[str]) -> dict[str, str]:
        unique = list(dict.fromkeys(hashes))
        if not unique or memory_type == "WorkingMemory":
            return {}

        def work(tx: ManagedTransaction) -> dict[str, str]:
            result = tx.run(
                "MATCH (m:Memory) WHERE m.cube_id = $cube AND m.text_hash IN $hashes"
                " AND m.memory_type = $type AND m.status IN $statuses"
                " RETURN m.text_hash AS h, m.id AS id ORDER BY m.seq",
                cube=cube_id,
                hashes=unique,
                type=memory_type,
                statuses=list(SEARCHABLE_STATUSES),
            )
            found: dict[str, str] = {}
            for r in result:
                found.setdefault(r["h"], r["id"])
            return found

        return self._read(work)

    def forget_request(self, cube_id: str, request_id: str) -> bool:
        def work(tx: ManagedTransaction) -> int:
            record = tx.run(
                "MATCH (r:Request {cube_id: $cube, request_id: $rid}) DELETE r RETURN count(r) AS n",
                cube=cube_id,
                rid=request_id,
            ).single()
            return int(record["n"]) if record is not None else 0

        return self._write(work) > 0

    def memory_ids_for_request(self, cube_id: str, request_id: str) -> list[str] | None:
        def work(tx: ManagedTransaction) -> list[str] | None:
            record = tx.run(
                "MATCH (r:Request {cube_id: $cube, request_id: $rid}) RETURN r.memory_ids AS ids",
                cube=cube_id,
                rid=request_id,
            ).single()
            return None if record is None else list(record["ids"] or [])

        return self._read(work)

    def get_memories(
        self, cube_id: str, ids: Sequence[str], with_sources: bool = True, *, shared: bool = False
    ) -> dict[str, Memory]:
        unique = list(dict.fromkeys(ids))
        if not unique:
            return {}
        returned = _RETURN_MEMORY if with_sources else "RETURN properties(m) AS m, [] AS sources"

        def work(tx: ManagedTransaction) -> dict[str, Memory]:
            result = tx.run(
                f"MATCH (m:Memory) WHERE m.id IN $ids AND m.cube_id = $cube {returned}",
                ids=unique,
                cube=cube_id,
            )
            return {r["m"]["id"]: _memory_of(r["m"], r["sources"]) for r in result}

        return self._read(work)

    def list_memories(self, cube_id: str, flt: MemoryFilter, limit: int, after: int = 0) -> tuple[list[Memory], int]:
        params: dict[str, Any] = {"cube": cube_id, "after": after, "n": limit + 1}
        where = _filter_cypher(flt, params)

        def work(tx: ManagedTransaction) -> list[tuple[Memory, int]]:
            result = tx.run(
                f"MATCH (m:Memory) WHERE m.cube_id = $cube AND m.seq > $after AND {where}"
                f" WITH m ORDER BY m.seq LIMIT $n {_RETURN_MEMORY}, m.seq AS seq",
                params,
            )
            return [(_memory_of(r["m"], r["sources"]), int(r["seq"])) for r in result]

        rows = self._read(work)
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = rows[-1][1] if more and rows else 0
        return [m for m, _ in rows], cursor

    def update_memory(self, memory: Memory, quota: CubeQuota | None = None) -> None:
        def work(tx: ManagedTransaction) -> int:
            if quota is not None and quota.enabled:
                # Serialised with the cube's inserts (see insert_memories).
                _lock_cube(tx, memory.cube_id)
                old = tx.run(
                    "MATCH (m:Memory {id: $id}) WHERE m.cube_id = $cube RETURN m.memory_type AS t, m.memory AS text",
                    id=memory.id,
                    cube=memory.cube_id,
                ).single()
                if old is not None:
                    growth = update_growth(old["t"], old["text"], memory)
                    quota.check(memory.cube_id, _usage(tx, memory.cube_id), growth)
            record = tx.run(
                "MATCH (m:Memory {id: $id}) WHERE m.cube_id = $cube"
                # The version being replaced, kept as it is (not in the full-text index: another label).
                " CREATE (m)-[:HAS_VERSION]->(v:MemoryVersion) SET v = properties(m), v.memory_id = m.id"
                " REMOVE v.search_text, v.cube_key, v.seq"
                " WITH m"
                " SET m.memory = $memory, m.search_text = $search_text, m.text_hash = $text_hash,"
                " m.text_bytes = $text_bytes, m.memory_type = $memory_type,"
                " m.status = $status, m.key = $key, m.tags = $tags, m.background = $background,"
                " m.confidence = $confidence, m.info = $info, m.updated_at = $updated_at, m.version = $version"
                " RETURN count(m) AS n",
                id=memory.id,
                cube=memory.cube_id,
                memory=memory.memory,
                search_text=fold(memory.memory),
                text_hash=text_hash(memory.memory),
                text_bytes=text_bytes(memory.memory),
                memory_type=memory.memory_type,
                status=memory.status,
                key=memory.key,
                tags=list(memory.tags),
                background=memory.background,
                confidence=memory.confidence,
                info=json.dumps(memory.info),
                updated_at=memory.updated_at,
                version=memory.version,
            ).single(strict=True)
            return int(record["n"])

        if self._write(work) == 0:
            raise NotFound(f"memory {memory.id} not found in cube", reason="MEMORY_NOT_FOUND")

    def delete_memories(self, cube_id: str, ids: Sequence[str]) -> list[str]:
        unique = list(dict.fromkeys(ids))
        if not unique:
            return []

        def work(tx: ManagedTransaction) -> set[str]:
            result = tx.run(
                "MATCH (m:Memory) WHERE m.id IN $ids AND m.cube_id = $cube"
                " OPTIONAL MATCH (m)-[:HAS_SOURCE]->(s:Source)"
                " DETACH DELETE s"
                " WITH DISTINCT m"
                " OPTIONAL MATCH (m)-[:HAS_VERSION]->(v:MemoryVersion)"
                " DETACH DELETE v"
                " WITH DISTINCT m"
                " WITH m, m.id AS id"
                " DETACH DELETE m"
                " RETURN id",
                ids=unique,
                cube=cube_id,
            )
            return {r["id"] for r in result}

        deleted = self._write(work)
        return [i for i in unique if i in deleted]

    def memory_history(self, cube_id: str, memory_id: str) -> list[Memory]:
        def work(tx: ManagedTransaction) -> list[Memory]:
            result = tx.run(
                "MATCH (m:Memory {id: $id})-[:HAS_VERSION]->(v:MemoryVersion) WHERE m.cube_id = $cube"
                " RETURN properties(v) AS v ORDER BY v.version DESC, v.updated_at DESC",
                id=memory_id,
                cube=cube_id,
            )
            return [_memory_of(r["v"], []) for r in result]

        return self._read(work)

    def delete_memories_matching(self, cube_id: str, flt: MemoryFilter, limit: int) -> list[str]:
        params: dict[str, Any] = {"cube": cube_id, "n": limit}
        where = _filter_cypher(flt, params)

        def work(tx: ManagedTransaction) -> list[str]:
            result = tx.run(
                f"MATCH (m:Memory) WHERE m.cube_id = $cube AND {where}"
                " WITH m ORDER BY m.seq LIMIT $n"
                " OPTIONAL MATCH (m)-[:HAS_SOURCE]->(s:Source)"
                " DETACH DELETE s"
                " WITH DISTINCT m"
                " OPTIONAL MATCH (m)-[:HAS_VERSION]->(v:MemoryVersion)"
                " DETACH DELETE v"
                " WITH DISTINCT m"
                " WITH m, m.id AS id, m.seq AS seq"
                " DETACH DELETE m"
                " RETURN id ORDER BY seq",
                params,
            )
            return [r["id"] for r in result]

        return self._write(work)

    def user_memory_cubes(self, user_id: str) -> list[str]:
        def work(tx: ManagedTransaction) -> list[str]:
            result = tx.run(
                "MATCH (m:Memory) WHERE m.user_id = $user RETURN DISTINCT m.cube_id AS cube ORDER BY cube",
                user=user_id,
            )
            return [r["cube"] for r in result]

        return self._read(work)

    def delete_cube_memories(self, cube_id: str) -> list[str]:
        def batch(tx: ManagedTransaction) -> list[str]:
            result = tx.run(
                "MATCH (m:Memory) WHERE m.cube_id = $cube WITH m LIMIT $n"
                " OPTIONAL MATCH (m)-[:HAS_SOURCE]->(s:Source)"
                " DETACH DELETE s"
                " WITH DISTINCT m"
                " OPTIONAL MATCH (m)-[:HAS_VERSION]->(v:MemoryVersion)"
                " DETACH DELETE v"
                " WITH DISTINCT m"
                " WITH m, m.id AS id"
                " DETACH DELETE m"
                " RETURN id",
                cube=cube_id,
                n=_DELETE_BATCH,
            )
            return [r["id"] for r in result]

        def requests(tx: ManagedTransaction) -> int:
            record = tx.run(
                "MATCH (r:Request) WHERE r.cube_id = $cube WITH r LIMIT $n DELETE r RETURN count(r) AS n",
                cube=cube_id,
                n=_DELETE_BATCH,
            ).single(strict=True)
            return int(record["n"])

        # In batches: clearing a large cube in one transaction would hold all of it in server memory.
        ids: list[str] = []
        while True:
            got = self._write(batch)
            ids.extend(got)
            if len(got) < _DELETE_BATCH:
                break
        while self._write(requests) == _DELETE_BATCH:
            pass
        return ids

    def search_lexical(self, cube_id: str, query: str, flt: MemoryFilter, limit: int) -> list[tuple[str, float]]:
        lucene = lucene_query(cube_id, query)
        if not lucene or limit <= 0:
            return []
        params: dict[str, Any] = {"index": FULLTEXT_INDEX, "q": lucene, "cube": cube_id, "n": limit}
        where = _filter_cypher(flt, params)
        # Without a limit queryNodes hands every match of the cube to Cypher, which reads each
        # node's properties to filter and sorts them all: 25 ms at 10,000 memories, 128 ms at
        # 100,000 (the common words of a question match a good share of a large cube). With one,
        # Lucene keeps only its best hits. The filter runs after the limit, so the index is asked
        # for more than ``limit`` and asked again for more while the filter leaves too few of a
        # full batch: the answer is the best ``limit`` passing hits, as filtering everything was.
        fetch = max(LEXICAL_OVERFETCH * limit, LEXICAL_MIN_FETCH)

        def work(tx: ManagedTransaction) -> tuple[int, list[tuple[str, float, int]]]:
            # score > 0: a hit on the (boost 0) cube clause alone is no match.
            record = tx.run(
                "CALL db.index.fulltext.queryNodes($index, $q, {limit: $fetch}) YIELD node AS m, score"
                " WITH count(*) AS fetched,"
                f" collect(CASE WHEN score > 0 AND m.cube_id = $cube AND {where} THEN [m.id, score, m.seq] END)"
                " AS hits"
                " RETURN fetched, hits",
                {**params, "fetch": fetch},
            ).single(strict=True)
            return int(record["fetched"]), [(str(h[0]), float(h[1]), h[2] or 0) for h in record["hits"]]

        while True:
            fetched, hits = self._read(work)
            if len(hits) >= limit or fetched < fetch:
                break
            fetch *= 4
        # Ties go to the older memory, as the SQLite store breaks them.
        hits.sort(key=lambda h: (-h[1], h[2]))
        return [(mid, score) for mid, score, _ in hits[:limit]]

    def count(self, cube_id: str, flt: MemoryFilter | None = None) -> int:
        params: dict[str, Any] = {"cube": cube_id}
        where = "" if flt is None else " AND " + _filter_cypher(flt, params)

        def work(tx: ManagedTransaction) -> int:
            record = tx.run(f"MATCH (m:Memory) WHERE m.cube_id = $cube{where} RETURN count(m) AS n", params).single(
                strict=True
            )
            return int(record["n"])

        return self._read(work)

    def cube_usage(self, cube_id: str) -> CubeUsage:
        return self._read(_usage, cube_id)

    # write-ahead marks of vector writes ------------------------------------------------
    def mark_vector_writes(self, cube_id: str, ids: Sequence[str]) -> None:
        def work(tx: ManagedTransaction) -> None:
            tx.run(
                "UNWIND $ids AS id MERGE (p:PendingVectorWrite {cube_id: $cube, memory_id: id}) SET p.marked_at = $now",
                ids=list(dict.fromkeys(ids)),
                cube=cube_id,
                now=time.time(),
            ).consume()

        self._write(work)

    def clear_vector_writes(self, cube_id: str, ids: Sequence[str]) -> None:
        def work(tx: ManagedTransaction) -> None:
            tx.run(
                "UNWIND $ids AS id MATCH (p:PendingVectorWrite {cube_id: $cube, memory_id: id}) DELETE p",
                ids=list(dict.fromkeys(ids)),
                cube=cube_id,
            ).consume()

        self._write(work)

    def pending_vector_writes(self, before: float, limit: int) -> list[tuple[str, str]]:
        def work(tx: ManagedTransaction) -> list[tuple[str, str]]:
            result = tx.run(
                "MATCH (p:PendingVectorWrite) WHERE p.marked_at < $before"
                " RETURN p.cube_id AS cube, p.memory_id AS id ORDER BY p.marked_at LIMIT $limit",
                before=before,
                limit=limit,
            )
            return [(r["cube"], r["id"]) for r in result]

        return self._read(work)

    def neighbours(self, cube_id: str, memory_id: str, edge_type: str) -> list[str]:
        def work(tx: ManagedTransaction) -> list[str]:
            result = tx.run(
                "MATCH (m:Memory {id: $id})-[r:EDGE]-(n:Memory)"
                " WHERE m.cube_id = $cube AND r.type = $type AND n.cube_id = $cube"
                " RETURN DISTINCT n.id AS id",
                id=memory_id,
                cube=cube_id,
                type=edge_type,
            )
            return [r["id"] for r in result]

        return self._read(work)

    def neighbours_many(self, cube_id: str, memory_ids: Sequence[str], edge_type: str) -> dict[str, list[str]]:
        unique = list(dict.fromkeys(memory_ids))
        out: dict[str, list[str]] = {mid: [] for mid in unique}
        if not unique:
            return out

        def work(tx: ManagedTransaction) -> None:
            result = tx.run(
                "MATCH (m:Memory)-[r:EDGE]-(n:Memory)"
                " WHERE m.id IN $ids AND m.cube_id = $cube AND r.type = $type AND n.cube_id = $cube"
                " RETURN m.id AS id, collect(DISTINCT n.id) AS others",
                ids=unique,
                cube=cube_id,
                type=edge_type,
            )
            for r in result:
                out[r["id"]] = list(r["others"])

        self._read(work)
        return out

    # cubes ----------------------------------------------------------------
    @staticmethod
    def _load_cube(tx: ManagedTransaction, cube_id: str) -> Cube | None:
        record = tx.run(
            "MATCH (c:Cube {cube_id: $cube})"
            " RETURN properties(c) AS c, [(u:User)-[r:MEMBER_OF]->(c) | [u.user_id, r.role]] AS members",
            cube=cube_id,
        ).single()
        return None if record is None else _cube_of(record["c"], record["members"])

    def create_cube(self, cube: Cube) -> Cube:
        def work(tx: ManagedTransaction) -> None:
            try:
                tx.run(
                    "CREATE (c:Cube {cube_id: $cube, owner_id: $owner, name: $name, created_at: $created_at})",
                    cube=cube.cube_id,
                    owner=cube.owner_id,
                    name=cube.name,
                    created_at=cube.created_at,
                ).consume()
            except ConstraintError as exc:
                raise AlreadyExists(f"cube {cube.cube_id!r} already exists", reason="CUBE_EXISTS") from exc
            tx.run(
                "MATCH (c:Cube {cube_id: $cube}) MERGE (o:User {user_id: $owner}) CREATE (o)-[:OWNS]->(c)"
                " WITH c UNWIND $members AS mb"
                " MERGE (u:User {user_id: mb[0]}) CREATE (u)-[:MEMBER_OF {role: mb[1]}]->(c)",
                cube=cube.cube_id,
                owner=cube.owner_id,
                members=[[u, r] for u, r in cube.members.items()],
            ).consume()

        self._write(work)
        return cube

    def get_cube(self, cube_id: str) -> Cube | None:
        return self._read(self._load_cube, cube_id)

    def list_cubes(self, user_id: str) -> list[Cube]:
        def work(tx: ManagedTransaction) -> list[Cube]:
            result = tx.run(
                "MATCH (:User {user_id: $user})-[:OWNS|MEMBER_OF]->(c:Cube) WITH DISTINCT c"
                " RETURN properties(c) AS c, [(u:User)-[r:MEMBER_OF]->(c) | [u.user_id, r.role]] AS members"
                " ORDER BY c.cube_id",
                user=user_id,
            )
            return [_cube_of(r["c"], r["members"]) for r in result]

        return self._read(work)

    def set_member(self, cube_id: str, user_id: str, role: str) -> Cube:
        def work(tx: ManagedTransaction) -> Cube:
            if tx.run("MATCH (c:Cube {cube_id: $cube}) RETURN c.cube_id", cube=cube_id).single() is None:
                raise NotFound(f"cube {cube_id!r} not found", reason="CUBE_NOT_FOUND")
            if role:
                tx.run(
                    "MATCH (c:Cube {cube_id: $cube}) MERGE (u:User {user_id: $user})"
                    " MERGE (u)-[r:MEMBER_OF]->(c) SET r.role = $role",
                    cube=cube_id,
                    user=user_id,
                    role=role,
                ).consume()
            else:
                # A user left without any cube goes too: the node holds nothing but the id.
                tx.run(
                    "MATCH (u:User {user_id: $user})-[r:MEMBER_OF]->(:Cube {cube_id: $cube}) DELETE r"
                    " WITH u WHERE NOT (u)--() DELETE u",
                    cube=cube_id,
                    user=user_id,
                ).consume()
            cube = self._load_cube(tx, cube_id)
            assert cube is not None
            return cube

        return self._write(work)

    def delete_cube(self, cube_id: str) -> None:
        def work(tx: ManagedTransaction) -> None:
            # The list cursor counter goes with the cube once no memory of it is left.
            tx.run(
                "MATCH (q:MemorySeq {cube_id: $cube})"
                " WHERE NOT EXISTS { MATCH (m:Memory) WHERE m.cube_id = $cube }"
                " DELETE q",
                cube=cube_id,
            ).consume()
            # Users left without any cube are removed too: they hold nothing but their id.
            tx.run(
                "MATCH (c:Cube {cube_id: $cube})"
                " OPTIONAL MATCH (u:User)-[:OWNS|MEMBER_OF]->(c)"
                " WITH c, collect(DISTINCT u) AS users"
                " DETACH DELETE c"
                " WITH users UNWIND users AS u"
                " WITH u WHERE NOT (u)--()"
                " DELETE u",
                cube=cube_id,
            ).consume()

        self._write(work)

    # metrics --------------------------------------------------------------
    def memory_stats(self, top_cubes: int) -> MemoryStats:
        def work(tx: ManagedTransaction) -> MemoryStats:
            by_type = {
                r["t"]: int(r["n"])
                for r in tx.run("MATCH (m:Memory) RETURN m.memory_type AS t, count(*) AS n")
                if r["t"] is not None
            }
            cubes = int(tx.run("MATCH (c:Cube) RETURN count(c) AS n").single(strict=True)["n"])
            largest: list[tuple[str, int]] = []
            if top_cubes > 0:
                rows = tx.run(
                    "MATCH (m:Memory) WITH m.cube_id AS cube, count(*) AS n"
                    " RETURN cube, n ORDER BY n DESC, cube LIMIT $k",
                    k=top_cubes,
                )
                largest = [(r["cube"], int(r["n"])) for r in rows]
            return MemoryStats(by_type=by_type, cubes=cubes, largest=largest)

        return self._read(work)


def _apply_merge(tx: ManagedTransaction, cube_id: str, merge: Merge) -> None:
    """Folds a dedupe merge into its target inside the insert's transaction."""
    # The write (a property set and removed) locks the target first: two adds merging into it
    # queue here, so the second reads the first's sources and never appends one twice.
    record = tx.run(
        "MATCH (m:Memory {id: $id}) WHERE m.cube_id = $cube SET m._merging = true REMOVE m._merging"
        f" WITH m {_RETURN_MEMORY}",
        id=merge.target_id,
        cube=cube_id,
    ).single()
    target = None if record is None else _memory_of(record["m"], record["sources"])
    if target is None or not is_merge_target(target):
        raise NotFound("the memory to merge into is gone", reason="MERGE_TARGET_GONE")
    f = merged_fields(target, merge)
    start = len(target.sources)
    tx.run(
        "MATCH (m:Memory {id: $id}) WHERE m.cube_id = $cube"
        " SET m.tags = $tags, m.info = $info, m.updated_at = $updated_at, m.event_time = $event_time"
        " WITH m UNWIND $sources AS row"
        " CREATE (m)-[:HAS_SOURCE {position: row.pos}]->(s:Source) SET s = row.props",
        id=target.id,
        cube=cube_id,
        tags=f.tags,
        info=json.dumps(f.info),
        updated_at=f.updated_at,
        event_time=f.event_time,
        sources=[{"pos": start + i, "props": _source_props(target, s)} for i, s in enumerate(f.appended)],
    ).consume()


def _apply_archive(tx: ManagedTransaction, cube_id: str, archive: Archive) -> None:
    """Archives a memory that a newer one superseded, inside the insert's transaction."""
    # Locks the target first, as _apply_merge does: a concurrent merge into it or archive of it
    # queues here and then finds it archived.
    record = tx.run(
        "MATCH (m:Memory {id: $id}) WHERE m.cube_id = $cube SET m._archiving = true REMOVE m._archiving"
        f" WITH m {_RETURN_MEMORY}",
        id=archive.memory_id,
        cube=cube_id,
    ).single()
    target = None if record is None else _memory_of(record["m"], record["sources"])
    if target is None or not is_merge_target(target):
        raise NotFound("the memory to archive is gone or no longer live", reason="ARCHIVE_TARGET_GONE")
    # As update_memory to status archived would: the live version is kept in the history.
    tx.run(
        "MATCH (m:Memory {id: $id}) WHERE m.cube_id = $cube"
        " CREATE (m)-[:HAS_VERSION]->(v:MemoryVersion) SET v = properties(m), v.memory_id = m.id"
        " REMOVE v.search_text, v.cube_key, v.seq"
        " WITH m SET m.status = 'archived', m.info = $info, m.updated_at = $now, m.version = m.version + 1",
        id=target.id,
        cube=cube_id,
        info=json.dumps({**target.info, SUPERSEDED_BY_KEY: archive.superseded_by}),
        now=time.time(),
    ).consume()


def _lock_cube(tx: ManagedTransaction, cube_id: str) -> None:
    """Takes the write lock of the cube's list counter (held until commit), which every insert
    into the cube takes too: what the transaction counts next cannot change under it."""
    tx.run(
        "MERGE (q:MemorySeq {cube_id: $cube}) ON CREATE SET q.value = 0 SET q._locking = true REMOVE q._locking",
        cube=cube_id,
    ).consume()


def _live_text_keys(tx: ManagedTransaction, cube_id: str, keys: set[TextKey]) -> set[TextKey]:
    """Which of ``keys`` live merge targets of the cube have."""
    result = tx.run(
        "MATCH (m:Memory) WHERE m.cube_id = $cube AND m.text_hash IN $hashes"
        " AND m.memory_type <> 'WorkingMemory' AND m.status IN $statuses"
        " RETURN m.text_hash AS h, m.memory_type AS t, m.user_id AS u",
        cube=cube_id,
        hashes=list({h for h, _, _ in keys}),
        statuses=list(SEARCHABLE_STATUSES),
    )
    return {(r["h"], r["t"], r["u"]) for r in result} & keys


def _usage(tx: ManagedTransaction, cube_id: str) -> CubeUsage:
    """The cube's usage as quota.py counts it."""
    record = tx.run(
        "MATCH (m:Memory) WHERE m.cube_id = $cube AND m.memory_type <> $uncounted"
        " RETURN count(m) AS n, sum(coalesce(m.text_bytes, 0)) AS b",
        cube=cube_id,
        uncounted=UNCOUNTED_TYPE,
    ).single(strict=True)
    return CubeUsage(int(record["n"]), int(record["b"]))


def _backfill_text_bytes(session: Any, batch: int = 2000) -> None:
    """Memories stored before quotas existed get their text size (once, before its index)."""
    while True:
        rows = session.run(
            "MATCH (m:Memory) WHERE m.text_bytes IS NULL RETURN m.id AS id, m.memory AS memory LIMIT $n", n=batch
        ).data()
        if not rows:
            return
        session.run(
            "UNWIND $rows AS row MATCH (m:Memory {id: row.id}) SET m.text_bytes = row.b",
            rows=[{"id": r["id"], "b": text_bytes(r["memory"] or "")} for r in rows],
        ).consume()


def _backfill_text_hash(session: Any, batch: int = 2000) -> None:
    """Memories stored before exact dedupe existed get their text hash (once, before its index)."""
    while True:
        rows = session.run(
            "MATCH (m:Memory) WHERE m.text_hash IS NULL RETURN m.id AS id, m.memory AS memory LIMIT $n", n=batch
        ).data()
        if not rows:
            return
        session.run(
            "UNWIND $rows AS row MATCH (m:Memory {id: row.id}) SET m.text_hash = row.h",
            rows=[{"id": r["id"], "h": text_hash(r["memory"] or "")} for r in rows],
        ).consume()


def _cube_of(props: dict[str, Any], members: list[list[Any]]) -> Cube:
    return Cube(
        cube_id=props["cube_id"],
        owner_id=props["owner_id"],
        name=props.get("name", ""),
        members={u: r for u, r in members},
        created_at=props["created_at"],
    )
