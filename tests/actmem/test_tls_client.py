"""The actmem SDK client under mutual TLS: with the release's certificate it extracts and
streams a cache back; without one it cannot reach a listener that requires one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from memos.client.actmem import ActMemClient, EmbeddedActMem
from shared.errors import Unavailable
from shared.settings import ClientSettings
from tests.security.pki import CA, write_files


def test_actmem_client_streams_caches_over_mutual_tls(make_memory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ca = CA("memos release CA")
    server_files = write_files(tmp_path / "actmem", ca.issue("memos-actmem", ["memos-actmem"]), ca)
    memory, settings = make_memory(**server_files)
    embedded = EmbeddedActMem(settings, memory=memory)
    address = embedded.start()
    try:
        mine = write_files(tmp_path / "gateway", ca.issue("memos-gateway", ["memos-gateway"]), ca)
        client = ActMemClient(
            address, chunk_bytes=settings.chunk_bytes, settings=ClientSettings(**mine, tls_server_name="memos-actmem")
        )
        try:
            item = client.extract("cube", "alice keeps her notes in a graph.")
            _, kv = client.get("cube", item.cache_id)
            assert torch.equal(kv[0][0], memory.get("cube", item.cache_id)[1][0][0].cpu())
        finally:
            client.close()
        for outsider in (
            ClientSettings(),  # plaintext
            ClientSettings(tls_ca_file=mine["tls_ca_file"], tls_server_name="memos-actmem"),  # no certificate
        ):
            stranger = ActMemClient(address, settings=outsider, timeout_s=5)
            try:
                with pytest.raises(Unavailable):
                    stranger.list("cube")
            finally:
                stranger.close()
    finally:
        embedded.stop()
