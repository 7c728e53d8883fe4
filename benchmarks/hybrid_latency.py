"""Text search through gRPC with hybrid (BM25) ranking on vs off (`python -m kuamo.benchmarks.hybrid_latency`):
one `kuamo serve` on the catalog, one client, each query sent with weights.lexical 0 and with the weight the
validation grid chose (benchmarks/results/hybrid.md; the server default is 0, off), interleaved query by
query (alternating who goes first), so both see the same machine state. Queries: the baseline mix (fashion
titles and the Chinese queries), each text used once per mode, the query cache off so every call pays the
text tower as a shopper's new query does."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc

from kuamo.benchmarks.bench_catalog import bench_catalog
from kuamo.benchmarks.common import latency_stats, machine_info, markdown_table, quick_models_main, write_results
from kuamo.benchmarks.loadgen import search_requests
from kuamo.benchmarks.serving import start_server, stop_server
from kuamo.engine.config import DEFAULT_MODEL_DIR
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc

TARGET_ADDED_P50_MS = 1.0
HYBRID_LEXICAL_WEIGHT = 0.4  # `kuamo eval --hybrid`'s choice on the validation split


def run(quick: bool = False, *, models: Path = DEFAULT_MODEL_DIR) -> dict[str, Any]:
    catalog, data = bench_catalog(quick, models)
    _, _, texts = search_requests(catalog, 60 if quick else 400, 1)
    res: dict[str, Any] = {"suite": "hybrid_latency", "quick": quick, "machine": machine_info(),
                           "catalog": str(catalog), "queries": len(texts)}
    s = start_server(models, data, extra_args=["--query-cache-entries", "0"])
    on: list[float] = []
    off: list[float] = []
    try:
        with grpc.insecure_channel(s.target) as ch:
            stub = pb_grpc.SearchServiceStub(ch)
            for i, text in enumerate(texts[:10] + texts):  # the first ten warm up
                order = ("off", "on") if i % 2 else ("on", "off")
                for mode in order:
                    q = pb.Query(text=text, k=10)
                    q.weights["lexical"] = HYBRID_LEXICAL_WEIGHT if mode == "on" else 0.0
                    t0 = time.perf_counter()
                    stub.Search(pb.SearchRequest(query=q), timeout=30)
                    if i >= 10:
                        (on if mode == "on" else off).append(time.perf_counter() - t0)
    finally:
        stop_server(s)
    res["hybrid_on"], res["hybrid_off"] = latency_stats(on), latency_stats(off)
    added = res["hybrid_on"]["p50_ms"] - res["hybrid_off"]["p50_ms"]
    res["targets"] = {"hybrid_added_p50_ms": {"target": f"<= {TARGET_ADDED_P50_MS}", "measured": added,
                                              "met": added <= TARGET_ADDED_P50_MS}}
    write_results("hybrid_latency" + ("_quick" if quick else ""), res, "Text search through gRPC, hybrid on vs off",
                  lambda: _markdown(res), res["machine"])
    print(json.dumps(res["targets"]))
    return res


def _markdown(res: dict[str, Any]) -> str:
    rows = [{"ranking": name, "p50 ms": res[key]["p50_ms"], "p99 ms": res[key]["p99_ms"]}
            for name, key in (("vector only (weights.lexical 0)", "hybrid_off"),
                              (f"hybrid (weights.lexical {res['lexical_weight']})", "hybrid_on"))]
    t = res["targets"]["hybrid_added_p50_ms"]
    return (f"{res['queries']} text queries, one client, interleaved; catalog {res['catalog']}; query cache off.\n\n"
            + markdown_table(rows) + f"\nHybrid adds **{t['measured']:.2f} ms** p50 (target {t['target']}).\n\n"
            "Reproduce: `python -m kuamo.benchmarks.hybrid_latency`.\n")


def main() -> None:
    quick_models_main(run, __doc__)


if __name__ == "__main__":
    main()
