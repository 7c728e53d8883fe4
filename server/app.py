"""The kuamo gRPC server: binds first (health NOT_SERVING), loads and warms the engine, then SERVING;
on shutdown NOT_SERVING first, in-flight calls get `grace_s`, then the engine snapshots and closes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from kuamo.engine.backends import MilvusSettings
from kuamo.engine.batcher import BatcherConfig
from kuamo.engine.config import EncoderConfig, SessionConfig
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput
from kuamo.engine.protocol import EngineProtocol
from kuamo.engine.types import Query
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc
from kuamo.proto.kuamo.v2 import kuamo_pb2 as pb2
from kuamo.proto.kuamo.v2 import kuamo_pb2_grpc as pb2_grpc
from kuamo.server.config import ServerConfig
from kuamo.server.convert_v2 import V2
from kuamo.server.http_gateway import HttpGateway
from kuamo.server.interceptor import ServiceInterceptor
from kuamo.server.metrics import ServerMetrics
from kuamo.server.servicer import SearchServicer

T = TypeVar("T")

log = logging.getLogger("kuamo.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SearchService"].full_name
SERVICE_NAME_V2 = pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
STATS_REFRESH_S = 2.0


def engine_config(cfg: ServerConfig) -> EngineConfig:
    batch = BatcherConfig(max_batch_size=cfg.max_batch_size if cfg.batching else 1,
                          max_wait_ms=cfg.max_wait_ms if cfg.batching else 0.0, max_queue=cfg.max_queue,
                          workers=cfg.text_workers)
    session = SessionConfig(intra_op_threads=cfg.ort_threads, allow_spinning=cfg.ort_spinning)
    encoder = EncoderConfig(model_dir=cfg.model_dir, session=session, max_image_pixels=cfg.max_image_pixels)
    return EngineConfig(model_dir=cfg.model_dir, data_dir=cfg.data_dir, encoder=encoder, text_batcher=batch,
                        image_batcher=dataclasses.replace(batch, workers=1, max_batch_size=cfg.image_max_batch_size
                                                          if cfg.batching else 1),
                        backend=cfg.backend, milvus=milvus_settings(cfg), query_cache_entries=cfg.query_cache_entries,
                        query_cache_bytes=cfg.query_cache_mb << 20, lexical_weight=cfg.lexical_weight,
                        understanding_weight=cfg.understanding_weight, result_cache_entries=cfg.result_cache_entries)


def milvus_settings(cfg: ServerConfig) -> MilvusSettings:
    return MilvusSettings(uri=cfg.milvus_uri, token=cfg.milvus_token, collection=cfg.milvus_collection,
                          index_type=cfg.milvus_index, consistency=cfg.milvus_consistency)


def _warmup_image() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 128), (200, 30, 40)).save(buf, format="JPEG")
    return buf.getvalue()


async def warm_up(engine: EngineProtocol) -> None:
    """First ORT runs allocate and pick kernels; do them before SERVING so no caller pays for it."""
    for text in ("warm up", "红色连衣裙", "a much longer product title to warm the longer sequence shapes too"):
        await engine.embed_text([text])
    try:
        await engine.embed_image([_warmup_image()] * 2)
    except Exception as exc:  # an engine without an image tower is still a valid server
        log.info("image warm-up skipped: %s", exc)
    await engine.search(Query(text="warm up", k=10))


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def reflection_v1_handler(names: tuple[str, ...]) -> grpc.GenericRpcHandler:
    """gRPC reflection v1 beside v1alpha (grpcio-reflection ships v1alpha only; v1 clients such as newer grpcurl
    and Postman get UNIMPLEMENTED without it). The two protos declare the same messages with the same field
    numbers, so v1alpha's servicer answers v1 requests byte for byte."""
    servicer = reflection.aio.ReflectionServicer(names)
    method = grpc.stream_stream_rpc_method_handler(servicer.ServerReflectionInfo,
                                                   request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                                                   response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    return grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": method})


def _read(path: Any) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class KuamoServer:
    def __init__(self, cfg: ServerConfig, *,
                 engine_factory: Callable[[], Awaitable[EngineProtocol]] | None = None) -> None:
        self.cfg = cfg
        self._engine_factory = engine_factory or (lambda: Engine.open(engine_config(cfg)))
        self.engine: EngineProtocol | None = None
        self.metrics = ServerMetrics()
        self.interceptor = ServiceInterceptor(metrics=self.metrics, tokens=cfg.tokens, max_inflight=cfg.max_inflight)
        self.health = health.aio.HealthServicer()
        self.servicer = SearchServicer(lambda: self.engine, stream_window=cfg.stream_window)
        # kuamo.v2 beside v1: the same servicer logic and engine, v2's messages (server/convert_v2.py)
        self.servicer_v2 = SearchServicer(lambda: self.engine, stream_window=cfg.stream_window, codec=V2)
        self.server: aio.Server | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.http: HttpGateway | None = None
        self.http_port: int | None = None
        self.ready = asyncio.Event()
        self._stats_task: asyncio.Task | None = None

    async def _set_health(self, status: Any) -> None:
        for name in ("", SERVICE_NAME, SERVICE_NAME_V2):
            await self.health.set(name, status)

    def _credentials(self) -> grpc.ServerCredentials | None:
        c = self.cfg
        if c.tls_cert is None or c.tls_key is None:
            return None
        ca = _read(c.tls_client_ca) if c.tls_client_ca is not None else None
        return grpc.ssl_server_credentials([(_read(c.tls_key), _read(c.tls_cert))], root_certificates=ca,
                                           require_client_auth=ca is not None)

    def _ssl_context(self) -> ssl.SSLContext | None:
        """The gRPC TLS settings for the HTTP site: same certificate, same client-certificate rule."""
        c = self.cfg
        if c.tls_cert is None or c.tls_key is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(c.tls_cert, c.tls_key)
        if c.tls_client_ca is not None:
            ctx.load_verify_locations(c.tls_client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def start(self) -> int:
        """Bind and start serving health/reflection; returns the port. Then call `load()`."""
        max_bytes = self.cfg.max_message_mb * 1024 * 1024
        self.server = aio.server(interceptors=[self.interceptor], options=[
            ("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes),
            ("grpc.so_reuseport", 0)])
        pb_grpc.add_SearchServiceServicer_to_server(self.servicer, self.server)
        pb2_grpc.add_SearchServiceServicer_to_server(self.servicer_v2, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        await self._set_health(NOT_SERVING)
        names = (SERVICE_NAME, SERVICE_NAME_V2, health.SERVICE_NAME, reflection.SERVICE_NAME, REFLECTION_V1)
        reflection.enable_server_reflection(names, self.server)
        self.server.add_generic_rpc_handlers((reflection_v1_handler(names),))
        address = f"{self.cfg.host}:{self.cfg.port}"
        creds = self._credentials()
        self.port = self.server.add_secure_port(address, creds) if creds else self.server.add_insecure_port(address)
        if not self.port:
            raise OSError(f"could not bind {address}")
        await self.server.start()
        if self.cfg.metrics_port >= 0:
            self.metrics_port = self.metrics.serve_http(self.cfg.metrics_host, self.cfg.metrics_port)
        if self.cfg.http_port >= 0:
            self.http = HttpGateway(self, max_body_bytes=max_bytes, catalog_dir=self.cfg.catalog_dir)
            self.http_port = await self.http.start(self.cfg.host, self.cfg.http_port, self._ssl_context())
        log.info("listening on %s:%s (%s, auth %s)", self.cfg.host, self.port, "TLS" if creds else "plaintext",
                 "on" if self.cfg.tokens else "off")
        return self.port

    async def load(self) -> None:
        """Open and warm the engine, then report SERVING."""
        t0 = time.perf_counter()
        engine = await self._engine_factory()
        await warm_up(engine)
        self.engine = engine
        self._stats_task = asyncio.create_task(self._refresh_stats())
        await self._set_health(SERVING)
        self.ready.set()
        log.info("serving after %.1f s of loading", time.perf_counter() - t0)

    async def _refresh_stats(self) -> None:
        """Every STATS_REFRESH_S: the metrics' engine figures, and health follows the engine's (a shared backend
        that stops answering turns the replica NOT_SERVING, and SERVING again once it answers)."""
        serving = True
        while self.engine is not None:
            try:
                h = await self.engine.health()
                if h.ready != serving and self.engine is not None:
                    serving = h.ready
                    await self._set_health(SERVING if serving else NOT_SERVING)
                    log.warning("health %s: %s", "SERVING" if serving else "NOT_SERVING", h.reason)
                s = await self.engine.stats()
                self.metrics.engine.snapshot = {"indexed": s.indexed, "products": s.products,
                                                "index_kind": s.index.get("kind", ""), "batchers": s.batchers,
                                                "query_cache": s.query_cache, "result_cache": s.result_cache}
            except Exception as exc:  # metrics must never take the server down
                log.debug("stats refresh failed: %s", exc)
            await asyncio.sleep(STATS_REFRESH_S)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: NOT_SERVING, stop accepting, let in-flight calls finish, then close the engine."""
        if self._stats_task is not None:
            self._stats_task.cancel()  # first: it must not set SERVING again while draining
        await self._set_health(NOT_SERVING)
        if self.http is not None:
            await self.http.stop()
        if self.server is not None:
            await self.server.stop(self.cfg.grace_s if grace is None else grace)
        if self._stats_task is not None:
            self._stats_task.cancel()
        engine, self.engine = self.engine, None
        close = getattr(engine, "close", None)
        if close is not None:
            await close()
        self.metrics.close()

    async def wait(self) -> None:
        if self.server is not None:
            await self.server.wait_for_termination()


def loop_factory(cfg: ServerConfig) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop the config names (uvloop: a libuv loop, fewer Python steps per RPC)."""
    if cfg.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError as exc:
            raise InvalidInput("event_loop uvloop needs the uvloop package (pip install uvloop)",
                               field="event_loop") from exc
        return uvloop.new_event_loop
    return asyncio.new_event_loop


@contextlib.contextmanager
def gil_switch_interval(ms: float) -> Iterator[None]:
    """Python's GIL switch interval set to `ms` (0 = left as it is) while serving, then put back
    (ServerConfig.gil_switch_interval_ms says why)."""
    before = sys.getswitchinterval()
    if ms > 0:
        sys.setswitchinterval(ms / 1000)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def run_loop(cfg: ServerConfig, main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=loop_factory(cfg)) as runner:
        return runner.run(main)


async def serve(cfg: ServerConfig, *, on_ready: Callable[[KuamoServer], Awaitable[None]] | None = None,
                stop_event: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or stop_event); on_ready runs once the server is SERVING."""
    import signal

    srv = KuamoServer(cfg)
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    with gil_switch_interval(cfg.gil_switch_interval_ms):
        await srv.start()
        try:
            await srv.load()
            if on_ready is not None:
                await on_ready(srv)
            await stop.wait()
        finally:
            await srv.stop()
