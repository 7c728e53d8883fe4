"""A Zipf-distributed query log through the server, with its caches on and off (issue 19, item 6).

Real query logs are heavily repeated: a few head queries make up much of the traffic. The log here draws from
>= 5,000 distinct queries made of the catalog's own words (its articleTypes alone and with colours and genders,
as shoppers type them, and whole product titles), rank r drawn with probability proportional to r^-1.1, the
ranks given to the queries in a seeded random order. Closed loop at 8 and 32 clients against two `kuamo serve`
processes on the same data: the default (query cache and result cache on) and both off; each phase draws its
own log (another seed), so a phase never replays the queries an earlier one warmed the caches with. The hit
rates are the server's own counters (kuamo_query_cache_* and kuamo_result_cache_* on /metrics) over the phase,
warm-up included.

    python -m kuamo.benchmarks.server_zipf [--quick]     (also a phase of `kuamo bench server`)

Writes benchmarks/results/server_zipf.json and .md.
"""

from __future__ import annotations

import asyncio
import csv
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from kuamo.benchmarks.common import machine_info, markdown_table, write_results
from kuamo.benchmarks.loadgen import closed_loop, open_loop
from kuamo.engine.config import DEFAULT_MODEL_DIR
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb

EXPONENT = 1.1
DISTINCT = 8_000
CLIENTS = (8, 32)
OPEN_LOOP_SHARE = 0.7  # open-loop Poisson arrivals at 70% of what the caches-off server answers with 32 clients
STATS_WAIT_S = 2.5  # the server refreshes its engine metrics every 2 s (server/app.py STATS_REFRESH_S)


def distinct_queries(catalog: Path, n: int = DISTINCT, seed: int = 0) -> list[str]:
    """`n` distinct query texts from the catalog's categories and titles, in a seeded random order (the
    order is the Zipf rank). Category queries first in the pool ("Dresses", "Red Dresses", "Women Red
    Dresses", ...), then titles fill it up."""
    cats: set[str] = set()
    titles: list[str] = []
    with open(catalog / "products.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            t, colour, gender = row.get("articleType", ""), row.get("baseColour", ""), row.get("gender", "")
            if t:
                cats.update((t, f"{colour} {t}".strip(), f"{gender} {t}".strip(), f"{gender} {colour} {t}".strip()))
            if row.get("productDisplayName"):
                titles.append(row["productDisplayName"].strip())
    pool = sorted(cats)
    seen = set(pool)
    for t in titles:
        if len(pool) >= n:
            break
        if t not in seen:
            seen.add(t)
            pool.append(t)
    pool = pool[:n]
    random.Random(seed).shuffle(pool)
    return pool


def zipf_log(queries: list[str], n: int, exponent: float = EXPONENT, seed: int = 0) -> list[str]:
    """`n` draws: query of rank r (1-based) with probability r^-exponent / H."""
    p = np.arange(1, len(queries) + 1, dtype=np.float64) ** -exponent
    p /= p.sum()
    idx = np.random.default_rng(seed).choice(len(queries), size=n, p=p)
    return [queries[i] for i in idx]


def expected_hit_rate(log: list[str], entries: int) -> float:
    """The hit rate an LRU of `entries` would have on `log` (what the server should report)."""
    from collections import OrderedDict

    lru: OrderedDict[str, None] = OrderedDict()
    hits = 0
    for q in log:
        if q in lru:
            hits += 1
            lru.move_to_end(q)
        else:
            lru[q] = None
            if len(lru) > entries:
                lru.popitem(last=False)
    return hits / max(len(log), 1)


def _cache_counts(port: int, cache: str = "query") -> tuple[float, float]:
    from kuamo.benchmarks.watch import scrape

    s = scrape(port)
    return (s.get((f"kuamo_{cache}_cache_hits_total", ()), 0.0), s.get((f"kuamo_{cache}_cache_misses_total", ()), 0.0))


QUICK_CLIENTS = (32,)  # --quick (a smoke run in `make test`): one closed-loop phase and the open loop


def run_zipf(models: Path, data: Path, catalog: Path, *, seconds: float,
             fashion: Path | None = None, clients: tuple[int, ...] = CLIENTS) -> dict[str, Any]:
    """p50/p99/QPS at each of `clients` (closed loop) and at a fixed open-loop rate, caches on vs off, and the
    server-reported hit rates."""
    from kuamo.benchmarks.serving import CACHES_OFF, serving
    from kuamo.export.samples import DEFAULT_FASHION_DIR

    queries = distinct_queries(catalog)
    if len(queries) < 5_000:  # a small sample catalog: its titles cannot make 5,000 distinct queries
        queries = distinct_queries(fashion or DEFAULT_FASHION_DIR)
    n_log = 200_000  # longer than any phase sends, so no client wraps around
    out: dict[str, Any] = {"distinct_queries": len(queries), "exponent": EXPONENT, "seconds_per_phase": seconds,
                           "clients": list(clients), "phases": {}}
    rate = None  # the open-loop phases' offered load: OPEN_LOOP_SHARE of the caches-off 32-client capacity
    # caches off first: its capacity sets the open-loop rate both servers then get
    for cache, extra in (("off", CACHES_OFF), ("on", ())):
        with serving(models, data, metrics=True, max_inflight=256, timeout_s=600, extra_args=extra) as s:
            assert s.metrics_port is not None
            for seed, c in enumerate((*clients, "open"), start=1):
                log = zipf_log(queries, n_log, seed=seed)
                reqs = [pb.SearchRequest(request_id=str(i), query=pb.Query(text=t, k=10)) for i, t in enumerate(log)]
                time.sleep(STATS_WAIT_S)
                h0, m0 = _cache_counts(s.metrics_port)
                rh0, rm0 = _cache_counts(s.metrics_port, "result")
                if c == "open":
                    assert rate is not None
                    run = open_loop(s.target, reqs, rate_qps=rate, duration_s=seconds, seed=seed)
                else:
                    run = closed_loop(s.target, reqs, concurrency=c, duration_s=seconds)
                r = asyncio.run(run).summary()
                time.sleep(STATS_WAIT_S)
                h1, m1 = _cache_counts(s.metrics_port)
                rh1, rm1 = _cache_counts(s.metrics_port, "result")
                hits, misses = h1 - h0, m1 - m0
                r["result_hit_rate"] = (rh1 - rh0) / (rh1 - rh0 + rm1 - rm0) if rh1 - rh0 + rm1 - rm0 else None
                r["cache"] = cache
                r["clients"] = c
                r["hit_rate"] = hits / (hits + misses) if hits + misses else None
                r["cache_hits"], r["cache_misses"] = hits, misses
                name = f"open loop at {rate:.0f} qps" if c == "open" else f"{c} clients"
                out["phases"][f"{name}, cache {cache}"] = r
                if cache == "off" and c == clients[-1]:
                    rate = OPEN_LOOP_SHARE * r["throughput_qps"]
    out["open_loop_qps"] = rate
    for c in (*clients, "open"):
        name = f"open loop at {rate:.0f} qps" if c == "open" else f"{c} clients"
        on, off = out["phases"][f"{name}, cache on"], out["phases"][f"{name}, cache off"]
        out[f"p99_on_over_off_{c}"] = on["latency"]["p99_ms"] / off["latency"]["p99_ms"]
        out[f"p50_on_over_off_{c}"] = on["latency"]["p50_ms"] / off["latency"]["p50_ms"]
    return out


def markdown(z: dict[str, Any]) -> str:
    rows = [{"phase": k, "ok": v["ok"], "qps": v["throughput_qps"], "p50 ms": v["latency"].get("p50_ms"),
             "p99 ms": v["latency"].get("p99_ms"), "query cache hit rate": v["hit_rate"],
             "result cache hit rate": v.get("result_hit_rate"),
             "server encode p50 ms": v["server_encode"].get("p50_ms")} for k, v in z["phases"].items()]
    ratios = ", ".join(f"{c} clients p99 on/off {z[f'p99_on_over_off_{c}']:.2f} (p50 {z[f'p50_on_over_off_{c}']:.2f})"
                       for c in z.get("clients", CLIENTS))
    if z.get("open_loop_qps"):
        ratios += (f"; open loop at {z['open_loop_qps']:.0f} qps p99 on/off {z['p99_on_over_off_open']:.2f} "
                   f"(p50 {z['p50_on_over_off_open']:.2f})")
    return (f"Zipf query log: exponent {z['exponent']}, {z['distinct_queries']} distinct queries (articleTypes with "
            f"colours/genders, and product titles), {z['seconds_per_phase']:.0f} s per phase, closed loop at "
            f"{' and '.join(map(str, z.get('clients', CLIENTS)))} clients, then Poisson arrivals at "
            f"{100 * OPEN_LOOP_SHARE:.0f}% of the caches-off capacity at the most clients "
            "(the same offered load for both servers: the load a shop sees, where a closed loop at saturation lets "
            "a faster server take more work), k = 10. "
            "Cache on = the server's default (query cache: text -> vector; result cache: whole query -> answer); "
            "off = `--query-cache-entries 0 --result-cache-entries 0`. Hit rates = the server's kuamo_query_cache "
            "and kuamo_result_cache counters over the phase (warm-up second included; the query cache sees only "
            "the result cache's misses).\n\n" + markdown_table(rows)
            + f"\n{ratios}.\n")


def run(quick: bool = False, *, models: Path = DEFAULT_MODEL_DIR, data: Path | None = None,
        catalog: Path | None = None) -> dict[str, Any]:
    from kuamo.benchmarks.bench_catalog import bench_catalog

    catalog, data = bench_catalog(quick, models, catalog, data)
    info = machine_info()
    z = run_zipf(models, data, catalog, seconds=3.0 if quick else 15.0, clients=QUICK_CLIENTS if quick else CLIENTS)
    out = {"machine": info, "quick": quick, "catalog": str(catalog), "zipf": z}
    name = "server_zipf" + ("_quick" if quick else "")
    write_results(name, out, "Server: Zipf query log, caches on vs off", lambda: markdown(z), info)
    return out


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
