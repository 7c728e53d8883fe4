"""kuamo bench scale, failover part: two `kuamo serve --backend milvus` replicas (the real models) on one
`milvus-lite server` on loopback. Each cycle streams Upserts through replica A, kills it with SIGKILL at a
random point, and checks through replica B that every acknowledged product is there; meanwhile a prober
searches through B every 50 ms: its errors and latency during the cycle say whether B kept answering.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from kuamo.benchmarks.common import latency_stats
from kuamo.benchmarks.milvus_lite import start_milvus_lite_server, stop_milvus_lite_server
from kuamo.benchmarks.serving import start_server, stop_server
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc

BATCH = 8


def upsert_until_killed(target: str, product: Callable[[int], pb.Product], start: int, acked: list[int],
                        stop: threading.Event, timeout: float = 60) -> None:
    """Sequential Upsert calls of BATCH products (ids from `start`) until `stop` or the replica is gone; an id
    is acknowledged once its call answered (tests/integration/scale/test_replicas.py streams the same way)."""
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.SearchServiceStub(ch)
        pid = start
        while not stop.is_set():
            ids = list(range(pid, pid + BATCH))
            pid += BATCH
            try:
                r = stub.Upsert(iter([pb.UpsertRequest(product=product(i)) for i in ids]), timeout=timeout)
            except grpc.RpcError:
                return
            acked.extend(r.accepted)


def _probe(target: str, texts: list[str], stop: threading.Event, lat: list[float], errors: list[str]) -> None:
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.SearchServiceStub(ch)
        i = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                stub.Search(pb.SearchRequest(query=pb.Query(text=texts[i % len(texts)], k=10)), timeout=10)
                lat.append(time.perf_counter() - t0)
            except grpc.RpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")
            i += 1
            time.sleep(0.05)


def failover_cycles(models: Path, work: Path, titles: list[str], cycles: int, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    mproc, uri = start_milvus_lite_server(work / "milvus")
    backend = ["--backend", "milvus", "--milvus-uri", uri, "--milvus-collection", "failover"]
    rows: list[dict[str, Any]] = []
    b = start_server(models, work / "b", work / "b.log", extra_args=backend)
    try:
        with grpc.insecure_channel(b.target) as ch:
            stub_b = pb_grpc.SearchServiceStub(ch)
            def titled(i: int) -> pb.Product:
                return pb.Product(id=i, title=f"{titles[i % len(titles)]} #{i}", category="Bench/Failover")

            for c in range(cycles):
                a = start_server(models, work / "a", work / "a.log", extra_args=backend)
                acked: list[int] = []
                stop, probing = threading.Event(), threading.Event()
                lat: list[float] = []
                errors: list[str] = []
                writer = threading.Thread(target=upsert_until_killed,
                                          args=(a.target, titled, 10_000_000 * (c + 1), acked, stop), daemon=True)
                prober = threading.Thread(target=_probe, args=(b.target, titles, probing, lat, errors), daemon=True)
                writer.start()
                prober.start()
                deadline = time.monotonic() + 120
                while len(acked) < 2 * BATCH and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 1.0))
                stop_server(a, kill=True)
                t_kill = time.perf_counter()
                stop.set()
                writer.join(timeout=60)
                n_before = len(lat)
                while len(lat) == n_before and time.perf_counter() - t_kill < 30:
                    time.sleep(0.01)
                answered_after_s = time.perf_counter() - t_kill
                probing.set()
                prober.join(timeout=30)
                lost = []
                for pid in list(acked):
                    try:
                        stub_b.GetProduct(pb.GetProductRequest(id=pid), timeout=10)
                    except grpc.RpcError:
                        lost.append(pid)
                rows.append({"cycle": c, "acknowledged": len(acked), "lost": len(lost),
                             "b_errors": len(errors), "b_first_errors": errors[:3],
                             "b_next_answer_after_kill_s": answered_after_s, "b_latency": latency_stats(lat)})
            products = stub_b.Stats(pb.StatsRequest(), timeout=30).products
    finally:
        stop_server(b)
        stop_milvus_lite_server(mproc)
    return {"cycles": rows, "total_acknowledged": sum(r["acknowledged"] for r in rows),
            "total_lost": sum(r["lost"] for r in rows), "b_errors": sum(r["b_errors"] for r in rows),
            "products_seen_by_b": int(products),
            "setup": "2 replicas (real models) on one milvus-lite server on loopback, consistency Strong"}
