"""The CPU's INT8-relevant features, and whether an INT8 tower gated on one CPU can be served on this one.

With VNNI (AVX-512 VNNI or AVX-VNNI) u8 x s8 dot products accumulate in int32; without it ONNX Runtime's
AVX2 / AVX-512 kernels sum pairs of products in int16 (vpmaddubsw) and saturate. A QDQ image tower with
8-bit weights gated on a VNNI CPU is therefore wrong elsewhere: the shipped scheme, gated at cosine 0.997 mean /
0.984 min on an AMD EPYC with VNNI, gave 0.944 / 0.738 against FP32 on 16 real photos under an AVX2-only
(Haswell) CPU model in qemu. 7-bit weights (reduce_range) cannot saturate (a pair sum is at most
2 x 255 x 63 = 32,130), so such a tower computes the same int32 sums with and without VNNI, provided no conv
left in FP32 is fed by a DequantizeLinear: ORT quantises those convs' weights to 8 bits when it loads the model.
An export records that count per scheme (`float_convs_fed_by_dq`)."""

from __future__ import annotations

from typing import Any


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """The INT8-relevant features of this CPU, from /proc/cpuinfo (Linux; unknown elsewhere)."""
    flags: set[str] = set()
    model = "unknown"
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                elif line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"model": model, "avx2": "avx2" in flags, "avx512": "avx512f" in flags,
            "vnni": bool({"avx512_vnni", "avx_vnni"} & flags), "amx_int8": "amx_int8" in flags}


WIDENING_GROUPS = {"depthwise", "first_depthwise"}  # export/image_int8.py groups run by MLAS's depthwise kernels


def saturation_free(entry: dict[str, Any]) -> bool:
    """Whether the INT8 scheme recorded as `entry` (one of the manifest's `quantization.tried`) computes the same
    on every x86 CPU: 7-bit s8 weights or u8 weights (ORT's u8u8 kernels widen both sides to 16 bits before
    multiplying), 8-bit s8 weights only on depthwise convs (widened likewise), and no FP32 conv that ORT would
    quantise to 8 bits at load time."""
    settings = entry.get("settings", {})
    exact = bool(settings.get("reduce_range")) or settings.get("weight_type") == "u8"
    # 8-bit s8 weights kept under reduce_range only where MLAS's depthwise kernels widen to 16 bits first
    widened = set(settings.get("full_range") or ()) <= WIDENING_GROUPS
    return exact and widened and entry.get("float_convs_fed_by_dq") == 0


def int8_mismatch(quantization: dict[str, Any], here: dict[str, Any]) -> str | None:
    """Why an INT8 tower quantised as `quantization` (its manifest entry) must not be served on a CPU with the
    features `here`, or None when it may. Only static QDQ chosen on a VNNI CPU that is not saturation-free is at
    risk (8-bit weights, or an export from before the float-conv count was recorded)."""
    chosen = quantization.get("chosen")
    made_on = quantization.get("cpu") or {}
    if not chosen or not made_on.get("vnni") or here.get("vnni"):
        return None
    entry = next((t for t in quantization.get("tried", []) if t.get("scheme") == chosen), {})
    if saturation_free(entry):
        return None
    return (f"the INT8 scheme {chosen!r} was gated on a CPU with VNNI ({made_on.get('model', '?')}); this CPU "
            f"({here.get('model', '?')}) has none, where its 8-bit weights can saturate (cosine to FP32 0.94 mean / "
            "0.74 min measured without VNNI); serving FP32. Run `kuamo export` on this kind of CPU to choose for it")


def int8_drift(quantization: dict[str, Any], here: dict[str, Any]) -> str | None:
    """Why a tower quantised as `quantization` computes somewhat differently on a CPU with the features `here`
    though it may still be served, or None. The text tower's record (weights from quantize_dynamic, no scheme
    choice): 8-bit weights saturate some int16 pair sums without VNNI, so its vectors drift from those of a VNNI
    CPU (gate 0.9965 / 0.9929 with VNNI vs 0.9950 / 0.9904 with AVX2 kernels: still within the gate)."""
    if "chosen" in quantization or here.get("vnni") or quantization.get("weight_type") != "QInt8" \
            or quantization.get("reduce_range") is not False:
        return None
    return ("its 8-bit INT8 weights saturate some sums on this CPU (no VNNI): still within the accuracy gate, but "
            "its vectors differ slightly from those a VNNI CPU computes, e.g. a catalog indexed there; "
            "`kuamo export --portable-int8` makes 7-bit weights that compute the same on both")
