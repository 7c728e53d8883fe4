"""Image tower export: EfficientNet-Lite0 -> ONNX (pooled features + logits, and an aligned `embedding`
output when an alignment head is given), parity-checked against PyTorch, INT8 chosen by measurement."""

from __future__ import annotations

import copy
import random
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from kuamo.engine.imaging import ImagePreprocess, decode_image, preprocess
from kuamo.engine.session import create_session
from kuamo.engine.trained_products import KEY_RULE, TRAINED_FILE
from kuamo.engine.zero_shot_blend import CENTROIDS_FILE, ZERO_SHOT_FILE
from kuamo.export.effnet_lite import load_pretrained
from kuamo.export.gate import parity_stats
from kuamo.export.image_int8 import choose_int8
from kuamo.export.invariance import batch_invariance
from kuamo.export.onnx_info import cap_ir_version, describe
from kuamo.export.pad_folding import fold_pads_into_convs
from kuamo.export.samples import FashionItem, sample_fashion
from kuamo.export.tuned_backbone import apply_delta, delta_digest

Progress = Callable[[str], None]
OPSET = 17
PARITY_SEED = 4321
# Disjoint sets of real photos. The INT8 gate's minimum is taken over 1,024 photos: over 256 it was a draw
# (benchmarks/int8_parity.py: the AVX2 7-bit scheme that passed on its 256 had 112 of the 20,873 fashion
# photos below the 0.97 bound, and 77% of random 256-photo samples would have failed it). PyTorch parity
# (exact to 1e-6 every time) and batch invariance (one run per photo) stay on the first 256 gate photos.
GATE_PHOTOS, CALIBRATION_PHOTOS, CHECK_PHOTOS = 1024, 128, 256


class ImageTower(nn.Module):
    """Backbone plus optional heads: outputs (embedding?, features, logits)."""

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    @property
    def output_names(self) -> list[str]:
        return (["embedding"] if self.head is not None else []) + ["features", "logits"]

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats, logits = self.backbone(pixel_values)
        if self.head is None:
            return feats, logits
        emb = nn.functional.normalize(self.head(feats, logits), p=2.0, dim=1)
        return emb, feats, logits


def exported_torch_tower(model_dir: Path) -> ImageTower:
    """The PyTorch network a model directory's image tower was exported from (the reference for parity):
    pretrained backbone plus the fine-tuned delta the export carries, and the head it fused."""
    from kuamo.engine.artifacts import ModelArtifacts
    from kuamo.export.align import tuned_base
    from kuamo.export.align_head import AlignHead, default_head_path

    spec = ModelArtifacts(model_dir).towers["image"]
    backbone, _ = load_pretrained()
    apply_delta(backbone, tuned_base(model_dir))
    head = None
    if spec["embedding_output"] == "embedding":
        exported_from = spec.get("alignment", {}).get("head_path")
        head = AlignHead.load(exported_from if exported_from and Path(exported_from).is_file()
                              else default_head_path())
    return ImageTower(backbone, head).eval()


def photo_batch(seed: int, n: int, pre: ImagePreprocess) -> np.ndarray:
    """n real fashion photos, decoded and preprocessed exactly as the runtime does."""
    return load_photos(sample_fashion(n, seed=seed), pre)


def load_photos(items: Sequence[FashionItem | Path], pre: ImagePreprocess) -> np.ndarray:
    """The photos' JPEG bytes through the runtime's own decode_image + preprocess."""
    paths = [it if isinstance(it, Path) else it.image_path for it in items]
    return np.stack([preprocess(decode_image(path.read_bytes()), pre) for path in paths])


def gate_and_calibration_photos(n_gate: int, n_calibration: int, pre: ImagePreprocess, seed: int = PARITY_SEED,
                                photos: Sequence[Path] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint sets of real photos: one sample split in two, so no gate photo is calibrated on. From
    `photos` (the catalog a head was adapted to) when given, else from the fashion catalog. A catalog with
    fewer photos than both sets gives a third of them to calibration and the rest to the gate (the gate then
    says when they are too few for it)."""
    if photos is None:
        items: list = [it.image_path for it in sample_fashion(n_gate + n_calibration, seed=seed)]
    else:
        items = random.Random(seed).sample(list(photos), min(len(photos), n_gate + n_calibration))
    n_cal = min(n_calibration, len(items) // 3) if len(items) < n_gate + n_calibration else n_calibration
    cut = len(items) - n_cal
    calibration = load_photos(items[cut:], pre) if n_cal else np.empty((0, 3, pre.size, pre.size), np.float32)
    return load_photos(items[:cut], pre), calibration


def export_onnx(tower: ImageTower, path: Path, size: int) -> None:
    """TorchScript exporter (dynamo=False): dynamic batch, fixed size x size input."""
    dummy = torch.zeros(2, 3, size, size)
    names = tower.output_names
    with torch.no_grad(), warnings.catch_warnings():
        # SAME padding turns the traced spatial size into constants on purpose (the input size is fixed)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # F.pad's Slice; ORT folds it
        torch.onnx.export(tower, (dummy,), str(path), input_names=["pixel_values"], output_names=names,
                          opset_version=OPSET, dynamo=False,
                          dynamic_axes={"pixel_values": {0: "batch"}, **{n: {0: "batch"} for n in names}})
    model = onnx.load(str(path))
    fold_pads_into_convs(model)  # SAME padding's Pads into the convs: the same outputs, 15-20% faster
    onnx.save(model, str(path))
    cap_ir_version(path)


def run_torch(tower: ImageTower, x: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    outs: dict[str, list[np.ndarray]] = {n: [] for n in tower.output_names}
    with torch.no_grad():
        for i in range(0, len(x), batch):
            for name, value in zip(tower.output_names, tower(torch.from_numpy(x[i: i + batch])), strict=True):
                outs[name].append(value.numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def run_onnx(path: Path, x: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    sess = create_session(path)
    names = [o.name for o in sess.get_outputs()]
    parts = [sess.run(names, {"pixel_values": x[i: i + batch]}) for i in range(0, len(x), batch)]
    return {n: np.concatenate([p[j] for p in parts]) for j, n in enumerate(names)}


def image_invariance(path: Path, x: np.ndarray, output: str) -> dict:
    """Each photo's `output` alone vs inside mixed batches of 2..64 (export/invariance.py)."""
    sess = create_session(path)

    def run(xs: list[np.ndarray]) -> np.ndarray:
        return sess.run([output], {"pixel_values": np.stack(xs)})[0]

    return {"photos": f"{len(x)} of the gate photos", **batch_invariance(run, list(x), rounds=1)}


def export_image_tower(out_dir: Path, *, progress: Progress = print, head: nn.Module | None = None,
                       head_card: dict | None = None, int8: bool = True,
                       backbone_delta: dict[str, np.ndarray] | None = None, portable_int8: bool = False,
                       photos: Sequence[Path] | None = None) -> dict:
    """Write image.onnx (+ image.int8.onnx when a scheme passes the gate and is faster here) into out_dir
    and return the manifest's towers["image"] spec. `head` (an nn.Module taking (features, logits)) adds
    an L2-normalised `embedding` output that becomes the tower's embedding; `backbone_delta` (from a head file
    made by fine-tuning, export/tuned_backbone.py) moves the pretrained backbone to the fine-tuned one; `photos`
    are the parity, gate and calibration photos (default: a sample of the fashion catalog)."""
    out_dir = Path(out_dir)
    fp32_path, int8_path = out_dir / "image.onnx", out_dir / "image.int8.onnx"
    int8_path.unlink(missing_ok=True)  # never leave an INT8 file from an earlier export beside this one
    pre = ImagePreprocess()
    t0 = time.perf_counter()
    progress("image: loading EfficientNet-Lite0 weights (strict, 296 tensors)")
    backbone, source = load_pretrained()
    if backbone_delta:
        moved = apply_delta(backbone, backbone_delta)
        source = {**source, "finetuned": {"tensors": moved, "delta_sha256": delta_digest(backbone_delta),
                                          "how": "int8 backbone delta stored in the alignment file"}}
        progress(f"image: applied the fine-tuned backbone delta ({moved} tensors)")
    tower = ImageTower(backbone, head).eval()
    progress("image: exporting FP32 ONNX (TorchScript exporter)")
    export_onnx(copy.deepcopy(tower), fp32_path, pre.size)

    # an FP32-only export has no gate and no calibration: it decodes only the photos parity and invariance read
    x, calibration = (gate_and_calibration_photos(GATE_PHOTOS, CALIBRATION_PHOTOS, pre, photos=photos) if int8
                      else gate_and_calibration_photos(CHECK_PHOTOS, 0, pre, photos=photos))
    progress(f"image: parity of ONNX FP32 against PyTorch on {min(len(x), CHECK_PHOTOS)} real photos")
    ref, got = run_torch(tower, x[:CHECK_PHOTOS]), run_onnx(fp32_path, x[:CHECK_PHOTOS])
    parity = {f"fp32_vs_torch_{name}": parity_stats(ref[name], got[name]) for name in tower.output_names}
    parity["fp32_vs_torch"] = parity["fp32_vs_torch_features"]

    embedding_output = "embedding" if head is not None else "features"
    spec: dict = {
        "files": {"fp32": fp32_path.name},
        "source": source, "preprocess": pre.to_dict(), "embedding_output": embedding_output,
        "dim": int(got[embedding_output].shape[1]),
        "outputs": {n: int(got[n].shape[1]) for n in tower.output_names},
        "normalize": "l2 inside the graph for `embedding`; raw pooled `features`",
        "max_batch": 32,
    }
    if head_card is not None:
        spec["alignment"] = head_card
    zero_shot = out_dir / ZERO_SHOT_FILE
    zero_shot.unlink(missing_ok=True)
    if head is not None and hasattr(head, "class_text"):
        # The zero-shot class map beside the graph, so an engine can move a catalog's image vectors toward
        # it (engine/zero_shot_blend.py): normalise(softmax(logits) @ map) is the head's own zero-shot term.
        np.save(zero_shot, head.class_text.detach().cpu().numpy().astype(np.float16))
        spec["zero_shot"] = {"file": ZERO_SHOT_FILE, "from_output": "logits",
                             "head_alpha": round(float(head.alpha), 4)}
    centroids_path = out_dir / CENTROIDS_FILE
    centroids_path.unlink(missing_ok=True)
    centroids = getattr(head, "centroids", None)
    if centroids is not None:  # written by `kuamo align` (export/centroids.py); older head files carry none
        np.save(centroids_path, np.asarray(centroids).astype(np.float16))
        spec["centroids"] = {"file": CENTROIDS_FILE, "from_output": "features", "k": len(centroids)}
        if getattr(head, "near_cosine", None) is not None:
            spec["centroids"]["near_cosine"] = round(float(head.near_cosine), 4)
    trained_path = out_dir / TRAINED_FILE
    trained_path.unlink(missing_ok=True)
    trained = getattr(head, "trained_keys", None)
    if trained is not None:  # left out of the blend chooser's sample (engine/trained_products.py)
        np.save(trained_path, np.asarray(trained, dtype=np.uint64))
        spec["trained_on"] = {"file": TRAINED_FILE, "products": len(trained), "key": KEY_RULE}

    serve, reason, quant = "fp32", "INT8 not attempted (--no-int8)", {}
    if int8:
        progress("image: choosing an INT8 scheme (accuracy gate + speed, measured on this CPU)")
        quant = choose_int8(fp32_path, int8_path, calibration=calibration, gate_inputs=x, portable=portable_int8,
                            output=embedding_output, progress=progress)
        if quant.get("chosen"):
            spec["files"]["int8"] = int8_path.name
            serve, reason = "int8", quant["reason"]
            parity["int8_vs_fp32"] = quant["gate"]
        else:
            reason = quant["reason"]
            parity["int8_vs_fp32"] = quant.get("gate", {"passed": False, "reason": reason})
    progress(f"image: batch invariance of the served {serve} graph (each photo alone vs inside mixed batches)")
    spec["batch_invariance"] = {serve: image_invariance(out_dir / spec["files"][serve], x[:CHECK_PHOTOS],
                                                        embedding_output)}
    spec.update({"serve": serve, "serve_reason": reason, "quantization": quant, "parity": parity,
                 "onnx": {"fp32": describe(fp32_path),
                          **({"int8": describe(int8_path)} if "int8" in spec["files"] else {})},
                 "export_seconds": round(time.perf_counter() - t0, 1)})
    progress(f"image: FP32 vs torch cos min {parity['fp32_vs_torch']['cosine_min']:.6f}; serving {serve} "
             f"({reason})")
    return spec
