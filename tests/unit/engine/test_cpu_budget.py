"""The cores a process may use: affinity capped by a cgroup quota, read from v1 and v2 layouts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kuamo.engine import cpu_budget
from kuamo.engine.config import SessionConfig
from kuamo.engine.session import session_options


def _tree(tmp_path: Path, files: dict[str, str], proc: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (tmp_path / "proc_cgroup").write_text(proc)
    return root, tmp_path / "proc_cgroup"


def test_v2_quota_is_the_smallest_on_the_path(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, {"cpu.max": "max 100000\n", "kubepods/cpu.max": "400000 100000\n",
                                  "kubepods/pod1/cpu.max": "150000 100000\n"}, "0::/kubepods/pod1\n")
    assert cpu_budget.cgroup_quota(root, proc) == pytest.approx(1.5)


def test_v2_without_a_limit(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, {"cpu.max": "max 100000\n"}, "0::/\n")
    assert cpu_budget.cgroup_quota(root, proc) is None


def test_v1_quota(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
                                  "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n"},
                       "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    assert cpu_budget.cgroup_quota(root, proc) == pytest.approx(0.5)


def test_v1_unlimited_and_unreadable(tmp_path: Path) -> None:
    root, proc = _tree(tmp_path, {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "1:cpu:/\n")
    assert cpu_budget.cgroup_quota(root, proc) is None
    assert cpu_budget.cgroup_quota(root, tmp_path / "no-such-file") is None


def test_quota_caps_affinity_and_rounds_down_to_at_least_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_budget, "_affinity", lambda: 8)
    monkeypatch.setattr(cpu_budget, "cgroup_quota", lambda: 2.7)
    assert cpu_budget.usable_cores() == 2
    monkeypatch.setattr(cpu_budget, "cgroup_quota", lambda: 0.5)
    assert cpu_budget.usable_cores() == 1
    monkeypatch.setattr(cpu_budget, "cgroup_quota", lambda: None)
    assert cpu_budget.usable_cores() == 8


def test_sessions_take_one_thread_per_usable_core(monkeypatch: pytest.MonkeyPatch) -> None:
    import kuamo.engine.session as session

    monkeypatch.setattr(session, "usable_cores", lambda: 3)
    assert session_options(SessionConfig()).intra_op_num_threads == 3
    assert session_options(SessionConfig(intra_op_threads=5)).intra_op_num_threads == 5  # explicit wins


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) is not installed")
def test_a_process_pinned_to_one_core_counts_one() -> None:
    out = subprocess.run(["taskset", "-c", "0", sys.executable, "-c",
                          "from kuamo.engine.cpu_budget import usable_cores; print(usable_cores())"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "1"
