"""Crash repair: kill -9 an ingest subprocess midway, reopen, and check the store and the index agree,
every committed product is searchable, and a re-run resumes (skips what was committed)."""

from __future__ import annotations

import asyncio
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_encoders import FakeImageEncoder, FakeTextEncoder, png

from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.ingest import index_catalog
from kuamo.engine.types import Filters, Query

# the crash subprocess imports the fake encoders from here too
FAKES = Path(__file__).resolve().parents[1] / "support"

N = 400
WORDS = ["red", "blue", "shirt", "dress", "watch", "bag", "linen", "silk", "cotton", "wool"]

INGEST = r"""
import sys, time
sys.path.insert(0, sys.argv[3])
from fake_encoders import FakeImageEncoder, FakeTextEncoder
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.ingest import index_catalog

class SlowText(FakeTextEncoder):
    def encode(self, texts, kind="query"):
        time.sleep(0.03)  # slow enough for the parent to kill us between (and inside) commits
        return super().encode(texts, kind)

cfg = EngineConfig(data_dir=sys.argv[2], snapshot_every=60, upsert_chunk=10)
eng = Engine(cfg, text_encoder=SlowText(), image_encoder=FakeImageEncoder())
index_catalog(sys.argv[1], engine=eng, progress=False, batch_size=10)
print("DONE", flush=True)
"""


def title(i: int) -> str:
    return f"{WORDS[i % 10]} {WORDS[(i // 10) % 10]} {WORDS[(i // 100) % 10]} item{i}"


def write_catalog(root: Path) -> Path:
    (root / "img").mkdir(parents=True)
    colours = ["red", "green", "blue"]
    for c in colours:
        (root / "img" / f"{c}.png").write_bytes(png(c))
    path = root / "catalog.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "price", "rating", "image"])
        for i in range(N):
            w.writerow([100 + i, title(i), 5 + i, round((i % 50) / 10, 1), f"img/{colours[i % 3]}.png"])
    return path


def committed(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as c:
            return c.execute("SELECT count(*) FROM products").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def open_engine(data: Path) -> Engine:
    return Engine(EngineConfig(data_dir=data, snapshot_every=60, upsert_chunk=10), text_encoder=FakeTextEncoder(),
                  image_encoder=FakeImageEncoder())


def kill_midway(catalog: Path, data: Path, at: int) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-c", INGEST, str(catalog), str(data), str(FAKES)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while committed(data / "catalog.sqlite") < at:
            if proc.poll() is not None:
                pytest.fail(f"ingest ended before the kill: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("ingest made no progress")
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


@pytest.mark.parametrize("kill_at", [25, 130])
def test_kill_ingest_midway_then_repair_and_resume(tmp_path, kill_at) -> None:
    catalog = write_catalog(tmp_path / "cat")
    data = tmp_path / "data"
    kill_midway(catalog, data, kill_at)

    eng = open_engine(data)
    n = eng.store.count()
    assert kill_at <= n < N, "the kill should land midway"
    assert len(eng.index) == n and eng.index_seq == eng.store.last_seq()
    ids, _ = eng.store.all_vectors()
    assert len(ids) == n
    for pid in ids.tolist()[:: max(1, n // 25)]:
        i = pid - 100
        res = asyncio.run(eng.search(Query(text=title(i), weights={"text": 1.0}, k=1)))
        assert res.hits[0].id == pid, f"committed product {pid} is not found by its own title"
        res = asyncio.run(eng.search(Query(text="anything", k=1, filters=Filters(ids=(pid,)))))
        assert [h.id for h in res.hits] == [pid]

    rep = index_catalog(catalog, engine=eng, progress=False, batch_size=50)
    assert rep.unchanged == n and rep.accepted == N - n and not rep.rejected
    st = asyncio.run(eng.stats())
    assert st.products == st.indexed == N
    asyncio.run(eng.close())

    eng = open_engine(data)  # clean reopen after a clean close: straight from the snapshot
    assert eng.recovery["mode"].startswith("snapshot@") and len(eng.index) == N
    asyncio.run(eng.close(snapshot=False))
