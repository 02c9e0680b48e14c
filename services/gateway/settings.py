"""Settings of the gateway service (``MEMOS_*`` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from services.gateway.jwt_auth import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, check_jwks_url
from shared.settings import ClientSettings, ServerSettings


class GatewaySettings(ServerSettings, ClientSettings):
    listen_addr: str = "0.0.0.0:50051"
    """host:port to listen on."""

    tls_serve: bool = False
    """The gateway's public listener stays plaintext by default even with the release's TLS files set
    (they are then only its client certificate towards textmem, ingest and the scheduler): its
    callers are applications that authenticate with API keys or JWTs, and TLS for them usually
    ends at the ingress. True serves it with tls_cert_file; set tls_require_client_auth=false then
    unless every caller holds a certificate of the release's CA."""

    api_keys_file: Path | None = None
    """JSON file of API key records (``python -m services.gateway.auth create`` writes it); every
    call then needs ``authorization: Bearer <key>`` and may act only as the key's user (admin keys:
    any user). Unset: no authentication, for a laptop or a gateway reachable only on loopback."""

    jwt_issuer: str = ""
    """OIDC/JWT bearer tokens: the issuer (``iss``) a token must name exactly, e.g.
    https://login.example.com/realms/memos. Required once a key source (jwt_jwks_file,
    jwt_jwks_url or jwt_hmac_secret) turns JWT authentication on."""

    jwt_audience: str = ""
    """The audience (``aud``) a token must include, e.g. the client id of memos at the identity
    provider; tokens minted for other applications are refused. Required with JWT on."""

    jwt_algorithms: str = "RS256,ES256"
    """Comma-separated signature algorithms accepted (RS*, PS*, ES*, EdDSA; HS256/384/512 only with
    jwt_hmac_secret). "none" is never accepted."""

    jwt_jwks_file: Path | None = None
    """JWKS file (a JSON Web Key Set: the provider's public keys), e.g. a mounted ConfigMap or
    Secret; re-read when it changes."""

    jwt_jwks_url: str = ""
    """JWKS URL of the identity provider (its ``jwks_uri``), fetched over https:// (http:// only to
    loopback) and cached for jwt_jwks_cache_ttl_s; keys merge with jwt_jwks_file's."""

    jwt_jwks_cache_ttl_s: float = Field(default=300.0, gt=0)
    """How long keys fetched from jwt_jwks_url are used before they are fetched again (in the
    background: calls go on with the cached keys meanwhile)."""

    jwt_jwks_min_refresh_interval_s: float = Field(default=30.0, ge=0)
    """A token naming an unknown key id makes the gateway fetch jwt_jwks_url again at once (the
    provider rotated its keys), but never more often than this, whatever tokens arrive."""

    jwt_jwks_timeout_s: float = Field(default=5.0, gt=0)
    """Longest wait for jwt_jwks_url to answer."""

    jwt_hmac_secret: str = Field(default="", repr=False)
    """Shared secret (at least 32 characters) that verifies HS256/384/512 tokens, for issuers
    without key pairs; list the HS algorithm in jwt_algorithms too. Empty: HS* tokens are refused."""

    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    """Clock skew tolerated when checking a token's exp, nbf and iat."""

    jwt_user_claim: str = "sub"
    """Claim that names the user a token acts as (a dotted name walks nested objects); a request
    naming another user_id gets PERMISSION_DENIED unless the token is an admin's."""

    jwt_admin_claim: str = "roles"
    """Claim that grants the admin role (may act as any user) when it contains jwt_admin_value: a
    list, a string or a space-separated string (``scope``). A dotted name walks nested objects
    (``realm_access.roles``). Empty: no token is an admin."""

    jwt_admin_value: str = "memos-admin"
    """Value of jwt_admin_claim that grants the admin role."""

    rate_limit_per_user: float = Field(default=0.0, ge=0.0)
    """Calls per second one user may make to this gateway replica on average (0: no limit); past it
    RESOURCE_EXHAUSTED RATE_LIMITED with the wait in its details."""

    rate_limit_burst: int = Field(default=20, ge=1)
    """Calls one user may make at once above the rate before being limited."""

    textmem_addr: str = "127.0.0.1:50052"
    """Where the textmem service listens."""

    ingest_addr: str = ""
    """Where the ingest service listens; every add (fast and fine) goes through it. Empty: adds go
    straight to textmem's fast path (chat text only; files are not fetched) and fine mode falls back."""

    scheduler_addr: str = ""
    """Where the scheduler listens; empty: async adds run synchronously and chats raise no
    query events (no working-memory refresh)."""

    actmem_addr: str = ""
    """Where the actmem service listens: DeleteCube and DeleteUserData delete the deleted cubes'
    KV caches there, and ExportUserData reads their descriptions (never tensors). Empty: erasure
    leaves actmem alone and exports leave KV caches out (and say so in their summary)."""

    search_timeout_s: float = Field(default=10.0, gt=0)
    """Deadline of a search whose caller set none."""

    fanout_reserve_s: float = Field(default=0.02, ge=0)
    """Time kept back from the caller's deadline to answer with per-cube statuses."""

    max_cubes_per_request: int = Field(default=64, ge=1, le=1024)
    """Cubes one search or add may name."""

    cube_cache_ttl_s: float = Field(default=1.0, ge=0)
    """How long a cube's access list is cached; changes made through this gateway apply at once."""

    max_messages_per_add: int = Field(default=2000, ge=1)
    """Messages one add may carry."""

    chat_llm_base_url: str = ""
    """OpenAI-compatible API that writes chat answers (e.g. http://127.0.0.1:8000/v1 for vLLM).
    Empty: Chat answers with the best retrieved memories, marked as such."""

    chat_llm_model: str = ""
    """Model name sent to chat_llm_base_url."""

    chat_llm_api_key: str = ""
    """Bearer token for chat_llm_base_url."""

    chat_llm_timeout_s: float = Field(default=120.0, gt=0)
    """Longest wait for the LLM's answer (a stream that stalls this long fails)."""

    chat_llm_max_tokens: int = Field(default=1024, ge=16)
    """Most tokens of one chat answer."""

    chat_llm_max_concurrency: int = Field(default=16, ge=1, le=1024)
    """Chat answers generated at once by this gateway; more wait their turn."""

    chat_max_query_chars: int = Field(default=20_000, ge=1)
    """Characters a chat query may have."""

    scheduler_timeout_s: float = Field(default=2.0, gt=0)
    """Longest wait to hand work to the scheduler (a chat's query event, an async add's mem_read
    task); past it the chat goes on without the event, the add keeps its fast memories."""

    @field_validator("jwt_jwks_url")
    @classmethod
    def _jwks_url(cls, v: str) -> str:
        v = v.strip()
        if v:
            check_jwks_url(v)
        return v

    @property
    def jwt_enabled(self) -> bool:
        return bool(self.jwt_jwks_file is not None or self.jwt_jwks_url or self.jwt_hmac_secret)

    @property
    def jwt_algorithm_list(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.strip() for a in self.jwt_algorithms.split(",") if a.strip()))

    @model_validator(mode="after")
    def _check(self) -> GatewaySettings:
        if self.chat_llm_base_url and not self.chat_llm_model:
            raise ValueError("chat_llm_model is required when chat_llm_base_url is set")
        if self.jwt_enabled:
            self._check_jwt()
        return self

    def _check_jwt(self) -> None:
        # Refused at start rather than at the first token: each of these would accept tokens
        # that should not be, or none at all.
        if not self.jwt_issuer or not self.jwt_audience:
            raise ValueError("JWT authentication needs jwt_issuer and jwt_audience")
        algorithms = self.jwt_algorithm_list
        if not algorithms:
            raise ValueError("jwt_algorithms is empty")
        for alg in algorithms:
            if alg.lower() == "none":
                raise ValueError('jwt_algorithms must not contain "none" (unsigned tokens)')
            if alg in HMAC_ALGORITHMS:
                if not self.jwt_hmac_secret:
                    raise ValueError(f"jwt_algorithms lists {alg}, which needs jwt_hmac_secret")
            elif alg not in ASYMMETRIC_ALGORITHMS:
                raise ValueError(f"unknown JWT algorithm {alg!r} in jwt_algorithms")
            elif self.jwt_jwks_file is None and not self.jwt_jwks_url:
                raise ValueError(f"jwt_algorithms lists {alg}, which needs jwt_jwks_file or jwt_jwks_url")
        if self.jwt_hmac_secret and len(self.jwt_hmac_secret) < 32:
            raise ValueError("jwt_hmac_secret must be at least 32 characters (256 bits for HS256)")
