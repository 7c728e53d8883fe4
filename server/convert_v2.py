"""kuamo.v2 messages <-> engine types, on server/convert.py's shared readers and fillers: what is new in v2 is
here (one string id per product, the Weights message, enums for event and embed kinds, Timestamp, Struct,
ItemStatus in streams, one response message per RPC). V2 is the codec the servicer calls for this version."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from kuamo.engine.errors import KuamoError
from kuamo.engine.ids import ProductId, canonical_id
from kuamo.engine.personal import Event
from kuamo.engine.types import (
    EngineStats,
    Filters,
    Hit,
    Product,
    Query,
    RecommendQuery,
    Rejection,
    SearchResult,
    UpsertResult,
)
from kuamo.proto.kuamo.v2 import kuamo_pb2 as pb
from kuamo.server import convert
from kuamo.server.status import status_for

# The engine's names of an event's fields, as paths in RecordEventsRequest
EVENT_FIELDS = {"user_id": "event.user_id", "product_id": "event.product_id", "kind": "event.kind",
                "ts": "event.time"}
EVENT_KIND_PREFIX = "EVENT_KIND_"
EMBED_KINDS = {pb.EMBED_KIND_UNSPECIFIED: "query", pb.EMBED_KIND_QUERY: "query", pb.EMBED_KIND_DOCUMENT: "document"}


def product_id(raw: str, field: str) -> ProductId:
    """A v2 id (always a string) as the engine's id: "123" is the integer id 123, as in v1's `key`."""
    return canonical_id(raw, field)


def filters_from_pb(f: pb.Filters) -> Filters:
    return Filters(category_prefix=f.category_prefix or None, brands=tuple(f.brands),
                   price_min=convert._opt(f, "price_min"), price_max=convert._opt(f, "price_max"),
                   min_rating=convert._opt(f, "min_rating"),
                   attributes={k: convert.attr_from_pb(v, f"filters.attributes.{k}") for k, v in f.attributes.items()},
                   ids=tuple(product_id(i, "filters.ids") for i in f.ids))


def weights_from_pb(w: pb.Weights) -> dict[str, float]:
    """The typed Weights as the engine's block -> weight map (unset fields: the server's default)."""
    out = {name: getattr(w, name) for name in ("text", "image", "rating", "price", "category") if w.HasField(name)}
    out.update(w.attributes)
    return out


def query_from_pb(q: pb.Query) -> Query:
    return convert.query_from_pb(q, filters=filters_from_pb, weights=weights_from_pb)


def product_from_pb(p: pb.Product, field: str = "product") -> Product:
    return Product(id=product_id(p.id, f"{field}.id"), **convert.product_fields(p, field))


def product_to_pb(p: Product) -> pb.Product:
    m = pb.Product(id=str(p.id))
    return convert.fill_product_fields(m, p)


def _fill_hit(out: pb.Hit, h: Hit) -> pb.Hit:
    out.id = str(h.id)
    if h.product is not None:
        out.product.id = str(h.product.id)
        convert.fill_product_fields(out.product, h.product)
    return convert.fill_hit_fields(out, h)


def event_from_pb(m: pb.RecordEventsRequest) -> Event:
    e = m.event
    name = pb.EventKind.Name(e.kind) if e.kind in pb.EventKind.values() else ""
    # EVENT_KIND_ADD_TO_CART -> "add_to_cart"; unset or unknown -> "" (the engine rejects the row, naming kind)
    kind = name[len(EVENT_KIND_PREFIX):].lower() if e.kind != pb.EVENT_KIND_UNSPECIFIED else ""
    return Event(user_id=e.user_id, product_id=product_id(e.product_id, "event.product_id") if e.product_id else -1,
                 kind=kind, ts=e.time.ToNanoseconds() / 1e9 if e.HasField("time") else None)


def event_to_pb(e: Event) -> pb.RecordEventsRequest:
    """For clients (and tests): the engine's event as a v2 request."""
    ts = None
    if e.ts is not None:
        ts = timestamp_pb2.Timestamp()
        ts.FromNanoseconds(int(e.ts * 1e9))
    return pb.RecordEventsRequest(event=pb.ShopperEvent(
        user_id=e.user_id, product_id=str(e.product_id), time=ts,
        kind=pb.EventKind.Value(EVENT_KIND_PREFIX + e.kind.upper())))


def rejection_to_pb(x: Rejection, fields: dict[str, str] | None = None) -> pb.Rejection:
    """A rejected row: its id as sent when it was a valid id (else ""), its field as a path in the message."""
    try:
        pid = "" if x.id is None or x.id == -1 else str(canonical_id(x.id))
    except KuamoError:
        pid = ""
    return pb.Rejection(row=x.row, id=pid, field=(fields or {}).get(x.field, x.field), reason=x.reason)


class V2:
    """kuamo.v2 for the servicer (the same methods as server/convert.py's V1)."""

    pb = pb
    query = staticmethod(query_from_pb)
    event = staticmethod(event_from_pb)
    product = staticmethod(product_from_pb)

    @staticmethod
    def recommend(r: pb.RecommendRequest) -> RecommendQuery:
        return convert.recommend_from_pb(r, example_id=lambda e, field: product_id(e.id, field),
                                         filters=filters_from_pb)

    @staticmethod
    def search_response(r: SearchResult, request_id: str) -> pb.SearchResponse:
        return convert.result_to_pb(r, request_id, pb.SearchResponse(), _fill_hit)

    @staticmethod
    def recommend_response(r: SearchResult, request_id: str) -> pb.RecommendResponse:
        return convert.result_to_pb(r, request_id, pb.RecommendResponse(), _fill_hit)

    @staticmethod
    def stream_response(r: SearchResult, request_id: str) -> pb.SearchStreamResponse:
        return convert.result_to_pb(r, request_id, pb.SearchStreamResponse(), _fill_hit)

    @staticmethod
    def stream_error(exc: KuamoError, code: grpc.StatusCode, request_id: str) -> pb.SearchStreamResponse:
        st = status_for(exc)  # the google.rpc.Status a failed Search would carry, field for field
        return pb.SearchStreamResponse(request_id=request_id,
                                       error=pb.ItemStatus(code=st.code, message=st.message, details=st.details))

    @staticmethod
    def embed_kind(request: pb.EmbedRequest) -> str:
        return EMBED_KINDS.get(request.kind, str(request.kind))  # an unknown number: the engine names it

    @staticmethod
    def product_id_as_sent(p: pb.Product) -> str:
        return p.id

    @staticmethod
    def events_response(recorded: int, rejected: list[Rejection]) -> pb.RecordEventsResponse:
        return pb.RecordEventsResponse(recorded=recorded,
                                       rejected=[rejection_to_pb(r, EVENT_FIELDS) for r in rejected])

    @staticmethod
    def upsert_response(r: UpsertResult) -> pb.UpsertResponse:
        return pb.UpsertResponse(accepted_ids=[str(i) for i in r.accepted], unchanged_ids=[str(i) for i in r.unchanged],
                                 rejected=[rejection_to_pb(x) for x in r.rejected])

    @staticmethod
    def delete_ids(request: pb.DeleteRequest) -> list[ProductId]:
        return [product_id(i, "ids") for i in request.ids]

    @staticmethod
    def get_id(request: pb.GetProductRequest) -> ProductId:
        return product_id(request.id, "id")

    @staticmethod
    def get_response(p: Product) -> pb.GetProductResponse:
        return pb.GetProductResponse(product=product_to_pb(p))

    @staticmethod
    def stats_response(s: EngineStats) -> pb.StatsResponse:
        out = pb.StatsResponse(products=s.products, indexed=s.indexed, store_seq=s.store_seq, index_seq=s.index_seq)
        out.details.update(convert.stats_details(s))
        return out
