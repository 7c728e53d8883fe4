"""The README's client examples run as written (only the address and token swapped) against a real server."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TOKEN, start_server
from fake_encoders import png

from kuamo.engine.types import Product
from kuamo.server.client import Client

README = Path(__file__).resolve().parents[3] / "README.md"


def _using_it() -> str:
    text = README.read_text(encoding="utf-8")
    return text[text.index("## Using it"):text.index("\n## ", text.index("## Using it") + 5)]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    srv = start_server(tmp_path_factory.mktemp("readme"), tokens=(TOKEN,)).load()
    with Client(srv.target, token=TOKEN) as c:  # the fields the README's examples filter on (the demo catalog's)
        c.upsert([Product(id=7000 + i, title=f"red running shoes {i}", category="Footwear/Shoes/Sports Shoes",
                          attributes={"gender": "Women" if i % 2 else "Men"}) for i in range(6)],
                 [png("red")] * 6)
    yield srv.target
    srv.stop()


def test_python_example_runs(target: str, tmp_path: Path) -> None:
    code = re.search(r"```python\n(.*?)```", _using_it(), re.S).group(1)  # type: ignore[union-attr]
    assert '"127.0.0.1:50051"' in code and '"SECRET"' in code
    code = code.replace('"127.0.0.1:50051"', repr(target)).replace('"SECRET"', repr(TOKEN))
    code += "\nassert hits and similar.hits and recs.hits is not None\nprint('ok')\n"
    (tmp_path / "photo.jpg").write_bytes(png("red"))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr


def test_search_commands_run(target: str, tmp_path: Path) -> None:
    bash = re.search(r"```bash\n(.*?)```", _using_it(), re.S).group(1)  # type: ignore[union-attr]
    lines = [line.split("  #")[0].strip() for line in bash.splitlines() if line.startswith("kuamo search")]
    assert len(lines) >= 2
    (tmp_path / "photo.jpg").write_bytes(png("blue"))
    for line in lines:
        args = [*shlex.split(line)[1:], "--target", target, "--token", TOKEN]
        out = subprocess.run([sys.executable, "-m", "kuamo.cli", *args], cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, (line, out.stderr)
        assert "title" in out.stdout.splitlines()[0], (line, out.stdout)
