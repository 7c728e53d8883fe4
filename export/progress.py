"""A small step display for long offline jobs: numbered steps with elapsed time, to stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class StepProgress:
    """Callable `progress(message)`: prints each step with the time since the previous one."""

    def __init__(self, title: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.start = self.last = time.perf_counter()
        self.step = 0
        print(f"== {title}", file=self.stream, flush=True)

    def __call__(self, message: str) -> None:
        now = time.perf_counter()
        self.step += 1
        print(f"  [{self.step:>2}] +{now - self.last:6.1f}s  {message}", file=self.stream, flush=True)
        self.last = now

    def done(self, message: str = "done") -> float:
        total = time.perf_counter() - self.start
        print(f"== {message} in {total:.1f}s", file=self.stream, flush=True)
        return total
