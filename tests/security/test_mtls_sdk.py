"""The Python SDK's blocking clients under mutual TLS: the gateway client, and a scheduler worker
that lives outside the release (the actmem client is in tests/actmem/test_tls_client.py).

With ``MEMOS_TLS_*`` settings the SDK dials TLS, checks the server against the release's CA and
presents its own certificate; without a certificate of that CA it cannot reach a listener that
requires one, whatever it sends.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from memos.client import MemosClient
from memos.client.scheduler import ScheduledMessage, SchedulerClient
from services.scheduler.settings import SchedulerSettings
from shared.errors import MemosError, Unavailable
from shared.settings import ClientSettings
from tests.conftest import start_suite, stop_suite
from tests.scheduler.conftest import ServerThread
from tests.security.pki import CA, write_files

pytestmark = pytest.mark.timeout(180)


def _client_settings(files: dict[str, Path], server_name: str) -> ClientSettings:
    return ClientSettings(**files, tls_server_name=server_name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CA, Path]:
    return CA("memos release CA"), tmp_path_factory.mktemp("pki")


async def test_blocking_gateway_client_speaks_mutual_tls(
    pki: tuple[CA, Path], tmp_path: Path, embedder, unique: str
) -> None:  # type: ignore[no-untyped-def]
    ca, secrets = pki
    # The gateway serves TLS with client authentication here (an internal caller's view of it).
    gateway_files = write_files(secrets / "gateway", ca.issue("memos-gateway", ["memos-gateway"]), ca)
    textmem_files = write_files(secrets / "textmem", ca.issue("memos-textmem", ["memos-textmem"]), ca)
    suite = await start_suite(
        tmp_path, embedder, textmem_files, tls_serve=True, tls_server_name="memos-textmem", **gateway_files
    )
    app_files = write_files(secrets / "app", ca.issue("memos-app", ["memos-app"]), ca)
    try:
        user, cube = f"u-{unique}", f"c-{unique}"

        def talk(settings: ClientSettings) -> str:
            with MemosClient(suite.address, settings=settings) as c:
                c.add_memories(user, [cube], "the blocking client carried this over TLS", timeout=20)
                found = c.search_memories(user, [cube], "what did the blocking client carry", timeout=20)
            return found.ranked[0].item.memory

        # The blocking client runs off the loop: the suite's servers share this test's loop.
        memory = await asyncio.to_thread(talk, _client_settings(app_files, "memos-gateway"))
        assert "blocking client" in memory
        no_cert = ClientSettings(tls_ca_file=app_files["tls_ca_file"], tls_server_name="memos-gateway")
        with pytest.raises(Unavailable):
            await asyncio.to_thread(talk, no_cert)
        with pytest.raises(Unavailable):  # plaintext against a TLS listener
            await asyncio.to_thread(talk, ClientSettings())
    finally:
        await stop_suite(suite)


def test_remote_worker_outside_the_release_needs_a_release_certificate(pki: tuple[CA, Path], tmp_path: Path) -> None:
    ca, secrets = pki
    server_files = write_files(secrets / "scheduler", ca.issue("memos-scheduler", ["memos-scheduler"]), ca)
    server = ServerThread(
        SchedulerSettings(listen_addr="127.0.0.1:0", data_dir=tmp_path / "queue", log_level="WARNING", **server_files)
    )
    try:
        worker_files = write_files(secrets / "worker", ca.issue("memos-worker", ["memos-worker"]), ca)
        handled: list[str] = []
        done = threading.Event()

        def on_query(msg: ScheduledMessage) -> None:
            handled.append(msg.content)
            done.set()

        with SchedulerClient(server.address, settings=_client_settings(worker_files, "memos-scheduler")) as client:
            client.register_handlers({"query": on_query})
            client.submit_messages([ScheduledMessage(user_id="alice", cube_id="c", label="query", content="over tls")])
            assert done.wait(20)
            # Acknowledged (acks travel in batches after the handler returns) before the worker stops.
            assert client.wait_for_tasks("alice", timeout_s=20)
        assert handled == ["over tls"]

        stranger_ca = CA("someone else's CA")
        stranger = write_files(secrets / "stranger", stranger_ca.issue("memos-worker", ["memos-worker"]), ca)
        outsiders = {
            "plaintext": ClientSettings(),
            "TLS without a client certificate": ClientSettings(
                tls_ca_file=worker_files["tls_ca_file"], tls_server_name="memos-scheduler"
            ),
            "a certificate from another CA": _client_settings(stranger, "memos-scheduler"),
        }
        for case, settings in outsiders.items():
            with SchedulerClient(server.address, settings=settings, timeout_s=5) as client:
                with pytest.raises(MemosError) as err:
                    client.submit_messages([{"user_id": "alice", "cube_id": "c", "label": "query", "content": "x"}])
                assert isinstance(err.value, Unavailable), (case, err.value)
        # Nothing an outsider sent was queued: no task of alice's waits (there is no worker now).
        with SchedulerClient(server.address, settings=_client_settings(worker_files, "memos-scheduler")) as client:
            assert client.wait_for_tasks("alice", timeout_s=5)
        assert handled == ["over tls"]
    finally:
        server.stop()
