"""Figures for the benchmark reports: matplotlib on the Agg backend (no display), one save path that
creates the results directory, and the latency CDF several suites draw."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, imported on first use (matplotlib is a dev dependency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, save (creating the directory) and close `fig`."""
    try:
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        pyplot().close(fig)
    return path


@contextmanager
def figure(path: Path, *args: Any, **kw: Any) -> Iterator[tuple[Any, Any]]:
    """(fig, axes) of plt.subplots(*args, **kw), saved to `path` when the block ends."""
    fig, axes = pyplot().subplots(*args, **kw)
    try:
        yield fig, axes
    except BaseException:
        pyplot().close(fig)
        raise
    save_figure(fig, path)


def latency_cdf(ax: Any, label: str, seconds: Sequence[float]) -> None:
    """One CDF line of per-call latencies (seconds) in ms, labelled with its median; nothing when empty."""
    ms = np.sort(np.asarray(seconds, dtype=np.float64)) * 1e3
    if len(ms):
        ax.plot(ms, np.arange(1, len(ms) + 1) / len(ms), label=f"{label} (p50 {np.median(ms):.1f} ms)")
