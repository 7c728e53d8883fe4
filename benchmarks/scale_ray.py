"""kuamo bench scale, Ray part: the same rows indexed by single-process `kuamo index` and by `kuamo index --ray`
with 1 and 2 workers (each job starting its own private local Ray), in one run, and the vectors compared."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kuamo.engine.config import EncoderConfig
from kuamo.engine.engine import EngineConfig


def _vectors(data: Path, models: Path) -> dict[int, np.ndarray]:
    from kuamo.engine.embedded_backend import EmbeddedBackend
    from kuamo.engine.product_encoder import ProductEncoder

    dim = ProductEncoder.load(models, EncoderConfig(model_dir=models)).layout.dim
    backend = EmbeddedBackend(data, dim=dim)
    try:
        got, vecs = backend.store.all_vectors()
        return {int(k): v for k, v in zip(got.tolist(), vecs, strict=True)}
    finally:
        backend.close()


def ray_ingest_rates(catalog: Path, models: Path, work: Path, workers: Sequence[int] = (1, 2)) -> dict[str, Any]:
    from kuamo.engine.ingest import index_catalog
    from kuamo.engine.ray_ingest import ray_ingest_rate

    path = catalog / "products.csv"
    runs: list[dict[str, Any]] = []
    single = work / "single"
    t0 = time.perf_counter()
    rep = index_catalog(path, config=EngineConfig(model_dir=models, data_dir=single,
                                                  encoder=EncoderConfig(model_dir=models)))
    secs = time.perf_counter() - t0
    runs.append({"run": "single process", "rows": rep.rows_read, "seconds": round(secs, 2),
                 "rows_per_s": round(rep.rows_read / secs, 1)})
    reference = _vectors(single, models)
    max_diff = 0.0
    for w in workers:
        data = work / f"ray-{w}"
        r = ray_ingest_rate(path, data, models, w)
        runs.append({"run": f"ray, {w} worker{'s' if w > 1 else ''}", "rows": r["rows"], "seconds": r["seconds"],
                     "rows_per_s": r["rows_per_s"], "fixed_cost_s": r["fixed_s"],
                     "rows_per_s_after_start": r["steady_rows_per_s"], "cluster_start_s": r["cluster_start_s"],
                     "actor_load_s": r["actor_load_s"], "stages": r["stages"]})
        got = _vectors(data, models)
        if set(got) != set(reference):
            raise AssertionError(f"ray with {w} workers stored {len(got)} products, single process {len(reference)}")
        max_diff = max(max_diff, max(float(np.abs(got[k] - reference[k]).max()) for k in reference))
    return {"runs": runs, "max_abs_diff": max_diff,
            "setup": f"{runs[0]['rows']} fashion rows with photos; each Ray job starts its own private local cluster "
                     "on this machine (2 cores: 2 workers share them)"}
