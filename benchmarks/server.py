"""Server benchmark: end-to-end gRPC latency for text and photo queries at one client, 32 concurrent
clients with batching on vs off, overload behaviour, the gRPC overhead vs calling the engine
in-process, and a load sweep: closed loop at 1..64 clients, open loop (Poisson) at fixed rates,
SearchStream, mixed text/photo traffic, each with the server's queue vs compute split; a Zipf query log
at 8 and 32 clients with the query cache on vs off (benchmarks/server_zipf.py; alone: `python -m
kuamo.benchmarks.server_zipf`); plots of throughput vs concurrency and latency CDFs. The server runs as its
own process (`kuamo serve`) on loopback over the indexed fashion catalog; the load comes from this process.

    kuamo bench server [--quick]

Writes benchmarks/results/server.json and server.md.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from kuamo.benchmarks.bench_catalog import bench_catalog
from kuamo.benchmarks.common import (
    RESULTS_DIR,
    latency_stats,
    machine_info,
    markdown_table,
    target_rows,
    targets_met,
    write_results,
)
from kuamo.benchmarks.loadgen import LoadResult, closed_loop, open_loop, search_requests, sequential, stream_closed_loop
from kuamo.benchmarks.plots import figure, latency_cdf
from kuamo.benchmarks.server_zipf import CLIENTS, QUICK_CLIENTS, run_zipf
from kuamo.benchmarks.server_zipf import markdown as zipf_markdown
from kuamo.benchmarks.serving import server_process
from kuamo.engine.config import DEFAULT_MODEL_DIR
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb

TARGETS = {"text_p50_ms": 10.0, "text_p99_ms": 25.0, "image_p50_ms": 20.0, "batching_speedup": 1.5,
           "p99_vs_one_client_p50": 4.0, "grpc_overhead_p50_ms": 1.0}


def _uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


async def _interleaved(targets: dict[str, str], models: Path, data: Path, texts: list[str]) -> dict[str, Any]:
    """The same text queries through each server's gRPC Search and through an in-process engine, the order
    rotated per query so no side always follows another: the difference of medians is the gRPC cost. An
    empty Health round trip per server beside them gives the floor any RPC pays on this machine."""
    from grpc import aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from kuamo.engine.engine import Engine
    from kuamo.engine.types import Query
    from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc
    from kuamo.server.app import engine_config, warm_up
    from kuamo.server.config import ServerConfig

    engine = await Engine.open(engine_config(ServerConfig(model_dir=models, data_dir=data, query_cache_entries=0,
                                                          result_cache_entries=0)))
    channels = {name: aio.insecure_channel(t) for name, t in targets.items()}
    stubs = {name: pb_grpc.SearchServiceStub(ch) for name, ch in channels.items()}
    health = {name: health_pb2_grpc.HealthStub(ch) for name, ch in channels.items()}
    lat: dict[str, list[float]] = {"in_process": [], **{f"grpc:{n}": [] for n in targets},
                                   **{f"health:{n}": [] for n in targets}}

    async def timed(key: str, call: Any) -> None:
        t0 = time.perf_counter()
        await call
        lat[key].append(time.perf_counter() - t0)

    def calls(t: str) -> list[tuple[str, Any]]:
        return [("in_process", lambda: engine.search(Query(text=t, k=10)))] + [
            (f"grpc:{n}", lambda n=n: stubs[n].Search(pb.SearchRequest(query=pb.Query(text=t, k=10)), timeout=10))
            for n in targets]

    try:
        await warm_up(engine)
        for batch in (texts[:5], texts):  # the first pass warms every path, then is dropped
            for v in lat.values():
                v.clear()
            for i, t in enumerate(batch):
                order = calls(t)
                order = order[i % len(order):] + order[: i % len(order)]
                for key, call in order:
                    await timed(key, call())
                for n in targets:
                    await timed(f"health:{n}", health[n].Check(health_pb2.HealthCheckRequest(), timeout=10))
    finally:
        for ch in channels.values():
            await ch.close()
        await engine.close(snapshot=False)
    return {k: latency_stats(v) for k, v in lat.items()}


CEILING_BATCHES = (1, 32, 64)


def served_text_encoder(models: Path) -> Any:
    """The text tower in this process, its session configured as `kuamo serve` configures it."""
    from kuamo.engine.artifacts import ModelArtifacts
    from kuamo.engine.encoders import TextEncoder
    from kuamo.server.app import engine_config
    from kuamo.server.config import ServerConfig

    return TextEncoder(ModelArtifacts(models), engine_config(ServerConfig(model_dir=models)).encoder)


def _text_tower_ceiling(models: Path, texts: list[str], seconds: float) -> dict[str, Any]:
    """The text tower alone, in this process with no server running, the session configured as the server
    configures it: texts/s at each batch size. Its best is an upper bound on any server's text QPS here."""
    from kuamo.benchmarks.encoders import _time_batches

    enc = served_text_encoder(models)
    items = texts * 8  # enough chunks of 64 for the time budget, which ends the run
    return {str(b): {"texts_per_s": _time_batches(enc.encode, items, b, seconds)[1]["items_per_s"]}
            for b in CEILING_BATCHES}


def run(quick: bool = False, *, models: Path = DEFAULT_MODEL_DIR, data: Path | None = None,
        catalog: Path | None = None) -> dict[str, Any]:
    catalog, data = bench_catalog(quick, models, catalog, data)
    n_text, n_image = (120, 40) if quick else (400, 120)
    phase_s = 4.0 if quick else 15.0
    text_reqs, image_reqs, texts = search_requests(catalog, n_text, n_image)
    info = machine_info()
    out: dict[str, Any] = {"machine": info, "quick": quick, "catalog": str(catalog), "queries": {
        "text": f"{n_text} (3 in 4 real fashion titles, 1 in 4 Chinese queries from evaluation/data/zh_queries.tsv)",
        "image": f"{n_image} real catalog photos", "k": 10}}

    raw: dict[str, LoadResult] = {}  # for the latency CDFs
    # The query cache off in these phases: they cycle through 400 queries, so with it on they would measure
    # cache hits; every query here pays the text tower, as a shopper's new query does (the Zipf phase below
    # measures the cache)
    with server_process(models, data, batching=True, query_cache=False) as target:
        with server_process(models, data, event_loop="uvloop", query_cache=False) if _uvloop_installed() \
                else nullcontext() as uv:
            targets = {"asyncio": target, **({"uvloop": uv} if uv else {})}
            inter = asyncio.run(_interleaved(targets, models, data, texts))
        raw["one client, text"] = asyncio.run(sequential(target, text_reqs))
        raw["one client, photo"] = asyncio.run(sequential(target, image_reqs))
        # the same text queries collapsed to one hit per colour (Query.collapse): 45 colour values share the
        # catalog, so k = 10 distinct ones often lie beyond the first k x 10 candidates and the search widens
        out["collapse"] = {"attribute": COLLAPSE_BENCH_ATTRIBUTE, "one_client_text": asyncio.run(sequential(
            target, _collapsed(text_reqs, COLLAPSE_BENCH_ATTRIBUTE))).summary()}
        raw["32 clients, text, batching on"] = asyncio.run(closed_loop(target, text_reqs, concurrency=32,
                                                                       duration_s=phase_s))
        one_text, one_image = raw["one client, text"].summary(), raw["one client, photo"].summary()
        c32_on = raw["32 clients, text, batching on"].summary()
        over = asyncio.run(closed_loop(target, text_reqs, concurrency=256, duration_s=phase_s, channels=8)).summary()
        out["load"] = _load_sweep(target, text_reqs, image_reqs, c32_on["throughput_qps"], quick=quick, raw=raw)
    with server_process(models, data, batching=False, query_cache=False) as target:
        raw["32 clients, text, batching off"] = asyncio.run(closed_loop(target, text_reqs, concurrency=32,
                                                                        duration_s=phase_s))
        c32_off = raw["32 clients, text, batching off"].summary()
    # a Zipf query log, caches on vs off (benchmarks/server_zipf.py)
    out["zipf_query_cache"] = run_zipf(models, data, catalog, seconds=3.0 if quick else 15.0,
                                       clients=QUICK_CLIENTS if quick else CLIENTS)
    inproc = inter["in_process"]
    ceiling = _text_tower_ceiling(models, texts, 2.0 if quick else 5.0)

    # two views of the gRPC cost: client latency minus the engine's own time for the same request,
    # and gRPC p50 minus in-process p50 of the same queries, interleaved in one loop
    overhead_server_view = one_text["latency"]["p50_ms"] - one_text["server_total"]["p50_ms"]
    overhead_inproc_view = inter["grpc:asyncio"]["p50_ms"] - inproc["p50_ms"]
    speedup = c32_on["throughput_qps"] / max(c32_off["throughput_qps"], 1e-9)
    figures = {
        "text_p50_ms": one_text["latency"]["p50_ms"], "text_p99_ms": one_text["latency"]["p99_ms"],
        "image_p50_ms": one_image["latency"]["p50_ms"], "batching_speedup": speedup,
        "p99_vs_one_client_p50": c32_on["latency"]["p99_ms"] / one_text["latency"]["p50_ms"],
        "grpc_overhead_p50_ms": overhead_inproc_view,
    }
    out["targets"] = targets_met(figures, TARGETS, lower_is_better={
        "text_p50_ms", "text_p99_ms", "image_p50_ms", "p99_vs_one_client_p50", "grpc_overhead_p50_ms"})
    out["one_client_text"] = one_text
    out["one_client_image"] = one_image
    out["clients32_batching_on"] = c32_on
    out["clients32_batching_off"] = c32_off
    out["overload_256_clients_admission_64"] = over
    out["in_process_engine_text"] = inproc
    # Little's law: 32 clients in flight whose latency is at most 4 x the one-client p50 need at least
    # 32 / (4 x p50) answers per second; compare with what the text tower alone can encode
    needed = 32 / (TARGETS["p99_vs_one_client_p50"] * one_text["latency"]["p50_ms"] / 1000)
    best = max(v["texts_per_s"] for v in ceiling.values())
    out["text_tower_ceiling"] = {"batches": ceiling, "best_texts_per_s": best, "qps_needed_for_p99_target": needed}
    out["interleaved_grpc_text"] = inter["grpc:asyncio"]
    out["interleaved"] = inter
    out["grpc_overhead"] = {"grpc_minus_in_process_p50_ms": overhead_inproc_view,
                            "client_minus_server_engine_time_p50_ms": overhead_server_view,
                            "empty_health_rtt_p50_ms": inter["health:asyncio"]["p50_ms"],
                            **({"uvloop_server_grpc_minus_in_process_p50_ms":
                                inter["grpc:uvloop"]["p50_ms"] - inproc["p50_ms"],
                                "uvloop_server_empty_health_rtt_p50_ms": inter["health:uvloop"]["p50_ms"]}
                               if "grpc:uvloop" in inter else {})}
    name = "server" + ("_quick" if quick else "")
    out["plots"] = {"throughput_vs_concurrency": f"{name}_throughput.png", "latency_cdf": f"{name}_latency_cdf.png"}
    write_results(name, out, "Server benchmark (gRPC, loopback)", lambda: _markdown(out), info, plots={
        out["plots"]["throughput_vs_concurrency"]: lambda path: _plot_throughput(out, path),
        out["plots"]["latency_cdf"]: lambda path: _plot_latency_cdf(raw, path)})
    return out


SWEEP_CLIENTS = (1, 2, 4, 8, 16, 32, 64)


def _split(s: dict[str, Any]) -> dict[str, Any]:
    """One table row: client-side percentiles, throughput, errors, and the server's queue vs compute split."""
    lat, q, tot = s["latency"], s["server_queue"], s["server_total"]
    return {"ok": s["ok"], "qps": s["throughput_qps"], **{f"{p} ms": lat.get(f"{p}_ms") for p in ("p50", "p90", "p95",
                                                                                                  "p99")},
            "errors": sum(v for k, v in s["codes"].items() if k != "OK"), "refused": s["refused"],
            "server queue p50 ms": q.get("p50_ms"), "server compute p50 ms":
                None if not tot.get("n") else tot["p50_ms"] - q.get("p50_ms", 0.0)}


def _load_sweep(target: str, text_reqs: list, image_reqs: list, capacity_qps: float, *, quick: bool,
                raw: dict[str, LoadResult]) -> dict[str, Any]:
    """Closed loop at 1..64 clients; open loop at 50 % and 90 % of the 32-client capacity; 8 SearchStream
    clients; mixed traffic (3 text queries : 1 photo) at 8 clients."""
    step_s = 1.5 if quick else 6.0
    sweep = {}
    for c in (1, 8, 32) if quick else SWEEP_CLIENTS:
        sweep[c] = asyncio.run(closed_loop(target, text_reqs, concurrency=c, duration_s=step_s)).summary()
    opened = {}
    for frac in (0.5, 0.9):
        r = asyncio.run(open_loop(target, text_reqs, rate_qps=frac * capacity_qps, duration_s=step_s, seed=7))
        raw[f"open loop, text, {frac:.0%} of capacity"] = r
        opened[f"{frac:.0%}"] = {"rate_qps": frac * capacity_qps, **r.summary()}
    raw["8 SearchStream clients, text"] = asyncio.run(stream_closed_loop(target, text_reqs, concurrency=8,
                                                                         duration_s=step_s))
    mixed = [r for i, t in enumerate(text_reqs) for r in ((t,) if i % 3 else (t, image_reqs[i % len(image_reqs)]))]
    raw["8 clients, mixed text + photo"] = asyncio.run(closed_loop(target, mixed, concurrency=8, duration_s=step_s))
    return {"seconds_per_point": step_s, "closed_loop_text": sweep, "open_loop_text": opened,
            "stream_8_clients_text": raw["8 SearchStream clients, text"].summary(),
            "mixed_8_clients": {"mix": "3 text queries : 1 photo", **raw["8 clients, mixed text + photo"].summary()}}


def _plot_throughput(o: dict[str, Any], path: Path) -> None:
    sweep = o["load"]["closed_loop_text"]
    cs = sorted(sweep, key=int)
    with figure(path, figsize=(7, 4.5)) as (fig, ax):
        ax.plot(cs, [sweep[c]["throughput_qps"] for c in cs], "o-", color="C0", label="throughput")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("closed-loop clients (text search over gRPC)")
        ax.set_ylabel("queries / s", color="C0")
        ax2 = ax.twinx()
        for p, style in (("p50", "s--"), ("p99", "^:")):
            ax2.plot(cs, [sweep[c]["latency"].get(f"{p}_ms") for c in cs], style, color="C3", label=f"{p} latency")
        ax2.set_ylabel("latency, ms", color="C3")
        ax2.set_yscale("log")
        fig.legend(loc="upper left", fontsize=8)
        ax.set_title("kuamo server: throughput and latency vs concurrency")


def _plot_latency_cdf(raw: dict[str, LoadResult], path: Path) -> None:
    with figure(path, figsize=(8, 5)) as (_, ax):
        for label, r in raw.items():
            latency_cdf(ax, label, r.latencies)
        ax.set_xscale("log")
        ax.set_xlabel("client-side latency, ms")
        ax.set_ylabel("fraction of queries")
        ax.set_title("kuamo server: latency CDF per configuration (loopback gRPC)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")


COLLAPSE_BENCH_ATTRIBUTE = "baseColour"


def _collapsed(requests: list, attribute: str) -> list:
    """Copies of the search requests with Query.collapse set."""
    out = []
    for r in requests:
        c = pb.SearchRequest()
        c.CopyFrom(r)
        c.query.collapse = attribute
        out.append(c)
    return out


def _markdown(o: dict[str, Any]) -> str:
    rows = target_rows(o["targets"])
    phases = []
    for name in ("one_client_text", "one_client_text_collapse", "one_client_image", "clients32_batching_on",
                 "clients32_batching_off", "overload_256_clients_admission_64"):
        if name == "one_client_text_collapse" and "collapse" not in o:
            continue
        s = o["collapse"]["one_client_text"] if name == "one_client_text_collapse" else o[name]
        phases.append({"phase": name, "ok": s["ok"], "qps": s["throughput_qps"], "p50 ms": s["latency"].get("p50_ms"),
                       "p99 ms": s["latency"].get("p99_ms"), "server p50 ms": s["server_total"].get("p50_ms"),
                       "encode p50 ms": s["server_encode"].get("p50_ms"), "refused": s["refused"],
                       "refused p99 ms": s["refused_latency"].get("p99_ms")})
    ip, ig = o["in_process_engine_text"], o["interleaved_grpc_text"]
    ov = o["grpc_overhead"]["client_minus_server_engine_time_p50_ms"]
    return ("Queries: " + o["queries"]["text"] + "; photos: " + o["queries"]["image"] + "; k = 10. The server is a "
            "separate `kuamo serve` process on 127.0.0.1; the clients (grpc.aio) run in the benchmark process on the "
            "same 2 cores. one_client_text_collapse: the same text queries with `collapse` = "
            f"{o.get('collapse', {}).get('attribute')} (one hit per colour).\n\n## Targets\n\n" + markdown_table(rows)
            + "\n## Phases\n\n" + markdown_table(phases)
            + f"\nSame text queries interleaved (gRPC / in-process engine, alternating order): p50 {ig['p50_ms']:.2f}"
            f" / {ip['p50_ms']:.2f} ms, p99 {ig['p99_ms']:.2f} / {ip['p99_ms']:.2f} ms. Client latency minus the"
            f" server's own engine time: {ov:.2f} ms at p50." + _overhead_markdown(o) + _ceiling_markdown(o)
            + _load_markdown(o) + "\n\n## Zipf query log, caches on vs off\n\n"
            + zipf_markdown(o["zipf_query_cache"]) +
            f"\n\nReproduce: `kuamo bench server` (results in {RESULTS_DIR}/server.json).\n")


def _overhead_markdown(o: dict[str, Any]) -> str:
    g = o["grpc_overhead"]
    text = (f" An empty Health round trip, interleaved with those: {g['empty_health_rtt_p50_ms']:.2f} ms p50 (the "
            "floor of any unary call between two grpc.aio processes here).")
    if "uvloop_server_grpc_minus_in_process_p50_ms" in g:
        text += (f" The same server on uvloop (`--event-loop uvloop`), interleaved in the same loop: gRPC minus "
                 f"in-process {g['uvloop_server_grpc_minus_in_process_p50_ms']:.2f} ms, Health "
                 f"{g['uvloop_server_empty_health_rtt_p50_ms']:.2f} ms.")
    return text


def _ceiling_markdown(o: dict[str, Any]) -> str:
    c = o["text_tower_ceiling"]
    per_batch = ", ".join(f"{v['texts_per_s']:.0f} at batch {b}" for b, v in c["batches"].items())
    return ("\n\nWhy the 32-client p99 target is out of reach on this machine: 32 clients in flight answered within "
            f"4 x the one-client p50 need {c['qps_needed_for_p99_target']:.0f} answers/s (Little's law); the text "
            f"tower alone, with the whole machine and nothing else running, encodes {per_batch} texts/s "
            "(same queries, same session settings as the server).")


def _load_markdown(o: dict[str, Any]) -> str:
    ld = o["load"]
    rows = [{"load": f"closed loop, {c} clients", **_split(s)} for c, s in ld["closed_loop_text"].items()]
    rows += [{"load": f"open loop (Poisson) at {k} of the 32-client capacity ({s['rate_qps']:.0f} /s)", **_split(s)}
             for k, s in ld["open_loop_text"].items()]
    rows.append({"load": "SearchStream, 8 clients (one stream each, query after answer)",
                 **_split(ld["stream_8_clients_text"])})
    rows.append({"load": f"closed loop, 8 clients, mixed ({ld['mixed_8_clients']['mix']})",
                 **_split(ld["mixed_8_clients"])})
    plots = o.get("plots", {})
    return (f"\n\n## Load sweep (text queries unless stated; {ld['seconds_per_point']:.0f} s per point)\n\n"
            "Server queue = time a query waited for an encoder batch; compute = the rest of the server's own time "
            "(encode, search, re-rank); the remainder of the client latency is gRPC, the event loops and the "
            "clients themselves, which share the 2 cores with the server.\n\n" + markdown_table(rows)
            + "".join(f"\n![{k}]({v})\n" for k, v in plots.items()))


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
