"""API-key authentication at the gateway: real gRPC, a key file as an operator writes it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memos.client import AsyncMemosClient, PermissionDenied
from services.gateway.auth import create_key, disable_key, main
from shared.errors import Unauthenticated
from tests.conftest import start_suite, stop_suite

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
async def keyed(tmp_path_factory, embedder) -> AsyncIterator[tuple[str, Path]]:  # type: ignore[no-untyped-def]
    keys = tmp_path_factory.mktemp("keys") / "keys.json"
    create_key(keys, "bootstrap")  # the file must exist when the gateway starts
    suite = await start_suite(tmp_path_factory.mktemp("auth"), embedder, api_keys_file=keys)
    yield suite.address, keys
    await stop_suite(suite)


async def test_calls_without_a_valid_key_are_unauthenticated(keyed) -> None:  # type: ignore[no-untyped-def]
    address, _ = keyed
    for key, reason in [
        ("", "MISSING_API_KEY"),
        ("not-a-key", "BAD_API_KEY"),
        ("memos_abc", "BAD_API_KEY"),
        ("memos_0123456789ab_" + "x" * 43, "UNKNOWN_API_KEY"),
    ]:
        async with AsyncMemosClient(address, api_key=key) as c:
            with pytest.raises(Unauthenticated) as err:
                await c.list_cubes("alice")
            assert err.value.reason == reason
            with pytest.raises(Unauthenticated):
                [e async for e in c.chat("alice", "hello")]
    # Health stays open: probes carry no key.
    async with grpc.aio.insecure_channel(address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_key_acts_only_as_its_user_and_an_admin_key_as_anyone(keyed, unique) -> None:  # type: ignore[no-untyped-def]
    address, keys = keyed
    alice, bob = f"alice-{unique}", f"bob-{unique}"
    alice_key, admin_key = create_key(keys, alice), create_key(keys, f"ops-{unique}", "admin")
    stored = keys.read_text()
    assert alice_key not in stored and alice_key.split("_")[2] not in stored  # only hashes at rest
    async with AsyncMemosClient(address, api_key=alice_key) as c:
        await asyncio.sleep(0.6)  # a new key is looked up again after half a second at most
        await c.add_memories(alice, [f"{alice}-cube"], "alice's note about tulips")
        with pytest.raises(PermissionDenied) as err:
            await c.add_memories(bob, [f"{bob}-cube"], "pretending to be bob")
        assert err.value.reason == "USER_MISMATCH"
        with pytest.raises(PermissionDenied):
            await c.list_cubes(bob)
    async with AsyncMemosClient(address, api_key=admin_key) as c:
        found = await c.search_memories(alice, [f"{alice}-cube"], "tulips")
        assert "tulips" in found.ranked[0].item.memory


async def test_rotation_without_restart(keyed, unique) -> None:  # type: ignore[no-untyped-def]
    address, keys = keyed
    user = f"carol-{unique}"
    old, new = create_key(keys, user), create_key(keys, user)
    await asyncio.sleep(0.6)
    async with AsyncMemosClient(address, api_key=old) as c:
        await c.list_cubes(user)
    assert disable_key(keys, old.split("_")[1])
    await asyncio.sleep(2.2)  # the gateway re-reads a changed key file within its recheck interval
    async with AsyncMemosClient(address, api_key=old) as c:
        with pytest.raises(Unauthenticated) as err:
            await c.list_cubes(user)
        assert err.value.reason == "API_KEY_DISABLED"
    async with AsyncMemosClient(address, api_key=new) as c:
        await c.list_cubes(user)


def test_key_administration_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "k.json"
    assert main(["create", "--file", str(keys), "--user", "dave", "--role", "admin"]) == 0
    key = capsys.readouterr().out.strip()
    (record,) = json.loads(keys.read_text())["keys"]
    assert key.startswith("memos_" + record["id"] + "_") and record["role"] == "admin"
    assert (keys.stat().st_mode & 0o777) == 0o600
    assert main(["disable", "--file", str(keys), "--key-id", "nope"]) == 1
    assert main(["disable", "--file", str(keys), "--key-id", record["id"]]) == 0
    assert json.loads(keys.read_text())["keys"][0]["disabled"] is True
