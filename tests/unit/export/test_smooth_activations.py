"""SmoothQuant before the batch-invariant INT8 rewrite: the FP32 function is unchanged, only the inputs made by a
LayerNorm or an activation Mul are smoothed, and the INT8 graph built from the smoothed one is closer to FP32
when a few activation channels are much louder than the rest (BERT's pattern)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kuamo.engine.session import create_session
from kuamo.export.gate import cosine_rows
from kuamo.export.smooth_activations import SCALE_CLIP, smooth_matmul_inputs, smoothable_inputs, smoothing_scales
from kuamo.export.static_activations import quantize_batch_invariant

D, H = 64, 128
LOUD = (3, 17, 40)  # channels of the LayerNorm output 20x louder than the rest, as in BERT


def _block(path: Path, rng: np.random.Generator) -> None:
    """LayerNorm(x) (gamma loud on LOUD) -> @ W1 -> Mul by a gate (an activation) -> @ W2 -> + Reshape(r) @ W3.
    The Reshape-made input stands for the attention context, which is not smoothed."""
    gamma = np.ones(D, np.float32)
    gamma[list(LOUD)] = 20.0
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", D]),
              helper.make_tensor_value_info("r", TensorProto.FLOAT, ["n", 2, D // 2])]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["ln"], axis=-1),
             helper.make_node("MatMul", ["ln", "W1"], ["h"]),
             helper.make_node("Sigmoid", ["h"], ["g"]),
             helper.make_node("Mul", ["h", "g"], ["act"]),  # SiLU: an activation ending in a Mul, like GELU
             helper.make_node("MatMul", ["act", "W2"], ["y2"]),
             helper.make_node("Reshape", ["r", "flat"], ["ctx"]),
             helper.make_node("MatMul", ["ctx", "W3"], ["y3"]),
             helper.make_node("Add", ["y2", "y3"], ["y"])]
    inits = [numpy_helper.from_array(gamma, "gamma"), numpy_helper.from_array(np.zeros(D, np.float32), "beta"),
             numpy_helper.from_array(rng.standard_normal((D, H)).astype(np.float32) / 8, "W1"),
             numpy_helper.from_array(rng.standard_normal((H, D)).astype(np.float32) / 8, "W2"),
             numpy_helper.from_array(rng.standard_normal((D, D)).astype(np.float32) / 8, "W3"),
             numpy_helper.from_array(np.array([-1, D], np.int64), "flat")]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", D])
    model = helper.make_model(helper.make_graph(nodes, "block", inputs, [out], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


def _feeds(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((n, D)).astype(np.float32),
            "r": rng.standard_normal((n, 2, D // 2)).astype(np.float32)}


def _run(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return create_session(path).run(["y"], feeds)[0]


def test_smoothing_keeps_the_fp32_function_and_touches_only_norm_and_activation_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fp32, smoothed = tmp_path / "m.onnx", tmp_path / "m.smooth.onnx"
    _block(fp32, rng)
    record = smooth_matmul_inputs(fp32, smoothed, [_feeds(rng, 64) for _ in range(4)])
    test = _feeds(np.random.default_rng(1), 200)
    assert np.allclose(_run(fp32, test), _run(smoothed, test), atol=1e-4)
    model = onnx.load(str(smoothed))
    assert record["inputs"] == 2 and record["matmuls"] == 2
    assert Counter(n.op_type for n in model.graph.node)["Mul"] == 3  # the activation's own Mul + two smoothing Muls
    readers = {n.input[1]: n.input[0] for n in model.graph.node if n.op_type == "MatMul"}
    assert readers["W1"] == "ln_smoothed" and readers["W2"] == "act_smoothed" and readers["W3"] == "ctx"
    w1 = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "W1"))
    w1_before = numpy_helper.to_array(next(i for i in onnx.load(str(fp32)).graph.initializer if i.name == "W1"))
    ratio = np.abs(w1).max(axis=1) / np.abs(w1_before).max(axis=1)
    quiet = [j for j in range(D) if j not in LOUD]
    assert ratio[list(LOUD)].min() > 2 * ratio[quiet].max()  # the loud channels' weight rows grew the most


def test_smoothed_int8_is_closer_to_fp32_than_plain_int8(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fp32, smoothed = tmp_path / "m.onnx", tmp_path / "m.smooth.onnx"
    _block(fp32, rng)
    calibration = [_feeds(rng, 64) for _ in range(4)]
    smooth_matmul_inputs(fp32, smoothed, calibration)
    quantize_batch_invariant(fp32, tmp_path / "plain.int8.onnx", ["MatMul"], calibration)
    quantize_batch_invariant(smoothed, tmp_path / "smooth.int8.onnx", ["MatMul"], calibration)
    test = _feeds(np.random.default_rng(1), 200)
    ref = _run(fp32, test)
    plain_err = 1 - cosine_rows(ref, _run(tmp_path / "plain.int8.onnx", test)).mean()
    smooth_err = 1 - cosine_rows(ref, _run(tmp_path / "smooth.int8.onnx", test)).mean()
    assert smooth_err < 0.5 * plain_err, (plain_err, smooth_err)


def test_a_weight_read_twice_or_an_input_feeding_a_plain_matmul_is_left_alone(tmp_path: Path) -> None:
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], axis=-1),
             helper.make_node("MatMul", ["ln", "W"], ["a"]),
             helper.make_node("Relu", ["x"], ["xr"]),
             helper.make_node("LayerNormalization", ["xr", "g", "b"], ["ln2"], axis=-1),
             helper.make_node("MatMul", ["ln2", "W"], ["c"]),  # W read twice
             helper.make_node("LayerNormalization", ["a", "g", "b"], ["ln3"], axis=-1),
             helper.make_node("MatMul", ["ln3", "V"], ["d"]),
             helper.make_node("MatMul", ["ln3", "ln3t"], ["e"])]  # ln3 also feeds a MatMul without a weight
    inits = [numpy_helper.from_array(np.ones(4, np.float32), "g"),
             numpy_helper.from_array(np.zeros(4, np.float32), "b"),
             numpy_helper.from_array(np.ones((4, 4), np.float32), "W"),
             numpy_helper.from_array(np.ones((4, 4), np.float32), "V")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4]),
                                           helper.make_tensor_value_info("ln3t", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in "cde"], inits)
    assert smoothable_inputs(helper.make_model(graph)) == {}


def test_scales_follow_the_activation_and_are_clipped() -> None:
    s = smoothing_scales(np.array([1.0, 16.0, 0.0, 1e9]), np.ones(4), alpha=0.5)
    assert np.allclose(s[:2], [1.0, 4.0]) and s[2] == SCALE_CLIP[0] and s[3] == SCALE_CLIP[1]


def test_producers_name_which_op_types_are_smoothed() -> None:
    """A graph with ORT's BERT fusions makes the LayerNorm and GELU outputs with SkipLayerNormalization and
    BiasGelu: passing those op types smooths them; by default they are left alone."""
    nodes = [helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta"], ["ln"], domain="com.microsoft"),
             helper.make_node("MatMul", ["ln", "W1"], ["h"]),
             helper.make_node("BiasGelu", ["h", "b1"], ["act"], domain="com.microsoft"),
             helper.make_node("MatMul", ["act", "W2"], ["y"])]
    inits = [numpy_helper.from_array(np.ones((D, H), np.float32), "W1"),
             numpy_helper.from_array(np.ones((H, D), np.float32), "W2")]
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", D])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    assert smoothable_inputs(model) == {}
    found = smoothable_inputs(model, ("LayerNormalization", "Mul", "SkipLayerNormalization", "BiasGelu"))
    assert {x: [m.output[0] for m in ms] for x, ms in found.items()} == {"ln": ["h"], "act": ["y"]}
