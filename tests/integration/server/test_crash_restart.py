"""One crash/restart cycle of the real server (fake encoders, so it fits in `make test`): stream Upserts
of products with photos, kill -9 the server process at a random point, restart it on the same data
directory and check that nothing acknowledged was lost and nothing half-written is served.
benchmarks/reliability_crash.py runs 20 such cycles over the real models and the fashion catalog."""

from __future__ import annotations

import os
import random
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
from fake_encoders import png

from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc

SUPPORT = Path(__file__).resolve().parents[2] / "support"
COLOURS = ["red", "green", "blue", "black", "white"]
KINDS = ["shirt", "dress", "shoes", "watch", "bag", "scarf", "belt"]
BATCH = 12  # products per Upsert call

# The server process: a real KuamoServer over a real engine (SQLite + FAISS, small commits and frequent
# snapshots so a kill can land inside either), with fake encoders slowed a little so it does land mid-ingest.
SERVER = r"""
import asyncio, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from fake_encoders import FakeImageEncoder, FakeTextEncoder
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.server.app import KuamoServer
from kuamo.server.config import ServerConfig

class SlowText(FakeTextEncoder):
    def encode(self, texts, kind="query"):
        if kind == "document":
            time.sleep(0.004 * len(texts))
        return super().encode(texts, kind)

async def main():
    data = Path(sys.argv[2])

    async def factory():
        eng = Engine(EngineConfig(data_dir=data, upsert_chunk=4, snapshot_every=30), text_encoder=SlowText(),
                     image_encoder=FakeImageEncoder(), batched=True)
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
def server(data: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(SUPPORT), str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.match(r"SERVING (\d+)", line)
        assert m, f"server did not start: {line!r} (exit {proc.poll()})"
        yield proc, f"127.0.0.1:{m.group(1)}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def title(pid: int) -> str:
    return f"{COLOURS[pid % 5]} {KINDS[pid % 7]} item{pid}"


def upsert_until_killed(target: str, acked: list[int], attempted: list[int], stop: threading.Event) -> None:
    """Sequential Upsert calls of BATCH products each; an id is acknowledged once its call answered."""
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.SearchServiceStub(ch)
        pid = 5000
        while not stop.is_set():
            ids = list(range(pid, pid + BATCH))
            pid += BATCH
            attempted.extend(ids)
            msgs = [pb.UpsertRequest(product=pb.Product(id=i, title=title(i), category="Apparel/x", price=float(i),
                                                        attributes={"colour": pb.AttrValue(string_value=COLOURS[
                                                            i % 5])}), image=png(COLOURS[i % 5]))
                    for i in ids]
            try:
                r = stub.Upsert(iter(msgs), timeout=10)
            except grpc.RpcError:
                return  # the server is gone
            assert not r.rejected, r.rejected
            acked.extend(r.accepted)


@pytest.mark.timeout(120)
def test_kill_9_mid_upsert_then_restart_loses_nothing_acknowledged(tmp_path) -> None:
    rng = random.Random(int(os.environ.get("KUAMO_CRASH_SEED", "7")))
    acked: list[int] = []
    attempted: list[int] = []
    stop = threading.Event()
    with server(tmp_path) as (proc, target):
        writer = threading.Thread(target=upsert_until_killed, args=(target, acked, attempted, stop), daemon=True)
        writer.start()
        deadline = time.monotonic() + 20
        while len(acked) < 3 * BATCH and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(acked) >= 3 * BATCH, "no Upsert was acknowledged"
        time.sleep(rng.uniform(0.0, 0.4))  # then at a random point, mid-stream or mid-commit
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        stop.set()
        writer.join(timeout=15)
        assert proc.returncode == -signal.SIGKILL
    acked_at_kill = list(acked)
    assert len(attempted) > len(acked_at_kill)  # a call was in flight (or about to be) when the server died

    with server(tmp_path) as (_, target), grpc.insecure_channel(target) as ch:
        stub = pb_grpc.SearchServiceStub(ch)
        stats = stub.Stats(pb.StatsRequest(), timeout=10)
        assert stats.products == stats.indexed, stats
        assert stats.products >= len(acked_at_kill)
        lost = []
        for pid in acked_at_kill:  # every acknowledged product: present, and found by its own title
            try:
                assert stub.GetProduct(pb.GetProductRequest(id=pid), timeout=5).title == title(pid)
            except grpc.RpcError:
                lost.append(pid)
                continue
            hits = stub.Search(pb.SearchRequest(query=pb.Query(text=title(pid), k=10)), timeout=5).hits
            assert pid in [h.id for h in hits], f"{pid} not in the top 10 for its own title"
        assert lost == [], f"acknowledged but lost: {lost}"
        present = 0
        for pid in attempted:  # nothing half-written: whatever is stored has its vector in the index
            try:
                stub.GetProduct(pb.GetProductRequest(id=pid), timeout=5)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND and pid not in acked_at_kill
                continue
            present += 1
            r = stub.Search(pb.SearchRequest(query=pb.Query(text="anything", filters=pb.Filters(ids=[pid]))),
                            timeout=5)
            assert [h.id for h in r.hits] == [pid]
        assert present == stats.products
        # and the restarted server takes writes again
        r = stub.Upsert(iter([pb.UpsertRequest(product=pb.Product(id=1, title="after the crash"))]), timeout=10)
        assert list(r.accepted) == [1]
