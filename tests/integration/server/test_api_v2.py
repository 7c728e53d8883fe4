"""kuamo.v2 beside kuamo.v1 on one server and engine: every v2 RPC over gRPC and over HTTP (/v2/<Rpc>), the two
answers equal, and each compared with v1's answer to the same request (ids as strings, enums, Timestamp,
Struct, one response message per RPC). Reflection and health list both services."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from conftest import start_server
from fake_encoders import png
from google.protobuf import json_format, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from http_stub import HttpRpcError, HttpStub, field_violations
from server_thread import ServerThread

from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb1
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb1_grpc
from kuamo.proto.kuamo.v2 import kuamo_pb2 as pb2
from kuamo.proto.kuamo.v2 import kuamo_pb2_grpc as pb2_grpc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    s = start_server(tmp_path_factory.mktemp("v2"), http_port=0).load()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


@pytest.fixture(scope="module")
def v1(channel: grpc.Channel) -> pb1_grpc.SearchServiceStub:
    return pb1_grpc.SearchServiceStub(channel)


@pytest.fixture(scope="module")
def v2(channel: grpc.Channel) -> pb2_grpc.SearchServiceStub:
    return pb2_grpc.SearchServiceStub(channel)


@pytest.fixture(scope="module")
def v2_http(server: ServerThread) -> HttpStub:
    return HttpStub(server.server.http_port, pb2, prefix="/v2")


def as_json(msg: Any) -> Any:
    if isinstance(msg, list):
        return [as_json(m) for m in msg]
    d = json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)
    d.pop("timings", None)  # server-side times differ between two calls
    return d


def rounded(x: Any) -> Any:
    """Scores to 5 decimals: queries searched together in one matrix (a stream's) and alone (HTTP's, one by one)
    differ in the last float32 bits of the inner product (BLAS), ~6e-8."""
    if isinstance(x, dict):
        return {k: round(v, 5) if k == "score" else rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v) for v in x]
    return x


def both(v2: Any, v2_http: HttpStub, rpc: str, request: Any) -> Any:
    """The v2 answer over gRPC, after checking that HTTP gives the same."""
    got = getattr(v2, rpc)(request) if rpc not in ("Upsert", "RecordEvents", "SearchStream") else \
        getattr(v2, rpc)(iter(request))
    if rpc == "SearchStream":
        got = list(got)
    over_http = v2_http.call(rpc, request)
    assert rounded(as_json(over_http)) == rounded(as_json(got)), rpc
    return got


def hits_v1(r: pb1.SearchResponse) -> list[tuple]:
    return [(h.key, round(h.score, 6), h.product.title, h.product.category, dict(h.explanation.contributions))
            for h in r.hits]


def hits_v2(r: Any) -> list[tuple]:
    return [(h.id, round(h.score, 6), h.product.title, h.product.category, dict(h.explanation.contributions))
            for h in r.hits]


def test_search_and_recommend_equal_v1(v1, v2, v2_http) -> None:
    q1 = pb1.Query(text="red dress", k=5, explain=True, weights={"text": 1.0},
                   filters=pb1.Filters(category_prefix="Apparel", ids=[1000, 1005, 1010], price_max=40.0))
    q2 = pb2.Query(text="red dress", k=5, explain=True, weights=pb2.Weights(text=1.0),
                   filters=pb2.Filters(category_prefix="Apparel", ids=["1000", "1005", "1010"], price_max=40.0))
    want = v1.Search(pb1.SearchRequest(request_id="a", query=q1))
    got = both(v2, v2_http, "Search", pb2.SearchRequest(request_id="a", query=q2))
    assert got.request_id == "a" and hits_v2(got) == hits_v1(want) and got.allowed == want.allowed == 3
    want = v1.Recommend(pb1.RecommendRequest(positives=[pb1.Example(id=1000)], negatives=[pb1.Example(key="1003")],
                                             k=4, explain=True))
    got = both(v2, v2_http, "Recommend", pb2.RecommendRequest(positives=[pb2.Example(id="1000")],
                                                              negatives=[pb2.Example(id="1003")], k=4, explain=True))
    assert isinstance(got, pb2.RecommendResponse) and hits_v2(got) == hits_v1(want) and len(got.hits) == 4


def test_collapse_keeps_one_hit_per_brand_in_both_versions(v1, v2, v2_http) -> None:
    want = v1.Search(pb1.SearchRequest(query=pb1.Query(text="red shirt", k=5, collapse="brand")))
    got = both(v2, v2_http, "Search", pb2.SearchRequest(query=pb2.Query(text="red shirt", k=5, collapse="brand")))
    assert hits_v2(got) == hits_v1(want)
    assert sorted(h.product.brand for h in got.hits) == ["acme", "zeta"]  # the catalog's two brands
    plain = v2.Search(pb2.SearchRequest(query=pb2.Query(text="red shirt", k=5)))
    assert len(plain.hits) == 5 and got.hits[0].id == plain.hits[0].id


def test_search_stream_items_carry_a_google_rpc_status(v1, v2, v2_http) -> None:
    texts = ["red dress", "blue bag"]
    want = list(v1.SearchStream(iter([pb1.SearchRequest(request_id=str(i), query=pb1.Query(text=t, k=2))
                                      for i, t in enumerate(texts)])))
    reqs = [pb2.SearchStreamRequest(request_id=str(i), query=pb2.Query(text=t, k=2)) for i, t in enumerate(texts)]
    reqs.append(pb2.SearchStreamRequest(request_id="bad", query=pb2.Query(text="red", k=0)))
    got = both(v2, v2_http, "SearchStream", reqs)
    assert [r.request_id for r in got] == ["0", "1", "bad"]
    assert [hits_v2(r) for r in got[:2]] == [hits_v1(r) for r in want]
    err = got[2].error
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and err.message.startswith("k:")
    assert field_violations(err) == ["query.k"] and not got[2].hits  # ItemStatus reads as google.rpc.Status


def test_embed_with_the_kind_enum_equals_v1(v1, v2, v2_http) -> None:
    for kind1, kind2 in (("", pb2.EMBED_KIND_UNSPECIFIED), ("query", pb2.EMBED_KIND_QUERY),
                         ("document", pb2.EMBED_KIND_DOCUMENT)):
        want = v1.Embed(pb1.EmbedRequest(texts=["red shirt", "blue bag"], kind=kind1))
        got = both(v2, v2_http, "Embed", pb2.EmbedRequest(texts=["red shirt", "blue bag"], kind=kind2))
        assert as_json(got) == as_json(want)
    want = v1.Embed(pb1.EmbedRequest(images=[png("red")]))
    assert as_json(both(v2, v2_http, "Embed", pb2.EmbedRequest(images=[png("red")]))) == as_json(want)


def test_upsert_get_delete_with_string_ids(v1, v2, v2_http) -> None:
    products = [pb2.UpsertRequest(product=pb2.Product(id="SKU-7", title="green lamp", category="Home/lamp",
                                                      price=12.5), image=png("green")),
                pb2.UpsertRequest(product=pb2.Product(id="9101", title="green mug", category="Home/mug")),
                pb2.UpsertRequest(product=pb2.Product(id="bad\nid", title="x"))]
    got = v2.Upsert(iter(products))
    assert list(got.accepted_ids) == ["SKU-7", "9101"]
    assert [(r.row, r.id, r.field) for r in got.rejected] == [(2, "", "product.id")]
    again = v2_http.call("Upsert", products[:2])  # the same products again: nothing changed
    assert list(again.unchanged_ids) == ["SKU-7", "9101"] and not again.accepted_ids
    for pid in ("SKU-7", "9101"):
        got = both(v2, v2_http, "GetProduct", pb2.GetProductRequest(id=pid))
        want = v1.GetProduct(pb1.GetProductRequest(key=pid))
        assert isinstance(got, pb2.GetProductResponse) and got.product.id == want.key == pid
        assert (got.product.title, got.product.price) == (want.title, want.price)
    assert v2.Delete(pb2.DeleteRequest(ids=["SKU-7"])).deleted == 1
    assert v2_http.call("Delete", pb2.DeleteRequest(ids=["9101", "SKU-7"])).deleted == 1
    for stub, call in ((v2, lambda s: s.GetProduct(pb2.GetProductRequest(id="SKU-7"))),
                       (v2_http, lambda s: s.GetProduct(pb2.GetProductRequest(id="SKU-7")))):
        with pytest.raises(grpc.RpcError) as e:
            call(stub)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_record_events_with_enums_and_timestamps_then_forget(v1, v2, v2_http) -> None:
    when = timestamp_pb2.Timestamp()
    when.FromSeconds(1_700_000_000)
    events = [pb2.RecordEventsRequest(event=pb2.ShopperEvent(user_id="ann", product_id="1001",
                                                             kind=pb2.EVENT_KIND_CLICK, time=when)),
              pb2.RecordEventsRequest(event=pb2.ShopperEvent(user_id="ann", product_id="1002")),  # no kind
              pb2.RecordEventsRequest(event=pb2.ShopperEvent(user_id="ann", product_id="1003",
                                                             kind=pb2.EVENT_KIND_ADD_TO_CART)),
              pb2.RecordEventsRequest(event=pb2.ShopperEvent(user_id="ann", product_id="987654",
                                                             kind=pb2.EVENT_KIND_VIEW))]
    for stub in (v2, v2_http):
        got = stub.RecordEvents(iter(events)) if stub is v2 else stub.call("RecordEvents", events)
        assert got.recorded == 2
        assert [(r.row, r.id, r.field) for r in got.rejected] == [(1, "1002", "event.kind"),
                                                                 (3, "987654", "event.product_id")]
    want = v1.RecordEvents(iter([pb1.Event(user_id="ann", product_id=1001, kind="click", timestamp=1.7e9),
                                 pb1.Event(user_id="ann", product_id=1002, kind=""),
                                 pb1.Event(user_id="ann", product_id=1003, kind="add_to_cart"),
                                 pb1.Event(user_id="ann", product_id=987654, kind="view")]))
    assert want.recorded == 2 and [r.row for r in want.rejected] == [1, 3]
    # the same shopper's recommendations through both versions
    want = v1.Recommend(pb1.RecommendRequest(user_id="ann", k=3))
    assert hits_v2(both(v2, v2_http, "Recommend", pb2.RecommendRequest(user_id="ann", k=3))) == hits_v1(want)
    assert v2.ForgetUser(pb2.ForgetUserRequest(user_id="ann")).events_deleted == 6
    assert v2_http.call("ForgetUser", pb2.ForgetUserRequest(user_id="ann")).events_deleted == 0


def test_stats_details_are_a_struct(v1, v2, v2_http) -> None:
    want = v1.Stats(pb1.StatsRequest())
    for got in (v2.Stats(pb2.StatsRequest()), v2_http.call("Stats", pb2.StatsRequest())):
        assert (got.products, got.indexed) == (want.products, want.indexed)
        details = json_format.MessageToDict(got.details)
        assert details.keys() == json.loads(want.details_json).keys()
        assert details["layout"] == json.loads(want.details_json)["layout"]


def test_v2_errors_name_v2_paths(v2, v2_http) -> None:
    bad = [("Search", pb2.SearchRequest(query=pb2.Query(text="red", filters=pb2.Filters(ids=[""])))),
           ("Search", pb2.SearchRequest(query=pb2.Query(text="red", weights=pb2.Weights(image=-1.0)))),
           ("GetProduct", pb2.GetProductRequest(id="")),
           ("Recommend", pb2.RecommendRequest(positives=[pb2.Example(id=" x")])),
           ("Embed", pb2.EmbedRequest(texts=["red"], kind=7))]
    paths = ["query.filters.ids", "query.weights", "id", "positives", "kind"]
    for (rpc, request), path in zip(bad, paths, strict=True):
        with pytest.raises(grpc.RpcError) as e:
            getattr(v2, rpc)(request)
        from grpc_status import rpc_status

        assert field_violations(rpc_status.from_call(e.value)) == [path], rpc  # type: ignore[arg-type]
        with pytest.raises(HttpRpcError) as h:
            v2_http.call(rpc, request)
        assert h.value.http_status == 400 and field_violations(h.value.status()) == [path]


def test_reflection_and_health_list_both_versions(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(iter(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))))
    names = {s.name for s in answer.list_services_response.service}
    assert {"kuamo.v1.SearchService", "kuamo.v2.SearchService"} <= names
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("kuamo.v1.SearchService", "kuamo.v2.SearchService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def test_v2_takes_the_same_tokens(tmp_path) -> None:
    from conftest import TOKEN

    s = start_server(tmp_path, http_port=0, tokens=(TOKEN,)).load()
    try:
        request = pb2.SearchRequest(query=pb2.Query(text="red", k=1))
        with grpc.insecure_channel(s.target) as ch:
            stub = pb2_grpc.SearchServiceStub(ch)
            with pytest.raises(grpc.RpcError) as e:
                stub.Search(request)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert stub.Search(request, metadata=(("authorization", f"Bearer {TOKEN}"),)).hits
        with pytest.raises(HttpRpcError) as h:
            HttpStub(s.server.http_port, pb2, prefix="/v2").call("Search", request)
        assert h.value.http_status == 401
    finally:
        s.stop()
