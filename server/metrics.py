"""Prometheus metrics: per-RPC counters and latency histograms, plus engine gauges read from a snapshot
the server refreshes (so a scrape never touches the engine from the HTTP thread)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5,
                   1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class _EngineCollector(Collector):
    def __init__(self) -> None:
        self.snapshot: dict[str, Any] = {}

    def collect(self) -> Iterator[Any]:
        s = self.snapshot
        if not s:
            return
        g = GaugeMetricFamily("kuamo_index_size", "Products in the vector index", labels=["kind"])
        g.add_metric([str(s.get("index_kind", ""))], float(s.get("indexed", 0)))
        yield g
        yield GaugeMetricFamily("kuamo_catalog_products", "Products in the catalog store", value=s.get("products", 0))
        depth = GaugeMetricFamily("kuamo_queue_depth", "Items waiting in an encoder batcher", labels=["encoder"])
        sizes = HistogramMetricFamily("kuamo_batch_size", "Encoder batch sizes", labels=["encoder"])
        for name, m in s.get("batchers", {}).items():
            depth.add_metric([name], float(m.get("queue_depth", 0)))
            counts = {int(k): int(v) for k, v in m.get("batch_sizes", {}).items()}
            cum, buckets = 0, []
            for b in BATCH_BUCKETS:
                cum = sum(v for k, v in counts.items() if k <= b)
                buckets.append((str(b), cum))
            buckets.append(("+Inf", sum(counts.values())))
            sizes.add_metric([name], buckets, sum_value=float(sum(k * v for k, v in counts.items())))
        yield depth
        yield sizes
        yield from _query_cache_metrics(s.get("query_cache") or {})
        yield from _result_cache_metrics(s.get("result_cache") or {})


def _query_cache_metrics(c: dict[str, Any]) -> Iterator[Any]:
    """The engine's query cache (engine/query_cache.py): its counters only grow, so they are counters here."""
    if not c:
        return
    for name, doc in (("hits", "Text queries answered from the query cache"),
                      ("misses", "Text queries the text tower encoded (not in the query cache)"),
                      ("evictions", "Query cache entries dropped to stay within its bounds"),
                      ("invalidations", "Times the query cache was emptied because the models changed")):
        yield CounterMetricFamily(f"kuamo_query_cache_{name}", doc, value=float(c.get(name, 0)))
    yield GaugeMetricFamily("kuamo_query_cache_entries", "Query vectors in the cache", value=c.get("entries", 0))
    yield GaugeMetricFamily("kuamo_query_cache_bytes", "Bytes the query cache holds", value=c.get("bytes", 0))


def _result_cache_metrics(c: dict[str, Any]) -> Iterator[Any]:
    """The engine's result cache (engine/result_cache.py)."""
    if not c:
        return
    for name, doc in (("hits", "Text queries answered whole from the result cache"),
                      ("misses", "Cacheable text queries searched (not in the result cache, or from before a write)"),
                      ("evictions", "Result cache entries dropped to stay within its bound")):
        yield CounterMetricFamily(f"kuamo_result_cache_{name}", doc, value=float(c.get(name, 0)))
    yield GaugeMetricFamily("kuamo_result_cache_entries", "Answers in the result cache", value=c.get("entries", 0))


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("kuamo_requests", "RPCs finished", ["method", "code"], registry=self.registry)
        self.latency = Histogram("kuamo_request_seconds", "RPC latency", ["method", "code"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inflight = Gauge("kuamo_inflight_requests", "RPCs being served", registry=self.registry)
        self.rejected = Counter("kuamo_admission_rejected", "RPCs refused at the admission limit",
                                registry=self.registry)
        self.engine = _EngineCollector()
        self.registry.register(self.engine)
        self._http: Any = None
        self._lock = threading.Lock()

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.latency.labels(method, code).observe(seconds)

    def serve_http(self, host: str, port: int) -> int:
        """Start the /metrics endpoint; returns the bound port (port 0 = pick a free one)."""
        with self._lock:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
            self._http = server
            return int(server.server_address[1])

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.shutdown()
                self._http.server_close()
                self._http = None
