"""OIDC/JWT bearer tokens at the gateway (PyJWT).

A caller sends ``authorization: Bearer <jwt>`` issued by the configured identity provider. The
token's signature is checked with a key from the provider's JWKS (a mounted file, a URL, or
both), or with a shared HMAC secret when one is configured; then its issuer, audience, expiry
and not-before (with a small leeway). The user claim (``sub`` by default) names the one user
the caller may act as; the admin claim/value (``roles`` containing ``memos-admin`` by default)
lets it act as anyone, exactly like an admin API key (:class:`services.gateway.auth.Principal`).

Every way a token can be wrong fails UNAUTHENTICATED with its own ErrorInfo reason
(TOKEN_EXPIRED, TOKEN_BAD_SIGNATURE, ...), never INTERNAL: the token is hostile input.

Algorithm confusion is closed on both sides: only the algorithms allowed by the settings are
accepted ("none" never is, HS* only with a configured shared secret), the key a token is checked
with comes from the family its algorithm names (HS*: the shared secret only; others: JWKS keys
of the matching type and curve only), and a JWK that states its ``alg`` accepts only that one.

JWKS from a URL are cached for a TTL and refreshed in the background once it passes, serving the
cached keys meanwhile. A token naming an unknown ``kid`` (the provider rotated its keys) makes
the gateway fetch again at once, at most once per minimum interval, so a stream of made-up kids
cannot turn the gateway into a load generator against the provider.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK

from shared.errors import FailedPrecondition, Unauthenticated, Unavailable

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
# The key type a JWK must have to verify each algorithm, and the curve for ECDSA (a P-384 key
# must not verify an ES256 token).
_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
# Longer than any sane token; gRPC caps metadata at 8 KiB by default anyway.
MAX_TOKEN_CHARS = 8192
MAX_JWKS_BYTES = 1024 * 1024


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated parts: a JWS in compact form (API keys contain no dots)."""
    return token.count(".") == 2


def _fail(reason: str, message: str, **metadata: str) -> Unauthenticated:
    return Unauthenticated(message, reason=reason, metadata={k: v[:128] for k, v in metadata.items()})


def _parse_jwks(data: Any, source: str) -> dict[str | None, dict]:
    """kid -> JWK of the signature keys of a JWKS document (keys for encryption are skipped)."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f"{source} is not a JWKS (an object with a 'keys' list)")
    keys: dict[str | None, dict] = {}
    for jwk in data["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kty"), str):
            raise ValueError(f"{source} holds a key without 'kty'")
        if jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        keys[kid if isinstance(kid, str) else None] = jwk
    return keys


def check_jwks_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if loopback:  # a local proxy or a test server; keys over plain HTTP elsewhere could be swapped
            return
    raise ValueError(f"jwt_jwks_url must be https:// (http:// only to loopback), not {url!r}")


def _fetch_jwks(url: str, timeout_s: float) -> dict[str | None, dict]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - scheme checked
        body = response.read(MAX_JWKS_BYTES + 1)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"the JWKS at {url} is larger than {MAX_JWKS_BYTES} bytes")
    return _parse_jwks(json.loads(body), url)


class JwksKeys:
    """The provider's signature keys: a JWKS file re-read when it changes, and/or a JWKS URL
    fetched with a TTL cache. Keys from both are merged (the URL's win on a shared kid)."""

    def __init__(
        self,
        file: Path | None,
        url: str,
        *,
        ttl_s: float,
        min_refresh_s: float,
        timeout_s: float,
        file_recheck_s: float = 2.0,
    ) -> None:
        if url:
            check_jwks_url(url)
        self._file, self._url = file, url
        self._ttl_s, self._min_refresh_s, self._timeout_s = ttl_s, min_refresh_s, timeout_s
        self._file_recheck_s = file_recheck_s
        self._file_keys: dict[str | None, dict] = {}
        self._file_mtime = -1.0
        self._file_checked = 0.0
        self._url_keys: dict[str | None, dict] = {}
        self._fetched_at = -float("inf")  # last successful fetch
        self._attempted_at = -float("inf")  # last fetch, successful or not
        self._lock = asyncio.Lock()
        self._background: asyncio.Task | None = None
        self.fetches = 0  # fetches attempted (for tests and logs)
        if file is not None:
            self._load_file(strict=True)

    # -- file ---------------------------------------------------------------------------------
    def _load_file(self, *, strict: bool = False) -> None:
        assert self._file is not None
        try:
            mtime = self._file.stat().st_mtime
            if mtime == self._file_mtime:
                return
            keys = _parse_jwks(json.loads(self._file.read_text(encoding="utf-8")), str(self._file))
        except (OSError, ValueError) as exc:
            if strict:
                raise FailedPrecondition(f"cannot load the JWKS file: {exc}", reason="JWKS_FILE_UNREADABLE") from None
            # A file being replaced, say: keep the keys we have and look again at the next check.
            log.warning("cannot reload the JWKS file; keeping its previous keys", extra={"error": str(exc)})
            return
        self._file_keys, self._file_mtime = keys, mtime

    def _check_file(self, *, soon: bool) -> None:
        if self._file is None:
            return
        now = time.monotonic()
        # An unknown kid may be a key added a moment ago: look again sooner, but boundedly.
        interval = min(self._file_recheck_s, 0.5) if soon else self._file_recheck_s
        if now - self._file_checked >= interval:
            self._file_checked = now
            self._load_file()

    # -- URL ----------------------------------------------------------------------------------
    async def refresh(self) -> bool:
        """Fetches the JWKS URL now unless a fetch finished while waiting for the lock or one was
        tried less than the minimum interval ago. True when the keys were (re)fetched."""
        if not self._url:
            return False
        asked = time.monotonic()
        async with self._lock:
            if self._fetched_at >= asked:
                return True  # a concurrent caller just fetched: share its result
            # With no keys at all every call fails, so retry sooner (still bounded) than when a
            # made-up kid is all that asks.
            interval = min(self._min_refresh_s, 1.0) if not self._url_keys else self._min_refresh_s
            if time.monotonic() - self._attempted_at < interval:
                return False
            self._attempted_at = time.monotonic()
            self.fetches += 1
            try:
                keys = await asyncio.to_thread(_fetch_jwks, self._url, self._timeout_s)
            except Exception as exc:  # noqa: BLE001 - network, HTTP, JSON: keep the cached keys
                log.warning("cannot fetch the JWKS", extra={"url": self._url, "error": f"{type(exc).__name__}: {exc}"})
                return False
            self._url_keys, self._fetched_at = keys, time.monotonic()
            return True

    def _refresh_in_background(self) -> None:
        if self._background is None or self._background.done():
            self._background = asyncio.get_running_loop().create_task(self.refresh(), name="memos-jwks-refresh")

    async def _current(self) -> dict[str | None, dict]:
        if self._url:
            if not self._url_keys:
                await self.refresh()  # nothing cached yet: this call has to wait for the keys
            elif time.monotonic() - self._fetched_at >= self._ttl_s:
                self._refresh_in_background()  # stale: serve the cached keys, refresh meanwhile
        return {**self._file_keys, **self._url_keys}

    async def lookup(self, kid: str | None) -> dict | None:
        """The JWK with this kid (None: the only key, when there is exactly one); a kid not
        known yet triggers a re-read of the file and a (rate-limited) fetch of the URL."""
        self._check_file(soon=False)
        keys = await self._current()
        found = _pick(keys, kid)
        if found is None:
            self._check_file(soon=True)
            await self.refresh()
            keys = {**self._file_keys, **self._url_keys}
            found = _pick(keys, kid)
        if found is None and not keys:
            raise Unavailable(
                "the identity provider's signing keys (JWKS) are not available yet", reason="JWKS_UNAVAILABLE"
            )
        return found

    @property
    def version(self) -> tuple[float, float]:
        """Changes whenever either key set is replaced (for caches of parsed keys)."""
        return (self._file_mtime, self._fetched_at)


def _pick(keys: Mapping[str | None, dict], kid: str | None) -> dict | None:
    if kid is not None:
        return keys.get(kid)
    # A token without kid is acceptable only when there is no choice to make.
    return next(iter(keys.values())) if len(keys) == 1 else None


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name that is not itself a claim walks nested objects
    (``realm_access.roles``). Names with dots (``https://example.com/roles``) are tried whole first."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _grants(value: Any, wanted: str) -> bool:
    if isinstance(value, str):
        return value == wanted or wanted in value.split()  # a space-separated "scope" string
    if isinstance(value, list):
        return wanted in value
    return False


class JwtVerifier:
    """Verifies a bearer JWT and returns who it names."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: tuple[str, ...],
        keys: JwksKeys | None,
        hmac_secret: str = "",
        leeway_s: float = 30.0,
        user_claim: str = "sub",
        admin_claim: str = "roles",
        admin_value: str = "memos-admin",
    ) -> None:
        self._issuer, self._audience = issuer, audience
        self._algorithms = frozenset(algorithms)
        self._keys = keys
        self._hmac = hmac_secret.encode() if hmac_secret else None
        self._leeway = leeway_s
        self._user_claim, self._admin_claim, self._admin_value = user_claim, admin_claim, admin_value
        self._parsed: dict[tuple[str | None, str], PyJWK] = {}
        self._parsed_version: tuple[float, float] | None = None

    @classmethod
    def from_settings(cls, s: Any) -> JwtVerifier | None:  # GatewaySettings; Any avoids an import cycle
        if not s.jwt_enabled:
            return None
        keys = None
        if s.jwt_jwks_file is not None or s.jwt_jwks_url:
            keys = JwksKeys(
                s.jwt_jwks_file,
                s.jwt_jwks_url,
                ttl_s=s.jwt_jwks_cache_ttl_s,
                min_refresh_s=s.jwt_jwks_min_refresh_interval_s,
                timeout_s=s.jwt_jwks_timeout_s,
            )
        return cls(
            issuer=s.jwt_issuer,
            audience=s.jwt_audience,
            algorithms=s.jwt_algorithm_list,
            keys=keys,
            hmac_secret=s.jwt_hmac_secret,
            leeway_s=s.jwt_leeway_s,
            user_claim=s.jwt_user_claim,
            admin_claim=s.jwt_admin_claim,
            admin_value=s.jwt_admin_value,
        )

    @property
    def keys(self) -> JwksKeys | None:
        return self._keys

    async def _key_for(self, header: Mapping[str, Any], alg: str) -> PyJWK | bytes:
        if alg in HMAC_ALGORITHMS:
            assert self._hmac is not None  # settings allow HS* only with a secret
            return self._hmac
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _fail("TOKEN_MALFORMED", "the token's kid is not a string")
        jwk = await self._keys.lookup(kid) if self._keys is not None else None
        if jwk is None:
            raise _fail(
                "TOKEN_UNKNOWN_KEY",
                "the token is signed with a key the identity provider does not publish"
                if kid is not None
                else "the token names no key (kid) and there is more than one to choose from",
                kid=kid or "",
            )
        if "alg" in jwk and jwk["alg"] != alg:
            raise _fail("TOKEN_ALG_MISMATCH", f"key {kid!r} is for {jwk['alg']}, not {alg}", kid=kid or "", alg=alg)
        if jwk.get("kty") != _KTY[alg[:2]] or (alg in _CURVE and jwk.get("crv") != _CURVE[alg]):
            raise _fail("TOKEN_ALG_MISMATCH", f"key {kid!r} cannot verify {alg}", kid=kid or "", alg=alg)
        version = self._keys.version if self._keys is not None else None
        if version != self._parsed_version:
            self._parsed, self._parsed_version = {}, version
        parsed = self._parsed.get((kid, alg))
        if parsed is None:
            try:
                parsed = PyJWK(jwk, algorithm=alg)
            except jwt.PyJWTError as exc:
                raise _fail("TOKEN_ALG_MISMATCH", f"key {kid!r} cannot verify {alg}: {exc}", kid=kid or "") from None
            self._parsed[(kid, alg)] = parsed
        return parsed

    async def authenticate(self, token: str) -> tuple[str, bool, str]:
        """(user id, is admin, key label) of a valid token; Unauthenticated otherwise."""
        if len(token) > MAX_TOKEN_CHARS:
            raise _fail("TOKEN_MALFORMED", f"the token is longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _fail("TOKEN_MALFORMED", "the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise _fail(
                "TOKEN_ALG_NOT_ALLOWED",
                f"tokens signed with {str(alg)!r} are not accepted here",
                alg=str(alg),
                allowed=",".join(sorted(self._algorithms)),
            )
        key = await self._key_for(header, alg)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _fail("TOKEN_EXPIRED", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise _fail("TOKEN_NOT_YET_VALID", "the token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidIssuerError:
            raise _fail("TOKEN_BAD_ISSUER", "the token was issued by another issuer", expected=self._issuer) from None
        except jwt.InvalidAudienceError:
            raise _fail(
                "TOKEN_BAD_AUDIENCE", "the token is meant for another audience", expected=self._audience
            ) from None
        except jwt.InvalidSignatureError:  # before DecodeError: it is one
            raise _fail("TOKEN_BAD_SIGNATURE", "the token's signature does not verify") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _fail("TOKEN_MISSING_CLAIM", f"the token has no {exc.claim!r} claim", claim=exc.claim) from None
        except jwt.InvalidAlgorithmError:
            raise _fail("TOKEN_ALG_NOT_ALLOWED", f"tokens signed with {alg!r} are not accepted here", alg=alg) from None
        except jwt.DecodeError:
            raise _fail("TOKEN_MALFORMED", "the bearer token is not a well-formed JWT") from None
        except jwt.InvalidTokenError as exc:  # iat not a number, sub not a string, ...
            raise _fail("TOKEN_INVALID", f"the token is invalid: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - hostile input must not surface as INTERNAL
            log.debug("token verification failed", exc_info=True)
            raise _fail("TOKEN_INVALID", "the token is invalid", error=type(exc).__name__) from None
        if claims.get("iss") != self._issuer:  # defence in depth: PyJWT < 2.10.1 matched substrings
            raise _fail("TOKEN_BAD_ISSUER", "the token was issued by another issuer", expected=self._issuer)
        user = _claim(claims, self._user_claim)
        if not isinstance(user, str) or not user.strip() or len(user) > 256:
            raise _fail(
                "TOKEN_MISSING_CLAIM",
                f"the token's {self._user_claim!r} claim does not name a user",
                claim=self._user_claim,
            )
        admin = _grants(_claim(claims, self._admin_claim), self._admin_value) if self._admin_claim else False
        kid = header.get("kid")
        return user, admin, f"jwt:{kid}" if isinstance(kid, str) else f"jwt:{alg}"
