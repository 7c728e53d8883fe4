"""Run a real KuamoServer on a free loopback port in a background event-loop thread, for tests."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from kuamo.server.app import KuamoServer, loop_factory
from kuamo.server.config import ServerConfig


class ServerThread:
    def __init__(self, cfg: ServerConfig, engine_factory: Callable[[], Awaitable[Any]] | None = None) -> None:
        self.cfg = dataclasses.replace(cfg, port=0, metrics_port=0)
        self.loop = loop_factory(self.cfg)()  # the loop `kuamo serve` would run
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="kuamo-test-server")
        self.thread.start()
        self.server = self.run(self._make(engine_factory))
        self.port: int = self.run(self.server.start())

    async def _make(self, factory: Callable[[], Awaitable[Any]] | None) -> KuamoServer:
        return KuamoServer(self.cfg, engine_factory=factory)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def run(self, coro: Awaitable[Any], timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def load(self) -> ServerThread:
        self.run(self.server.load())
        return self

    def stop(self, grace: float = 1.0) -> None:
        try:
            self.run(self.server.stop(grace))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
