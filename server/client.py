"""Python client: `AsyncClient` (grpc.aio) and `Client`, a thin synchronous wrapper that runs the async
client on a private event loop thread. Both speak engine types (Query, Product, SearchResult)."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kuamo.engine.personal import Event
from kuamo.engine.types import Product, ProductId, Query, RecommendQuery, SearchResult, UpsertResult
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc
from kuamo.server import convert

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


class StreamItemError(Exception):
    """One query of a SearchStream failed; the stream went on."""

    def __init__(self, request_id: str, code: grpc.StatusCode, message: str, field: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.request_id, self.code, self.message, self.field = request_id, code, message, field


def _code(value: int) -> grpc.StatusCode:
    return next((c for c in grpc.StatusCode if c.value[0] == value), grpc.StatusCode.UNKNOWN)


def make_query(text: str | None = None, *, image: bytes | None = None, **kw: Any) -> Query:
    return Query(text=text, image=image, **kw)


class AsyncClient:
    def __init__(self, target: str = "127.0.0.1:50051", *, token: str | None = None, tls_ca: Path | None = None,
                 tls_client_cert: Path | None = None, tls_client_key: Path | None = None,
                 timeout: float = 10.0, retries: int = 3, max_message_mb: int = 16,
                 server_name: str | None = None) -> None:
        opts: list[tuple[str, Any]] = [("grpc.max_send_message_length", max_message_mb << 20),
                                       ("grpc.max_receive_message_length", max_message_mb << 20)]
        if server_name:
            opts.append(("grpc.ssl_target_name_override", server_name))
        if tls_ca is not None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=Path(tls_ca).read_bytes(),
                private_key=Path(tls_client_key).read_bytes() if tls_client_key else None,
                certificate_chain=Path(tls_client_cert).read_bytes() if tls_client_cert else None)
            self.channel = aio.secure_channel(target, creds, options=opts)
        else:
            self.channel = aio.insecure_channel(target, options=opts)
        self.stub = pb_grpc.SearchServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout, self.retries = timeout, retries
        self._ids = itertools.count()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        """Unary call with retries (jittered backoff) while the server is UNAVAILABLE (starting, draining)."""
        for attempt in itertools.count():
            try:
                return await method(request, timeout=timeout or self.timeout, metadata=self.metadata)
            except aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE or attempt >= self.retries:
                    raise
                await asyncio.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    async def health(self, service: str = "") -> str:
        r = await self.health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(r.status)

    async def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until the server reports SERVING (models warm, index loaded)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                if await self.health() == "SERVING":
                    return
            except aio.AioRpcError:
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"server not SERVING after {timeout:.0f} s")
            await asyncio.sleep(0.2)

    async def search(self, query: Query | str, *, timeout: float | None = None, **kw: Any) -> SearchResult:
        q = make_query(query, **kw) if isinstance(query, str) else query
        r = await self._call(self.stub.Search, pb.SearchRequest(query=convert.query_to_pb(q)), timeout)
        return convert.result_from_pb(r)

    async def search_pb(self, request: pb.SearchRequest, *, timeout: float | None = None) -> pb.SearchResponse:
        return await self._call(self.stub.Search, request, timeout)

    async def search_stream(self, queries: Iterable[Query] | AsyncIterable[Query], *,
                            timeout: float | None = None) -> AsyncIterator[SearchResult | StreamItemError]:
        """Results in query order; a failed query yields a StreamItemError in its place."""

        async def requests() -> AsyncIterator[pb.SearchRequest]:
            if isinstance(queries, AsyncIterable):
                async for q in queries:
                    yield pb.SearchRequest(request_id=str(next(self._ids)), query=convert.query_to_pb(q))
            else:
                for q in queries:
                    yield pb.SearchRequest(request_id=str(next(self._ids)), query=convert.query_to_pb(q))

        call = self.stub.SearchStream(requests(), timeout=timeout, metadata=self.metadata)
        async for r in call:
            if r.HasField("error"):
                yield StreamItemError(r.request_id, _code(r.error.code), r.error.message, r.error.field)
            else:
                yield convert.result_from_pb(r)

    async def embed(self, texts: Sequence[str] = (), images: Sequence[bytes] = (), *, kind: str = "query",
                    timeout: float | None = None) -> np.ndarray:
        r = await self._call(self.stub.Embed, pb.EmbedRequest(texts=texts, images=images, kind=kind), timeout)
        return np.asarray([v.values for v in r.vectors], dtype=np.float32).reshape(len(r.vectors), r.dim)

    async def upsert(self, products: Iterable[Product], images: Iterable[bytes | None] | None = None, *,
                     chunk_bytes: int = 1 << 20, timeout: float | None = None) -> UpsertResult:
        """Stream products (and their photos, split into chunks of chunk_bytes) in one Upsert call."""
        imgs = iter(images) if images is not None else itertools.repeat(None)

        async def requests() -> AsyncIterator[pb.UpsertRequest]:
            for p, img in zip(products, imgs, strict=False):
                img = img or b""
                yield pb.UpsertRequest(product=convert.product_to_pb(p), image=img[:chunk_bytes])
                for off in range(chunk_bytes, len(img), chunk_bytes):
                    yield pb.UpsertRequest(image_chunk=img[off: off + chunk_bytes])

        r = await self.stub.Upsert(requests(), timeout=timeout, metadata=self.metadata)
        return convert.upsert_result_from_pb(r)

    async def delete(self, ids: Sequence[ProductId], *, timeout: float | None = None) -> int:
        """Delete by the catalog's ids: integers, strings, or both."""
        req = pb.DeleteRequest(ids=[i for i in ids if not isinstance(i, str)],
                               keys=[i for i in ids if isinstance(i, str)])
        return int((await self._call(self.stub.Delete, req, timeout)).deleted)

    async def get(self, product_id: ProductId, *, timeout: float | None = None) -> Product:
        id, key = convert.id_to_pb(product_id)
        return convert.product_from_pb(await self._call(self.stub.GetProduct, pb.GetProductRequest(id=id, key=key),
                                                        timeout))

    async def recommend(self, query: RecommendQuery, *, timeout: float | None = None) -> SearchResult:
        r = await self._call(self.stub.Recommend, convert.recommend_to_pb(query), timeout)
        return convert.result_from_pb(r)

    async def record_events(self, events: Iterable[Event], *, timeout: float | None = None) -> pb.RecordEventsResponse:
        async def requests() -> AsyncIterator[pb.Event]:
            for e in events:
                yield convert.event_to_pb(e)

        return await self.stub.RecordEvents(requests(), timeout=timeout or self.timeout, metadata=self.metadata)

    async def forget_user(self, user_id: str, *, timeout: float | None = None) -> int:
        r = await self._call(self.stub.ForgetUser, pb.ForgetUserRequest(user_id=user_id), timeout)
        return int(r.events_deleted)

    async def stats(self, *, timeout: float | None = None) -> pb.StatsResponse:
        return await self._call(self.stub.Stats, pb.StatsRequest(), timeout)


class Client:
    """Synchronous wrapper: every AsyncClient coroutine method, called and awaited on a private loop."""

    def __init__(self, target: str = "127.0.0.1:50051", **kw: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kuamo-client", daemon=True)
        self._thread.start()
        self._async = self._run(self._make(target, kw))

    @staticmethod
    async def _make(target: str, kw: dict[str, Any]) -> AsyncClient:
        return AsyncClient(target, **kw)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._async, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr
        return lambda *a, **kw: self._run(attr(*a, **kw))

    def search_stream(self, queries: Iterable[Query], **kw: Any) -> list[SearchResult | StreamItemError]:
        async def collect() -> list[SearchResult | StreamItemError]:
            return [r async for r in self._async.search_stream(list(queries), **kw)]

        return self._run(collect())

    def close(self) -> None:
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
