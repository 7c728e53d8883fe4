"""Personalisation on simulated shoppers over the fashion catalog, end to end through gRPC.

Each shopper has hidden preferences (gender, two article types, two colours, a usage); a session of
events is drawn from them (80% from matching products, 20% browsing noise) and recorded with
RecordEvents; the held-out next purchase is another matching product. For each shopper we ask:
- non-personalised Search with the article type of the next purchase as the query text,
- the same Search with the shopper's user id (the profile blended in),
- Recommend for the shopper (no query), and the popularity answer a newcomer gets (cold start).
A result is relevant when it is the same kind of item as the next purchase (article type, colour,
gender); hit-rate@10 is also reported for the exact held-out product.

    kuamo bench personal [--quick]       # writes benchmarks/results/personal.json + .md
"""

from __future__ import annotations

import asyncio
import math
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from kuamo.benchmarks.bench_catalog import bench_catalog
from kuamo.benchmarks.common import latency_stats, machine_info, markdown_table, target_rows, targets_met, write_results
from kuamo.benchmarks.serving import server_process
from kuamo.engine.config import DEFAULT_MODEL_DIR
from kuamo.engine.personal import Event
from kuamo.engine.types import Query, RecommendQuery

TARGETS = {"personal_vs_plain_ndcg": 1.3, "recommend_vs_popularity_hit": 3.0, "recommend_p50_ms": 10.0}
EVENT_KINDS = ("view",) * 6 + ("click",) * 3 + ("add_to_cart", "purchase")


def _catalog(data: Path) -> list[dict[str, Any]]:
    import json

    with sqlite3.connect(data / "catalog.sqlite") as db:
        rows = db.execute("SELECT id, category, attributes FROM products").fetchall()
    out = []
    for pid, cat, attrs in rows:
        a = json.loads(attrs)
        out.append({"id": int(pid), "article": cat.rsplit("/", 1)[-1], "colour": a.get("baseColour"),
                    "gender": a.get("gender"), "usage": a.get("usage")})
    return out


def _kind(p: dict[str, Any]) -> tuple:
    return p["article"], p["colour"], p["gender"]


def simulate(products: list[dict[str, Any]], n_shoppers: int, events_per: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    by_gender: dict[str, list[dict]] = {}
    for p in products:
        by_gender.setdefault(p["gender"], []).append(p)
    shoppers: list[dict] = []
    now = time.time()
    while len(shoppers) < n_shoppers:
        g = rng.choice(["Men", "Women"])
        pool_g = by_gender[g]
        articles = [a for a, _ in Counter(p["article"] for p in pool_g).most_common(30)]
        prefs = {"gender": g, "articles": set(rng.sample(articles, 2)),
                 "colours": set(rng.sample(["Black", "Blue", "White", "Red", "Grey", "Green", "Brown", "Pink",
                                            "Navy Blue", "Purple"], 2))}
        pool = [p for p in pool_g if p["article"] in prefs["articles"] and p["colour"] in prefs["colours"]]
        if len(pool) < 12:
            continue
        picks = rng.sample(pool, min(len(pool), events_per))
        history = []
        for j in range(events_per):
            p = picks[j % len(picks)] if rng.random() < 0.8 else rng.choice(products)
            history.append((p["id"], rng.choice(EVENT_KINDS), now - (events_per - j) * 3600 * 24 * 20 / events_per))
        seen = {h[0] for h in history}
        nxt = rng.choice([p for p in pool if p["id"] not in seen] or pool)
        shoppers.append({"user": f"shopper-{len(shoppers)}", "history": history, "next": nxt})
    return shoppers


def ndcg_hit(ids: list[int], relevant: set[int], exact: int, k: int = 10) -> tuple[float, float, float]:
    dcg = sum(1 / math.log2(r + 2) for r, i in enumerate(ids[:k]) if i in relevant)
    ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(relevant))))
    return (dcg / ideal if ideal else 0.0), float(any(i in relevant for i in ids[:k])), float(exact in ids[:k])


async def _evaluate(target: str, products: list[dict], shoppers: list[dict], weight: float) -> dict[str, Any]:
    from kuamo.server.client import AsyncClient

    kinds: dict[tuple, set[int]] = {}
    for p in products:
        kinds.setdefault(_kind(p), set()).add(p["id"])
    async with AsyncClient(target, timeout=30) as c:
        for s in shoppers:
            r = await c.record_events([Event(user_id=s["user"], product_id=pid, kind=k, ts=ts)
                                       for pid, k, ts in s["history"]])
            assert r.recorded == len(s["history"]), r
        scores: dict[str, list[tuple[float, float, float]]] = {"search": [], "personal_search": [], "recommend": [],
                                                               "popularity": []}
        rec_lat = []
        popular = [h.id for h in (await c.recommend(RecommendQuery(user_id="newcomer", k=10))).hits]
        for s in shoppers:
            nxt = s["next"]
            rel, exact = kinds[_kind(nxt)], nxt["id"]
            text = nxt["article"]
            plain = await c.search(Query(text=text, k=10, include_products=False))
            pers = await c.search(Query(text=text, k=10, user_id=s["user"], user_weight=weight,
                                        include_products=False))
            t0 = time.perf_counter()
            rec = await c.recommend(RecommendQuery(user_id=s["user"], k=10, include_products=False))
            rec_lat.append(time.perf_counter() - t0)
            for name, ids in (("search", [h.id for h in plain.hits]), ("personal_search", [h.id for h in pers.hits]),
                              ("recommend", [h.id for h in rec.hits]), ("popularity", popular)):
                scores[name].append(ndcg_hit(ids, rel, exact))
    table = {name: {"ndcg@10": float(np.mean([x[0] for x in v])), "hit@10": float(np.mean([x[1] for x in v])),
                    "exact_hit@10": float(np.mean([x[2] for x in v]))} for name, v in scores.items()}
    return {"methods": table, "recommend_latency": latency_stats(rec_lat)}


def run(quick: bool = False, *, models: Path = DEFAULT_MODEL_DIR, data: Path | None = None) -> dict[str, Any]:
    _, data = bench_catalog(quick, models, data=data)
    n_shoppers, events_per = (40, 12) if quick else (300, 16)
    weight = 0.5
    info = machine_info()
    products = _catalog(data)
    shoppers = simulate(products, n_shoppers, events_per)
    with tempfile.TemporaryDirectory(prefix="kuamo-personal-") as tmp:
        copy = Path(tmp) / "data"  # events go into a copy, never into the catalog we were given
        shutil.copytree(data, copy, ignore=shutil.ignore_patterns("user.key"))
        with server_process(models, copy) as target:
            res = asyncio.run(_evaluate(target, products, shoppers, weight))
    m = res["methods"]
    figures = {"personal_vs_plain_ndcg": m["personal_search"]["ndcg@10"] / max(m["search"]["ndcg@10"], 1e-9),
               "recommend_vs_popularity_hit": m["recommend"]["hit@10"] / max(m["popularity"]["hit@10"], 1e-9),
               "recommend_p50_ms": res["recommend_latency"]["p50_ms"]}
    out = {"machine": info, "quick": quick, "shoppers": n_shoppers, "events_per_shopper": events_per,
           "profile_weight": weight, "catalog_products": len(products), **res,
           "targets": targets_met(figures, TARGETS, lower_is_better={k for k in figures if k.endswith("_ms")})}
    name = "personal" + ("_quick" if quick else "")
    write_results(name, out, "Personalisation on simulated shoppers (fashion catalog, through gRPC)",
                  lambda: _body(out), info)
    return out


def _body(out: dict[str, Any]) -> str:
    n_shoppers, events_per, weight = out["shoppers"], out["events_per_shopper"], out["profile_weight"]
    rows = [{"method": k, **v} for k, v in out["methods"].items()]
    trows = target_rows(out["targets"])
    return (f"{n_shoppers} simulated shoppers, {events_per} events each (80% from their hidden preferences), "
            f"profile weight {weight} in personalised search; relevant = same article type, colour and gender "
            "as the held-out next purchase; `exact_hit@10` = the very product.\n\n"
            + markdown_table(rows, floatfmt=".3f") + "\n## Targets\n\n" + markdown_table(trows, floatfmt=".3f")
            + f"\nRecommend latency through gRPC: p50 {out['recommend_latency']['p50_ms']:.2f} ms, "
            f"p99 {out['recommend_latency']['p99_ms']:.2f} ms.\n\nReproduce: `kuamo bench personal`.\n")


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
