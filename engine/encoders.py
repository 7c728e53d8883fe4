"""Runtime encoders over the exported ONNX towers: preprocess -> run -> postprocess, no torch.

Text and image share one shape (preprocess(items) -> feeds, run(feeds) -> outputs, postprocess) so the
batcher can drive either.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kuamo.engine.artifacts import ModelArtifacts, TowerArtifact
from kuamo.engine.config import EncoderConfig
from kuamo.engine.errors import ArtifactError, InvalidInput
from kuamo.engine.imaging import ImagePreprocess, decode_image, preprocess
from kuamo.engine.session import create_session
from kuamo.engine.text_tokenizer import TextTokenizer, load_text_tokenizer
from kuamo.engine.trained_products import TrainedProducts
from kuamo.engine.vectors import l2_normalize
from kuamo.engine.zero_shot_blend import ZeroShotMap, parse_near_cosine

TEXT_KINDS = ("query", "document")


class OnnxEncoder:
    """One ONNX session for one tower."""

    def __init__(self, tower: TowerArtifact, cfg: EncoderConfig) -> None:
        self.tower = tower
        self.cfg = cfg
        self.session = create_session(tower.model_path, cfg.session)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.embedding_output = tower.spec.get("embedding_output", self.output_names[0])
        if self.embedding_output not in self.output_names:
            raise ArtifactError(f"{tower.model_path.name} has no output {self.embedding_output!r}")

    @property
    def dim(self) -> int:
        return self.tower.dim

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs or [self.embedding_output])
        return dict(zip(names, self.session.run(names, feeds), strict=True))


class TextEncoder(OnnxEncoder):
    """Tokenizer + ONNX text tower. Callers say `kind="query"` or `kind="document"`; the E5 prefixes
    (or none, for models that have none) come from the manifest."""

    def __init__(self, artifacts: ModelArtifacts, cfg: EncoderConfig | None = None) -> None:
        cfg = cfg or EncoderConfig()
        tower = artifacts.tower("text", cfg.precision)
        self._setup(tower, artifacts.file(tower.spec.get("tokenizer", "tokenizer.json")), cfg)

    @classmethod
    def from_tower(cls, tower: TowerArtifact, tokenizer_path: Path, cfg: EncoderConfig | None = None) -> TextEncoder:
        """An encoder over explicit files, before any manifest exists (used by the exporter's checks)."""
        obj = cls.__new__(cls)
        obj._setup(tower, tokenizer_path, cfg or EncoderConfig())
        return obj

    def _setup(self, tower: TowerArtifact, tokenizer_path: Path, cfg: EncoderConfig) -> None:
        super().__init__(tower, cfg)
        spec = self.tower.spec
        self.prefixes: dict[str, str] = spec.get("prefixes", {"query": "", "document": ""})
        self.max_length = int(spec.get("max_length", 512))
        self.tokenizer_path = tokenizer_path
        # compact Unigram where the file allows (same ids, a fraction of HF's memory and load time)
        self.tokenizer: TextTokenizer = load_text_tokenizer(tokenizer_path, self.max_length)
        self.pad_id = int(spec.get("pad_id", 1))
        self.max_batch = int(spec.get("max_batch", 32))

    def validate(self, text: Any) -> str:
        if isinstance(text, bytes | bytearray):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"text is not valid UTF-8: {exc}", field="text") from exc
        if not isinstance(text, str):
            raise InvalidInput(f"text must be a string, got {type(text).__name__}", field="text")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates
            raise InvalidInput(f"text contains characters that are not valid Unicode: {exc}",
                               field="text") from exc
        if not text.strip():
            raise InvalidInput("text is empty", field="text")
        if len(text) > self.cfg.max_text_chars:
            raise InvalidInput(f"text has {len(text)} characters, above the limit of "
                               f"{self.cfg.max_text_chars}", field="text")
        return text

    def tokenize(self, texts: Sequence[Any], kind: str) -> list[list[int]]:
        if kind not in TEXT_KINDS:
            raise InvalidInput(f"kind must be one of {TEXT_KINDS}, got {kind!r}", field="kind")
        prefix = self.prefixes.get(kind, "")
        clean = [prefix + self.validate(t) for t in texts]
        return self.tokenizer.encode_batch_ids(clean)

    def feeds(self, ids: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """Right-padded input_ids/attention_mask for one batch."""
        width = max(len(x) for x in ids)
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feeds = {"input_ids": input_ids, "attention_mask": mask}
        return {k: v for k, v in feeds.items() if k in self.input_names}

    def encode_ids(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        return self.run(self.feeds(ids))[self.embedding_output].astype(np.float32, copy=False)

    def encode(self, texts: Sequence[Any] | str, kind: str = "query") -> np.ndarray:
        """Texts -> (n, dim) L2-normalised vectors. Batches are length-sorted to cut padding."""
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        ids = self.tokenize(items, kind)
        lengths = [len(x) for x in ids]
        order = np.argsort(lengths, kind="stable")
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        for chunk in padding_bounded_chunks([lengths[i] for i in order], self.max_batch):
            rows = order[chunk]
            out[rows] = self.encode_ids([ids[i] for i in rows])
        return out[0] if single else out

    def warmup(self) -> float:
        t0 = time.perf_counter()
        self.encode(["warm up", "预热"], kind="query")
        return time.perf_counter() - t0


def padding_bounded_chunks(sorted_lengths: Sequence[int], max_batch: int, max_waste: float = 0.25) -> list[slice]:
    """Cut length-sorted items into runs where padding to the longest wastes at most `max_waste` of the
    tokens: one 200-token description in a batch of 15-token titles would otherwise make every title
    cost 200 tokens (measured: batches of 32 mixed texts ran 4x slower per item than batch 1)."""
    chunks, start, total = [], 0, 0
    for i, n in enumerate(sorted_lengths):
        size = i - start
        if size and (size >= max_batch or (size + 1) * n > (1 + max_waste) * (total + n)):
            chunks.append(slice(start, i))
            start, total = i, 0
        total += n
    if start < len(sorted_lengths):
        chunks.append(slice(start, len(sorted_lengths)))
    return chunks


class ImageEncoder(OnnxEncoder):
    """Pillow decode (EXIF, RGB, bomb guard) + ONNX image tower."""

    def __init__(self, artifacts: ModelArtifacts, cfg: EncoderConfig | None = None) -> None:
        cfg = cfg or EncoderConfig()
        self._setup(artifacts.tower("image", cfg.precision), cfg)
        zs = artifacts.towers["image"].get("zero_shot")
        if zs and zs.get("from_output") in self.output_names:
            self.zero_shot = ZeroShotMap(np.load(artifacts.file(zs["file"])))
        cen = artifacts.towers["image"].get("centroids")  # the label-free blend criterion (zero_shot_blend)
        if cen and cen.get("from_output") in self.output_names:
            self.centroids = np.load(artifacts.file(cen["file"])).astype(np.float32)
            self.near_cosine = parse_near_cosine(cen.get("near_cosine"))  # None: exported before calibration
        self.trained = TrainedProducts.of(artifacts)  # left out of the blend chooser's sample

    @classmethod
    def from_tower(cls, tower: TowerArtifact, cfg: EncoderConfig | None = None) -> ImageEncoder:
        """An encoder over an explicit file, before any manifest exists (used by the exporter's checks)."""
        obj = cls.__new__(cls)
        obj._setup(tower, cfg or EncoderConfig())
        return obj

    def _setup(self, tower: TowerArtifact, cfg: EncoderConfig) -> None:
        super().__init__(tower, cfg)
        self.pre = ImagePreprocess.from_dict(self.tower.spec["preprocess"])
        self.input_name = self.input_names[0]
        self.max_batch = int(self.tower.spec.get("max_batch", 32))
        self.zero_shot: ZeroShotMap | None = None
        self.centroids: np.ndarray | None = None
        self.near_cosine: float | None = None
        self.trained: TrainedProducts | None = None
        self.beta = 1.0  # weight of the embedding against the zero-shot map (engine/zero_shot_blend.py)

    def set_blend(self, beta: float) -> None:
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta <= 1:
            raise InvalidInput(f"image blend must be a number within 0..1, got {beta!r}", field="image_blend")
        if beta < 1 and self.zero_shot is None:
            raise ArtifactError("this image tower has no zero-shot map to blend with; re-run `kuamo export`",
                                field="image_blend")
        self.beta = float(beta)

    def load(self, item: Any) -> np.ndarray:
        """bytes (or a PIL image) -> CHW float32 tensor."""
        if hasattr(item, "mode") and hasattr(item, "size"):
            from kuamo.engine.imaging import to_rgb

            return preprocess(to_rgb(item), self.pre)
        img = decode_image(item, max_bytes=self.cfg.max_image_bytes, max_pixels=self.cfg.max_image_pixels)
        return preprocess(img, self.pre)

    def encode_outputs(self, items: Sequence[Any], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(outputs or [self.embedding_output])
        tensors = np.stack([self.load(x) for x in items]) if items else None
        if tensors is None:
            return {n: np.zeros((0, 0), dtype=np.float32) for n in names}
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for start in range(0, len(tensors), self.max_batch):
            res = self.run({self.input_name: tensors[start: start + self.max_batch]}, names)
            for n in names:
                parts[n].append(res[n])
        return {n: np.concatenate(v).astype(np.float32, copy=False) for n, v in parts.items()}

    def encode(self, items: Sequence[Any], output: str | None = None) -> np.ndarray:
        """Images -> (n, dim) L2-normalised vectors of the tower's embedding output (or `output`)."""
        name = output or self.embedding_output
        if items and name == self.embedding_output and self.beta < 1 and self.zero_shot is not None:
            outs = self.encode_outputs(items, [name, "logits"])
            return self.zero_shot.blend(outs[name], outs["logits"], self.beta)
        return l2_normalize(self.encode_outputs(items, [name])[name])

    def warmup(self) -> float:
        from PIL import Image

        t0 = time.perf_counter()
        self.encode([Image.new("RGB", (64, 80), (200, 30, 30))])
        return time.perf_counter() - t0
