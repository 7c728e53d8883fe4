"""Choosing an INT8 scheme for the image tower by measurement on the exporting CPU.

Convolutions dominate EfficientNet's time. Whether INT8 helps depends on the CPU: with VNNI, u8s8
products are exact and fast; without it, ORT's u8s8 kernels can saturate (models.md measured cosine 0.48)
and reduce_range costs accuracy. So every candidate is gated for accuracy AND timed against FP32 here;
the first that passes both is served, otherwise FP32 is, with the reason recorded.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from kuamo.engine.config import SessionConfig
from kuamo.engine.session import create_session
from kuamo.export.gate import int8_gate
from kuamo.export.onnx_info import cap_ir_version

MIN_SPEEDUP = 1.10  # INT8 must beat FP32 by 10% items/s at batch 8 to be worth its accuracy cost


def cpu_flags() -> dict:
    flags: set[str] = set()
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                elif line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"model": model, "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
            "vnni": bool({"avx512_vnni", "avx_vnni"} & flags), "amx_int8": "amx_int8" in flags}


class _Calibration:
    """onnxruntime CalibrationDataReader over preprocessed photos."""

    def __init__(self, x: np.ndarray, batch: int = 16) -> None:
        self.batches = iter([{"pixel_values": x[i: i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict | None:
        return next(self.batches, None)

    def rewind(self) -> None:  # not needed for a single pass
        pass


def _conv_groups(model_path: Path) -> tuple[list[str], list[str]]:
    """(sensitive, pointwise) Conv node names. Sensitive = depthwise convolutions, the stem and the head
    conv, the usual INT8 accuracy suspects; pointwise = the 1x1 expand/project convs, in graph order."""
    graph = onnx.load(str(model_path)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    depthwise = {n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)}
    sensitive = depthwise | {convs[0].name, convs[-1].name}
    return sorted(sensitive), [n.name for n in convs if n.name not in sensitive]


def relative_speed(fp32_path: Path, int8_path: Path, x: np.ndarray, output: str, *, threads: int = 2,
                   rounds: int = 12) -> tuple[float, float]:
    """(fp32 items/s, int8 items/s), timed alternately so a noisy neighbour hits both alike."""
    cfg = SessionConfig(intra_op_threads=threads)
    sessions = [create_session(fp32_path, cfg), create_session(int8_path, cfg)]
    feeds = {"pixel_values": x}
    times: list[list[float]] = [[], []]
    for s in sessions:
        s.run([output], feeds)  # warm-up
    for _ in range(rounds):
        for i, s in enumerate(sessions):
            t0 = time.perf_counter()
            s.run([output], feeds)
            times[i].append(time.perf_counter() - t0)
    fp32_ips, int8_ips = (len(x) / float(np.median(t)) for t in times)
    return fp32_ips, int8_ips


def _quantize(pre_path: Path, out: Path, calibration: np.ndarray, *, exclude: list[str], calibrate: str,
              reduce_range: bool = False) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[calibrate]
    extra = {"CalibPercentile": 99.99} if calibrate == "percentile" else {}
    quantize_static(str(pre_path), str(out), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    reduce_range=reduce_range, op_types_to_quantize=["Conv"], nodes_to_exclude=exclude,
                    calibrate_method=method, extra_options=extra)
    cap_ir_version(out)


def choose_int8(fp32_path: Path, int8_path: Path, *, calibration: np.ndarray, gate_inputs: np.ndarray,
                output: str, progress: Callable[[str], None] = print) -> dict:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from kuamo.export.image_tower import run_onnx

    cpu = cpu_flags()
    result: dict = {"cpu": cpu, "tried": [], "chosen": None, "min_speedup": MIN_SPEEDUP,
                    "method": "onnxruntime.quantization.quantize_static, QDQ, Conv only, MinMax calibration "
                              f"on {len(calibration)} photos disjoint from the {len(gate_inputs)} gate photos"}
    with tempfile.TemporaryDirectory() as tmp:
        pre_path = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=True)
        sensitive, pointwise = _conv_groups(pre_path)
        # Fastest first. Measured on a VNNI EPYC: all convs INT8 is ~1.5x FP32 but cosine ~0.81;
        # keeping depthwise/stem/head in FP32 gives ~0.99/0.97 (borderline); also keeping the first and
        # last three pointwise convs gives ~0.998/0.997 at ~1.1-1.2x.
        candidates = [
            {"scheme": "all_convs", "exclude": [], "calibrate": "minmax"},
            {"scheme": "keep_depthwise_stem_head_fp32_percentile", "exclude": sensitive, "calibrate": "percentile"},
            {"scheme": "keep_depthwise_stem_head_and_outer3_pointwise_fp32",
             "exclude": sensitive + pointwise[:3] + pointwise[-3:], "calibrate": "minmax"},
        ]
        if not cpu["vnni"]:  # 7-bit weights avoid u8s8 saturation where there is no VNNI
            candidates = [{**c, "scheme": c["scheme"] + "_reduce_range", "reduce_range": True} for c in candidates]
        ref = run_onnx(fp32_path, gate_inputs)[output]
        bench = gate_inputs[:8]
        for cand in candidates:
            path = Path(tmp) / f"{cand['scheme']}.onnx"
            _quantize(pre_path, path, calibration, exclude=cand["exclude"], calibrate=cand["calibrate"],
                      reduce_range=cand.get("reduce_range", False))
            gate = int8_gate(ref, run_onnx(path, gate_inputs)[output])
            fp32_ips, ips = relative_speed(fp32_path, path, bench, output)
            entry = {"scheme": cand["scheme"], "fp32_convs_kept": len(cand["exclude"]),
                     "calibration": cand["calibrate"], "per_channel": True,
                     "reduce_range": cand.get("reduce_range", False),
                     "cosine_mean": round(gate.stats["cosine_mean"], 5),
                     "cosine_min": round(gate.stats["cosine_min"], 5), "gate_passed": gate.passed,
                     "fp32_items_per_s_batch8": round(fp32_ips, 1), "int8_items_per_s_batch8": round(ips, 1),
                     "speedup_vs_fp32": round(ips / fp32_ips, 2)}
            result["tried"].append(entry)
            progress(f"image: INT8 {cand['scheme']}: cos mean {entry['cosine_mean']} min {entry['cosine_min']}, "
                     f"{entry['speedup_vs_fp32']}x FP32")
            if gate.passed and ips >= MIN_SPEEDUP * fp32_ips:
                path.replace(int8_path)
                result.update(chosen=cand["scheme"], gate=gate.to_dict(),
                              reason=f"{cand['scheme']} passed the gate and ran {entry['speedup_vs_fp32']}x FP32 "
                                     f"at batch 8 on this CPU (VNNI: {cpu['vnni']})")
                return result
            result["gate"] = gate.to_dict()
    passed = [t for t in result["tried"] if t["gate_passed"]]
    result["reason"] = (
        "no INT8 scheme passed the accuracy gate" if not passed else
        f"INT8 passed the gate but was not >= {MIN_SPEEDUP}x faster than FP32 on this CPU "
        f"(best {max(t['speedup_vs_fp32'] for t in passed)}x); serving FP32")
    return result
