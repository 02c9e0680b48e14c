"""Assembles ingest from its settings."""

from __future__ import annotations

from memos.ingest.v1 import ingest_pb2_grpc
from services.ingest.pipeline import Ingestor
from services.ingest.servicer import IngestServicer
from services.ingest.settings import IngestSettings
from services.ingest.textmem_client import TextMemWriter
from shared.server import GrpcServer, ServiceBinding


def build_server(settings: IngestSettings, ingestor: Ingestor | None = None) -> GrpcServer:
    ingestor = ingestor or Ingestor(settings)
    textmem = TextMemWriter(settings.textmem_addr, settings)
    servicer = IngestServicer(ingestor, textmem)
    return GrpcServer(
        name="ingest",
        settings=settings,
        services=[
            ServiceBinding(
                "memos.ingest.v1.IngestService",
                lambda s: ingest_pb2_grpc.add_IngestServiceServicer_to_server(servicer, s),
            ),
        ],
        on_stop=[textmem.close],
    )
