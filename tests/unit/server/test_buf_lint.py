"""`buf lint` (STANDARD, proto/buf.yaml) passes on kuamo.v2. The buf binary ships on npm as @bufbuild/buf; `make test`
installs it into .cache/buf (best effort): where it is missing this test skips and says why."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PROTO = REPO / "proto"


def buf_binary() -> str | None:
    for candidate in (os.environ.get("KUAMO_BUF"), str(REPO / ".cache/buf/node_modules/.bin/buf"), shutil.which("buf")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def buf() -> str:
    found = buf_binary()
    if found is None:
        pytest.skip("no buf binary: `npm install --prefix .cache/buf @bufbuild/buf@1.75.0` (make test does it "
                    "where npm and the registry are reachable) or set KUAMO_BUF")
    return found


def test_buf_lint_standard_passes_on_v2(buf: str) -> None:
    files = subprocess.run([buf, "ls-files"], cwd=PROTO, capture_output=True, text=True, timeout=120)
    assert files.returncode == 0, files.stderr
    assert "kuamo/v2/kuamo.proto" in files.stdout.split()  # the lint below covers v2 (v1 is excluded as it was)
    lint = subprocess.run([buf, "lint"], cwd=PROTO, capture_output=True, text=True, timeout=120)
    assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr
