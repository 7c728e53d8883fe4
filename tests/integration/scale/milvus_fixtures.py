"""Milvus Lite endpoints for the Milvus backend tests: a `milvus-lite server` subprocess on a free loopback
port, and an in-thread Lite server that refuses every call without the right token (Lite itself ignores
tokens; a Milvus with authentication on answers a wrong one with UNAUTHENTICATED, as this one does)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import pytest

from kuamo.benchmarks.milvus_lite import start_milvus_lite_server, stop_milvus_lite_server

TOKEN = "root:Milvus-test-token"


@pytest.fixture
def milvus_lite_server(tmp_path: Path) -> Iterator[tuple[object, str]]:
    """(the server process, its URI http://127.0.0.1:PORT) on a fresh data directory; stopped afterwards."""
    pytest.importorskip("milvus_lite")
    proc, uri = start_milvus_lite_server(tmp_path / "milvus-data")
    try:
        yield proc, uri
    finally:
        stop_milvus_lite_server(proc)


@pytest.fixture
def token_milvus(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(URI, the token it accepts) of a Lite server in this process that answers UNAUTHENTICATED otherwise."""
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    import grpc
    from milvus_lite import MilvusLite
    from milvus_lite.adapter.grpc.servicer import MilvusServicer
    from pymilvus.grpc_gen import milvus_pb2_grpc

    expected = base64.b64encode(TOKEN.encode()).decode()  # pymilvus sends base64(token) as `authorization`

    def deny(request: object, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED,
                      "auth check failure, please check username, password or API key are correct")

    class RequireToken(grpc.ServerInterceptor):
        def intercept_service(self, continuation, details):  # type: ignore[no-untyped-def]
            if dict(details.invocation_metadata).get("authorization") == expected:
                return continuation(details)
            return grpc.unary_unary_rpc_method_handler(deny)

    db = MilvusLite(str(tmp_path / "token-data"))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[RequireToken()])
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(MilvusServicer(db), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", TOKEN
    finally:
        server.stop(grace=1).wait()
        db.close()
