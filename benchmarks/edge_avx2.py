"""kuamo on an AVX2-only CPU (`python -m kuamo.benchmarks.edge_avx2 [--quick]`), emulated on this machine.

Runs `kuamo export` and `kuamo serve` inside benchmarks/avx2_only.py's mode (ONNX Runtime, numpy and faiss
see no AVX-512 and no VNNI and take their AVX2 kernels; kuamo's CPU check reads flags without them) and
natively, side by side in one run:
- the export's own choice: which INT8 image scheme it served, its gate and speed (manifest);
- the image tower, FP32 vs INT8 photos/s at batch 1 and 8 (the export's timing, image_int8.items_per_second:
  2 threads, no spinning, alternating runs; median of rounds), and the text tower's texts/s at batch 1 / 32 /
  64 (to set this core against a real AVX2-only CPU's: the issue's AMD EPYC gave 129 / 216 / 231);
- the served embeddings of the same photos and titles inside the mode and natively (7-bit weights give the same
  integer sums; FP32 kernels such as Softmax differ in the last bit, which can flip a rounding at the next
  quantisation);
- one client through gRPC: text and photo query latency, the server inside the mode and natively.
The core is this machine's, so absolute times are a newer core's running AVX2 code; ratios carry over better.

Results: benchmarks/results/edge_avx2.json + .md (edge_avx2_quick.* with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kuamo.benchmarks.common import machine_info, markdown_table, write_results
from kuamo.export.gate import cosine_rows

TARGETS = {"image_int8_vs_fp32_batch1": 1.4, "image_int8_vs_fp32_batch8": 1.4, "text_p50_ms": 10.0,
           "photo_p50_ms": 20.0}


def tower_speed(models: Path, rounds: int, seconds: float, out: Path) -> dict[str, Any]:
    """In this process (inside the mode or not): image FP32 vs INT8 and text INT8 speed; writes the served
    embeddings of 64 gate photos to `out` and of 64 titles beside it (.text.npy) for the cross-check."""
    from kuamo.benchmarks.server import _text_tower_ceiling, served_text_encoder
    from kuamo.engine.cpu_features import cpu_flags
    from kuamo.engine.imaging import ImagePreprocess
    from kuamo.engine.session import create_session
    from kuamo.export.image_int8 import items_per_second
    from kuamo.export.image_tower import gate_and_calibration_photos
    from kuamo.export.samples import DEFAULT_FASHION_DIR, load_fashion

    x, _ = gate_and_calibration_photos(64, 8, ImagePreprocess())
    fp32, int8 = models / "image.onnx", models / "image.int8.onnx"
    np.save(out, create_session(int8).run(["embedding"], {"pixel_values": x})[0])
    # the export's own timing (2 threads, no spinning, alternating runs), repeated: the median of the rounds
    per_round = [items_per_second(fp32, int8, x, "embedding", seconds=seconds) for _ in range(rounds)]
    image: dict[str, Any] = {}
    for b in ("batch1", "batch8"):
        f = statistics.median(r[b]["fp32_items_per_s"] for r in per_round)
        i = statistics.median(r[b]["int8_items_per_s"] for r in per_round)
        image[b] = {"fp32_photos_per_s": round(f, 1), "int8_photos_per_s": round(i, 1), "speedup": round(i / f, 3),
                    "speedup_per_round": [r[b]["speedup"] for r in per_round]}
    texts = [item.title for item in load_fashion(DEFAULT_FASHION_DIR)[:512]]  # real product titles
    text = _text_tower_ceiling(models, texts, seconds)
    np.save(out.with_suffix(".text.npy"), served_text_encoder(models).encode(texts[:64]))
    return {"cpu_flags": cpu_flags(), "image": image, "text_texts_per_s": text}


def _agreement(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    return {"items": len(a), "max_abs_diff": float(np.abs(a - b).max()), "min_cosine": float(cosine_rows(a, b).min())}


def _grpc(models: Path, data: Path, catalog: Path, n_text: int, n_image: int, mode: Any | None) -> dict[str, Any]:
    from kuamo.benchmarks.loadgen import search_requests, sequential
    from kuamo.benchmarks.serving import start_server, stop_server

    text_reqs, image_reqs, _ = search_requests(catalog, n_text, n_image)
    s = start_server(models, data, wrapper=mode.command([]) if mode else (), env=mode.env() if mode else None)
    try:
        text = asyncio.run(sequential(s.target, text_reqs)).summary()
        photo = asyncio.run(sequential(s.target, image_reqs)).summary()
    finally:
        stop_server(s)
    return {"text": text["latency"], "photo": photo["latency"]}


def run(quick: bool = False) -> dict[str, Any]:
    from kuamo.benchmarks.avx2_only import check, prepare
    from kuamo.benchmarks.bench_catalog import bench_catalog

    mode = prepare()
    res: dict[str, Any] = {"suite": "edge_avx2", "quick": quick, "machine": machine_info(),
                           "mode": {"seen_inside": check(mode), "instructions_patched": mode.patched}}
    rounds, seconds = (2, 2.0) if quick else (5, 4.0)
    with tempfile.TemporaryDirectory(prefix="kuamo-avx2-") as tmp_name:
        tmp = Path(tmp_name)
        models = tmp / "models" / "avx2"
        print("edge_avx2: kuamo export inside the AVX2-only mode", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        mode.run([sys.executable, "-m", "kuamo.cli", "export", "--out", str(models)], check=True,
                 stdout=subprocess.DEVNULL)
        manifest = json.loads((models / "manifest.json").read_text(encoding="utf-8"))
        q = manifest["towers"]["image"]["quantization"]
        res["export"] = {"seconds": round(time.perf_counter() - t0, 1), "cpu": q["cpu"], "chosen": q["chosen"],
                         "reason": q["reason"], "gate": q.get("gate"), "tried": q["tried"],
                         "image_serve": manifest["towers"]["image"]["serve"],
                         "text_serve": manifest["towers"]["text"]["serve"],
                         "text_gate": manifest["towers"]["text"].get("serve_reason")}
        print("edge_avx2: tower speed inside the mode and natively", file=sys.stderr, flush=True)
        speed_cmd = [sys.executable, "-m", "kuamo.benchmarks.edge_avx2", "--tower-speed", str(models),
                     "--rounds", str(rounds), "--seconds", str(seconds)]
        inside = mode.run([*speed_cmd, "--embeddings", str(tmp / "avx2.npy")], check=True,
                          capture_output=True, text=True)
        native = subprocess.run([*speed_cmd, "--embeddings", str(tmp / "native.npy")], check=True,
                                capture_output=True, text=True)
        res["towers"] = {"avx2_only": json.loads(inside.stdout.splitlines()[-1]),
                         "native": json.loads(native.stdout.splitlines()[-1])}
        res["int8_avx2_vs_native"] = {
            "image": _agreement(np.load(tmp / "avx2.npy"), np.load(tmp / "native.npy")),
            "text": _agreement(np.load(tmp / "avx2.text.npy"), np.load(tmp / "native.text.npy"))}
        print("edge_avx2: gRPC, one client", file=sys.stderr, flush=True)
        catalog, data = bench_catalog(True, models, data=tmp / "data") if quick else \
            bench_catalog(False, models, data=tmp / "data")
        n_text, n_image = (60, 20) if quick else (300, 80)
        res["catalog"] = str(catalog)
        res["grpc"] = {"avx2_only": _grpc(models, data, catalog, n_text, n_image, mode),
                       "native": _grpc(models, data, catalog, n_text, n_image, None)}
    img = res["towers"]["avx2_only"]["image"]
    measured = {"image_int8_vs_fp32_batch1": img["batch1"]["speedup"],
                "image_int8_vs_fp32_batch8": img["batch8"]["speedup"],
                "text_p50_ms": res["grpc"]["avx2_only"]["text"]["p50_ms"],
                "photo_p50_ms": res["grpc"]["avx2_only"]["photo"]["p50_ms"]}
    res["targets"] = {k: {"target": (">= " if k.startswith("image") else "<= ") + str(v), "measured": measured[k],
                          "met": measured[k] >= v if k.startswith("image") else measured[k] <= v}
                      for k, v in TARGETS.items()}
    res["targets"]["image_int8_gate_on_avx2"] = {"target": "passed", "measured": (res["export"]["gate"] or {}).get(
        "passed"), "met": bool(res["export"]["chosen"]) and bool((res["export"]["gate"] or {}).get("passed"))}
    write_results("edge_avx2" + ("_quick" if quick else ""), res, "kuamo on an AVX2-only CPU (emulated)",
                  lambda: _markdown(res), res["machine"])
    return res


def _markdown(res: dict[str, Any]) -> str:
    e, t, g = res["export"], res["towers"], res["grpc"]
    towers = [{"where": w, **{f"b{b} FP32/s": t[w]["image"][f"batch{b}"]["fp32_photos_per_s"] for b in (1, 8)},
               **{f"b{b} INT8/s": t[w]["image"][f"batch{b}"]["int8_photos_per_s"] for b in (1, 8)},
               **{f"b{b} x": t[w]["image"][f"batch{b}"]["speedup"] for b in (1, 8)},
               **{f"text b{b}/s": v["texts_per_s"] for b, v in t[w]["text_texts_per_s"].items()}} for w in t]
    tried = [{"scheme": x["scheme"], "cos mean": x["cosine_mean"], "cos min": x["cosine_min"], "passed": x["passed"],
              "b1 x": x.get("speedup_batch1"), "b8 x": x.get("speedup_batch8")} for x in e["tried"]]
    grpc = [{"server": w, "text p50 ms": v["text"].get("p50_ms"), "text p99 ms": v["text"].get("p99_ms"),
             "photo p50 ms": v["photo"].get("p50_ms"), "photo p99 ms": v["photo"].get("p99_ms")} for w, v in g.items()]
    agree = res["int8_avx2_vs_native"]
    return ("How: `python -m kuamo.benchmarks.avx2_only` hides AVX-512/VNNI from ONNX Runtime (cpuid trapped), numpy, "
            "faiss and /proc/cpuinfo; inside it: " + json.dumps(res["mode"]["seen_inside"]) + ". The core is this "
            "machine's: absolute times are a newer core running AVX2 code (compare the text tower's texts/s with "
            "an AVX2-only AMD EPYC's 129 / 216 / 231 at batch 1 / 32 / 64).\n\n## Targets (inside the mode)\n\n"
            + markdown_table([{"metric": k, **v} for k, v in res["targets"].items()], floatfmt=".3f")
            + f"\n## The export inside the mode ({e['seconds']} s)\n\nCPU recorded: {e['cpu']}; image serves "
            f"{e['image_serve']} ({e['reason']}); text serves {e['text_serve']} ({e['text_gate']}).\n\n"
            + markdown_table(tried, floatfmt=".4f")
            + "\n## Towers (2 threads, no spinning, alternating, median of rounds)\n\n"
            + markdown_table(towers, floatfmt=".2f")
            + "\nServed embeddings inside the mode vs natively: " + "; ".join(
                f"{k} ({v['items']} items) max |diff| {v['max_abs_diff']:.2e}, min cosine {v['min_cosine']:.7f}"
                for k, v in agree.items()) + ".\n\n"
            f"## One client through gRPC ({res['catalog']})\n\n"
            + markdown_table(grpc, floatfmt=".2f")
            + "\nReproduce: `python -m kuamo.benchmarks.edge_avx2` (`--quick`: sample catalog, fewer rounds).\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="sample catalog, fewer rounds")
    ap.add_argument("--tower-speed", type=Path, help=argparse.SUPPRESS)  # the child run, inside the mode or not
    ap.add_argument("--rounds", type=int, default=5, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=4.0, help=argparse.SUPPRESS)
    ap.add_argument("--embeddings", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.tower_speed:
        print(json.dumps(tower_speed(a.tower_speed, a.rounds, a.seconds, a.embeddings)))
        return
    run(quick=a.quick)


if __name__ == "__main__":
    main()
