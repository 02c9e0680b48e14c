"""Assembles the gateway from its settings."""

from __future__ import annotations

from memos.gateway.v1 import gateway_pb2_grpc
from services.gateway.core import Gateway
from services.gateway.ingest_client import IngestClient
from services.gateway.servicer import GatewayServicer
from services.gateway.settings import GatewaySettings
from services.gateway.textmem_client import TextMemClient
from shared.server import GrpcServer, ServiceBinding


def build_server(settings: GatewaySettings) -> GrpcServer:
    textmem = TextMemClient(settings.textmem_addr, settings)
    ingest = IngestClient(settings.ingest_addr, settings) if settings.ingest_addr else None
    servicer = GatewayServicer(Gateway(settings, textmem, ingest))
    return GrpcServer(
        name="gateway",
        settings=settings,
        services=[
            ServiceBinding(
                "memos.gateway.v1.GatewayService",
                lambda s: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, s),
            ),
        ],
        on_stop=[textmem.close, *([ingest.close] if ingest else [])],
    )
