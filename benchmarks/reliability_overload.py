"""Reliability (b): overload. Capacity with as many closed-loop clients as the admission limit admits,
then open-loop Poisson arrivals at 4x that rate: admitted vs refused latency, server RSS, time to recover."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from grpc import aio

from kuamo.benchmarks.common import latency_stats
from kuamo.benchmarks.loadgen import closed_loop, open_loop
from kuamo.benchmarks.serving import CACHES_OFF, DEADLINE_S, serving
from kuamo.benchmarks.watch import RssSampler, scrape, server_side_latency
from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc

ADMISSION = 4  # max_inflight of the overload server: 2 per core keeps queueing short (8 gave 2.4x normal p99)


@dataclass
class Call:
    sent: float
    done: float
    code: str


async def _open_loop_then_recover(target: str, reqs: list[pb.SearchRequest], *, rate: float, spike_s: float,
                                  recover_s: float, clients: int, seed: int,
                                  baseline_s: float) -> tuple[list[Call], list[Call], float, float]:
    """The probe (`clients` closed-loop clients) for `baseline_s`, then Poisson arrivals at `rate` for `spike_s`,
    then (without waiting for the stragglers) the same probe for `recover_s`. Returns the spike calls, the
    recovery calls, the time the spike ended and the probe's throughput before the spike: recovery is judged
    against the same clients on the same channels, not against a capacity other clients measured earlier
    (which differed from the probe by -25 % to +30 % between runs on this VM)."""
    opts = [("grpc.use_local_subchannel_pool", 1)]
    chans = [aio.insecure_channel(target, options=opts) for _ in range(8)]
    stubs = [pb_grpc.SearchServiceStub(c) for c in chans]
    rng = random.Random(seed)
    spike: list[Call] = []
    rec: list[Call] = []

    async def one(i: int, out: list[Call]) -> None:
        t = time.perf_counter()
        try:
            await stubs[i % len(stubs)].Search(reqs[i % len(reqs)], timeout=DEADLINE_S)
            code = "OK"
        except aio.AioRpcError as exc:
            code = exc.code().name
        out.append(Call(t, time.perf_counter(), code))

    async def probe(c: int, out: list[Call], since: float, seconds: float) -> None:
        j = c * 7919
        while time.perf_counter() - since < seconds:
            await one(j, out)
            j += 1

    base: list[Call] = []
    t_base = time.perf_counter()
    await asyncio.gather(*(probe(c, base, t_base, baseline_s) for c in range(clients)))
    base_qps = sum(c.code == "OK" for c in base) / (time.perf_counter() - t_base)

    t0 = time.perf_counter()
    tasks = []
    nxt = t0
    i = 0
    while True:
        nxt += rng.expovariate(rate)
        if nxt - t0 > spike_s:
            break
        delay = nxt - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, spike)))
        i += 1
    t_end = time.perf_counter()
    await asyncio.gather(*(probe(c, rec, t_end, recover_s) for c in range(clients)), *tasks)
    for c in chans:
        await c.close()
    return spike, rec, t_end, base_qps


def _recovery_seconds(rec: list[Call], t_end: float, normal_qps: float, window: float = 1.0,
                      step: float = 0.25) -> tuple[float | None, list[dict]]:
    """First time after the spike from which throughput stays >= 90 % of normal for two windows running."""
    ok = np.asarray(sorted(c.done - t_end for c in rec if c.code == "OK"))
    if ok.size == 0:
        return None, []
    horizon = float(ok[-1])
    series = []
    t = 0.0
    while t + window <= horizon:
        n = int(((ok >= t) & (ok < t + window)).sum())
        series.append({"t": round(t, 2), "qps": n / window})
        t += step
    per = int(window / step)
    for k, s in enumerate(series):
        nxt = series[k + per] if k + per < len(series) else None
        if s["qps"] >= 0.9 * normal_qps and nxt is not None and nxt["qps"] >= 0.9 * normal_qps:
            return s["t"], series
    return None, series


def run_overload(models: Path, data: Path, work: Path, reqs: list[pb.SearchRequest], *, quick: bool,
                 admission: int = ADMISSION) -> dict[str, Any]:
    """Capacity = `admission` closed-loop clients (as many as the server admits at once: more would only be
    refused and retry in a tight loop), then the normal phase, the spike and the recovery probe."""
    cap_s, norm_s, base_s, spike_s, rec_s = (3.0, 3.0, 3.0, 5.0, 5.0) if quick else (20.0, 15.0, 10.0, 60.0, 30.0)
    # caches off: the load repeats its queries, and answers from the result cache (2,300 q/s) made an offered
    # 4x a rate this process cannot send, so the spike measured the client, not admission
    with serving(models, data, work / "overload-server.log", max_inflight=admission, metrics=True,
                 extra_args=list(CACHES_OFF)) as s:
        rss = RssSampler(s.pid)
        rss.start()
        try:
            rss.phase = "warm"
            asyncio.run(closed_loop(s.target, reqs, concurrency=admission, duration_s=2.0, warmup_s=0.5))
            rss.phase = "capacity"
            cap = asyncio.run(closed_loop(s.target, reqs, concurrency=admission, duration_s=cap_s)).summary()
            capacity = cap["throughput_qps"]
            rss.phase = "normal"
            normal = asyncio.run(open_loop(s.target, reqs, rate_qps=0.5 * capacity, duration_s=norm_s,
                                           channels=8)).summary()
            rss.phase = "spike"
            t_spike = time.perf_counter()
            assert s.metrics_port is not None
            before = scrape(s.metrics_port)
            spike, rec, t_end, probe_qps = asyncio.run(_open_loop_then_recover(
                s.target, reqs, rate=4 * capacity, spike_s=spike_s, recover_s=rec_s, clients=admission, seed=1,
                baseline_s=base_s))
            after = scrape(s.metrics_port)  # spike and recovery probe together
            rss_phase_switch = t_end - rss.t0
            rss.phase = "after"
            time.sleep(3.0)
        finally:
            rss.stop()
        alive = s.alive()
    # samples taken after the spike ended belong to the recovery, whatever the label said
    rss_spike = [v for t, p, v in rss.samples if p == "spike" and t <= rss_phase_switch]
    rss_recovery = [v for t, p, v in rss.samples if p in ("spike", "after") and t > rss_phase_switch]
    admitted = [c.done - c.sent for c in spike if c.code == "OK"]
    refused = [c.done - c.sent for c in spike if c.code == "RESOURCE_EXHAUSTED"]
    codes = Counter(c.code for c in spike)
    recovery_s, series = _recovery_seconds(rec, t_end, probe_qps)
    steady = float(np.median(rss.of("capacity") + rss.of("normal"))) if rss.samples else None
    offered = len(spike) / spike_s
    return {
        "admission_limit": admission, "capacity_closed_loop": cap, "capacity_qps": capacity,
        "normal_open_loop_half_capacity": normal,
        "spike": {"target_rate_qps": 4 * capacity, "offered_rate_qps": offered, "seconds": spike_s,
                  "requests": len(spike), "codes": dict(codes), "admitted": len(admitted),
                  "admitted_qps": len(admitted) / spike_s, "admitted_latency": latency_stats(admitted),
                  "refused": len(refused), "refused_latency": latency_stats(refused),
                  "server_side_spike_and_probe": {
                      code: server_side_latency(before, after, "/kuamo.v1.SearchService/Search", code)
                      for code in ("OK", "RESOURCE_EXHAUSTED")},
                  "other_errors": {k: v for k, v in codes.items() if k not in ("OK", "RESOURCE_EXHAUSTED")}},
        "p99_ms": {"normal": normal["latency"].get("p99_ms"), "at_capacity": cap["latency"].get("p99_ms"),
                   "admitted_during_spike": latency_stats(admitted).get("p99_ms")},
        "rss_mib": {"steady_median": steady, "spike_max": max(rss_spike, default=None),
                    "recovery_last": rss_recovery[-1] if rss_recovery else None,
                    "samples": [(round(t, 1), p, round(v, 1)) for t, p, v in rss.samples]},
        "recovery": {"seconds_to_normal": recovery_s, "normal_qps": probe_qps, "capacity_qps": capacity,
                     "probe": f"{admission} closed-loop clients, measured for {base_s:.0f} s before the spike",
                     "throughput_series": series[:: max(1, len(series) // 60)]},
        "spike_started_s": round(t_spike - rss.t0, 1), "server_alive_after": alive,
    }
