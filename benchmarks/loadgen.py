"""gRPC load generation against a running kuamo server (loopback only, bounded in count and time):
closed-loop (N clients, each sends its next request when the last one answered) and open-loop (Poisson
arrivals at a fixed rate, so a slow server cannot slow the offered load down); and the search requests the
server and reliability suites send."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from kuamo.benchmarks.common import latency_stats
from kuamo.evaluation.tasks import load_zh_queries
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc


def _check_loopback(target: str) -> None:
    host = target.rsplit(":", 1)[0].strip("[]")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"load generation is loopback-only; refusing {target}")


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)  # OK calls, seconds
    refused: list[float] = field(default_factory=list)  # RESOURCE_EXHAUSTED, seconds to the answer
    codes: Counter = field(default_factory=Counter)
    server_ms: list[float] = field(default_factory=list)  # the server's own total_ms of OK calls
    encode_ms: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)  # the server's time waiting for an encoder batch
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        ok = len(self.latencies)
        return {"ok": ok, "throughput_qps": ok / self.seconds if self.seconds else 0.0,
                "latency": latency_stats(self.latencies), "refused": len(self.refused),
                "refused_latency": latency_stats(self.refused), "codes": dict(self.codes),
                "server_total": latency_stats([m / 1000 for m in self.server_ms]),
                "server_encode": latency_stats([m / 1000 for m in self.encode_ms]),
                "server_queue": latency_stats([m / 1000 for m in self.queue_ms]),
                "seconds": round(self.seconds, 2)}

    def add_ok(self, seconds: float, r: pb.SearchResponse) -> None:
        self.latencies.append(seconds)
        self.codes["OK"] += 1
        self.server_ms.append(r.timings.total_ms)
        self.encode_ms.append(r.timings.encode_ms)
        self.queue_ms.append(r.timings.queue_ms)


def _channels(target: str, n: int) -> list[aio.Channel]:
    _check_loopback(target)
    opts = [("grpc.max_send_message_length", 32 << 20), ("grpc.use_local_subchannel_pool", 1)]
    return [aio.insecure_channel(target, options=opts) for _ in range(n)]


async def _one(stub: pb_grpc.SearchServiceStub, req: pb.SearchRequest, res: LoadResult, timeout: float) -> None:
    t0 = time.perf_counter()
    try:
        r = await stub.Search(req, timeout=timeout)
    except aio.AioRpcError as exc:
        dt = time.perf_counter() - t0
        res.codes[exc.code().name] += 1
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            res.refused.append(dt)
        return
    res.add_ok(time.perf_counter() - t0, r)


async def closed_loop(target: str, requests: Sequence[pb.SearchRequest], *, concurrency: int, duration_s: float,
                      max_requests: int = 1_000_000, timeout: float = 10.0, channels: int = 4,
                      warmup_s: float = 1.0) -> LoadResult:
    """`concurrency` clients loop over `requests` (each from its own offset) until the time is up."""
    chans = _channels(target, min(channels, concurrency))
    stubs = [pb_grpc.SearchServiceStub(c) for c in chans]
    res = LoadResult()
    sent = itertools.count()
    stop_at = time.perf_counter() + warmup_s + duration_s
    measure_from = time.perf_counter() + warmup_s

    async def client(i: int) -> None:
        stub = stubs[i % len(stubs)]
        j = i * 7919
        warm = LoadResult()
        while time.perf_counter() < stop_at and next(sent) < max_requests:
            req = requests[j % len(requests)]
            j += 1
            await _one(stub, req, res if time.perf_counter() >= measure_from else warm, timeout)

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    res.seconds = time.perf_counter() - max(t0, measure_from)
    for c in chans:
        await c.close()
    return res


async def open_loop(target: str, requests: Sequence[pb.SearchRequest], *, rate_qps: float, duration_s: float,
                    timeout: float = 10.0, channels: int = 4, seed: int = 0) -> LoadResult:
    """Poisson arrivals at `rate_qps` for `duration_s`; at most rate*duration*2 requests in all."""
    chans = _channels(target, channels)
    stubs = [pb_grpc.SearchServiceStub(c) for c in chans]
    rng = random.Random(seed)
    res = LoadResult()
    tasks: list[asyncio.Task] = []
    t0 = time.perf_counter()
    next_at = t0
    for i in itertools.count():
        next_at += rng.expovariate(rate_qps)
        if next_at - t0 > duration_s or i > rate_qps * duration_s * 2:
            break
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one(stubs[i % len(stubs)], requests[i % len(requests)], res, timeout)))
    await asyncio.gather(*tasks)
    res.seconds = time.perf_counter() - t0
    for c in chans:
        await c.close()
    return res


async def stream_closed_loop(target: str, requests: Sequence[pb.SearchRequest], *, concurrency: int,
                             duration_s: float, timeout: float = 60.0, warmup_s: float = 1.0) -> LoadResult:
    """`concurrency` clients, each with one long SearchStream: send a query, wait for its answer, send the next
    (the streaming twin of closed_loop). A per-item error in a stream counts under its code."""
    (chan,) = _channels(target, 1)
    stub = pb_grpc.SearchServiceStub(chan)
    res = LoadResult()
    stop_at = time.perf_counter() + warmup_s + duration_s
    measure_from = time.perf_counter() + warmup_s

    async def client(i: int) -> None:
        outbox: asyncio.Queue[pb.SearchRequest | None] = asyncio.Queue()

        async def gen() -> Any:
            while (req := await outbox.get()) is not None:
                yield req

        call = stub.SearchStream(gen(), timeout=timeout)
        j = i * 7919
        try:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                await outbox.put(requests[j % len(requests)])
                j += 1
                r = await call.read()
                if r is aio.EOF:
                    break
                if t0 < measure_from:
                    continue
                if r.HasField("error"):
                    res.codes[grpc.StatusCode(r.error.code).name if r.error.code else "ERROR"] += 1
                else:
                    res.add_ok(time.perf_counter() - t0, r)
        except aio.AioRpcError as exc:
            res.codes[exc.code().name] += 1
        finally:
            await outbox.put(None)
            call.cancel()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    res.seconds = time.perf_counter() - max(t0, measure_from)
    await chan.close()
    return res


async def sequential(target: str, requests: Sequence[pb.SearchRequest], *, timeout: float = 10.0) -> LoadResult:
    """One client, one request at a time: the latency a lone shopper sees."""
    (chan,) = _channels(target, 1)
    stub = pb_grpc.SearchServiceStub(chan)
    for req in requests[:3]:
        await stub.Search(req, timeout=timeout)  # connection set-up is not the server's latency
    res = LoadResult()
    t0 = time.perf_counter()
    for req in requests:
        await _one(stub, req, res, timeout)
    res.seconds = time.perf_counter() - t0
    await chan.close()
    return res


def search_requests(catalog: Path, n_text: int, n_image: int, seed: int = 0) -> tuple[list, list, list[str]]:
    """Search requests over real catalog data: `n_text` product titles, 1 in 4 replaced by a Chinese query,
    and `n_image` product photos, k = 10. Returns (text requests, photo requests, the texts)."""
    from kuamo.export.samples import load_fashion

    items = load_fashion(catalog)
    rng = random.Random(seed)
    titles = [it.title for it in rng.sample(items, n_text)]
    zh = [q["zh"] for q in load_zh_queries()]
    texts = [t if i % 4 else zh[(i // 4) % len(zh)] for i, t in enumerate(titles)]  # 1 in 4 Chinese
    text_reqs = [pb.SearchRequest(request_id=str(i), query=pb.Query(text=t, k=10)) for i, t in enumerate(texts)]
    photos = [it.image_path.read_bytes() for it in rng.sample(items, n_image)]
    image_reqs = [pb.SearchRequest(request_id=f"i{i}", query=pb.Query(image=b, k=10)) for i, b in enumerate(photos)]
    return text_reqs, image_reqs, texts
