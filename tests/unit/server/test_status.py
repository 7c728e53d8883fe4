"""server/status.py: the google.rpc.Status of each error type (the one table), without a server."""

from __future__ import annotations

import grpc
import pytest
from http_stub import error_info, field_violations

from kuamo.engine.errors import BackendUnavailable, InvalidInput, NotFound, NotReady, Overloaded, Unsupported
from kuamo.server.status import retry_after_s, status_for, within


@pytest.mark.parametrize(("exc", "code", "reason", "retry"), [
    (InvalidInput("k must be ...", field="k"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_INPUT", None),
    (NotFound("no product", field="id"), grpc.StatusCode.NOT_FOUND, "NOT_FOUND", None),
    (Overloaded("full"), grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", 0.5),
    (NotReady("starting"), grpc.StatusCode.UNAVAILABLE, "NOT_READY", 2.0),
    (BackendUnavailable("milvus at x is down"), grpc.StatusCode.UNAVAILABLE, "BACKEND_UNAVAILABLE", 5.0),
    (Unsupported("no personalisation here"), grpc.StatusCode.FAILED_PRECONDITION, "UNSUPPORTED", None),
])
def test_each_error_type_has_its_reason_and_retry(exc, code, reason, retry) -> None:  # type: ignore[no-untyped-def]
    st = status_for(exc)
    assert st.code == code.value[0] and st.message == str(exc)
    info = error_info(st)
    assert info is not None and (info.reason, info.domain) == (reason, "kuamo.dev")
    assert retry_after_s(st) == retry
    assert field_violations(st) == (["k"] if code == grpc.StatusCode.INVALID_ARGUMENT else [])


def test_within_places_the_field_in_the_request_and_keeps_the_message() -> None:
    exc = within(InvalidInput("must be >= 0", field="filters.price_min"), "query")
    assert field_violations(status_for(exc)) == ["query.filters.price_min"]
    assert str(exc) == "filters.price_min: must be >= 0"
    assert field_violations(status_for(within(InvalidInput("x", field="query"), "query"))) == ["query"]


def test_lone_surrogates_cannot_break_the_status() -> None:
    st = status_for(InvalidInput("attribute '\ud800' is unknown", field="filters.attributes.\ud800"))
    st.SerializeToString()  # would raise on a surrogate
    assert "\\ud800" in st.message
