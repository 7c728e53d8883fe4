"""The INT8 gate must really reject a broken quantised model, and pass a faithful one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kuamo.export.gate import GateThresholds, compare_models, int8_gate, parity_stats


def _tiny_model(path: Path, w: np.ndarray) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", w.shape[0]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", w.shape[1]])
    node = helper.make_node("MatMul", ["x", "W"], ["y"])
    graph = helper.make_graph([node], "tiny", [x], [y], [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path, Path, list[dict]]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    fp32, int8, broken = tmp_path / "m.onnx", tmp_path / "m.int8.onnx", tmp_path / "broken.int8.onnx"
    _tiny_model(fp32, w)
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)
    # "broken": quantised the same way, but from weights with scrambled columns
    _tiny_model(tmp_path / "scrambled.onnx", w[:, rng.permutation(32)])
    quantize_dynamic(str(tmp_path / "scrambled.onnx"), str(broken), weight_type=QuantType.QInt8)
    batches = [{"x": rng.standard_normal((50, 64)).astype(np.float32)} for _ in range(5)]
    return fp32, int8, broken, batches


def test_faithful_int8_passes(models) -> None:
    fp32, int8, _, batches = models
    result = compare_models(str(fp32), str(int8), batches, "y")
    assert result.passed, result.reason
    assert result.stats["n"] == 250 and result.stats["cosine_mean"] > 0.99


def test_broken_int8_is_rejected(models) -> None:
    fp32, _, broken, batches = models
    result = compare_models(str(fp32), str(broken), batches, "y")
    assert not result.passed
    assert "mean cosine" in result.reason and "min cosine" in result.reason


def test_too_few_samples_fail_the_gate() -> None:
    a = np.ones((10, 4), dtype=np.float32)
    result = int8_gate(a, a, GateThresholds(min_samples=200))
    assert not result.passed and "only 10 samples" in result.reason


def test_nan_outputs_count_as_disagreement() -> None:
    a = np.ones((300, 4), dtype=np.float32)
    b = a.copy()
    b[7] = np.nan
    stats = parity_stats(a, b)
    assert stats["non_finite"] == 1 and stats["cosine_min"] == -1.0
    assert not int8_gate(a, b).passed
