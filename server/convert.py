"""Proto messages <-> engine types. Only shape checks live here (which oneof is set, limits of the wire
format); the engine validates meaning (weights, ranges, filters) and names the field at fault.

The functions are for kuamo.v1; the helpers that read or fill fields both versions share (attributes,
modifiers, product and query fields, hits, timings) take any version's messages, and server/convert_v2.py
builds on them. V1 is the codec the servicer (server/servicer.py) calls for this version."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc

from kuamo.engine.errors import InvalidInput, KuamoError
from kuamo.engine.ids import ProductId, canonical_id, row_key
from kuamo.engine.personal import Event
from kuamo.engine.types import (
    AttrValue,
    EngineStats,
    Explanation,
    Filters,
    Hit,
    Modifiers,
    Product,
    Query,
    RecommendQuery,
    Rejection,
    SearchResult,
    Timings,
    UpsertResult,
)
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb

DEFAULT_K = 10


def attr_from_pb(v: pb.AttrValue, field: str) -> AttrValue:
    kind = v.WhichOneof("kind")
    if kind is None:
        raise InvalidInput("attribute value has no kind set (string/int/double/bool)", field=field)
    return getattr(v, kind)


def _set_attr(m: pb.AttrValue, v: AttrValue) -> pb.AttrValue:
    if isinstance(v, bool):
        m.bool_value = v
    elif isinstance(v, int):
        m.int_value = v
    elif isinstance(v, float):
        m.double_value = v
    else:
        m.string_value = str(v)
    return m


def attr_to_pb(v: AttrValue) -> pb.AttrValue:
    return _set_attr(pb.AttrValue(), v)


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def id_from_pb(id: int, key: str, field: str = "id") -> ProductId:
    """A product named on the wire: `key` (the catalog's id as text) when set, else the int64 `id`."""
    return canonical_id(key, field) if key else id


def id_to_pb(pid: ProductId) -> tuple[int, str]:
    """(int64 id, key) for a product id: the row key and the id as text. An empty or negative id goes out
    as id -1 and key "" so that the other side refuses it instead of reading an unset field."""
    if isinstance(pid, str):
        return (row_key(pid) if pid else -1), pid
    return int(pid), str(int(pid)) if int(pid) >= 0 else ""


def _ids_from_pb(ids: Any, keys: Any, field: str) -> tuple[ProductId, ...]:
    return (*ids, *(canonical_id(k, field) for k in keys))


def filters_from_pb(f: pb.Filters) -> Filters:
    return Filters(category_prefix=f.category_prefix or None, brands=tuple(f.brands),
                   price_min=_opt(f, "price_min"), price_max=_opt(f, "price_max"), min_rating=_opt(f, "min_rating"),
                   attributes={k: attr_from_pb(v, f"filters.attributes.{k}") for k, v in f.attributes.items()},
                   ids=_ids_from_pb(f.ids, f.keys, "filters.keys"))


def filters_to_pb(f: Filters) -> pb.Filters:
    return pb.Filters(category_prefix=f.category_prefix or "", brands=list(f.brands), price_min=f.price_min,
                      price_max=f.price_max, min_rating=f.min_rating,
                      attributes={k: attr_to_pb(v) for k, v in f.attributes.items()},
                      ids=[i for i in f.ids if not isinstance(i, str)], keys=[i for i in f.ids if isinstance(i, str)])


def modifiers_from_pb(m: pb.Modifiers) -> Modifiers:
    return Modifiers(rating_factor=m.rating_factor, popularity_weight=m.popularity_weight,
                     popularity_field=m.popularity_field or "popularity", brand_boosts=dict(m.brand_boosts))


def modifiers_to_pb(m: Modifiers) -> pb.Modifiers:
    return pb.Modifiers(rating_factor=m.rating_factor, popularity_weight=m.popularity_weight,
                        popularity_field=m.popularity_field, brand_boosts=dict(m.brand_boosts))


def query_from_pb(q: Any, *, filters: Callable[[Any], Filters] = filters_from_pb,
                  weights: Callable[[Any], dict[str, float]] = dict) -> Query:
    """Any version's Query: the fields they share read here, filters and weights by the version's readers."""
    k = q.k if q.HasField("k") else DEFAULT_K
    return Query(text=q.text or None, image=q.image or None, rating=_opt(q, "rating"), price=_opt(q, "price"),
                 targets=dict(q.targets), weights=weights(q.weights), filters=filters(q.filters),
                 modifiers=modifiers_from_pb(q.modifiers), k=k, nprobe=_opt(q, "nprobe"),
                 rerank_factor=_opt(q, "rerank_factor"), explain=q.explain, include_products=not q.omit_products,
                 user_id=q.user_id or None, user_weight=_opt(q, "user_weight"), collapse=q.collapse or None)


def query_to_pb(q: Query) -> pb.Query:
    return pb.Query(text=q.text or "", image=q.image or b"", rating=q.rating, price=q.price, targets=q.targets,
                    weights=q.weights, filters=filters_to_pb(q.filters), modifiers=modifiers_to_pb(q.modifiers),
                    k=q.k, nprobe=q.nprobe, rerank_factor=q.rerank_factor, explain=q.explain,
                    omit_products=not q.include_products, user_id=q.user_id or "", user_weight=q.user_weight,
                    collapse=q.collapse or "")


def _examples(items: Any, field: str, example_id: Callable[[Any, str], ProductId] | None = None
              ) -> dict[ProductId, float]:
    out: dict[ProductId, float] = {}
    for e in items:
        pid = example_id(e, field) if example_id is not None else id_from_pb(e.id, e.key, field)
        if pid in out:
            raise InvalidInput(f"product {pid!r} is listed twice", field=field)
        out[pid] = e.weight if e.weight != 0 else 1.0
    return out


def example_to_pb(pid: ProductId, weight: float) -> pb.Example:
    id, key = id_to_pb(pid)
    return pb.Example(id=id, key=key, weight=weight)


def recommend_from_pb(r: Any, *, example_id: Callable[[Any, str], ProductId] | None = None,
                      filters: Callable[[Any], Filters] = filters_from_pb) -> RecommendQuery:
    """Any version's RecommendRequest; example_id reads an Example's product id (v1: id or key)."""
    return RecommendQuery(user_id=r.user_id or None, positives=_examples(r.positives, "positives", example_id),
                          negatives=_examples(r.negatives, "negatives", example_id), filters=filters(r.filters),
                          modifiers=modifiers_from_pb(r.modifiers), k=r.k if r.HasField("k") else DEFAULT_K,
                          explain=r.explain, include_products=not r.omit_products,
                          include_purchased=r.include_purchased)


def recommend_to_pb(q: RecommendQuery) -> pb.RecommendRequest:
    return pb.RecommendRequest(user_id=q.user_id or "", positives=[example_to_pb(i, w) for i, w in
                                                                   q.positives.items()],
                               negatives=[example_to_pb(i, w) for i, w in q.negatives.items()],
                               filters=filters_to_pb(q.filters), modifiers=modifiers_to_pb(q.modifiers), k=q.k,
                               explain=q.explain, omit_products=not q.include_products,
                               include_purchased=q.include_purchased)


def event_from_pb(e: pb.Event) -> Event:
    return Event(user_id=e.user_id, product_id=id_from_pb(e.product_id, e.product_key, "product_key"), kind=e.kind,
                 ts=e.timestamp or None)


def event_to_pb(e: Event) -> pb.Event:
    id, key = id_to_pb(e.product_id)
    return pb.Event(user_id=e.user_id, product_id=id, product_key=key, kind=e.kind, timestamp=e.ts or 0.0)


def product_from_pb(p: pb.Product, field: str = "product") -> Product:
    return Product(id=id_from_pb(p.id, p.key, f"{field}.key"), **product_fields(p, field))


def product_fields(p: Any, field: str) -> dict[str, Any]:
    """Every Product field but the id, from any version's Product message."""
    return dict(title=p.title, description=p.description, category=p.category, brand=_opt(p, "brand"),
                price=_opt(p, "price"), rating=_opt(p, "rating"),
                attributes={k: attr_from_pb(v, f"{field}.attributes.{k}") for k, v in p.attributes.items()},
                image_ref=p.image_ref or None)


def _fill_product(m: pb.Product, p: Product) -> pb.Product:
    m.id, m.key = id_to_pb(p.id)
    return fill_product_fields(m, p)


def fill_product_fields(m: Any, p: Product) -> Any:
    """Write `p` but its id into any version's message in place. Every hit of every search carries a product:
    setting the map entries' fields directly costs about half of building an AttrValue message per attribute
    and copying it."""
    m.title, m.description, m.category, m.image_ref = p.title, p.description, p.category, p.image_ref or ""
    if p.brand is not None:
        m.brand = p.brand
    if p.price is not None:
        m.price = p.price
    if p.rating is not None:
        m.rating = p.rating
    for k, v in p.attributes.items():
        _set_attr(m.attributes[k], v)
    return m


def product_to_pb(p: Product) -> pb.Product:
    return _fill_product(pb.Product(), p)


def _fill_hit(out: pb.Hit, h: Hit) -> pb.Hit:
    out.id, out.key = id_to_pb(h.id)
    if h.product is not None:
        _fill_product(out.product, h.product)
    return fill_hit_fields(out, h)


def fill_hit_fields(out: Any, h: Hit) -> Any:
    """Score and explanation into any version's Hit (ids and product are the version's)."""
    out.score = h.score
    if h.explanation is not None:
        e = h.explanation
        out.explanation.SetInParent()  # present even when it is all zeros
        out.explanation.contributions.update(e.contributions)
        out.explanation.base_score = e.base_score
        out.explanation.modifiers.update(e.modifiers)
    return out


def hit_to_pb(h: Hit) -> pb.Hit:
    return _fill_hit(pb.Hit(), h)


def result_to_pb(r: SearchResult, request_id: str = "", out: Any = None,
                 fill_hit: Callable[[Any, Hit], Any] = _fill_hit) -> Any:
    """A result into any version's response message with request_id, hits, timings and allowed."""
    out = pb.SearchResponse() if out is None else out
    out.request_id = request_id
    if r.allowed is not None:
        out.allowed = r.allowed
    t, ot = r.timings, out.timings
    ot.queue_ms, ot.encode_ms, ot.filter_ms = t.queue_ms, t.encode_ms, t.filter_ms
    ot.search_ms, ot.rerank_ms, ot.total_ms = t.search_ms, t.rerank_ms, t.total_ms
    for h in r.hits:  # filled in place: passing built Hit messages to the constructor copies each one again
        fill_hit(out.hits.add(), h)
    return out


def error_to_pb(exc: KuamoError, code: grpc.StatusCode, request_id: str = "") -> pb.SearchResponse:
    return pb.SearchResponse(request_id=request_id,
                             error=pb.Error(code=code.value[0], message=str(exc), field=exc.field or ""))


def rejection_to_pb(x: Rejection) -> pb.Rejection:
    """A rejected row; its id as given when it was a valid id, else id -1 and key ""."""
    try:
        pid = None if x.id is None else canonical_id(x.id)
    except InvalidInput:
        pid = None
    id, key = (-1, "") if pid is None else id_to_pb(pid)
    return pb.Rejection(row=x.row, id=id, key=key, field=x.field, reason=x.reason)


def rejection_from_pb(x: pb.Rejection) -> Rejection:
    pid = canonical_id(x.key) if x.key else (None if x.id < 0 else x.id)
    return Rejection(row=x.row, id=pid, field=x.field, reason=x.reason)


def upsert_result_to_pb(r: UpsertResult) -> pb.UpsertResponse:
    return pb.UpsertResponse(accepted=[row_key(i) for i in r.accepted], unchanged=[row_key(i) for i in r.unchanged],
                             accepted_keys=[str(i) for i in r.accepted], unchanged_keys=[str(i) for i in r.unchanged],
                             rejected=[rejection_to_pb(x) for x in r.rejected])


def _ids_of(ids: Any, keys: Any) -> list[ProductId]:
    return [canonical_id(k) for k in keys] if len(keys) == len(ids) else list(ids)


def upsert_result_from_pb(r: pb.UpsertResponse) -> UpsertResult:
    return UpsertResult(accepted=_ids_of(r.accepted, r.accepted_keys), unchanged=_ids_of(r.unchanged, r.unchanged_keys),
                        rejected=[rejection_from_pb(x) for x in r.rejected])


def stats_details(s: EngineStats) -> dict[str, Any]:
    """Stats beyond the counters, as plain JSON values (v1: a JSON string; v2: a Struct)."""
    details = {"layout": s.layout, "index": s.index, "batchers": s.batchers, "data_dir": s.data_dir}
    return json.loads(json.dumps(details, default=str))


def stats_to_pb(s: EngineStats) -> pb.StatsResponse:
    return pb.StatsResponse(products=s.products, indexed=s.indexed, store_seq=s.store_seq, index_seq=s.index_seq,
                            details_json=json.dumps(stats_details(s)))


def result_from_pb(r: pb.SearchResponse) -> SearchResult:
    hits = []
    for h in r.hits:
        e = h.explanation if h.HasField("explanation") else None
        hits.append(Hit(id=id_from_pb(h.id, h.key), score=h.score,
                        product=product_from_pb(h.product) if h.HasField("product") else None,
                        explanation=None if e is None else Explanation(
                            contributions=dict(e.contributions), base_score=e.base_score, modifiers=dict(e.modifiers))))
    t = r.timings
    return SearchResult(hits=hits, allowed=r.allowed if r.HasField("allowed") else None,
                        timings=Timings(queue_ms=t.queue_ms, encode_ms=t.encode_ms, filter_ms=t.filter_ms,
                                        search_ms=t.search_ms, rerank_ms=t.rerank_ms, total_ms=t.total_ms))


class V1:
    """kuamo.v1 for the servicer: each method turns one request into engine types or one engine answer into
    the response message (server/convert_v2.py's V2 has the same methods for kuamo.v2)."""

    pb = pb
    query = staticmethod(query_from_pb)
    recommend = staticmethod(recommend_from_pb)
    event = staticmethod(event_from_pb)
    product = staticmethod(product_from_pb)
    stats_response = staticmethod(stats_to_pb)
    upsert_response = staticmethod(upsert_result_to_pb)

    @staticmethod
    def search_response(r: SearchResult, request_id: str) -> pb.SearchResponse:
        return result_to_pb(r, request_id)

    recommend_response = search_response
    stream_response = search_response

    @staticmethod
    def stream_error(exc: KuamoError, code: grpc.StatusCode, request_id: str) -> pb.SearchResponse:
        return error_to_pb(exc, code, request_id)

    @staticmethod
    def embed_kind(request: pb.EmbedRequest) -> str:
        return request.kind or "query"

    @staticmethod
    def product_id_as_sent(p: pb.Product) -> ProductId:
        return p.key or p.id

    @staticmethod
    def events_response(recorded: int, rejected: list[Rejection]) -> pb.RecordEventsResponse:
        return pb.RecordEventsResponse(recorded=recorded, rejected=[rejection_to_pb(r) for r in rejected])

    @staticmethod
    def delete_ids(request: pb.DeleteRequest) -> list[ProductId]:
        return [*request.ids, *request.keys]

    @staticmethod
    def get_id(request: pb.GetProductRequest) -> ProductId:
        return id_from_pb(request.id, request.key, "key")

    @staticmethod
    def get_response(p: Product) -> pb.Product:
        return product_to_pb(p)
