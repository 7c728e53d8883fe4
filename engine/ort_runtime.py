"""Exactly one ONNX Runtime wheel: `onnxruntime` (kuamo[cpu]) or `onnxruntime-gpu` (kuamo[gpu]). Both install
the same `onnxruntime` package and overwrite each other's files, so two installed give a runtime that is
neither; none installed gives a bare ModuleNotFoundError. Say which, and the fix, before importing it."""

from __future__ import annotations

from importlib import metadata
from types import ModuleType

from kuamo.engine.errors import ArtifactError

WHEELS = {"onnxruntime": "kuamo[cpu]", "onnxruntime-gpu": "kuamo[gpu]"}


def installed_wheels() -> list[str]:
    found = []
    for name in WHEELS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def check_wheels(found: list[str]) -> None:
    if not found:
        raise ArtifactError("no ONNX Runtime is installed: install kuamo[cpu] (CPU boxes) or kuamo[gpu] (CUDA), "
                            "e.g. pip install 'kuamo[cpu]'")
    if len(found) > 1:
        raise ArtifactError(f"both {' and '.join(found)} are installed; they overwrite each other's files: "
                            "pip uninstall -y onnxruntime onnxruntime-gpu, then install kuamo[cpu] or kuamo[gpu]")


def load() -> ModuleType:
    check_wheels(installed_wheels())
    import onnxruntime

    return onnxruntime
