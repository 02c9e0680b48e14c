"""OIDC/JWT bearer tokens at the gateway: real gRPC, keys made here, the JWKS served over loopback.

One gateway has API keys and JWT on together: an RSA JWKS from a URL (a loopback HTTP server this
module starts) and an EC key from a JWKS file, as a mounted ConfigMap would give it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from memos.client import AsyncMemosClient, PermissionDenied
from services.gateway.auth import create_key
from services.gateway.jwt_auth import JwksKeys, JwtVerifier
from services.gateway.settings import GatewaySettings
from shared.errors import Unauthenticated
from tests.conftest import start_suite, stop_suite

pytestmark = pytest.mark.timeout(180)

ISSUER = "https://idp.example.test/realms/memos"
AUDIENCE = "memos-api"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(private_key: Any, kid: str, alg: str) -> dict:
    algorithm = RSAAlgorithm if alg.startswith(("RS", "PS")) else ECAlgorithm
    jwk = algorithm.to_jwk(private_key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def _claims(**overrides: Any) -> dict:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_by_hand(header: dict, claims: dict, secret: bytes) -> str:
    """An HS256 token whose secret is arbitrary bytes (PyJWT refuses to sign with a PEM key)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 whose key set a test can replace; it counts its requests."""

    def __init__(self) -> None:
        self.jwks: dict = {"keys": []}
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.requests += 1
                body = json.dumps(outer.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class Keys:
    def __init__(self) -> None:
        self.rsa = _rsa()
        self.rsa_kid = "rsa-1"
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.ec_kid = "ec-file-1"

    def rs256(self, claims: dict | None = None, kid: str | None = None, key: Any = None, **headers: Any) -> str:
        return jwt.encode(
            claims or _claims(), key or self.rsa, algorithm="RS256", headers={"kid": kid or self.rsa_kid, **headers}
        )

    def es256(self, claims: dict | None = None, kid: str | None = None) -> str:
        return jwt.encode(claims or _claims(), self.ec, algorithm="ES256", headers={"kid": kid or self.ec_kid})


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def jwks_server(keys: Keys) -> Iterator[JwksServer]:
    server = JwksServer()
    server.jwks = {"keys": [_jwk(keys.rsa, keys.rsa_kid, "RS256")]}
    yield server
    server.close()


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory, embedder, keys: Keys, jwks_server: JwksServer) -> AsyncIterator[tuple[str, Path]]:  # type: ignore[no-untyped-def]
    secrets = tmp_path_factory.mktemp("jwt")
    jwks_file = secrets / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [_jwk(keys.ec, keys.ec_kid, "ES256")]}))
    api_keys = secrets / "keys.json"
    create_key(api_keys, "bootstrap")
    suite = await start_suite(
        tmp_path_factory.mktemp("jwt-suite"),
        embedder,
        api_keys_file=api_keys,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_jwks_url=jwks_server.url,
        jwt_jwks_file=jwks_file,
        jwt_jwks_min_refresh_interval_s=0.2,
    )
    yield suite.address, api_keys
    await stop_suite(suite)


async def test_a_valid_token_adds_and_searches_end_to_end(gateway, keys: Keys, unique: str) -> None:  # type: ignore[no-untyped-def]
    address, _ = gateway
    user = f"alice-{unique}"
    async with AsyncMemosClient(address, api_key=keys.rs256(_claims(sub=user))) as c:
        await c.add_memories(user, [f"{user}-cube"], "alice keeps her bicycle in the blue shed")
        found = await c.search_memories(user, [f"{user}-cube"], "where is the bicycle")
    assert "blue shed" in found.ranked[0].item.memory
    # The EC key from the JWKS file works as well as the RSA one from the URL.
    async with AsyncMemosClient(address, api_key=keys.es256(_claims(sub=user))) as c:
        assert [cube.cube_id for cube in (await c.list_cubes(user)).cubes] == [f"{user}-cube"]


async def test_api_keys_keep_working_beside_tokens(gateway, unique: str) -> None:  # type: ignore[no-untyped-def]
    address, api_keys = gateway
    key = create_key(api_keys, f"carol-{unique}")
    await asyncio.sleep(0.6)  # an unknown key id is looked up again after half a second at most
    async with AsyncMemosClient(address, api_key=key) as c:
        await c.list_cubes(f"carol-{unique}")
    async with AsyncMemosClient(address, api_key="") as c:
        with pytest.raises(Unauthenticated) as err:
            await c.list_cubes("carol")
    assert err.value.reason == "MISSING_API_KEY"


def _invalid_tokens(keys: Keys) -> dict[str, tuple[str, str]]:
    now = int(time.time())
    other_rsa = _rsa()
    good = keys.rs256()
    head, payload, sig = good.split(".")
    forged_payload = _b64(json.dumps(_claims(sub="mallory")).encode())
    public_pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "expired": (keys.rs256(_claims(iat=now - 3600, exp=now - 600)), "TOKEN_EXPIRED"),
        "not yet valid": (keys.rs256(_claims(nbf=now + 600)), "TOKEN_NOT_YET_VALID"),
        "issued in the future": (keys.rs256(_claims(iat=now + 600)), "TOKEN_NOT_YET_VALID"),
        "wrong issuer": (keys.rs256(_claims(iss="https://evil.example.test")), "TOKEN_BAD_ISSUER"),
        "issuer prefix": (keys.rs256(_claims(iss=ISSUER[:-1])), "TOKEN_BAD_ISSUER"),
        "wrong audience": (keys.rs256(_claims(aud="another-app")), "TOKEN_BAD_AUDIENCE"),
        "no expiry": (keys.rs256(_claims(exp=None)), "TOKEN_MISSING_CLAIM"),
        "no audience": (keys.rs256(_claims(aud=None)), "TOKEN_MISSING_CLAIM"),
        "no subject": (keys.rs256(_claims(sub=None)), "TOKEN_MISSING_CLAIM"),
        "signed by another key, same kid": (keys.rs256(key=other_rsa), "TOKEN_BAD_SIGNATURE"),
        "payload swapped": (f"{head}.{forged_payload}.{sig}", "TOKEN_BAD_SIGNATURE"),
        "unknown kid": (keys.rs256(kid=f"nope-{uuid.uuid4().hex}", key=other_rsa), "TOKEN_UNKNOWN_KEY"),
        "alg none": (jwt.encode(_claims(), None, algorithm="none"), "TOKEN_ALG_NOT_ALLOWED"),
        "RS384 not allowed": (
            jwt.encode(_claims(), keys.rsa, algorithm="RS384", headers={"kid": keys.rsa_kid}),
            "TOKEN_ALG_NOT_ALLOWED",
        ),
        # Algorithm confusion: HS256 "signed" with the RSA public key as the HMAC secret.
        "HS256 with the public key": (
            _hs256_by_hand({"alg": "HS256", "typ": "JWT", "kid": keys.rsa_kid}, _claims(), public_pem),
            "TOKEN_ALG_NOT_ALLOWED",
        ),
        "ES256 header on an RSA kid": (
            jwt.encode(_claims(), keys.ec, algorithm="ES256", headers={"kid": keys.rsa_kid}),
            "TOKEN_ALG_MISMATCH",
        ),
        "three dots of junk": ("abc.def.ghi", "TOKEN_MALFORMED"),
        "header not json": (f"{_b64(b'not json')}.{payload}.{sig}", "TOKEN_MALFORMED"),
    }


async def test_each_invalid_token_is_unauthenticated_with_its_reason(gateway, keys: Keys) -> None:  # type: ignore[no-untyped-def]
    address, _ = gateway
    failures = {}
    for case, (token, reason) in _invalid_tokens(keys).items():
        async with AsyncMemosClient(address, api_key=token) as c:
            try:
                await c.list_cubes("alice")
            except Unauthenticated as exc:
                if exc.reason != reason:
                    failures[case] = f"{exc.reason} ({exc})"
            except Exception as exc:  # noqa: BLE001 - reported below with the case
                failures[case] = f"{type(exc).__name__}: {exc}"
            else:
                failures[case] = "accepted"
    assert not failures, failures


async def test_a_token_acts_only_as_its_user_and_an_admin_token_as_anyone(gateway, keys: Keys, unique: str) -> None:  # type: ignore[no-untyped-def]
    address, _ = gateway
    alice, bob = f"alice-{unique}", f"bob-{unique}"
    async with AsyncMemosClient(address, api_key=keys.rs256(_claims(sub=alice))) as c:
        await c.add_memories(alice, [f"{alice}-cube"], "alice grows tulips on the balcony")
        for call in (
            c.list_cubes(bob),
            c.add_memories(bob, [f"{bob}-cube"], "pretending to be bob"),
            c.search_memories(bob, [f"{alice}-cube"], "tulips"),
        ):
            with pytest.raises(PermissionDenied) as err:
                await call
            assert err.value.reason == "USER_MISMATCH"
    # A role that is not the admin value grants nothing.
    async with AsyncMemosClient(address, api_key=keys.rs256(_claims(sub=bob, roles=["memos-reader"]))) as c:
        with pytest.raises(PermissionDenied):
            await c.list_cubes(alice)
    admin = keys.rs256(_claims(sub=f"ops-{unique}", roles=["memos-reader", "memos-admin"]))
    async with AsyncMemosClient(address, api_key=admin) as c:
        found = await c.search_memories(alice, [f"{alice}-cube"], "tulips")
    assert "tulips" in found.ranked[0].item.memory


async def test_a_rotated_key_is_fetched_when_a_token_names_it(
    gateway, keys: Keys, jwks_server: JwksServer, unique: str
) -> None:  # type: ignore[no-untyped-def]
    address, _ = gateway
    new_key, new_kid = _rsa(), f"rsa-{unique}"
    token = keys.rs256(_claims(sub=f"dave-{unique}"), kid=new_kid, key=new_key)
    before = jwks_server.requests
    # The provider publishes the new key next to the old one (the usual rotation overlap).
    jwks_server.jwks = {"keys": [*jwks_server.jwks["keys"], _jwk(new_key, new_kid, "RS256")]}
    await asyncio.sleep(0.3)  # past the minimum interval between fetches (0.2 s here)
    async with AsyncMemosClient(address, api_key=token) as c:
        await c.list_cubes(f"dave-{unique}")
    assert jwks_server.requests > before
    # The old key still verifies while it is published.
    async with AsyncMemosClient(address, api_key=keys.rs256(_claims(sub=f"dave-{unique}"))) as c:
        await c.list_cubes(f"dave-{unique}")


async def test_health_stays_open(gateway) -> None:  # type: ignore[no-untyped-def]
    address, _ = gateway
    async with grpc.aio.insecure_channel(address) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


# -- the key cache and the verifier alone -------------------------------------------------------


async def test_unknown_kids_cannot_make_the_gateway_hammer_the_provider(keys: Keys) -> None:
    server = JwksServer()
    server.jwks = {"keys": [_jwk(keys.rsa, "a", "RS256")]}
    try:
        cache = JwksKeys(None, server.url, ttl_s=300, min_refresh_s=60, timeout_s=5)
        assert (await cache.lookup("a"))["kid"] == "a"
        assert server.requests == 1
        results = await asyncio.gather(*(cache.lookup(f"made-up-{i}") for i in range(20)))
        assert results == [None] * 20
        assert server.requests == 1, "one fetch per minimum interval, whatever kids arrive"
    finally:
        server.close()


async def test_keys_are_refetched_after_their_ttl(keys: Keys) -> None:
    server = JwksServer()
    server.jwks = {"keys": [_jwk(keys.rsa, "old", "RS256")]}
    try:
        cache = JwksKeys(None, server.url, ttl_s=0.3, min_refresh_s=0, timeout_s=5)
        assert await cache.lookup("old") is not None
        new_key = _rsa()
        server.jwks = {"keys": [_jwk(new_key, "new", "RS256")]}
        await asyncio.sleep(0.4)
        # Past the TTL: the cached keys still answer while a background fetch replaces them.
        assert await cache.lookup("old") is not None
        for _ in range(100):
            if server.requests >= 2 and cache._background is not None and cache._background.done():
                break
            await asyncio.sleep(0.05)
        assert (await cache.lookup("new"))["kid"] == "new"
    finally:
        server.close()


async def test_hs256_works_only_with_a_configured_secret(keys: Keys) -> None:
    secret = "s" * 40
    verifier = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, algorithms=("HS256",), keys=None, hmac_secret=secret)
    token = jwt.encode(_claims(sub="erin", scope="read memos-admin"), secret, algorithm="HS256")
    assert await verifier.authenticate(token) == ("erin", False, "jwt:HS256")
    with pytest.raises(Unauthenticated) as err:
        await verifier.authenticate(keys.rs256())
    assert err.value.reason == "TOKEN_ALG_NOT_ALLOWED"
    # The admin value inside a space-separated scope claim, a nested claim for the user.
    scoped = JwtVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=("HS256",),
        keys=None,
        hmac_secret=secret,
        user_claim="ext.user",
        admin_claim="scope",
    )
    token = jwt.encode(_claims(ext={"user": "frank"}, scope="read memos-admin"), secret, algorithm="HS256")
    assert (await scoped.authenticate(token))[:2] == ("frank", True)


@pytest.mark.parametrize(
    ("overrides", "wanted"),
    [
        ({"jwt_issuer": ""}, "jwt_issuer and jwt_audience"),
        ({"jwt_audience": ""}, "jwt_issuer and jwt_audience"),
        ({"jwt_jwks_file": None, "jwt_jwks_url": "http://idp.example.test/jwks"}, "https://"),
        ({"jwt_algorithms": "RS256,none"}, '"none"'),
        ({"jwt_algorithms": "RS256,XS1"}, "unknown JWT algorithm"),
        ({"jwt_algorithms": "HS256"}, "needs jwt_hmac_secret"),
        ({"jwt_algorithms": "HS256", "jwt_hmac_secret": "short"}, "at least 32"),
        # The default algorithms are asymmetric: a shared secret alone does not verify them.
        ({"jwt_jwks_file": None, "jwt_hmac_secret": "x" * 32}, "needs jwt_jwks_file"),
    ],
)
def test_unsafe_jwt_settings_are_refused_at_start(overrides: dict, wanted: str, tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    args = {"jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, "jwt_jwks_file": tmp_path / "jwks.json", **overrides}
    with pytest.raises(ValueError, match=wanted):
        GatewaySettings(**args)


async def test_oversized_tokens_are_malformed_before_any_parsing(keys: Keys) -> None:
    verifier = JwtVerifier(issuer=ISSUER, audience=AUDIENCE, algorithms=("HS256",), keys=None, hmac_secret="s" * 40)
    with pytest.raises(Unauthenticated) as err:
        await verifier.authenticate("a" * 5000 + "." + "b" * 4000 + ".c")
    assert err.value.reason == "TOKEN_MALFORMED"
