"""Mapping between :mod:`shared.errors` and gRPC's rich status.

On the wire an error is a gRPC status code plus a ``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer whose details hold one ``ErrorInfo``.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from shared.errors import ERROR_DOMAIN, Code, MemosError, error_for_code

_DETAILS_KEY = "grpc-status-details-bin"


def to_status_proto(err: MemosError) -> status_pb2.Status:
    """The ``google.rpc.Status`` for ``err``, with its ``ErrorInfo``."""
    info = error_details_pb2.ErrorInfo(
        reason=err.reason,
        domain=ERROR_DOMAIN,
        metadata={**err.metadata, "retriable": "true" if err.retriable else "false"},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=int(err.code), message=err.message, details=[detail])


def ok_status_proto() -> status_pb2.Status:
    return status_pb2.Status(code=0, message="")


def grpc_code(code: Code) -> grpc.StatusCode:
    for sc in grpc.StatusCode:
        if sc.value[0] == int(code):
            return sc
    return grpc.StatusCode.UNKNOWN


def trailing_metadata_for(err: MemosError) -> tuple[tuple[str, bytes], ...]:
    return ((_DETAILS_KEY, to_status_proto(err).SerializeToString()),)


def from_status_proto(status: status_pb2.Status) -> MemosError:
    """Rebuilds the error a peer reported from its ``google.rpc.Status``."""
    code = Code(status.code) if status.code in Code._value2member_map_ else Code.UNKNOWN
    reason = code.name
    metadata: dict[str, str] = {}
    retriable = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason or reason
            metadata = dict(info.metadata)
            if "retriable" in metadata:
                retriable = metadata.pop("retriable") == "true"
    cls = error_for_code(code)
    err = cls(status.message, reason=reason, metadata=metadata, retriable=retriable)
    err.code = code  # keep unusual codes (e.g. CANCELLED) as they were
    return err


def from_rpc_error(exc: grpc.RpcError) -> MemosError:
    """Turns a failed call's error into a :class:`MemosError`.

    Uses the rich status when the peer sent one; otherwise the bare code and
    details (as sent by gRPC itself: deadline, message too large, unavailable).
    """
    status = None
    try:
        status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    except (ValueError, TypeError, AttributeError, DecodeError):  # a malformed trailer is treated as absent
        status = None
    if status is not None:
        return from_status_proto(status)
    code_enum = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    code = Code(code_enum.value[0])
    details = exc.details() if hasattr(exc, "details") else str(exc)
    cls = error_for_code(code)
    err = cls(details or code.name, reason=code.name)
    err.code = code
    return err
