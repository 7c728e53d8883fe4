"""A generic, model-free dynamic batcher.

`await submit(item)` queues one item; a worker takes a batch when `max_batch_size` items wait or when
`max_wait_ms` has passed since the oldest waiting item arrived, whichever comes first (an asyncio event
wakes it, no polling). The queue is bounded: a full queue raises Overloaded at once. Items whose caller
went away (cancelled future) are dropped before the batch runs. The batch function is synchronous and
runs in a worker thread (ONNX Runtime releases the GIL), so collecting batch N+1 overlaps running batch N.
With `cost` (e.g. token count) a batch is the run of waiting items with the most similar costs that
contains the oldest item, which cuts padding for text.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from kuamo.engine.errors import NotReady, Overloaded

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class BatcherConfig:
    max_batch_size: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 1024
    workers: int = 1  # batches run concurrently (e.g. several single-thread sessions)


@dataclass
class _Pending(Generic[T]):
    item: T
    future: asyncio.Future
    enqueued: float
    cost: int = 0
    started: float = 0.0  # when its batch began running


class DynamicBatcher(Generic[T, R]):
    def __init__(self, fn: Callable[[list[T]], Sequence[R]], cfg: BatcherConfig | None = None, *,
                 name: str = "batcher", cost: Callable[[T], int] | None = None) -> None:
        self.fn, self.cfg, self.name, self.cost = fn, cfg or BatcherConfig(), name, cost
        self._queue: deque[_Pending[T]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._pool: ThreadPoolExecutor | None = None
        self._running = False
        self._sizes: Counter[int] = Counter()
        self._waits: deque[float] = deque(maxlen=4096)
        self._computes: deque[float] = deque(maxlen=4096)
        self.counts = {"submitted": 0, "overloaded": 0, "cancelled": 0, "failed_batches": 0, "batches": 0}

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._wakeup = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=self.cfg.workers, thread_name_prefix=f"kuamo-{self.name}")
        self._tasks = [asyncio.create_task(self._worker(), name=f"{self.name}-{i}") for i in range(self.cfg.workers)]

    async def stop(self) -> None:
        """Stop taking work; items still queued fail with NotReady, running batches finish."""
        self._running = False
        while self._queue:
            p = self._queue.popleft()
            if not p.future.done():
                p.future.set_exception(NotReady(f"{self.name} batcher is shutting down"))
        if self._wakeup is not None:
            self._wakeup.set()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    async def submit(self, item: T) -> R:
        return (await self.submit_timed(item))[0]

    async def submit_timed(self, item: T) -> tuple[R, float]:
        """The result and the seconds the item waited in the queue before its batch began."""
        if not self._running or self._wakeup is None:
            raise NotReady(f"{self.name} batcher is not running")
        if len(self._queue) >= self.cfg.max_queue:
            self.counts["overloaded"] += 1
            raise Overloaded(f"{self.name} queue is full ({self.cfg.max_queue} waiting); retry later")
        fut = asyncio.get_running_loop().create_future()
        pending = _Pending(item, fut, time.perf_counter(), self.cost(item) if self.cost else 0)
        self._queue.append(pending)
        self.counts["submitted"] += 1
        self._wakeup.set()
        result = await fut
        return result, pending.started - pending.enqueued

    def _take(self) -> list[_Pending[T]]:
        live = [p for p in self._queue if not p.future.done()]
        self.counts["cancelled"] += len(self._queue) - len(live)
        self._queue = deque(live)
        n = self.cfg.max_batch_size
        if self.cost is None or len(live) <= n:
            batch = [self._queue.popleft() for _ in range(min(n, len(self._queue)))]
            return batch
        # the window of n items with the closest costs that still contains the oldest item
        oldest = live[0]
        by_cost = sorted(live, key=lambda p: p.cost)
        pos = by_cost.index(oldest)
        best = min(range(max(0, pos - n + 1), min(pos, len(by_cost) - n) + 1),
                   key=lambda s: by_cost[s + n - 1].cost - by_cost[s].cost)
        chosen = {id(p) for p in by_cost[best: best + n]}
        batch = [p for p in live if id(p) in chosen]
        self._queue = deque(p for p in live if id(p) not in chosen)
        return batch

    async def _worker(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while self._running:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._queue[0].enqueued + self.cfg.max_wait_ms / 1000
            while len(self._queue) < self.cfg.max_batch_size and (delay := deadline - time.perf_counter()) > 0:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout=delay)
                except TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            now = time.perf_counter()
            for p in batch:
                p.started = now
            self._waits.extend(now - p.enqueued for p in batch)
            self._sizes[len(batch)] += 1
            self.counts["batches"] += 1
            try:
                results = await loop.run_in_executor(self._pool, self.fn, [p.item for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{self.name}: batch fn returned {len(results)} results for {len(batch)}")
            except Exception as exc:  # every caller of the batch gets the error; the worker goes on
                self.counts["failed_batches"] += 1
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            finally:
                self._computes.append(time.perf_counter() - now)
            for p, r in zip(batch, results, strict=True):
                if p.future.done():
                    continue
                if isinstance(r, BaseException):  # a per-item error reaches only its caller
                    p.future.set_exception(r)
                else:
                    p.future.set_result(r)

    def metrics(self) -> dict[str, Any]:
        def pct(xs: deque[float]) -> dict[str, float]:
            if not xs:
                return {}
            a = np.asarray(xs) * 1000
            return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}

        return {"name": self.name, "queue_depth": len(self._queue), "batch_sizes": dict(sorted(self._sizes.items())),
                "queue_wait": pct(self._waits), "compute": pct(self._computes), **self.counts,
                "config": {"max_batch_size": self.cfg.max_batch_size, "max_wait_ms": self.cfg.max_wait_ms,
                           "max_queue": self.cfg.max_queue, "workers": self.cfg.workers}}
