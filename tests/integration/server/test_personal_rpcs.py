"""Events, profiles, personalised search, Recommend, ForgetUser and retention over the real server,
and a scan proving the raw user id never reaches the database file or the logs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import grpc
import pytest
from conftest import fake_engine_factory, start_server

from kuamo.engine.personal import Event
from kuamo.engine.types import Filters, Query, RecommendQuery
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc
from kuamo.server.client import Client

RAW_USER = "alice.raw-user-id-7f3a9@example.com"
# fake catalog ids: 1000 + i, colour = COLOURS[i % 5] (red, green, blue, black, white), kind = KINDS[(i // 5) % 5]
RED_DRESS, RED_SHIRT, RED_WATCH, BLUE_BAG, GREEN_SHOES = 1005, 1000, 1015, 1022, 1011


@pytest.fixture()
def srv(tmp_path):  # type: ignore[no-untyped-def]
    s = start_server(tmp_path, log_access=True).load()
    yield s
    s.stop()


def test_profile_personalises_search_and_recommend_then_forget(srv, tmp_path, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("kuamo.access").setLevel(logging.INFO)
    with Client(srv.target) as c:
        r = c.record_events([Event(user_id=RAW_USER, product_id=RED_DRESS, kind="purchase"),
                             Event(user_id=RAW_USER, product_id=RED_WATCH, kind="add_to_cart"),
                             Event(user_id=RAW_USER, product_id=999_999, kind="view"),
                             Event(user_id=RAW_USER, product_id=RED_SHIRT, kind="dance")])
        assert r.recorded == 2
        assert [(x.row, x.field) for x in r.rejected] == [(2, "product_id"), (3, "kind")]

        plain = c.search(Query(text="shirt", k=5, explain=True))
        personal = c.search(Query(text="shirt", k=5, explain=True, user_id=RAW_USER, user_weight=0.5))
        assert personal.hits[0].id == RED_SHIRT  # the red shopper's shirt comes first
        assert plain.hits[0].explanation.contributions.keys() == {"text", "image"}
        e = personal.hits[0].explanation
        assert e.contributions["profile"] > 0
        assert abs(sum(e.contributions.values()) - e.base_score) < 1e-4
        off = c.search(Query(text="shirt", k=5, user_id=RAW_USER, user_weight=0.0))
        assert [h.id for h in off.hits] == [h.id for h in plain.hits]

        rec = c.recommend(RecommendQuery(user_id=RAW_USER, k=5))
        ids = [h.id for h in rec.hits]
        assert RED_DRESS not in ids  # bought already
        assert all(h.product.attributes["colour"] == "red" for h in rec.hits[:3])
        assert RED_DRESS in [h.id for h in c.recommend(RecommendQuery(user_id=RAW_USER, k=5,
                                                                      include_purchased=True)).hits]
        shoes = c.recommend(RecommendQuery(user_id=RAW_USER, k=3, filters=Filters(category_prefix="Apparel/shoes")))
        assert shoes.hits and all(h.product.category == "Apparel/shoes" for h in shoes.hits)

        like = c.recommend(RecommendQuery(positives={BLUE_BAG: 1.0}, negatives={GREEN_SHOES: 0.5}, k=3))
        assert BLUE_BAG not in [h.id for h in like.hits]
        assert like.hits[0].product.attributes["colour"] == "blue"

        assert c.forget_user(RAW_USER) == 2
        assert c.forget_user(RAW_USER) == 0
        again = c.search(Query(text="shirt", k=5, user_id=RAW_USER, user_weight=0.5))
        assert [h.id for h in again.hits] == [h.id for h in plain.hits]

    # the raw id is nowhere: not in the SQLite file (and its WAL), not in any log line
    for f in tmp_path.glob("catalog.sqlite*"):
        assert RAW_USER.encode() not in f.read_bytes(), f
    assert RAW_USER not in caplog.text
    assert "Recommend" in caplog.text  # the access log was on, so the scan looked at real lines


def test_cold_start_recommend_is_popularity_within_filters(srv) -> None:
    with Client(srv.target) as c:
        evs = [Event(user_id=f"u{i}", product_id=BLUE_BAG, kind="view") for i in range(5)]
        evs += [Event(user_id="u9", product_id=GREEN_SHOES, kind="click")]
        assert c.record_events(evs).recorded == 6
        rec = c.recommend(RecommendQuery(user_id="newcomer", k=3, explain=True))
        assert [h.id for h in rec.hits] == [BLUE_BAG, GREEN_SHOES]
        assert "popularity" in rec.hits[0].explanation.contributions
        only_shoes = c.recommend(RecommendQuery(k=3, filters=Filters(category_prefix="Apparel/shoes")))
        assert [h.id for h in only_shoes.hits] == [GREEN_SHOES]


def test_bad_recommend_and_events_get_invalid_argument(srv) -> None:
    with grpc.insecure_channel(srv.target) as ch:
        stub = pb_grpc.SearchServiceStub(ch)
        cases = [
            (pb.RecommendRequest(k=0), "k"),
            (pb.RecommendRequest(positives=[pb.Example(id=BLUE_BAG, weight=-1)]), "positives"),
            (pb.RecommendRequest(positives=[pb.Example(id=BLUE_BAG), pb.Example(id=BLUE_BAG)]), "positives"),
            (pb.RecommendRequest(user_id="x" * 300), "user_id"),
        ]
        for req, field in cases:
            with pytest.raises(grpc.RpcError) as e:
                stub.Recommend(req, timeout=5)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith(field)
        with pytest.raises(grpc.RpcError) as e:
            stub.Recommend(pb.RecommendRequest(positives=[pb.Example(id=424242)]), timeout=5)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as e:
            stub.Search(pb.SearchRequest(query=pb.Query(text="red", user_id="u", user_weight=1.5)), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith("user_weight")
        with pytest.raises(grpc.RpcError) as e:
            stub.ForgetUser(pb.ForgetUserRequest(user_id=""), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_retention_drops_old_events_and_rebuilds_the_profile(tmp_path) -> None:
    from kuamo.engine.personal import PersonalConfig

    async def scenario() -> None:
        engine = await fake_engine_factory(tmp_path)()
        engine.config = dataclasses.replace(engine.config, personal=PersonalConfig(retention_days=30))
        engine.personal.cfg = engine.config.personal
        now = time.time()
        await engine.record_events([Event(user_id="old", product_id=RED_DRESS, kind="purchase", ts=now - 40 * 86400),
                                    Event(user_id="old", product_id=BLUE_BAG, kind="view", ts=now - 86400)])
        engine.personal._last_purge = 0.0
        await engine.record_events([Event(user_id="other", product_id=GREEN_SHOES, kind="view")])
        assert engine.personal.counts() == {"events": 2, "profiles": 2}
        assert engine.personal.purchased(engine.pseudonym("old")) == []  # the 40-day-old purchase is gone
        rec = await engine.recommend(RecommendQuery(user_id="old", k=1))
        assert rec.hits[0].product.attributes["colour"] == "blue"  # profile now from the blue bag alone
        await engine.close()

    asyncio.run(scenario())


def test_recommend_serves_both_tastes_of_a_two_taste_shopper(srv) -> None:
    # fake catalog: i -> colour COLOURS[i % 5], kind KINDS[(i // 5) % 5]; red dresses 1005..; black bags 1023..
    red_dresses = [1005]
    black_bags = [1023]
    with Client(srv.target) as c:
        evs = [Event(user_id="two", product_id=p, kind="purchase") for p in red_dresses + black_bags]
        assert c.record_events(evs).recorded == 2
        hits = c.recommend(RecommendQuery(user_id="two", k=4, explain=True)).hits
        kinds = {(h.product.attributes["colour"], h.product.category) for h in hits}
        assert ("red", "Apparel/dress") in kinds and ("black", "Apparel/bag") in kinds, kinds
        assert all(set(h.explanation.contributions) == {"profile"} for h in hits)
