"""Mutual TLS between services: real gRPC on loopback, a CA and certificates made here.

textmem serves TLS and requires a client certificate of the release's CA; the gateway calls it
with its own certificate. A client without a certificate, or with one from another CA, cannot
complete a handshake with textmem, whatever it sends; the kubelet's plaintext probes reach the
health-only port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memos.client import AsyncMemosClient
from memos.textmem.v1 import textmem_pb2, textmem_pb2_grpc
from services.gateway.app import build_server as build_gateway
from services.gateway.settings import GatewaySettings
from services.textmem.settings import TextMemSettings
from shared import tls
from tests.conftest import start_suite, stop_suite
from tests.security.pki import CA, Issued, write_files

pytestmark = pytest.mark.timeout(180)
SERVER_NAME = "memos-textmem"  # what a Kubernetes Service name would be


@dataclass
class Release:
    suite: object
    ca: CA
    gateway_cert: Issued
    textmem_files: dict[str, Path]


@pytest.fixture(scope="module")
async def release(tmp_path_factory, embedder) -> AsyncIterator[Release]:  # type: ignore[no-untyped-def]
    secrets = tmp_path_factory.mktemp("pki")
    ca = CA("memos release CA")
    textmem_files = write_files(secrets / "textmem", ca.issue(SERVER_NAME, [SERVER_NAME, "localhost"]), ca)
    gateway_cert = ca.issue("memos-gateway", ["memos-gateway"])
    gateway_files = write_files(secrets / "gateway", gateway_cert, ca)
    suite = await start_suite(
        tmp_path_factory.mktemp("mtls"),
        embedder,
        {**textmem_files, "health_listen_addr": "127.0.0.1:0"},
        # The certificate names memos-textmem, not the loopback address the test dials.
        tls_server_name=SERVER_NAME,
        **gateway_files,
    )
    yield Release(suite, ca, gateway_cert, textmem_files)
    await stop_suite(suite)


def _credentials(ca: CA, client: Issued | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.pem,
        private_key=client.key if client else None,
        certificate_chain=client.cert if client else None,
    )


async def _list_memories(channel: grpc.aio.Channel) -> textmem_pb2.ListMemoriesResponse:
    stub = textmem_pb2_grpc.TextMemServiceStub(channel)
    return await stub.ListMemories(textmem_pb2.ListMemoriesRequest(cube_id="any"), timeout=5)


def _secure(address: str, credentials: grpc.ChannelCredentials, name: str = SERVER_NAME) -> grpc.aio.Channel:
    # A local subchannel pool: a channel must not reuse another one's failed connection (and backoff).
    options = [("grpc.ssl_target_name_override", name), ("grpc.use_local_subchannel_pool", 1)]
    return grpc.aio.secure_channel(address, credentials, options=options)


async def test_the_gateway_reaches_textmem_with_its_certificate(release: Release, unique: str) -> None:
    # The public listener stays plaintext: applications authenticate with API keys or tokens.
    async with AsyncMemosClient(release.suite.address) as c:  # type: ignore[attr-defined]
        await c.add_memories(f"u-{unique}", [f"c-{unique}"], "mutual TLS carries this note to textmem")
        found = await c.search_memories(f"u-{unique}", [f"c-{unique}"], "what carries the note")
    assert "mutual TLS" in found.ranked[0].item.memory
    # The same certificate, dialled directly, is accepted too: the CA is what is checked.
    async with _secure(release.suite.textmem.address, _credentials(release.ca, release.gateway_cert)) as channel:  # type: ignore[attr-defined]
        assert list((await _list_memories(channel)).memories) == []


async def test_callers_without_a_release_certificate_cannot_reach_textmem(release: Release) -> None:
    address = release.suite.textmem.address  # type: ignore[attr-defined]
    stranger_ca = CA("someone else's CA")
    stranger = stranger_ca.issue("memos-gateway", ["memos-gateway"])  # same name, wrong issuer
    outsiders = {
        "plaintext": grpc.aio.insecure_channel(address),
        "TLS without a client certificate": _secure(address, _credentials(release.ca, None)),
        "a certificate from another CA": _secure(address, _credentials(release.ca, stranger)),
    }
    for case, channel in outsiders.items():
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _list_memories(channel)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, (case, err.value)
    # And the client checks the server: a name the certificate does not carry fails the handshake.
    async with _secure(address, _credentials(release.ca, release.gateway_cert), name="memos-other") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _list_memories(channel)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_probes_reach_the_plaintext_health_port_and_nothing_else(release: Release) -> None:
    textmem = release.suite.textmem  # type: ignore[attr-defined]
    async with grpc.aio.insecure_channel(textmem.health_address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _list_memories(channel)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED  # the health port serves health alone


async def test_a_renewed_certificate_is_served_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls._ReloadingCertificates, "RECHECK_S", 0.0)
    old_ca, new_ca = CA("old CA"), CA("new CA")
    files = write_files(tmp_path / "srv", old_ca.issue(SERVER_NAME, [SERVER_NAME]), old_ca)
    # A gateway is just a convenient server here; its listener serves TLS when asked to.
    settings = GatewaySettings(listen_addr="127.0.0.1:0", tls_serve=True, **files)
    server = build_gateway(settings)
    await server.start()
    try:
        new_client = new_ca.issue("memos-gateway", ["memos-gateway"])
        old_client = old_ca.issue("memos-gateway", ["memos-gateway"])

        async def health(ca: CA, client: Issued) -> grpc.StatusCode:
            async with _secure(server.address, _credentials(ca, client)) as channel:
                try:
                    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                except grpc.aio.AioRpcError as exc:
                    return exc.code()
                return grpc.StatusCode.OK

        assert await health(old_ca, old_client) == grpc.StatusCode.OK
        assert await health(new_ca, new_client) == grpc.StatusCode.UNAVAILABLE
        # cert-manager renews with a new CA: the Secret's three files change together.
        write_files(tmp_path / "srv", new_ca.issue(SERVER_NAME, [SERVER_NAME]), new_ca)
        assert await health(new_ca, new_client) == grpc.StatusCode.OK
        assert await health(old_ca, old_client) == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


def test_tls_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set both or neither"):
        TextMemSettings(tls_cert_file=tmp_path / "tls.crt")
    with pytest.raises(ValueError, match="needs tls_ca_file"):
        TextMemSettings(tls_cert_file=tmp_path / "tls.crt", tls_key_file=tmp_path / "tls.key")
    # Without client authentication a listener needs no CA.
    TextMemSettings(
        tls_cert_file=tmp_path / "tls.crt", tls_key_file=tmp_path / "tls.key", tls_require_client_auth=False
    )
