"""NumPy's BLAS threads in a serving process.

The engine's own matrix work is small and per query (exact re-rank, the photo query's category agreement:
a 100 x 384 by 384 x 89 product), while ONNX Runtime already keeps the cores busy. OpenBLAS's worker threads
spin after each call and take those cores from it: 8 clients sending 3 text queries to 1 photo, in-process,
ran 141 q/s with OpenBLAS's default threads and 217 q/s with one (Xeon, 2 cores).
"""

from __future__ import annotations

from threadpoolctl import threadpool_limits

_applied: int | None = None


def limit_blas_threads(n: int | None) -> None:
    """Cap the BLAS libraries loaded in this process at `n` threads (None: leave them as they are)."""
    global _applied
    if n is None or n == _applied:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"blas_threads must be a positive integer or None, got {n!r}")
    threadpool_limits(limits=n, user_api="blas")
    _applied = n
