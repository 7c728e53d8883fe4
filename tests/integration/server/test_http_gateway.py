"""HTTP/JSON beside gRPC on a real server (small fake encoders, real store and index): every RPC answers the
same over both, errors map to HTTP statuses with the field named, auth and probes behave as gRPC's, and the
real `openai` client gets the vectors gRPC Embed gives."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import TOKEN, start_server
from fake_encoders import png
from google.protobuf import json_format
from server_thread import ServerThread

from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """conftest's server with HTTP on (its `stub` fixture then talks to this one)."""
    s = start_server(tmp_path_factory.mktemp("http"), http_port=0, max_message_mb=1).load()
    yield s
    s.stop()


def post(server: ServerThread, path: str, body: Any, *, raw: bytes | None = None, token: str | None = None,
         ctype: str = "application/json") -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{server.server.http_port}{path}", data=data, method="POST",
                                 headers={"Content-Type": ctype, **({"Authorization": f"Bearer {token}"}
                                                                    if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            return r.status, text if ctype == "application/x-ndjson" else json.loads(text)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def get(server: ServerThread, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server.http_port}{path}", timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def as_json(msg: Any) -> dict:
    d = json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)
    d.pop("timings", None)  # server-side times differ between two calls
    return d


def test_every_unary_rpc_answers_the_same_over_http_and_grpc(server: ServerThread, stub) -> None:
    calls = [("Search", pb.SearchRequest(request_id="a", query=pb.Query(text="red dress", k=5, explain=True))),
             ("Search", pb.SearchRequest(query=pb.Query(text="shoes", k=3,
                                                        filters=pb.Filters(category_prefix="Apparel")))),
             ("Embed", pb.EmbedRequest(texts=["red shirt", "blue bag"])),
             ("Embed", pb.EmbedRequest(images=[png("red")])),
             ("GetProduct", pb.GetProductRequest(id=1003)),
             ("Recommend", pb.RecommendRequest(user_id="nobody", k=3)),
             ("Stats", pb.StatsRequest())]
    for name, request in calls:
        want = as_json(getattr(stub, name)(request))
        status, got = post(server, f"/v1/{name}", json_format.MessageToDict(request))
        got.pop("timings", None)
        if name == "Stats":  # counters move between the two calls
            want = {k: want[k] for k in ("products", "indexed")}
            got = {k: got[k] for k in ("products", "indexed")}
        assert status == 200 and got == want, name


def test_client_streams_and_search_stream_over_http(server: ServerThread, stub) -> None:
    photo = base64.b64encode(png("green")).decode()
    lines = [json.dumps({"product": {"id": 9001, "title": "green lamp", "category": "Home/lamp"}, "image": photo}),
             json.dumps({"product": {"id": 9002, "title": "green mug", "category": "Home/mug"}})]
    status, text = post(server, "/v1/Upsert", None, raw="\n".join(lines).encode(), ctype="application/x-ndjson")
    assert status == 200 and sorted(json.loads(text)["accepted"]) == ["9001", "9002"]  # int64 as JSON strings
    assert stub.GetProduct(pb.GetProductRequest(id=9001)).title == "green lamp"
    events = "\n".join(json.dumps({"userId": "ann", "productId": 9001, "kind": "click"}) for _ in range(3))
    status, text = post(server, "/v1/RecordEvents", None, raw=events.encode(), ctype="application/x-ndjson")
    assert status == 200 and json.loads(text)["recorded"] == "3"
    queries = "\n".join(json.dumps({"requestId": str(i), "query": {"text": t, "k": 2}})
                        for i, t in enumerate(["green lamp", "red dress", "blue bag"]))
    status, text = post(server, "/v1/SearchStream", None, raw=queries.encode(), ctype="application/x-ndjson")
    answers = [json.loads(line) for line in text.splitlines()]
    assert status == 200 and [a["requestId"] for a in answers] == ["0", "1", "2"]
    assert answers[0]["hits"][0]["id"] == "9001"
    post(server, "/v1/Delete", {"ids": [9001, 9002]})
    assert post(server, "/v1/GetProduct", {"id": 9001})[0] == 404


@pytest.mark.parametrize(("path", "body", "status", "field"), [
    ("/v1/Search", {"query": {"text": "red", "k": 0}}, 400, "k"),
    ("/v1/Search", {"query": {"text": "red", "nosuchfield": 1}}, 400, "body"),
    ("/v1/Search", [1, 2], 400, "body"),
    ("/v1/Search", {"query": {"text": "red", "weights": {"image": -1}}}, 400, None),
    ("/v1/GetProduct", {"id": 424242}, 404, None),
    ("/v1/Embed", {}, 400, "texts"),
    ("/v1/embeddings", {"input": []}, 400, "input"),
    ("/v1/embeddings", {"input": "red", "encoding_format": "int8"}, 400, "encoding_format"),
    ("/v1/embeddings", {"input": "red", "model": "gpt-4"}, 400, "model"),
    ("/v1/embeddings", {"input": [[1, 2, 3]]}, 400, "input"),
])
def test_bad_input_is_a_4xx_naming_the_field(server: ServerThread, path: str, body: Any, status: int,
                                             field: str | None) -> None:
    got, answer = post(server, path, body)
    assert got == status, answer
    err = answer["error"]
    assert err["code"] == status and err["message"] and "Traceback" not in err["message"]
    if field:
        assert err.get("field", "").endswith(field) or field in err["message"], err
    assert post(server, "/v1/Search", {"query": {"text": "red dress", "k": 1}})[0] == 200  # the next good one


def test_malformed_bodies_and_oversized_bodies(server: ServerThread) -> None:
    assert post(server, "/v1/Search", None, raw=b"{not json")[1]["error"]["field"] == "body"
    status, answer = post(server, "/v1/Upsert", None, raw=b'{"product": {"id": 1}}\n{broken',
                          ctype="application/x-ndjson")
    assert status == 400 and "line 2" in answer["error"]["message"]
    big = json.dumps({"query": {"text": "x" * (2 << 20)}}).encode()  # over max_message_mb = 1
    status, answer = post(server, "/v1/Search", None, raw=big)
    assert status == 413 and answer["error"]["status"] == "RESOURCE_EXHAUSTED"


def test_probes(server: ServerThread) -> None:
    assert get(server, "/healthz") == (200, {"status": "ok"})
    assert get(server, "/readyz")[0] == 200


def test_openai_client_gets_the_vectors_grpc_embed_gives(server: ServerThread, stub) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server.http_port}/v1", api_key="unused")
    texts = ["red running shoes", "红色连衣裙"]
    want = np.asarray([v.values for v in stub.Embed(pb.EmbedRequest(texts=texts)).vectors])
    for fmt in ("float", "base64"):  # asked for explicitly, base64 comes back as sent: little-endian float32
        res = client.embeddings.create(input=texts, model="FakeTextEncoder", encoding_format=fmt)
        got = np.asarray([d.embedding if fmt == "float" else np.frombuffer(base64.b64decode(d.embedding), "<f4")
                          for d in res.data])
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert cos.min() >= 0.9999 and [d.index for d in res.data] == [0, 1]
        assert res.usage.prompt_tokens == res.usage.total_tokens > 0
    one = client.embeddings.create(input="red dress", model="FakeTextEncoder")  # the SDK's default: base64,
    assert len(one.data) == 1 and one.model == "FakeTextEncoder"              # decoded by the SDK itself
    assert len(one.data[0].embedding) == want.shape[1]


def test_http_takes_the_grpc_tokens(tmp_path) -> None:
    s = start_server(tmp_path, http_port=0, tokens=(TOKEN,)).load()
    try:
        status, answer = post(s, "/v1/Search", {"query": {"text": "red", "k": 1}})
        assert status == 401 and answer["error"]["status"] == "UNAUTHENTICATED"
        assert post(s, "/v1/Search", {"query": {"text": "red", "k": 1}}, token="wrong-token-0123456789")[0] == 401
        assert post(s, "/v1/Search", {"query": {"text": "red", "k": 1}}, token=TOKEN)[0] == 200
        assert get(s, "/healthz")[0] == 200  # probes need no token, as gRPC health
    finally:
        s.stop()


def test_http_admission_shares_the_grpc_limit(server: ServerThread) -> None:
    icpt = server.server.interceptor
    before, icpt.inflight = icpt.inflight, icpt.max_inflight  # as if the server were full
    try:
        status, answer = post(server, "/v1/Search", {"query": {"text": "red", "k": 1}})
        assert status == 429 and "admission limit" in answer["error"]["message"]
    finally:
        icpt.inflight = before
    assert post(server, "/v1/Search", {"query": {"text": "red", "k": 1}})[0] == 200


def _fuzz_bodies(rng: np.random.Generator, n: int) -> Iterator[tuple[str, bytes]]:
    """Random and mutated request bodies for every POST endpoint (bounded; loopback only)."""
    rpcs = ["Search", "Embed", "Recommend", "Delete", "GetProduct", "Stats", "ForgetUser", "Upsert", "RecordEvents",
            "SearchStream"]
    paths = [f"/{v}/{rpc}" for v in ("v1", "v2") for rpc in rpcs] + ["/v1/embeddings"]
    good = [b'{"query": {"text": "red dress", "k": 3}}', b'{"texts": ["a"]}', b'{"id": 1003}',
            b'{"userId": "u", "productId": 1003, "kind": "click"}', b'{"input": "red", "encoding_format": "base64"}',
            b'{"product": {"id": 77, "title": "x"}, "image": "AAAA"}', b'{"id": "1003"}',
            b'{"event": {"userId": "u", "productId": "1003", "kind": "EVENT_KIND_CLICK", '
            b'"time": "2024-01-01T00:00:00Z"}}',
            b'{"query": {"text": "red", "weights": {"image": 0.7, "category": 1}}}']
    values = [b"null", b"-1", b"1e309", b"\"\"", b"[]", b"{}", b"true", b"\"\\ud800\"", b"99999999999999999999",
              b"\"%s\"" % (b"x" * 5000), b"{\"a\": {\"b\": [1, {\"c\": null}]}}", b"NaN", b"\"NaN\""]
    keys = [b"query", b"text", b"k", b"texts", b"images", b"id", b"ids", b"weights", b"filters", b"input",
            b"model", b"kind", b"userId", b"productId", b"positives", b"image", b"priceMin", b"encoding_format"]
    for _ in range(n):
        r = rng.random()
        if r < 0.3:
            body = bytes(rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8))
        elif r < 0.6:
            b = bytearray(good[int(rng.integers(len(good)))])
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(len(b)))] = int(rng.integers(0, 256))
            body = bytes(b)
        else:
            k, v = keys[int(rng.integers(len(keys)))], values[int(rng.integers(len(values)))]
            inner = b'{"%s": %s}' % (keys[int(rng.integers(len(keys)))], v)
            body = b'{"%s": %s}' % (k, inner if rng.random() < 0.5 else v)
        yield paths[int(rng.integers(len(paths)))], body


def test_http_fuzz_2000_requests_no_5xx_and_the_next_good_request_is_answered(server: ServerThread) -> None:
    import http.client

    rng = np.random.default_rng(0)
    statuses: dict[int, int] = {}
    conn = http.client.HTTPConnection("127.0.0.1", server.server.http_port, timeout=30)
    try:
        for path, body in _fuzz_bodies(rng, 2000):
            ctype = "application/x-ndjson" if rng.random() < 0.2 else "application/json"
            conn.request("POST", path, body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            payload = resp.read()
            statuses[resp.status] = statuses.get(resp.status, 0) + 1
            assert resp.status < 500, (path, body[:200], resp.status, payload[:300])
            if resp.status >= 400:
                assert json.loads(payload)["error"]["message"], payload[:300]
    finally:
        conn.close()
    assert sum(statuses.values()) == 2000 and statuses.get(400, 0) > 500, statuses
    assert post(server, "/v1/Search", {"query": {"text": "red dress", "k": 2}})[0] == 200


def test_search_stream_by_completion_over_grpc_metadata_and_http(server: ServerThread, stub) -> None:
    reqs = [pb.SearchRequest(request_id=str(i), query=pb.Query(text=t, k=2))
            for i, t in enumerate(["red dress", "blue bag", "green shoes", "black watch"])]
    got = list(stub.SearchStream(iter(reqs), metadata=(("kuamo-stream-order", "completion"),)))
    assert sorted(r.request_id for r in got) == ["0", "1", "2", "3"] and all(r.hits for r in got)
    with pytest.raises(grpc.RpcError) as e:
        list(stub.SearchStream(iter(reqs), metadata=(("kuamo-stream-order", "sideways"),)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    body = "\n".join(json_format.MessageToJson(r, indent=None) for r in reqs).encode()
    status, text = post(server, "/v1/SearchStream?order=completion", None, raw=body, ctype="application/x-ndjson")
    assert status == 200 and sorted(json.loads(line)["requestId"] for line in text.splitlines()) == ["0", "1", "2", "3"]
    assert post(server, "/v1/SearchStream?order=sideways", None, raw=body, ctype="application/x-ndjson")[0] == 400
