"""Server configuration: defaults < TOML file < KUAMO_SERVER_* environment < command-line flags."""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kuamo.engine.backends import BACKENDS
from kuamo.engine.catalog_map import CatalogConfig, check_config
from kuamo.engine.config import (
    DEFAULT_LEXICAL_WEIGHT,
    DEFAULT_MODEL_DIR,
    DEFAULT_UNDERSTANDING_WEIGHT,
    with_env_overrides,
)
from kuamo.engine.errors import InvalidInput
from kuamo.engine.result_cache import DEFAULT_SERVER_ENTRIES

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
EVENT_LOOPS = ("asyncio", "uvloop")
SECTIONS = ("server", "catalog")  # the TOML file's sections: `kuamo serve` reads one, `kuamo index` the other


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051  # 0 = pick a free port (tests)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464  # -1 = no metrics endpoint, 0 = pick a free port
    # HTTP/JSON + /v1/embeddings on `host` beside gRPC (server/http_gateway.py): -1 = off, 0 = a free port;
    # the same tokens, TLS, admission limit and loopback rule as gRPC
    http_port: int = -1
    # the catalog directory whose photos the web page shows (GET /photos/<id> reads the product's image_ref
    # inside it, never outside); None = the page shows no photos
    catalog_dir: Path | None = None
    model_dir: Path = DEFAULT_MODEL_DIR
    data_dir: Path = Path("data/kuamo")
    tokens: tuple[str, ...] = ()  # bearer tokens; empty = no auth
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set = clients must present a certificate signed by it
    insecure: bool = False  # allow a non-loopback address without auth
    # Admission limit; beyond it RESOURCE_EXHAUSTED at once. Latency under overload ~ max_inflight / capacity:
    # 256 favours throughput; about 2 per core bounds it (4 on 2 cores: admitted p99 1.4x normal p99 at 4x
    # capacity; 8 gave 2.4x; benchmarks/results/reliability.md). KUAMO_SERVER_MAX_INFLIGHT or the TOML file.
    max_inflight: int = 256
    max_message_mb: int = 16  # largest request message (an upsert message carries one photo)
    max_image_pixels: int = 40_000_000  # photos (queries, upserts) above it are refused; big ones scaled down
    batching: bool = True  # False = encoder batches of one (the baseline the benchmark compares against)
    max_batch_size: int = 32  # text
    # INT8 EfficientNet on 2 cores runs fastest per photo at batch 1 (431/s vs 311/s at b8, 190/s at b32:
    # benchmarks/results/encoders.md), so photos are not batched unless configured
    image_max_batch_size: int = 1
    # 0 = an idle encoder starts at once and batches form from what queued while it was busy: a lone
    # query pays no wait (measured: 2 ms of wait was a third of a one-client text search)
    max_wait_ms: float = 0.0
    max_queue: int = 1024
    text_workers: int = 1  # text batches run at once (with ort_threads=1: several single-thread sessions)
    ort_threads: int = 0  # ONNX Runtime intra-op threads per session (0 = the cores this process may use)
    # Idle ORT threads spinning after each run steal the cores the gRPC threads, the other tower and the clients
    # need: off, one-client text search went 20.0 -> 10.4 ms p50 and 8 clients 113 -> 128 qps (2-core Xeon)
    ort_spinning: bool = False
    stream_window: int = 64  # queries of one SearchStream in flight at once
    grace_s: float = 5.0  # graceful shutdown: in-flight calls get this long to finish
    log_access: bool = False
    # "asyncio" or "uvloop" (pip install -e ".[uvloop]"). uvloop saved 0.1-0.5 ms per call in two runs (Search
    # gRPC minus in-process 1.38 -> 1.27 and 2.19 -> 1.71 ms; benchmarks/results/server.md): opt-in, not default
    event_loop: str = "asyncio"
    # The catalog backend: "embedded" (data_dir: SQLite + FAISS) or "milvus" (a shared Milvus collection: this
    # replica then holds no catalog state; docs/scale.md). The token comes best from KUAMO_SERVER_MILVUS_TOKEN.
    backend: str = "embedded"
    # hybrid (BM25) ranking weight for queries that send none (engine/ranking.py fuse_lexical); 0 = vector only
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT
    # query understanding's boost per recognised colour/gender/category/price (engine/understanding.py); 0 = off
    understanding_weight: float = DEFAULT_UNDERSTANDING_WEIGHT
    milvus_uri: str = ""
    milvus_token: str = ""
    milvus_collection: str = "kuamo"
    milvus_index: str = "FLAT"
    milvus_consistency: str = "Strong"
    # Query text -> text vector LRU in front of the text tower (engine/query_cache.py): entries and MiB bounds;
    # 0 entries = off. Repeated queries skip the tower (benchmarks/results/server_zipf.md).
    query_cache_entries: int = 20_000
    query_cache_mb: int = 64
    # Whole text query -> its answer until the next catalog write (engine/result_cache.py); 0 = off. The search
    # stage, not the tower, sets the cached p99 under load (benchmarks/results/server.md, Zipf log).
    result_cache_entries: int = DEFAULT_SERVER_ENTRIES
    # How long the event loop may hold the GIL while a tower's or the search's thread waits for it (Python's
    # default is 5 ms; 0 keeps it). Each return from ONNX Runtime or FAISS waits up to this long when the loop is
    # busy answering cached queries: 1 ms took the Zipf log's 32-client cached p99 from 49/36 to 34/25 ms (two
    # probe runs each; README, Zipf log). Process-wide: serve() sets it and puts it back.
    gil_switch_interval_ms: float = 1.0


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _coerce_field(cfg: ServerConfig, name: str, value: Any) -> Any:
    current = {f.name: f for f in dataclasses.fields(cfg)}[name]
    if "Path" in str(current.type) and value is not None:
        return Path(value)
    if name == "tokens":
        return tuple(value) if not isinstance(value, str) else tuple(t for t in value.split(",") if t)
    return value


def load_config(path: Path | None = None, *, overrides: dict[str, Any] | None = None,
                environ: dict[str, str] | None = None) -> ServerConfig:
    cfg = ServerConfig()
    if path is not None:
        section = _section(path, "server")
        _check_names(cfg, section, path)
        cfg = dataclasses.replace(cfg, **{k: _coerce_field(cfg, k, v) for k, v in section.items()})
    cfg = with_env_overrides(cfg, "server", environ)
    # settings whose default is None arrive from the environment as strings
    paths = ("tls_cert", "tls_key", "tls_client_ca", "catalog_dir")
    cfg = dataclasses.replace(cfg, **{k: Path(getattr(cfg, k)) for k in paths if isinstance(getattr(cfg, k), str)})
    if overrides:
        cfg = dataclasses.replace(cfg, **{k: _coerce_field(cfg, k, v) for k, v in overrides.items() if v is not None})
    validate(cfg)
    return cfg


def _section(path: Path, name: str) -> dict[str, Any]:
    """One section of the TOML file; a file without sections is the [server] section (older files)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInput(f"cannot read config {path}: {exc}", field="config") from exc
    if any(isinstance(data.get(s), dict) for s in SECTIONS):
        section = data.get(name, {})
        unknown = sorted(k for k in data if k not in SECTIONS)
        if unknown:
            raise InvalidInput(f"unknown sections or settings in {path}: {', '.join(unknown)} "
                               f"(sections are {', '.join(SECTIONS)})", field="config")
        return section if isinstance(section, dict) else {}
    return data if name == "server" else {}


def _check_names(cfg: Any, section: dict[str, Any], path: Path) -> None:
    unknown = sorted(set(section) - {f.name for f in dataclasses.fields(cfg)})
    if unknown:
        raise InvalidInput(f"unknown settings in {path}: {', '.join(unknown)}", field="config")


def load_catalog_config(path: Path | None = None, *, overrides: dict[str, Any] | None = None,
                        environ: dict[str, str] | None = None) -> CatalogConfig:
    """`kuamo index` settings: defaults < [catalog] of the TOML file < KUAMO_CATALOG_* < flags."""
    cfg = CatalogConfig()
    if path is not None:
        section = _section(path, "catalog")
        _check_names(cfg, section, path)
        if "image_blend" in section:  # number or "auto": kept as text until check_config, so the environment may
            section = {**section, "image_blend": str(section["image_blend"])}  # override it with either
        cfg = dataclasses.replace(cfg, **section)
    cfg = with_env_overrides(cfg, "catalog", environ)
    if overrides:
        cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    return check_config(cfg)


def validate(cfg: ServerConfig) -> None:
    if not is_loopback(cfg.host) and not cfg.tokens and cfg.tls_client_ca is None and not cfg.insecure:
        raise InvalidInput(f"refusing to listen on non-loopback address {cfg.host} without auth: set tokens "
                           "(KUAMO_SERVER_TOKENS), client certificates, or pass --insecure explicitly", field="host")
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise InvalidInput("TLS needs both tls_cert and tls_key", field="tls_key")
    if cfg.tls_client_ca is not None and cfg.tls_cert is None:
        raise InvalidInput("client certificates need server TLS (tls_cert, tls_key)", field="tls_client_ca")
    if cfg.max_inflight < 1 or cfg.max_message_mb < 1 or cfg.stream_window < 1 or cfg.max_image_pixels < 1:
        raise InvalidInput("max_inflight, max_message_mb, stream_window and max_image_pixels must be >= 1",
                           field="config")
    if not 0 <= cfg.gil_switch_interval_ms <= 1000:
        raise InvalidInput("gil_switch_interval_ms must be in 0..1000 (0 = Python's default)",
                           field="gil_switch_interval_ms")
    if cfg.result_cache_entries < 0:
        raise InvalidInput("result_cache_entries must be >= 0 (0 = no result cache)", field="result_cache_entries")
    if cfg.query_cache_entries < 0 or cfg.query_cache_mb < 0:
        raise InvalidInput("query_cache_entries and query_cache_mb must be >= 0 (0 = no query cache)",
                           field="query_cache_entries")
    if cfg.event_loop not in EVENT_LOOPS:
        raise InvalidInput(f"event_loop must be one of {', '.join(EVENT_LOOPS)}, got {cfg.event_loop!r}",
                           field="event_loop")
    if cfg.backend not in BACKENDS:
        raise InvalidInput(f"backend must be one of {', '.join(BACKENDS)}, got {cfg.backend!r}", field="backend")
    if cfg.backend == "milvus" and not cfg.milvus_uri:
        raise InvalidInput("the milvus backend needs milvus_uri (--milvus-uri)", field="milvus_uri")
    for name in ("lexical_weight", "understanding_weight"):
        if not 0 <= getattr(cfg, name) <= 1:
            raise InvalidInput(f"{name} must be within 0..1, got {getattr(cfg, name)}", field=name)
    for t in cfg.tokens:
        if len(t) < 16:
            raise InvalidInput("bearer tokens must be at least 16 characters", field="tokens")
