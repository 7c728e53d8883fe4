"""Watching a `kuamo serve` process from outside: its RSS once a second, tagged by phase, and its
Prometheus samples (per-method latency histograms) between two scrapes."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from typing import Any


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """The server's Prometheus samples: (name, sorted labels) -> value."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if m:
            labels = tuple(sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or "")))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def server_side_latency(before: dict, after: dict, method: str, code: str) -> dict[str, Any]:
    """Latency inside the server (interceptor entry to answer) of the calls between two scrapes, from the
    histogram buckets: percentiles are bucket upper bounds."""
    buckets = []
    for (name, labels), v in after.items():
        d = dict(labels)
        if name == "kuamo_request_seconds_bucket" and d.get("method") == method and d.get("code") == code:
            buckets.append((float(d["le"]), v - before.get((name, labels), 0.0)))
    buckets.sort()
    n = buckets[-1][1] if buckets else 0.0
    if not n:
        return {"n": 0}

    def pct(q: float) -> float:
        return next(le for le, c in buckets if c >= q * n) * 1000

    return {"n": int(n), "p50_ms_at_most": pct(0.5), "p99_ms_at_most": pct(0.99)}


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """VmRSS of a process once a second, tagged with the phase running at the time."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True, name="rss")
        self.pid, self.phase = pid, "start"
        self.samples: list[tuple[float, str, float]] = []
        self._halt = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self._halt.is_set():
            v = rss_mib(self.pid)
            if v is not None:
                self.samples.append((time.perf_counter() - self.t0, self.phase, v))
            self._halt.wait(1.0)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def of(self, phase: str) -> list[float]:
        return [v for _, p, v in self.samples if p == phase]
