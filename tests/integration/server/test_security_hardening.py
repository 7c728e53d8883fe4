"""Security hardening beyond test_server_security.py (which checks every RPC with no token, a wrong token
and a token without its scheme): other malformed credentials on every RPC with a corrupt body (auth is
checked before the body is parsed or read), refused calls change nothing and hold no admission slot,
reflection needs the token too, catalog image paths cannot leave the catalog directory, and no secret
(bearer token, user-id HMAC key) and no raw user id reaches the logs, failures included."""

from __future__ import annotations

import csv
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from conftest import TOKEN, start_server
from fake_encoders import FakeImageEncoder, FakeTextEncoder, png
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kuamo.engine.catalog_io import GENERIC, RowError, to_product
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.ingest import index_catalog
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc

SERVICE = "/kuamo.v1.SearchService/"
UNARY = ("Search", "Embed", "Recommend", "Delete", "GetProduct", "Stats", "ForgetUser")
CLIENT_STREAMING = ("Upsert", "RecordEvents")
RPCS = (*UNARY, *CLIENT_STREAMING, "SearchStream")
WRONG = "wrong-token-0123456789abcdef"
BAD_CREDENTIALS = {
    "empty-bearer": (("authorization", "Bearer "),),
    "basic-scheme": (("authorization", f"Basic {TOKEN}"),),
    "token-prefix": (("authorization", f"Bearer {TOKEN[:-1]}"),),
    "token-plus-suffix": (("authorization", f"Bearer {TOKEN}0"),),
    "token-other-case": (("authorization", f"Bearer {TOKEN.upper()}"),),
    "wrong-then-right-header": (("authorization", f"Bearer {WRONG}"), ("authorization", f"Bearer {TOKEN}")),
    "token-in-other-header": (("x-api-key", TOKEN),),
}
GOOD = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):  # type: ignore[no-untyped-def]
    srv = start_server(tmp_path_factory.mktemp("hardening"), tokens=(TOKEN,), max_inflight=4).load()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def channel(auth_server):  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(auth_server.target) as ch:
        yield ch


def raw_call(ch: grpc.Channel, method: str, metadata, body: bytes = b"\xff\xff\xff\x0f"):  # type: ignore[no-untyped-def]
    """The RPC with a corrupt body: a server that parsed before checking the token would answer
    INVALID_ARGUMENT instead of UNAUTHENTICATED."""
    if method == "SearchStream":
        return list(ch.stream_stream(SERVICE + method)(iter([body]), metadata=metadata, timeout=5))
    if method in CLIENT_STREAMING:
        return ch.stream_unary(SERVICE + method)(iter([body]), metadata=metadata, timeout=5)
    return ch.unary_unary(SERVICE + method)(body, metadata=metadata, timeout=5)


@pytest.mark.parametrize("method", RPCS)
@pytest.mark.parametrize("cred", sorted(BAD_CREDENTIALS))
def test_every_rpc_refuses_malformed_credentials_before_parsing(channel, method, cred) -> None:
    with pytest.raises(grpc.RpcError) as e:
        raw_call(channel, method, BAD_CREDENTIALS[cred])
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, e.value.details()
    # and the same corrupt body WITH the token is a plain INVALID_ARGUMENT (so the order is what made the difference)
    with pytest.raises(grpc.RpcError) as e:
        raw_call(channel, method, GOOD)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("request")


@pytest.mark.parametrize("method", [*CLIENT_STREAMING, "SearchStream"])
def test_streams_are_refused_before_their_first_message(channel, method) -> None:
    gate = threading.Event()

    def never():  # type: ignore[no-untyped-def]
        gate.wait(10)  # sends nothing until released
        yield b""

    t0 = time.perf_counter()
    try:
        with pytest.raises(grpc.RpcError) as e:
            if method == "SearchStream":
                list(channel.stream_stream(SERVICE + method)(never(), metadata=BAD_CREDENTIALS["token-prefix"],
                                                             timeout=8))
            else:
                channel.stream_unary(SERVICE + method)(never(), metadata=BAD_CREDENTIALS["token-prefix"], timeout=8)
    finally:
        gate.set()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert time.perf_counter() - t0 < 5  # not after the deadline: the server did not wait for a body


def test_refused_writes_change_nothing(channel) -> None:
    stub = pb_grpc.SearchServiceStub(channel)
    bad = (("authorization", f"Bearer {WRONG}"),)
    calls = [
        lambda md: stub.Upsert(iter([pb.UpsertRequest(product=pb.Product(id=4242, title="intruder hat"),
                                                      image=png("red"))]), metadata=md, timeout=5),
        lambda md: stub.Delete(pb.DeleteRequest(ids=[1000]), metadata=md, timeout=5),
        lambda md: stub.RecordEvents(iter([pb.Event(user_id="victim", product_id=1001, kind="purchase")]),
                                     metadata=md, timeout=5),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as e:
            call(bad)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as e:
        stub.GetProduct(pb.GetProductRequest(id=4242), metadata=GOOD, timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert stub.GetProduct(pb.GetProductRequest(id=1000), metadata=GOOD, timeout=5).title == "red shirt"
    assert stub.ForgetUser(pb.ForgetUserRequest(user_id="victim"), metadata=GOOD, timeout=5).events_deleted == 0


def test_refused_calls_hold_no_admission_slot(auth_server, channel) -> None:
    stub = pb_grpc.SearchServiceStub(channel)

    def bad(i: int) -> grpc.StatusCode:
        try:
            stub.Search(pb.SearchRequest(query=pb.Query(text="red shirt")), metadata=(("authorization", WRONG),),
                        timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    with ThreadPoolExecutor(16) as pool:  # 4x the admission limit of 4, all at once
        codes = set(pool.map(bad, range(64)))
    assert codes == {grpc.StatusCode.UNAUTHENTICATED}  # never RESOURCE_EXHAUSTED: no slot was taken
    assert auth_server.server.interceptor.inflight == 0
    r = stub.Search(pb.SearchRequest(query=pb.Query(text="red shirt", k=1)), metadata=GOOD, timeout=5)
    assert r.hits[0].product.title == "red shirt"


def test_reflection_needs_the_token_when_auth_is_on(channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    req = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as e:
        list(stub.ServerReflectionInfo(iter([req]), timeout=5))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    names = {s.name for r in stub.ServerReflectionInfo(iter([req]), metadata=GOOD, timeout=5)
             for s in r.list_services_response.service}
    assert "kuamo.v1.SearchService" in names


def test_reflection_v1_answers_as_v1alpha_does(channel) -> None:
    """A v1 client (the same messages under grpc.reflection.v1) lists the services and fetches the kuamo
    descriptors; it needs the token as v1alpha does."""
    call = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                 request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                 response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    listing = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as e:
        list(call(iter([listing]), timeout=5))
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    symbol = reflection_pb2.ServerReflectionRequest(file_containing_symbol="kuamo.v1.SearchService")
    answers = list(call(iter([listing, symbol]), metadata=GOOD, timeout=5))
    names = {s.name for s in answers[0].list_services_response.service}
    assert {"kuamo.v1.SearchService", "grpc.reflection.v1.ServerReflection", "grpc.health.v1.Health"} <= names
    assert answers[1].file_descriptor_response.file_descriptor_proto  # the kuamo.proto descriptor


# -- catalog image paths ---------------------------------------------------------------------------------------
@pytest.fixture()
def escaping_catalog(tmp_path: Path) -> Path:
    """A catalog directory with one good row and rows whose images point outside it; every outside file IS
    a valid photo, so reading any of them would index it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png("red"))
    root = tmp_path / "catalog"
    (root / "img").mkdir(parents=True)
    (root / "img" / "ok.png").write_bytes(png("blue"))
    (root / "img" / "link.png").symlink_to(outside / "secret.png")
    (root / "img" / "dirlink").symlink_to(outside, target_is_directory=True)
    (root / "img" / "inner-link.png").symlink_to(root / "img" / "ok.png")  # a symlink that stays inside is fine
    depth = len(root.resolve().parts) + 2
    rows = [
        ("1", "blue shirt", "img/ok.png"),
        ("2", "dots", "../outside/secret.png"),
        ("3", "deep dots", "../" * depth + "etc/passwd"),
        ("4", "absolute", str(outside / "secret.png")),
        ("5", "absolute etc", "/etc/passwd"),
        ("6", "dots inside the path", "img/../../outside/secret.png"),
        ("7", "file symlink out", "img/link.png"),
        ("8", "dir symlink out", "img/dirlink/secret.png"),
        ("9", "inner symlink", "img/inner-link.png"),
    ]
    with open(root / "catalog.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "image"])
        w.writerows(rows)
    (root / "catalog.jsonl").write_text(json.dumps({"id": 10, "title": "nul", "image": "img/ok.png\x00../x"}) + "\n")
    return root


def test_catalog_image_paths_cannot_escape_the_catalog_directory(tmp_path, escaping_catalog) -> None:
    root = escaping_catalog
    eng = Engine(EngineConfig(data_dir=tmp_path / "data"), text_encoder=FakeTextEncoder(),
                 image_encoder=FakeImageEncoder())
    rep = index_catalog(root / "catalog.csv", engine=eng, progress=False)
    assert rep.accepted == 2  # the good row and the symlink that stays inside
    refused = {r.id: r for r in rep.rejected}
    assert set(refused) == {2, 3, 4, 5, 6, 7, 8}
    for r in refused.values():
        assert r.field == "image" and ("catalog directory" in r.reason), r
    assert "symlink" in refused[7].reason and "symlink" in refused[8].reason
    assert eng.store.count() == 2
    rep = index_catalog(root / "catalog.jsonl", engine=eng, progress=False)
    assert rep.accepted == 0 and rep.rejected[0].field == "image"


def test_to_product_rejects_escapes_with_a_reason(escaping_catalog) -> None:
    with pytest.raises(RowError) as e:
        to_product({"id": "1", "title": "t", "image": "../../etc/passwd"}, GENERIC, escaping_catalog)
    assert e.value.field == "image" and "'..'" in e.value.reason and e.value.id == 1
    with pytest.raises(RowError) as e:
        to_product({"id": "2", "title": "t", "image": "/etc/passwd"}, GENERIC, escaping_catalog)
    assert e.value.field == "image" and "relative" in e.value.reason
    product, path = to_product({"id": "3", "title": "t", "image": "img/ok.png"}, GENERIC, escaping_catalog)
    assert path == escaping_catalog / "img" / "ok.png" and product.image_ref == "img/ok.png"


# -- secrets and raw user ids stay out of the logs -------------------------------------------------------------
RAW_USERS = ("bob.raw-id-91c2@example.org", "carol-raw-user-0x5eed")
USER_KEY = "hmac-user-key-for-this-test-only-0123456789"


def test_no_secret_or_raw_user_id_in_logs(tmp_path, caplog, monkeypatch) -> None:
    monkeypatch.setenv("KUAMO_USER_KEY", USER_KEY)
    caplog.set_level(logging.DEBUG)  # every logger, the access log included
    srv = start_server(tmp_path, tokens=(TOKEN,), log_access=True).load()
    try:
        with grpc.insecure_channel(srv.target) as ch:
            stub = pb_grpc.SearchServiceStub(ch)
            bob, carol = RAW_USERS
            ok_calls = [
                lambda: stub.RecordEvents(iter([pb.Event(user_id=bob, product_id=1000 + i, kind="click")
                                                for i in range(5)]), metadata=GOOD, timeout=5),
                lambda: stub.Search(pb.SearchRequest(query=pb.Query(text="red shirt", user_id=bob)), metadata=GOOD,
                                    timeout=5),
                lambda: stub.Recommend(pb.RecommendRequest(user_id=bob, explain=True), metadata=GOOD, timeout=5),
                lambda: stub.ForgetUser(pb.ForgetUserRequest(user_id=bob), metadata=GOOD, timeout=5),
                lambda: stub.RecordEvents(iter([pb.Event(user_id=carol, product_id=999_999, kind="view"),
                                                pb.Event(user_id=carol, product_id=1000, kind="bogus")]),
                                          metadata=GOOD, timeout=5),
            ]
            failing = [
                lambda: stub.Search(pb.SearchRequest(query=pb.Query(text="red", user_id=carol, k=0)), metadata=GOOD,
                                    timeout=5),
                lambda: stub.Search(pb.SearchRequest(query=pb.Query(text="red", user_id=carol,
                                                                    user_weight=3.0)), metadata=GOOD, timeout=5),
                lambda: stub.Recommend(pb.RecommendRequest(user_id=carol, positives=[pb.Example(id=31337)]),
                                       metadata=GOOD, timeout=5),
                lambda: stub.ForgetUser(pb.ForgetUserRequest(user_id=carol + "x" * 300), metadata=GOOD, timeout=5),
                lambda: stub.ForgetUser(pb.ForgetUserRequest(user_id=carol), metadata=(("authorization", WRONG),),
                                        timeout=5),
                lambda: stub.Search(pb.SearchRequest(query=pb.Query(text="red", user_id=bob)),
                                    metadata=(("authorization", f"Bearer {TOKEN}x"),), timeout=5),
                lambda: stub.Search(pb.SearchRequest(query=pb.Query(text="red", user_id=bob)),
                                    metadata=(("authorization", f"Basic {TOKEN}"),), timeout=5),
                lambda: ch.unary_unary(SERVICE + "ForgetUser")(b"\x0a\x03\xff\xfe\xfd", metadata=GOOD, timeout=5),
            ]
            for call in ok_calls:
                call()
            for call in failing:
                with pytest.raises(grpc.RpcError):
                    call()
    finally:
        srv.stop()
    text = caplog.text
    for secret in (TOKEN, WRONG, USER_KEY, *RAW_USERS):
        assert secret not in text, f"{secret!r} leaked into the logs"
    user_key_file = tmp_path / "user.key"
    assert not user_key_file.exists()  # the key came from the environment; nothing was written beside the data
    # the scan read real lines: the access log recorded the calls, failures with their codes
    codes = {json.loads(r.getMessage())["code"] for r in caplog.records if r.name == "kuamo.access"}
    assert {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "UNAUTHENTICATED"} <= codes
