"""SearchStream answers in arrival order by default, and as each answer is ready when the client asks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kuamo.engine.errors import InvalidInput
from kuamo.engine.types import SearchResult, Timings
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.server.servicer import STREAM_ORDER_KEY, SearchServicer, stream_order


class SlowFirstEngine:
    """Text "slow" takes long; the rest answer at once, so completion order differs from arrival order."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def search(self, query) -> SearchResult:  # type: ignore[no-untyped-def]
        if query.text == "slow":
            await self.release.wait()
        elif query.text == "bad":
            raise InvalidInput("k must be ...", field="k")
        return SearchResult(hits=[], timings=Timings())


async def _requests(texts: list[str]) -> AsyncIterator[pb.SearchRequest]:
    for i, t in enumerate(texts):
        yield pb.SearchRequest(request_id=str(i), query=pb.Query(text=t, k=1))


async def _collect(servicer: SearchServicer, engine: SlowFirstEngine, texts: list[str], by_completion: bool,
                   release_after: int) -> list[str]:
    got: list[str] = []
    async for answer in servicer.SearchStream(_requests(texts), None, by_completion=by_completion):
        got.append(answer.request_id)
        if len(got) == release_after:
            engine.release.set()
    return got


def test_completion_order_answers_the_quick_ones_first_and_every_one_once() -> None:
    async def main() -> None:
        engine = SlowFirstEngine()
        servicer = SearchServicer(lambda: engine, stream_window=8)  # type: ignore[arg-type, return-value]
        texts = ["slow", "a", "bad", "b", "c"]
        got = await asyncio.wait_for(_collect(servicer, engine, texts, True, release_after=4), 10)
        assert got[-1] == "0" and sorted(got) == ["0", "1", "2", "3", "4"]

    asyncio.run(main())


def test_arrival_order_waits_for_the_slow_one() -> None:
    async def main() -> None:
        engine = SlowFirstEngine()
        servicer = SearchServicer(lambda: engine, stream_window=8)  # type: ignore[arg-type, return-value]
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, engine.release.set)  # nothing can come out before it
        got = await asyncio.wait_for(_collect(servicer, engine, ["slow", "a", "b"], False, release_after=99), 10)
        assert got == ["0", "1", "2"]

    asyncio.run(main())


def test_window_bounds_queries_in_flight_by_completion() -> None:
    async def main() -> None:
        engine = SlowFirstEngine()
        servicer = SearchServicer(lambda: engine, stream_window=2)  # type: ignore[arg-type, return-value]
        # two slow queries fill the window: the third waits until one finishes, so nothing is answered early
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, engine.release.set)
        got = await asyncio.wait_for(_collect(servicer, engine, ["slow", "slow", "a"], True, release_after=99), 10)
        assert sorted(got) == ["0", "1", "2"]

    asyncio.run(main())


class _Ctx:
    def __init__(self, md: tuple) -> None:
        self.md = md

    def invocation_metadata(self) -> tuple:
        return self.md


def test_stream_order_metadata() -> None:
    assert stream_order(None) == "arrival"
    assert stream_order(_Ctx(((STREAM_ORDER_KEY, "completion"),))) == "completion"
    with pytest.raises(InvalidInput, match="arrival' or 'completion'"):
        stream_order(_Ctx(((STREAM_ORDER_KEY, "random"),)))
