"""One error model for every service.

Domain code raises :class:`MemosError` subclasses; it never imports gRPC. The
server interceptor turns them into a ``google.rpc.Status`` carrying an
``ErrorInfo`` (reason, domain, metadata) and clients turn such a status back
into the same classes, so a caller can tell an input error (fix the request)
from a retriable one (try again later) without parsing messages.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

ERROR_DOMAIN = "memos.dev"


class Code(enum.IntEnum):
    """Canonical status codes (same numbers as google.rpc.Code)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# Codes for which the same request may succeed if simply sent again.
RETRIABLE_CODES = frozenset({Code.UNAVAILABLE, Code.ABORTED, Code.DEADLINE_EXCEEDED})


class MemosError(Exception):
    """Base of every error a memos service reports to its callers.

    ``reason`` is a stable UPPER_SNAKE identifier clients can switch on;
    ``message`` is for humans; ``metadata`` holds the offending field, limit,
    id and the like.
    """

    code: Code = Code.INTERNAL
    default_reason: str = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retriable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self._retriable = retriable

    @property
    def retriable(self) -> bool:
        """Whether sending the same request again may succeed."""
        if self._retriable is not None:
            return self._retriable
        return self.code in RETRIABLE_CODES

    def __str__(self) -> str:
        return f"{self.code.name}: {self.reason}: {self.message}"


class InvalidArgument(MemosError):
    code = Code.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(MemosError):
    code = Code.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(MemosError):
    code = Code.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class PermissionDenied(MemosError):
    code = Code.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Unauthenticated(MemosError):
    code = Code.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class ResourceExhausted(MemosError):
    code = Code.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class FailedPrecondition(MemosError):
    code = Code.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(MemosError):
    code = Code.ABORTED
    default_reason = "ABORTED"


class DeadlineExceeded(MemosError):
    code = Code.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unavailable(MemosError):
    code = Code.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class Unimplemented(MemosError):
    code = Code.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"


class Internal(MemosError):
    code = Code.INTERNAL
    default_reason = "INTERNAL"


_BY_CODE: dict[Code, type[MemosError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        DeadlineExceeded,
        Unavailable,
        Unimplemented,
        Internal,
    )
}


def error_for_code(code: Code) -> type[MemosError]:
    """The error class that reports ``code`` (Internal for unusual codes)."""
    return _BY_CODE.get(code, Internal)
