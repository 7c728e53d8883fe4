"""`kuamo serve` as a child process on a free loopback port, for the benchmarks that measure it from outside,
and consistent copies of a data directory for the runs that write to it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEADLINE_S = 10.0  # per call, where a slower answer counts as a hang
# `kuamo serve` flags that make every query do the work: a load that repeats its queries is otherwise answered
# from the result cache at a rate no Python load generator can outrun
CACHES_OFF = ("--query-cache-entries", "0", "--result-cache-entries", "0")


@dataclass
class Server:
    proc: subprocess.Popen
    target: str
    log: Path | None
    metrics_port: int | None = None
    banner: str = ""  # the server's "serving on ..." line (it names the HTTP port when there is one)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


def start_server(models: Path, data: Path, log: Path | None = None, *, max_inflight: int = 256,
                 timeout_s: float = 300, metrics: bool = False, extra_args: Sequence[str] = (),
                 cpus: Sequence[int] | None = None, wrapper: Sequence[str] = (),
                 env: dict[str, str] | None = None) -> Server:
    """Start the server (stderr appended to `log`, or discarded) and return once it is SERVING; `cpus` pins it
    (as taskset does) before it starts, so every thread it makes inherits the pinning. `wrapper` is a command
    prefix that execs the server (benchmarks/avx2_only.py's mode) and `env` its environment."""
    cmd = [*wrapper, sys.executable, "-m", "kuamo.cli", "serve", "--port", "0",
           "--metrics-port", "0" if metrics else "-1", "--models", str(models), "--data", str(data), *extra_args]
    env = {**(os.environ if env is None else env), "KUAMO_SERVER_MAX_INFLIGHT": str(max_inflight)}
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    if log is None:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                                preexec_fn=pin)
    else:
        with open(log, "ab") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, preexec_fn=pin)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server exited with {proc.wait()} before serving (log: {log})")
        m = re.search(r"serving on ([\d.]+:\d+)(?:, metrics on :(\d+))?", line)
        if m:
            return Server(proc, m.group(1), log, int(m.group(2)) if m.group(2) else None, line.strip())
    proc.kill()
    raise TimeoutError("server did not start")


def stop_server(s: Server, *, kill: bool = False) -> None:
    """SIGINT (graceful) or SIGKILL; escalates to a kill after 60 s."""
    if s.alive():
        s.proc.send_signal(signal.SIGKILL if kill else signal.SIGINT)
        try:
            s.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait()
    if s.proc.stdout is not None:
        s.proc.stdout.close()


@contextmanager
def serving(models: Path, data: Path, log: Path | None = None, **kw: Any) -> Iterator[Server]:
    s = start_server(models, data, log, **kw)
    try:
        yield s
    finally:
        stop_server(s)


@contextmanager
def server_process(models: Path, data: Path, *, batching: bool = True, max_inflight: int = 64,
                   timeout_s: float = 600, event_loop: str | None = None, query_cache: bool = True) -> Iterator[str]:
    """`kuamo serve` (batching on or off, asyncio or uvloop, query cache on or off) with stderr discarded; yields
    its target."""
    extra = (([] if batching else ["--no-batching"]) + (["--event-loop", event_loop] if event_loop else [])
             + ([] if query_cache else list(CACHES_OFF)))
    with serving(models, data, max_inflight=max_inflight, timeout_s=timeout_s, extra_args=extra) as s:
        yield s.target


def copy_data(src: Path, dst: Path) -> Path:
    """A consistent copy of an engine data directory (SQLite online backup, then the index snapshot)."""
    dst.mkdir(parents=True)
    with sqlite3.connect(f"file:{src / 'catalog.sqlite'}?mode=ro", uri=True) as a, \
            sqlite3.connect(dst / "catalog.sqlite") as b:
        a.backup(b)
    if (src / "index").is_dir():
        shutil.copytree(src / "index", dst / "index")
    if (src / "user.key").is_file():
        shutil.copy2(src / "user.key", dst / "user.key")
    return dst
