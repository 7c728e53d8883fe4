"""Does the INT8 image tower hold beyond its gate sample? (`python -m kuamo.benchmarks.int8_parity`)

`kuamo export` serves the INT8 image graph when it agrees with FP32 on its gate photos (cosine mean >= 0.99,
min >= 0.97; 1,024 photos, 256 until this benchmark showed that a minimum over 256 was a draw). This runs the
INT8 graph and the FP32 graph over every photo of the catalog (the `embedding` output, what the gate checks)
and reports:
- per-photo cosine INT8 vs FP32: mean, low percentiles, min, and how many photos fall below the gate's bounds;
- the gate's statistic on 2,000 random samples of 256 and of 1,024 photos: how often such a gate would fail;
- search: photo->photo (same articleType P@10) and title->photo (own photo R@10) over the whole catalog with the
  INT8 vs the FP32 image vectors (the same served title vectors), and how much of each top 10 they share.
Two model sets, side by side in one run: the native export (`--models`, INT8 run natively) and an export made
with AVX2 kernels (benchmarks/avx2_only.py's mode; `kuamo export` is run inside it unless `--avx2-models` is
given), its INT8 graph run inside the mode; the FP32 references run natively. `--no-avx2` skips the second.

Results: benchmarks/results/int8_parity.json + .md (int8_parity_limit<N>.* with --limit).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kuamo.benchmarks.baselines_data import overlap_at_k
from kuamo.benchmarks.common import machine_info, markdown_table, write_results
from kuamo.engine.vectors import l2_normalize
from kuamo.export.gate import GateThresholds, cosine_rows

GATE_SAMPLES = (256, 1024)  # the export's gate size before and since (export/image_tower.py GATE_PHOTOS)
DRAWS = 2000
QUERIES = 2000
BATCH = 64


def encode_catalog(model_dir: Path, precision: str, fashion: Path, limit: int | None, out: Path) -> dict[str, Any]:
    """In this process (inside the AVX2-only mode or not): the `embedding` output of every catalog photo from the
    tower's `precision` graph (named, not the engine's automatic choice), saved to `out` (.npy); returns the
    CPU flags seen and what the engine would serve here on its own."""
    from kuamo.engine.artifacts import ModelArtifacts
    from kuamo.engine.config import EncoderConfig
    from kuamo.engine.cpu_features import cpu_flags
    from kuamo.engine.encoders import ImageEncoder
    from kuamo.export.align import image_outputs
    from kuamo.export.samples import load_fashion

    items = load_fashion(fashion)[:limit]
    enc = ImageEncoder(ModelArtifacts(model_dir), EncoderConfig(model_dir=model_dir, precision=precision))
    np.save(out, image_outputs(enc, [it.image_path for it in items], ["embedding"], BATCH)["embedding"])
    return {"cpu_flags": cpu_flags(), "photos": len(items),
            "engine_serves_here": ModelArtifacts(model_dir).tower("image").precision}


def cosine_summary(cos: np.ndarray, gate: GateThresholds) -> dict[str, Any]:
    """Per-photo INT8-vs-FP32 cosines of a whole catalog against the gate's bounds."""
    return {"photos": len(cos), "mean": float(cos.mean()), "min": float(cos.min()),
            **{f"p{q:g}": float(np.percentile(cos, q)) for q in (0.1, 1, 5)},
            "below_gate_min": int((cos < gate.min_cosine).sum()),
            "below_gate_mean_share": float((cos < gate.mean_cosine).mean())}


def gate_sample_odds(cos: np.ndarray, gate: GateThresholds, size: int, draws: int = DRAWS,
                     seed: int = 0) -> dict[str, Any]:
    """The gate's statistic on `draws` random samples of `size` photos: its spread, and the share of samples on
    which the gate would have failed (mean below its mean bound or min below its min bound)."""
    rng = np.random.default_rng(seed)
    size = min(size, len(cos))
    picks = [cos[rng.choice(len(cos), size, replace=False)] for _ in range(draws)]
    means, mins = np.asarray([p.mean() for p in picks]), np.asarray([p.min() for p in picks])
    return {"sample": size, "draws": draws,
            "min_p5": float(np.percentile(mins, 5)), "min_p50": float(np.percentile(mins, 50)),
            "mean_p5": float(np.percentile(means, 5)),
            "fail_share": float(((means < gate.mean_cosine) | (mins < gate.min_cosine)).mean())}


def top_k(queries: np.ndarray, items: np.ndarray, k: int = 10, exclude: np.ndarray | None = None,
          chunk: int = 500) -> np.ndarray:
    """Indices of each query's k best items by dot product; `exclude[i]` (an item index) is never returned for
    query i (a photo is not its own neighbour)."""
    out = []
    for s in range(0, len(queries), chunk):
        scores = queries[s:s + chunk] @ items.T
        if exclude is not None:
            scores[np.arange(len(scores)), exclude[s:s + chunk]] = -np.inf
        out.append(np.argsort(-scores, axis=1)[:, :k])
    return np.concatenate(out)


def search_parity(int8: np.ndarray, fp32: np.ndarray, titles: np.ndarray, articles: np.ndarray,
                  queries: np.ndarray) -> dict[str, Any]:
    """photo->photo and title->photo over the whole catalog with INT8 vs FP32 image vectors (unit rows)."""
    res: dict[str, Any] = {"queries": len(queries)}
    photo = {p: top_k(v[queries], v, exclude=queries) for p, v in (("int8", int8), ("fp32", fp32))}
    title = {p: top_k(titles, v) for p, v in (("int8", int8), ("fp32", fp32))}
    for p in ("int8", "fp32"):
        res[f"photo_P@10_{p}"] = float((articles[photo[p]] == articles[queries][:, None]).mean() * 100)
        res[f"title_R@10_{p}"] = float((title[p] == queries[:, None]).any(axis=1).mean() * 100)
    res["photo_top10_overlap"] = overlap_at_k(photo["int8"], photo["fp32"])
    res["title_top10_overlap"] = overlap_at_k(title["int8"], title["fp32"])
    return res


def _encode(cmd_prefix: list[str], model_dir: Path, precision: str, fashion: Path, limit: int | None, out: Path,
            mode: Any | None = None) -> dict[str, Any]:
    cmd = [*cmd_prefix, "--encode", precision, "--models", str(model_dir), "--fashion", str(fashion),
           "--out", str(out), *(["--limit", str(limit)] if limit else [])]
    done = (mode.run if mode else subprocess.run)(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def run(models: Path, fashion: Path, limit: int | None = None, avx2: bool = True,
        avx2_models: Path | None = None) -> dict[str, Any]:
    from kuamo.benchmarks.server import served_text_encoder
    from kuamo.export.samples import load_fashion

    gate = GateThresholds()
    items = load_fashion(fashion)[:limit]
    articles = np.asarray([it.attrs.get("articleType", "") for it in items])
    queries = np.random.default_rng(0).choice(len(items), min(QUERIES, len(items)), replace=False)
    titles = served_text_encoder(models).encode([items[i].title for i in queries])
    me = [sys.executable, "-m", "kuamo.benchmarks.int8_parity"]
    res: dict[str, Any] = {"suite": "int8_parity", "machine": machine_info(), "fashion": str(fashion),
                           "photos": len(items), "gate": {"mean_cosine": gate.mean_cosine,
                                                          "min_cosine": gate.min_cosine},
                           "sets": []}
    with tempfile.TemporaryDirectory(prefix="kuamo-int8-parity-") as tmp_name:
        tmp = Path(tmp_name)
        sets: list[tuple[str, Path, Any]] = [("native export, INT8 run natively", models, None)]
        if avx2:
            from kuamo.benchmarks.avx2_only import prepare

            mode = prepare()
            if avx2_models is None:
                avx2_models = tmp / "avx2" / "default"
                print("int8_parity: kuamo export inside the AVX2-only mode", file=sys.stderr, flush=True)
                mode.run([sys.executable, "-m", "kuamo.cli", "export", "--out", str(avx2_models)], check=True,
                         stdout=subprocess.DEVNULL)
            sets.append(("AVX2 export, INT8 run with AVX2 kernels (emulated)", avx2_models, mode))
        fp32_done: dict[str, np.ndarray] = {}
        for name, md, mode_ in sets:
            print(f"int8_parity: {name}", file=sys.stderr, flush=True)
            manifest = json.loads((md / "manifest.json").read_text(encoding="utf-8"))
            sha = manifest["files"][manifest["towers"]["image"]["files"]["fp32"]]["sha256"]
            if sha not in fp32_done:  # the same FP32 graph (the export is deterministic) is encoded once
                _encode(me, md, "fp32", fashion, limit, tmp / f"fp32-{sha[:12]}.npy")
                fp32_done[sha] = l2_normalize(np.load(tmp / f"fp32-{sha[:12]}.npy"))
            seen = _encode(me, md, "int8", fashion, limit, tmp / "int8.npy", mode_)
            int8, fp32 = l2_normalize(np.load(tmp / "int8.npy")), fp32_done[sha]
            cos = cosine_rows(int8, fp32)
            q = manifest["towers"]["image"].get("quantization", {})
            worst = np.argsort(cos)[:5]
            res["sets"].append({
                "name": name, "models": str(md), "scheme": q.get("chosen"), "export_cpu": q.get("cpu"),
                "export_gate": q.get("gate"), "run_cpu_flags": seen["cpu_flags"],
                "engine_serves_here": seen["engine_serves_here"], "cosine": cosine_summary(cos, gate),
                "gate_samples": {str(n): gate_sample_odds(cos, gate, n) for n in GATE_SAMPLES},
                "worst_photos": [{"id": items[i].id, "cosine": float(cos[i])} for i in worst],
                "search": search_parity(int8, fp32, titles, articles, queries)})
    write_results("int8_parity" + (f"_limit{limit}" if limit else ""), res,
                  "INT8 image tower vs FP32 over the whole catalog", lambda: _markdown(res), res["machine"])
    return res


def _markdown(res: dict[str, Any]) -> str:
    g = res["gate"]
    rows = []
    for s in res["sets"]:
        c, gs = s["cosine"], s["gate_samples"]
        rows.append({"set": s["name"], "scheme": s["scheme"], "gate at export (mean / min)":
                     f"{(s['export_gate'] or {}).get('cosine_mean', float('nan')):.4f} / "
                     f"{(s['export_gate'] or {}).get('cosine_min', float('nan')):.4f} "
                     f"({(s['export_gate'] or {}).get('n', '?')} photos)",
                     "catalog mean": f"{c['mean']:.5f}", "p0.1": f"{c['p0.1']:.4f}", "p1": f"{c['p1']:.4f}",
                     "min": f"{c['min']:.4f}", f"photos < {g['min_cosine']}": c["below_gate_min"],
                     **{f"{n}-photo gates failing": f"{gs[str(n)]['fail_share']:.3f}" for n in GATE_SAMPLES},
                     "engine serves there": s["engine_serves_here"]})
    search = [{"set": s["name"], "photo P@10 INT8 / FP32": f"{s['search']['photo_P@10_int8']:.2f} / "
               f"{s['search']['photo_P@10_fp32']:.2f}",
               "title R@10 INT8 / FP32": f"{s['search']['title_R@10_int8']:.2f} / {s['search']['title_R@10_fp32']:.2f}",
               "photo top-10 shared": f"{s['search']['photo_top10_overlap']:.3f}",
               "title top-10 shared": f"{s['search']['title_top10_overlap']:.3f}"} for s in res["sets"]]
    worst = "; ".join(f"{s['name']}: " + ", ".join(f"{w['id']} ({w['cosine']:.4f})" for w in s["worst_photos"])
                      for s in res["sets"])
    return (f"Every one of {res['photos']} photos in `{res['fashion']}`, the `embedding` output of the INT8 graph "
            f"vs the FP32 graph (FP32 run natively). The gate: mean >= {g['mean_cosine']}, min >= "
            f"{g['min_cosine']}; 'N-photo gates failing' is the share of {DRAWS} random N-photo samples of this "
            "catalog on which that gate would have failed.\n\n"
            + markdown_table(rows)
            + f"\n\nSearch over the whole catalog, {res['sets'][0]['search']['queries']} queries (photo->photo: "
            "same articleType P@10, the query photo excluded; title->photo: own photo R@10, served title vectors):"
            "\n\n" + markdown_table(search) + f"\n\nLowest cosines (product id): {worst}.\n")


def main(argv: list[str] | None = None) -> None:
    from kuamo.export.samples import DEFAULT_FASHION_DIR

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=Path("models/default"))
    ap.add_argument("--fashion", type=Path, default=Path(DEFAULT_FASHION_DIR))
    ap.add_argument("--limit", type=int, default=None, help="the first N photos only (a quick run)")
    ap.add_argument("--no-avx2", action="store_true", help="skip the AVX2-only export and run")
    ap.add_argument("--avx2-models", type=Path, default=None, help="an export already made inside the mode")
    ap.add_argument("--encode", choices=("fp32", "int8"), help=argparse.SUPPRESS)  # the child's job
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.limit is not None and a.limit < 20:
        ap.error(f"--limit must be at least 20 photos, got {a.limit}")
    for flag, models in (("--models", a.models), ("--avx2-models", a.avx2_models)):
        if models is not None and not (models / "manifest.json").is_file():
            ap.error(f"{flag} {models} has no manifest.json (run `kuamo export --out DIR` first)")
    if not (a.fashion / "products.csv").is_file():
        ap.error(f"--fashion {a.fashion} has no products.csv (the fashion catalog's layout)")
    if a.encode:
        print(json.dumps(encode_catalog(a.models, a.encode, a.fashion, a.limit, a.out)))
        return
    res = run(a.models, a.fashion, a.limit, avx2=not a.no_avx2, avx2_models=a.avx2_models)
    print(_markdown(res))


if __name__ == "__main__":
    main()
