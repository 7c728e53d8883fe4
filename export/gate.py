"""Parity statistics and the INT8 accuracy gate: a quantised tower is served only if it passes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class GateThresholds:
    mean_cosine: float = 0.99
    min_cosine: float = 0.97
    min_samples: int = 200


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    stats: dict
    thresholds: dict

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reason": self.reason, **self.stats, "thresholds": self.thresholds}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"cosine_rows needs two equal (n, d) arrays, got {a.shape} and {b.shape}")
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def parity_stats(reference: np.ndarray, candidate: np.ndarray) -> dict:
    cos = cosine_rows(reference, candidate)
    finite = np.isfinite(cos)
    cos = np.where(finite, cos, -1.0)  # NaN/inf outputs count as total disagreement
    return {"n": int(cos.size), "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "cosine_p01": float(np.quantile(cos, 0.01)), "non_finite": int((~finite).sum())}


def int8_gate(fp32: np.ndarray, int8: np.ndarray, thresholds: GateThresholds | None = None) -> GateResult:
    """Compare INT8 outputs with FP32 outputs over the same samples."""
    t = thresholds or GateThresholds()
    stats = parity_stats(fp32, int8)
    problems = []
    if stats["n"] < t.min_samples:
        problems.append(f"only {stats['n']} samples, the gate needs >= {t.min_samples}")
    if stats["cosine_mean"] < t.mean_cosine:
        problems.append(f"mean cosine {stats['cosine_mean']:.4f} < {t.mean_cosine}")
    if stats["cosine_min"] < t.min_cosine:
        problems.append(f"min cosine {stats['cosine_min']:.4f} < {t.min_cosine}")
    passed = not problems
    reason = "passed" if passed else "; ".join(problems)
    return GateResult(passed=passed, reason=reason, stats=stats, thresholds=asdict(t))


def compare_models(fp32_path: str, int8_path: str, batches: list[dict], output: str,
                   thresholds: GateThresholds | None = None) -> GateResult:
    """Run the FP32 and the INT8 model on the same feeds and gate the INT8 outputs."""
    from kuamo.engine.session import create_session

    ref, cand = create_session(fp32_path), create_session(int8_path)
    a = np.concatenate([ref.run([output], feeds)[0] for feeds in batches])
    b = np.concatenate([cand.run([output], feeds)[0] for feeds in batches])
    return int8_gate(a.reshape(len(a), -1), b.reshape(len(b), -1), thresholds)
