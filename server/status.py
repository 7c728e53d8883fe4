"""The one table from kuamo's error types to gRPC status codes."""

from __future__ import annotations

import grpc

from kuamo.engine.errors import (
    ArtifactError,
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


def status_of(exc: KuamoError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.INTERNAL
