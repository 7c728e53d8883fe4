"""Stateless replicas on one Milvus: two real kuamo servers (gRPC on loopback, fake encoders so it fits in
`make test`) over a `milvus-lite server` on loopback. A write acknowledged by one is read through the other;
kill -9 of a replica mid-ingest loses nothing acknowledged while the other keeps answering; Milvus going away
turns requests UNAVAILABLE (naming the backend) and health NOT_SERVING, and both come back by themselves.
benchmarks/scale_failover.py runs the kill cycles over the real models (kuamo bench scale)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from grpc_health.v1 import health_pb2, health_pb2_grpc

from kuamo.benchmarks.milvus_lite import start_milvus_lite_server, stop_milvus_lite_server
from kuamo.benchmarks.scale_failover import BATCH, upsert_until_killed
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc

SUPPORT = Path(__file__).resolve().parents[2] / "support"

REPLICA = r"""
import asyncio, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from fake_encoders import FakeImageEncoder, FakeTextEncoder
from kuamo.engine.backends import MilvusSettings
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.server.app import KuamoServer
from kuamo.server.config import ServerConfig

class SlowText(FakeTextEncoder):
    def encode(self, texts, kind="query"):
        if kind == "document":
            time.sleep(0.004 * len(texts))
        return super().encode(texts, kind)

async def main():
    data, uri = Path(sys.argv[2]), sys.argv[3]

    async def factory():
        cfg = EngineConfig(data_dir=data, upsert_chunk=4, backend="milvus",
                           milvus=MilvusSettings(uri=uri, collection="replicas", timeout_s=3.0))
        eng = await asyncio.to_thread(Engine, cfg, text_encoder=SlowText(), image_encoder=FakeImageEncoder(),
                                      batched=True)
        await eng.start()
        return eng

    srv = KuamoServer(ServerConfig(port=0, metrics_port=-1, data_dir=data), engine_factory=factory)
    port = await srv.start()
    await srv.load()
    print(f"SERVING {port}", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@contextmanager
def replica(data: Path, uri: str) -> Iterator[tuple[subprocess.Popen, str]]:
    with open(data.with_suffix(".log"), "ab") as log:
        proc = subprocess.Popen([sys.executable, "-c", REPLICA, str(SUPPORT), str(data), uri],
                                stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"SERVING (\d+)", line)
        assert m, f"replica did not start: {line!r} (exit {proc.poll()}; log {data.with_suffix('.log')})"
        yield proc, f"127.0.0.1:{m.group(1)}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def product(pid: int) -> pb.Product:
    return pb.Product(id=pid, title=f"item {pid} {['red', 'blue', 'green'][pid % 3]} shirt", category="Apparel/Top",
                      price=float(pid % 97) + 1)


def health(stub: health_pb2_grpc.HealthStub) -> int:
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


@pytest.mark.timeout(300)
def test_two_replicas_share_one_milvus(tmp_path: Path) -> None:
    milvus_dir = tmp_path / "milvus"
    mproc, uri = start_milvus_lite_server(milvus_dir)
    port = int(uri.rsplit(":", 1)[1])
    try:
        with replica(tmp_path / "a", uri) as (proc_a, target_a), replica(tmp_path / "b", uri) as (_, target_b), \
                grpc.insecure_channel(target_a) as ch_a, grpc.insecure_channel(target_b) as ch_b:
            a, b = pb_grpc.SearchServiceStub(ch_a), pb_grpc.SearchServiceStub(ch_b)
            # 1. written through A, read through B at once (Strong consistency: no waiting)
            r = a.Upsert(iter([pb.UpsertRequest(product=product(i)) for i in range(1, 11)]), timeout=30)
            assert sorted(r.accepted) == list(range(1, 11))
            assert b.GetProduct(pb.GetProductRequest(id=7), timeout=10).title == product(7).title
            hits = b.Search(pb.SearchRequest(query=pb.Query(text=product(7).title, k=3)), timeout=10).hits
            assert hits[0].id == 7
            assert b.Stats(pb.StatsRequest(), timeout=10).products == 10
            # a filter value cannot change the Milvus expression; personalisation is embedded-only
            injected = pb.Filters(brands=['" or key >= 0 or brand == "'], category_prefix='Apparel" or "1"=="1')
            assert not b.Search(pb.SearchRequest(query=pb.Query(text="shirt", k=5, filters=injected)), timeout=10).hits
            with pytest.raises(grpc.RpcError) as err:
                b.Search(pb.SearchRequest(query=pb.Query(text="shirt", k=5, user_id="shopper-1")), timeout=10)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "embedded" in err.value.details()

            # 2. kill -9 of A in the middle of a streaming ingest: nothing acknowledged is lost, B keeps answering
            acked: list[int] = []
            stop = threading.Event()
            writer = threading.Thread(target=upsert_until_killed, args=(target_a, product, 1000, acked, stop, 20),
                                      daemon=True)
            writer.start()
            deadline = time.monotonic() + 60
            while len(acked) < 3 * BATCH and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(acked) >= 3 * BATCH, "no Upsert was acknowledged by A"
            os.kill(proc_a.pid, signal.SIGKILL)
            proc_a.wait(timeout=10)
            stop.set()
            writer.join(timeout=30)
            answered = b.Search(pb.SearchRequest(query=pb.Query(text="red shirt", k=5)), timeout=10)
            assert len(answered.hits) == 5
            lost = []
            for pid in acked:
                try:
                    b.GetProduct(pb.GetProductRequest(id=pid), timeout=10)
                except grpc.RpcError:
                    lost.append(pid)
            assert lost == [], f"acknowledged by A but not readable through B: {lost}"

            # 3. Milvus goes away: UNAVAILABLE naming the backend, health NOT_SERVING; back by itself after
            hb = health_pb2_grpc.HealthStub(ch_b)
            assert health(hb) == health_pb2.HealthCheckResponse.SERVING
            stop_milvus_lite_server(mproc)
            with pytest.raises(grpc.RpcError) as err:
                b.Search(pb.SearchRequest(query=pb.Query(text="red shirt", k=5)), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
            assert "milvus" in (err.value.details() or "").lower()
            deadline = time.monotonic() + 30
            while health(hb) != health_pb2.HealthCheckResponse.NOT_SERVING and time.monotonic() < deadline:
                time.sleep(0.25)
            assert health(hb) == health_pb2.HealthCheckResponse.NOT_SERVING
            mproc, _ = start_milvus_lite_server(milvus_dir, port)
            deadline = time.monotonic() + 60
            while health(hb) != health_pb2.HealthCheckResponse.SERVING and time.monotonic() < deadline:
                time.sleep(0.25)
            assert health(hb) == health_pb2.HealthCheckResponse.SERVING
            again = b.Search(pb.SearchRequest(query=pb.Query(text=product(7).title, k=3)), timeout=30)
            assert again.hits[0].id == 7
            assert b.Stats(pb.StatsRequest(), timeout=10).products >= 10 + len(acked)
    finally:
        stop_milvus_lite_server(mproc)
