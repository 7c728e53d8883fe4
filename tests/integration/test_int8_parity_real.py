"""benchmarks/int8_parity.py on the shipped models and real photos: the native run writes its report, and the
encoding child runs inside the AVX2-only mode, sees no AVX-512/VNNI, and gives INT8 vectors near FP32's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kuamo.export.gate import cosine_rows

pytestmark = pytest.mark.models


def test_native_run_reports_the_catalog_against_the_gate(model_dir: Path, fashion_dir: Path,
                                                         tmp_path: Path) -> None:
    env = {**__import__("os").environ, "KUAMO_RESULTS_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "kuamo.benchmarks.int8_parity", "--models", str(model_dir), "--fashion",
                    str(fashion_dir), "--limit", "120", "--no-avx2"], check=True, env=env, capture_output=True)
    res = json.loads((tmp_path / "int8_parity_limit120.json").read_text())
    (s,) = res["sets"]
    assert res["photos"] == 120 and s["cosine"]["photos"] == 120
    assert 0.9 < s["cosine"]["min"] <= s["cosine"]["p1"] <= s["cosine"]["mean"] < 1.0
    assert s["search"]["queries"] == 120 and 0.5 < s["search"]["photo_top10_overlap"] <= 1.0
    assert s["engine_serves_here"] in ("int8", "fp32")
    assert (tmp_path / "int8_parity_limit120.md").read_text().count("| native export, INT8 run natively |") == 2


def test_the_encoding_child_runs_inside_the_avx2_only_mode(avx2_only_mode, model_dir: Path, fashion_dir: Path,
                                                           tmp_path: Path) -> None:
    def encode(precision: str, run) -> tuple[dict, np.ndarray]:
        out = tmp_path / f"{precision}.npy"
        done = run([sys.executable, "-m", "kuamo.benchmarks.int8_parity", "--encode", precision, "--models",
                    str(model_dir), "--fashion", str(fashion_dir), "--limit", "24", "--out", str(out)],
                   capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.splitlines()[-1]), np.load(out)

    seen, int8 = encode("int8", avx2_only_mode.run)
    assert not seen["cpu_flags"]["avx512"] and not seen["cpu_flags"]["vnni"] and seen["photos"] == 24
    _, fp32 = encode("fp32", subprocess.run)
    assert int8.shape == fp32.shape == (24, 384)
    assert cosine_rows(int8, fp32).min() > 0.5  # the graph ran (8-bit weights may saturate here: not asserted)
