"""The one error hierarchy of kuamo. The server maps these to gRPC status codes in one table."""

from __future__ import annotations

import math
from collections.abc import Iterable


def shown(value: object) -> str:
    """A value as an error message shows it to a person: NaN and infinities in words, never Python's "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN (not a number)" if math.isnan(value) else ("infinity" if value > 0 else "minus infinity")
    return repr(value) if isinstance(value, str) else str(value)


def names(items: Iterable[object]) -> str:
    """Names listed in words ("a, b, c"), never a Python list repr."""
    return ", ".join(str(i) for i in items) or "none"


class KuamoError(Exception):
    """Base class; `field` names the request field at fault when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class InvalidInput(KuamoError):
    """The caller sent something we cannot use (maps to INVALID_ARGUMENT)."""


class NotFound(KuamoError):
    """A product, user or file that was asked for does not exist (NOT_FOUND)."""


class Overloaded(KuamoError):
    """A bounded queue is full; retry later (RESOURCE_EXHAUSTED)."""


class NotReady(KuamoError):
    """Models are not loaded or warm yet, or the server is draining (UNAVAILABLE)."""


class Unauthenticated(KuamoError):
    """Missing or wrong credentials (UNAUTHENTICATED)."""


class ArtifactError(KuamoError):
    """A model artifact is missing, corrupt or does not match its manifest (FAILED_PRECONDITION)."""


class BackendUnavailable(NotReady):
    """The catalog backend (e.g. Milvus) cannot be reached; the message names it (UNAVAILABLE)."""


class Unsupported(KuamoError):
    """The request needs something this deployment does not have, e.g. personalisation on the Milvus backend
    (FAILED_PRECONDITION)."""
