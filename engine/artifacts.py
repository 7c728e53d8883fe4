"""Reading a model directory written by `kuamo export`: manifest.json plus checksummed files.

Manifest layout (format "kuamo-models/1"):
  files:  {name: {sha256, bytes}} for every file in the directory the runtime may read
  towers: {"text"|"image": {files: {fp32, int8?}, serve: "fp32"|"int8", serve_reason, inputs, outputs,
           dim, embedding_output, ..., parity, quantization}}
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kuamo.engine.cpu_features import cpu_flags, int8_drift, int8_mismatch
from kuamo.engine.errors import ArtifactError

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "kuamo-models/1"
PRECISIONS = ("fp32", "int8")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class TowerArtifact:
    """One tower (text or image) as the runtime needs it."""

    name: str
    model_path: Path
    precision: str
    spec: dict[str, Any]
    sha256: str = ""  # of the served file, from the manifest: identifies the weights, not just the file name

    @property
    def dim(self) -> int:
        return int(self.spec["dim"])


class ModelArtifacts:
    """A verified model directory. Construction fails with ArtifactError on any mismatch."""

    def __init__(self, model_dir: Path | str, *, verify: bool = True) -> None:
        self.model_dir = Path(model_dir)
        path = self.model_dir / MANIFEST_NAME
        if not path.is_file():
            raise ArtifactError(
                f"no {MANIFEST_NAME} in {self.model_dir.resolve()}: point --models (or [server] model_dir) at an "
                f"exported model directory, or make one with `kuamo export --out {self.model_dir}` (`make models` "
                "in the repository)"
            )
        try:
            self.manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
        if self.manifest.get("format") != MANIFEST_FORMAT:
            raise ArtifactError(
                f"{path}: unsupported manifest format {self.manifest.get('format')!r}, "
                f"expected {MANIFEST_FORMAT!r}"
            )
        self._verified: set[str] = set()
        self._verify = verify

    @property
    def towers(self) -> dict[str, dict[str, Any]]:
        return self.manifest.get("towers", {})

    def file(self, name: str) -> Path:
        """Path of a listed file, checked against its recorded size and sha256 on first use."""
        entry = self.manifest.get("files", {}).get(name)
        if entry is None:
            raise ArtifactError(f"{name} is not listed in {self.model_dir / MANIFEST_NAME}")
        path = self.model_dir / name
        if not path.is_file():
            raise ArtifactError(f"{path} is listed in the manifest but missing")
        if self._verify and name not in self._verified:
            size = path.stat().st_size
            if size != entry["bytes"]:
                raise ArtifactError(
                    f"{path} has {size} bytes, the manifest says {entry['bytes']}: the file was changed "
                    "or truncated; re-run `kuamo export`"
                )
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                raise ArtifactError(
                    f"{path} sha256 {digest[:12]}... does not match the manifest "
                    f"({entry['sha256'][:12]}...); re-run `kuamo export`"
                )
            self._verified.add(name)
        return path

    def tower(self, name: str, precision: str = "auto") -> TowerArtifact:
        """The ONNX file to serve for a tower: `auto` takes what passed the INT8 gate at export."""
        spec = self.towers.get(name)
        if spec is None:
            raise ArtifactError(f"the model directory {self.model_dir} has no {name!r} tower")
        chosen = spec.get("serve", "fp32") if precision == "auto" else precision
        if precision == "auto" and chosen == "int8":
            why = int8_mismatch(spec.get("quantization", {}), cpu_flags())
            if why and spec.get("files", {}).get("fp32"):
                log.warning("%s tower: %s", name, why)
                chosen = "fp32"
            elif why:  # a bundle without the FP32 graph: serving wrong vectors silently is worse than refusing
                raise ArtifactError(f"{name} tower: {why.replace('; serving FP32', '')}; this model directory "
                                    "has no FP32 graph to fall back to (a bundle made elsewhere)")
            elif drift := int8_drift(spec.get("quantization", {}), cpu_flags()):
                log.warning("%s tower: %s", name, drift)
        if chosen not in PRECISIONS:
            raise ArtifactError(f"unknown precision {precision!r}; expected auto, fp32 or int8")
        file_name = spec.get("files", {}).get(chosen)
        if file_name is None:
            why = spec.get("serve_reason", "it was not exported")
            raise ArtifactError(f"the {name} tower has no {chosen} model: {why}")
        return TowerArtifact(name=name, model_path=self.file(file_name), precision=chosen, spec=spec,
                             sha256=str(self.manifest.get("files", {}).get(file_name, {}).get("sha256", "")))
