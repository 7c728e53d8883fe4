"""Search INT8 schemes for the image tower and report accuracy and speed of each (offline, minutes).

    python -m kuamo.export.image_int8_search [--fp32 models/default/image.onnx] [--sensitivity [--reduce-range]] \
        [--json benchmarks/results/image_int8_search.json]

Every scheme is calibrated on real fashion photos disjoint from the gate photos, gated with
export.gate.int8_gate on the pooled `features` and timed against FP32 at batch 1 and 8 with
2 intra-op threads (alternating runs). `export_image_tower` runs only EXPORT_SCHEMES (image_int8.py),
picked from this search; re-run it on a new CPU family before changing them.

Findings (AMD EPYC with AVX-512 VNNI, 2 shared cores, ORT 1.31.1, 256 gate / 128 calibration photos,
gate on `features`; speed = INT8 items/s / FP32 items/s, noisy to about +-0.3 on the shared machine).
Earlier model (before the fine-tuned backbone), the stem's Pad still quantised (see below):

    scheme                                     cos mean  cos min  top-1 agree  b1 x  b8 x  gate
    conv_only_all                                0.852    0.643     0.48       1.4   1.4   fail
    all_ops (Conv+Clip+Add+Pad+pool+Gemm)        0.992    0.955     0.88       1.9   1.7   fail
    all_ops_percentile / _entropy                0.992    0.968 / 0.954         1.7   1.7   fail
    all_ops_activation_symmetric                 0.990    0.941     0.88       1.3   1.2   fail
    all_ops_s8s8                                 0.990    0.967     0.88       1.0   1.0   fail
    all_ops_per_tensor                           0.743    0.547     0.39       1.7   1.8   fail
    all_ops_reduce_range (7-bit weights)         0.960    0.850     0.72       1.9   1.7   fail
    all_ops_keep_depthwise (FP32 dw)             0.769    0.568     0.36       1.4   1.5   fail (ORT bug, below)
    conv_only_keep_depthwise_stem_head           0.993    0.973     0.89       1.4   0.8-1.2 pass, slow
    conv_trunk_keep_stem_first_depthwise         0.9955   0.978     0.92       1.4-2.3 1.6  pass
    ..._percentile                               0.995    0.974     0.92       1.7   1.7   pass
    ..._reduce_range                             0.985    0.967     0.84       2.0   1.7   fail

Current model (fine-tuned backbone + alignment head), 2026-12-04; "Haswell" = cosine on the first 24 gate
photos under `qemu-x86_64 -cpu Haswell` (AVX2, no AVX-512, no VNNI: ORT's saturating u8s8 kernels), native
on the same 24 in brackets. The machine was loaded (load average ~15 on 2 cores): only ratios from one
round-robin run mean anything, and within one run they moved by +-0.2. Cosines below are on `features`.

    scheme (keep_fp32 / calibration)           cos mean  cos min  top-1  b1 x  b8 x  Haswell (native) n=24
    trunk, 8-bit, stem Pad quantised (shipped)   0.9970   0.9842   -      1.7   1.6   0.944 / 0.738 (n=16)
    trunk_reduce_range, stem Pad quantised       0.9942   0.9807   0.945  1.9   1.8   0.99421 / 0.98570 (same)
    trunk, 8-bit                                 0.9986   0.9971   0.961  1.9   1.7   0.981 / 0.954 (0.9986 / 0.9978)
    trunk_reduce_range                           0.9946   0.9845   0.934  1.4-1.7 1.7 0.99459 / 0.98778 (same)
    trunk_reduce_range, 384 calibration photos   0.9946   0.9850   0.930  1.6   1.7   -
    trunk_reduce_range_percentile                0.9947   0.9865   0.945  1.4   1.5   -
    first 3 convs FP32, reduce_range             0.9953   0.9896   0.934  1.5   1.7   -
    first_blocks (6 convs) FP32, reduce_range    0.9967   0.9929   0.938  1.4-1.8 1.4-1.6 0.99702 / 0.99499 (same)
      <- export (first_blocks + tail in FP32)

`kuamo export` gates `embedding` (the alignment head's output, 384-d), which moves more than `features`:
on `embedding`, same 256 photos: 8-bit trunk 0.9973 / 0.9898; 7-bit trunk 0.9900 / 0.9690 (fails: a full
export on this machine chose the 8-bit trunk after it); 7-bit with 384 calibration photos 0.9899 / 0.9675,
percentile 0.9902 / 0.9693; 7-bit with the first 3 / 6 / 9 / 12 convs in FP32 0.9913 / 0.9781, 0.9934 /
0.9783, 0.9940 / 0.9692, 0.9943 / 0.9770 (9 and 12 leave convs in FP32 behind a DequantizeLinear). So
the export tries first_blocks with 7-bit weights first: about 10% behind the 8-bit trunk on VNNI (b1 1.71
vs 1.85, b8 1.48 vs 1.84, b16 1.50 vs 1.54, b32 1.67 vs 1.79 x FP32 in one side-by-side run), and it
serves INT8 on AVX2-only CPUs, which otherwise fall back to FP32 (1.5-1.8x slower on VNNI). A full
`kuamo export` here chose it (0.99343 / 0.9783 on `embedding`, 1.51x / 1.50x FP32 at batch 1 / 8, manifest
`saturation_free: true`, served as INT8 for an AVX2-only CPU's flags); its image.int8.onnx gives the same
`embedding` under qemu Haswell as natively on 16 photos (max |diff| 1.5e-8, FP32 rounding in the head).

AVX2 kernels, measured (2026-12-05): `python -m kuamo.benchmarks.avx2_only -- python -m
kuamo.export.image_int8_search --output embedding ...` on the AMD EPYC with AVX-512/VNNI hidden from ONNX Runtime
(cpuid trapped, see benchmarks/avx2_only.py; FP32 with its Pads, before export.pad_folding), gate on `embedding`:

    scheme                                     cos mean  cos min  b1 x  b8 x   note
    trunk, 8-bit (the VNNI export's)             0.9360   0.5056  1.57  1.37   saturates: u8s8 int16 pair sums
    trunk_reduce_range                           0.9900   0.9690  1.40  1.30   fails (min)
    first_block_reduce_range (3 convs FP32)      0.9912   0.9781  1.63  1.33   exported until the gate took 1,024
    first_blocks_reduce_range (6 convs FP32)     0.9934   0.9783  1.46  1.16   photos (image_int8.EXPORT_SCHEMES)
    trunk / first_block / first_blocks, u8u8     0.9976-0.9982 >= 0.991 0.45-0.50 0.44  exact but slow: ORT's u8u8
                                                                                 5x5 depthwise convs (70% of time)

Profile of first_block at batch 8: Pad 13% + DequantizeLinear 12% + QuantizeLinear 6% (a quantised tensor is
dequantised, padded in float and quantised again before each stride-2 depthwise conv; the FP32 tower spends 17%
in its Pads). export.pad_folding folds them into the convs: FP32 1.15-1.45x faster, and first_block INT8 then
runs 1.36-1.37x / 1.47-1.55x the folded FP32 at batch 1 / 8 (2 threads, no spinning; with spinning, alternating
sessions ran 2-3x slower and batch-1 ratios swung from 1.06 to 1.68). Quantising the pooling and head too:
batch 1 1.52x but the gate fails (0.9898 / 0.972); all but the Gemms: 1.39x, 0.9904 / 0.975 (too close to the
gate); 8-bit weight-only MatMulNBits for the head Gemms: 0.72x at batch 1 (slower than FP32 Gemm here).
u8 weights on the stem and first depthwise only (TensorQuantOverrides) fail the gate (0.984 / 0.936): the
stem's input quantisation, not its weights, is what costs.

(trunk = stem + first depthwise + tail in FP32, everything from the first pointwise conv to the head conv
in INT8, minmax calibration.) With 7-bit weights a pair of u8 x s8 products sums to at most 2 x 255 x 63 =
32,130, so AVX2's int16 pair sums cannot saturate: the reduce_range rows checked are bit-identical under
Haswell, so a native gate result is what an AVX2-only CPU gets (the speed there cannot be measured on this
machine). 8-bit weights saturate there. (The stem that ORT quantised to 8 bits per tensor in the second row
did not visibly saturate on these 24 photos; `cpu_features.saturation_free` still refuses such a model.)
On VNNI both use the same kernels, so the 7-bit trunk is as fast as the 8-bit one: side by side (7-bit vs
8-bit, x FP32) b1 1.68 vs 1.69, b8 1.81 vs 1.72, b16 1.57 vs 1.66, b32 1.75 vs 1.64 in one run, the other
way round in an earlier run (b8 1.59 vs 1.84, b16 1.87 vs 1.54), i.e. noise.

Batch size (same run, 2 threads, photos/s FP32 / 7-bit / 8-bit): b1 7.0 / 11.8 / 11.9, b8 12.1 / 21.9 / 20.8,
b16 15.8 / 24.8 / 26.2, b32 19.0 / 33.2 / 31.2. Absolute rates are ~5x below an idle run (load ~15 on the
2 cores), but no larger batch was slower here, so the batch-32 slowdown seen on a Xeon (131 photos/s at
b32 vs 229 at b8) is not reproduced and the tower's max_batch stays 32 (serving already batches photos one
at a time: server.config.image_max_batch_size = 1).

Per-layer sensitivity (one conv quantised at a time): the stem conv (1 - cos 0.099) and the first
depthwise conv (0.050) dominate; every other layer is <= 0.003. ORT trap: a conv left in FP32 whose
input comes from a DequantizeLinear gets its float weights quantised per tensor by ORT's level-1
`WeightBiasQuantization` transformer, so "keep depthwise in FP32" is worse than quantising it (0.994 with
optimisations off, 0.757 with them on); only keep layers in FP32 that are fed by float tensors. The same
trap hit the stem "kept in FP32": its TF-SAME Pad was quantised, so a DequantizeLinear fed it. `quantize`
now keeps the Pads in front of kept convs in FP32 too (image_int8.pads_feeding).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from kuamo.engine.imaging import ImagePreprocess
from kuamo.export.image_int8 import (
    EXPORT_SCHEMES,
    Evaluation,
    Scheme,
    calibrate,
    conv_groups,
    cpu_flags,
    evaluate,
    preprocess_for_quantization,
    quantize,
    run_outputs,
)
from kuamo.export.progress import StepProgress

ALL = ("stem", "depthwise", "head", "fc")
# In order of promise: everything INT8 first (fastest), then the accuracy levers one at a time.
SEARCH_SCHEMES = (
    Scheme("conv_only_all", op_types=("Conv",)),
    Scheme("all_ops"),
    Scheme("all_ops_percentile", calibrate="percentile"),
    Scheme("all_ops_entropy", calibrate="entropy"),
    Scheme("all_ops_activation_symmetric", activation_symmetric=True),
    Scheme("all_ops_s8s8", activation_type="s8", activation_symmetric=True),
    Scheme("all_ops_per_tensor", per_channel=False),
    Scheme("all_ops_reduce_range", reduce_range=True),
    Scheme("all_ops_keep_stem_head_fc", keep_fp32=("stem", "head", "fc")),
    Scheme("all_ops_keep_depthwise", keep_fp32=("depthwise",)),
    Scheme("all_ops_keep_depthwise_stem_head_fc", keep_fp32=ALL),
    Scheme("all_ops_keep_depthwise_stem_head_fc_percentile", calibrate="percentile", keep_fp32=ALL),
    Scheme("all_ops_keep_depthwise_stem_head_fc_reduce_range", reduce_range=True, keep_fp32=ALL),
    Scheme("conv_only_keep_depthwise_stem_head", op_types=("Conv",), keep_fp32=("stem", "depthwise", "head")),
    # the two layers per-layer sensitivity ranks far above the rest (stem 0.099, first depthwise 0.050)
    Scheme("all_ops_keep_stem", keep_fp32=("stem",)),
    Scheme("all_ops_keep_stem_first_depthwise", keep_fp32=("stem", "first_depthwise")),
    Scheme("all_ops_keep_stem_first_depthwise_percentile", calibrate="percentile",
           keep_fp32=("stem", "first_depthwise")),
    Scheme("all_ops_keep_stem_first_depthwise_entropy", calibrate="entropy", keep_fp32=("stem", "first_depthwise")),
    Scheme("all_ops_keep_stem_first_depthwise_reduce_range", reduce_range=True,
           keep_fp32=("stem", "first_depthwise")),
    Scheme("conv_trunk_keep_stem_first_depthwise", keep_fp32=("stem", "first_depthwise", "tail")),
    Scheme("conv_trunk_keep_stem_first_depthwise_reduce_range", reduce_range=True,
           keep_fp32=("stem", "first_depthwise", "tail")),
    Scheme("conv_trunk_keep_stem_first_depthwise_percentile", calibrate="percentile",
           keep_fp32=("stem", "first_depthwise", "tail")),
    # 7-bit weights: the same sums with and without VNNI (see the findings above)
    Scheme("conv_trunk_keep_stem_first_depthwise_reduce_range_percentile", calibrate="percentile",
           reduce_range=True, keep_fp32=("stem", "first_depthwise", "tail")),
    Scheme("conv_trunk_keep_first_blocks_reduce_range", reduce_range=True, keep_fp32=("first_blocks", "tail")),
    Scheme("conv_trunk_keep_first_block_reduce_range", reduce_range=True, keep_fp32=("first_block", "tail")),
    *EXPORT_SCHEMES[:2],  # 7-bit 1x1 convs, 8-bit depthwise, u8 projections
    # u8 weights (u8u8 kernels): 8-bit weights that cannot saturate without VNNI either
    Scheme("conv_trunk_keep_stem_first_depthwise_u8u8", weight_type="u8",
           keep_fp32=("stem", "first_depthwise", "tail")),
    Scheme("conv_trunk_keep_stem_u8u8", weight_type="u8", keep_fp32=("stem", "tail")),
    Scheme("conv_trunk_keep_first_block_u8u8", weight_type="u8", keep_fp32=("first_block", "tail")),
    Scheme("conv_trunk_keep_first_blocks_u8u8", weight_type="u8", keep_fp32=("first_blocks", "tail")),
    Scheme("conv_only_keep_depthwise_stem_head_tail", op_types=("Conv",),
           keep_fp32=("stem", "depthwise", "head", "tail")),
)


def sensitivity(pre: Path, cache: Path, groups: dict[str, list[str]], *, fp32: Path, x, output: str,
                work: Path, progress, reduce_range: bool = False) -> list[dict]:
    """Per-layer sensitivity: quantise one conv (or the FC) at a time, everything else FP32, and measure
    how far `output` moves (1 - mean cosine) on a few photos. Sorted most sensitive first."""
    ref = run_outputs(fp32, x, [output])
    rows = []
    names = [n for g in ("stem", "depthwise", "pointwise", "head", "fc") for n in groups[g]]
    kind = {n: g for g in ("stem", "depthwise", "pointwise", "head", "fc") for n in groups[g]}
    for i, node in enumerate(names):
        probe = Scheme(f"only_{node}", only_nodes=(node,), reduce_range=reduce_range)
        path = quantize(pre, work / "probe.onnx", probe, cache, groups)
        got = run_outputs(path, x, [output])[output]
        a, b = ref[output], got
        cos = (a * b).sum(1) / (((a * a).sum(1) * (b * b).sum(1)) ** 0.5 + 1e-12)
        rows.append({"node": node, "group": kind[node], "cosine_mean": float(cos.mean()),
                     "cosine_min": float(cos.min()), "loss": float(1 - cos.mean())})
        if i % 10 == 9:
            progress(f"sensitivity: {i + 1}/{len(names)} layers probed")
    return sorted(rows, key=lambda r: -r["loss"])


def greedy_schemes(ranked: list[dict], counts=(2, 4, 8, 12, 16), reduce_range: bool = False) -> list[Scheme]:
    """Keep the k most sensitive layers in FP32, everything else INT8."""
    suffix = "_reduce_range" if reduce_range else ""
    return [Scheme(f"all_ops_keep_top{k}_sensitive{suffix}", keep_nodes=tuple(r["node"] for r in ranked[:k]),
                   reduce_range=reduce_range) for k in counts]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fp32", type=Path, help="FP32 image.onnx (default: export one to a temp dir)")
    ap.add_argument("--gate", type=int, default=256, help="gate photos (>= 200)")
    ap.add_argument("--calibration", type=int, default=128, help="calibration photos")
    ap.add_argument("--schemes", help="comma-separated subset of scheme names")
    ap.add_argument("--sensitivity", action="store_true", help="also run per-layer sensitivity + greedy")
    ap.add_argument("--reduce-range", action="store_true",
                    help="sensitivity and greedy schemes with 7-bit weights (what CPUs without VNNI can run)")
    ap.add_argument("--json", type=Path, help="write the findings here")
    ap.add_argument("--output", default="features", choices=("features", "embedding"),
                    help="the output gated: `kuamo export` gates `embedding` (the alignment head's)")
    args = ap.parse_args(argv)

    from kuamo.export.image_tower import gate_and_calibration_photos

    progress = StepProgress("image INT8 scheme search")
    output = args.output
    with tempfile.TemporaryDirectory(prefix="kuamo-int8-search-") as tmp_name:
        tmp = Path(tmp_name)
        fp32 = args.fp32
        if fp32 is None:
            from kuamo.export.effnet_lite import load_pretrained
            from kuamo.export.image_tower import ImageTower, export_onnx

            fp32 = tmp / "image.onnx"
            export_onnx(ImageTower(load_pretrained()[0]).eval(), fp32, ImagePreprocess().size)
            progress("exported FP32")
        gate_x, calib_x = gate_and_calibration_photos(args.gate, args.calibration, ImagePreprocess())
        progress(f"{len(gate_x)} gate + {len(calib_x)} calibration photos (disjoint)")
        pre = preprocess_for_quantization(fp32, tmp / "pre.onnx")
        groups = conv_groups(pre)
        ref = run_outputs(fp32, gate_x, [output, "logits"])
        schemes = list(SEARCH_SCHEMES)
        if args.schemes:
            wanted = set(args.schemes.split(","))
            schemes = [s for s in schemes if s.name in wanted]
        caches: dict[str, Path] = {}

        def cache_for(method: str) -> Path:
            if method not in caches:
                t0 = time.perf_counter()
                caches[method] = calibrate(pre, calib_x, method, tmp / f"{method}.json")
                progress(f"calibrated ({method}) in {time.perf_counter() - t0:.0f}s")
            return caches[method]

        results: list[Evaluation] = []
        report: dict = {"cpu": cpu_flags(), "gate_photos": len(gate_x), "calibration_photos": len(calib_x),
                        "groups": {g: len(v) for g, v in groups.items()}}

        def run(scheme: Scheme) -> None:
            path = quantize(pre, tmp / "candidate.onnx", scheme, cache_for(scheme.calibrate), groups)
            ev = evaluate(scheme, fp32_path=fp32, int8_path=path, reference=ref, gate_inputs=gate_x, output=output)
            results.append(ev)
            e = ev.entry()
            progress(f"{scheme.name}: cos mean {e['cosine_mean']:.4f} min {e['cosine_min']:.4f} "
                     f"top1 {e.get('logits_top1_agreement')} passed={e['passed']} | speedup b1 "
                     f"{e['speedup_batch1']}x b8 {e['speedup_batch8']}x "
                     f"(fp32 b8 {e['speed']['batch8']['fp32_items_per_s']}/s)")

        for scheme in schemes:
            run(scheme)
        if args.sensitivity:
            ranked = sensitivity(pre, cache_for("minmax"), groups, fp32=fp32, x=gate_x[:64], output=output,
                                 work=tmp, progress=progress, reduce_range=args.reduce_range)
            report["sensitivity"] = ranked
            progress("most sensitive: " + ", ".join(f"{r['node']}({r['group']}) {r['loss']:.4f}"
                                                    for r in ranked[:8]))
            for scheme in greedy_schemes(ranked, reduce_range=args.reduce_range):
                run(scheme)
        report["tried"] = [ev.entry() for ev in results]
    progress.done()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"\n{'scheme':52} {'cos mean':>8} {'cos min':>8} {'top1':>6} {'pass':>5} {'b1 x':>6} {'b8 x':>6}")
    for e in report["tried"]:
        print(f"{e['scheme']:52} {e['cosine_mean']:8.4f} {e['cosine_min']:8.4f} "
              f"{e.get('logits_top1_agreement', float('nan')):6.3f} {e['passed']!s:>5} "
              f"{e['speedup_batch1']:6.2f} {e['speedup_batch8']:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
