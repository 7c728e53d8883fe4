"""A real gRPC server on a free loopback port, over a real engine (SQLite store + FAISS index) whose
encoders are the small deterministic fakes, so every RPC and status code can be driven quickly.
test_server_models.py runs the same server over the real exported models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder, png
from server_thread import ServerThread

from kuamo.engine.batcher import BatcherConfig
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.types import Product
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc
from kuamo.server.config import ServerConfig

COLOURS = ["red", "green", "blue", "black", "white"]
KINDS = ["shirt", "dress", "shoes", "watch", "bag"]
TOKEN = "test-token-0123456789abcdef"


def fake_catalog(n: int = 50) -> tuple[list[Product], list[bytes]]:
    products, images = [], []
    for i in range(n):
        colour, kind = COLOURS[i % 5], KINDS[(i // 5) % 5]
        products.append(Product(id=1000 + i, title=f"{colour} {kind}", category=f"Apparel/{kind}",
                                brand="acme" if i % 2 else "zeta", price=10.0 + i, rating=(i % 5) + 0.5,
                                attributes={"colour": colour}))
        images.append(png(colour))
    return products, images


def fake_engine_factory(data_dir: Path, *, batcher: BatcherConfig | None = None, delay_s: float = 0.0):
    async def factory() -> Engine:
        text = FakeTextEncoder()
        if delay_s:
            import time

            inner = text.encode

            def slow(texts, kind="query"):  # type: ignore[no-untyped-def]
                time.sleep(delay_s)
                return inner(texts, kind)

            text.encode = slow  # type: ignore[method-assign]
        # the result cache on, as the real server has it: every RPC test runs through it
        cfg = EngineConfig(data_dir=data_dir, text_batcher=batcher or BatcherConfig(),
                           image_batcher=batcher or BatcherConfig(), result_cache_entries=64)
        engine = Engine(cfg, text_encoder=text, image_encoder=FakeImageEncoder(), batched=True)
        await engine.start()
        if not engine.store.count():
            products, images = fake_catalog()
            await engine.upsert(products, images)
        return engine

    return factory


def start_server(tmp: Path, **cfg) -> ServerThread:  # type: ignore[no-untyped-def]
    factory_kw = {k: cfg.pop(k) for k in ("batcher", "delay_s") if k in cfg}
    return ServerThread(ServerConfig(data_dir=tmp, **cfg), fake_engine_factory(tmp, **factory_kw))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    srv = start_server(tmp_path_factory.mktemp("srv")).load()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[pb_grpc.SearchServiceStub]:
    with grpc.insecure_channel(server.target) as ch:
        yield pb_grpc.SearchServiceStub(ch)
