"""Reliability benchmark, against `kuamo serve` processes over the real models and a COPY of the indexed
fashion catalog (in a temporary directory; data/kuamo is never written):

(a) fuzz: >= 10,000 random or mutated requests over every RPC (valid requests with bits flipped,
    truncated or extended, messages built from hostile field values, random bytes, real photos mutated,
    odd and hostile images); counts crashes (server process died), hangs (a call past its 10 s
    deadline), INTERNAL / UNKNOWN answers (all must be 0) and the status-code histogram;
(b) overload: capacity with as many closed-loop clients as the admission limit, then 4x that rate as
    open-loop Poisson arrivals for 60 s: admitted p99 vs normal p99, RESOURCE_EXHAUSTED count and
    latency, server RSS each second vs its steady level, seconds until throughput is back to normal;
(c) crash safety: 20 cycles of streaming Upserts of real fashion products with photos, kill -9 at a
    random point, restart, then: catalog == index, every acknowledged product present and found by
    its own title, nothing half-written served (every stored product has its vector), lost writes.

    kuamo bench reliability [--quick]

Writes benchmarks/results/reliability.json and reliability.md (…_quick with --quick).
"""

from __future__ import annotations

import random
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from kuamo.benchmarks.bench_catalog import bench_catalog
from kuamo.benchmarks.common import RESULTS_DIR, machine_info, markdown_table, read_previous, write_results
from kuamo.benchmarks.loadgen import search_requests
from kuamo.benchmarks.reliability_crash import run_crash
from kuamo.benchmarks.reliability_fuzz import run_fuzz
from kuamo.benchmarks.reliability_overload import ADMISSION, run_overload
from kuamo.benchmarks.serving import copy_data
from kuamo.engine.config import DEFAULT_MODEL_DIR


def _real_ids(data: Path, n: int, seed: int) -> list[int]:
    with sqlite3.connect(f"file:{data / 'catalog.sqlite'}?mode=ro", uri=True) as db:
        ids = [r[0] for r in db.execute("SELECT id FROM products")]
    return random.Random(seed).sample(ids, min(n, len(ids)))


def run(quick: bool = False, *, models: Path = DEFAULT_MODEL_DIR, data: Path | None = None,
        catalog: Path | None = None, seed: int = 0, parts: tuple[str, ...] = ("fuzz", "overload", "crash"),
        fuzz_requests: int | None = None, admission: int = ADMISSION) -> dict[str, Any]:
    from kuamo.export.samples import load_fashion

    catalog, data = bench_catalog(quick, models, catalog, data)
    info = machine_info()
    items = load_fashion(catalog)
    rng = random.Random(seed)
    sample = rng.sample(items, 400)
    n_fuzz = fuzz_requests or (1_000 if quick else 10_000)
    out: dict[str, Any] = {"machine": info, "quick": quick, "catalog": str(catalog), "seed": seed,
                           "data": f"copies of {data} in a temporary directory (the original is not written)"}
    with tempfile.TemporaryDirectory(prefix="kuamo-reliability-") as tmp:
        work = Path(tmp)
        if "fuzz" in parts:
            print("reliability: fuzz", file=sys.stderr, flush=True)
            out["fuzz"] = run_fuzz(models, copy_data(data, work / "fuzz"), work, n_fuzz, seed=seed,
                                   titles=[it.title for it in sample],
                                   photos=[it.image_path.read_bytes() for it in sample[:60]],
                                   ids=_real_ids(data, 2000, seed))
        if "overload" in parts:
            print("reliability: overload", file=sys.stderr, flush=True)
            text_reqs, _, _ = search_requests(catalog, 120 if quick else 400, 1, seed=seed)
            out["overload"] = run_overload(models, copy_data(data, work / "overload"), work, text_reqs, quick=quick,
                                           admission=admission)
        if "crash" in parts:
            print("reliability: crash safety", file=sys.stderr, flush=True)
            out["crash"] = run_crash(models, copy_data(data, work / "crash"), work, sample,
                                     cycles=2 if quick else 20, seed=seed)
    name = "reliability" + ("_quick" if quick else "")
    old = read_previous(name) if set(parts) != {"fuzz", "overload", "crash"} else None
    if old is not None:  # a partial re-run keeps the other parts
        out = {**{k: v for k, v in old.items() if k in ("fuzz", "overload", "crash")}, **out}
    write_results(name, out, "Reliability: fuzzing, overload, crash safety", lambda: _markdown(out), info)
    return out


def _fmt(v: Any, nd: int = 1) -> str:
    return "n/a" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))


def _markdown(o: dict[str, Any]) -> str:
    parts = [f"Server: `kuamo serve` (real models) on 127.0.0.1 over {o['data']}; the clients run in the benchmark "
             "process on the same cores. Seed " + str(o["seed"]) + (" (quick run)." if o["quick"] else ".") + "\n"]
    if "fuzz" in o:
        f = o["fuzz"]
        parts.append("\n## (a) Fuzzing\n\n" + markdown_table([{
            "requests": f["requests"], "seconds": f["seconds"], "crashes": f["crashes"], "hangs (> 10 s)": f["hangs"],
            "INTERNAL": f["internal"], "UNKNOWN": f["unknown"], "undecodable answers": f["undecodable_answers"],
            "failures": f["failures"], "slowest call s": f["max_call_s"]}])
            + "\nStatus codes: " + ", ".join(f"{k} {v}" for k, v in f["codes"].items())
            + ".\n\nBy how the request was made:\n\n" + markdown_table([
                {"made by": k, **{c: v.get(c, 0) for c in f["codes"]}} for k, v in f["by_kind"].items()])
            + "\nBy RPC:\n\n" + markdown_table([{"rpc": k, **{c: v.get(c, 0) for c in f["codes"]}}
                                                for k, v in f["by_rpc"].items()])
            + f"\nAfter the run: health {f['after']['health']}, a good query answered correctly: "
              f"{f['after']['good_query_answered']}, same server process throughout: "
              f"{f['after']['same_process_throughout']}; internal errors in the server log: "
              f"{f['server_log_internal_errors']}.\n")
    if "overload" in o:
        v = o["overload"]
        s, p, r, normal = v["spike"], v["p99_ms"], v["rss_mib"], v["normal_open_loop_half_capacity"]
        parts.append(
            f"\n## (b) Overload (admission limit {v['admission_limit']})\n\n" + markdown_table([
                {"phase": f"capacity, {v['admission_limit']} closed-loop clients", "qps": v["capacity_qps"],
                 "p99 ms": p["at_capacity"], "refused": v["capacity_closed_loop"]["refused"]},
                {"phase": "normal, open loop at 0.5x capacity", "qps": normal["throughput_qps"],
                 "p99 ms": p["normal"], "refused": normal["refused"]},
                {"phase": f"spike, open loop at 4x capacity for {s['seconds']:.0f} s "
                          f"(offered {s['offered_rate_qps']:.0f} /s)", "qps": s["admitted_qps"],
                 "p99 ms": p["admitted_during_spike"], "refused": s["refused"]}])
            + f"\nDuring the spike: {s['requests']} requests, {s['admitted']} admitted (p50 "
              f"{_fmt(s['admitted_latency'].get('p50_ms'))} ms, p99 {_fmt(p['admitted_during_spike'])} ms vs "
              f"{_fmt(p['normal'])} ms at normal load), {s['refused']} RESOURCE_EXHAUSTED answered in p50 "
              f"{_fmt(s['refused_latency'].get('p50_ms'), 2)} ms / p99 {_fmt(s['refused_latency'].get('p99_ms'), 2)}"
              f" ms as the client saw it (inside the server: p99 <= "
              f"{_fmt(s['server_side_spike_and_probe']['RESOURCE_EXHAUSTED'].get('p99_ms_at_most'))} ms; the rest is"
              f" time queued outside the interceptor, client and server sharing the cores); other errors: "
              f"{s['other_errors'] or 'none'}."
              f"\n\nServer RSS: steady {_fmt(r['steady_median'])}"
              f" MiB, spike max {_fmt(r['spike_max'])} MiB, after recovery {_fmt(r['recovery_last'])} MiB. "
              f"Throughput back to >= 90 % of the probe's own rate before the spike "
              f"({_fmt(v['recovery']['normal_qps'])} qps) {_fmt(v['recovery']['seconds_to_normal'], 2)} s after the "
              f"spike ended (probe: {v['recovery']['probe']}).\n")
    if "crash" in o:
        c = o["crash"]
        parts.append(
            f"\n## (c) Crash safety ({len(c['cycles'])} kill -9 cycles)\n\n" + markdown_table([{
                "acknowledged writes": c["acknowledged_total"], "lost writes": c["lost_writes"],
                "catalog != index after restart": c["inconsistent_restarts"],
                "lexical index or photo colours != store after the kill": c.get("lexical_out_of_step_after_kill"),
                "half-written served": c["half_written_served"],
                "not in top 10 for own title": c["not_found_by_own_title"],
                "restart p50 s": c["restart_s"].get("p50_ms", 0) / 1000}])
            + "\n" + markdown_table([{k: r[k] for k in ("cycle", "kill_after_s", "acknowledged", "attempted",
                                                        "unacked_present", "products", "indexed", "restart_s")}
                                     | {"lost": len(r["lost"]), "recovery": r["recovery"].get("mode", "")}
                                     for r in c["cycles"]]))
    parts.append(f"\nReproduce: `flock /tmp/kuamo-bench.lock kuamo bench reliability` (results in {RESULTS_DIR}/"
                 "reliability.json). The 20-minute soak test is separate: `python -m kuamo.benchmarks.soak`.\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", action="append", choices=("fuzz", "overload", "crash"))
    ap.add_argument("--fuzz-requests", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--admission", type=int, default=ADMISSION, help="the overload server's max_inflight")
    a = ap.parse_args(argv)
    run(quick=a.quick, parts=tuple(a.only or ("fuzz", "overload", "crash")), fuzz_requests=a.fuzz_requests,
        seed=a.seed, admission=a.admission)
    return 0


if __name__ == "__main__":
    sys.exit(main())

