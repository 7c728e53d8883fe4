"""Which searches run on the event loop and which go to a thread (EngineConfig.inline_search_candidates)."""

from __future__ import annotations

import asyncio
import threading

from fake_encoders import fake_engine, png

from kuamo.engine.types import Filters, Product, Query


def _where_searched(eng, queries: list[Query], *, writing: bool = False) -> list[bool]:
    """For each query, whether the ranker ran on the thread that awaited the search (the loop)."""
    on_loop: list[bool] = []
    search_jobs = eng.ranker.search_jobs

    def spy(jobs):
        on_loop.append(threading.current_thread() is loop_thread)
        return search_jobs(jobs)

    eng.ranker.search_jobs = spy

    async def main() -> None:
        if writing:
            await eng._write_lock.acquire()  # a write is committing
        try:
            for q in queries:
                assert (await eng.search(q)).hits
        finally:
            if writing:
                eng._write_lock.release()

    loop_thread = threading.current_thread()
    asyncio.run(main())
    eng.ranker.search_jobs = search_jobs
    return on_loop


def _catalog(eng) -> None:
    asyncio.run(eng.upsert([Product(id=i, title=f"{c} shirt", brand="Acme") for i, c in enumerate(("red", "blue"))],
                           [png("red"), png("blue")]))


def test_plain_search_runs_on_the_loop_and_the_rest_on_a_thread(tmp_path) -> None:
    with fake_engine(tmp_path / "data") as eng:
        _catalog(eng)
        plain = Query(text="red shirt", k=2)
        assert _where_searched(eng, [plain, Query(image=png("red"), k=2)]) == [True, True]
        assert _where_searched(eng, [Query(text="red shirt", k=2, filters=Filters(brands=("Acme",))),
                                     Query(text="red shirt", k=101)]) == [False] * 2
        # hybrid: on a thread while the in-memory BM25 must be built or catch up on a write, then on the loop
        hybrid = [Query(text="red shirt", k=2, weights={"lexical": 0.4}),
                  Query(text="red shirt", k=2, weights={"understanding": 0.2})]
        assert _where_searched(eng, hybrid) == [False, True]
        asyncio.run(eng.upsert([Product(id=7, title="green shirt")], [png("green")]))
        assert _where_searched(eng, hybrid[::-1] + hybrid) == [False, True, True, True]
        found = asyncio.run(eng.search(Query(text="green shirt", k=1, weights={"lexical": 0.4})))
        assert found.hits[0].id == 7  # the write is in the lexical answer
        # a search while a write commits could wait for the store's lock: never on the loop
        assert _where_searched(eng, [plain], writing=True) == [False]


def test_inline_off_sends_every_search_to_a_thread(tmp_path) -> None:
    with fake_engine(tmp_path / "data", inline_search_candidates=0) as eng:
        _catalog(eng)
        assert _where_searched(eng, [Query(text="red shirt", k=2)]) == [False]


def test_the_same_answer_either_way(tmp_path) -> None:
    answers = []
    for inline in (100, 0):
        with fake_engine(tmp_path / f"data{inline}", inline_search_candidates=inline) as eng:
            _catalog(eng)
            res = asyncio.run(eng.search(Query(text="blue shirt", k=2, explain=True)))
            answers.append([(h.id, round(h.score, 6)) for h in res.hits])
    assert answers[0] == answers[1] and answers[0][0][0] == 1


def test_a_search_on_the_loop_still_lets_other_tasks_run(tmp_path) -> None:
    """With the query vector cached and the search on the loop, a task that searches in a loop must still yield
    (a search that never yields would starve, e.g., the task that would tell it to stop)."""
    with fake_engine(tmp_path / "data", query_cache_entries=100) as eng:
        _catalog(eng)

        async def main() -> int:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            q = Query(text="red shirt", k=2)
            await eng.search(q)  # the tower's answer is now in the query cache: nothing below waits for a thread
            t = asyncio.create_task(ticker())
            await asyncio.sleep(0)
            start = ticks
            for _ in range(50):
                await eng.search(q)
            t.cancel()
            return ticks - start

        assert asyncio.run(main()) >= 45
