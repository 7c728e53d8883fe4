"""`kuamo export --clip PATH`: a local Hugging Face CLIP or SigLIP checkpoint as two separate towers
(text and vision, each with its projection, embeddings L2-normalised inside the graph) in the same
artifact format as the default towers, so the runtime serves it unchanged."""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kuamo.engine.artifacts import TowerArtifact
from kuamo.engine.config import EncoderConfig
from kuamo.engine.encoders import ImageEncoder, TextEncoder
from kuamo.engine.imaging import ImagePreprocess
from kuamo.export.gate import compare_models, parity_stats
from kuamo.export.image_tower import gate_and_calibration_photos, image_invariance
from kuamo.export.onnx_info import cap_ir_version, describe
from kuamo.export.static_activations import quantize_batch_invariant
from kuamo.export.text_tower import calibration_feeds, calibration_texts, gate_texts, text_invariance

Progress = Callable[[str], None]
OPSET = 17
GATE_SAMPLES = 256
CALIBRATION_PHOTOS, INVARIANCE_PHOTOS = 64, 200


class _TextTower(nn.Module):
    """get_text_features (pooled EOS/last token -> projection) -> L2 normalised."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        emb = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return nn.functional.normalize(emb, p=2.0, dim=1)


class _VisionTower(nn.Module):
    """get_image_features (pooled -> projection) -> L2 normalised."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        emb = self.model.get_image_features(pixel_values=pixel_values)
        return nn.functional.normalize(emb, p=2.0, dim=1)


def _load(checkpoint: Path) -> tuple[str, nn.Module, dict]:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(checkpoint), local_files_only=True)
    if cfg.model_type == "clip":
        from transformers import CLIPModel as Model

        dim = cfg.projection_dim
    elif cfg.model_type == "siglip":
        from transformers import SiglipModel as Model

        dim = cfg.text_config.hidden_size
    else:
        raise ValueError(f"{checkpoint}: model_type {cfg.model_type!r} is neither 'clip' nor 'siglip'")
    model = Model.from_pretrained(str(checkpoint), local_files_only=True).eval()
    summary = {"model_type": cfg.model_type, "embedding_dim": dim,
               "text": {"hidden": cfg.text_config.hidden_size, "layers": cfg.text_config.num_hidden_layers,
                        "max_positions": cfg.text_config.max_position_embeddings},
               "vision": {"hidden": cfg.vision_config.hidden_size, "layers": cfg.vision_config.num_hidden_layers,
                          "image_size": cfg.vision_config.image_size, "patch": cfg.vision_config.patch_size}}
    return cfg.model_type, model, summary


def _tokenizer(checkpoint: Path, dest: Path) -> None:
    """tokenizer.json from the checkpoint, or built offline from CLIP's vocab.json + merges.txt."""
    if (checkpoint / "tokenizer.json").is_file():
        shutil.copyfile(checkpoint / "tokenizer.json", dest)
        return
    if (checkpoint / "vocab.json").is_file() and (checkpoint / "merges.txt").is_file():
        from transformers import CLIPTokenizerFast

        tok = CLIPTokenizerFast(vocab_file=str(checkpoint / "vocab.json"),
                                merges_file=str(checkpoint / "merges.txt"))
        tok.backend_tokenizer.save(str(dest))
        return
    raise FileNotFoundError(
        f"{checkpoint} has no tokenizer.json (nor CLIP's vocab.json + merges.txt); save the fast tokenizer "
        "with `tokenizer.save_pretrained(PATH)` next to the weights")


def _preprocess(checkpoint: Path, image_size: int, kind: str) -> ImagePreprocess:
    clip_mean, clip_std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    mean, std = (clip_mean, clip_std) if kind == "clip" else ((0.5,) * 3, (0.5,) * 3)
    cfg_path = checkpoint / "preprocessor_config.json"
    if cfg_path.is_file():
        pc = json.loads(cfg_path.read_text())
        mean, std = tuple(pc.get("image_mean", mean)), tuple(pc.get("image_std", std))
    return ImagePreprocess(size=image_size, mean=mean, std=std, interpolation="bicubic", fit="crop")


def export_clip_towers(checkpoint: Path, out_dir: Path, *, progress: Progress = print) -> dict:
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    t0 = time.perf_counter()
    progress(f"clip: loading {checkpoint} (local files only)")
    kind, model, summary = _load(checkpoint)
    tok_path = out_dir / "tokenizer.json"
    _tokenizer(checkpoint, tok_path)
    tcfg = model.config.text_config
    pad_id = tcfg.pad_token_id if tcfg.pad_token_id is not None else 0
    source = {"kind": kind, "path": str(checkpoint.resolve()), **summary}
    dim = summary["embedding_dim"]
    rng = np.random.default_rng(0)

    progress("clip: exporting the text tower")
    text = _TextTower(model).eval()
    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, pad_id, pad_id]], dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(copy.deepcopy(text), (ids, (ids != pad_id).long()), str(out_dir / "text.onnx"),
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          opset_version=OPSET, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"}, "embedding": {0: "batch"}})
    cap_ir_version(out_dir / "text.onnx")
    text_spec: dict = {"files": {"fp32": "text.onnx"}, "source": source, "dim": dim,
                       "pooling": "eos" if kind == "clip" else "pooler", "normalize": "l2",
                       "max_length": int(tcfg.max_position_embeddings), "prefixes": {"query": "", "document": ""},
                       "tokenizer": tok_path.name, "pad_id": int(pad_id), "embedding_output": "embedding",
                       "max_batch": 32}
    enc = TextEncoder.from_tower(TowerArtifact("text", out_dir / "text.onnx", "fp32", text_spec), tok_path)
    probe = ["a photo of a red dress", "shoes", "a watch with a steel strap", "bag"]
    feeds = enc.feeds(enc.tokenize(probe, "query"))
    with torch.no_grad():
        ref = text(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])).numpy()
    text_parity = {"fp32_vs_torch": parity_stats(ref, enc.encode_ids(enc.tokenize(probe, "query")))}

    progress("clip: exporting the vision tower")
    pre = _preprocess(checkpoint, summary["vision"]["image_size"], kind)
    vision = _VisionTower(model).eval()
    dummy = torch.zeros(2, 3, pre.size, pre.size)
    with torch.no_grad():
        torch.onnx.export(copy.deepcopy(vision), (dummy,), str(out_dir / "image.onnx"),
                          input_names=["pixel_values"], output_names=["embedding"], opset_version=OPSET,
                          dynamo=False, dynamic_axes={"pixel_values": {0: "batch"}, "embedding": {0: "batch"}})
    cap_ir_version(out_dir / "image.onnx")
    image_spec: dict = {"files": {"fp32": "image.onnx"}, "source": source, "dim": dim, "embedding_output": "embedding",
                        "outputs": {"embedding": dim}, "preprocess": pre.to_dict(), "normalize": "l2",
                        "max_batch": 32}
    pixels = rng.standard_normal((4, 3, pre.size, pre.size)).astype(np.float32)
    img_enc = ImageEncoder.from_tower(TowerArtifact("image", out_dir / "image.onnx", "fp32", image_spec),
                                      EncoderConfig())
    with torch.no_grad():
        vref = vision(torch.from_numpy(pixels)).numpy()
    image_parity = {"fp32_vs_torch": parity_stats(vref, img_enc.run({"pixel_values": pixels})["embedding"])}

    # INT8 for both towers (activation scales calibrated on real texts and photos, so vectors do not depend
    # on the batch), gated on inputs shaped like real use (token sequences / image tensors)
    vocab = int(tcfg.vocab_size)
    photos, calib_photos = gate_and_calibration_photos(INVARIANCE_PHOTOS, CALIBRATION_PHOTOS, pre)
    calibration = {"text": calibration_feeds(enc, calibration_texts()),
                   "image": [{"pixel_values": calib_photos[i: i + 16]} for i in range(0, len(calib_photos), 16)]}
    for name, spec, parity, batches in (
        ("text", text_spec, text_parity,
         [enc.feeds([[int(t) for t in rng.integers(3, vocab, size=int(rng.integers(3, 16)))]
                     for _ in range(32)]) for _ in range(GATE_SAMPLES // 32)]),
        ("image", image_spec, image_parity,
         [{"pixel_values": rng.standard_normal((32, 3, pre.size, pre.size)).astype(np.float32)}
          for _ in range(GATE_SAMPLES // 32)]),
    ):
        progress(f"clip: INT8 {name} tower and its gate")
        int8_path = out_dir / f"{name}.int8.onnx"
        quant = quantize_batch_invariant(out_dir / f"{name}.onnx", int8_path, ["MatMul"], calibration[name])
        gate = compare_models(str(out_dir / f"{name}.onnx"), str(int8_path), batches, "embedding")
        parity["int8_vs_fp32"] = {"samples": "random token sequences / random image tensors", **gate.to_dict()}
        spec["files"]["int8"] = int8_path.name
        spec.update({"serve": "int8" if gate.passed else "fp32",
                     "serve_reason": "INT8 passed the accuracy gate" if gate.passed
                     else f"INT8 failed the gate: {gate.reason}",
                     "quantization": quant, "parity": parity,
                     "onnx": {"fp32": describe(out_dir / f"{name}.onnx"), "int8": describe(int8_path)}})
    served = TowerArtifact("text", out_dir / text_spec["files"][text_spec["serve"]], text_spec["serve"], text_spec)
    text_spec["batch_invariance"] = {text_spec["serve"]: text_invariance(
        TextEncoder.from_tower(served, tok_path), gate_texts())}
    image_spec["batch_invariance"] = {image_spec["serve"]: image_invariance(
        out_dir / image_spec["files"][image_spec["serve"]], photos, "embedding")}
    text_spec["export_seconds"] = image_spec["export_seconds"] = round(time.perf_counter() - t0, 1)
    return {"text": text_spec, "image": image_spec}
