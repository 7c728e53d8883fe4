"""The `kuamo` command. Each subcommand imports its implementation lazily so `kuamo --help` stays fast
and the serving commands never import the export toolchain (torch)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import math
import sys
from pathlib import Path
from typing import Any

from kuamo.engine.config import DEFAULT_MODEL_DIR
from kuamo.engine.errors import InvalidInput
from kuamo.server.config import EVENT_LOOPS

MODELS_HELP = "exported model directory (default: %(default)s, written by `make models` / `kuamo export`)"
FASHION_HELP = "fashion catalog directory (default ../shared/data/fashion or KUAMO_FASHION_DIR)"
# engine.catalog_io.MAPPINGS, written out so that `kuamo --help` does not import the engine (a test keeps them equal)
MAPPING_CHOICES = ("auto", "fashion", "generic", "shopify", "woocommerce")
BENCH_SUITES = ("encoders", "index", "batching", "upsert_block", "quality", "server", "personal", "baselines",
                "reliability", "edge", "http", "scale")


def _cmd_export(args: argparse.Namespace) -> int:
    from kuamo.export.pipeline import run_export
    from kuamo.export.progress import StepProgress

    progress = StepProgress(f"kuamo export -> {args.out}")
    path = run_export(args.out, text=args.text, image=not args.no_image, clip=args.clip, head=args.head,
                      progress=progress, portable_int8=args.portable_int8, base=args.base)
    progress.done(f"wrote {path}")
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    import json

    from kuamo.export.bundle import write_bundle

    print(json.dumps(write_bundle(args.models, args.out), indent=2))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    suites = BENCH_SUITES if args.suite == "all" else (args.suite,)
    failed = []
    for suite in suites:
        try:
            module = importlib.import_module(f"kuamo.benchmarks.{suite}")
        except ModuleNotFoundError as exc:
            print(f"bench {suite}: not available ({exc})", file=sys.stderr)
            failed.append(suite)
            continue
        print(f"== bench {suite}{' (quick)' if args.quick else ''}", file=sys.stderr, flush=True)
        module.run(quick=args.quick)
    return 1 if failed else 0


def _cmd_neighbours(args: argparse.Namespace) -> int:
    from kuamo.demo import show_neighbours

    return show_neighbours(model_dir=args.models, sample=args.sample, catalog=args.catalog)


def _cmd_align(args: argparse.Namespace) -> int:
    from kuamo.export.align import AdaptRecipe, Recipe, run_align, with_overrides
    from kuamo.export.align_head import default_head_path
    from kuamo.export.progress import StepProgress
    from kuamo.export.samples import DEFAULT_FASHION_DIR
    from kuamo.server.config import load_catalog_config

    progress = StepProgress("kuamo align")
    out = args.out or (default_head_path() if args.catalog is None else Path("models/align_head.npz"))
    catalog = args.catalog or DEFAULT_FASHION_DIR
    if args.finetune:
        from kuamo.export.align_finetune import run_finetune
        from kuamo.export.finetune import FinetuneRecipe

        recipe = with_overrides(FinetuneRecipe(), epochs=args.epochs, alpha=args.alpha, seed=args.seed)
        if args.epochs is not None:  # an explicit length runs to the end of its schedule
            recipe = dataclasses.replace(recipe, stop_epoch=None)
        card = run_finetune(catalog=catalog, model_dir=args.models, out=out, recipe=recipe, device=args.device,
                            limit=args.limit, progress=progress)
        m = card["metrics_held_out"]
        progress.done(f"wrote {out}: held-out known-item R@1 {m['known_item']['R@1']:.1f} "
                      f"R@10 {m['known_item']['R@10']:.1f}, category P@10 {m['category']['P@10']:.1f}; "
                      f"run `kuamo export` to fuse it into the image tower")
        return 0
    cfg = load_catalog_config(args.config, overrides={
        "mapping": args.mapping, "map": args.map, "category_path": args.category_path,
        "category_depth": args.category_depth})
    # the shipped recipe retrains the fashion head from scratch; --catalog adapts the shipped head
    base = Recipe() if args.catalog is None else AdaptRecipe()
    if args.from_scratch:
        base = dataclasses.replace(base, from_base=False, alpha=Recipe().alpha)
    recipe = with_overrides(base, epochs=args.epochs, alpha=args.alpha, seed=args.seed, distill=args.distill,
                            patience=args.patience, fused_guard=args.fused_guard, fused_rank=args.fused_rank)
    card = run_align(catalog=catalog, model_dir=args.models, out=out, recipe=recipe, limit=args.limit,
                     progress=progress, catalog_config=cfg, cache_dir=args.cache_dir)
    rep = card["adaptation"]
    lines = [f"wrote {out} (best epoch {card['best_epoch']}); held-out products ({rep['queries']['held_out']}, "
             f"never trained on) among all {rep['pool']}:"]
    for name in ("adapted", "shipped"):
        h, t = rep[name]["held_out"], rep[name]["trained_on"]
        lines.append(f"  {name:8} title->product fused R@1 {h['title_to_product_fused']['R@1']:.1f} "
                     f"(trained-on {t['title_to_product_fused']['R@1']:.1f}), image-only R@10 "
                     f"{h['title_to_product_image']['R@10']:.1f}, photo->photo P@10 {h['photo_to_photo']['P@10']:.1f}")
    progress.done("\n".join([*lines, f"report: {Path(out).with_name('align.json')}; `kuamo export --head {out} "
                                      "--base MODELS --out DIR` makes a model set of it"]))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    if args.hybrid:
        from kuamo.benchmarks.hybrid import run as run_hybrid

        res = run_hybrid(quick=args.quick, models=args.models, catalog=args.catalog)
        for task, m in res["held_out"]["vector only"].items():
            got = res["held_out"]["hybrid (chosen)"][task]
            key = "R@10" if task.startswith("known_item") else "P@10"
            print(f"{task:20} {key} vector-only {m[key]:6.1f}  hybrid {got[key]:6.1f}")
        return 0
    from kuamo.benchmarks.quality import run

    res = run(quick=args.quick, model_dir=args.models, catalog=args.catalog)
    for name, t in res["targets"].items():
        print(f"{name:32} target {t['target']!s:>6}  fp32 {t['fp32']:6.1f}  served {t['served']:6.1f}  "
              f"{'met' if t['met'] else 'MISSED'}")
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    import json

    from kuamo.engine.config import EncoderConfig
    from kuamo.engine.engine import EngineConfig
    from kuamo.engine.ingest import index_catalog, say
    from kuamo.server.config import load_catalog_config

    catalog = load_catalog_config(args.config, overrides={
        "mapping": args.mapping, "map": args.map, "category_path": args.category_path,
        "category_depth": args.category_depth, "max_rejected_share": args.max_rejected_share,
        "max_image_pixels": args.max_image_pixels, "image_blend": args.image_blend,
        "fetch_photos": args.fetch_photos or None, "fetch_workers": args.fetch_workers,
        "refetch_photos": args.refetch_photos or None,
        "prune": args.prune or None, "max_prune_share": args.max_prune_share})
    # a catalog other models made opens here (and only here) so that indexing it again re-embeds it
    cfg = EngineConfig(model_dir=args.models, data_dir=args.data, allow_stale_vectors=True,
                       image_blend=catalog.image_blend, **_index_backend(args),
                       encoder=EncoderConfig(model_dir=args.models, max_image_pixels=catalog.max_image_pixels))
    if args.ray_workers is not None and args.ray is None:
        raise InvalidInput("--ray-workers needs --ray", field="ray_workers")
    if args.ray is not None:  # the same rows, checks and vectors, embedded by Ray actors (engine/ray_ingest.py)
        from kuamo.engine.ray_ingest import ray_index_catalog

        report = ray_index_catalog(args.catalog, config=cfg, catalog=catalog, limit=args.limit, address=args.ray,
                                   workers=args.ray_workers)
    else:
        report = index_catalog(args.catalog, config=cfg, catalog=catalog, limit=args.limit)
    print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))  # stdout: the report and nothing else
    if report.failed(catalog.max_rejected_share):
        say(f"kuamo index: {len(report.rejected)} of {report.rows_read} rows rejected, above the allowed share "
            f"{catalog.max_rejected_share:g} (--max-rejected-share); see \"rejections\" in the report")
        return 2
    if report.pruned and "refused" in report.pruned:
        say(f"kuamo index: --prune refused: {report.pruned['refused']}")
        return 2
    return 0


def _index_backend(args: argparse.Namespace) -> dict[str, Any]:
    """`kuamo index --backend milvus`: the catalog goes into Milvus (the token from --milvus-token-file or
    KUAMO_SERVER_MILVUS_TOKEN, as for serve)."""
    import os

    from kuamo.engine.backends import MilvusSettings

    if args.backend in (None, "embedded"):
        return {}
    if not args.milvus_uri:
        raise SystemExit("kuamo index: --backend milvus needs --milvus-uri")
    token = _milvus_token(args.milvus_token_file) or os.environ.get("KUAMO_SERVER_MILVUS_TOKEN", "")
    return {"backend": "milvus", "milvus": MilvusSettings(uri=args.milvus_uri, token=token,
                                                         collection=args.milvus_collection or "kuamo")}


def _server_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from kuamo.server.config import load_config

    return load_config(args.config, overrides={
        "host": getattr(args, "host", None), "port": args.port, "metrics_port": args.metrics_port,
        "http_port": args.http_port, "catalog_dir": args.catalog_dir,
        "model_dir": args.models, "data_dir": args.data,
        "tokens": [*(args.token or ()), *_tokens_from_file(args.token_file)] or None,
        "tls_cert": args.tls_cert, "tls_key": args.tls_key, "tls_client_ca": args.tls_client_ca,
        "insecure": True if getattr(args, "insecure", False) else None,
        "batching": False if args.no_batching else None, "log_access": True if args.access_log else None,
        "event_loop": args.event_loop, "query_cache_entries": args.query_cache_entries,
        "query_cache_mb": args.query_cache_mb, "result_cache_entries": args.result_cache_entries,
        **_backend_overrides(args)})


def _backend_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"backend": args.backend, "milvus_uri": args.milvus_uri, "milvus_collection": args.milvus_collection,
            "milvus_token": _milvus_token(args.milvus_token_file)}


def _milvus_token(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SystemExit(f"kuamo: cannot read --milvus-token-file {path}: {exc.strerror or exc}") from exc


def _add_backend_flags(p: argparse.ArgumentParser) -> None:
    from kuamo.engine.backends import BACKENDS

    p.add_argument("--backend", choices=BACKENDS, default=None, help="catalog backend: embedded (SQLite + FAISS in "
                   "--data, the default) or milvus (a shared Milvus collection; replicas hold no catalog state)")
    p.add_argument("--milvus-uri", default=None, metavar="URI", help="Milvus address for --backend milvus "
                   "(http://host:19530, or a Milvus Lite file)")
    p.add_argument("--milvus-token-file", type=Path, default=None, help="file holding the Milvus token "
                   "(user:password or an API key; or KUAMO_SERVER_MILVUS_TOKEN)")
    p.add_argument("--milvus-collection", default=None, help="Milvus collection of the catalog (default kuamo)")


def _cmd_serve(args: argparse.Namespace) -> int:
    from kuamo.server.app import run_loop, serve

    cfg = _server_config(args)
    if cfg.log_access:
        logging.getLogger("kuamo.access").setLevel(logging.INFO)
    logging.getLogger("kuamo.server").setLevel(logging.INFO)

    async def announce(srv) -> None:  # type: ignore[no-untyped-def]
        print(f"kuamo serving on {cfg.host}:{srv.port}" + (f", metrics on :{srv.metrics_port}/metrics"
                                                          if srv.metrics_port else "")
              + (f", HTTP on :{srv.http_port} (search page http://{cfg.host}:{srv.http_port}/)"
                 if srv.http_port else ""), flush=True)

    run_loop(cfg, serve(cfg, on_ready=announce))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from kuamo.export.samples import DEFAULT_FASHION_DIR
    from kuamo.server_demo import run_demo

    return run_demo(_server_config(args), catalog=args.catalog or DEFAULT_FASHION_DIR, once=args.once)


def _cmd_search(args: argparse.Namespace) -> int:
    import os

    from kuamo.engine.types import Modifiers, Query
    from kuamo.server.client import Client
    from kuamo.server.filter_expr import parse_filters
    from kuamo.server.table import format_result

    weights = dict(args.weight or ())
    q = Query(text=args.text, image=args.image, k=args.k,
              filters=parse_filters(args.filter or ()), weights=weights, explain=args.explain,
              rating=args.rating, price=args.price, nprobe=args.nprobe,
              modifiers=Modifiers(rating_factor=args.rating_boost), collapse=args.collapse)
    if q.text is None and q.image is None and q.rating is None and q.price is None:
        print("kuamo search: give a text, --image, --rating or --price", file=sys.stderr)
        return 2
    token = args.token or next(iter(_tokens_from_file(args.token_file)), None) or os.environ.get("KUAMO_TOKEN")
    with Client(args.target, token=token, tls_ca=args.tls_ca, timeout=args.timeout) as client:
        print(format_result(client.search(q), explain=args.explain))
    return 0


def _tokens_from_file(path: Path | None) -> list[str]:
    """Bearer tokens from a file, one per line (a token on the command line shows in `ps`)."""
    if path is None:
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read the token file {path}: {exc}", field="token_file") from None
    tokens = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not tokens:
        raise InvalidInput(f"the token file {path} holds no token", field="token_file")
    return tokens


def _non_negative(value: str, what: str = "weight") -> float:
    """A finite number >= 0; argparse turns the ArgumentTypeError into one line and exit 2."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} needs a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"{what} must be a finite number >= 0, got {value!r}")
    return number


def _weight(text: str) -> tuple[str, float]:
    """--weight NAME=VALUE -> (name, value)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE (e.g. image=0.7)")
    return name.strip(), _non_negative(value, f"weight {name.strip()!r}")


def _photo(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read photo {path}: {exc.strerror or exc}") from None


def _add_server_flags(p: argparse.ArgumentParser, *, listen: bool = True) -> None:
    p.add_argument("--config", type=Path, default=None, help="TOML file ([server] section)")
    if listen:
        p.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
        p.add_argument("--insecure", action="store_true", help="allow a non-loopback address without auth")
    p.add_argument("--port", type=int, default=None, help="gRPC port (default 50051)")
    p.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (default 9464, -1 = off)")
    p.add_argument("--http-port", type=int, default=None, help="HTTP/JSON, the search page at / and OpenAI "
                   "/v1/embeddings, on the same host, tokens and TLS as gRPC (default -1 = off, 0 = a free port)")
    p.add_argument("--catalog-dir", type=Path, default=None, help="catalog directory whose photos the search page "
                   "shows (only files inside it)")
    p.add_argument("--models", type=Path, default=None,
                   help="exported model directory (default models/default, or [server] model_dir)")
    p.add_argument("--data", type=Path, default=None, help="store + index directory (default data/kuamo)")
    p.add_argument("--token-file", type=Path, default=None, help="file with the bearer tokens clients must send, "
                   "one per line (not visible in ps, unlike --token)")
    p.add_argument("--token", action="append", help="bearer token clients must send (repeatable; or "
                   "KUAMO_SERVER_TOKENS=a,b)")
    p.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain: serve TLS (with --tls-key)")
    p.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", type=Path, default=None, help="require client certificates signed by this CA")
    p.add_argument("--no-batching", action="store_true", help="encoder batches of one (for comparison)")
    p.add_argument("--access-log", action="store_true", help="one JSON line per RPC on stderr")
    p.add_argument("--event-loop", choices=EVENT_LOOPS, default=None,
                   help="event loop of the server (default asyncio)")
    p.add_argument("--query-cache-entries", type=int, default=None, metavar="N",
                   help="query texts whose vectors the server keeps (LRU; default 20000, 0 = no query cache)")
    p.add_argument("--query-cache-mb", type=int, default=None, metavar="MB",
                   help="memory bound of the query cache in MiB (default 64)")
    p.add_argument("--result-cache-entries", type=int, default=None, metavar="N",
                   help="whole text queries whose answers the server keeps until the next catalog write (LRU; "
                        "default 4096, 0 = no result cache)")
    _add_backend_flags(p)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kuamo", description="ONNX-optimised cross-modal product search")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="export pretrained encoders to checked ONNX (needs the [export] extra)")
    e.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR, help="model directory (default: %(default)s)")
    e.add_argument("--text", choices=("e5", "minilm"), default="e5",
                   help="text tower: multilingual-e5-small (default) or all-MiniLM-L6-v2 (English)")
    e.add_argument("--clip", type=Path, default=None,
                   help="export a local Hugging Face CLIP/SigLIP checkpoint instead of the default towers")
    e.add_argument("--no-image", action="store_true", help="skip the image tower")
    e.add_argument("--base", type=Path, default=None, metavar="MODELS",
                   help="share the text tower of this exported model directory (hard links, checksums verified) "
                        "instead of exporting it again: an adapted model set without a second copy of the text graph")
    e.add_argument("--head", type=Path, default=None,
                   help="alignment file (.npz from `kuamo align`) to fuse; default: the shipped fashion-tuned one; "
                        "`generic`: the shipped head-only one (frozen backbone, better on non-fashion goods)")
    e.add_argument("--portable-int8", action="store_true",
                   help="7-bit INT8 weights in both towers even on a VNNI CPU, so this export serves INT8 and "
                        "computes the same on CPUs without VNNI too (about 0.5 points of recall less; default: "
                        "8-bit where VNNI)")
    e.set_defaults(func=_cmd_export)

    bu = sub.add_parser("bundle", help="copy only what `kuamo serve` reads (served precisions, tokenizer, manifest "
                                       "with sha256) into a new directory to deploy; no torch needed")
    bu.add_argument("out", type=Path, help="new directory (must not exist or be empty)")
    bu.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="exported model directory "
                                                                          "(default: %(default)s)")
    bu.set_defaults(func=_cmd_bundle)

    b = sub.add_parser("bench", help="run benchmarks; results go to benchmarks/results/")
    b.add_argument("suite", choices=(*BENCH_SUITES, "all"), help="one suite, or all of them")
    b.add_argument("--quick", action="store_true", help="small sizes, a few minutes (CI smoke run)")
    b.set_defaults(func=_cmd_bench)

    a = sub.add_parser("align", help="train the image->text alignment head on a catalog (needs [export])")
    a.add_argument("--catalog", type=Path, default=None,
                   help="catalog to adapt the shipped head to: any file `kuamo index` reads (CSV, TSV, JSONL, "
                        "Parquet) or a directory holding products.csv (default: retrain the shipped head on the "
                        "fashion catalog)")
    a.add_argument("--mapping", choices=MAPPING_CHOICES, default=None,
                   help="column names to expect, as for `kuamo index` (default auto)")
    a.add_argument("--map", default=None, metavar="FIELD=COLUMN,...",
                   help="feed columns for kuamo's fields, as for `kuamo index` (e.g. id=uniq_id,title=product_name,"
                        "category=product_category_tree,image=image)")
    a.add_argument("--category-path", default=None, metavar="SEP",
                   help='separator of the levels inside the category column, e.g. ">>" (default: guessed)')
    a.add_argument("--category-depth", type=int, default=None, metavar="N",
                   help="keep the first N levels of a category path (its leaf is what templates and scores use)")
    a.add_argument("--config", type=Path, default=None, help="TOML file whose [catalog] section maps the columns")
    a.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help="exported towers to extract features with")
    a.add_argument("--out", type=Path, default=None,
                   help="head file (default: the shipped head for the fashion catalog, else models/align_head.npz)")
    a.add_argument("--epochs", type=int, default=None, help="most training epochs (default: the recipe's)")
    a.add_argument("--alpha", type=float, default=None, help="weight of the trained head vs the zero-shot map "
                                                            "(default: the recipe's; the shipped head's when adapting)")
    a.add_argument("--distill", type=_non_negative, default=None, metavar="W",
                   help="weight of staying close to the shipped head's outputs when adapting (default: the recipe's; "
                        "0 lets the head learn the catalog's photos by heart)")
    a.add_argument("--patience", type=int, default=None, metavar="N",
                   help="stop after N epochs without a better score on the validation tenth (default: the recipe's)")
    a.add_argument("--fused-guard", type=_non_negative, default=None, metavar="W",
                   help="validation penalty per point of fused title->product R@1 lost against the shipped head "
                        "(default: the recipe's, 3 when adapting; 0 trades fused search for photo search)")
    a.add_argument("--fused-rank", type=_non_negative, default=None, metavar="W",
                   help="weight of ranking each title query above its text competitors by text + image, as the "
                        "engine fuses them (default: the recipe's, 1 when adapting; 0 leaves it out)")
    a.add_argument("--from-scratch", action="store_true",
                   help="train a new head instead of adapting the one the models serve")
    a.add_argument("--seed", type=int, default=None, help="random seed (default: the recipe's)")
    a.add_argument("--limit", type=int, default=None, help="use only the first N products (smoke runs)")
    a.add_argument("--cache-dir", type=Path, default=Path(".cache/align"),
                   help="where extracted features are cached (default: %(default)s)")
    a.add_argument("--finetune", action="store_true",
                   help="fine-tune the image backbone with the head (the shipped recipe; made for a GPU)")
    a.add_argument("--device", default="cpu", help="torch device for --finetune (cpu, cuda)")
    a.set_defaults(func=_cmd_align)

    ev = sub.add_parser("eval", help="retrieval quality on the held-out 10%% (writes benchmarks/results/quality.*)")
    ev.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help=MODELS_HELP)
    ev.add_argument("--catalog", type=Path, default=None, help=FASHION_HELP)
    ev.add_argument("--quick", action="store_true", help="400 held-out photos instead of all (a smoke run)")
    ev.add_argument("--hybrid", action="store_true", help="the hybrid tasks instead (colour+type, brand and "
                    "exact-title queries, EN and ZH, vector-only vs BM25 fusion vs query understanding; weights "
                    "chosen on the validation split; writes benchmarks/results/hybrid.*)")
    ev.set_defaults(func=_cmd_eval)

    ix = sub.add_parser("index", help="ingest a catalog (CSV / JSONL / Parquet) into the store and index; "
                                     "resumable; --ray embeds it on a Ray cluster")
    ix.add_argument("catalog", type=Path, help="the catalog file: .csv, .tsv, .jsonl, .xml (an RSS/Atom product "
                    "feed), each may be .gz; or .parquet")
    ix.add_argument("--mapping", choices=MAPPING_CHOICES, default=None,
                    help="column names to expect (default auto: fashion or a Shopify product export when their "
                         "columns are there, else generic)")
    ix.add_argument("--map", default=None, metavar="FIELD=COLUMN,...",
                    help="feed columns for kuamo's fields, e.g. id=uniq_id,title=product_name,category="
                         "product_category_tree,price=retail_price (fields: id title description category brand "
                         "price rating image)")
    ix.add_argument("--category-path", default=None, metavar="SEP",
                    help='separator of the levels inside the category column, e.g. ">>" (default: guessed)')
    ix.add_argument("--category-depth", type=int, default=None, metavar="N",
                    help="keep the first N levels of a category path (a trailing product name is always dropped)")
    ix.add_argument("--max-rejected-share", type=float, default=None, metavar="F",
                    help="exit 2 when more than this share of rows is rejected (default 1.0: only when all are)")
    ix.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                    help="refuse photos above N pixels (default 40000000); bigger photos below it are scaled down")
    ix.add_argument("--fetch-photos", action="store_true",
                    help="download photos the feed names by http(s) URL (e.g. image_link) into "
                         "CATALOG_DIR/kuamo-photos first; a later run downloads only what it lacks or failed")
    ix.add_argument("--refetch-photos", action="store_true",
                    help="with --fetch-photos: ask again for every stored photo (a conditional GET by its ETag / "
                         "Last-Modified) and re-embed the products whose photo changed behind the same URL")
    ix.add_argument("--fetch-workers", type=int, default=None, metavar="N",
                    help="downloads at a time for --fetch-photos (default 16)")
    ix.add_argument("--prune", action="store_true",
                    help="the file is the whole catalog: after the run, delete the stored products it no longer "
                         "lists (a row that was rejected this time still lists its product)")
    ix.add_argument("--max-prune-share", type=float, default=None, metavar="F",
                    help="refuse --prune (exit 2, nothing deleted) when it would delete more than this share of the "
                         "stored products (default 0.2: a truncated or wrong file must not empty the catalog)")
    ix.add_argument("--image-blend", default=None, metavar="auto|BETA",
                    help="image vector = BETA x tuned vector + (1-BETA) x zero-shot map: a number in 0..1 sets it, "
                         "auto chooses it again on this catalog now (default: chosen when the catalog is new or "
                         "its choice was provisional); a changed blend re-embeds the catalog")
    ix.add_argument("--config", type=Path, default=None, help="TOML file ([catalog] section)")
    ix.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help=MODELS_HELP)
    ix.add_argument("--data", type=Path, default=Path("data/kuamo"), help="store + index directory")
    ix.add_argument("--limit", type=int, default=None, help="index only the first N rows (a trial)")
    _add_backend_flags(ix)
    ix.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="embed on Ray (the [scale] extra; put it after CATALOG): alone, a private Ray cluster on "
                         "this machine; with HOST:PORT or ray://HOST:PORT, that cluster, whose nodes need kuamo, the "
                         "models and the catalog with its photos at the same paths. This process commits the rows")
    ix.add_argument("--ray-workers", type=int, default=None, metavar="N",
                    help="Ray actors embedding side by side, each loading the models once (default: one per CPU of "
                         "the cluster); needs --ray")
    ix.set_defaults(func=_cmd_index)

    sv = sub.add_parser("serve", help="run the gRPC server (config file < KUAMO_SERVER_* env < flags)")
    _add_server_flags(sv)
    sv.set_defaults(func=_cmd_serve)

    d = sub.add_parser("demo", help="index the fashion catalog if needed, serve on loopback, run sample queries")
    _add_server_flags(d, listen=False)
    d.add_argument("--catalog", type=Path, default=None,
                   help="catalog directory with products.csv and images/ (default: the fashion catalog)")
    d.add_argument("--once", action="store_true", help="exit after the sample queries")
    d.set_defaults(func=_cmd_demo)

    s = sub.add_parser("search", help="query a running server")
    s.add_argument("text", nargs="?", default=None, help="what to search for, in any language")
    s.add_argument("--image", type=_photo, default=None, metavar="PHOTO", help="photo file to search with")
    s.add_argument("--k", type=int, default=10, help="number of results (default %(default)s)")
    s.add_argument("--filter", action="append", help='e.g. "price<2000", "category=Apparel", "gender=Women"')
    s.add_argument("--weight", action="append", type=_weight, metavar="NAME=VALUE",
                   help='weight >= 0 of one part of the score, e.g. "image=0.7" (text, image, rating, price, '
                        'a declared attribute, or category: a photo query\'s category agreement); naming any block '
                        'replaces the defaults (text/image 0.5, rating/price 0.25): blocks not named count 0; '
                        'repeatable')
    s.add_argument("--rating", type=float, default=None, help="rated about this (0..5)")
    s.add_argument("--price", type=float, default=None, help="priced around this")
    s.add_argument("--rating-boost", type=float, default=0.0, help="multiply scores by (1 + f * rating/5)")
    s.add_argument("--nprobe", type=int, default=None, help="IVF lists to visit (default: the index's)")
    s.add_argument("--collapse", default=None, metavar="ATTRIBUTE",
                   help="one hit per value of this attribute, e.g. item_group_id (a product's sizes and colours "
                        "as one) or brand")
    s.add_argument("--explain", action="store_true", help="show what each block and rule added to every score")
    s.add_argument("--target", default="127.0.0.1:50051", help="server address (default %(default)s)")
    s.add_argument("--token", default=None, help="bearer token (or --token-file, or KUAMO_TOKEN)")
    s.add_argument("--token-file", type=Path, default=None, help="file whose first line is the bearer token")
    s.add_argument("--tls-ca", type=Path, default=None, help="CA certificate to verify the server with")
    s.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer (default %(default)s)")
    s.set_defaults(func=_cmd_search)

    n = sub.add_parser("neighbours", help="show nearest neighbours on a sample of the fashion catalog")
    n.add_argument("--models", type=Path, default=DEFAULT_MODEL_DIR, help=MODELS_HELP)
    n.add_argument("--catalog", type=Path, default=None, help=FASHION_HELP)
    n.add_argument("--sample", type=int, default=2000, help="products to sample (default %(default)s)")
    n.set_defaults(func=_cmd_neighbours)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from kuamo.engine.errors import KuamoError

    try:
        return int(args.func(args) or 0)
    except KuamoError as exc:
        print(f"kuamo: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the user named: one line, not a traceback
        print(f"kuamo: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except Exception as exc:  # a gRPC status from the server: print it, not a traceback
        code = getattr(exc, "code", None)
        if code is None or not callable(code) or not hasattr(exc, "details"):
            raise
        print(f"kuamo: server answered {code().name}: {exc.details()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
