"""Bearer-token auth, TLS (self-signed, made here with openssl) with and without client certificates,
and the refusal to listen on a public address without auth."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from conftest import TOKEN, start_server
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kuamo.engine.errors import InvalidInput
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc
from kuamo.server.auth import check_bearer
from kuamo.server.client import Client
from kuamo.server.config import ServerConfig, load_config

CALLS = {
    "Search": lambda s, md: s.Search(pb.SearchRequest(query=pb.Query(text="red shirt")), metadata=md, timeout=5),
    "SearchStream": lambda s, md: list(s.SearchStream(iter([pb.SearchRequest(query=pb.Query(text="red"))]),
                                                      metadata=md, timeout=5)),
    "Embed": lambda s, md: s.Embed(pb.EmbedRequest(texts=["red"]), metadata=md, timeout=5),
    "Recommend": lambda s, md: s.Recommend(pb.RecommendRequest(user_id="u"), metadata=md, timeout=5),
    "Upsert": lambda s, md: s.Upsert(iter([pb.UpsertRequest(product=pb.Product(id=9, title="x"))]), metadata=md,
                                     timeout=5),
    "Delete": lambda s, md: s.Delete(pb.DeleteRequest(ids=[1]), metadata=md, timeout=5),
    "GetProduct": lambda s, md: s.GetProduct(pb.GetProductRequest(id=1000), metadata=md, timeout=5),
    "Stats": lambda s, md: s.Stats(pb.StatsRequest(), metadata=md, timeout=5),
    "RecordEvents": lambda s, md: s.RecordEvents(iter([pb.Event(user_id="u", product_id=1000, kind="view")]),
                                                 metadata=md, timeout=5),
    "ForgetUser": lambda s, md: s.ForgetUser(pb.ForgetUserRequest(user_id="u"), metadata=md, timeout=5),
}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):  # type: ignore[no-untyped-def]
    srv = start_server(tmp_path_factory.mktemp("auth"), tokens=(TOKEN,)).load()
    yield srv
    srv.stop()


@pytest.mark.parametrize("method", sorted(CALLS))
@pytest.mark.parametrize("metadata", [None, (("authorization", "Bearer wrong-token-0123456789"),),
                                      (("authorization", TOKEN),)], ids=["missing", "wrong", "no-scheme"])
def test_every_rpc_needs_the_token(auth_server, method, metadata) -> None:
    with grpc.insecure_channel(auth_server.target) as ch:
        with pytest.raises(grpc.RpcError) as e:
            CALLS[method](pb_grpc.SearchServiceStub(ch), metadata)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_right_token_is_served_and_health_stays_open(auth_server) -> None:
    with Client(auth_server.target, token=TOKEN) as c:
        assert c.search("red shirt", k=1).hits[0].product.title == "red shirt"
    with grpc.insecure_channel(auth_server.target) as ch:  # probes need no token
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert r.status == health_pb2.HealthCheckResponse.SERVING


def test_check_bearer_unit() -> None:
    check_bearer((("authorization", f"Bearer {TOKEN}"),), ["other-token-000000000", TOKEN])
    for md in [(), (("authorization", "Basic abc"),), (("authorization", f"Bearer {TOKEN}x"),)]:
        with pytest.raises(Exception, match=r"token|authorization"):
            check_bearer(md, [TOKEN])


def _cert(d: Path, name: str, *, ca: tuple[Path, Path] | None = None) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    subj = ["-subj", f"/CN={name}", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    if ca is None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                        "-days", "1", *subj], check=True, capture_output=True)
    else:
        csr = d / f"{name}.csr"
        subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                        *subj], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0], "-CAcreateserial",
                        "-out", crt, "-days", "1", "-copy_extensions", "copy"], check=True, capture_output=True)
    return key, crt


@pytest.fixture(scope="module")
def pki(tmp_path_factory):  # type: ignore[no-untyped-def]
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")
    ca = _cert(d, "ca")
    return {"ca": ca, "server": _cert(d, "server", ca=ca), "client": _cert(d, "client", ca=ca),
            "other_ca": _cert(d, "other")}


def test_tls_round_trip_and_wrong_ca_fails(tmp_path, pki) -> None:
    key, crt = pki["server"]
    srv = start_server(tmp_path, tls_cert=crt, tls_key=key).load()
    try:
        with Client(f"localhost:{srv.port}", tls_ca=pki["ca"][1]) as c:
            assert c.search("red shirt", k=1).hits[0].product.title == "red shirt"
        with Client(f"localhost:{srv.port}", tls_ca=pki["other_ca"][1], retries=0, timeout=3) as c:
            with pytest.raises(grpc.RpcError) as e:
                c.search("red shirt", k=1)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(srv.target) as ch:  # plaintext against TLS
            with pytest.raises(grpc.RpcError):
                pb_grpc.SearchServiceStub(ch).Stats(pb.StatsRequest(), timeout=3)
    finally:
        srv.stop()


def test_mutual_tls_requires_a_client_certificate(tmp_path, pki) -> None:
    key, crt = pki["server"]
    srv = start_server(tmp_path, tls_cert=crt, tls_key=key, tls_client_ca=pki["ca"][1]).load()
    try:
        ck, cc = pki["client"]
        with Client(f"localhost:{srv.port}", tls_ca=pki["ca"][1], tls_client_cert=cc, tls_client_key=ck) as c:
            assert c.search("red shirt", k=1).hits
        with Client(f"localhost:{srv.port}", tls_ca=pki["ca"][1], retries=0, timeout=3) as c:
            with pytest.raises(grpc.RpcError) as e:
                c.search("red shirt", k=1)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop()


def test_public_address_needs_auth_or_explicit_insecure(tmp_path) -> None:
    with pytest.raises(InvalidInput, match="non-loopback"):
        load_config(overrides={"host": "0.0.0.0"}, environ={})
    assert load_config(overrides={"host": "0.0.0.0", "insecure": True}, environ={}).insecure
    assert load_config(overrides={"host": "0.0.0.0"}, environ={"KUAMO_SERVER_TOKENS": TOKEN}).tokens == (TOKEN,)
    assert load_config(overrides={"host": "::1"}, environ={}).host == "::1"
    with pytest.raises(InvalidInput, match="tls_key"):
        load_config(overrides={"tls_cert": tmp_path / "c"}, environ={})
    cfg_file = tmp_path / "kuamo.toml"
    cfg_file.write_text('[server]\nport = 6000\nmax_inflight = 8\n')
    assert load_config(cfg_file, environ={"KUAMO_SERVER_MAX_INFLIGHT": "9"}) == ServerConfig(port=6000,
                                                                                            max_inflight=9)
    assert load_config(overrides={"event_loop": "uvloop"}, environ={}).event_loop == "uvloop"
    with pytest.raises(InvalidInput, match="event_loop must be one of asyncio, uvloop, got 'trio'"):
        load_config(environ={"KUAMO_SERVER_EVENT_LOOP": "trio"})
    cfg_file.write_text('[server]\nprot = 6000\n')
    with pytest.raises(InvalidInput, match="unknown settings"):
        load_config(cfg_file, environ={})
