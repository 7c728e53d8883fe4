"""Health transitions, UNAVAILABLE while loading, admission limit and queue overload, reflection,
graceful drain, and the generated code being current."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from conftest import start_server
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from kuamo.engine.batcher import BatcherConfig
from kuamo.proto.generate import stale_files
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc


def health(ch: grpc.Channel, service: str = "") -> str:
    r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)


def test_health_not_serving_until_loaded_then_serving_then_draining(tmp_path) -> None:
    srv = start_server(tmp_path)
    try:
        with grpc.insecure_channel(srv.target) as ch:
            assert health(ch) == "NOT_SERVING"
            assert health(ch, "kuamo.v1.SearchService") == "NOT_SERVING"
            stub = pb_grpc.SearchServiceStub(ch)
            with pytest.raises(grpc.RpcError) as e:
                stub.Search(pb.SearchRequest(query=pb.Query(text="red")), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "starting" in e.value.details()
            srv.load()
            assert health(ch) == "SERVING"
            assert stub.Search(pb.SearchRequest(query=pb.Query(text="red shirt", k=1)), timeout=5).hits
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            srv.loop.call_soon_threadsafe(lambda: srv.loop.create_task(srv.server.stop(2.0)))
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING  # drain is announced
    finally:
        srv.stop()


def test_reflection_lists_the_services(server) -> None:
    with grpc.insecure_channel(server.target) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"kuamo.v1.SearchService", "grpc.health.v1.Health"} <= services
        fd = db.FindFileContainingSymbol("kuamo.v1.SearchService")
        assert fd.package == "kuamo.v1" and "Query" in [m.name for m in fd.message_type]


def test_deadline_is_honoured(tmp_path) -> None:
    """A call whose deadline passes while the server works ends DEADLINE_EXCEEDED, and the server goes on. (A
    0.1 ms deadline on a cached query raced a sub-millisecond answer and sometimes lost; the tower here takes
    0.3 s, on a text no cache holds.)"""
    srv = start_server(tmp_path, delay_s=0.3).load()
    try:
        with grpc.insecure_channel(srv.target) as ch:
            stub = pb_grpc.SearchServiceStub(ch)
            with pytest.raises(grpc.RpcError) as exc:
                stub.Search(pb.SearchRequest(query=pb.Query(text="deadline probe", k=1)), timeout=0.05)
            assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert stub.Search(pb.SearchRequest(query=pb.Query(text="red shirt", k=1)), timeout=10).hits
    finally:
        srv.stop()


def test_admission_limit_answers_resource_exhausted_quickly(tmp_path) -> None:
    srv = start_server(tmp_path, max_inflight=2, delay_s=0.3).load()
    try:
        with grpc.insecure_channel(srv.target) as ch:
            stub = pb_grpc.SearchServiceStub(ch)

            def one(i: int) -> tuple[grpc.StatusCode, float]:
                t0 = time.perf_counter()
                try:
                    stub.Search(pb.SearchRequest(query=pb.Query(text=f"red shirt {i}", k=1)), timeout=10)
                    return grpc.StatusCode.OK, time.perf_counter() - t0
                except grpc.RpcError as exc:
                    return exc.code(), time.perf_counter() - t0

            with ThreadPoolExecutor(8) as pool:
                results = list(pool.map(one, range(8)))
        codes = [c for c, _ in results]
        assert codes.count(grpc.StatusCode.OK) >= 2
        refused = [t for c, t in results if c == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert refused, codes
        assert max(refused) < 0.25  # refused at once, not after queueing behind the slow ones
    finally:
        srv.stop()


def test_full_encoder_queue_is_resource_exhausted(tmp_path) -> None:
    srv = start_server(tmp_path, delay_s=0.3,
                       batcher=BatcherConfig(max_batch_size=1, max_wait_ms=0, max_queue=1)).load()
    try:
        with grpc.insecure_channel(srv.target) as ch:
            stub = pb_grpc.SearchServiceStub(ch)

            def one(i: int) -> grpc.StatusCode:
                try:
                    stub.Search(pb.SearchRequest(query=pb.Query(text=f"word{i}", k=1)), timeout=10)
                    return grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    assert "queue is full" in exc.details() or exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED
                    return exc.code()

            with ThreadPoolExecutor(6) as pool:
                codes = list(pool.map(one, range(6)))
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes
    finally:
        srv.stop()


def test_generated_code_is_current() -> None:
    pytest.importorskip("grpc_tools")
    assert stale_files() == [], "run `python -m kuamo.proto.generate`"


def test_server_on_uvloop_serves_and_drains(tmp_path) -> None:
    pytest.importorskip("uvloop")
    srv = start_server(tmp_path, event_loop="uvloop").load()
    try:
        assert type(srv.loop).__module__.startswith("uvloop")
        with grpc.insecure_channel(srv.target) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING
            r = pb_grpc.SearchServiceStub(ch).Search(pb.SearchRequest(query=pb.Query(text="red dress", k=3)), timeout=5)
            assert len(r.hits) == 3 and all(h.product.title for h in r.hits)
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.SearchServiceStub(ch).Search(pb.SearchRequest(query=pb.Query(text="x", k=-1)), timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        srv.stop()


def test_uvloop_missing_is_a_clear_config_error(monkeypatch) -> None:
    import sys

    from kuamo.engine.errors import InvalidInput
    from kuamo.server.app import loop_factory
    from kuamo.server.config import ServerConfig

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    with pytest.raises(InvalidInput, match="pip install uvloop"):
        loop_factory(ServerConfig(event_loop="uvloop"))
