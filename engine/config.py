"""Frozen, keyword-only configuration dataclasses; environment overrides are read here and only here."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ENV_PREFIX = "KUAMO_"
DEFAULT_MODEL_DIR = Path("models/default")
# The hybrid (BM25) weight for text queries that send none (engine/ranking.py fuse_lexical). Off by default: 0.4
# (with understanding 0.2) wins the validation grid (benchmarks/results/hybrid.md, held-out: brand P@10 ZH 52 -> 91,
# EN 78 -> 91, colour + type 79-83 -> 100, photo + "like this but red" 10 -> 92%), but on 2 cores it costs ~0.7 ms
# p50 through gRPC and 15% of the 32-client throughput, 44% of the cached Zipf log's (kuamo bench server with both
# on: 416 vs 488 qps, 607 vs 1,091; the BM25, fusion and boosts are Python in the search thread) and ~15 MB for
# fashion, and the embedded default must not get slower.
# [server] lexical_weight (or weights.lexical per query) turns it on.
DEFAULT_LEXICAL_WEIGHT = 0.0
# The query understanding's boost per recognised value (engine/understanding.py); off by default for the same
# reason (it rides on the lexical path; 0.2 beside lexical 0.4 is the validation grid's choice).
DEFAULT_UNDERSTANDING_WEIGHT = 0.0
# What to send (or set in [server]) where quality matters more than the last ~0.7 ms: `kuamo eval --hybrid`'s choice
RECOMMENDED_HYBRID_WEIGHTS = {"lexical": 0.4, "understanding": 0.2}

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class SessionConfig:
    """How ONNX Runtime sessions are built."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    intra_op_threads: int = 0  # 0 = the cores this process may use (engine/cpu_budget.py), not the host's
    inter_op_threads: int = 1
    graph_optimization: str = "all"  # disable | basic | extended | all
    # Idle ORT worker threads spin briefly after each run: it halves batch-1 latency of a hot session
    # (measured 4.3 -> 2.6 ms for INT8 text), but spinning threads of several busy sessions in one process
    # steal each other's cores; turn it off when text and image traffic share a small machine.
    allow_spinning: bool = True
    # Refuse to run when a requested accelerator provider silently fell back to CPU.
    require_requested_providers: bool = False


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    model_dir: Path = DEFAULT_MODEL_DIR
    precision: str = "auto"  # auto = what the manifest says passed the gate; or fp32 / int8
    session: SessionConfig = field(default_factory=SessionConfig)
    max_text_chars: int = 20_000  # longer text is rejected before tokenisation
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000  # decompression-bomb guard
    verify_checksums: bool = True


def _coerce(value: str, target: Any) -> Any:
    if isinstance(target, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(target, int):
        return int(value)
    if isinstance(target, float):
        return float(value)
    if isinstance(target, Path):
        return Path(value)
    if isinstance(target, tuple):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return value


def with_env_overrides(cfg: T, section: str, environ: dict[str, str] | None = None) -> T:
    """Return `cfg` with fields replaced by KUAMO_<SECTION>_<FIELD> environment variables."""
    env = os.environ if environ is None else environ
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):  # type: ignore[arg-type]
        key = f"{ENV_PREFIX}{section.upper()}_{f.name.upper()}"
        if key in env:
            changes[f.name] = _coerce(env[key], getattr(cfg, f.name))
    return dataclasses.replace(cfg, **changes) if changes else cfg  # type: ignore[type-var]
