"""DynamicBatcher behaviour, driven by explicit events (no sleeps decide an outcome)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kuamo.engine.batcher import BatcherConfig, DynamicBatcher
from kuamo.engine.errors import NotReady, Overloaded

LONG = 30.0  # generous bounds: a test fails on a hang, never on a slow machine


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, LONG))


async def first_batch_running(b: DynamicBatcher, submit) -> asyncio.Task:
    """Start `b`, submit one item (the `submit` coroutine) and return its task once its batch holds the worker."""
    await b.start()
    task = asyncio.create_task(submit)
    while b.metrics()["batches"] < 1:
        await asyncio.sleep(0.001)
    return task


def test_full_batch_runs_at_once_and_results_map_to_callers() -> None:
    seen: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        seen.append(list(items))
        return [x * 10 for x in items]

    async def main():
        b = DynamicBatcher(fn, BatcherConfig(max_batch_size=4, max_wait_ms=60_000), name="t")
        await b.start()
        out = await asyncio.gather(*(b.submit(i) for i in range(8)))
        await b.stop()
        return out, b.metrics()

    out, metrics = run(main())
    assert out == [i * 10 for i in range(8)]
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7]]  # full batches did not wait for the 60 s deadline
    assert metrics["batch_sizes"] == {4: 2}


def test_partial_batch_closes_after_max_wait() -> None:
    async def main():
        b = DynamicBatcher(lambda xs: xs, BatcherConfig(max_batch_size=64, max_wait_ms=5), name="t")
        await b.start()
        out = await asyncio.gather(b.submit("a"), b.submit("b"))
        await b.stop()
        return out

    assert run(main()) == ["a", "b"]


def test_queue_bound_raises_overloaded_and_cancelled_items_never_run() -> None:
    gate = threading.Event()
    ran: list[str] = []

    def fn(items: list[str]) -> list[str]:
        gate.wait(LONG)
        ran.extend(items)
        return items

    async def main():
        b = DynamicBatcher(fn, BatcherConfig(max_batch_size=1, max_wait_ms=0, max_queue=2), name="t")
        first = await first_batch_running(b, b.submit("first"))
        doomed = asyncio.create_task(b.submit("doomed"))
        kept = asyncio.create_task(b.submit("kept"))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await b.submit("one too many")
        doomed.cancel()
        gate.set()
        results = await asyncio.gather(first, kept)
        await b.stop()
        return results, b.metrics()

    results, metrics = run(main())
    assert results == ["first", "kept"] and "doomed" not in ran
    assert metrics["overloaded"] == 1 and metrics["cancelled"] == 1


def test_batch_error_reaches_every_caller_and_worker_survives() -> None:
    calls = {"n": 0}

    def fn(items: list[int]) -> list[object]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("model exploded")
        return [ValueError("bad item") if x == 2 else x for x in items]

    async def main():
        b = DynamicBatcher(fn, BatcherConfig(max_batch_size=2, max_wait_ms=60_000), name="t")
        await b.start()
        first = await asyncio.gather(b.submit(0), b.submit(1), return_exceptions=True)
        second = await asyncio.gather(b.submit(2), b.submit(3), return_exceptions=True)
        await b.stop()
        return first, second

    first, second = run(main())
    assert all(isinstance(e, RuntimeError) for e in first)
    assert isinstance(second[0], ValueError) and second[1] == 3  # per-item error only for its caller


def test_cost_bucketing_groups_similar_lengths() -> None:
    batches: list[list[str]] = []
    gate = threading.Event()

    def fn(items: list[str]) -> list[str]:
        gate.wait(LONG)
        batches.append(items)
        return items

    async def main():
        b = DynamicBatcher(fn, BatcherConfig(max_batch_size=2, max_wait_ms=0), name="t", cost=len)
        blocker = await first_batch_running(b, b.submit("x"))
        items = ["aaaaaaaaaaaaaaaaaaaa", "b", "cccccccccccccccccccc", "d"]
        tasks = [asyncio.create_task(b.submit(s)) for s in items]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(blocker, *tasks)
        await b.stop()

    run(main())
    assert sorted(map(sorted, batches[1:])) == [["aaaaaaaaaaaaaaaaaaaa", "cccccccccccccccccccc"], ["b", "d"]]


def test_submit_before_start_and_after_stop() -> None:
    async def main():
        b = DynamicBatcher(lambda xs: xs, name="t")
        with pytest.raises(NotReady):
            await b.submit(1)
        await b.start()
        await b.stop()
        with pytest.raises(NotReady):
            await b.submit(1)

    run(main())


def test_submit_timed_reports_the_wait_behind_a_running_batch() -> None:
    gate = threading.Event()

    def fn(items: list[str]) -> list[str]:
        if items == ["first"]:
            gate.wait(LONG)  # the second item queues until this batch is released
        return [s.upper() for s in items]

    async def main():
        b = DynamicBatcher(fn, BatcherConfig(max_batch_size=4, max_wait_ms=0), name="t")
        first = await first_batch_running(b, b.submit_timed("first"))
        second = asyncio.create_task(b.submit_timed("second"))
        await asyncio.sleep(0.05)  # the second item has now waited at least this long
        gate.set()
        out = await asyncio.gather(first, second)
        await b.stop()
        return out

    (r1, w1), (r2, w2) = run(main())
    assert (r1, r2) == ("FIRST", "SECOND")
    assert w2 >= 0.05 > w1 >= 0.0


def test_stop_lets_the_running_batch_finish_and_fails_the_queued() -> None:
    gate = threading.Event()

    def fn(items: list[str]) -> list[str]:
        gate.wait(LONG)
        return [s.upper() for s in items]

    async def main():
        b = DynamicBatcher(fn, BatcherConfig(max_batch_size=1, max_wait_ms=0), name="t")
        running = await first_batch_running(b, b.submit("running"))
        queued = asyncio.create_task(b.submit("queued"))
        await asyncio.sleep(0)
        stopping = asyncio.create_task(b.stop())
        await asyncio.sleep(0.01)
        gate.set()
        await stopping
        return await asyncio.gather(running, queued, return_exceptions=True)

    running, queued = run(main())
    assert running == "RUNNING" and isinstance(queued, NotReady)


def test_callers_on_two_event_loops_each_get_their_answer() -> None:
    """The workers are threads: a batcher started on one loop answers callers on another (the answer goes to
    the caller's own loop)."""
    b = DynamicBatcher(lambda xs: [x * 2 for x in xs], BatcherConfig(max_batch_size=8, max_wait_ms=1), name="t")
    async def some(start: int) -> list[int]:
        return list(await asyncio.gather(*(b.submit(i) for i in range(start, start + 5))))

    run(b.start())
    other: list[int] = []
    t = threading.Thread(target=lambda: other.extend(run(some(0))))
    t.start()
    here = run(some(10))
    t.join(LONG)
    run(b.stop())
    assert other == [0, 2, 4, 6, 8] and here == [20, 22, 24, 26, 28]
