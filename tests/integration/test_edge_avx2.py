"""The AVX2-only benchmark's tower measurement on the shipped models, natively and inside the mode: both run,
report positive speeds, and write the served embeddings that the benchmark cross-checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.models


def _tower_speed_cmd(model_dir: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "kuamo.benchmarks.edge_avx2", "--tower-speed", str(model_dir), "--rounds", "1",
            "--seconds", "0.2", "--embeddings", str(out)]


def _check(report: dict, out: Path) -> None:
    for b in ("batch1", "batch8"):
        assert report["image"][b]["fp32_photos_per_s"] > 0 and report["image"][b]["int8_photos_per_s"] > 0
    assert set(report["text_texts_per_s"]) == {"1", "32", "64"}
    image, text = np.load(out), np.load(out.with_suffix(".text.npy"))
    assert image.shape == (64, 384) and text.shape == (64, 384)
    np.testing.assert_allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-4)


def test_tower_speed_natively(model_dir: Path, fashion_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "native.npy"
    done = subprocess.run(_tower_speed_cmd(model_dir, out), capture_output=True, text=True, check=True)
    _check(json.loads(done.stdout.splitlines()[-1]), out)


def test_tower_speed_inside_the_avx2_only_mode(avx2_only_mode, model_dir: Path, fashion_dir: Path,
                                               tmp_path: Path) -> None:
    out = tmp_path / "avx2.npy"
    done = avx2_only_mode.run(_tower_speed_cmd(model_dir, out), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert not report["cpu_flags"]["avx512"] and not report["cpu_flags"]["vnni"]
    _check(report, out)


def test_engine_inside_the_mode_serves_int8_image_only_if_it_cannot_saturate(avx2_only_mode,
                                                                             model_dir: Path) -> None:
    """A VNNI export's 8-bit image tower falls back to FP32 on an AVX2-only CPU; a 7-bit one stays INT8."""
    probe = ("import json; from kuamo.engine.artifacts import ModelArtifacts; "
             f"a = ModelArtifacts({str(model_dir)!r}); "
             "print(json.dumps({k: a.tower(k).precision for k in a.towers}))")
    done = avx2_only_mode.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    served = json.loads(done.stdout.splitlines()[-1])
    image = json.loads((model_dir / "manifest.json").read_text())["towers"]["image"]
    q = image.get("quantization", {})
    if image.get("serve") != "int8":
        assert served["image"] == "fp32"
    elif q.get("cpu", {}).get("vnni") and not q.get("saturation_free"):
        assert served["image"] == "fp32"
        assert "serving FP32" in done.stderr
    else:
        assert served["image"] == "int8"
