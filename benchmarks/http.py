"""HTTP/JSON vs gRPC (`kuamo bench http`): the same text searches and embeddings through both surfaces of one
`kuamo serve --http-port` process, in one run.

- one client: gRPC and HTTP calls interleaved query by query (both see the same machine state), p50/p99 and
  the p50 difference (target: HTTP adds <= 1.5 ms);
- 8 clients: closed loop on each surface in turn, throughput and p99;
- embeddings: gRPC Embed vs OpenAI-compatible POST /v1/embeddings, batches of 1 and 32 texts.
HTTP clients keep their connections alive (aiohttp sessions), as gRPC channels do.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
from grpc import aio

from kuamo.benchmarks.bench_catalog import bench_catalog
from kuamo.benchmarks.common import latency_stats, machine_info, markdown_table, quick_models_main, write_results
from kuamo.benchmarks.loadgen import search_requests
from kuamo.benchmarks.serving import start_server, stop_server
from kuamo.engine.config import DEFAULT_MODEL_DIR
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc

TARGET_ADDED_P50_MS = 1.5
HTTP_LINE = re.compile(r"HTTP on :(\d+)")


async def _one_client(target: str, http: str, texts: list[str]) -> dict[str, Any]:
    grpc_s, http_s = [], []
    async with aio.insecure_channel(target) as chan, aiohttp.ClientSession() as session:
        stub = pb_grpc.SearchServiceStub(chan)
        for i, text in enumerate(texts[:5] + texts):  # the first five warm both connections up
            req = pb.SearchRequest(query=pb.Query(text=text, k=10))
            body = {"query": {"text": text, "k": 10}}
            order = ("grpc", "http") if i % 2 else ("http", "grpc")  # alternate who goes first
            for surface in order:
                t0 = time.perf_counter()
                if surface == "grpc":
                    await stub.Search(req, timeout=30)
                else:
                    async with session.post(f"{http}/v1/Search", json=body) as r:
                        assert r.status == 200, await r.text()
                        await r.read()
                if i >= 5:
                    (grpc_s if surface == "grpc" else http_s).append(time.perf_counter() - t0)
    g, h = latency_stats(grpc_s), latency_stats(http_s)
    return {"grpc": g, "http": h, "added_p50_ms": h["p50_ms"] - g["p50_ms"]}


async def _closed_loop(target: str, http: str, texts: list[str], surface: str, clients: int,
                       seconds: float) -> dict[str, Any]:
    lat: list[float] = []
    stop_at = time.perf_counter() + seconds
    async with aio.insecure_channel(target) as chan, aiohttp.ClientSession() as session:
        stub = pb_grpc.SearchServiceStub(chan)

        async def client(c: int) -> None:
            j = c * 7919
            while time.perf_counter() < stop_at:
                text = texts[j % len(texts)]
                j += 1
                t0 = time.perf_counter()
                if surface == "grpc":
                    await stub.Search(pb.SearchRequest(query=pb.Query(text=text, k=10)), timeout=30)
                else:
                    async with session.post(f"{http}/v1/Search", json={"query": {"text": text, "k": 10}}) as r:
                        await r.read()
                lat.append(time.perf_counter() - t0)

        await asyncio.gather(*(client(c) for c in range(clients)))
    return {"qps": len(lat) / seconds, "latency": latency_stats(lat)}


async def _embeddings(target: str, http: str, texts: list[str], batch: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with aio.insecure_channel(target) as chan, aiohttp.ClientSession() as session:
        stub = pb_grpc.SearchServiceStub(chan)
        for surface in ("grpc", "openai_http"):
            n, t0, j = 0, time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                chunk = [texts[(j + i) % len(texts)] for i in range(batch)]
                j += batch
                if surface == "grpc":
                    await stub.Embed(pb.EmbedRequest(texts=chunk), timeout=30)
                else:
                    async with session.post(f"{http}/v1/embeddings", json={"input": chunk}) as r:
                        assert r.status == 200, await r.text()
                        await r.read()
                n += batch
            out[surface] = {"texts_per_s": n / (time.perf_counter() - t0)}
    out["openai_vs_grpc"] = out["openai_http"]["texts_per_s"] / out["grpc"]["texts_per_s"]
    return out


def run(quick: bool = False, *, models: Path = DEFAULT_MODEL_DIR) -> dict[str, Any]:
    catalog, data = bench_catalog(quick, models)
    _, _, texts = search_requests(catalog, 60 if quick else 400, 1)
    seconds = 2.0 if quick else 8.0
    res: dict[str, Any] = {"suite": "http", "quick": quick, "machine": machine_info(), "catalog": str(catalog),
                           "queries": f"{len(texts)} text queries (3 in 4 fashion titles, 1 in 4 Chinese), k = 10"}
    s = start_server(models, data, extra_args=["--http-port", "0"])
    try:
        port = next((int(m.group(1)) for m in [HTTP_LINE.search(s.banner)] if m), None)
        http = f"http://127.0.0.1:{port}"
        res["one_client"] = asyncio.run(_one_client(s.target, http, texts))
        res["eight_clients"] = {surface: asyncio.run(_closed_loop(s.target, http, texts, surface, 8, seconds))
                                for surface in ("grpc", "http")}
        res["embeddings"] = {str(b): asyncio.run(_embeddings(s.target, http, texts, b, seconds)) for b in (1, 32)}
    finally:
        stop_server(s)
    added = res["one_client"]["added_p50_ms"]
    res["targets"] = {"http_added_p50_ms": {"target": f"<= {TARGET_ADDED_P50_MS}", "measured": added,
                                            "met": added <= TARGET_ADDED_P50_MS}}
    _write(res)
    return res


def _write(res: dict[str, Any]) -> None:
    write_results("http" + ("_quick" if res["quick"] else ""), res, "HTTP/JSON vs gRPC (one server, same queries)",
                  lambda: _markdown(res), res["machine"])
    print(json.dumps(res["targets"]))


def _markdown(res: dict[str, Any]) -> str:
    one = res["one_client"]
    rows = [{"surface": k, "p50 ms": one[k]["p50_ms"], "p99 ms": one[k]["p99_ms"],
             "8 clients qps": res["eight_clients"][k]["qps"],
             "8 clients p99 ms": res["eight_clients"][k]["latency"]["p99_ms"]} for k in ("grpc", "http")]
    emb = [{"batch": b, "gRPC Embed texts/s": e["grpc"]["texts_per_s"],
            "/v1/embeddings texts/s": e["openai_http"]["texts_per_s"], "ratio": e["openai_vs_grpc"]}
           for b, e in res["embeddings"].items()]
    return (f"{res['queries']}; catalog {res['catalog']}.\n\n## Text search\n\n" + markdown_table(rows)
            + f"\nHTTP adds **{one['added_p50_ms']:.2f} ms** p50 over gRPC (target <= {TARGET_ADDED_P50_MS}; one "
            "client, calls interleaved).\n\n## Embeddings\n\n" + markdown_table(emb)
            + "\nReproduce: `kuamo bench http` (or `python -m kuamo.benchmarks.http`).\n")


def main() -> None:
    quick_models_main(run, __doc__)


if __name__ == "__main__":
    main()
