"""Vector index benchmark: kuamo's VectorIndex as exact flat search vs IVF-PQ, with and without the exact
re-rank, over an nprobe sweep, on real vectors (GloVe 6B 50-d, Fashion-MNIST 784-d, the indexed catalog's
fused vectors) and on synthetic clustered 384-d vectors (for scale only).

    python -m kuamo.benchmarks.index [--quick]        (or `kuamo bench index [--quick]`)

Per dataset: exact ground truth (faiss brute force, inner product) for the queries; 10-NN recall@10 and
1-recall@10; single-query QPS (one query per VectorIndex.search call, faiss/BLAS pinned to one thread) and
batched QPS (all queries in one call, default threads); build time; bytes per vector of the PQ codes vs
flat float32 (the float32 re-rank store reported separately); upsert cost per 1000 vectors and the cost of
removing one product; and a 1% allowed_ids filter. Writes benchmarks/results/index.json, index.md and
index_recall_qps.png (index_quick.* with --quick). KUAMO_BENCH_5M=1 adds a 5M synthetic run (full mode);
`--only synthetic-5m` runs just that one and merges it into the existing index.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from kuamo.benchmarks.common import RESULTS_DIR, machine_info, read_previous
from kuamo.benchmarks.index_datasets import (
    BIG,
    CATALOG_VECTORS,
    FASHION_MNIST_DIR,
    Dataset,
    catalog,
    fashion_mnist,
    glove,
    synthetic,
)
from kuamo.benchmarks.index_report import notes, targets, write_report
from kuamo.benchmarks.index_sweep import NPROBES, NPROBES_QUICK, RERANK_FACTORS, K, bench_dataset, default_threads
from kuamo.engine.index import IndexConfig

# -- the suite --------------------------------------------------------------------------------------
# Quick mode only: faiss trains and encodes PQ sub-quantisers of fewer than 8 dims about 10x slower than 8-dim
# ones, and the automatic m gives 384-d vectors 4-dim sub-quantisers, so a 20k x 384 IVF-PQ build alone takes
# 25-110 s on a shared 2-core machine. The quick synthetic set therefore uses m = dim / 8; full mode uses the
# automatic m everywhere.
QUICK_SYNTHETIC_OVERRIDES = {"m": 48}


DATASET_LABELS = ("glove", "fashion-mnist", "catalog", "synthetic", "synthetic-5m")
DatasetPlan = Iterator[tuple[str, Callable[[], Dataset] | None, str]]


def _datasets(quick: bool, nq: int, only: Sequence[str] = ()) -> DatasetPlan:
    """(label, loader or None, reason when skipped), in run order."""
    if quick:
        yield "glove", lambda: glove(50_000, nq), ""
        yield "fashion-mnist", None, "not run in quick mode"
        yield "catalog", None, "not run in quick mode"
        yield "synthetic", lambda: synthetic(20_000, nq), ""
        yield "synthetic-5m", None, "not run in quick mode"
        return
    yield "glove", lambda: glove(None, nq), ""
    fm = FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz"
    yield ("fashion-mnist", lambda: fashion_mnist(nq), "") if fm.is_file() else \
        ("fashion-mnist", None, f"skipped: {fm} missing (apt-get install dataset-fashion-mnist)")
    yield ("catalog", lambda: catalog(nq), "") if CATALOG_VECTORS.is_file() else \
        ("catalog", None, "skipped: no indexed catalog")
    yield "synthetic", lambda: synthetic(1_000_000, nq), ""
    if os.environ.get("KUAMO_BENCH_5M") == "1" or "synthetic-5m" in only:
        yield "synthetic-5m", lambda: synthetic(5_000_000, nq), ""
    else:
        yield "synthetic-5m", None, "not run (set KUAMO_BENCH_5M=1: ~7.7 GB of vectors, long build)"


def run(quick: bool = False, results_dir: Path | None = None, only: Sequence[str] = ()) -> dict:
    """All datasets, or with `only` just those labels (e.g. synthetic-5m), merged into the existing results
    file: the other datasets keep their figures and their machine, each dataset records the machine it ran on."""
    unknown = sorted(set(only) - set(DATASET_LABELS))
    if unknown:
        raise ValueError(f"unknown dataset(s) {', '.join(unknown)}; choose from {', '.join(DATASET_LABELS)}")
    t_run = time.perf_counter()
    nq = 200 if quick else 1000
    nprobes = NPROBES_QUICK if quick else NPROBES
    res: dict = {"suite": "index", "quick": quick, "machine": machine_info(), "threads": default_threads(),
                 "params": {"k": K, "queries": nq, "nprobes": list(nprobes), "rerank_factors": list(RERANK_FACTORS),
                            "index_config": dataclasses.asdict(IndexConfig()),
                            "single_query": "one query per VectorIndex.search call, faiss omp + BLAS at 1 thread",
                            "batched": "all queries in one VectorIndex.search call, default threads",
                            "ivfpq": "IndexConfig(flat_threshold=0): automatic nlist/m/training size",
                            "recall": "10-NN recall@10 vs faiss brute force; 1-recall@10 = true nearest in top 10"},
                 "datasets": {}, "skipped": {}}
    previous = _previous(quick, results_dir) if only else None
    for label, loader, reason in _datasets(quick, nq, only):
        if only and label not in only:
            continue
        if loader is None:
            res["skipped"][label] = reason
            print(f"{label}: {reason}", flush=True)
            continue
        t0 = time.perf_counter()
        ds = loader()
        load_s = time.perf_counter() - t0
        big = len(ds.xb) > BIG
        r = bench_dataset(ds, nprobes=nprobes, single_budget_s=0.4 if quick else 1.5,
                          flat_budget_s=0.5 if quick else 3.0, add_batches=0 if big else 5 if quick else 20,
                          n_deletes=200, flat_index=not big, log=lambda s: print(s, flush=True),
                          ivf_overrides=QUICK_SYNTHETIC_OVERRIDES if quick and label == "synthetic" else None)
        r["synthetic"] = label.startswith("synthetic")
        r["machine"], r["separate_run"] = machine_info(), bool(only)
        r["load_s"] = load_s
        r["wall_s"] = time.perf_counter() - t0
        res["datasets"][ds.name] = r
        del ds
        gc.collect()
    res["wall_s"] = time.perf_counter() - t_run
    if previous is not None:  # the merged results keep the previous run's wall time; this one's is in merged_runs
        res = _merge(previous, res)
    res["targets"] = targets(res)
    res["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    res["notes"] = notes(res)
    write_report(res, results_dir)
    print(f"index benchmark done in {time.perf_counter() - t_run:.0f}s", flush=True)
    return res


def _previous(quick: bool, results_dir: Path | None) -> dict:
    name = f"index{'_quick' if quick else ''}"
    previous = read_previous(name, results_dir)
    if previous is None:
        raise SystemExit(f"--only merges into {(results_dir or RESULTS_DIR) / name}.json, which does not exist: "
                         "run the whole benchmark first")
    return previous


def _merge(previous: dict, new: dict) -> dict:
    """The previous run with the datasets of `new` added or replaced; the run-level machine stays the previous
    one (older dataset entries carry no machine of their own), each new entry carries its own."""
    out = dict(previous)
    out["datasets"] = datasets = {**previous["datasets"], **new["datasets"]}
    out["skipped"] = {k: v for k, v in {**previous["skipped"], **new["skipped"]}.items()
                      if not any(n.startswith(k) for n in datasets)}
    run = {"datasets": list(new["datasets"]), "machine": new["machine"], "wall_s": new["wall_s"]}
    out["merged_runs"] = [*previous.get("merged_runs", []), run]
    return out



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="+", default=(), choices=DATASET_LABELS, metavar="DATASET",
                    help=f"run only these ({', '.join(DATASET_LABELS)}) and merge them into the existing results")
    args = ap.parse_args()
    run(quick=args.quick, only=args.only)


if __name__ == "__main__":
    main()
