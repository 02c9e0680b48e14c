"""Chaos: every service killed with SIGKILL and restarted, in turn, under a mixed load of adds and searches.

textmem, ingest, the scheduler and the gateway run as processes (``python -m services.<name>``,
addresses and environment from the launcher's :func:`memos.cli.serve.suite_specs`) on loopback
ports, on the embedded stores in a temporary data directory; a second variant puts the
scheduler's queue on Redis and textmem's graph on Neo4j, and kills those servers, then textmem.

Eight asyncio clients add unique marker texts (one request id per add, reused on every retry, so
a retry is idempotent) and search two or three cubes, while a chaos driver kills one process at a
time, holds it down a moment, restarts it on the same port and data, and times its recovery: from
the kill to the restarted process's first SERVING health check (or ready server), and to the first
successful call through it. The scheduler, which sync adds do not use, gets its own probe tasks.

Afterwards, with nothing restarted by hand:

* every acknowledged add's marker is listed in its cube exactly once (lost and duplicated: 0);
* graph and vector stores agree on every memory id of every cube (half-written: 0), once the
  write repair (MEMOS_REPAIR_INTERVAL_S / MEMOS_REPAIR_GRACE_S, small here) has no marks left;
* every acknowledged scheduler task is there and finished;
* a search that failed while a store was down failed with UNAVAILABLE / DEADLINE_EXCEEDED, as a
  whole or as a cube's status; nothing else (INTERNAL, UNKNOWN, ...) reached a client.

One cube's store down while the others answer cannot happen with one textmem process (every cube
of it shares its stores), so :func:`test_one_cube_down_gives_that_cube_an_error_not_the_search`
covers it in-process, with the suite's fault-injecting textmem (``down-`` cubes), under load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from memos.cli.serve import ServeError, suite_specs, wait_serving
from memos.client import AsyncMemosClient, MemosError
from memos.client.scheduler import ScheduledMessage, SchedulerClient
from services.textmem.models import MEMORY_TYPES, MemoryFilter
from shared.errors import Code
from tests.conftest import REPO_ROOT, free_port
from tests.figures import report_figure

pytestmark = pytest.mark.e2e

USER = "chaos-user"
CUBES = ("chaos-a", "chaos-b", "chaos-c")
PROBE_USER, PROBE_CUBE = "chaos-probe", "chaos-probe-cube"  # the scheduler's probe tasks
CLIENTS = 8
SEARCHERS = 3  # of the clients, those that only search (an adder waits for its add's ack, outages included)
ADD_SHARE = 0.8  # of the other clients' operations; the rest are searches
ADD_TIMEOUT_S = 10.0
SEARCH_TIMEOUT_S = 5.0
RETRY_PAUSE_S = 0.2  # a client's pause between retries of a failed add
OUTAGE_S = 1.0  # how long a killed process stays down before it is restarted (at most)
ACKS_BETWEEN_KILLS = 3  # acknowledged adds the load must make between one recovery and the next kill
RECOVERY_TIMEOUT_S = 120.0
SETTLE_TIMEOUT_S = 90.0  # for the adds still retrying once the chaos is over
REPAIR_GRACE_S = 20.0  # longer than any write takes here, even one retrying its graph store
# Marker texts say different things, so that a search for one finds it: texts that differ only in
# their token (measured: one template, 150 adds in 3 cubes) rank it outside the top 5 one time in 6.
NAMES = "Ada Bruno Chen Dara Elif Femi Goran Hana Ivo Jun Kofi Lena Mateo Nia Omar Priya".split()
THINGS = "bicycle violin teapot kayak telescope lantern chessboard typewriter camera umbrella".split()
PLACES = "the attic|the garage|Lisbon|a locker at work|the cellar|Kyoto|the car boot|the studio|a storage unit".split(
    "|"
)
COLOURS = "red blue green yellow black white orange purple".split()
# What a client may see while a process or a store is down; anything else is a bug.
OUTAGE_CODES = {Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED}
OUTAGE_STATUS_CODES = {int(c) for c in OUTAGE_CODES}


# processes --------------------------------------------------------------------------------------
class Service:
    """One ``python -m services.<name>`` process that can be killed and started again on its port."""

    def __init__(self, name: str, address: str, env: dict[str, str], log: Path) -> None:
        self.name, self.address, self.env, self.log = name, address, env, log
        self.proc: subprocess.Popen | None = None

    def spawn(self) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()

    def wait_serving(self) -> None:
        assert self.proc is not None
        try:
            wait_serving(self.address, self.proc, timeout_s=RECOVERY_TIMEOUT_S)
        except ServeError as exc:
            raise AssertionError(f"{self.name}: {exc}\n{self.tail()}") from None

    def start(self) -> None:
        self.spawn()
        self.wait_serving()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM (the service drains and closes its stores), SIGKILL if that takes too long."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.name} log ---\n{self.log.read_text(errors='replace')[-chars:]}" if self.log.exists() else ""


class Neo4jProcess:
    """A Neo4j server of this test's own (tools/neo4j/start.sh) that it may kill and restart on the
    same port and data directory; not the session's shared one (tests/neo4j_server.py), which
    other tests use."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.pid: int | None = None

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    def start(self) -> None:
        from tests.neo4j_server import START_SCRIPT, START_TIMEOUT_S

        env = {
            **os.environ,
            "MEMOS_NEO4J_WATCH_PID": str(os.getpid()),
            "NEO4J_START_TIMEOUT_S": str(int(START_TIMEOUT_S)),
        }
        proc = subprocess.run(
            [str(START_SCRIPT), str(self.port), str(self.directory)],
            capture_output=True,
            text=True,
            env=env,
            timeout=START_TIMEOUT_S + 30,
        )
        if proc.returncode != 0:
            raise AssertionError(
                f"tools/neo4j/start.sh failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-3000:]}"
            )
        self.pid = int((self.directory / "neo4j.pid").read_text().strip())

    def kill9(self) -> None:
        from tests.neo4j_server import _alive

        assert self.pid is not None
        os.kill(self.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)  # its data is thrown away
            except ProcessLookupError:
                pass


def require_neo4j_tooling() -> None:
    """Java and the built launcher, as tests/neo4j_server.py wants them: skip without (fail under CI)."""
    import tests.neo4j_server as nj

    if os.environ.get("MEMOS_TEST_NEO4J_URI"):
        pytest.skip("MEMOS_TEST_NEO4J_URI names a server of your own: this test must kill and restart its own")
    nj.ensure_built()
    if nj._failure is not None:
        nj._unavailable(nj._failure)


# the load ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Add:
    token: str
    cube: str
    text: str
    request_id: str
    attempts: int = 0
    acked: bool = False


@dataclasses.dataclass
class Recovery:
    name: str
    serving_s: float  # kill -> restarted process serving (health check / server ready)
    recovered_s: float  # kill -> first successful call through it


@dataclasses.dataclass
class Load:
    gateway: str
    scheduler: str
    adds: list[Add] = dataclasses.field(default_factory=list)
    acks: int = 0
    failures: int = 0  # failed attempts of any kind, for the chaos driver to see an outage
    unexpected: list[str] = dataclasses.field(default_factory=list)
    # searches: (process down at the time or "", outcome) -> count
    searches: Counter = dataclasses.field(default_factory=Counter)
    down: str = ""  # what is killed and not yet recovered
    kills: int = 0
    last_killed: str = ""
    stop_new: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    give_up_at: float = float("inf")
    probe_tasks: list[str] = dataclasses.field(default_factory=list)
    recoveries: list[Recovery] = dataclasses.field(default_factory=list)

    def new_add(self, cube: str, who: str) -> Add:
        token = uuid.uuid4().hex
        rng = random.Random(token)
        text = (
            f"{rng.choice(NAMES)} keeps a {rng.choice(COLOURS)} {rng.choice(THINGS)} in {rng.choice(PLACES)}"
            f" (note {token}, from {who})."
        )
        add = Add(token, cube, text, uuid.uuid4().hex)
        self.adds.append(add)
        return add

    async def try_add(self, client: AsyncMemosClient, add: Add) -> bool:
        """One attempt; True once acknowledged."""
        add.attempts += 1
        try:
            await client.add_memories(
                USER,
                [add.cube],
                [{"role": "user", "content": add.text}],
                request_id=add.request_id,
                timeout=ADD_TIMEOUT_S,
            )
        except MemosError as exc:
            self.failures += 1
            if exc.code not in OUTAGE_CODES:
                self.unexpected.append(f"add ({self.down or 'nothing'} down): {exc}")
            return False
        add.acked = True
        self.acks += 1
        return True

    async def add_until_acked(self, client: AsyncMemosClient, add: Add) -> None:
        while not await self.try_add(client, add) and time.monotonic() < self.give_up_at:
            await asyncio.sleep(RETRY_PAUSE_S)

    def outage(self, kills_before: int, down_before: str) -> str:
        """What was down during a call: down when it began or ended, or killed meanwhile."""
        return self.down or down_before or (self.last_killed if self.kills != kills_before else "")

    async def search(self, client: AsyncMemosClient, cubes: list[str], query: str) -> bool:
        """One search, its outcome counted under what was down; True when every cube answered."""
        kills, down = self.kills, self.down
        try:
            resp = await client.search_memories(USER, cubes, query, top_k=5, timeout=SEARCH_TIMEOUT_S)
        except MemosError as exc:
            down = self.outage(kills, down)
            self.failures += 1
            self.searches[(down, f"failed whole: {exc.code.name}")] += 1
            if exc.code not in OUTAGE_CODES:
                self.unexpected.append(f"search ({down or 'nothing'} down): {exc}")
            return False
        down = self.outage(kills, down)
        codes = sorted({b.status.code for b in resp.text_mem})
        if codes == [0]:
            self.searches[(down, "ok")] += 1
            return True
        self.searches[(down, "per-cube errors: " + ",".join(Code(c).name for c in codes if c))] += 1
        if not set(codes) <= OUTAGE_STATUS_CODES | {0}:
            self.unexpected.append(f"search ({down or 'nothing'} down): cube statuses {codes}")
        return False

    def probe_task(self) -> bool:
        """Submits a scheduler task (a mem_read with nothing to read: the built-in handler finishes
        it at once) and reads it back; True when both worked."""
        item_id = f"chaos-probe-{uuid.uuid4().hex}"
        message = ScheduledMessage(PROBE_USER, PROBE_CUBE, "mem_read", content="[]", item_id=item_id)
        with SchedulerClient(self.scheduler, timeout_s=5.0) as sched:
            try:
                sched.submit_messages([message])
            except MemosError as exc:
                if exc.code not in OUTAGE_CODES:
                    self.unexpected.append(f"scheduler submit ({self.down or 'nothing'} down): {exc}")
                return False
            # Submitted: it must never be lost, whether or not it can be read back right now.
            self.probe_tasks.append(item_id)
            try:
                return sched.get_task(item_id).item_id == item_id
            except MemosError as exc:
                if exc.code not in OUTAGE_CODES:
                    self.unexpected.append(f"scheduler get_task ({self.down or 'nothing'} down): {exc}")
                return False


async def client_loop(load: Load, n: int) -> None:
    rng = random.Random(n)
    add_share = 0.0 if n < SEARCHERS else ADD_SHARE
    client = AsyncMemosClient(load.gateway)
    try:
        while not load.stop_new.is_set():
            if rng.random() < add_share:
                await load.add_until_acked(client, load.new_add(rng.choice(CUBES), f"client {n}"))
                continue
            acked = [a for a in load.adds[-50:] if a.acked]
            query = rng.choice(acked).text if acked and rng.random() < 0.7 else "which notes did I ask to remember?"
            if not await load.search(client, rng.sample(CUBES, rng.choice((2, 3))), query):
                await asyncio.sleep(RETRY_PAUSE_S)
    finally:
        await client.close()


async def wait_for(what: str, check: Callable[[], bool], timeout_s: float, pause_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        await asyncio.sleep(pause_s)


@dataclasses.dataclass
class Target:
    name: str
    kill: Callable[[], None]
    restart: Callable[[], None]  # blocking; returns once the process serves
    probe: Callable[[], Awaitable[bool]]


async def chaos(load: Load, targets: list[Target], logs: Callable[[], str]) -> None:
    for target in targets:
        acks = load.acks
        await wait_for(
            f"adds acknowledged before killing {target.name}",
            lambda acks=acks: load.acks >= acks + ACKS_BETWEEN_KILLS,
            120,
        )
        load.down = load.last_killed = target.name
        load.kills += 1
        failures = load.failures
        killed = time.monotonic()
        await asyncio.to_thread(target.kill)
        # Down until a client has felt it, or OUTAGE_S at most (the scheduler is no client's path).
        deadline = killed + OUTAGE_S
        while load.failures == failures and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(target.restart)
        serving = time.monotonic()
        while not await target.probe():
            if time.monotonic() - serving > RECOVERY_TIMEOUT_S:
                raise AssertionError(f"{target.name} restarted but calls through it still fail\n{logs()}")
            await asyncio.sleep(0.1)
        recovered = time.monotonic()
        load.down = ""
        load.recoveries.append(Recovery(target.name, serving - killed, recovered - killed))


# consistency --------------------------------------------------------------------------------------
ALL = MemoryFilter(memory_types=MEMORY_TYPES, include_archived=True)


def graph_ids(graph, cube: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """(id, text) of every memory of the cube, archived and working copies included."""
    out, after = [], 0
    while True:
        page, after = graph.list_memories(cube, ALL, 500, after)
        out += [(m.id, m.memory) for m in page]
        if not after:
            return out


class pending_marks_check:  # noqa: N801 - used as a predicate
    """True once textmem's graph store holds no write-ahead mark (read beside the running textmem)."""

    def __init__(self, data: Path, neo4j: Neo4jProcess | None) -> None:
        self._sqlite = self._neo4j = None
        if neo4j is None:
            self._sqlite = sqlite3.connect(
                f"file:{data / 'graph.sqlite3'}?mode=ro", uri=True, timeout=30, check_same_thread=False
            )
        else:
            from services.textmem.stores.neo4j_graph import Neo4jGraphStore

            self._neo4j = Neo4jGraphStore(neo4j.uri, "", "", "neo4j")

    def __call__(self) -> bool:
        if self._sqlite is not None:
            return self._sqlite.execute("SELECT count(*) FROM pending_vector_writes").fetchone()[0] == 0
        return self._neo4j.pending_vector_writes(float("inf"), 1) == []  # type: ignore[union-attr]

    def close(self) -> None:
        for store in (self._sqlite, self._neo4j):
            if store is not None:
                store.close()


# the test ----------------------------------------------------------------------------------------
@pytest.mark.timeout(600)
@pytest.mark.parametrize("backends", ["embedded", "redis+neo4j"])
async def test_no_acknowledged_add_is_lost_when_every_process_is_killed_in_turn(backends: str, tmp_path: Path) -> None:
    redis = neo4j = None
    if backends == "redis+neo4j":
        from tests.redis_server import require_redis, start_redis, stop_redis

        require_redis()
        require_neo4j_tooling()
        neo4j = Neo4jProcess(tmp_path / "neo4j")
    data = tmp_path / "data"
    logs = tmp_path / "logs"
    logs.mkdir()
    listen = {
        f"MEMOS_{n.upper()}_LISTEN": f"127.0.0.1:{free_port()}" for n in ("textmem", "ingest", "scheduler", "gateway")
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith("MEMOS_") or k.startswith("MEMOS_EMBEDDING_")}
    common = {
        "PYTHONUNBUFFERED": "1",
        "MEMOS_DATA_DIR": str(data),
        "MEMOS_LOG_LEVEL": "WARNING",
        "MEMOS_GRACE_PERIOD_S": "2",
        "MEMOS_REPAIR_INTERVAL_S": "1",
        "MEMOS_REPAIR_GRACE_S": str(REPAIR_GRACE_S),
    }
    services: dict[str, Service] = {}
    try:
        started = time.monotonic()
        if neo4j is not None:
            redis = await asyncio.to_thread(start_redis, True)  # AOF, fsync always: a kill loses nothing
            common |= {"MEMOS_REDIS_URL": redis.url, "MEMOS_GRAPH_STORE": "neo4j", "MEMOS_NEO4J_URI": neo4j.uri}
        for name, address, extra in suite_specs(listen):
            services[name] = Service(name, address, {**base, **common, **extra}, logs / f"{name}.log")

        def all_logs() -> str:
            return "\n".join(s.tail() for s in services.values())

        # All at once: each process waits for nothing but its own port, textmem for its graph store.
        for s in services.values():
            if s.name != "textmem":
                s.spawn()
        if neo4j is not None:
            await asyncio.to_thread(neo4j.start)
        services["textmem"].spawn()
        await asyncio.gather(*(asyncio.to_thread(s.wait_serving) for s in services.values()))
        startup_s = time.monotonic() - started

        load = Load(services["gateway"].address, services["scheduler"].address)
        probe_client = AsyncMemosClient(load.gateway)
        probe_add: list[Add] = []

        async def through_gateway() -> bool:
            """An add (one attempt; the same request id until it is acknowledged) and a search of
            every cube, both answered in full."""
            if not probe_add or probe_add[-1].acked:
                probe_add.append(load.new_add(CUBES[len(probe_add) % len(CUBES)], "the chaos probe"))
            return await load.try_add(probe_client, probe_add[-1]) and await load.search(
                probe_client, list(CUBES), probe_add[-1].text
            )

        async def through_scheduler() -> bool:
            return await asyncio.to_thread(load.probe_task)

        def process_target(name: str, probe: Callable[[], Awaitable[bool]]) -> Target:
            s = services[name]
            return Target(name, s.kill9, s.start, probe)

        if redis is None or neo4j is None:
            targets = [process_target(n, p) for n, p in [
                ("textmem", through_gateway),
                ("ingest", through_gateway),
                ("scheduler", through_scheduler),
                ("gateway", through_gateway),
            ]]  # fmt: skip
        else:
            # The servers, then textmem, which restarts on Neo4j and repairs the write marks the
            # graph store holds (the other processes restart alike on either backend: the embedded
            # variant kills them; each Neo4j restart costs a JVM start, so this one stays short).
            # Neo4j first: the marks its outage leaves are then repaired at textmem's restart
            # rather than after the grace.
            targets = [
                Target("neo4j", neo4j.kill9, neo4j.start, through_gateway),
                Target("redis", lambda: redis.stop(kill=True), redis.restart, through_scheduler),
                process_target("textmem", through_gateway),
            ]

        # Cubes first (an add creates its cube; the searches need all three to exist).
        for cube in CUBES:
            await load.add_until_acked(probe_client, load.new_add(cube, "the set-up"))
        assert await through_scheduler(), all_logs()
        load_started = time.monotonic()
        clients = [asyncio.create_task(client_loop(load, n)) for n in range(CLIENTS)]
        try:
            await chaos(load, targets, all_logs)
            # The load goes on a little after the last recovery, then the adds still retrying settle.
            acks = load.acks
            await wait_for("adds acknowledged after the chaos", lambda: load.acks >= acks + ACKS_BETWEEN_KILLS, 120)
        finally:
            load.give_up_at = time.monotonic() + SETTLE_TIMEOUT_S
            load.stop_new.set()
            await asyncio.gather(*clients, return_exceptions=True)
        load_s = time.monotonic() - load_started
        assert await through_gateway(), f"the suite did not recover by itself\n{all_logs()}"
        assert await through_scheduler(), f"the scheduler did not recover by itself\n{all_logs()}"

        # Every acknowledged add listed exactly once; no add listed twice.
        texts: dict[str, list[str]] = {}
        search_misses: list[str] = []
        async with AsyncMemosClient(load.gateway) as client:
            for cube in CUBES:
                token = ""
                while True:
                    page = await client.list_memories(USER, cube, page_size=500, page_token=token, timeout=30)
                    texts.setdefault(cube, []).extend(m.memory for m in page.memories)
                    token = page.next_page_token
                    if not token:
                        break
            # A few markers by search too, as a user would look for them.
            acked = [a for a in load.adds if a.acked]
            for add in random.Random(0).sample(acked, min(5, len(acked))):
                resp = await client.search_memories(USER, [add.cube], add.text, top_k=5, timeout=30)
                if not any(add.token in m.item.memory for m in resp.ranked):
                    search_misses.append(
                        f"{add.token}: got {[(m.item.memory, round(m.score, 4)) for m in resp.ranked]}"
                    )
        found = {a.token: sum(a.token in t for c in CUBES for t in texts.get(c, [])) for a in load.adds}
        in_cube = {a.token: sum(a.token in t for t in texts.get(a.cube, [])) for a in load.adds}
        lost = [a for a in load.adds if a.acked and in_cube[a.token] == 0]
        duplicated = [a for a in load.adds if found[a.token] > 1 or found[a.token] != in_cube[a.token]]
        unacked = [a for a in load.adds if not a.acked]

        # Every acknowledged scheduler task still there, and finished.
        def tasks_done() -> list[str]:
            with SchedulerClient(load.scheduler, timeout_s=30.0) as sched:
                assert sched.wait_for_tasks(PROBE_USER, timeout_s=60.0), "probe tasks not finished"
                return [i for i in load.probe_tasks if sched.get_task(i).state != "done"]

        tasks_unfinished = await asyncio.to_thread(tasks_done)
        await probe_client.close()

        # The repair leaves no write mark behind, then both stores are read with textmem stopped.
        textmem = services["textmem"]
        no_marks = await asyncio.to_thread(pending_marks_check, data, neo4j)
        try:
            await wait_for("the write repair", no_marks, REPAIR_GRACE_S + 60, 0.5)
        finally:
            no_marks.close()  # type: ignore[attr-defined]
        for s in reversed(services.values()):
            await asyncio.to_thread(s.stop)
        half_written: list[str] = []
        memories_checked = 0
        graph, vectors = await asyncio.to_thread(open_stores, data, neo4j)
        try:
            pending = graph.pending_vector_writes(float("inf"), 100)
            assert pending == [], f"write marks left: {pending[:10]}\n{textmem.tail()}"
            for cube in (*CUBES, PROBE_CUBE):
                in_graph = {i for i, _ in graph_ids(graph, cube)}
                in_vectors = {row.id for row in vectors.scan(cube)}
                memories_checked += len(in_graph)
                half_written += [f"{cube}/{i}: graph only" for i in sorted(in_graph - in_vectors)]
                half_written += [f"{cube}/{i}: vector only" for i in sorted(in_vectors - in_graph)]
        finally:
            graph.close()
            vectors.close()

        # Figures, then the verdict.
        sent = len(load.adds)
        attempts = sum(a.attempts for a in load.adds)
        searches = sum(load.searches.values())
        recovery = ", ".join(
            f"{r.name} {r.recovered_s:.1f}s (serving after {r.serving_s:.1f}s)" for r in load.recoveries
        )
        outcomes = "; ".join(
            f"{down or 'all up'}: {', '.join(f'{n} {o}' for (d, o), n in sorted(load.searches.items()) if d == down)}"
            for down in dict.fromkeys(d for d, _ in sorted(load.searches))
        )
        topic = f"chaos ({backends})"
        report_figure(
            topic,
            f"{CLIENTS} clients for {load_s:.0f}s (suite started in {startup_s:.0f}s): adds sent {sent}"
            f" ({attempts} attempts), acknowledged {sent - len(unacked)}, lost {len(lost)},"
            f" duplicates {len(duplicated)}, unacknowledged {len(unacked)}; half-written {len(half_written)}"
            f" of {memories_checked} memories; scheduler tasks acknowledged {len(load.probe_tasks)},"
            f" lost or unfinished {len(tasks_unfinished)}",
        )
        report_figure(topic, f"recovery after kill -9 (to the first successful call): {recovery}")
        report_figure(topic, f"searches {searches}: {outcomes}")

        assert not lost, f"acknowledged adds lost: {[a.token for a in lost][:10]}\n{all_logs()}"
        assert not duplicated, f"adds stored more than once: {[(a.token, found[a.token]) for a in duplicated][:10]}"
        assert not half_written, f"half-written memories: {half_written[:10]}\n{all_logs()}"
        assert not search_misses, f"searches for a marker's text miss it: {search_misses}"
        assert not tasks_unfinished, f"scheduler tasks lost or unfinished: {tasks_unfinished[:10]}"
        assert not load.unexpected, f"errors other than an outage's: {load.unexpected[:10]}\n{all_logs()}"
        assert not unacked, f"adds never acknowledged by the end: {len(unacked)}\n{all_logs()}"
        assert [r.name for r in load.recoveries] == [t.name for t in targets]
    finally:
        for s in reversed(services.values()):
            await asyncio.to_thread(s.stop)
        if redis is not None:
            stop_redis(redis)
        if neo4j is not None:
            neo4j.stop()


def open_stores(data: Path, neo4j: Neo4jProcess | None):  # type: ignore[no-untyped-def]
    """textmem's graph and vector stores, opened as they are (no repair runs, unlike build_memory)."""
    from services.textmem.settings import TextMemSettings
    from services.textmem.stores.milvus_vector import MilvusVectorStore
    from services.textmem.stores.routed_vector import RoutedVectorStore

    settings = TextMemSettings()
    if neo4j is None:
        from services.textmem.stores.sqlite_graph import SqliteGraphStore

        graph = SqliteGraphStore(data / "graph.sqlite3")
    else:
        from services.textmem.stores.neo4j_graph import Neo4jGraphStore

        graph = Neo4jGraphStore(neo4j.uri, "", "", "neo4j")

    def collection(name: str) -> MilvusVectorStore:
        return MilvusVectorStore(str(data / "milvus.db"), name, settings.embedding_dim, lite_flush_interval_s=0)

    # Both collections (preferences have their own): the scan covers every vector of a cube.
    vectors = RoutedVectorStore(collection(settings.milvus_collection), collection(settings.preference_collection))
    return graph, vectors


# one cube's store down ---------------------------------------------------------------------------
async def test_one_cube_down_gives_that_cube_an_error_not_the_search(suite, unique: str) -> None:  # type: ignore[no-untyped-def]
    """Searches of two healthy cubes and one whose store is down (the suite's ``down-`` injection),
    from concurrent clients while others add: each answers, the down cube with UNAVAILABLE as its
    status, the healthy ones with their memories."""
    user = f"chaos-{unique}"
    healthy, down = [f"ok1-{unique}", f"ok2-{unique}"], f"down-{unique}"
    async with AsyncMemosClient(suite.address) as client:
        for cube in healthy:
            await client.add_memories(user, [cube], [{"role": "user", "content": f"The {cube} note is kept safe."}])
        await client.create_cube(user, down)  # adds to it fail by design
        outcomes: Counter = Counter()
        added = 0

        async def searcher(n: int) -> None:
            for i in range(6):
                resp = await client.search_memories(user, [*healthy, down], f"note {n} {i}", timeout=30)
                by_cube = {b.cube_id: b for b in resp.text_mem}
                outcomes[(by_cube[down].status.code, tuple(by_cube[c].status.code for c in healthy))] += 1
                assert by_cube[down].status.code == Code.UNAVAILABLE and not by_cube[down].memories
                assert all(by_cube[c].status.code == 0 and by_cube[c].memories for c in healthy)

        async def adder(n: int) -> None:
            nonlocal added
            for i in range(4):
                await client.add_memories(
                    user, [healthy[i % 2]], [{"role": "user", "content": f"Adder {n} fact {uuid.uuid4().hex}."}]
                )
                added += 1

        await asyncio.gather(*(searcher(n) for n in range(4)), *(adder(n) for n in range(2)))
    searches = sum(outcomes.values())
    report_figure(
        "chaos (one cube down)",
        f"{searches} searches of 2 healthy cubes + 1 down, during {added} adds: {searches} answered,"
        f" the down cube UNAVAILABLE in all, the healthy cubes OK in all",
    )
