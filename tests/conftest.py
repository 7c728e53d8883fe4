"""Shared fixtures: the exported model directory and the fashion catalog, both real."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = Path(os.environ.get("KUAMO_TEST_MODELS", REPO / "models" / "default"))
FASHION_DIR = Path(os.environ.get("KUAMO_FASHION_DIR", REPO.parent / "shared" / "data" / "fashion"))


@pytest.fixture(scope="session")
def model_dir() -> Path:
    if not (MODEL_DIR / "manifest.json").is_file():
        pytest.skip(f"no exported models in {MODEL_DIR}: run `make models` (kuamo export) first")
    return MODEL_DIR


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    if not (FASHION_DIR / "products.csv").is_file():
        pytest.skip(f"fashion catalog not found at {FASHION_DIR} (set KUAMO_FASHION_DIR)")
    return FASHION_DIR


@pytest.fixture(scope="session", autouse=True)
def _tokenizer_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Derived tokenizer copies go to a temporary folder, not the user's ~/.cache (engine/unigram_cache.py)."""
    with pytest.MonkeyPatch.context() as mp:
        if "KUAMO_TOKENIZER_CACHE" not in os.environ:
            mp.setenv("KUAMO_TOKENIZER_CACHE", str(tmp_path_factory.mktemp("tokenizer_cache")))
        yield


@pytest.fixture(scope="session")
def avx2_only_mode(tmp_path_factory: pytest.TempPathFactory):
    """benchmarks/avx2_only.py's mode, built once per run in a temp dir (not the user's ~/.cache): patching ONNX
    Runtime takes seconds. Skips where it cannot be built or run (not Linux x86-64, no gcc/objdump/unshare, no
    mount namespaces in this container)."""
    from kuamo.benchmarks.avx2_only import prepare, unavailable

    if why := unavailable():
        pytest.skip(why)
    env = prepare(tmp_path_factory.mktemp("avx2_only"))
    done = env.run(["true"], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"AVX2-only mode unavailable here: {done.stderr.strip()}")
    return env
