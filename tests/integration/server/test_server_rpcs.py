"""Every RPC of kuamo.v1.SearchService against a real server on loopback, and its status codes."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.request

import grpc
import pytest
from fake_encoders import png

from kuamo.engine.types import Filters, Product, Query
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.server import convert
from kuamo.server.client import Client, StreamItemError


def search(stub, timeout=10, **query):  # type: ignore[no-untyped-def]
    return stub.Search(pb.SearchRequest(request_id="r1", query=pb.Query(**query)), timeout=timeout)


def code_and_details(fn) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), e.value.details()


def test_search_text_returns_matching_products_with_explanations(stub) -> None:
    r = search(stub, text="red dress", k=5, explain=True)
    assert r.request_id == "r1"
    assert len(r.hits) == 5
    assert r.hits[0].product.title == "red dress"
    e = r.hits[0].explanation
    assert math.isclose(sum(e.contributions.values()), e.base_score, rel_tol=1e-4, abs_tol=1e-5)
    assert [h.score for h in r.hits] == sorted((h.score for h in r.hits), reverse=True)


def test_search_image_and_filters(stub) -> None:
    r = search(stub, image=png("blue"), k=3, filters=pb.Filters(category_prefix="Apparel/shoes"))
    assert r.hits and all(h.product.category == "Apparel/shoes" for h in r.hits)
    assert r.hits[0].product.attributes["colour"].string_value == "blue"
    assert r.allowed == 10
    r = search(stub, text="shirt", k=50, filters=pb.Filters(price_max=14.0), omit_products=True)
    assert {h.id for h in r.hits} == {1000, 1001, 1002, 1003, 1004}
    assert not r.hits[0].HasField("product")


def test_search_stream_keeps_order_tags_ids_and_reports_bad_items_inline(stub) -> None:
    texts = ["red shirt", "blue bag", "   ", "green watch", "white shoes"] * 4

    def requests():  # type: ignore[no-untyped-def]
        for i, t in enumerate(texts):
            yield pb.SearchRequest(request_id=f"q{i}", query=pb.Query(text=t, k=1))

    out = list(stub.SearchStream(requests(), timeout=20))
    assert [r.request_id for r in out] == [f"q{i}" for i in range(len(texts))]
    for t, r in zip(texts, out, strict=True):
        if t.strip():
            assert r.hits[0].product.title == t
        else:  # empty query: its own INVALID_ARGUMENT, the stream goes on
            assert r.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and r.error.field == "text"


def test_search_stream_cancel_midway_leaves_server_healthy(stub) -> None:
    gate = threading.Event()

    def requests():  # type: ignore[no-untyped-def]
        yield pb.SearchRequest(request_id="a", query=pb.Query(text="red shirt", k=1))
        gate.wait(5)  # the client cancels while the server waits for more

    call = stub.SearchStream(requests(), timeout=20)
    first = next(call)
    assert first.request_id == "a"
    call.cancel()
    gate.set()
    assert call.code() == grpc.StatusCode.CANCELLED
    assert search(stub, text="red shirt", k=1).hits[0].product.title == "red shirt"


def test_embed_text_and_image(stub) -> None:
    r = stub.Embed(pb.EmbedRequest(texts=["red", "blue"]), timeout=10)
    assert r.dim == 16 and len(r.vectors) == 2
    assert math.isclose(sum(v * v for v in r.vectors[0].values), 1.0, rel_tol=1e-4)
    r2 = stub.Embed(pb.EmbedRequest(images=[png("red")]), timeout=10)
    # the fake image tower maps a red photo to the vector of "red"
    assert max(abs(a - b) for a, b in zip(r.vectors[0].values, r2.vectors[0].values, strict=True)) < 1e-5


def test_upsert_with_chunked_image_then_get_search_delete(server) -> None:
    with Client(server.target) as c:
        photo = png("green", size=(300, 400))
        assert len(photo) > 600
        new = Product(id=77, title="green linen scarf", category="Accessories/scarf", price=12.5, rating=4.0,
                      attributes={"colour": "green", "year": 2012})
        before = [h.id for h in c.search(Query(text="green linen scarf", k=3)).hits]  # cached by the server
        assert 77 not in before
        res = c.upsert([new, Product(id=78, title="bad", price=-1.0)], [photo, None], chunk_bytes=256)
        assert res.accepted == [77]
        assert res.rejected[0].id == 78 and res.rejected[0].field == "price" and res.rejected[0].row == 1
        got = c.get(77)
        assert got.title == "green linen scarf" and got.attributes["year"] == 2012
        hits = c.search(Query(text="green linen scarf", k=1)).hits
        assert hits[0].id == 77
        assert c.upsert([new], [photo], chunk_bytes=256).unchanged == [77]  # idempotent re-send
        assert c.delete([77, 123456]) == 1
        assert 77 not in [h.id for h in c.search(Query(text="green linen scarf", k=3)).hits]  # nor after delete
        with pytest.raises(grpc.RpcError) as e:
            c.get(77)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_upsert_duplicate_ids_and_orphan_chunk(stub) -> None:
    p = pb.Product(id=501, title="red hat", category="Accessories/hat")
    r = stub.Upsert(iter([pb.UpsertRequest(product=p, image=png("red")), pb.UpsertRequest(product=p)]), timeout=10)
    assert list(r.accepted) == [501]
    assert r.rejected[0].row == 1 and r.rejected[0].field == "id" and "duplicate" in r.rejected[0].reason
    code, details = code_and_details(lambda: stub.Upsert(iter([pb.UpsertRequest(image_chunk=b"xx")]), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "image_chunk" in details


def test_stats(stub) -> None:
    s = stub.Stats(pb.StatsRequest(), timeout=10)
    assert s.products >= 50 and s.indexed == s.products
    assert json.loads(s.details_json)["index"]["kind"] == "flat"


@pytest.mark.parametrize(("query", "field"), [
    ({"text": "red", "k": 0}, "k"),
    ({"text": "red", "k": 100000}, "k"),
    ({"text": "red", "weights": {"text": float("nan")}}, "weights"),
    ({"text": "red", "weights": {"text": -1.0}}, "weights"),
    ({"text": "red", "weights": {"text": 0.0, "image": 0.0}}, "weights"),
    ({"text": "red", "weights": {"colour": 1.0}}, "weights"),
    ({"image": b"not an image"}, "image"),
    ({"text": "   "}, "text"),
    ({}, "query"),
    ({"text": "red", "filters": {"price_min": 50.0, "price_max": 10.0}}, "filters.price_min"),
    ({"text": "red", "filters": {"attributes": {"bad name!": {"string_value": "x"}}}}, "filters.attributes"),
    ({"text": "red", "filters": {"attributes": {"colour": {}}}}, "filters.attributes.colour"),
    ({"text": "red", "nprobe": 0}, "nprobe"),
])
def test_bad_queries_get_invalid_argument_naming_the_field(stub, query, field) -> None:
    q = pb.Query(**{k: v for k, v in query.items() if k != "filters"})
    if "filters" in query:
        f = query["filters"]
        q.filters.CopyFrom(pb.Filters(price_min=f.get("price_min"), price_max=f.get("price_max"),
                                      attributes={k: pb.AttrValue(**v) for k, v in f.get("attributes", {}).items()}))
    code, details = code_and_details(lambda: stub.Search(pb.SearchRequest(query=q), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(field), details
    assert search(stub, text="red shirt", k=1).hits  # and the server goes on serving


def test_not_found_and_invalid_ids(stub) -> None:
    code, details = code_and_details(lambda: stub.GetProduct(pb.GetProductRequest(id=999_999), timeout=10))
    assert code == grpc.StatusCode.NOT_FOUND and "999999" in details
    code, details = code_and_details(lambda: stub.Delete(pb.DeleteRequest(), timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("ids")


def test_oversized_message_is_rejected_clearly(server, stub) -> None:
    big = b"x" * (server.cfg.max_message_mb * 1024 * 1024 + 10)
    code, details = code_and_details(lambda: stub.Embed(pb.EmbedRequest(images=[big]), timeout=20))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details


def test_metrics_endpoint_counts_requests_by_method_and_code(server, stub) -> None:
    search(stub, text="blue bag", k=1)
    with pytest.raises(grpc.RpcError):
        search(stub, text="blue bag", k=0)
    time.sleep(2.2)  # engine gauges are refreshed every 2 s
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics", timeout=5).read().decode()
    assert 'kuamo_requests_total{code="OK",method="/kuamo.v1.SearchService/Search"}' in text
    assert 'code="INVALID_ARGUMENT",method="/kuamo.v1.SearchService/Search"' in text
    assert "kuamo_request_seconds_bucket" in text
    assert 'kuamo_index_size{kind="flat"}' in text
    assert 'kuamo_batch_size_bucket{encoder="text"' in text


def test_python_client_stream_helper(server) -> None:
    with Client(server.target) as c:
        out = c.search_stream([Query(text="red shirt", k=1), Query(text="", k=1),
                               Query(text="blue bag", k=1, filters=Filters(brands=("acme", "zeta")))])
    assert out[0].hits[0].product.title == "red shirt"
    assert isinstance(out[1], StreamItemError) and out[1].code == grpc.StatusCode.INVALID_ARGUMENT
    assert out[2].hits[0].product.title == "blue bag"


def test_query_conversion_round_trips() -> None:
    q = Query(text="红色连衣裙", image=b"\x89PNG", rating=4.5, price=300.0, weights={"text": 1.0, "image": 0.5},
              filters=Filters(category_prefix="Apparel", brands=("a",), price_min=1.0, min_rating=3.0,
                              attributes={"colour": "red", "year": 2012, "new": True, "w": 1.5}, ids=(1, 2)),
              k=7, nprobe=8, rerank_factor=4, explain=True, include_products=False, user_id="u1",
              collapse="item_group_id")
    assert convert.query_from_pb(convert.query_to_pb(q)) == q
