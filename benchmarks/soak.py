"""Soak test, on demand only (not in CI, not in `kuamo bench all`): 20 minutes of mixed traffic against a
`kuamo serve` process over the real models and a COPY of the indexed fashion catalog:

- 8 shoppers searching (text, 1 in 10 by photo, some with filters), each pausing ~20 ms between queries;
- 1 ingester streaming Upserts of 8 real fashion products with photos (new ids) about once a second;
- 1 janitor deleting about half of what was ingested, every 2 s, and polling Stats.

Per window it records the calls and errors of each kind, latency percentiles, the server's RSS and the
catalog size; the summary says how errors, RSS and latency moved from the first window to the last, and
whether the catalog and the index still agree at the end.

    python -m kuamo.benchmarks.soak [--minutes 20] [--window 60]

Writes benchmarks/results/soak.json and soak.md.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from grpc import aio

from kuamo.benchmarks.bench_catalog import bench_catalog
from kuamo.benchmarks.common import RESULTS_DIR, latency_stats, machine_info, markdown_table, write_results
from kuamo.benchmarks.serving import DEADLINE_S, copy_data, serving
from kuamo.benchmarks.watch import rss_mib
from kuamo.engine.config import DEFAULT_MODEL_DIR
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc

SEARCHERS = 8
SOAK_IDS = 300_000_000


@dataclass
class Window:
    start: float
    calls: Counter = field(default_factory=Counter)  # (op, code) -> n
    latency: dict[str, list[float]] = field(default_factory=dict)
    rss_mib: float | None = None
    products: int | None = None
    indexed: int | None = None

    def add(self, op: str, code: str, seconds: float) -> None:
        self.calls[(op, code)] += 1
        if code == "OK":
            self.latency.setdefault(op, []).append(seconds)

    def summary(self) -> dict[str, Any]:
        ops = sorted({op for op, _ in self.calls})
        return {"t_s": round(self.start, 1), "rss_mib": self.rss_mib, "products": self.products,
                "indexed": self.indexed,
                "calls": {op: sum(n for (o, _), n in self.calls.items() if o == op) for op in ops},
                "errors": {f"{op}:{code}": n for (op, code), n in sorted(self.calls.items()) if code != "OK"},
                "latency": {op: latency_stats(v) for op, v in sorted(self.latency.items())}}


class Soak:
    def __init__(self, target: str, pid: int, items: list[Any], seconds: float, window_s: float, seed: int) -> None:
        self.target, self.pid, self.items = target, pid, items
        self.seconds, self.window_s = seconds, window_s
        self.rng = random.Random(seed)
        self.t0 = 0.0
        self.windows: list[Window] = []
        self.ingested: list[int] = []
        self.deleted = 0
        self.next_id = SOAK_IDS
        self.final: dict[str, Any] = {}

    def window(self) -> Window:
        i = int((time.perf_counter() - self.t0) // self.window_s)
        while len(self.windows) <= i:
            self.windows.append(Window(start=len(self.windows) * self.window_s))
        return self.windows[i]

    async def timed(self, op: str, coro: Any) -> Any:
        t = time.perf_counter()
        try:
            out = await coro
            self.window().add(op, "OK", time.perf_counter() - t)
            return out
        except aio.AioRpcError as exc:
            self.window().add(op, exc.code().name, time.perf_counter() - t)
            return None

    def running(self) -> bool:
        return time.perf_counter() - self.t0 < self.seconds

    async def searcher(self, stub: pb_grpc.SearchServiceStub, n: int, photos: list[bytes]) -> None:
        rng = random.Random(n)
        while self.running():
            it = self.items[rng.randrange(len(self.items))]
            if rng.random() < 0.1:
                q, op = pb.Query(image=photos[rng.randrange(len(photos))], k=10), "search_image"
            else:
                q, op = pb.Query(text=it.title, k=10), "search_text"
                if rng.random() < 0.3:
                    q.filters.category_prefix = it.attrs.get("masterCategory", "")
            await self.timed(op, stub.Search(pb.SearchRequest(query=q), timeout=DEADLINE_S))
            await asyncio.sleep(rng.uniform(0.01, 0.03))

    async def ingester(self, stub: pb_grpc.SearchServiceStub) -> None:
        while self.running():
            batch = [self.items[self.rng.randrange(len(self.items))] for _ in range(8)]
            ids = list(range(self.next_id, self.next_id + len(batch)))
            self.next_id += len(batch)
            msgs = [pb.UpsertRequest(product=pb.Product(id=i, title=f"{it.title} (soak {i})", category="/".join(
                it.attrs.get(k, "") for k in ("masterCategory", "subCategory", "articleType")),
                attributes={"baseColour": pb.AttrValue(string_value=it.attrs.get("baseColour") or "none")}),
                image=it.image_path.read_bytes()) for i, it in zip(ids, batch, strict=True)]
            r = await self.timed("upsert", stub.Upsert(iter(msgs), timeout=DEADLINE_S * 3))
            if r is not None:
                self.ingested += list(r.accepted)
                if r.rejected:
                    self.window().add("upsert_row", "REJECTED", 0.0)
            await asyncio.sleep(1.0)

    async def janitor(self, stub: pb_grpc.SearchServiceStub) -> None:
        while self.running():
            await asyncio.sleep(2.0)
            if len(self.ingested) > 16:
                gone = self.rng.sample(self.ingested[:-8], len(self.ingested[:-8]) // 2)
                r = await self.timed("delete", stub.Delete(pb.DeleteRequest(ids=gone), timeout=DEADLINE_S))
                if r is not None:
                    self.deleted += r.deleted
                    self.ingested = [i for i in self.ingested if i not in set(gone)]
            s = await self.timed("stats", stub.Stats(pb.StatsRequest(), timeout=DEADLINE_S))
            w = self.window()
            w.rss_mib = rss_mib(self.pid)
            if s is not None:
                w.products, w.indexed = s.products, s.indexed

    async def run(self, photos: list[bytes]) -> None:
        async with aio.insecure_channel(self.target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
            stub = pb_grpc.SearchServiceStub(ch)
            self.t0 = time.perf_counter()
            await asyncio.gather(*(self.searcher(stub, n, photos) for n in range(SEARCHERS)), self.ingester(stub),
                                 self.janitor(stub))
            s = await stub.Stats(pb.StatsRequest(), timeout=DEADLINE_S)
            self.final = {"products": s.products, "indexed": s.indexed, "consistent": s.products == s.indexed}
            # every product the soak still believes exists is there
            missing = 0
            for pid in self.ingested[-50:]:
                try:
                    await stub.GetProduct(pb.GetProductRequest(id=pid), timeout=DEADLINE_S)
                except aio.AioRpcError:
                    missing += 1
            self.final["recent_ingested_missing"] = missing


def run(minutes: float = 20.0, *, window_s: float | None = None, models: Path = DEFAULT_MODEL_DIR,
        data: Path | None = None, catalog: Path | None = None, seed: int = 0) -> dict[str, Any]:
    from kuamo.export.samples import load_fashion

    catalog, data = bench_catalog(False, models, catalog, data)
    window_s = window_s or (60.0 if minutes >= 10 else 15.0)
    items = random.Random(seed).sample(load_fashion(catalog), 2000)
    photos = [it.image_path.read_bytes() for it in items[:100]]
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="kuamo-soak-") as tmp:
        work = Path(tmp)
        with serving(models, copy_data(data, work / "data"), work / "server.log") as s:
            rss0 = rss_mib(s.pid)
            soak = Soak(s.target, s.pid, items, minutes * 60, window_s, seed)
            asyncio.run(soak.run(photos))
            alive = s.alive()
            rss_end = rss_mib(s.pid)
        log = (work / "server.log").read_text(errors="replace")
    wins = [w.summary() for w in soak.windows if w.calls]
    out = {"machine": info, "minutes": minutes, "window_s": window_s, "searchers": SEARCHERS, "windows": wins,
           "final": soak.final, "server_alive": alive, "rss_mib_at_start": rss0, "rss_mib_at_end": rss_end,
           "deleted": soak.deleted, "server_log_internal_errors": log.count("internal error (ref"),
           "summary": _summary(wins)}
    write_results("soak", out, f"Soak test ({minutes:g} minutes of mixed traffic)", lambda: _markdown(out), info)
    return out


def _summary(wins: list[dict]) -> dict[str, Any]:
    """Errors, RSS and text latency from the first full windows to the last ones (a trailing window cut short
    by the end of the run is left out: a few calls make no percentile)."""
    if not wins:
        return {}
    median_calls = float(np.median([sum(w["calls"].values()) for w in wins]))
    full = [w for w in wins if sum(w["calls"].values()) >= 0.5 * median_calls] or wins
    errors = [sum(w["errors"].values()) for w in wins]
    rss = [(w["t_s"], w["rss_mib"]) for w in full if w["rss_mib"] is not None]
    slope = float(np.polyfit([t for t, _ in rss], [v for _, v in rss], 1)[0]) * 60 if len(rss) >= 2 else None
    p99 = [w["latency"].get("search_text", {}).get("p99_ms") for w in full]
    p99 = [v for v in p99 if v is not None]
    n = max(1, min(3, len(full) // 3))
    t_min = [w["t_s"] / 60 for w in full if w["latency"].get("search_text", {}).get("p99_ms") is not None]
    trend = float(np.polyfit(t_min, p99, 1)[0]) if len(p99) >= 3 else None
    first, last = (float(np.mean(p99[:n])), float(np.mean(p99[-n:]))) if p99 else (None, None)
    rss_v = [v for _, v in rss]
    return {"errors_per_window": errors, "errors_first_window": errors[0], "errors_last_window": errors[-1],
            "full_windows": len(full), "rss_first_mib": rss_v[0] if rss_v else None,
            "rss_last_mib": rss_v[-1] if rss_v else None, "rss_max_mib": max(rss_v, default=None),
            "rss_growth_pct": 100 * (rss_v[-1] / rss_v[0] - 1) if rss_v else None,
            "rss_max_growth_pct": 100 * (max(rss_v) / rss_v[0] - 1) if rss_v else None,
            "rss_slope_mib_per_min": slope, "text_p99_windows_averaged": n,
            "search_text_p99_ms_first": first, "search_text_p99_ms_last": last,
            "search_text_p99_ms_range": [min(p99), max(p99)] if p99 else None,
            "search_text_p99_trend_ms_per_min": trend,
            "search_text_p99_window_std_ms": float(np.std(p99)) if p99 else None,
            "calls": sum(sum(w["calls"].values()) for w in wins)}


def _f(v: float | None, nd: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def _markdown(o: dict[str, Any]) -> str:
    s = o["summary"]
    lo, hi = s.get("search_text_p99_ms_range") or (None, None)
    rows = [{"t s": w["t_s"], "calls": sum(w["calls"].values()), "errors": sum(w["errors"].values()),
             "text p50 ms": w["latency"].get("search_text", {}).get("p50_ms"),
             "text p99 ms": w["latency"].get("search_text", {}).get("p99_ms"),
             "photo p99 ms": w["latency"].get("search_image", {}).get("p99_ms"),
             "upsert p99 ms": w["latency"].get("upsert", {}).get("p99_ms"), "RSS MiB": w["rss_mib"],
             "products": w["products"], "indexed": w["indexed"]} for w in o["windows"]]
    note = "" if o["minutes"] >= 20 else (f"**This run lasted {o['minutes']:g} minutes, not the 20 the soak test is "
                                          "meant to run; it checks that the script works, it is not a soak result.**"
                                          "\n\n")
    return (note + f"{o['searchers']} searching clients (~20 ms pause between queries, 1 in 10 by photo), one "
            "ingester (8 real products with photos per Upsert, ~1/s), one janitor (deletes half of what was "
            f"ingested every 2 s, polls Stats); windows of {o['window_s']:g} s.\n\n" + markdown_table(rows)
            + f"\nCalls {s.get('calls')}; errors per window {s.get('errors_per_window')}. Over the "
              f"{s.get('full_windows')} full windows: RSS {_f(s.get('rss_first_mib'))} -> {_f(s.get('rss_last_mib'))} "
              f"MiB ({_f(s.get('rss_growth_pct'), 2)}%, max {_f(s.get('rss_max_growth_pct'), 2)}% above the first "
              f"window, slope {_f(s.get('rss_slope_mib_per_min'), 3)} MiB/min); text p99, mean of the first vs the "
              f"last {s.get('text_p99_windows_averaged')} windows, {_f(s.get('search_text_p99_ms_first'))} -> "
              f"{_f(s.get('search_text_p99_ms_last'))} ms (windows {_f(lo)}-{_f(hi)} ms, std "
              f"{_f(s.get('search_text_p99_window_std_ms'))} ms; linear trend "
              f"{_f(s.get('search_text_p99_trend_ms_per_min'), 2)} ms/min). "
              f"At the end: {o['final']}, server alive {o['server_alive']}, internal errors in the server log "
              f"{o['server_log_internal_errors']}.\n\nReproduce: `flock /tmp/kuamo-bench.lock python -m "
              f"kuamo.benchmarks.soak` (results in {RESULTS_DIR}/soak.json).\n")


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="kuamo soak test (mixed search/ingest/delete traffic)")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--window", type=float, default=None, help="seconds per reporting window")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    out = run(a.minutes, window_s=a.window, seed=a.seed)
    print(out["summary"], out["final"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
