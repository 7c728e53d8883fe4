"""Text search through gRPC with hybrid ranking on vs off (`python -m kuamo.benchmarks.hybrid_latency`): one
`kuamo serve` on the catalog, one client, each query sent with weights.lexical and weights.understanding 0 and
with the weights the validation grid chose (benchmarks/results/hybrid.md; the server default is 0, off),
interleaved query by query (alternating who goes first), so both see the same machine state. Queries: the
baseline mix (fashion titles and the Chinese queries), each text used once per mode, the query cache off so
every call pays the text tower as a shopper's new query does."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc

from kuamo.benchmarks.bench_catalog import bench_catalog
from kuamo.benchmarks.common import latency_stats, machine_info, markdown_table, quick_models_main, write_results
from kuamo.benchmarks.loadgen import search_requests
from kuamo.benchmarks.serving import CACHES_OFF, start_server, stop_server
from kuamo.engine.config import DEFAULT_MODEL_DIR, RECOMMENDED_HYBRID_WEIGHTS
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc

TARGET_ADDED_P50_MS = 1.0
HYBRID_RESULTS = Path("benchmarks/results/hybrid.json")


def chosen_weights() -> dict[str, float]:
    """The ranking weights `kuamo eval --hybrid` chose (benchmarks/results/hybrid.json), else the recommended."""
    if HYBRID_RESULTS.exists():
        return {k: float(v) for k, v in json.loads(HYBRID_RESULTS.read_text())["chosen"].items()}
    return dict(RECOMMENDED_HYBRID_WEIGHTS)


def run(quick: bool = False, *, models: Path = DEFAULT_MODEL_DIR) -> dict[str, Any]:
    catalog, data = bench_catalog(quick, models)
    _, _, texts = search_requests(catalog, 60 if quick else 400, 1)
    res: dict[str, Any] = {"suite": "hybrid_latency", "quick": quick, "machine": machine_info(),
                           "catalog": str(catalog), "queries": len(texts), "weights": chosen_weights()}
    s = start_server(models, data, extra_args=list(CACHES_OFF))
    on: list[float] = []
    off: list[float] = []
    try:
        with grpc.insecure_channel(s.target) as ch:
            stub = pb_grpc.SearchServiceStub(ch)
            for i, text in enumerate(texts[:10] + texts):  # the first ten warm up
                order = ("off", "on") if i % 2 else ("on", "off")
                for mode in order:
                    q = pb.Query(text=text, k=10)
                    for name, w in res["weights"].items():
                        q.weights[name] = w if mode == "on" else 0.0
                    t0 = time.perf_counter()
                    stub.Search(pb.SearchRequest(query=q), timeout=30)
                    if i >= 10:
                        (on if mode == "on" else off).append(time.perf_counter() - t0)
    finally:
        stop_server(s)
    res["hybrid_on"], res["hybrid_off"] = latency_stats(on), latency_stats(off)
    res["lexical_in_process"] = _lexical_paths(data, texts)
    added = res["hybrid_on"]["p50_ms"] - res["hybrid_off"]["p50_ms"]
    res["targets"] = {"hybrid_added_p50_ms": {"target": f"<= {TARGET_ADDED_P50_MS}", "measured": added,
                                              "met": added <= TARGET_ADDED_P50_MS}}
    write_results("hybrid_latency" + ("_quick" if quick else ""), res, "Text search through gRPC, hybrid on vs off",
                  lambda: _markdown(res), res["machine"])
    print(json.dumps(res["targets"]))
    return res


def _lexical_paths(data: Path, texts: list[str]) -> dict[str, Any]:
    """The BM25 top 100 of each query in-process (the server stopped): SQLite FTS5's own `ORDER BY rank` vs
    engine/bm25.py's in-memory scoring of the same table, interleaved; and whether their top 10 agree."""
    from kuamo.engine.embedded_backend import EmbeddedBackend
    from kuamo.engine.lexical import query_terms
    from kuamo.engine.store import CatalogStore
    from kuamo.engine.types import Filters

    probe = CatalogStore(data / "catalog.sqlite")  # dim=None: the store says which
    dim = probe.dim
    probe.close()
    b = EmbeddedBackend(data, dim=dim)  # lexical ranking needs the store only: no index recovery
    try:
        t0 = time.perf_counter()
        b.warm_lexical()
        build_s = time.perf_counter() - t0
        fts: list[float] = []
        mem: list[float] = []
        same = 0
        for text in texts:
            t0 = time.perf_counter()
            got = b.lexical(text, 100, filters=Filters())
            mem.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ref = b.store.lexical(query_terms(text), 100)
            fts.append(time.perf_counter() - t0)
            same += set(got.keys[0][:10].tolist()) == {k for k, _ in ref[:10]}
        rows = b.store.count()
    finally:
        b.close()
    return {"fts5": latency_stats(fts), "in_memory": latency_stats(mem), "build_s": round(build_s, 3),
            "rows": rows, "top10_same": same, "queries": len(texts)}


def _markdown(res: dict[str, Any]) -> str:
    rows = [{"ranking": name, "p50 ms": res[key]["p50_ms"], "p99 ms": res[key]["p99_ms"]}
            for name, key in (("vector only (weights.lexical 0, weights.understanding 0)", "hybrid_off"),
                              ("hybrid (" + ", ".join(f"weights.{k} {v:g}" for k, v in res["weights"].items()) + ")",
                               "hybrid_on"))]
    t = res["targets"]["hybrid_added_p50_ms"]
    lx = res["lexical_in_process"]
    paths = [{"BM25 top 100": name, "p50 ms": lx[key]["p50_ms"], "p99 ms": lx[key]["p99_ms"]}
             for name, key in (("SQLite FTS5 (ORDER BY rank)", "fts5"), ("in memory (engine/bm25.py)", "in_memory"))]
    return (f"{res['queries']} text queries, one client, interleaved; catalog {res['catalog']}; query cache off.\n\n"
            + markdown_table(rows) + f"\nHybrid adds **{t['measured']:.2f} ms** p50 (target {t['target']}).\n\n"
            f"## The lexical path in-process ({lx['rows']} products, the same {lx['queries']} queries, interleaved)"
            "\n\n" + markdown_table(paths)
            + f"\nSame top 10 for {lx['top10_same']} of {lx['queries']} queries; the in-memory index was built from "
            f"the FTS5 table in {lx['build_s']} s.\n\nReproduce: `python -m kuamo.benchmarks.hybrid_latency`.\n")


def main() -> None:
    quick_models_main(run, __doc__)


if __name__ == "__main__":
    main()
