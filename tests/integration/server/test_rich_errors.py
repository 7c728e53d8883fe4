"""Every non-OK answer carries a google.rpc.Status: over gRPC in the grpc-status-details-bin trailer, over HTTP in
the JSON error body. The field paths of BadRequest.FieldViolation run from the request message; ErrorInfo has a
reason and the domain; RetryInfo comes with RESOURCE_EXHAUSTED (and Retry-After over HTTP)."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from conftest import start_server
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from http_stub import HttpRpcError, HttpStub, error_info, field_violations
from server_thread import ServerThread

from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb

# (call, the FieldViolation's field path): the engine's field, placed in the request message
BAD: list[tuple[str, Callable[[Any], Any], str]] = [
    ("search-k", lambda s: s.Search(pb.SearchRequest(query=pb.Query(text="red", k=0))), "query.k"),
    ("search-price-min", lambda s: s.Search(pb.SearchRequest(query=pb.Query(
        text="red", filters=pb.Filters(price_min=-1.0)))), "query.filters.price_min"),
    ("search-weight-nan", lambda s: s.Search(pb.SearchRequest(query=pb.Query(
        text="red", weights={"text": math.nan}))), "query.weights"),
    ("search-bad-photo", lambda s: s.Search(pb.SearchRequest(query=pb.Query(image=b"GIF89a\x00"))), "query.image"),
    ("search-nothing", lambda s: s.Search(pb.SearchRequest(query=pb.Query())), "query"),
    ("embed-second-text", lambda s: s.Embed(pb.EmbedRequest(texts=["red", " "])), "texts[1]"),
    ("embed-bad-photo", lambda s: s.Embed(pb.EmbedRequest(images=[b"\x89PNG\r\n\x1a\n"])), "images"),
    ("recommend-k", lambda s: s.Recommend(pb.RecommendRequest(k=-1)), "k"),
    ("get-key", lambda s: s.GetProduct(pb.GetProductRequest(key="a\nb")), "key"),
    ("delete-nothing", lambda s: s.Delete(pb.DeleteRequest()), "ids"),
    ("forget-nobody", lambda s: s.ForgetUser(pb.ForgetUserRequest()), "user_id"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    s = start_server(tmp_path_factory.mktemp("rich"), http_port=0).load()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def http_stub(server: ServerThread) -> HttpStub:
    return HttpStub(server.server.http_port, pb)


def grpc_status_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, Any]:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code(), rpc_status.from_call(e.value)  # type: ignore[arg-type]


def http_status_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, Any]:
    with pytest.raises(HttpRpcError) as e:
        call()
    return e.value.code(), e.value.status()


def plain_words(message: str) -> None:
    for leak in ("0x", "object at", "Traceback", "nan", "['", "OSError"):
        assert leak not in message, message


@pytest.mark.parametrize(("name", "call", "path"), BAD, ids=[b[0] for b in BAD])
def test_field_violation_paths_over_grpc_and_http(stub, http_stub: HttpStub, name: str, call: Callable,
                                                  path: str) -> None:
    for status_of, s in ((grpc_status_of, stub), (http_status_of, http_stub)):
        code, status = status_of(lambda s=s: call(s))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and status is not None
        assert field_violations(status) == [path]
        info = error_info(status)
        assert info is not None and (info.reason, info.domain) == ("INVALID_INPUT", "kuamo.dev")
        assert info.metadata["field"] == path
        plain_words(status.message)


def test_not_found_has_error_info_and_no_field_violation(stub, http_stub: HttpStub) -> None:
    for status_of, s in ((grpc_status_of, stub), (http_status_of, http_stub)):
        code, status = status_of(lambda s=s: s.GetProduct(pb.GetProductRequest(id=424242)))
        assert code == grpc.StatusCode.NOT_FOUND and field_violations(status) == []
        assert error_info(status).reason == "NOT_FOUND"


def retry_delay(status: Any) -> float | None:
    for d in status.details:
        if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            d.Unpack(info)
            return info.retry_delay.ToMilliseconds() / 1000
    return None


def test_resource_exhausted_says_when_to_retry(server: ServerThread, stub, http_stub: HttpStub) -> None:
    icpt = server.server.interceptor
    before, icpt.inflight = icpt.inflight, icpt.max_inflight  # as if the server were full
    try:
        request = pb.SearchRequest(query=pb.Query(text="red", k=1))
        for status_of, s in ((grpc_status_of, stub), (http_status_of, http_stub)):
            code, status = status_of(lambda s=s: s.Search(request))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and error_info(status).reason == "OVERLOADED"
            assert retry_delay(status) == 0.5
        req = urllib.request.Request(f"http://127.0.0.1:{server.server.http_port}/v1/Search", method="POST",
                                     data=json.dumps({"query": {"text": "red"}}).encode())
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 429 and e.value.headers["Retry-After"] == "1"
        body = json.loads(e.value.read())["error"]
        assert {d["@type"].rsplit("/", 1)[1] for d in body["details"]} == {"google.rpc.ErrorInfo",
                                                                           "google.rpc.RetryInfo"}
    finally:
        icpt.inflight = before


def test_http_error_body_is_google_style(server: ServerThread) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{server.server.http_port}/v1/Search", method="POST",
                                 data=json.dumps({"query": {"text": "red", "k": 0}}).encode())
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    err = json.loads(e.value.read())["error"]
    assert (err["code"], err["status"], err["field"]) == (400, "INVALID_ARGUMENT", "query.k")
    bad = next(d for d in err["details"] if d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
    assert bad["fieldViolations"] == [{"field": "query.k", "description": err["message"]}]
