"""A generic, model-free dynamic batcher.

`await submit(item)` queues one item; a worker takes a batch when `max_batch_size` items wait or when
`max_wait_ms` has passed since the oldest waiting item arrived, whichever comes first. The queue is bounded: a
full queue raises Overloaded at once. Items whose caller went away (cancelled future) are dropped before the
batch runs. The batch function is synchronous (ONNX Runtime and FAISS release the GIL), so collecting batch N+1
overlaps running batch N. With `cost` (e.g. token count) a batch is the run of waiting items with the most
similar costs that contains the oldest item, which cuts padding for text.

The workers are threads, not event-loop tasks: collecting, running and answering a batch touch the caller's
event loop once (the answer), where a loop task took four turns of it (wake-up, deadline timer, executor
completion, answer). Under a loop busy with other requests (cache hits by the thousand) each turn waits for every
ready callback, so those turns were most of a cache miss's p99 (benchmarks/results/server.md, Zipf log).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
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
    loop: asyncio.AbstractEventLoop
    enqueued: float
    cost: int = 0
    started: float = 0.0  # when its batch began running


def _settle(batch: Sequence[_Pending[Any]], results: Sequence[Any] | BaseException) -> None:
    """On the callers' loop: each caller gets its result, its own per-item error, or the batch's error."""
    for i, p in enumerate(batch):
        if p.future.done():  # the caller went away while its batch ran
            continue
        r = results if isinstance(results, BaseException) else results[i]
        if isinstance(r, BaseException):
            p.future.set_exception(r)
        else:
            p.future.set_result(r)


class DynamicBatcher(Generic[T, R]):
    def __init__(self, fn: Callable[[list[T]], Sequence[R]], cfg: BatcherConfig | None = None, *,
                 name: str = "batcher", cost: Callable[[T], int] | None = None) -> None:
        self.fn, self.cfg, self.name, self.cost = fn, cfg or BatcherConfig(), name, cost
        self._queue: deque[_Pending[T]] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._running = False
        self._sizes: Counter[int] = Counter()
        self._waits: deque[float] = deque(maxlen=4096)
        self._computes: deque[float] = deque(maxlen=4096)
        self.counts = {"submitted": 0, "overloaded": 0, "cancelled": 0, "failed_batches": 0, "batches": 0}

    async def start(self) -> None:
        with self._cond:
            if self._running:
                return
            self._running = True
        self._threads = [threading.Thread(target=self._worker, name=f"kuamo-{self.name}-{i}", daemon=True)
                         for i in range(self.cfg.workers)]
        for t in self._threads:
            t.start()

    async def stop(self) -> None:
        """Stop taking work; items still queued fail with NotReady, running batches finish."""
        with self._cond:
            self._running = False
            queued, self._queue = list(self._queue), deque()
            self._cond.notify_all()
        self._deliver(queued, NotReady(f"{self.name} batcher is shutting down"))
        threads, self._threads = self._threads, []
        for t in threads:
            await asyncio.to_thread(t.join)

    async def submit(self, item: T) -> R:
        return (await self.submit_timed(item))[0]

    async def submit_timed(self, item: T) -> tuple[R, float]:
        """The result and the seconds the item waited in the queue before its batch began."""
        loop = asyncio.get_running_loop()
        pending = _Pending(item, loop.create_future(), loop, time.perf_counter(), self.cost(item) if self.cost else 0)
        with self._cond:
            if not self._running:
                raise NotReady(f"{self.name} batcher is not running")
            if len(self._queue) >= self.cfg.max_queue:
                self.counts["overloaded"] += 1
                raise Overloaded(f"{self.name} queue is full ({self.cfg.max_queue} waiting); retry later")
            self._queue.append(pending)
            self.counts["submitted"] += 1
            self._cond.notify()
        result = await pending.future
        return result, pending.started - pending.enqueued

    def _take(self) -> list[_Pending[T]]:
        """The next batch (under the lock)."""
        live = [p for p in self._queue if not p.future.done()]
        self.counts["cancelled"] += len(self._queue) - len(live)
        self._queue = deque(live)
        n = self.cfg.max_batch_size
        if self.cost is None or len(live) <= n:
            return [self._queue.popleft() for _ in range(min(n, len(self._queue)))]
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

    def _next_batch(self) -> list[_Pending[T]] | None:
        """Block until a batch is due (full, or its oldest item has waited max_wait_ms); None once stopped."""
        with self._cond:
            while True:
                while self._running and not self._queue:
                    self._cond.wait()
                if not self._running:
                    return None
                deadline = self._queue[0].enqueued + self.cfg.max_wait_ms / 1000
                while (self._running and self._queue and len(self._queue) < self.cfg.max_batch_size
                       and (delay := deadline - time.perf_counter()) > 0):
                    self._cond.wait(delay)
                if not self._running:
                    return None
                batch = self._take()
                if not batch:  # every waiting caller went away, or another worker took them
                    continue
                now = time.perf_counter()
                for p in batch:
                    p.started = now
                self._waits.extend(now - p.enqueued for p in batch)
                self._sizes[len(batch)] += 1
                self.counts["batches"] += 1
                return batch

    def _worker(self) -> None:
        while (batch := self._next_batch()) is not None:
            t0 = time.perf_counter()
            try:
                results: Sequence[R] | BaseException = self.fn([p.item for p in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{self.name}: batch fn returned {len(results)} results for {len(batch)}")
            except Exception as exc:  # every caller of the batch gets the error; the worker goes on
                results = exc
            with self._cond:  # metrics() reads these from the loop's thread
                self.counts["failed_batches"] += isinstance(results, BaseException)
                self._computes.append(time.perf_counter() - t0)
            self._deliver(batch, results)

    @staticmethod
    def _deliver(batch: Sequence[_Pending[Any]], results: Sequence[Any] | BaseException) -> None:
        """Hand the answers to each caller's loop in one callback per loop (normally one loop)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[int]] = {}
        for i, p in enumerate(batch):
            by_loop.setdefault(p.loop, []).append(i)
        for loop, idx in by_loop.items():
            part = [batch[i] for i in idx]
            res = results if isinstance(results, BaseException) else [results[i] for i in idx]
            try:
                loop.call_soon_threadsafe(_settle, part, res)
            except RuntimeError:  # that loop is closed: its callers are gone
                pass

    def metrics(self) -> dict[str, Any]:
        def pct(xs: list[float]) -> dict[str, float]:
            if not xs:
                return {}
            a = np.asarray(xs) * 1000
            return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}

        with self._cond:  # the workers write these
            depth, sizes, counts = len(self._queue), dict(sorted(self._sizes.items())), dict(self.counts)
            waits, computes = list(self._waits), list(self._computes)
        return {"name": self.name, "queue_depth": depth, "batch_sizes": sizes,
                "queue_wait": pct(waits), "compute": pct(computes), **counts,
                "config": {"max_batch_size": self.cfg.max_batch_size, "max_wait_ms": self.cfg.max_wait_ms,
                           "max_queue": self.cfg.max_queue, "workers": self.cfg.workers}}
