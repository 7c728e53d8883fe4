"""Fixed activation scales: a row's output no longer depends on its batch, the integer kernels stay fused,
and padding never widens a calibrated range."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kuamo.engine.session import create_session
from kuamo.export.gate import cosine_rows
from kuamo.export.static_activations import (
    activation_ranges,
    dynamic_quant_inputs,
    freeze_activation_scales,
    uint8_params,
)


def _two_layer_model(path: Path, rng: np.random.Generator, *, with_mask: bool = False) -> None:
    """x @ W1 + b1 (bias as the Add's FIRST input, as torch's exporter writes it) -> Relu -> @ W2."""
    shape = ["b", "s", 64] if with_mask else ["n", 64]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)]
    if with_mask:
        inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"]))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [*shape[:-1], 16])
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Add", ["b1", "h"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "W2"], ["y"])]
    inits = [numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "W2")]
    model = helper.make_model(helper.make_graph(nodes, "two", inputs, [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path, Path]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    fp32, dynamic, frozen = tmp_path / "m.onnx", tmp_path / "m.dyn.onnx", tmp_path / "m.static.onnx"
    _two_layer_model(fp32, rng)
    quantize_dynamic(str(fp32), str(dynamic), weight_type=QuantType.QInt8, per_channel=True)
    calibration = [{"x": rng.standard_normal((40, 64)).astype(np.float32)} for _ in range(5)]
    freeze_activation_scales(dynamic, frozen, activation_ranges(dynamic, calibration))
    return fp32, dynamic, frozen


def _alone_and_beside_a_loud_neighbour(path: Path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sess = create_session(path)
    alone = np.concatenate([sess.run(["y"], {"x": rows[i: i + 1]})[0] for i in range(len(rows))])
    loud = np.concatenate([rows, 3 * rows[:1]])  # a neighbour with a wider range than any row here
    return alone, sess.run(["y"], {"x": loud})[0][: len(rows)]


def test_dynamic_quantisation_depends_on_the_batch(models) -> None:
    """The problem being fixed, shown on the tiny model: it is what makes the next test able to fail."""
    _, dynamic, _ = models
    rows = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    alone, batched = _alone_and_beside_a_loud_neighbour(dynamic, rows)
    assert np.abs(alone - batched).max() > 1e-3


def test_frozen_scales_make_rows_batch_invariant_and_stay_accurate(models) -> None:
    fp32, _, frozen = models
    rows = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    alone, batched = _alone_and_beside_a_loud_neighbour(frozen, rows)
    np.testing.assert_array_equal(alone, batched)
    ref = create_session(fp32).run(["y"], {"x": rows})[0]
    assert cosine_rows(ref, alone).min() > 0.995


def test_rewrite_leaves_no_dynamic_quantisation_and_emits_fused_kernels(models) -> None:
    _, dynamic, frozen = models
    assert len(dynamic_quant_inputs(dynamic)) == 2
    assert dynamic_quant_inputs(frozen) == []
    nodes = onnx.load(str(frozen)).graph.node
    ops = Counter(n.op_type for n in nodes)
    assert ops["QuantizeLinear"] == 2 and ops["MatMulIntegerToFloat"] == 2
    assert ops["MatMulInteger"] == 0 and ops["Cast"] == 0
    first = next(n for n in nodes if n.op_type == "MatMulIntegerToFloat")
    assert first.domain == "com.microsoft" and first.input[6] == "b1"  # the bias went into the kernel


def test_padding_is_masked_out_of_the_ranges(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(2)
    fp32, dynamic = tmp_path / "m.onnx", tmp_path / "m.dyn.onnx"
    _two_layer_model(fp32, rng, with_mask=True)
    quantize_dynamic(str(fp32), str(dynamic), weight_type=QuantType.QInt8, per_channel=True)
    x = rng.uniform(-1, 1, (2, 5, 64)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=np.int64)
    x[1, 2:] = 1000.0  # padded positions carry garbage
    ranges = activation_ranges(dynamic, [{"x": x, "attention_mask": mask}])
    lo, hi = ranges["x"]
    assert -1 <= lo < 0 < hi <= 1


def test_uint8_params_include_zero_and_cover_the_range() -> None:
    scale, zp = uint8_params(0.5, 2.0)  # zero is always representable
    assert zp == 0 and scale == pytest.approx(2.0 / 255)
    scale, zp = uint8_params(-3.0, 1.0)
    assert 0 < zp < 255 and (0 - zp) * scale == pytest.approx(-3.0, abs=scale)
    assert uint8_params(0.0, 0.0) == (1.0, 0)


@pytest.mark.parametrize("reduce_range", [False, True])
def test_reduce_range_gives_7_bit_weights_and_is_recorded(tmp_path: Path, reduce_range: bool) -> None:
    """7-bit weights (|w| <= 63) are what keeps AVX2's int16 pair sums from saturating; the record says so."""
    from kuamo.export.static_activations import quantize_batch_invariant

    rng = np.random.default_rng(0)
    fp32, out = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    _two_layer_model(fp32, rng)
    calibration = [{"x": rng.standard_normal((40, 64)).astype(np.float32)} for _ in range(3)]
    record = quantize_batch_invariant(fp32, out, ["MatMul"], calibration, reduce_range=reduce_range)
    assert record["reduce_range"] is reduce_range
    model = onnx.load(str(out))
    weights = [numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == TensorProto.INT8]
    assert weights
    peak = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert peak <= 64 if reduce_range else peak == 127
