"""Text tokenizer benchmark (issue 21): HF tokenizers vs the compact Unigram tokenizer on the e5 tokenizer.json.

    python -m kuamo.benchmarks.tokenizer [--models models/default] [--rounds 3] [--threads 2]

Load cost in fresh processes (RSS added by the load, its peak, wall time; alternating, median of rounds),
the compact one both parsing tokenizer.json and from its derived copy (engine/unigram_cache.py);
tokenization per call for batches of 32 real titles and single queries, and TextEncoder.encode texts/s at
batch 1 and 32, HF and compact interleaved in one process so machine noise hits both alike. Writes
benchmarks/results/tokenizer.json and tokenizer.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from kuamo.benchmarks.common import machine_info, markdown_table, write_json, write_markdown
from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.config import EncoderConfig, SessionConfig
from kuamo.engine.encoders import TextEncoder
from kuamo.engine.text_tokenizer import CompactUnigramTokenizer, HFTextTokenizer
from kuamo.export.samples import DEFAULT_FASHION_DIR

_LOAD_PROBE = """
import sys, time
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
from kuamo.engine.text_tokenizer import CompactUnigramTokenizer, HFTextTokenizer
kind, path = sys.argv[1], sys.argv[2]
before = status("VmRSS")
t0 = time.perf_counter()
tok = (HFTextTokenizer if kind == "hf" else CompactUnigramTokenizer.from_file)(path, 512)
tok.encode_ids("query: warm up")
print(time.perf_counter() - t0, status("VmRSS") - before, status("VmHWM") - before, status("VmRSS"))
"""


def load_cost(tokenizer_path: Path, rounds: int) -> list[dict]:
    """HF, compact parsing tokenizer.json (cache off) and compact from its derived copy, each in a fresh process."""
    with tempfile.TemporaryDirectory() as cache:
        kinds = {"hf": ("hf", "off"), "compact, from tokenizer.json": ("compact", "off"),
                 "compact, from derived copy": ("compact", cache)}

        def probe(kind: str, cache_dir: str) -> list[float]:
            env = {**os.environ, "KUAMO_TOKENIZER_CACHE": cache_dir}
            out = subprocess.run([sys.executable, "-c", _LOAD_PROBE, kind, str(tokenizer_path)], check=True,
                                 capture_output=True, text=True, env=env).stdout.split()
            return [float(x) for x in out]

        probe("compact", cache)  # writes the copy
        runs: dict[str, list[list[float]]] = {name: [] for name in kinds}
        for _ in range(rounds):
            for name, args in kinds.items():  # alternate, so drift in machine load hits all alike
                runs[name].append(probe(*args))
    keys = ("load_s", "rss_added_mib", "peak_added_mib", "process_rss_mib")
    return [{"tokenizer": name, **{k: statistics.median(r[i] for r in rs) for i, k in enumerate(keys)},
             "rounds": len(rs)} for name, rs in runs.items()]


def _interleaved(fns: dict[str, Callable[[Sequence[str]], object]], chunks: list[list[str]]) -> dict[str, float]:
    """Mean seconds per call of each fn over the same chunks, alternating fns call by call."""
    totals = dict.fromkeys(fns, 0.0)
    for fn in fns.values():
        fn(chunks[0])  # warm-up
    for chunk in chunks:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(chunk)
            totals[name] += time.perf_counter() - t0
    return {name: total / len(chunks) for name, total in totals.items()}


def tokenize_speed(tokenizer_path: Path, titles: list[str]) -> list[dict]:
    hf = HFTextTokenizer(tokenizer_path, 512)
    cached = CompactUnigramTokenizer.from_file(tokenizer_path, 512)
    uncached = CompactUnigramTokenizer.from_file(tokenizer_path, 512)
    uncached.vocab.encode_word = uncached.vocab.segment
    fns = {"hf": hf.encode_batch_ids, "compact (word cache)": cached.encode_batch_ids,
           "compact (no cache)": uncached.encode_batch_ids}
    texts = ["passage: " + t for t in titles]
    rows = []
    queries = ["query: " + t for t in titles[:3000]]
    for label, batch, items in (("32 titles", 32, texts[:32 * 300]), ("1 query", 1, queries)):
        # the cached tokenizer first sees these texts here: its hit rate is the catalog's own repetition
        per_call = _interleaved(fns, [items[i:i + batch] for i in range(0, len(items), batch)])
        rows += [{"call": label, "tokenizer": name, "ms_per_call": s * 1e3, "texts_per_s": batch / s,
                  "vs_hf": per_call["hf"] / s} for name, s in per_call.items()]
    return rows


def encode_speed(model_dir: Path, titles: list[str], threads: int) -> list[dict]:
    cfg = EncoderConfig(session=SessionConfig(intra_op_threads=threads))
    compact = TextEncoder(ModelArtifacts(model_dir), cfg)
    hf = TextEncoder(ModelArtifacts(model_dir), cfg)
    hf.tokenizer = HFTextTokenizer(hf.tokenizer_path, hf.max_length)
    assert isinstance(compact.tokenizer, CompactUnigramTokenizer)
    rows = []
    for batch, n in ((1, 300), (32, 32 * 25)):
        fns = {"hf": lambda c: hf.encode(c, kind="query"), "compact": lambda c: compact.encode(c, kind="query")}
        per_call = _interleaved(fns, [titles[i:i + batch] for i in range(0, n, batch)])
        rows += [{"batch": batch, "tokenizer": name, "ms_per_call": s * 1e3, "texts_per_s": batch / s,
                  "vs_hf": per_call["hf"] / s} for name, s in per_call.items()]
    return rows


def run(model_dir: Path, fashion_dir: Path, rounds: int, threads: int) -> dict:
    tokenizer_path = model_dir / "tokenizer.json"
    # in-process loads write their derived copy to a throwaway folder unless a cache is configured
    os.environ.setdefault("KUAMO_TOKENIZER_CACHE", tempfile.mkdtemp(prefix="kuamo-tokenizer-"))
    with open(fashion_dir / "products.csv", newline="", encoding="utf-8") as f:
        titles = [r["productDisplayName"] for r in csv.DictReader(f) if r.get("productDisplayName")]
    result = {"machine": machine_info(), "load": load_cost(tokenizer_path, rounds),
              "tokenize": tokenize_speed(tokenizer_path, titles), "encode": encode_speed(model_dir, titles, threads)}
    write_json("tokenizer", result)
    cpu = result["machine"]["cpu"]
    md = [f"CPU: {cpu['model']} (avx512_vnni: {cpu['isa'].get('avx512_vnni')}), shared with other work.\n",
          "## Load (fresh process each, median)\n", markdown_table(result["load"]),
          "\n## Tokenization (same run, interleaved)\n", markdown_table(result["tokenize"]),
          f"\n## TextEncoder.encode, INT8, {threads} threads (same run, interleaved)\n",
          markdown_table(result["encode"])]
    write_markdown("tokenizer", "Text tokenizer: HF tokenizers vs compact Unigram", "\n".join(md),
                   result["machine"])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=Path(os.environ.get("KUAMO_MODELS", "models/default")))
    ap.add_argument("--fashion", type=Path, default=DEFAULT_FASHION_DIR)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(json.dumps(run(a.models, a.fashion, a.rounds, a.threads), indent=1, default=float))


if __name__ == "__main__":
    main()
