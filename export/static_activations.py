"""Fixed activation scales for a dynamically quantised graph, so a row's output never depends on its batch.

onnxruntime's `quantize_dynamic` puts a DynamicQuantizeLinear before each MatMulInteger; it computes ONE
scale and zero point over the whole input tensor, i.e. over every token of every text in the batch, so the
same text gets a different vector next to different neighbours (and next to different padding). This
module measures each such input's range on real calibration inputs (padding excluded) and rewrites every
DynamicQuantizeLinear into a QuantizeLinear with that fixed scale and zero point. The per-channel INT8
weights and integer kernels stay as they are.

Fixed scales make ORT's own MatMulIntegerToFloat fusion miss (constant folding removes the scale product
it matches on), leaving MatMulInteger + Cast + Mul + Add unfused: measured 0.72x the dynamic graph's
texts/s at batch 1. So the rewrite emits the fused com.microsoft MatMulIntegerToFloat itself, bias
included (ORT only fuses a bias that is the Add's second input; this export's bias is the first).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from kuamo.engine.config import SessionConfig
from kuamo.engine.session import create_session
from kuamo.export.onnx_info import cap_ir_version

Feeds = dict[str, np.ndarray]


def dynamic_quant_inputs(model_path: Path | str) -> list[str]:
    """Names of the float tensors that DynamicQuantizeLinear nodes quantise, in graph order."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.input[0] for n in graph.node if n.op_type == "DynamicQuantizeLinear"]


def masked_activations(model_path: Path | str, names: Sequence[str], batches: Iterable[Feeds], *,
                       mask_input: str = "attention_mask") -> Iterator[dict[str, np.ndarray]]:
    """The tensors `names` of `model_path` for each of `batches`, read by exposing them as extra graph outputs;
    token-shaped ones ([batch, seq, ...]) keep only the real tokens of the batch's attention mask (rows of
    [tokens, ...]), so padding never counts."""
    model = onnx.load(str(model_path))
    existing = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in existing)
    with tempfile.TemporaryDirectory(prefix="kuamo-probe-") as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(model, str(path))
        del model
        sess = create_session(path, SessionConfig(intra_op_threads=0))
        for feeds in batches:
            mask = feeds.get(mask_input)
            outs = sess.run(list(names), feeds)
            yield {name: x[mask.astype(bool)] if mask is not None and x.ndim >= 2 and x.shape[:2] == mask.shape
                   else x for name, x in zip(names, outs, strict=True)}


def activation_ranges(model_path: Path | str, batches: Iterable[Feeds], *, mask_input: str = "attention_mask"
                      ) -> dict[str, tuple[float, float]]:
    """(min, max) of every DynamicQuantizeLinear input over the real (unpadded) tokens of `batches`."""
    names = dynamic_quant_inputs(model_path)
    lo = {n: np.inf for n in names}
    hi = {n: -np.inf for n in names}
    for outs in masked_activations(model_path, names, batches, mask_input=mask_input):
        for name, x in outs.items():
            if x.size:
                lo[name] = min(lo[name], float(x.min()))
                hi[name] = max(hi[name], float(x.max()))
    missing = [n for n in names if not np.isfinite(lo[n])]
    if missing:
        raise RuntimeError(f"calibration never reached {len(missing)} quantised inputs, e.g. {missing[0]}")
    return {n: (lo[n], hi[n]) for n in names}


def uint8_params(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point the way DynamicQuantizeLinear derives them, from a fixed range (0 included)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    return float(scale), int(np.clip(np.round(-lo / scale), 0, 255))


def freeze_activation_scales(dynamic_path: Path | str, out: Path | str,
                             ranges: dict[str, tuple[float, float]]) -> dict:
    """Rewrite each DynamicQuantizeLinear(x) -> (y, scale, zp) as QuantizeLinear(x, scale, zp) -> y with
    scale and zp stored as initializers under the old output names, so every consumer stays wired."""
    model = onnx.load(str(dynamic_path))
    nodes, frozen = [], 0
    for node in model.graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        x = node.input[0]
        y, y_scale, y_zp = node.output
        scale, zp = uint8_params(*ranges[x])
        model.graph.initializer.extend([numpy_helper.from_array(np.array(scale, dtype=np.float32), y_scale),
                                        numpy_helper.from_array(np.array(zp, dtype=np.uint8), y_zp)])
        nodes.append(helper.make_node("QuantizeLinear", [x, y_scale, y_zp], [y], name=(node.name or y) + "_static"))
        frozen += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    fused = fuse_matmul_integer_to_float(model)
    onnx.save(model, str(out))
    cap_ir_version(out)
    return {"frozen_nodes": frozen, "remaining_dynamic": len(dynamic_quant_inputs(out)),
            "fused_matmul_integer_to_float": fused}


def _is_bias(name: str, inits: dict[str, onnx.TensorProto]) -> bool:
    return name in inits and len(inits[name].dims) == 1 and inits[name].dims[0] > 1


def fuse_matmul_integer_to_float(model: onnx.ModelProto) -> int:
    """MatMulInteger(A, B, a_zp, b_zp) -> Cast -> Mul(., Mul(a_scale, b_scale)) [-> Add(bias)] becomes one
    com.microsoft MatMulIntegerToFloat(A, B, a_scale, b_scale, a_zp, b_zp[, bias]), in place. Returns the
    number of fused chains; a chain whose intermediates feed anything else is left alone."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    inits = {i.name: i for i in graph.initializer}

    def only_child(name: str, op_type: str) -> onnx.NodeProto | None:
        children = consumers.get(name, [])
        ok = len(children) == 1 and children[0].op_type == op_type and name not in outputs
        return children[0] if ok else None

    removed: set[int] = set()
    replacement: dict[int, onnx.NodeProto] = {}
    for mm in graph.node:
        if mm.op_type != "MatMulInteger" or len(mm.input) != 4:
            continue
        cast = only_child(mm.output[0], "Cast")
        mul = cast and only_child(cast.output[0], "Mul")
        if not mul:
            continue
        scale_name = next(i for i in mul.input if i != cast.output[0])
        scales = producer.get(scale_name)
        if scales is None or scales.op_type != "Mul" or only_child(scale_name, "Mul") is None:
            continue
        quant = producer.get(mm.input[0])
        a_scale = quant.input[1] if quant is not None and quant.op_type == "QuantizeLinear" else None
        if a_scale not in scales.input:
            continue
        b_scale = next(i for i in scales.input if i != a_scale)
        inputs = [mm.input[0], mm.input[1], a_scale, b_scale, mm.input[2], mm.input[3]]
        last, out = mul, mul.output[0]
        add = only_child(mul.output[0], "Add")
        if add is not None:
            bias = next((i for i in add.input if i != mul.output[0]), None)
            if bias is not None and _is_bias(bias, inits):
                inputs.append(bias)
                last, out = add, add.output[0]
        fused = helper.make_node("MatMulIntegerToFloat", inputs, [out], name=(mm.name or mm.output[0]) + "_to_float",
                                 domain="com.microsoft")
        for n in (mm, cast, scales, mul, last):
            removed.add(id(n))
        replacement[id(last)] = fused
    if not replacement:
        return 0
    nodes = [replacement.get(id(n), n) for n in graph.node if id(n) not in removed or id(n) in replacement]
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(replacement)


def quantize_batch_invariant(fp32: Path | str, out: Path | str, op_types: Sequence[str],
                             calibration: Iterable[Feeds], *, reduce_range: bool = False) -> dict:
    """INT8 weights (per channel) from quantize_dynamic, then every activation scale fixed from the
    `calibration` feeds. Returns the manifest's `quantization` record. `reduce_range`: 7-bit weights, whose
    u8 x s7 pair sums cannot saturate the int16 of ORT's kernels on CPUs without VNNI, so the graph computes
    the same there as on VNNI CPUs (8-bit weights: text gate 0.9965 / 0.9929 with VNNI, 0.9950 / 0.9904
    with AVX2 kernels; 7-bit: 0.9960 / 0.9908 on both)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="kuamo-int8-") as tmp:
        dynamic = Path(tmp) / "dynamic.onnx"
        # DefaultTensorType: shape inference cannot type the outputs of com.microsoft ops (a fused graph's
        # MultiHeadAttention); every tensor a MatMul reads here is float
        quantize_dynamic(str(fp32), str(dynamic), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=reduce_range, op_types_to_quantize=list(op_types),
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        feeds = list(calibration)
        rewrite = freeze_activation_scales(dynamic, out, activation_ranges(dynamic, feeds))
    tokens = sum(int(f["attention_mask"].sum()) for f in feeds if "attention_mask" in f)
    return {"method": "onnxruntime.quantization.quantize_dynamic, then DynamicQuantizeLinear -> QuantizeLinear "
                      "with calibrated scales (export/static_activations.py)",
            "weight_type": "QInt8", "per_channel": True, "reduce_range": reduce_range, "op_types": list(op_types),
            "activations": "static per-tensor uint8: min/max over the calibration inputs (padding masked out), "
                           "fixed in the graph, so an item's vector does not depend on its batch",
            "calibration": {"batches": len(feeds), "items": sum(len(next(iter(f.values()))) for f in feeds),
                            **({"tokens": tokens} if tokens else {})},
            **rewrite}
