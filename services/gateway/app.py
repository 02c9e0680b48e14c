"""Assembles the gateway from its settings."""

from __future__ import annotations

import asyncio

from memos.gateway.v1 import gateway_pb2_grpc
from services.gateway.actmem_client import ActMemClient
from services.gateway.auth import ApiKeyStore, Authenticator
from services.gateway.chat import ChatService
from services.gateway.core import Gateway
from services.gateway.export import UserDataExport
from services.gateway.ingest_client import IngestClient
from services.gateway.jwt_auth import JwtVerifier
from services.gateway.limits import RateLimiter
from services.gateway.scheduler_client import SchedulerClient
from services.gateway.servicer import GatewayServicer
from services.gateway.settings import GatewaySettings
from services.gateway.textmem_client import TextMemClient
from shared.llm import ChatClient
from shared.server import GrpcServer, ServiceBinding


def build_server(settings: GatewaySettings) -> GrpcServer:
    textmem = TextMemClient(settings.textmem_addr, settings)
    ingest = IngestClient(settings.ingest_addr, settings) if settings.ingest_addr else None
    scheduler = SchedulerClient(settings.scheduler_addr, settings) if settings.scheduler_addr else None
    actmem = ActMemClient(settings.actmem_addr, settings) if settings.actmem_addr else None
    llm = None
    if settings.chat_llm_base_url:
        llm = ChatClient(
            settings.chat_llm_base_url,
            settings.chat_llm_model,
            api_key=settings.chat_llm_api_key,
            timeout_s=settings.chat_llm_timeout_s,
            max_tokens=settings.chat_llm_max_tokens,
            semaphore=asyncio.Semaphore(settings.chat_llm_max_concurrency),
        )
    gateway = Gateway(settings, textmem, ingest, scheduler, actmem)
    jwt_verifier = JwtVerifier.from_settings(settings)
    auth = Authenticator(ApiKeyStore(settings.api_keys_file) if settings.api_keys_file else None, jwt_verifier)
    limiter = RateLimiter(settings.rate_limit_per_user, settings.rate_limit_burst)
    servicer = GatewayServicer(
        gateway, ChatService(gateway, llm, scheduler), auth, limiter, UserDataExport(gateway, scheduler, actmem)
    )
    return GrpcServer(
        name="gateway",
        settings=settings,
        services=[
            ServiceBinding(
                "memos.gateway.v1.GatewayService",
                lambda s: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, s),
            ),
        ],
        require_service_token=False,  # public API: callers present API keys or JWTs instead
        on_stop=[
            textmem.close,
            *([ingest.close] if ingest else []),
            *([scheduler.close] if scheduler else []),
            *([actmem.close] if actmem else []),
        ],
        # Fetch the identity provider's keys before the first call needs them (a failure is only
        # logged: the first token then waits for its own fetch).
        on_start=[lambda _srv: jwt_verifier.keys.refresh()] if jwt_verifier and jwt_verifier.keys else [],
    )
