"""The one ONNX Runtime session factory: explicit providers, threads, and a check of what ORT really used."""

from __future__ import annotations

import logging
from pathlib import Path

from kuamo.engine.config import SessionConfig
from kuamo.engine.cpu_budget import usable_cores
from kuamo.engine.errors import ArtifactError, NotReady
from kuamo.engine.ort_runtime import load as load_onnxruntime

ort = load_onnxruntime()

log = logging.getLogger(__name__)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def session_options(cfg: SessionConfig) -> ort.SessionOptions:
    if cfg.graph_optimization not in _OPT_LEVELS:
        raise ValueError(f"graph_optimization must be one of {sorted(_OPT_LEVELS)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = _OPT_LEVELS[cfg.graph_optimization]
    so.intra_op_num_threads = cfg.intra_op_threads or usable_cores()
    so.inter_op_num_threads = cfg.inter_op_threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if cfg.allow_spinning else "0")
    so.log_severity_level = 3  # CUDA fallback noise goes to our own log line instead
    return so


def create_session(model_path: Path | str, cfg: SessionConfig | None = None) -> ort.InferenceSession:
    """Build a session; log (or refuse) when a requested provider was not actually granted.

    `get_available_providers()` lists CUDA even on machines without a GPU, so only
    `session.get_providers()` after creation tells the truth.
    """
    cfg = cfg or SessionConfig()
    try:
        sess = ort.InferenceSession(str(model_path), sess_options=session_options(cfg),
                                    providers=list(cfg.providers))
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise ArtifactError(f"ONNX Runtime could not load {model_path}: {exc}") from exc
    granted = sess.get_providers()
    missing = [p for p in cfg.providers if p not in granted]
    if missing:
        msg = f"{Path(model_path).name}: requested {list(cfg.providers)} but ORT granted {granted}"
        if cfg.require_requested_providers:
            raise NotReady(msg)
        log.warning("%s; running on %s", msg, granted[0])
    else:
        log.info("%s: providers %s", Path(model_path).name, granted)
    return sess
