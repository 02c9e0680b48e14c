"""Per-call context (request id) carried through asyncio tasks and threads."""

from __future__ import annotations

import contextvars
import uuid

REQUEST_ID_HEADER = "x-request-id"

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("memos_request_id", default="")


def current_request_id() -> str:
    return _request_id.get()


def set_request_id(value: str) -> contextvars.Token[str]:
    return _request_id.set(value)


def reset_request_id(token: contextvars.Token[str]) -> None:
    _request_id.reset(token)


def new_request_id() -> str:
    return uuid.uuid4().hex
