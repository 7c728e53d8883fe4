"""8-bit weight-only quantisation of the float matrix products a QDQ export leaves behind.

The INT8 image schemes keep the tail (classifier `_fc`, the alignment head's MLP and its zero-shot MatMul) in
FP32: 17.5 MB of FP32 weights that every batch-1 photo reads. ONNX Runtime's MatMulNBits (com.microsoft) with
8-bit blockwise weights and int8 compute (accuracy_level 4) reads a quarter of that; its activations are
quantised per row and block, so (at BLOCK <= 64) a photo embeds the same alone or in any batch. AVX2 and
AVX-512 VNNI kernels agree to cosine 0.999998 (float summation order; no int16 saturation: all-max products
come out exact under AVX2), where the QDQ convs agree bit for bit.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kuamo.export.onnx_info import cap_ir

# weights per scale along K. 16, 32 and 64 give a photo the same vector alone or batched (bit for bit, with AVX2
# and AVX-512 VNNI kernels); 128 and 256 do not (max |diff| 3e-4: ORT runs another kernel for one row, which
# flipped a near tie in an engine top 10). 64 is as fast as 128 (batch 1: 1.064 / 1.071x the FP32-tail graph).
BLOCK = 64
ACCURACY_LEVEL = 4  # int8 compute; level 0 (FP32 compute on 8-bit weights) ran 3x slower than the FP32 Gemm


def gemms_to_matmuls(model) -> int:
    """Rewrite each Gemm whose weight is a float initializer (alpha = beta = 1, no transA) as MatMul + Add, the
    form MatMulNBits quantises. Returns how many were rewritten."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes, done = [], 0
    for n in model.graph.node:
        w = inits.get(n.input[1]) if n.op_type == "Gemm" and len(n.input) > 1 else None
        at = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if (w is None or w.data_type != TensorProto.FLOAT or at.get("alpha", 1.0) != 1.0
                or at.get("beta", 1.0) != 1.0 or at.get("transA", 0)):
            nodes.append(n)
            continue
        weight = numpy_helper.to_array(w)
        weight = np.ascontiguousarray(weight.T if at.get("transB", 0) else weight)
        model.graph.initializer.append(numpy_helper.from_array(weight, f"{w.name}_kn"))
        product, name = f"{n.output[0]}_matmul", n.name or n.output[0]  # exporters may leave names empty
        nodes.append(helper.make_node("MatMul", [n.input[0], f"{w.name}_kn"], [product], name=f"{name}_matmul"))
        if len(n.input) > 2 and n.input[2]:
            nodes.append(helper.make_node("Add", [product, n.input[2]], [n.output[0]], name=f"{name}_bias"))
        else:
            nodes[-1].output[0] = n.output[0]
        done += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    used = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return done


def quantise_float_matmuls(path: Path, *, bits: int = 8, block: int = BLOCK) -> int:
    """In place: the float Gemm/MatMul nodes of the ONNX file at `path` get `bits`-bit blockwise weights
    (MatMulNBits, symmetric, `block` weights per scale along K), written with an IR version the runtime accepts.
    Returns how many nodes became MatMulNBits."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)  # a line a node
    model = onnx.load(str(path))
    gemms_to_matmuls(model)
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, bits=bits,
                                          accuracy_level=ACCURACY_LEVEL, op_types_to_quantize=("MatMul",))
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block, is_symmetric=True,
                                     accuracy_level=ACCURACY_LEVEL, algo_config=config,
                                     op_types_to_quantize=("MatMul",))
    quantizer.process()
    out = quantizer.model.model
    cap_ir(out)
    onnx.save(out, str(path))
    return sum(n.op_type == "MatMulNBits" for n in out.graph.node)
