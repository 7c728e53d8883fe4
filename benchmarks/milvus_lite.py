"""A `milvus-lite server` in a subprocess on loopback: a Milvus endpoint (http://127.0.0.1:PORT) for tests and
benchmarks of engine/milvus_backend.py without a cluster.

It runs milvus_lite's own CLI (`milvus-lite server --data-dir D --host H --port P`, milvus_lite/cmdline.py) as
`python -m milvus_lite`, bound to 127.0.0.1: the CLI's default host is 0.0.0.0, which would expose an
unauthenticated database to the network. Milvus Lite ignores tokens.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["free_port", "start_milvus_lite_server", "stop_milvus_lite_server"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (another process may still take it before the server does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _log_tail(log: Path, n: int = 2000) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-n:]
    except OSError:
        return ""


def start_milvus_lite_server(data_dir: Path | str, port: int | None = None, *, host: str = "127.0.0.1",
                             ready_timeout_s: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start the server on `data_dir` (created if missing) and wait until it accepts connections. Returns
    (the process, its URI). Its output goes to `<data_dir>.log`. Stop it with stop_milvus_lite_server."""
    data_dir = Path(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    port = free_port(host) if port is None else int(port)
    log = data_dir.with_name(data_dir.name + ".log")
    cmd = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(data_dir), "--host", host,
           "--port", str(port)]
    with open(log, "ab") as out:  # the child keeps its own handle
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + ready_timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"milvus-lite server exited with {proc.returncode}: {_log_tail(log)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_milvus_lite_server(proc)
            raise RuntimeError(f"milvus-lite server not listening on {host}:{port} after {ready_timeout_s:g} s: "
                               f"{_log_tail(log)}")
        time.sleep(0.05)
    return proc, f"http://{host}:{port}"


def stop_milvus_lite_server(proc: subprocess.Popen, timeout_s: float = 15.0) -> int:
    """Ctrl-C (the server then closes its database cleanly), then kill if it lingers. Its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    return int(proc.returncode)
