"""Property tests (hypothesis): proto <-> engine conversions round-trip for any valid value; any Query or
RecommendRequest proto, however hostile (NaN, inf, huge ints, empty or odd strings, attribute values with
no kind, random bytes parsed as a message), goes through convert + the engine and ends in a result or a
KuamoError, never another exception; command-line filter expressions only ever fail with InvalidInput."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder, png
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput, KuamoError
from kuamo.engine.rules import validate_filters
from kuamo.engine.types import Filters, Modifiers, Product, Query, RecommendQuery
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.server import convert
from kuamo.server.filter_expr import parse_filters

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])
INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
FLOATS = st.floats(allow_nan=False)  # NaN != NaN: round trips are checked without it
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
TEXT = st.text(max_size=20)
NONEMPTY = st.text(min_size=1, max_size=20)
ATTR = st.one_of(st.booleans(), INT64, FLOATS, TEXT)
ATTRS = st.dictionaries(TEXT, ATTR, max_size=4)


# -- round trips -----------------------------------------------------------------------------------------------
filters_st = st.builds(Filters, category_prefix=st.none() | NONEMPTY, brands=st.lists(TEXT, max_size=3).map(tuple),
                       price_min=st.none() | FLOATS, price_max=st.none() | FLOATS, min_rating=st.none() | FLOATS,
                       attributes=ATTRS, ids=st.lists(INT64, max_size=5).map(tuple))
modifiers_st = st.builds(Modifiers, rating_factor=FLOATS, popularity_weight=FLOATS, popularity_field=NONEMPTY,
                         brand_boosts=st.dictionaries(TEXT, FLOATS, max_size=3))
query_st = st.builds(Query, text=st.none() | NONEMPTY, image=st.none() | st.binary(min_size=1, max_size=32),
                     rating=st.none() | FLOATS, price=st.none() | FLOATS,
                     targets=st.dictionaries(TEXT, FLOATS, max_size=3), weights=st.dictionaries(TEXT, FLOATS,
                                                                                               max_size=3),
                     filters=filters_st, modifiers=modifiers_st, k=INT32, nprobe=st.none() | INT32,
                     rerank_factor=st.none() | INT32, explain=st.booleans(), include_products=st.booleans(),
                     user_id=st.none() | NONEMPTY, user_weight=st.none() | FLOATS)
examples_st = st.dictionaries(INT64, FLOATS.filter(lambda w: w != 0), max_size=4)  # weight 0 means 1 on the wire
recommend_st = st.builds(RecommendQuery, user_id=st.none() | NONEMPTY, positives=examples_st, negatives=examples_st,
                         filters=filters_st, modifiers=modifiers_st, k=INT32, explain=st.booleans(),
                         include_products=st.booleans(), include_purchased=st.booleans())
product_st = st.builds(Product, id=INT64, title=TEXT, description=TEXT, category=TEXT, brand=st.none() | TEXT,
                       price=st.none() | FLOATS, rating=st.none() | FLOATS, attributes=ATTRS,
                       image_ref=st.none() | NONEMPTY)


def _same_types(a: object, b: object) -> None:
    """== treats 1 == 1.0 == True; the wire must keep bool, int and float apart."""
    for name, x in a.attributes.items():  # type: ignore[attr-defined]
        assert type(x) is type(b.attributes[name])  # type: ignore[attr-defined]


@SETTINGS
@given(query_st)
def test_query_round_trips(q: Query) -> None:
    back = convert.query_from_pb(pb.Query.FromString(convert.query_to_pb(q).SerializeToString()))
    assert back == q
    _same_types(back.filters, q.filters)


@SETTINGS
@given(recommend_st)
def test_recommend_round_trips(r: RecommendQuery) -> None:
    back = convert.recommend_from_pb(pb.RecommendRequest.FromString(convert.recommend_to_pb(r).SerializeToString()))
    assert back == r
    _same_types(back.filters, r.filters)


@SETTINGS
@given(product_st)
def test_product_round_trips(p: Product) -> None:
    back = convert.product_from_pb(pb.Product.FromString(convert.product_to_pb(p).SerializeToString()))
    assert back == p
    _same_types(back, p)


# -- hostile protos through convert + the engine ---------------------------------------------------------------
HOSTILE_FLOAT = st.one_of(ANY_FLOAT, st.sampled_from([0.0, -0.0, 5.0, 1e308, -1e308, 5e-324]))
HOSTILE_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "\t\n", "\x00", "red shirt", "colour",
                                                                 "text", "image", "rating", "price", "popularity",
                                                                 "acme", "Apparel", "a" * 70, "\ud7ff\U0010ffff"]))
HOSTILE_ATTR = st.one_of(st.builds(pb.AttrValue), st.builds(pb.AttrValue, string_value=HOSTILE_TEXT),
                         st.builds(pb.AttrValue, int_value=INT64), st.builds(pb.AttrValue, double_value=HOSTILE_FLOAT),
                         st.builds(pb.AttrValue, bool_value=st.booleans()))
HOSTILE_IMAGE = st.one_of(st.binary(max_size=64), st.sampled_from([png("red"), png("blue")[:30], b"\x89PNG\r\n\x1a\n"]))
pb_filters = st.builds(pb.Filters, category_prefix=HOSTILE_TEXT, brands=st.lists(HOSTILE_TEXT, max_size=3),
                       price_min=st.none() | HOSTILE_FLOAT, price_max=st.none() | HOSTILE_FLOAT,
                       min_rating=st.none() | HOSTILE_FLOAT,
                       attributes=st.dictionaries(HOSTILE_TEXT, HOSTILE_ATTR, max_size=3),
                       ids=st.lists(st.one_of(INT64, st.integers(1000, 1049)), max_size=4))
pb_modifiers = st.builds(pb.Modifiers, rating_factor=HOSTILE_FLOAT, popularity_weight=HOSTILE_FLOAT,
                         popularity_field=HOSTILE_TEXT, brand_boosts=st.dictionaries(HOSTILE_TEXT, HOSTILE_FLOAT,
                                                                                      max_size=3))
pb_query = st.builds(pb.Query, text=HOSTILE_TEXT, image=HOSTILE_IMAGE, rating=st.none() | HOSTILE_FLOAT,
                     price=st.none() | HOSTILE_FLOAT, targets=st.dictionaries(HOSTILE_TEXT, HOSTILE_FLOAT, max_size=3),
                     weights=st.dictionaries(HOSTILE_TEXT, HOSTILE_FLOAT, max_size=4), filters=pb_filters,
                     modifiers=pb_modifiers, k=st.none() | st.one_of(INT32, st.integers(1, 20)),
                     nprobe=st.none() | INT32, rerank_factor=st.none() | INT32, explain=st.booleans(),
                     omit_products=st.booleans(), user_id=HOSTILE_TEXT, user_weight=st.none() | HOSTILE_FLOAT)
pb_examples = st.lists(st.builds(pb.Example, id=st.one_of(INT64, st.integers(1000, 1049)), weight=HOSTILE_FLOAT),
                       max_size=3)
pb_recommend = st.builds(pb.RecommendRequest, user_id=HOSTILE_TEXT, positives=pb_examples, negatives=pb_examples,
                         filters=pb_filters, modifiers=pb_modifiers, k=st.none() | st.one_of(INT32, st.integers(1, 20)),
                         explain=st.booleans(), omit_products=st.booleans(), include_purchased=st.booleans())


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    eng = Engine(EngineConfig(data_dir=Path(tmp_path_factory.mktemp("props"))), text_encoder=FakeTextEncoder(),
                 image_encoder=FakeImageEncoder())
    colours = ["red", "green", "blue", "black", "white"]
    products = [Product(id=1000 + i, title=f"{colours[i % 5]} shirt {i}", category="Apparel/Topwear",
                        brand="acme" if i % 2 else "zeta", price=10.0 + i, rating=(i % 5) + 0.5,
                        attributes={"colour": colours[i % 5], "popularity": i}) for i in range(50)]
    loop.run_until_complete(eng.upsert(products, [png(colours[i % 5]) for i in range(50)]))
    yield eng, loop
    loop.run_until_complete(eng.close(snapshot=False))
    loop.close()


def _only_kuamo_errors(loop: asyncio.AbstractEventLoop, coro_fn, msg) -> None:  # type: ignore[no-untyped-def]
    try:
        loop.run_until_complete(coro_fn(msg))
    except KuamoError as exc:
        assert exc.message
    # anything else (TypeError, ValueError, OverflowError, sqlite3.Error, ...) fails the test with its traceback


@SETTINGS
@given(pb_query)
def test_any_query_proto_gives_a_result_or_a_kuamo_error(engine, q: pb.Query) -> None:
    eng, loop = engine
    _only_kuamo_errors(loop, lambda m: eng.search(convert.query_from_pb(m)), q)


@SETTINGS
@given(pb_recommend)
def test_any_recommend_proto_gives_a_result_or_a_kuamo_error(engine, r: pb.RecommendRequest) -> None:
    eng, loop = engine
    _only_kuamo_errors(loop, lambda m: eng.recommend(convert.recommend_from_pb(m)), r)


def _mutated(q: pb.Query, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    data = bytearray(q.SerializeToString())
    for pos, byte in edits:
        if data:
            data[pos % len(data)] = byte
    return bytes(data[:cut] if cut is not None else data)


@SETTINGS
@given(st.one_of(st.binary(max_size=200), st.builds(
    _mutated, pb_query, st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    st.none() | st.integers(0, 200))))
def test_random_or_mutated_bytes_parsed_as_a_query_give_a_result_or_a_kuamo_error(engine, data: bytes) -> None:
    eng, loop = engine
    try:
        q = pb.Query.FromString(data)
    except DecodeError:  # the server answers INVALID_ARGUMENT before convert (the interceptor parses)
        return
    _only_kuamo_errors(loop, lambda m: eng.search(convert.query_from_pb(m)), q)


@SETTINGS
@given(st.lists(st.builds(pb.UpsertRequest, product=st.builds(
    pb.Product, id=INT64, title=HOSTILE_TEXT, description=HOSTILE_TEXT, category=HOSTILE_TEXT,
    brand=st.none() | HOSTILE_TEXT, price=st.none() | HOSTILE_FLOAT, rating=st.none() | HOSTILE_FLOAT,
    attributes=st.dictionaries(HOSTILE_TEXT, HOSTILE_ATTR, max_size=3)), image=HOSTILE_IMAGE), max_size=4))
def test_any_product_proto_is_stored_or_rejected_with_a_reason(engine, msgs: list[pb.UpsertRequest]) -> None:
    eng, loop = engine
    products, images, rejected = [], [], 0
    for m in msgs:
        try:
            products.append(convert.product_from_pb(m.product))
            images.append(m.image or None)
        except KuamoError:
            rejected += 1
    res = loop.run_until_complete(eng.upsert(products, images))
    assert len(res.accepted) + len(res.rejected) + len(res.unchanged) == len(products)
    assert all(r.field and r.reason for r in res.rejected)
    assert loop.run_until_complete(eng.stats()).indexed == eng.store.count()


# -- filter expressions ----------------------------------------------------------------------------------------
NAMES = st.one_of(st.sampled_from(["price", "rating", "category", "brand", "id", "colour", "year", "a.b-c"]),
                  st.text(max_size=8))
OPS = st.sampled_from(["<", "<=", ">", ">=", "=", "==", "=>", "!=", ""])
VALUES = st.one_of(st.text(max_size=10), st.sampled_from(["1", "-1", "1e400", "nan", "inf", "-inf", "1,2,,3",
                                                          "9223372036854775808", "0x10", "true", "1_000", "１２",
                                                          " 4.5 ", "1e300", ","]),
                   st.floats().map(repr), st.integers().map(str))
EXPRS = st.one_of(st.text(max_size=30), st.tuples(NAMES, OPS, VALUES).map("".join),
                  st.tuples(NAMES, st.text(" \t", max_size=2), OPS, st.text(" \t", max_size=2), VALUES).map("".join))


@SETTINGS
@given(st.lists(EXPRS, max_size=5))
def test_filter_expressions_fail_only_with_invalid_input(exprs: list[str]) -> None:
    try:
        f = parse_filters(exprs)
    except InvalidInput as exc:
        assert exc.field == "filter" and exc.message
        return
    assert isinstance(f, Filters)
    try:  # what parses is either a valid filter or InvalidInput from the engine's own check
        validate_filters(f)
    except InvalidInput as exc:
        assert exc.field and exc.field.startswith("filters.")
    if f.price_min is not None:
        assert not math.isnan(f.price_min)
