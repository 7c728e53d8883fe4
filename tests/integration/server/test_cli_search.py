"""`kuamo search` against a real server: a readable table, and a clear one-line error for bad input."""

from __future__ import annotations

import subprocess
import sys


def kuamo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kuamo.cli", *args], capture_output=True, text=True, timeout=60)


def test_search_prints_a_table_with_explanations(server) -> None:
    r = kuamo("search", "red dress", "--k", "3", "--explain", "--filter", "price<100", "--target", server.target)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "title" in lines[0] and "red dress" in lines[2]
    assert "why: " in r.stdout and "products passed the filters" in r.stdout


def test_bad_request_is_one_clear_line(server) -> None:
    r = kuamo("search", "red dress", "--k", "0", "--target", server.target)
    assert r.returncode == 2
    assert "INVALID_ARGUMENT" in r.stderr and "k must be" in r.stderr and "Traceback" not in r.stderr
    r = kuamo("search", "red", "--filter", "price<<3", "--target", server.target)
    assert r.returncode == 2 and "price<<3" in r.stderr


def test_bad_weights_and_photos_are_one_line_each(server, tmp_path) -> None:
    cases = {("--weight", "image=abc"): "needs a number", ("--weight", "image"): "is not NAME=VALUE",
             ("--weight", "=0.5"): "is not NAME=VALUE", ("--weight", "text=-1"): ">= 0",
             ("--weight", "text=nan"): "finite", ("--image", str(tmp_path / "nope.jpg")): "cannot read photo"}
    for args, expected in cases.items():
        r = kuamo("search", "red", *args, "--target", server.target)
        assert r.returncode == 2, (args, r.stderr)
        assert expected in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    r = kuamo("search", "red", "--weight", "text=1", "--weight", "image=0", "--target", server.target)
    assert r.returncode == 0, r.stderr  # good weights still pass


def test_a_missing_catalog_file_is_one_line(tmp_path) -> None:
    r = kuamo("index", str(tmp_path / "missing.csv"), "--data", str(tmp_path / "data"), "--models", "/nonexistent")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_token_from_a_file(tmp_path) -> None:
    from conftest import TOKEN, start_server

    srv = start_server(tmp_path / "srv", tokens=(TOKEN,)).load()
    try:
        good, empty = tmp_path / "token", tmp_path / "empty"
        good.write_text(f"# the search token\n{TOKEN}\n")
        empty.write_text("\n# nothing\n")
        r = kuamo("search", "red dress", "--k", "2", "--token-file", str(good), "--target", srv.target)
        assert r.returncode == 0, r.stderr
        r = kuamo("search", "red dress", "--target", srv.target)
        assert r.returncode == 2 and "UNAUTHENTICATED" in r.stderr
        for bad, why in ((empty, "holds no token"), (tmp_path / "missing", "cannot read the token file")):
            r = kuamo("search", "red", "--token-file", str(bad), "--target", srv.target)
            assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr, r.stderr
    finally:
        srv.stop()
