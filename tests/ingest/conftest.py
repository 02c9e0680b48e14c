"""An ingest service and a gateway routing through it, next to the session's textmem.

The LLM (fine mode, image descriptions) is the loopback OpenAI-protocol server
of tests/fakes; files come from a loopback HTTP server the tests fill, allowed
through MEMOS_FETCH_ALLOW_HOSTS=127.0.0.1 as a private deployment would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from memos.client import AsyncMemosClient
from services.gateway.app import build_server as build_gateway
from services.gateway.settings import GatewaySettings
from services.ingest.app import build_server as build_ingest
from services.ingest.settings import IngestSettings
from shared.server import GrpcServer
from tests.conftest import Suite
from tests.fakes.openai_server import FakeOpenAI
from tests.ingest.helpers import FileServer

IMAGE_DESCRIPTION = "A test picture: a red square with the label PMT gauge reading 2.5 bar."


def scripted_llm(body: dict) -> str:
    """What the fake LLM answers when a test queued nothing: one memory per user line, in the
    shape the extraction prompt asks for; preferences for lines saying "prefer"; a fixed
    description for image requests."""
    content = body["messages"][-1]["content"]
    if isinstance(content, list):
        return IMAGE_DESCRIPTION
    memories, prefs = [], []
    for line in content.splitlines():
        index, _, rest = line.partition("] ")
        role, _, text = rest.partition(": ")
        if role != "user" or not text:
            continue
        k = int(index.lstrip("["))
        memories.append(
            {
                "key": text[:40],
                "memory_type": "UserMemory" if text.startswith(("I ", "I'", "My ")) else "LongTermMemory",
                "value": f"The user said: {text}",
                "tags": ["scripted"],
                "source_messages": [k],
            }
        )
        if "prefer" in text:
            prefs.append({"preference": text, "kind": "explicit", "reasoning": "said so", "source_messages": [k]})
    return json.dumps({"memories": memories, "summary": "a scripted conversation", "preferences": prefs})


@dataclass
class IngestSuite:
    base: Suite
    ingest: GrpcServer
    gateway: GrpcServer
    llm: FakeOpenAI
    files: FileServer

    @property
    def address(self) -> str:
        return self.gateway.address


@pytest.fixture(scope="session")
async def ingest_suite(suite: Suite) -> AsyncIterator[IngestSuite]:
    llm = FakeOpenAI()
    llm.chat_default = scripted_llm
    files = FileServer()
    with llm.serve() as llm_url, files.serve():
        settings = IngestSettings(
            listen_addr="127.0.0.1:0",
            textmem_addr=suite.textmem.address,
            fetch_allow_hosts="127.0.0.1",
            fetch_timeout_s=2.0,
            llm_base_url=llm_url,
            llm_model="test-llm",
            vision_model="test-vision",
            log_level="WARNING",
        )
        ingest = build_ingest(settings)
        await ingest.start()
        gateway = build_gateway(
            GatewaySettings(listen_addr="127.0.0.1:0", textmem_addr=suite.textmem.address, ingest_addr=ingest.address)
        )
        await gateway.start()
        yield IngestSuite(suite, ingest, gateway, llm, files)
        await gateway.stop(1.0)
        await ingest.stop(1.0)


@pytest.fixture
async def iclient(ingest_suite: IngestSuite) -> AsyncIterator[AsyncMemosClient]:
    c = AsyncMemosClient(ingest_suite.address)
    yield c
    await c.close()
