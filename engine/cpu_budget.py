"""How many cores this process may really use: its CPU affinity (taskset, cpusets) capped by a cgroup CPU quota
(`docker --cpus`, Kubernetes limits). os.cpu_count() sees the host's cores under both, and ONNX Runtime's
default thread count follows the physical cores, so a container limited to 1 CPU ran 2+ spinning threads on it."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _v2_quota(line: str) -> float | None:
    """'150000 100000' -> 1.5; 'max 100000' -> None (no limit)."""
    parts = line.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    quota, period = int(parts[0]), int(parts[1])
    return quota / period if quota > 0 and period > 0 else None


def cgroup_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The smallest CPU quota (in cores) on this process's cgroup path, v2 or v1; None when there is none."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2: every cgroup up to the root may carry a limit
            here = root / path.lstrip("/")
            for d in (here, *here.parents):
                if not d.is_relative_to(root):
                    break
                try:
                    q = _v2_quota((d / "cpu.max").read_text())
                except (OSError, ValueError):
                    continue
                if q is not None:
                    quotas.append(q)
        elif "cpu" in controllers.split(","):  # cgroup v1
            base = root / controllers
            for d in (base / path.lstrip("/"), base):
                try:
                    quota = int((d / "cpu.cfs_quota_us").read_text())
                    period = int((d / "cpu.cfs_period_us").read_text())
                except (OSError, ValueError):
                    continue
                if quota > 0 and period > 0:
                    quotas.append(quota / period)
                break
    return min(quotas) if quotas else None


def usable_cores() -> int:
    """Affinity capped by the quota (a fractional quota rounds down, at least 1: threads beyond the quota are
    throttled, not run)."""
    n = _affinity()
    quota = cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)
