"""Exactly one ONNX Runtime wheel, or a clear error naming the fix."""

from __future__ import annotations

import pytest

from kuamo.engine.errors import ArtifactError
from kuamo.engine.ort_runtime import WHEELS, check_wheels, installed_wheels


def test_none_installed_names_both_extras() -> None:
    with pytest.raises(ArtifactError, match=r"kuamo\[cpu\].*kuamo\[gpu\]"):
        check_wheels([])


def test_both_installed_is_refused_with_the_fix() -> None:
    with pytest.raises(ArtifactError, match=r"overwrite each other.*pip uninstall"):
        check_wheels(["onnxruntime", "onnxruntime-gpu"])


def test_one_wheel_passes_and_this_venv_has_exactly_one() -> None:
    check_wheels(["onnxruntime"])
    found = installed_wheels()
    assert len(found) == 1 and found[0] in WHEELS
