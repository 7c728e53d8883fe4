"""The engine as the server sees it. The server depends on this protocol only, never on Engine itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from kuamo.engine.personal import Event
from kuamo.engine.types import (
    EngineStats,
    Health,
    Product,
    ProductId,
    Query,
    RecommendQuery,
    Rejection,
    SearchResult,
    UpsertResult,
)


@runtime_checkable
class EngineProtocol(Protocol):
    """All methods are coroutines and are safe to call concurrently from one event loop.

    Errors are kuamo.engine.errors types: InvalidInput(field=...) for bad requests, NotFound,
    Overloaded when an encoder queue is full, NotReady before start-up finishes.
    """

    async def search(self, query: Query) -> SearchResult: ...

    async def search_many(self, queries: Sequence[Query]) -> list[SearchResult]: ...

    async def embed_text(self, texts: Sequence[str], kind: str = "query") -> np.ndarray:
        """(n, dim) L2-normalised text vectors; kind is "query" or "document"."""
        ...

    async def embed_image(self, images: Sequence[bytes]) -> np.ndarray:
        """(n, dim) L2-normalised image vectors (aligned to the text space)."""
        ...

    def text_tokens(self, texts: Sequence[str], kind: str = "query") -> list[int]:
        """How many tokens the text tower reads of each text (usage counts of /v1/embeddings)."""
        ...

    def text_model_name(self) -> str:
        """The text tower's model name, from the manifest."""
        ...

    async def categories(self) -> list[str]:
        """The catalog's distinct category paths, sorted."""
        ...

    async def upsert(self, products: Sequence[Product],
                     images: Sequence[bytes | None] | None = None) -> UpsertResult:
        """Insert or replace products; images[i] (optional) is the photo of products[i]. Bad rows are
        rejected with reasons, the rest committed."""
        ...

    async def delete(self, ids: Sequence[ProductId]) -> int:
        """Number of products that existed and were deleted."""
        ...

    async def get(self, id: ProductId) -> Product:
        """The stored product, or NotFound(field="id")."""
        ...

    async def stats(self) -> EngineStats: ...

    async def health(self) -> Health: ...

    async def record_events(self, events: Sequence[Event]) -> tuple[int, list[Rejection]]:
        """Store shopper events (user ids pseudonymised on arrival); returns (recorded, rejections)."""
        ...

    async def recommend(self, query: RecommendQuery) -> SearchResult: ...

    async def forget_user(self, user_id: str) -> int:
        """Delete every event and the profile of a shopper; returns the events deleted."""
        ...
