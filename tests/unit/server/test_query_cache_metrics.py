"""The engine's query-cache counters reach /metrics (through the stats snapshot the server refreshes)."""

from __future__ import annotations

from prometheus_client import generate_latest

from kuamo.server.metrics import ServerMetrics


def test_query_cache_counters_in_prometheus() -> None:
    m = ServerMetrics()
    m.engine.snapshot = {"indexed": 1, "products": 1, "index_kind": "flat", "batchers": {},
                         "query_cache": {"hits": 7, "misses": 3, "evictions": 1, "invalidations": 0,
                                         "entries": 2, "bytes": 3000}}
    text = generate_latest(m.registry).decode()
    assert "kuamo_query_cache_hits_total 7.0" in text
    assert "kuamo_query_cache_misses_total 3.0" in text
    assert "kuamo_query_cache_entries 2.0" in text
    assert "kuamo_query_cache_bytes 3000.0" in text
    m.engine.snapshot = {"indexed": 1, "products": 1}  # an engine without a cache: no such series
    assert "kuamo_query_cache" not in generate_latest(m.registry).decode()


def test_result_cache_counters_and_config() -> None:
    import pytest

    from kuamo.engine.errors import InvalidInput
    from kuamo.server.config import ServerConfig, validate

    m = ServerMetrics()
    m.engine.snapshot = {"indexed": 1, "products": 1, "index_kind": "flat", "batchers": {},
                         "result_cache": {"hits": 5, "misses": 2, "evictions": 0, "entries": 2, "max_entries": 8}}
    text = generate_latest(m.registry).decode()
    assert "kuamo_result_cache_hits_total 5.0" in text and "kuamo_result_cache_entries 2.0" in text
    assert ServerConfig().result_cache_entries > 0  # on in the server
    with pytest.raises(InvalidInput) as exc:
        validate(ServerConfig(result_cache_entries=-1))
    assert exc.value.field == "result_cache_entries"

