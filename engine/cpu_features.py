"""The CPU's INT8-relevant features, and whether an INT8 tower gated on one CPU can be served on this one.

With VNNI (AVX-512 VNNI or AVX-VNNI) u8 x s8 dot products accumulate in int32; without it ONNX Runtime's
AVX2 / AVX-512 kernels sum pairs of products in int16 (vpmaddubsw) and saturate. A QDQ image tower with
8-bit weights gated on a VNNI CPU is therefore wrong elsewhere: the shipped scheme, gated at cosine 0.997 mean /
0.984 min on an AMD EPYC with VNNI, gave 0.944 / 0.738 against FP32 on 16 real photos under an AVX2-only
(Haswell) CPU model in qemu. 7-bit weights (reduce_range) cannot saturate and are safe everywhere."""

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


def int8_mismatch(quantization: dict[str, Any], here: dict[str, Any]) -> str | None:
    """Why an INT8 tower quantised as `quantization` (its manifest entry) must not be served on a CPU with the
    features `here`, or None when it may. Only static QDQ with 8-bit weights chosen on a VNNI CPU is at risk."""
    chosen = quantization.get("chosen")
    made_on = quantization.get("cpu") or {}
    if not chosen or not made_on.get("vnni") or here.get("vnni"):
        return None
    settings = next((t.get("settings", {}) for t in quantization.get("tried", []) if t.get("scheme") == chosen), {})
    if settings.get("reduce_range"):
        return None
    return (f"the INT8 scheme {chosen!r} was gated on a CPU with VNNI ({made_on.get('model', '?')}); this CPU "
            f"({here.get('model', '?')}) has none, where its 8-bit weights saturate (cosine to FP32 0.94 mean / 0.74 "
            "min measured without VNNI); serving FP32. Run `kuamo export` on this kind of CPU to choose for it")
