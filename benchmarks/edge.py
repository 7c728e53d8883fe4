"""Edge and CPU deployment (`kuamo bench edge`): what a serve-only box pays and gets.

- the deployable model bundle (`kuamo bundle`) and its size;
- the serve-only venvs, `pip install kuamo[cpu]` vs `kuamo[gpu]` (full mode: built in a temp dir from this
  checkout with pip's cache);
- cold start: `kuamo serve` from the bundle over the indexed catalog, from the process start to SERVING
  (models loaded and warm, index loaded), and the server's RSS when idle and after a load;
- core counts: the server pinned to 1 core and to 2 cores (as taskset does, before it starts, so ONNX Runtime
  sizes its threads from the pinning): one-client text and photo latency and 8-client text throughput.
  With 1 core the client runs on the other core; with 2 it shares them.

Results: benchmarks/results/edge.json + .md (edge_quick.* with --quick).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kuamo.benchmarks.bench_catalog import bench_catalog
from kuamo.benchmarks.common import machine_info, markdown_table, quick_models_main, write_results
from kuamo.benchmarks.loadgen import closed_loop, search_requests, sequential
from kuamo.benchmarks.serving import start_server, stop_server
from kuamo.benchmarks.watch import rss_mib
from kuamo.engine.config import DEFAULT_MODEL_DIR

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"bundle_mb": 200, "venv_cpu_mb": 300, "cold_start_s": 5.0, "idle_rss_mib": 450,
           "one_core_text_p50_ms": 15.0}


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 1e6


def venv_size(extra: str, work: Path) -> dict[str, Any]:
    """Size of a fresh venv holding `pip install <this checkout>[extra]` (no export or dev extras): as pip
    installs it by default (bytecode of every module compiled: 50 MB, most of it ORT's and numpy's tooling that
    serving never imports), and installed with --no-compile after `kuamo serve`'s imports compiled theirs."""
    out: dict[str, Any] = {}
    for compiled in (True, False):
        venv = work / f"venv-{extra}-{'compiled' if compiled else 'no-compile'}"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        t0 = time.perf_counter()
        pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *([] if compiled else ["--no-compile"]),
                              f"{REPO}[{extra}]"], capture_output=True, text=True)
        if pip.returncode:
            return {"error": pip.stderr.strip().splitlines()[-1:]}
        install_s = time.perf_counter() - t0
        if not compiled:  # what a first start writes
            subprocess.run([str(venv / "bin" / "python"), "-c", "import kuamo.server.app, kuamo.engine.engine, "
                            "kuamo.cli"], check=True)
        key = "mb" if compiled else "mb_no_compile_after_first_start"
        out[key] = round(_dir_mb(venv), 1)
        out["install_s" if compiled else "install_no_compile_s"] = round(install_s, 1)
        site = next((venv / "lib").glob("python*/site-packages"))
        out["torch"], out["transformers"] = (site / "torch").exists(), (site / "transformers").exists()
        out["cuda_libs"] = bool(list(site.glob("onnxruntime/capi/*cuda*")))
        if compiled:
            out["largest"] = {name: round(_dir_mb(site / name), 1) for name in (
                "onnxruntime", "faiss", "faiss_cpu.libs", "numpy", "numpy.libs", "grpc", "PIL", "tokenizers",
                "kuamo", "pip") if (site / name).exists()}
    return out


def cold_start(models: Path, data: Path, runs: int, text_reqs: list, image_reqs: list) -> dict[str, Any]:
    """Process start -> SERVING, `runs` times; RSS idle (2 s after SERVING) and after a text + photo load."""
    seconds, idle, loaded = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        s = start_server(models, data)
        seconds.append(time.perf_counter() - t0)
        try:
            time.sleep(2.0)
            idle.append(rss_mib(s.pid))
            asyncio.run(sequential(s.target, text_reqs))
            asyncio.run(sequential(s.target, image_reqs))
            loaded.append(rss_mib(s.pid))
        finally:
            stop_server(s)
    return {"runs": runs, "to_serving_s": [round(x, 2) for x in seconds], "median_s": statistics.median(seconds),
            "idle_rss_mib": statistics.median(idle), "loaded_rss_mib": statistics.median(loaded),
            "load": f"{len(text_reqs)} text + {len(image_reqs)} photo queries, one client"}


def pinned(models: Path, data: Path, cpus: tuple[int, ...], text_reqs: list, image_reqs: list,
           seconds: float) -> dict[str, Any]:
    """The server pinned to `cpus`; the client (this process) on the other core when one is left. The result
    cache is off: the 8-client load re-sends the same texts, which it would answer without searching."""
    here = os.sched_getaffinity(0)
    rest = sorted(set(range(os.cpu_count() or 1)) - set(cpus))
    s = start_server(models, data, cpus=cpus, extra_args=["--result-cache-entries", "0"])
    try:
        if rest:
            os.sched_setaffinity(0, {rest[0]})
        text = asyncio.run(sequential(s.target, text_reqs)).summary()
        photo = asyncio.run(sequential(s.target, image_reqs)).summary()
        load = asyncio.run(closed_loop(s.target, text_reqs, concurrency=8, duration_s=seconds)).summary()
    finally:
        os.sched_setaffinity(0, here)
        stop_server(s)
    threads = subprocess.run(["taskset", "-c", ",".join(map(str, cpus)), sys.executable, "-c",
                              "from kuamo.engine.cpu_budget import usable_cores; print(usable_cores())"],
                             capture_output=True, text=True).stdout.strip()
    return {"cpus": list(cpus), "client_cpu": rest[0] if rest else "shared", "ort_threads": int(threads or 0),
            "text": text["latency"], "photo": photo["latency"], "text_8_clients_qps": load["throughput_qps"],
            "text_8_clients_p99_ms": load["latency"].get("p99_ms")}


def run(quick: bool = False, *, models: Path = DEFAULT_MODEL_DIR) -> dict[str, Any]:
    from kuamo.export.bundle import write_bundle

    catalog, data = bench_catalog(quick, models)
    n_text, n_image = (60, 20) if quick else (300, 80)
    text_reqs, image_reqs, _ = search_requests(catalog, n_text, n_image)
    res: dict[str, Any] = {"suite": "edge", "quick": quick, "machine": machine_info(), "catalog": str(catalog),
                           "data": str(data)}
    with tempfile.TemporaryDirectory(prefix="kuamo-edge-") as tmp:
        work = Path(tmp)
        bundle = work / "bundle"
        info = write_bundle(models, bundle)
        res["bundle"] = {"mb": round(info["bytes"] / 1e6, 1), "files": info["files"], "served": info["served"],
                         "export_mb": round(_dir_mb(models), 1)}
        res["venvs"] = {"skipped": "quick mode"} if quick else {e: venv_size(e, work) for e in ("cpu", "gpu")}
        print("edge: cold start", file=sys.stderr, flush=True)
        res["cold_start"] = cold_start(bundle, data, 1 if quick else 3, text_reqs, image_reqs)
        cores = (1,) if quick or (os.cpu_count() or 1) < 2 else (1, 2)
        res["pinned"] = {}
        for n in cores:
            print(f"edge: pinned to {n} core(s)", file=sys.stderr, flush=True)
            res["pinned"][str(n)] = pinned(bundle, data, tuple(range(n)), text_reqs, image_reqs,
                                           2.0 if quick else 8.0)
    one = res["pinned"]["1"]
    measured = {"bundle_mb": res["bundle"]["mb"],
                "venv_cpu_mb": res["venvs"].get("cpu", {}).get("mb_no_compile_after_first_start"),
                "cold_start_s": res["cold_start"]["median_s"], "idle_rss_mib": res["cold_start"]["idle_rss_mib"],
                "one_core_text_p50_ms": one["text"].get("p50_ms")}
    res["targets"] = {k: {"target": f"<= {v}", "measured": measured[k],
                          "met": None if measured[k] is None else measured[k] <= v} for k, v in TARGETS.items()}
    _write(res)
    return res


def _write(res: dict[str, Any]) -> None:
    write_results("edge" + ("_quick" if res["quick"] else ""), res, "Edge and CPU deployment",
                  lambda: _markdown(res), res["machine"])


def _markdown(res: dict[str, Any]) -> str:
    rows = [{"cores": k, "ORT threads": p["ort_threads"], "client": p["client_cpu"],
             "text p50 ms": p["text"].get("p50_ms"), "text p99 ms": p["text"].get("p99_ms"),
             "photo p50 ms": p["photo"].get("p50_ms"), "photo p99 ms": p["photo"].get("p99_ms"),
             "text qps, 8 clients": p["text_8_clients_qps"]} for k, p in res["pinned"].items()]
    venvs = [{"install": f"kuamo[{e}]", **{k: v for k, v in d.items() if k != "largest"}, "largest (MB)": d.get(
        "largest")} for e, d in res["venvs"].items()] if "skipped" not in res["venvs"] else []
    cs = res["cold_start"]
    return ("## Targets\n\n" + markdown_table([{"metric": k, **v} for k, v in res["targets"].items()], floatfmt=".1f")
            + f"\n## Bundle\n\n`kuamo bundle`: {res['bundle']['mb']} MB (the export it came from: "
            f"{res['bundle']['export_mb']} MB); served {res['bundle']['served']}.\n"
            + "\n## Serve-only installs\n\n" + (markdown_table(venvs, floatfmt=".1f") if venvs else
                                               f"{res['venvs'].get('skipped')}\n")
            + f"\n## Cold start and memory ({res['catalog']})\n\n`kuamo serve` from the bundle to SERVING: "
            f"{cs['to_serving_s']} s (median {cs['median_s']:.2f}); RSS idle {cs['idle_rss_mib']:.0f} MiB, after "
            f"{cs['load']} {cs['loaded_rss_mib']:.0f} MiB.\n"
            + "\n## Pinned cores\n\nServer pinned with taskset semantics, result cache off (the 8-client load "
              "repeats the 300 texts).\n\n" + markdown_table(rows, floatfmt=".1f")
            + "\nReproduce: `kuamo bench edge` (or `python -m kuamo.benchmarks.edge`).\n")


def main() -> None:
    quick_models_main(run, __doc__)


if __name__ == "__main__":
    main()
