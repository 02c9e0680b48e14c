"""API-key authentication at the gateway.

Keys look like ``memos_<key id>_<secret>``; the gateway stores only the SHA-256 of each
whole key (a file of key records, ``MEMOS_API_KEYS_FILE``). A plain hash is enough here,
unlike for passwords: the secret is 32 random bytes, so there is nothing to guess and no
reason to pay for a slow hash on every call. A key belongs to one user (it may act only
as that user) or has the admin role (it may act as any user). Rotation: give a user a
second key, move clients over, then disable or remove the first; the file is re-read
when it changes, so no restart is needed.

    python -m services.gateway.auth create --file keys.json --user alice [--role admin]
    python -m services.gateway.auth disable --file keys.json --key-id <id>

Callers send ``authorization: Bearer <key>`` (or ``x-api-key: <key>``). Without a valid key
a call fails UNAUTHENTICATED; a key used for another user's ``user_id`` gets
PERMISSION_DENIED. Health and reflection are separate services and stay open.

With OIDC configured (``MEMOS_JWT_*``, services/gateway/jwt_auth.py), ``authorization: Bearer``
may also carry a JWT from the identity provider; it becomes the same :class:`Principal` (its
user claim is the user, its admin claim the admin role), so the same checks apply. Both may be
on at once: an API key starts with ``memos_`` and has no dots, a JWT has exactly two.
"""

from __future__ import annotations

import argparse
import contextvars
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.gateway.jwt_auth import JwtVerifier, looks_like_jwt
from shared.errors import FailedPrecondition, PermissionDenied, Unauthenticated

KEY_PREFIX = "memos_"
ROLES = ("user", "admin")


@dataclass(frozen=True)
class Principal:
    """Who a call is made by."""

    key_id: str
    user_id: str
    role: str
    # "api_key" or "jwt": what the caller authenticated with (for messages).
    kind: str = "api_key"

    def may_act_as(self, user_id: str) -> bool:
        return self.role == "admin" or hmac.compare_digest(self.user_id, user_id)


_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("memos_principal", default=None)


def current_principal() -> Principal | None:
    """The authenticated caller of the current call; None when authentication is off."""
    return _principal.get()


def check_acting_user(user_id: str) -> None:
    """Refuses a call whose ``user_id`` is not the caller's (admins may act for anyone)."""
    principal = _principal.get()
    if principal is not None and not principal.may_act_as(user_id):
        raise PermissionDenied(
            f"this {'token' if principal.kind == 'jwt' else 'API key'} may act only as its own user",
            reason="USER_MISMATCH",
            metadata={"key_id": principal.key_id},
        )


def key_hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def split_key(key: str) -> str:
    """The key id of a well-formed key; Unauthenticated otherwise."""
    if not key.startswith(KEY_PREFIX):
        raise Unauthenticated("malformed API key", reason="BAD_API_KEY")
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or not key_id or not secret:
        raise Unauthenticated("malformed API key", reason="BAD_API_KEY")
    return key_id


class ApiKeyStore:
    """Key records from a JSON file, re-read when the file changes (checked every few seconds)."""

    def __init__(self, path: Path, *, recheck_s: float = 2.0) -> None:
        self.path = path
        self._recheck_s = recheck_s
        self._lock = threading.Lock()
        self._records: dict[str, dict] = {}
        self._mtime = -1.0
        self._checked = 0.0
        self._load()

    def _load(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            raise FailedPrecondition(
                f"API keys file {self.path} does not exist", reason="API_KEYS_FILE_MISSING"
            ) from None
        if stat.st_mtime == self._mtime:
            return
        data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        records = {r["id"]: r for r in data.get("keys", [])}
        for r in records.values():
            if (
                r.get("role", "user") not in ROLES
                or not r.get("user_id")
                or not str(r.get("hash", "")).startswith("sha256:")
            ):
                raise FailedPrecondition(f"bad API key record {r.get('id')!r}", reason="BAD_API_KEY_RECORD")
        self._records, self._mtime = records, stat.st_mtime

    def _fresh(self, unknown_key: bool = False) -> dict[str, dict]:
        now = time.monotonic()
        # An unknown key id may be a key created a moment ago: look again sooner (bounded, so
        # a stream of made-up keys costs a stat every half second at most).
        interval = min(self._recheck_s, 0.5) if unknown_key else self._recheck_s
        with self._lock:
            if now - self._checked >= interval:
                self._checked = now
                self._load()
            return self._records

    def authenticate(self, key: str) -> Principal:
        key_id = split_key(key)
        record = self._fresh().get(key_id)
        if record is None:
            record = self._fresh(unknown_key=True).get(key_id)
        # Compare even when the id is unknown, so that timing does not tell which ids exist.
        expected = record["hash"] if record else key_hash(KEY_PREFIX + "unknown_" + "0" * 43)
        if not hmac.compare_digest(expected, key_hash(key)) or record is None:
            raise Unauthenticated("unknown API key", reason="UNKNOWN_API_KEY")
        if record.get("disabled"):
            raise Unauthenticated("this API key is disabled", reason="API_KEY_DISABLED", metadata={"key_id": key_id})
        return Principal(key_id, record["user_id"], record.get("role", "user"))


def key_from_metadata(metadata: Sequence[tuple[str, str | bytes]]) -> str:
    for name, value in metadata:
        if isinstance(value, bytes):
            continue
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == "x-api-key" and value.strip():
            return value.strip()
    raise Unauthenticated("an API key is required (authorization: Bearer <key>)", reason="MISSING_API_KEY")


def credential_from_metadata(metadata: Sequence[tuple[str, str | bytes]]) -> tuple[str, str] | None:
    """("bearer" | "x-api-key", credential) of a call, or None when it carries neither."""
    for name, value in metadata:
        if isinstance(value, bytes):
            continue
        if name == "authorization":
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return "bearer", token.strip()
        elif name == "x-api-key" and value.strip():
            return "x-api-key", value.strip()
    return None


class Authenticator:
    """Authenticates a call's metadata and makes the caller the current principal."""

    def __init__(self, store: ApiKeyStore | None, jwt_verifier: JwtVerifier | None = None) -> None:
        self._store = store
        self._jwt = jwt_verifier

    async def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> None:
        if self._store is None and self._jwt is None:
            return
        found = credential_from_metadata(metadata or ())
        if found is None:
            if self._store is not None:  # the reason API-key clients already know
                raise Unauthenticated(
                    "an API key is required (authorization: Bearer <key>)"
                    + (" or a token from the identity provider" if self._jwt is not None else ""),
                    reason="MISSING_API_KEY",
                )
            raise Unauthenticated("a bearer token is required (authorization: Bearer <jwt>)", reason="MISSING_TOKEN")
        header, credential = found
        if self._jwt is not None and header == "bearer" and (self._store is None or looks_like_jwt(credential)):
            user_id, admin, label = await self._jwt.authenticate(credential)
            _principal.set(Principal(label, user_id, "admin" if admin else "user", kind="jwt"))
            return
        if self._store is None:
            raise Unauthenticated("API keys are not accepted here; send a bearer token", reason="MISSING_TOKEN")
        _principal.set(self._store.authenticate(credential))


# -- administration ------------------------------------------------------------------------
def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"keys": []}


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)  # atomic: the gateway never reads half a file


def create_key(path: Path, user_id: str, role: str = "user") -> str:
    """Adds a key for ``user_id`` and returns it; only its hash is stored."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    data = _read(path)
    data["keys"].append(
        {"id": key_id, "hash": key_hash(key), "user_id": user_id, "role": role, "created_at": int(time.time())}
    )
    _write(path, data)
    return key


def disable_key(path: Path, key_id: str) -> bool:
    data = _read(path)
    found = False
    for record in data["keys"]:
        if record["id"] == key_id:
            record["disabled"] = True
            found = True
    _write(path, data)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m services.gateway.auth", description="Manage gateway API keys.")
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("create", help="create a key (printed once; only its hash is stored)")
    c.add_argument("--file", type=Path, required=True)
    c.add_argument("--user", required=True)
    c.add_argument("--role", choices=ROLES, default="user")
    d = sub.add_parser("disable", help="disable a key by id")
    d.add_argument("--file", type=Path, required=True)
    d.add_argument("--key-id", required=True)
    args = ap.parse_args(argv)
    if args.command == "create":
        print(create_key(args.file, args.user, args.role))
        return 0
    if not disable_key(args.file, args.key_id):
        print(f"no key {args.key_id!r} in {args.file}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
