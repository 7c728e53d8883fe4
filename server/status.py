"""The one table from kuamo's error types to gRPC status codes, and the google.rpc.Status every non-OK answer
carries (gRPC: the grpc-status-details-bin trailer; HTTP: the JSON error body), so that clients in any language
read the field at fault, a machine-readable reason and when to retry without parsing the message:

- ErrorInfo on every error: reason (UPPER_SNAKE_CASE, from REASON_OF), domain ERROR_DOMAIN, metadata (field, ref).
- BadRequest with one FieldViolation (field path + description) on INVALID_ARGUMENT naming a field.
- RetryInfo on RESOURCE_EXHAUSTED and UNAVAILABLE: the server is full or still starting; the same request may
  succeed after the delay.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from kuamo.engine.errors import (
    ArtifactError,
    BackendUnavailable,
    InvalidInput,
    KuamoError,
    NotFound,
    NotReady,
    Overloaded,
    Unauthenticated,
    Unsupported,
)

STATUS_OF: dict[type[KuamoError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    ArtifactError: grpc.StatusCode.FAILED_PRECONDITION,
    Unsupported: grpc.StatusCode.FAILED_PRECONDITION,
}

ERROR_DOMAIN = "kuamo.dev"
# ErrorInfo.reason per error type: stable names a client may switch on (the message is for people)
REASON_OF: dict[type[KuamoError], str] = {
    InvalidInput: "INVALID_INPUT",
    NotFound: "NOT_FOUND",
    Overloaded: "OVERLOADED",
    BackendUnavailable: "BACKEND_UNAVAILABLE",
    NotReady: "NOT_READY",
    Unauthenticated: "UNAUTHENTICATED",
    ArtifactError: "MODEL_ARTIFACT",
    Unsupported: "UNSUPPORTED",
}
# How long a client should wait before sending the same request again: a full admission queue drains in well
# under a second; a starting server loads its models in seconds; a lost backend comes back on its own schedule.
RETRY_DELAY_S: dict[str, float] = {"OVERLOADED": 0.5, "NOT_READY": 2.0, "BACKEND_UNAVAILABLE": 5.0}


def status_of(exc: KuamoError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.INTERNAL


def reason_of(exc: KuamoError) -> str:
    for cls in type(exc).__mro__:
        if cls in REASON_OF:
            return REASON_OF[cls]
    return "INTERNAL"


def field_path(exc: KuamoError) -> str | None:
    """The field at fault as a path from the request message (within() sets it where the engine's field is
    relative to a sub-message, e.g. Query's "k" is SearchRequest's "query.k"), else the engine's own name."""
    return getattr(exc, "field_path", None) or exc.field


def within(exc: KuamoError, parent: str, top_level: frozenset[str] = frozenset()) -> KuamoError:
    """Mark the engine's field as relative to `parent` in the request (names in `top_level` are already
    request fields). The message keeps the engine's short name: clients and tests read it as it was."""
    f = exc.field
    if f and f not in top_level and f != parent and not f.startswith(f"{parent}."):
        exc.field_path = f"{parent}.{f}"  # type: ignore[attr-defined]
    return exc


def renamed(exc: KuamoError, names: dict[str, str]) -> KuamoError:
    """Give the engine's field its name in this request (e.g. an Embed photo's "image" is "images")."""
    path = field_path(exc)
    if path in names:
        exc.field_path = names[path]  # type: ignore[attr-defined]
    return exc


def _pack(msg: object) -> any_pb2.Any:
    a = any_pb2.Any()
    a.Pack(msg)  # type: ignore[arg-type]
    return a


def utf8(text: str) -> str:
    """Text a message may carry: a request's lone surrogates (JSON allows "\\ud800") become escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def rich_status(code: grpc.StatusCode, message: str, *, reason: str, field: str | None = None,
                metadata: dict[str, str] | None = None) -> status_pb2.Status:
    """google.rpc.Status with the details listed at the top of this module."""
    message, field = utf8(message), None if field is None else utf8(field)
    meta = {**({"field": field} if field else {}), **(metadata or {})}
    details = [_pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=meta))]
    if code == grpc.StatusCode.INVALID_ARGUMENT and field:
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=message)])))
    delay = RETRY_DELAY_S.get(reason)
    if delay is not None and code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
        d = duration_pb2.Duration()
        d.FromMilliseconds(int(delay * 1000))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=d)))
    return status_pb2.Status(code=code.value[0], message=message, details=details)


def status_for(exc: KuamoError) -> status_pb2.Status:
    return rich_status(status_of(exc), str(exc), reason=reason_of(exc), field=field_path(exc))


def retry_after_s(status: status_pb2.Status) -> float | None:
    """The RetryInfo delay of a status, if it has one (the HTTP gateway's Retry-After)."""
    for d in status.details:
        if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            d.Unpack(info)
            return info.retry_delay.ToMilliseconds() / 1000
    return None
