"""Scale-out (`kuamo bench scale`), in one run on this machine:

1. Ray ingest: rows/s of `kuamo index --ray` with 1 and 2 workers on a private local Ray, the fixed cost per
   job (cluster start + model loads), beside single-process `kuamo index` of the same rows;
2. Milvus backend (Milvus Lite, FLAT): top-10 agreement with the embedded exact search on the baseline queries,
   filter exactness (benchmarks/scale_milvus.py);
3. failover: kill -9 cycles of a replica during streaming ingest, 0 lost acknowledged writes expected, the other
   replica answering (benchmarks/scale_failover.py).
Milvus Lite is a pure-Python re-implementation: its figures are correctness only, never speed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from kuamo.benchmarks.baselines_data import make_queries, zh_queries
from kuamo.benchmarks.bench_catalog import bench_catalog, sample_catalog
from kuamo.benchmarks.common import machine_info, markdown_table, quick_models_main, write_results
from kuamo.engine.config import DEFAULT_MODEL_DIR

TARGETS = {"agreement_vs_exact": 0.95, "filtered_violations": 0, "lost_acknowledged": 0}


def _titles() -> list[str]:
    from kuamo.export.samples import load_fashion

    return [it.title for it in load_fashion()]


def run(quick: bool = False, *, models: Path = DEFAULT_MODEL_DIR) -> dict[str, Any]:
    from kuamo.benchmarks.scale_failover import failover_cycles
    from kuamo.benchmarks.scale_milvus import milvus_agreement
    from kuamo.benchmarks.scale_ray import ray_ingest_rates

    catalog, data = bench_catalog(quick, models)
    titles = _titles()
    queries, _ = make_queries(titles, zh_queries(), 60 if quick else 400, 20 if quick else 200)
    res: dict[str, Any] = {"suite": "scale", "quick": quick, "machine": machine_info(), "catalog": str(catalog)}
    with tempfile.TemporaryDirectory(prefix="kuamo-scale-") as tmp:
        work = Path(tmp)
        ingest_rows = 120 if quick else 1000
        res["ray_ingest"] = ray_ingest_rates(sample_catalog(catalog, ingest_rows), models, work / "ray",
                                             workers=(1, 2))
        res["milvus"] = milvus_agreement(models, data, work / "milvus", queries, 30 if quick else 140)
        res["failover"] = failover_cycles(models, work / "failover", titles, 2 if quick else 10)
    m, f = res["milvus"], res["failover"]
    res["targets"] = {
        "agreement_vs_exact": {"target": f">= {TARGETS['agreement_vs_exact']}", "measured": m["agreement_vs_exact"],
                               "met": m["agreement_vs_exact"] >= TARGETS["agreement_vs_exact"]},
        "filtered_hits_failing_their_filter": {"target": "0", "measured": m["filtered"]["hits_failing_their_filter"],
                                               "met": m["filtered"]["hits_failing_their_filter"] == 0},
        "lost_acknowledged_writes": {"target": "0", "measured": f["total_lost"], "met": f["total_lost"] == 0}}
    write_results("scale" + ("_quick" if quick else ""), res, "Scale-out: Ray ingest, Milvus backend, failover",
                  lambda: _markdown(res), res["machine"])
    print(json.dumps(res["targets"]))
    return res


def _markdown(res: dict[str, Any]) -> str:
    r, m, f = res["ray_ingest"], res["milvus"], res["failover"]
    ray_rows = [{"run": row["run"], "rows": row["rows"], "seconds": row["seconds"], "rows/s": row["rows_per_s"],
                 "nodes": row.get("nodes"), "actors that embedded": row.get("actors_that_embedded"),
                 "cluster start s": row.get("cluster_start_s"),
                 "fixed cost s": row.get("fixed_cost_s"), "rows/s after start": row.get("rows_per_s_after_start")}
                for row in r["runs"]]
    cyc = [{"cycle": c["cycle"], "acknowledged": c["acknowledged"], "lost": c["lost"], "B errors": c["b_errors"],
            "B p50 ms": c["b_latency"]["p50_ms"], "B p99 ms": c["b_latency"]["p99_ms"],
            "B answered after kill s": c["b_next_answer_after_kill_s"]} for c in f["cycles"]]
    fl = m["filtered"]
    return (f"Catalog {res['catalog']}.\n\n## Ray ingest ({r['setup']})\n\n" + markdown_table(ray_rows)
            + f"\nVectors equal to single-process: max |diff| {r.get('max_abs_diff')}.\n\n"
            f"## Milvus backend ({m['index']}): {m['copied']['rows']} products copied with their vectors\n\n"
            f"- top-10 agreement with the embedded exact search, {m['queries']} queries: "
            f"**{m['agreement_vs_exact']:.4f}** ({m['queries_fully_agreeing']} agree fully); with the embedded "
            f"served search (IVF-PQ + re-rank): {m['agreement_vs_embedded_served']:.4f}\n"
            f"- {fl['queries']} filtered queries (category prefix, attributes, ids, a price bound, injection "
            f"attempts): {fl['hits']} hits, **{fl['hits_failing_their_filter']}** failing their filter, "
            f"{fl['empty_results']} empty, {fl['refused_as_unknown_category']} refused as naming a category "
            "the catalog never had (INVALID_ARGUMENT, as on the embedded backend); agreement with the exact top 10 "
            f"within the filter {fl['agreement_vs_exact_within_filter']:.4f}\n\n"
            f"## Failover ({f['setup']})\n\n" + markdown_table(cyc)
            + f"\n{f['total_acknowledged']} writes acknowledged, **{f['total_lost']} lost**; replica B: "
            f"{f['b_errors']} failed searches during the cycles.\n\nReproduce: `kuamo bench scale`.\n")


def main() -> None:
    quick_models_main(run, __doc__)


if __name__ == "__main__":
    main()
