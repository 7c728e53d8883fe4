"""NumPy's BLAS threads while an engine is open.

The engine's own matrix work is small and per query (exact re-rank, the photo query's category agreement:
a 100 x 384 by 384 x 89 product), while ONNX Runtime already keeps the cores busy. OpenBLAS's worker threads
spin after each call and take those cores from it: 8 clients sending 3 text queries to 1 photo, in-process,
ran 141 q/s with OpenBLAS's default threads and 210 q/s with one (Xeon, 2 cores). The cap is process-wide
(that is how BLAS libraries work), so it holds while at least one engine is open and is lifted when the
last one closes: code that runs beside an engine and after it (a benchmark's reference) gets its threads back.
"""

from __future__ import annotations

import threading

from threadpoolctl import threadpool_limits

_lock = threading.Lock()
_users = 0
_limiter: threadpool_limits | None = None


def acquire(n: int | None) -> bool:
    """Cap the BLAS libraries loaded in this process at `n` threads (None: leave them; returns False).
    The first open engine's `n` holds until the last one releases."""
    global _users, _limiter
    if n is None:
        return False
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"blas_threads must be a positive integer or None, got {n!r}")
    with _lock:
        if _users == 0:
            _limiter = threadpool_limits(limits=n, user_api="blas")
        _users += 1
    return True


def release() -> None:
    global _users, _limiter
    with _lock:
        _users = max(0, _users - 1)
        if _users == 0 and _limiter is not None:
            _limiter.restore_original_limits()
            _limiter = None
