"""INT8 for the image tower: static QDQ schemes, each gated for accuracy and timed against FP32 here.

Whether INT8 helps depends on the CPU. With VNNI, u8s8 dot products accumulate without saturation and
are fast; without it, ORT's u8s8 kernels sum pairs of products in int16 and 8-bit weights saturate. 7-bit
weights (reduce_range) cannot, so a reduce_range scheme computes the same on both and its gate result here
holds on AVX2-only CPUs too; the export prefers one. A scheme is served only when it passes the gate AND
beats FP32 on the exporting CPU; otherwise FP32 is served and the reason recorded. `image_int8_search`
tries many schemes; export runs only the chosen one plus a fallback (EXPORT_SCHEMES).
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from kuamo.engine.config import SessionConfig
from kuamo.engine.cpu_features import cpu_flags, saturation_free
from kuamo.engine.session import create_session
from kuamo.export.gate import int8_gate, parity_stats
from kuamo.export.onnx_info import cap_ir_version

Progress = Callable[[str], None]
MIN_SPEEDUP = 1.10  # INT8 must beat FP32 by 10% items/s at batch 8 to be worth its accuracy cost
BENCH_THREADS = 2
# Node groups that can be kept in FP32 (see conv_groups).
GROUPS = ("stem", "first_depthwise", "first_block", "first_blocks", "depthwise", "pointwise", "project",
          "second_project", "head", "fc", "tail")


@dataclass(frozen=True)
class Scheme:
    """One way to quantise the tower with onnxruntime.quantization.quantize_static (QDQ format)."""

    name: str
    calibrate: str = "minmax"  # minmax | percentile | entropy
    # None: every op ORT can quantise (Conv, Clip, Add, Pad, pooling, Gemm) so INT8 flows between convs
    op_types: tuple[str, ...] | None = None
    keep_fp32: tuple[str, ...] = ()  # groups from GROUPS kept in FP32
    keep_nodes: tuple[str, ...] = ()  # explicit node names kept in FP32 (sensitivity analysis)
    only_nodes: tuple[str, ...] = ()  # quantise just these nodes (per-layer sensitivity probes)
    per_channel: bool = True
    reduce_range: bool = False
    activation_type: str = "u8"  # u8 | s8
    # s8 | u8. u8 weights run ORT's u8u8 kernels, which widen both sides to 16 bits before multiplying: exact
    # int32 sums with or without VNNI (u8s8 without VNNI sums pairs of 8-bit products in int16 and saturates)
    weight_type: str = "s8"
    activation_symmetric: bool = False
    weight_symmetric: bool = True
    percentile: float = 99.999
    # fp32 | int8_blockwise: the float Gemm/MatMul nodes the QDQ pass left (the tail) get 8-bit weights in
    # blocks with int8 compute (export/weight_only.py); per-row activation scales keep batches invariant
    tail_weights: str = "fp32"
    # groups whose s8 weights keep all 8 bits under reduce_range: only for kernels that widen to 16 bits before
    # multiplying (MLAS's depthwise convs, qdwconv_avx2.cpp: exact int32 sums with or without VNNI)
    full_range: tuple[str, ...] = ()
    # groups with 8-bit u8 weights (ORT's u8u8 kernels: exact, slower; for the few most sensitive 1x1 convs)
    u8_weights: tuple[str, ...] = ()

    def settings(self) -> dict:
        d = asdict(self)
        d.pop("name")
        d["op_types"] = list(self.op_types) if self.op_types else "all supported"
        d["keep_nodes"] = list(self.keep_nodes)
        d["only_nodes"] = list(self.only_nodes)
        d["full_range"] = list(self.full_range)
        d["u8_weights"] = list(self.u8_weights)
        if self.calibrate != "percentile":
            d.pop("percentile")
        return d


# Chosen from `python -m kuamo.export.image_int8_search` (findings in its docstring): the first scheme
# that passes the gate and the speed margin is served; the next ones are fallbacks.
EXPORT_SCHEMES = (
    # Portable: computes the same on CPUs with and without VNNI, so one export serves both. The stem and the
    # first MBConv block (fed by float tensors) and pooling/FC/alignment head in FP32; the 1x1 convs with 7-bit
    # s8 weights (u8 x s8 pair sums cannot saturate AVX2's int16); the depthwise convs with 8-bit s8 weights
    # (MLAS widens them to 16 bits: exact); the second block's projection with 8-bit u8 weights (u8u8: exact).
    # Why not all 7-bit (the scheme shipped before, conv_trunk_keep_first_block_reduce_range): it passed a
    # 256-photo gate (0.9912 / 0.978) but over all 20,873 fashion photos 112 fell below 0.97 (min 0.938;
    # benchmarks/int8_parity.py) and on 1,024 gate photos it fails (0.9911 / 0.948). Measured with AVX2
    # kernels (benchmarks/avx2_only.py, AMD EPYC), 1,024 gate / 128 calibration photos, on `embedding`:
    #   all 7-bit                                   0.99114 / 0.94758   1.44x / 1.48x FP32 at batch 1 / 8
    #   + depthwise 8-bit                           0.99400 / 0.96986   1.50x / 1.48x
    #   + depthwise 8-bit + 2nd projection u8       0.99521 / 0.97427   1.43x / 1.47x  <- first
    #     (whole catalog: 0.99531 mean, min 0.9709, no photo below 0.97)
    #   + depthwise 8-bit + every projection u8     0.99718 / 0.98288   1.38-1.41x / 1.35x  <- fallback
    #     (whole catalog: min 0.9719); 1x1 convs all u8: 0.99594 / 0.97745 but 1.28x / 1.16x
    #   7-bit, first two blocks in FP32             0.99360 / 0.96913   1.38x / 1.42x (the old fallback)
    # The projection chosen by a one-layer-at-a-time search on the 64 worst gate photos (scratch): the second
    # block's raised their mean most (0.9855 -> 0.9899); 8-bit s8 1x1 convs saturate under AVX2 (min 0.92).
    # The tail's FP32 matrix products (classifier, head MLP, zero-shot map: 17.5 MB of weights read per batch)
    # get 8-bit blockwise weights with int8 compute (export/weight_only.py): ~4% more photos/s at batch 1 under
    # AVX2 kernels, 6-10% natively (AMD EPYC VNNI), cosine to the FP32-tail graph 0.99995 mean; the graph
    # shrinks 32 -> 11 MB; still the same vector alone or batched.
    Scheme("conv_trunk_keep_first_block_reduce_range_dw8_u8p2", reduce_range=True, keep_fp32=("first_block", "tail"),
           full_range=("depthwise",), u8_weights=("second_project",), tail_weights="int8_blockwise"),
    Scheme("conv_trunk_keep_first_block_reduce_range_dw8_u8proj", reduce_range=True,
           keep_fp32=("first_block", "tail"), full_range=("depthwise",), u8_weights=("project",),
           tail_weights="int8_blockwise"),
    # 8-bit weights: more accurate, but their 1x1 convs saturate without VNNI (0.981 / 0.954 on `features` under
    # qemu Haswell), so served only on VNNI CPUs (engine.cpu_features.int8_mismatch). The first block in FP32, as
    # in the portable schemes: with only the stem and first depthwise conv in FP32 (shipped before) one fashion
    # photo of 20,873 fell to 0.9565 (0.9613 with 512 calibration photos: not a coverage problem); with the
    # first block in FP32 the whole catalog gives mean 0.99753, min 0.9817 (was 0.99737 / 0.9565) at 1.81x /
    # 2.13x FP32 vs 1.86x / 2.19x (AMD EPYC VNNI, batch 1 / 8, one run).
    Scheme("conv_trunk_keep_first_block", keep_fp32=("first_block", "tail"), tail_weights="int8_blockwise"),
)


def export_order(schemes: Iterable[Scheme], cpu: dict, *, portable: bool = False) -> list[Scheme]:
    """The order an export tries its schemes in. On a CPU with VNNI the 8-bit schemes come first (more
    accurate: served R@10 82.9 vs 82.4, category P@10 90.6 vs 90.0 on fashion), served only on VNNI CPUs; a
    CPU without VNNI sees them as 7-bit (for_cpu) after the portable ones. `portable` (kuamo export
    --portable-int8) keeps the listed order everywhere: one export for boxes with and without VNNI."""
    schemes = list(schemes)
    if cpu.get("vnni") and not portable:
        schemes = [s for s in schemes if not s.reduce_range] + [s for s in schemes if s.reduce_range]
    candidates = [for_cpu(s, cpu) for s in schemes] + ([] if cpu.get("vnni") else schemes)
    return list(dict.fromkeys(candidates))  # a 7-bit scheme listed twice (for_cpu) runs once


def for_cpu(scheme: Scheme, cpu: dict) -> Scheme:
    """Without VNNI use 7-bit weights, ORT's advice against u8s8 saturation on AVX2/AVX-512 without VNNI.
    The name gets `_reduce_range` so that an export listing both forms runs it once."""
    if cpu.get("vnni") or scheme.reduce_range:
        return scheme
    return replace(scheme, name=scheme.name + "_reduce_range", reduce_range=True)


class PhotoReader:
    """onnxruntime CalibrationDataReader over preprocessed photos (N, 3, H, W)."""

    def __init__(self, x: np.ndarray, batch: int = 16) -> None:
        self.x, self.batch = x, batch
        self.rewind()

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter([{"pixel_values": self.x[i: i + self.batch]} for i in range(0, len(self.x), self.batch)])


def conv_groups(model_path: Path) -> dict[str, list[str]]:
    """Node names per group: stem (first conv), head (last conv), depthwise (group > 1), pointwise (other
    1x1 convs, graph order) and fc (Gemm/MatMul). Depthwise convs, stem and head are the usual INT8
    accuracy suspects: per-channel ranges after BN folding vary widely in depthwise kernels."""
    nodes = list(onnx.load(str(model_path), load_external_data=False).graph.node)  # topological order
    convs = [n for n in nodes if n.op_type == "Conv"]
    depthwise = [n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    ends = {convs[0].name, convs[-1].name}
    last = max(i for i, n in enumerate(nodes) if n.op_type == "Conv")
    project = [b.name for a, b in itertools.pairwise(convs) if a.name in depthwise and b.name not in depthwise]
    return {"stem": [convs[0].name], "first_depthwise": depthwise[:1], "head": [convs[-1].name],
            # stem + the first MBConv block (depthwise + pointwise), and + the second (1 + 2 + 3 convs), all fed
            # by float tensors
            "first_block": [n.name for n in convs[:3]],
            "first_blocks": [n.name for n in convs[:6]],
            "depthwise": depthwise,
            "pointwise": [n.name for n in convs if n.name not in ends and n.name not in depthwise],
            # the 1x1 conv after each depthwise conv: an MBConv block's linear projection
            "project": project,
            "second_project": project[1:2],
            "fc": [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")],
            # pooling, FC and any alignment head: float outputs, and no float MatMul/Gemm fed by a DQ
            "tail": [n.name for n in nodes[last + 1:] if n.op_type not in ("Clip", "Relu")]}


def float_convs_fed_by_dq(model_path: Path) -> list[str]:
    """Convs left in FP32 whose input comes straight from a DequantizeLinear. ORT's level-1
    `WeightBiasQuantization` transformer quantises such a conv's float weights on the fly (per tensor),
    which wrecks depthwise kernels: found here, all-ops INT8 with the depthwise convs "kept in FP32" drops
    from cosine 0.994 (optimisations off) to 0.757 (any level). The gate, run under the serving session
    options, catches it; this names the convs at risk in the search report."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    dq_out = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    inits = {i.name for i in graph.initializer}
    return [n.name for n in graph.node
            if n.op_type == "Conv" and n.input[0] in dq_out and len(n.input) > 1 and n.input[1] in inits]


def pads_feeding(model_path: Path, convs: Iterable[str]) -> list[str]:
    """The Pad nodes (TF SAME padding) whose output feeds one of `convs`. A conv kept in FP32 must keep its
    Pad in FP32 too: a quantised Pad puts a DequantizeLinear in front of the conv, and ORT's
    WeightBiasQuantization then quantises the "FP32" conv's weights to 8 bits per tensor, which can saturate
    in AVX2's u8s8 kernels (the stem, "kept in FP32", ran as such an 8-bit conv before this)."""
    nodes = list(onnx.load(str(model_path), load_external_data=False).graph.node)
    producer = {o: n for n in nodes for o in n.output}
    wanted = set(convs)
    found: list[str] = []
    for n in nodes:
        if n.name in wanted and n.input:
            p = producer.get(n.input[0])
            while p is not None and p.op_type == "Pad":
                found.append(p.name)
                p = producer.get(p.input[0]) if p.input else None
    return found


def preprocess_for_quantization(fp32_path: Path, out: Path) -> Path:
    """ORT's recommended pre-pass (shape inference + basic graph optimisation: constant folding, BN fusion)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=True)
    return out


def calibrate(pre_path: Path, x: np.ndarray, method: str, cache: Path, *, percentile: float = 99.999) -> Path:
    """Activation ranges of every tensor, written to an ORT calibration cache so that many schemes reuse
    one calibration pass. Fed in chunks: calibrators keep a chunk's activations in memory and merge ranges
    after each collect_data call (their max_intermediate_outputs option drops data in ORT 1.31)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    # symmetric=False: post-ReLU6 tensors are non-negative, a symmetric range would waste half of u8
    extra: dict = {"symmetric": False}
    if method == "percentile":
        extra["percentile"] = percentile
    with tempfile.TemporaryDirectory(prefix="kuamo-calib-") as tmp:
        calibrator = create_calibrator(pre_path, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=methods[method], extra_options=extra)
        chunk = 16
        for i in range(0, len(x), chunk):
            calibrator.collect_data(PhotoReader(x[i: i + chunk]))
        save_tensors_data(calibrator.compute_data(), cache)
    return cache


def weight_overrides(model_path: Path, scheme: Scheme, groups: dict[str, list[str]], kept: set[str]) -> dict:
    """TensorQuantOverrides for the weights of `scheme.full_range` (s8, 8 bits) and `scheme.u8_weights` (u8, 8
    bits) groups; per channel (axis 0), as the rest: an override without an axis quantises per tensor."""
    from onnxruntime.quantization import QuantType

    if not scheme.full_range and not scheme.u8_weights:
        return {}  # the model need not be read again
    weight_of = {n.name: n.input[1] for n in onnx.load(str(model_path), load_external_data=False).graph.node
                 if n.op_type == "Conv"}
    out: dict = {}
    for kind, qtype in (("full_range", QuantType.QInt8), ("u8_weights", QuantType.QUInt8)):
        for node in (n for g in getattr(scheme, kind) for n in groups[g] if n not in kept):
            out[weight_of[node]] = [{"quant_type": qtype, "reduce_range": False, "axis": 0}]
    return out


def quantize(pre_path: Path, out: Path, scheme: Scheme, cache: Path, groups: dict[str, list[str]]) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    kept = {n for g in scheme.keep_fp32 for n in groups[g]} | set(scheme.keep_nodes)
    exclude = sorted(kept | set(pads_feeding(pre_path, kept)))
    types = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    overrides = weight_overrides(pre_path, scheme, groups, kept)
    quantize_static(str(pre_path), str(out), None, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(scheme.op_types) if scheme.op_types else None,
                    per_channel=scheme.per_channel, reduce_range=scheme.reduce_range,
                    activation_type=types[scheme.activation_type], weight_type=types[scheme.weight_type],
                    nodes_to_exclude=exclude,
                    nodes_to_quantize=list(scheme.only_nodes) or None,
                    calibrate_method=methods[scheme.calibrate], calibration_cache_path=str(cache),
                    extra_options={"ActivationSymmetric": scheme.activation_symmetric,
                                   "WeightSymmetric": scheme.weight_symmetric,
                                   **({"TensorQuantOverrides": overrides} if overrides else {})})
    if scheme.tail_weights == "int8_blockwise":
        from kuamo.export.weight_only import quantise_float_matmuls

        quantise_float_matmuls(out)  # rewrites the file once, IR version capped
    else:
        cap_ir_version(out)
    return out


def items_per_second(fp32_path: Path, int8_path: Path, x: np.ndarray, output: str, *,
                     batches: Iterable[int] = (1, 8), threads: int = BENCH_THREADS,
                     seconds: float = 1.5) -> dict:
    """Items/s of FP32 and INT8 per batch size, timed alternately (one run each, in turn) so a noisy
    neighbour on a shared machine slows both alike; medians over ~`seconds` per model and batch."""
    # no spinning: a session's pool spins after its run and takes the cores from the other one's next run
    # (alternating with spinning on, both ran 2-3x slower and batch-1 ratios swung 1.06-1.68x under AVX2)
    cfg = SessionConfig(intra_op_threads=threads, allow_spinning=False)
    sessions = {"fp32": create_session(fp32_path, cfg), "int8": create_session(int8_path, cfg)}
    result: dict = {}
    for b in batches:
        feeds = {"pixel_values": x[:b]}
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for s in sessions.values():
            s.run([output], feeds)  # warm-up
        start = time.perf_counter()
        while len(times["fp32"]) < 5 or (time.perf_counter() - start < 2 * seconds and len(times["fp32"]) < 60):
            for k, s in sessions.items():
                t0 = time.perf_counter()
                s.run([output], feeds)
                times[k].append(time.perf_counter() - t0)
        fp32, int8 = (b / float(np.median(times[k])) for k in ("fp32", "int8"))
        result[f"batch{b}"] = {"fp32_items_per_s": round(fp32, 1), "int8_items_per_s": round(int8, 1),
                               "speedup": round(int8 / fp32, 3)}
    return result


def run_outputs(path: Path, x: np.ndarray, names: list[str], batch: int = 32) -> dict[str, np.ndarray]:
    sess = create_session(path)
    parts = [sess.run(names, {"pixel_values": x[i: i + batch]}) for i in range(0, len(x), batch)]
    return {n: np.concatenate([p[j] for p in parts]) for j, n in enumerate(names)}


@dataclass
class Evaluation:
    """Everything measured for one scheme; `entry` is what the manifest's `tried` list records."""

    scheme: Scheme
    gate: object
    speed: dict
    extra: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.gate.passed)

    @property
    def speedup(self) -> float:
        return float(self.speed["batch8"]["speedup"])

    def entry(self) -> dict:
        s = self.gate.stats
        return {"scheme": self.scheme.name, "settings": self.scheme.settings(),
                "cosine_mean": round(s["cosine_mean"], 5), "cosine_min": round(s["cosine_min"], 5),
                "passed": self.passed, "gate_reason": self.gate.reason, "speed": self.speed,
                "speedup_batch8": self.speedup, "speedup_batch1": self.speed.get("batch1", {}).get("speedup"),
                **self.extra}


def evaluate(scheme: Scheme, *, fp32_path: Path, int8_path: Path, reference: dict[str, np.ndarray],
             gate_inputs: np.ndarray, output: str) -> Evaluation:
    """Gate the quantised model against FP32 on `output` and time both; also record diagnostics that
    the raw cosine hides (features are non-negative, so even unrelated images have cosine ~0.7)."""
    names = [output] + (["logits"] if output != "logits" and "logits" in reference else [])
    got = run_outputs(int8_path, gate_inputs, names)
    gate = int8_gate(reference[output], got[output])
    extra: dict = {}
    if "logits" in got:
        extra["logits_top1_agreement"] = round(float((got["logits"].argmax(1) == reference["logits"].argmax(1))
                                                     .mean()), 4)
    centre = reference[output].mean(axis=0, keepdims=True)
    extra["centred_cosine_mean"] = round(parity_stats(reference[output] - centre, got[output] - centre)
                                         ["cosine_mean"], 5)
    extra["float_convs_fed_by_dq"] = len(float_convs_fed_by_dq(int8_path))
    speed = items_per_second(fp32_path, int8_path, gate_inputs[:8], output)
    return Evaluation(scheme, gate, speed, extra)


def choose_int8(fp32_path: Path, int8_path: Path, *, calibration: np.ndarray, gate_inputs: np.ndarray,
                output: str, progress: Progress = print,
                schemes: Iterable[Scheme] = EXPORT_SCHEMES, portable: bool = False) -> dict:
    """Try `schemes` in export_order; write the first that passes the gate and is >= MIN_SPEEDUP x FP32
    (batch 8) to `int8_path`. Returns the manifest's `quantization` record (chosen is None when FP32 is
    served)."""
    cpu = cpu_flags()
    result: dict = {"cpu": cpu, "tried": [], "chosen": None, "min_speedup": MIN_SPEEDUP,
                    "bench_threads": BENCH_THREADS,
                    "method": f"onnxruntime.quantization.quantize_static (QDQ, u8 activations, s8 per-channel "
                              f"weights, 7-bit where reduce_range; the FP32 tail's matrix products 8-bit blockwise "
                              f"where tail_weights), calibration on {len(calibration)} real photos "
                              f"disjoint from the {len(gate_inputs)} gate photos"}
    with tempfile.TemporaryDirectory(prefix="kuamo-int8-") as tmp:
        pre = preprocess_for_quantization(fp32_path, Path(tmp) / "pre.onnx")
        groups = conv_groups(pre)
        ref = run_outputs(fp32_path, gate_inputs, sorted({output, "logits"}))
        caches: dict[str, Path] = {}
        result["order"] = "portable first" if portable or not cpu["vnni"] else "8-bit first (VNNI)"
        for scheme in export_order(schemes, cpu, portable=portable):
            if scheme.calibrate not in caches:
                caches[scheme.calibrate] = calibrate(pre, calibration, scheme.calibrate,
                                                     Path(tmp) / f"{scheme.calibrate}.json")
            path = quantize(pre, Path(tmp) / f"{scheme.name}.onnx", scheme, caches[scheme.calibrate], groups)
            ev = evaluate(scheme, fp32_path=fp32_path, int8_path=path, reference=ref, gate_inputs=gate_inputs,
                          output=output)
            entry = ev.entry()
            result["tried"].append(entry)
            progress(f"image: INT8 {scheme.name}: cos mean {entry['cosine_mean']} min {entry['cosine_min']}, "
                     f"{entry['speedup_batch1']}x / {entry['speedup_batch8']}x FP32 at batch 1 / 8")
            result["gate"] = ev.gate.to_dict()
            if ev.passed and ev.speedup >= MIN_SPEEDUP:
                path.replace(int8_path)
                portable = saturation_free(entry)
                result.update(chosen=scheme.name, saturation_free=portable,
                              reason=f"{scheme.name} passed the gate and ran {ev.speedup}x FP32 at batch 8 on "
                                     f"this CPU ({cpu['model']}, VNNI: {cpu['vnni']}); "
                                     + ("portable weights (7-bit s8; 8 bits only where the kernels widen to 16 "
                                        "bits): the same sums on CPUs with or without VNNI" if portable
                                        else "8-bit weights: gated for this kind of CPU only")
                                     + ("; the tail's 8-bit blockwise weights (MatMulNBits) agree to cosine "
                                        "0.999998 between AVX2 and VNNI kernels"
                                        if scheme.tail_weights == "int8_blockwise" else ""))
                return result
    passed = [t for t in result["tried"] if t["passed"]]
    result["reason"] = (
        "no INT8 scheme passed the accuracy gate; serving FP32" if not passed else
        f"INT8 passed the gate but was not >= {MIN_SPEEDUP}x faster than FP32 on this CPU "
        f"({cpu['model']}, VNNI: {cpu['vnni']}; best {max(t['speedup_batch8'] for t in passed)}x); serving FP32")
    return result
