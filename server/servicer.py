"""The SearchService servicer: convert -> engine -> convert. Errors are raised as kuamo error types and
mapped to status codes by the interceptor; only per-item stream errors are converted here.

One class serves every API version: what differs between kuamo.v1 and kuamo.v2 is how messages turn into
engine types and back, which the version's codec does (server/convert.py V1, server/convert_v2.py V2); the
request fields the logic here reads (request_id, query, texts, images, product, image, image_chunk, user_id)
have the same names in both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any, Protocol

import grpc

from kuamo.engine.errors import InvalidInput, KuamoError, NotReady
from kuamo.engine.personal import Event
from kuamo.engine.protocol import EngineProtocol
from kuamo.engine.types import (
    EngineStats,
    Product,
    ProductId,
    Query,
    RecommendQuery,
    Rejection,
    SearchResult,
    UpsertResult,
)
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc
from kuamo.server.convert import V1
from kuamo.server.status import renamed, status_of, within

MAX_EMBED_ITEMS = 256
STREAM_ORDER_KEY = "kuamo-stream-order"  # "arrival" (default) or "completion"


def stream_order(context: Any) -> str:
    """The order a SearchStream client asked for in its metadata; a value other than the two is an error."""
    metadata = context.invocation_metadata() if context is not None else ()
    value = next((str(v) for k, v in metadata or () if k == STREAM_ORDER_KEY), "arrival")
    if value not in ("arrival", "completion"):
        raise InvalidInput(f"{STREAM_ORDER_KEY} must be 'arrival' or 'completion', got {value!r}",
                           field=STREAM_ORDER_KEY)
    return value


class Codec(Protocol):
    """One API version's messages <-> engine types (server/convert.py V1, server/convert_v2.py V2)."""

    pb: ModuleType  # the version's generated messages (EmbedResponse, Vector, DeleteResponse, ...)

    def query(self, q: Any) -> Query: ...
    def search_response(self, r: SearchResult, request_id: str) -> Any: ...
    def stream_response(self, r: SearchResult, request_id: str) -> Any: ...
    def stream_error(self, exc: KuamoError, code: grpc.StatusCode, request_id: str) -> Any: ...
    def embed_kind(self, request: Any) -> str: ...
    def recommend(self, request: Any) -> RecommendQuery: ...
    def recommend_response(self, r: SearchResult, request_id: str) -> Any: ...
    def event(self, msg: Any) -> Event: ...
    def events_response(self, recorded: int, rejected: list[Rejection]) -> Any: ...
    def product(self, p: Any) -> Product: ...
    def product_id_as_sent(self, p: Any) -> ProductId: ...
    def upsert_response(self, r: UpsertResult) -> Any: ...
    def delete_ids(self, request: Any) -> list[ProductId]: ...
    def get_id(self, request: Any) -> ProductId: ...
    def get_response(self, p: Product) -> Any: ...
    def stats_response(self, s: EngineStats) -> Any: ...


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, engine_ref: Callable[[], EngineProtocol | None], *, stream_window: int = 64,
                 upsert_chunk: int = 256, max_image_bytes: int = 20 * 1024 * 1024, codec: type[Codec] | Codec = V1
                 ) -> None:
        # engine_ref returns None until the engine is loaded and warm (requests then get UNAVAILABLE)
        self._engine_ref = engine_ref
        self.codec = codec
        self.stream_window = stream_window
        self.upsert_chunk = upsert_chunk
        self.max_image_bytes = max_image_bytes

    @property
    def engine(self) -> EngineProtocol:
        e = self._engine_ref()
        if e is None:
            raise NotReady("the server is starting: models are loading or the index is not loaded yet")
        return e

    async def Search(self, request: pb.SearchRequest, context: Any) -> pb.SearchResponse:
        try:
            result = await self.engine.search(self.codec.query(request.query))
        except KuamoError as exc:  # the engine names Query's fields; the request's path is query.<field>
            raise within(exc, "query") from None
        return self.codec.search_response(result, request.request_id)

    async def _one(self, request: Any) -> Any:
        try:
            result = await self.engine.search(self.codec.query(request.query))
        except KuamoError as exc:  # one bad query answers with its error; the stream goes on
            return self.codec.stream_error(within(exc, "query"), status_of(exc), request.request_id)
        return self.codec.stream_response(result, request.request_id)

    async def SearchStream(self, request_iterator: AsyncIterator[pb.SearchRequest], context: Any, *,
                           by_completion: bool | None = None) -> AsyncIterator[pb.SearchResponse]:
        # Queries run concurrently (so they share encoder batches); answers leave in arrival order, or as each
        # is ready when the client asks (metadata `kuamo-stream-order: completion`; request_id matches them).
        # The bounded window is back-pressure: a client that sends faster than we answer waits.
        _ = self.engine  # fail fast with UNAVAILABLE before reading anything
        if by_completion is None:
            by_completion = stream_order(context) == "completion"
        answers = self._by_completion(request_iterator) if by_completion else self._in_order(request_iterator)
        async for answer in answers:
            yield answer

    async def _in_order(self, request_iterator: AsyncIterator[pb.SearchRequest]) -> AsyncIterator[pb.SearchResponse]:
        window: asyncio.Queue[asyncio.Task | None] = asyncio.Queue(maxsize=self.stream_window)

        async def reader() -> None:
            try:
                async for req in request_iterator:
                    await window.put(asyncio.create_task(self._one(req)))
            finally:
                await window.put(None)

        read_task = asyncio.create_task(reader())
        try:
            while (task := await window.get()) is not None:
                yield await task
            await read_task  # surfaces a broken request stream
        finally:
            read_task.cancel()
            while not window.empty():
                t = window.get_nowait()
                if t is not None:
                    t.cancel()

    async def _by_completion(self, request_iterator: AsyncIterator[pb.SearchRequest]
                             ) -> AsyncIterator[pb.SearchResponse]:
        slots = asyncio.Semaphore(self.stream_window)
        ready: asyncio.Queue[pb.SearchResponse | BaseException | None] = asyncio.Queue()
        running: set[asyncio.Task] = set()

        async def answer(req: pb.SearchRequest) -> None:
            try:
                await ready.put(await self._one(req))
            except Exception as exc:  # not a per-item KuamoError: end the stream with it, as in order
                await ready.put(exc)
            finally:
                slots.release()

        async def reader() -> None:
            try:
                async for req in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(answer(req))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if running:
                    await asyncio.wait(set(running))
            finally:
                await ready.put(None)

        read_task = asyncio.create_task(reader())
        try:
            while (item := await ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
            await read_task
        finally:
            read_task.cancel()
            for task in list(running):
                task.cancel()

    async def Embed(self, request: pb.EmbedRequest, context: Any) -> pb.EmbedResponse:
        if request.texts and request.images:
            raise InvalidInput("send texts or images, not both", field="images")
        n = len(request.texts) or len(request.images)
        if n == 0:
            raise InvalidInput("send at least one text or image", field="texts")
        if n > MAX_EMBED_ITEMS:
            raise InvalidInput(f"at most {MAX_EMBED_ITEMS} items per call, got {n}",
                               field="texts" if request.texts else "images")
        try:
            if request.texts:
                vecs = await self.engine.embed_text(list(request.texts), self.codec.embed_kind(request))
            else:
                vecs = await self.engine.embed_image(list(request.images))
        except KuamoError as exc:
            raise renamed(exc, {"image": "images", "text": "texts"}) from None
        m = self.codec.pb
        return m.EmbedResponse(dim=int(vecs.shape[1]), vectors=[m.Vector(values=v.tolist()) for v in vecs])

    async def Recommend(self, request: pb.RecommendRequest, context: Any) -> pb.SearchResponse:
        result = await self.engine.recommend(self.codec.recommend(request))
        return self.codec.recommend_response(result, request.request_id)

    async def RecordEvents(self, request_iterator: AsyncIterator[pb.Event], context: Any) -> pb.RecordEventsResponse:
        engine = self.engine
        recorded, rejected, batch, offset = 0, [], [], 0

        async def flush() -> None:
            nonlocal recorded, offset
            n, rej = await engine.record_events(batch)
            recorded += n
            # a row refused for its kind or time still names the product it was sent with
            rejected.extend(Rejection(row=r.row + offset, id=batch[r.row].product_id if r.id is None else r.id,
                                      field=r.field, reason=r.reason) for r in rej)
            offset += len(batch)
            batch.clear()

        async for e in request_iterator:
            batch.append(self.codec.event(e))
            if len(batch) >= self.upsert_chunk:
                await flush()
        if batch:
            await flush()
        return self.codec.events_response(recorded, rejected)

    async def ForgetUser(self, request: pb.ForgetUserRequest, context: Any) -> pb.ForgetUserResponse:
        return self.codec.pb.ForgetUserResponse(events_deleted=await self.engine.forget_user(request.user_id))

    async def Upsert(self, request_iterator: AsyncIterator[pb.UpsertRequest], context: Any) -> pb.UpsertResponse:
        engine = self.engine
        accepted: list[ProductId] = []
        unchanged: list[ProductId] = []
        rejected: list[Rejection] = []
        products: list[Product] = []
        images: list[bytearray | None] = []
        rows: list[int] = []  # stream position of each buffered product
        seen: set[ProductId] = set()
        n = 0

        async def flush() -> None:
            if not products:
                return
            res: UpsertResult = await engine.upsert(list(products), [bytes(b) if b else None for b in images])
            accepted.extend(res.accepted)
            unchanged.extend(res.unchanged)
            rejected.extend(Rejection(row=rows[r.row] if 0 <= r.row < len(rows) else r.row, id=r.id, field=r.field,
                                      reason=r.reason) for r in res.rejected)
            products.clear()
            images.clear()
            rows.clear()

        async for msg in request_iterator:
            if msg.image_chunk and not msg.HasField("product"):
                if not products:
                    raise InvalidInput("image_chunk must follow a message carrying its product", field="image_chunk")
                buf = images[-1] if images[-1] is not None else bytearray()
                if len(buf) + len(msg.image_chunk) > self.max_image_bytes:
                    raise InvalidInput(f"image of product {products[-1].id} exceeds {self.max_image_bytes} bytes",
                                       field="image_chunk")
                buf.extend(msg.image_chunk)
                images[-1] = buf
                continue
            if not msg.HasField("product"):
                raise InvalidInput(f"message {n} carries no product", field="product")
            row = n
            n += 1
            try:
                product = self.codec.product(msg.product)
            except KuamoError as exc:
                rejected.append(Rejection(row=row, id=self.codec.product_id_as_sent(msg.product),
                                          field=exc.field or "product", reason=exc.message))
                continue
            if product.id in seen:
                rejected.append(Rejection(row=row, id=product.id, field="id",
                                          reason="duplicate id in this upsert stream (the first one was kept)"))
                continue
            seen.add(product.id)
            products.append(product)
            images.append(bytearray(msg.image) if msg.image else None)
            rows.append(row)
            if msg.image_chunk:
                images[-1] = (images[-1] or bytearray()) + msg.image_chunk
            # flush only when the next message cannot be an image_chunk of the last product: keep one back
            if len(products) > self.upsert_chunk:
                last = (products.pop(), images.pop(), rows.pop())
                await flush()
                products.append(last[0])
                images.append(last[1])
                rows.append(last[2])
        await flush()
        return self.codec.upsert_response(UpsertResult(accepted=accepted, rejected=rejected, unchanged=unchanged))

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteResponse:
        ids = self.codec.delete_ids(request)
        if not ids:
            raise InvalidInput("give at least one id (ids or keys)", field="ids")
        return self.codec.pb.DeleteResponse(deleted=await self.engine.delete(ids))

    async def GetProduct(self, request: pb.GetProductRequest, context: Any) -> pb.Product:
        return self.codec.get_response(await self.engine.get(self.codec.get_id(request)))

    async def Stats(self, request: pb.StatsRequest, context: Any) -> pb.StatsResponse:
        return self.codec.stats_response(await self.engine.stats())
