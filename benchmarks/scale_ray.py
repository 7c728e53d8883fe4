"""kuamo bench scale, Ray part: the same rows indexed by single-process `kuamo index` and by `kuamo index --ray`
with 1 and 2 workers (each job starting its own private local Ray) and with 2 workers on a 2-node local cluster
(ray.cluster_utils.Cluster, 1 CPU per node, joined by address as a real cluster is), in one run, and the vectors
compared."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

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


@contextmanager
def two_node_cluster() -> Iterator[tuple[str, float]]:
    """A 2-node Ray cluster on this machine (1 CPU and 150 MB of object store per node, as in
    tests/integration/scale/test_ray_ingest.py): (address, seconds it took to start)."""
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="kr-bench-")  # short: Ray's socket paths must fit in ~107 characters
    c = None
    try:
        with mock.patch.dict(os.environ, {"RAY_TMPDIR": tmp, "RAY_USAGE_STATS_ENABLED": "0"}):
            try:
                t0 = time.perf_counter()
                c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 150 << 20,
                                                                  "include_dashboard": False})
                c.add_node(num_cpus=1, object_store_memory=150 << 20)
                c.wait_for_nodes()
                yield c.address, time.perf_counter() - t0
            finally:
                if c is not None:
                    c.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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

    def measured(name: str, data: Path, r: dict[str, Any], cluster_start_s: float | None = None) -> None:
        start = r["cluster_start_s"] if cluster_start_s is None else round(cluster_start_s, 2)
        runs.append({"run": name, "rows": r["rows"], "seconds": r["seconds"], "rows_per_s": r["rows_per_s"],
                     "fixed_cost_s": r["fixed_s"], "rows_per_s_after_start": r["steady_rows_per_s"],
                     "cluster_start_s": start, "actor_load_s": r["actor_load_s"], "nodes": r["nodes"],
                     "actors_that_embedded": r["actors_that_embedded"],
                     "stages": r["stages"], "data": data})

    for w in workers:
        data = work / f"ray-{w}"
        measured(f"ray, {w} worker{'s' if w > 1 else ''}, private local Ray", data,
                 ray_ingest_rate(path, data, models, w))
    with two_node_cluster() as (address, start_s):
        data = work / "ray-2node"
        measured("ray, 2 workers, 2-node cluster (joined by address: its start is not in the job)", data,
                 ray_ingest_rate(path, data, models, 2, address=address), start_s)
    max_diff = 0.0
    for run in runs[1:]:
        got = _vectors(run.pop("data"), models)
        if set(got) != set(reference):
            raise AssertionError(f"{run['run']} stored {len(got)} products, single process {len(reference)}")
        max_diff = max(max_diff, max(float(np.abs(got[k] - reference[k]).max()) for k in reference))
    return {"runs": runs, "max_abs_diff": max_diff,
            "setup": f"{runs[0]['rows']} fashion rows with photos, all on this machine's 2 cores (2 workers share "
                     "them): a private local Ray started by each job, then a 2-node local cluster"}
