"""Reliability (c): crash safety. Streaming Upserts of real products with photos, kill -9 at a random point,
restart, then check that every acknowledged write is there, searchable, and nothing half-written is served."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from kuamo.benchmarks.common import latency_stats
from kuamo.benchmarks.serving import DEADLINE_S, start_server, stop_server
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc


@dataclass
class Writer:
    """Sequential Upsert calls (1..24 products with photos each, photos split over several messages);
    an id is acknowledged once its call has answered."""

    target: str
    items: list[Any]
    rng: random.Random
    cycle: int
    acked: dict[int, str] = field(default_factory=dict)  # id -> title
    attempted: dict[int, str] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    error: str = ""
    calls: int = 0

    def run(self) -> None:
        base = 200_000_000 + self.cycle * 100_000
        j = 0
        with grpc.insecure_channel(self.target, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
            stub = pb_grpc.SearchServiceStub(ch)
            while True:
                batch = []
                for _ in range(self.rng.randint(1, 24)):
                    it = self.items[self.rng.randrange(len(self.items))]
                    pid = base + j
                    j += 1
                    title = f"{it.title} (crash test {self.cycle}-{j})"
                    batch.append((pid, title, it))
                    self.attempted[pid] = title
                chunk = self.rng.choice([2048, 8192, 65536])

                def msgs(batch: list = batch, chunk: int = chunk) -> Iterator[pb.UpsertRequest]:
                    for pid, title, it in batch:
                        img = it.image_path.read_bytes()
                        attrs = {k: pb.AttrValue(string_value=str(it.attrs[k])) for k in ("gender", "baseColour")
                                 if it.attrs.get(k)}
                        yield pb.UpsertRequest(product=pb.Product(
                            id=pid, title=title, category="/".join(it.attrs.get(k, "") for k in (
                                "masterCategory", "subCategory", "articleType")), attributes=attrs,
                            image_ref=f"images/{it.id}.jpg"), image=img[:chunk])
                        for off in range(chunk, len(img), chunk):
                            yield pb.UpsertRequest(image_chunk=img[off: off + chunk])

                try:
                    r = stub.Upsert(msgs(), timeout=60)
                except grpc.RpcError as exc:
                    self.error = exc.code().name
                    return
                self.calls += 1
                titles = dict((pid, t) for pid, t, _ in batch)
                for pid in r.accepted:
                    self.acked[pid] = titles[pid]
                self.rejected += [f"{x.id}:{x.field}:{x.reason}" for x in r.rejected]


async def _verify(target: str, acked: dict[int, str], unacked: list[int]) -> dict[str, Any]:
    async with aio.insecure_channel(target) as ch:
        stub = pb_grpc.SearchServiceStub(ch)
        stats = await stub.Stats(pb.StatsRequest(), timeout=DEADLINE_S)
        sem = asyncio.Semaphore(8)
        lost: list[int] = []
        not_found_by_title: list[int] = []
        no_vector: list[int] = []
        unacked_present = 0

        async def present(pid: int) -> bool:
            try:
                await stub.GetProduct(pb.GetProductRequest(id=pid), timeout=DEADLINE_S)
                return True
            except aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                return False

        async def has_vector(pid: int) -> bool:
            r = await stub.Search(pb.SearchRequest(query=pb.Query(text="product", k=1, omit_products=True,
                                                                  filters=pb.Filters(ids=[pid]))), timeout=DEADLINE_S)
            return [h.id for h in r.hits] == [pid]

        async def check_acked(pid: int, title: str) -> None:
            async with sem:
                if not await present(pid):
                    lost.append(pid)
                    return
                if not await has_vector(pid):
                    no_vector.append(pid)
                r = await stub.Search(pb.SearchRequest(query=pb.Query(text=title, k=10, omit_products=True)),
                                      timeout=DEADLINE_S)
                if pid not in [h.id for h in r.hits]:
                    not_found_by_title.append(pid)

        async def check_unacked(pid: int) -> None:
            nonlocal unacked_present
            async with sem:
                if await present(pid):
                    unacked_present += 1
                    if not await has_vector(pid):
                        no_vector.append(pid)

        await asyncio.gather(*(check_acked(p, t) for p, t in acked.items()), *(check_unacked(p) for p in unacked))
        import json

        recovery = json.loads(stats.details_json).get("index", {}).get("recovery", {})
    return {"products": stats.products, "indexed": stats.indexed, "consistent": stats.products == stats.indexed,
            "lost": sorted(lost), "not_found_by_title": sorted(not_found_by_title), "no_vector": sorted(no_vector),
            "unacked_present": unacked_present, "recovery": recovery}


def lexical_agrees(data: Path) -> bool:
    """The store's BM25 index (engine/store.py, written in the products' transactions) holds exactly the stored
    products, and no photo colours outlive their product, read straight from the SQLite file a kill -9 left
    behind."""
    import sqlite3

    db = sqlite3.connect(data / "catalog.sqlite")
    try:
        n_products = db.execute("SELECT count(*) FROM products").fetchone()[0]
        n_lexical = db.execute("SELECT count(*) FROM lexical").fetchone()[0]
        missing = db.execute("SELECT count(*) FROM products WHERE id NOT IN (SELECT rowid FROM lexical)").fetchone()[0]
        orphans = db.execute("SELECT count(*) FROM photo_colours WHERE id NOT IN (SELECT id FROM products)"
                             ).fetchone()[0]
    finally:
        db.close()
    return n_products == n_lexical and missing == 0 and orphans == 0


def run_crash(models: Path, data: Path, work: Path, items: list[Any], *, cycles: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    log = work / "crash-server.log"
    rows = []
    all_acked: dict[int, str] = {}
    server = start_server(models, data, log)
    try:
        for c in range(cycles):
            w = Writer(server.target, items, random.Random(rng.random()), c)
            th = threading.Thread(target=w.run, daemon=True)
            th.start()
            t_first = time.monotonic()
            while not w.acked and th.is_alive() and time.monotonic() - t_first < 60:
                time.sleep(0.005)
            wait = rng.uniform(0.2, 3.0)
            time.sleep(wait)
            acked_before = dict(w.acked)  # what was acknowledged before the kill
            os.kill(server.pid, signal.SIGKILL)
            server.proc.wait(timeout=30)
            killed_at_calls = w.calls
            th.join(timeout=90)
            lexical = lexical_agrees(data)  # the file as the kill left it, before a restart could repair it
            acked = dict(w.acked)  # includes anything acknowledged between the snapshot above and the kill
            all_acked.update(acked)
            t_restart = time.perf_counter()
            stop_server(server)
            server = start_server(models, data, log)
            restart_s = time.perf_counter() - t_restart
            unacked = [p for p in w.attempted if p not in acked]
            v = asyncio.run(_verify(server.target, acked, unacked))
            rows.append({"cycle": c, "kill_after_s": round(wait, 2), "calls_acknowledged": killed_at_calls,
                         "acknowledged": len(acked), "acknowledged_at_kill_signal": len(acked_before),
                         "attempted": len(w.attempted), "unacked_present": v["unacked_present"],
                         "writer_error": w.error, "rejected": w.rejected[:3], "restart_s": round(restart_s, 2),
                         "recovery": v["recovery"], "products": v["products"], "indexed": v["indexed"],
                         "consistent": v["consistent"], "lexical_consistent": lexical, "lost": v["lost"],
                         "not_found_by_title": v["not_found_by_title"], "no_vector": v["no_vector"]})
        # after the last restart: everything acknowledged in every cycle is still there
        final = asyncio.run(_verify(server.target, all_acked, []))
    finally:
        stop_server(server)
    return {"cycles": rows, "acknowledged_total": len(all_acked),
            "lost_writes": sum(len(r["lost"]) for r in rows) + len(final["lost"]),
            "inconsistent_restarts": sum(not r["consistent"] for r in rows),
            "lexical_out_of_step_after_kill": sum(not r["lexical_consistent"] for r in rows),
            "half_written_served": sum(len(r["no_vector"]) for r in rows) + len(final["no_vector"]),
            "not_found_by_own_title": sum(len(r["not_found_by_title"]) for r in rows),
            "final_check": {k: final[k] for k in ("products", "indexed", "consistent", "lost", "no_vector")},
            "restart_s": latency_stats([r["restart_s"] for r in rows])}
