"""shared/errors.py and shared/grpc_errors.py: MemosError <-> google.rpc.Status."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from shared import errors
from shared.errors import ERROR_DOMAIN, Code, MemosError, error_for_code
from shared.grpc_errors import (
    from_rpc_error,
    from_status_proto,
    grpc_code,
    to_status_proto,
    trailing_metadata_for,
)

ERROR_CLASSES = [
    (errors.InvalidArgument, Code.INVALID_ARGUMENT, False),
    (errors.NotFound, Code.NOT_FOUND, False),
    (errors.AlreadyExists, Code.ALREADY_EXISTS, False),
    (errors.PermissionDenied, Code.PERMISSION_DENIED, False),
    (errors.Unauthenticated, Code.UNAUTHENTICATED, False),
    (errors.ResourceExhausted, Code.RESOURCE_EXHAUSTED, False),
    (errors.FailedPrecondition, Code.FAILED_PRECONDITION, False),
    (errors.Aborted, Code.ABORTED, True),
    (errors.DeadlineExceeded, Code.DEADLINE_EXCEEDED, True),
    (errors.Unavailable, Code.UNAVAILABLE, True),
    (errors.Unimplemented, Code.UNIMPLEMENTED, False),
    (errors.Internal, Code.INTERNAL, False),
]
IDS = [c[0].__name__ for c in ERROR_CLASSES]


@pytest.mark.parametrize(("cls", "code", "retriable"), ERROR_CLASSES, ids=IDS)
def test_each_class_has_its_code_default_reason_and_retriability(
    cls: type[MemosError], code: Code, retriable: bool
) -> None:
    err = cls("something happened")
    assert err.code == code
    assert err.reason == code.name
    assert err.retriable is retriable
    assert err.metadata == {}
    assert error_for_code(code) is cls
    assert str(err) == f"{code.name}: {code.name}: something happened"


@pytest.mark.parametrize("code", [Code.OK, Code.CANCELLED, Code.UNKNOWN, Code.OUT_OF_RANGE, Code.DATA_LOSS])
def test_unusual_codes_map_to_internal(code: Code) -> None:
    assert error_for_code(code) is errors.Internal


def test_explicit_retriable_overrides_the_code_default() -> None:
    assert errors.InvalidArgument("x", retriable=True).retriable is True
    assert errors.Unavailable("x", retriable=False).retriable is False


def test_metadata_keys_and_values_become_strings() -> None:
    err = errors.InvalidArgument("x", reason="TOO_BIG", metadata={"limit": 10, 3: None})
    assert err.metadata == {"limit": "10", "3": "None"}
    assert err.reason == "TOO_BIG"


@pytest.mark.parametrize(("cls", "code", "retriable"), ERROR_CLASSES, ids=IDS)
@pytest.mark.parametrize("explicit", [None, True, False])
def test_status_round_trip_keeps_class_code_reason_message_metadata_and_retriable(
    cls: type[MemosError], code: Code, retriable: bool, explicit: bool | None
) -> None:
    err = cls("ünïcode message", reason="SOME_REASON", metadata={"field": "cube_id", "limit": "5"}, retriable=explicit)

    status = to_status_proto(err)
    back = from_status_proto(status_pb2.Status.FromString(status.SerializeToString()))

    assert type(back) is cls
    assert back.code == code
    assert back.reason == "SOME_REASON"
    assert back.message == "ünïcode message"
    assert back.metadata == {"field": "cube_id", "limit": "5"}
    assert back.retriable is (retriable if explicit is None else explicit)


def test_status_proto_carries_one_error_info_of_our_domain() -> None:
    status = to_status_proto(errors.NotFound("gone", reason="MEMORY_NOT_FOUND", metadata={"memory_id": "m1"}))
    assert status.code == Code.NOT_FOUND
    assert status.message == "gone"
    [detail] = status.details
    info = error_details_pb2.ErrorInfo()
    assert detail.Unpack(info)
    assert info.reason == "MEMORY_NOT_FOUND"
    assert info.domain == ERROR_DOMAIN
    assert dict(info.metadata) == {"memory_id": "m1", "retriable": "false"}


def test_status_without_details_uses_code_name_and_default_retriable() -> None:
    back = from_status_proto(status_pb2.Status(code=Code.UNAVAILABLE, message="down"))
    assert type(back) is errors.Unavailable
    assert (back.reason, back.message, back.metadata, back.retriable) == ("UNAVAILABLE", "down", {}, True)


def test_status_with_foreign_details_is_read_as_bare() -> None:
    other = any_pb2.Any()
    other.Pack(error_details_pb2.RetryInfo())
    back = from_status_proto(status_pb2.Status(code=Code.NOT_FOUND, message="x", details=[other]))
    assert type(back) is errors.NotFound and back.reason == "NOT_FOUND"


def test_unusual_and_unknown_codes_are_kept() -> None:
    cancelled = from_status_proto(status_pb2.Status(code=Code.CANCELLED, message="bye"))
    assert isinstance(cancelled, errors.Internal)
    assert cancelled.code == Code.CANCELLED
    assert cancelled.retriable is False
    unknown = from_status_proto(status_pb2.Status(code=99, message="?"))
    assert unknown.code == Code.UNKNOWN


@pytest.mark.parametrize("code", list(Code))
def test_grpc_code_has_the_same_number(code: Code) -> None:
    assert grpc_code(code).value[0] == int(code)


# from_rpc_error ---------------------------------------------------------------------------
class FakeRpcError(grpc.RpcError, grpc.Call):
    """What a failed call raises: code, details and trailing metadata."""

    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple = ()) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return self._trailers

    def initial_metadata(self) -> tuple:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


def test_from_rpc_error_reads_the_rich_status() -> None:
    err = errors.PermissionDenied("no access", reason="NOT_CUBE_OWNER", metadata={"cube_id": "c"})
    exc = FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "no access", trailing_metadata_for(err))
    back = from_rpc_error(exc)
    assert type(back) is errors.PermissionDenied
    assert (back.reason, back.message, back.metadata) == ("NOT_CUBE_OWNER", "no access", {"cube_id": "c"})


@pytest.mark.parametrize(
    ("code", "cls", "retriable"),
    [
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded, True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted, False),
        (grpc.StatusCode.CANCELLED, errors.Internal, False),
    ],
)
def test_from_rpc_error_without_rich_status_uses_the_bare_code(
    code: grpc.StatusCode, cls: type[MemosError], retriable: bool
) -> None:
    back = from_rpc_error(FakeRpcError(code, "transport says no"))
    assert type(back) is cls
    assert back.code == Code(code.value[0])
    assert back.reason == code.name
    assert back.message == "transport says no"
    assert back.retriable is retriable


def test_from_rpc_error_with_a_status_that_contradicts_the_call_falls_back() -> None:
    trailer = trailing_metadata_for(errors.NotFound("gone"))
    back = from_rpc_error(FakeRpcError(grpc.StatusCode.UNAVAILABLE, "proxy down", trailer))
    assert type(back) is errors.Unavailable
    assert back.message == "proxy down"


def test_from_rpc_error_with_a_corrupt_trailer_falls_back_to_the_code() -> None:
    exc = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "down", (("grpc-status-details-bin", b"\xff\xff\xff"),))
    back = from_rpc_error(exc)
    assert type(back) is errors.Unavailable and back.message == "down"
