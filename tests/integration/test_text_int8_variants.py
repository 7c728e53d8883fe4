"""The text INT8 variants benchmark's timing child on the shipped graphs: it runs the engine's TextEncoder on
the graph it is given and reports a positive query time and batch-32 speed (the full run builds the variants
and runs this child natively and inside the AVX2-only mode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.models


@pytest.mark.parametrize("graph", ["text.int8.onnx", "text.onnx"])
def test_timing_child_reports_query_and_batch_speed(model_dir: Path, fashion_dir: Path, graph: str) -> None:
    if not (model_dir / graph).is_file():
        pytest.skip(f"{model_dir} has no {graph}")
    done = subprocess.run([sys.executable, "-m", "kuamo.benchmarks.text_int8_variants", "--time",
                           str(model_dir / graph), "--models", str(model_dir), "--seconds", "0.2"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KUAMO_FASHION_DIR": str(fashion_dir)})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["query_ms"] > 0 and report["batch32_texts_per_s"] > 0
    assert set(report) == {"query_ms", "batch32_texts_per_s", "avx512", "vnni"}
