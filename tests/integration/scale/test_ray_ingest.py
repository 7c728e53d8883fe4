"""`kuamo index --ray` on a 2-node local Ray cluster (ray.cluster_utils.Cluster): the same vectors and rejections
as the single-process `kuamo index`, a worker that dies is retried, a re-run writes nothing, and an address
where no cluster answers fails quickly and says so. Real models, ~50 rows with fashion photos + bad rows."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from kuamo.cli import main  # noqa: E402
from kuamo.engine.config import EncoderConfig  # noqa: E402
from kuamo.engine.engine import Engine, EngineConfig  # noqa: E402
from kuamo.engine.ids import row_key  # noqa: E402
from kuamo.engine.ingest import IngestReport, index_catalog  # noqa: E402
from kuamo.engine.ray_ingest import (  # noqa: E402
    FAULT_ONCE_ENV,
    RayIngestReport,
    RayUnavailable,
    StoredHashes,
    ray_index_catalog,
    read_blocks,
)
from kuamo.engine.store import CatalogStore  # noqa: E402

pytestmark = pytest.mark.models

GOOD = 44
BAD = 8
FIELDS = ["id", "title", "description", "category", "brand", "price", "rating", "image", "gender", "year"]


def _catalog(fashion_dir: Path, dst: Path) -> Path:
    """A generic-mapping CSV in `dst`: GOOD real products (most with their photo, copied next to it: photos
    must lie inside the catalog directory) and BAD rows that fail in parsing, in reading the photo or in the
    image tower."""
    (dst / "images").mkdir(parents=True)
    with open(fashion_dir / "products.csv", newline="", encoding="utf-8") as f:
        source = [r for r in csv.DictReader(f) if (fashion_dir / "images" / f"{r['id']}.jpg").is_file()][:GOOD]
    rows = []
    for i, r in enumerate(source):
        with_photo = i % 6 != 5  # a few text-only products
        if with_photo:
            shutil.copy(fashion_dir / "images" / f"{r['id']}.jpg", dst / "images")
        rows.append({"id": r["id"], "title": r["productDisplayName"], "description": "",
                     "category": " > ".join((r["masterCategory"], r["subCategory"], r["articleType"])),
                     "brand": r["productDisplayName"].split()[0], "price": str(300 + int(r["id"]) % 2000),
                     "rating": f"{(int(r['id']) % 50) / 10:.1f}", "image": f"images/{r['id']}.jpg" if with_photo
                     else "", "gender": r["gender"], "year": r["year"]})
    (dst / "images" / "broken.jpg").write_bytes(b"this is not a jpeg")
    bad = [
        {"id": "900001", "title": "odd price", "price": "cheap"},  # parse: price
        {"id": "900002", "title": "too good", "rating": "7"},  # parse: rating out of range
        {"id": "", "title": "no id at all"},  # parse: id
        {"id": "900003", "title": "escape", "image": "../outside.jpg"},  # parse: image path
        {"id": "900004", "title": "ghost", "image": "images/missing.jpg"},  # parse: missing photo
        {"id": "900005", "title": ""},  # parse: nothing to index
        {"id": "900006", "title": "broken photo", "image": "images/broken.jpg"},  # embed: photo does not decode
        {"id": "900007", "title": "broken photo again", "image": "images/broken.jpg", "price": "12"},
    ]
    assert len(bad) == BAD
    rows[7:7] = bad[:4]  # spread over the blocks
    rows[30:30] = bad[4:]
    path = dst / "products.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, restval="")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def catalog(fashion_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _catalog(fashion_dir, tmp_path_factory.mktemp("catalog"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """Two Ray nodes of 1 CPU and 150 MB object store each, on this machine; a private temp dir (Ray's address
    file included). The fault-injection variable is set before the nodes start, so their actors inherit it."""
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="kr-test-")  # short: Ray's socket paths must fit in ~107 characters
    os.makedirs(os.path.join(tmp, "ray"))
    c = None
    try:
        with mock.patch.dict(os.environ, {"RAY_TMPDIR": tmp, "RAY_USAGE_STATS_ENABLED": "0",
                                          FAULT_ONCE_ENV: os.path.join(tmp, "fault-once")}):
            try:
                node = {"num_cpus": 1, "object_store_memory": 150 * 1024 * 1024, "include_dashboard": False}
                for attempt in range(2):  # a start can time out on a loaded machine: once more, then fail
                    try:
                        c = Cluster(initialize_head=True, head_node_args=node)
                        c.add_node(num_cpus=1, object_store_memory=150 * 1024 * 1024)
                        break
                    except Exception:
                        if c is not None:
                            c.shutdown()
                            c = None
                        if attempt:
                            raise
                assert c is not None
                yield c.address
            finally:
                if c is not None:
                    c.shutdown()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _config(model_dir: Path, data: Path) -> EngineConfig:
    return EngineConfig(model_dir=model_dir, data_dir=data, encoder=EncoderConfig(model_dir=model_dir))


def _vectors(model_dir: Path, data: Path) -> dict[int, np.ndarray]:
    async def read() -> dict[int, np.ndarray]:
        eng = await Engine.open(_config(model_dir, data))
        try:
            keys, vecs = eng.backend.vectors([int(k) for k in eng.backend.keys()])
            return {int(k): v for k, v in zip(keys, vecs, strict=True)}
        finally:
            await eng.close(snapshot=False)

    return asyncio.run(read())


def _rejections(report: IngestReport) -> list[tuple]:
    # PIL names the buffer it failed on by its address ("<_io.BytesIO object at 0x7f..>"): not the same twice
    return sorted((r.row, str(r.id), r.field, re.sub(r" at 0x[0-9a-f]+", "", r.reason)) for r in report.rejected)


@pytest.fixture(scope="module")
def single(model_dir: Path, catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[IngestReport, Path]:
    data = tmp_path_factory.mktemp("single") / "data"
    report = index_catalog(catalog, config=_config(model_dir, data), progress=False)
    return report, data


@pytest.fixture(scope="module")
def on_ray(model_dir: Path, catalog: Path, cluster: str, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[RayIngestReport, Path]:
    data = tmp_path_factory.mktemp("ray") / "data"
    report = ray_index_catalog(catalog, config=_config(model_dir, data), address=cluster, workers=2,
                               batch_rows=4, progress=False)
    return report, data


def test_same_vectors_and_rejections_as_single_process(model_dir: Path, single: tuple[IngestReport, Path],
                                                       on_ray: tuple[RayIngestReport, Path]) -> None:
    (ref, ref_data), (got, got_data) = single, on_ray
    assert got.rows_read == ref.rows_read == GOOD + BAD
    assert got.accepted == ref.accepted == GOOD
    # (b) every bad row rejected, with the same row number, id, field and reason as single-process
    assert _rejections(got) == _rejections(ref)
    assert {r.field for r in got.rejected} == {"price", "rating", "id", "image", "title"}
    assert got.image_blend == ref.image_blend  # the driver chose the blend before the run, as single-process
    # (a) the same vectors, product by product
    want, have = _vectors(model_dir, ref_data), _vectors(model_dir, got_data)
    assert set(have) == set(want) and len(have) == GOOD
    worst = max(float(np.max(np.abs(have[k] - want[k]))) for k in want)
    assert worst <= 1e-5, worst
    # the job ran on both nodes' pool, and the report carries the job's fixed cost and the stages' throughput.
    # Which actors get batches is Ray Data's choice: on a fast CPU the first ready actor can embed all 13 of
    # these tiny batches before the other's first one is dispatched (seen once in a clean-clone run)
    assert got.nodes == 2 and got.workers == 2 and 1 <= got.actor_loads <= 2
    ray_part = got.to_dict()["ray"]
    assert ray_part["fixed_s"] > 0 and ray_part["steady_rows_per_s"] > 0
    assert {"read", "parse", "embed", "write"} == set(ray_part["stages"])
    assert ray_part["stages"]["write"]["rows"] == GOOD


def test_a_rerun_through_the_cli_writes_nothing(model_dir: Path, catalog: Path, cluster: str,
                                                on_ray: tuple[RayIngestReport, Path],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    first, data = on_ray
    code = main(["index", str(catalog), "--ray", cluster, "--ray-workers", "2", "--models", str(model_dir),
                 "--data", str(data)])
    out = capsys.readouterr().out
    report = json.loads(out)  # stdout holds the report and nothing else
    assert code == 0
    assert report["accepted"] == 0 and report["unchanged"] == first.accepted
    assert report["rejected"] == len(first.rejected)
    # skipped before the towers, not after: only the two rows whose photo the tower refused (never stored, so
    # with no hash to match) went through them again, as they would single-process
    assert report["ray"]["stages"]["embed"]["rows"] == 2
    assert report["ray"]["workers"] == 2


def test_a_worker_that_dies_is_retried(model_dir: Path, catalog: Path, cluster: str, tmp_path: Path) -> None:
    marker = Path(os.environ[FAULT_ONCE_ENV])
    marker.touch()  # the first actor to see it deletes it and exits on its batch
    report = ray_index_catalog(catalog, config=_config(model_dir, tmp_path / "data"), address=cluster, workers=2,
                               batch_rows=4, progress=False)
    assert not marker.exists(), "no actor died: the fault was not injected"
    assert report.rows_read == GOOD + BAD and report.accepted == GOOD and len(report.rejected) == BAD


def test_photos_named_by_url_are_fetched_once_by_the_driver(model_dir: Path, fashion_dir: Path, cluster: str,
                                                          tmp_path: Path) -> None:
    """--fetch-photos with --ray: the driver downloads into the catalog directory, the actors read the copies."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from kuamo.engine.catalog_map import CatalogConfig

    images = fashion_dir / "images"
    ids = sorted(p.stem for p in images.glob("*.jpg"))[:6]
    cdn = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(images)))
    cdn.RequestHandlerClass.log_message = lambda *a: None  # type: ignore[method-assign]
    threading.Thread(target=cdn.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{cdn.server_address[1]}"
    feed = tmp_path / "shop" / "feed.csv"
    feed.parent.mkdir()
    with open(feed, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "image_link"])
        w.writerows([[f"u{i}", f"product {i}", f"{base}/{i}.jpg"] for i in ids] + [["gone", "x", f"{base}/0.jpg"]])
    try:
        report = ray_index_catalog(feed, config=_config(model_dir, tmp_path / "data"), address=cluster, workers=2,
                                   batch_rows=2, progress=False, catalog=CatalogConfig(fetch_photos=True))
    finally:
        cdn.shutdown()
        cdn.server_close()
    assert (report.accepted, [(r.id, r.field) for r in report.rejected]) == (len(ids), [("gone", "image")])
    assert "could not be fetched: HTTP 404" in report.rejected[0].reason
    assert report.photos is not None and report.photos["fetched"] == len(ids)


def _shop(fashion_dir: Path, shop: Path) -> tuple[Path, list[str]]:
    """A merchant's folder holding three real fashion photos: (the folder, their ids)."""
    shop.mkdir()
    ids = sorted(p.stem for p in (fashion_dir / "images").glob("*.jpg"))[:3]
    for i in ids:
        shutil.copy(fashion_dir / "images" / f"{i}.jpg", shop)
    return shop, ids


def test_shopify_variant_rows_are_left_out_as_single_process_does(model_dir: Path, fashion_dir: Path, cluster: str,
                                                                  tmp_path: Path) -> None:
    shop, ids = _shop(fashion_dir, tmp_path / "shop")
    feed = shop / "products_export.csv"
    with open(feed, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Handle", "Title", "Variant Price", "Image Src", "Option1 Name", "Option1 Value", "Variant SKU"])
        for i in ids:
            w.writerows([[f"h{i}", f"product {i}", "10.00", f"{i}.jpg", "Size", "S", f"{i}-S"],
                         [f"h{i}", "", "12.00", "", "", "M", f"{i}-M"], [f"h{i}", "", "", f"{i}.jpg", "", "", ""]])
    got = ray_index_catalog(feed, config=_config(model_dir, tmp_path / "ray"), address=cluster, workers=2,
                            batch_rows=2, progress=False)
    ref = index_catalog(feed, config=_config(model_dir, tmp_path / "single"), progress=False)
    assert (got.mapping, got.accepted, got.continuation_rows, got.rejected) == ("shopify", 3, 6, [])
    assert (ref.accepted, ref.continuation_rows, ref.rejected) == (3, 6, [])
    # each product carries its variants' sizes and SKUs on Ray as in one process
    for data in ("ray", "single"):
        store = CatalogStore(tmp_path / data / "catalog.sqlite")
        p = store.get(row_key(f"h{ids[0]}"), f"h{ids[0]}")
        assert (p.attributes["Size"], p.attributes["SKU"]) == ("S, M", f"{ids[0]}-S {ids[0]}-M")
        store.close()
    # the next day's export drops one product and sets another to draft: --prune deletes the first, the draft's
    # own row deletes the second, on Ray as single-process does
    with open(feed, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["Handle", "Title", "Variant Price", "Image Src", "Status"])
        w.writerows([[f"h{i}", f"product {i}", "10.00", f"{i}.jpg", s]
                     for i, s in zip(ids[1:], ["active", "draft"], strict=True)])
    from kuamo.engine.catalog_map import CatalogConfig

    pruned = ray_index_catalog(feed, config=_config(model_dir, tmp_path / "ray"), address=cluster, workers=2,
                               batch_rows=2, progress=False, catalog=CatalogConfig(prune=True, max_prune_share=0.7))
    # (the kept product's row gained a Status attribute: re-embedded, not unchanged)
    assert (pruned.accepted, pruned.unlisted, pruned.pruned["deleted"]) == (1, {"rows": 1, "deleted": 1}, 1)
    assert pruned.pruned["examples"] == [f"h{ids[0]}"]


def test_woocommerce_variations_and_drafts_are_left_out_as_single_process_does(model_dir: Path, fashion_dir: Path,
                                                                               cluster: str, tmp_path: Path) -> None:
    shop, ids = _shop(fashion_dir, tmp_path / "woo")
    feed = shop / "wc-product-export.csv"
    with open(feed, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["ID", "Type", "Name", "Published", "Regular price", "Images", "Parent", "Attribute 1 name",
                    "Attribute 1 value(s)"])
        w.writerows([[ids[0], "variable", "a tee", "1", "", f"{ids[0]}.jpg", "", "Size", "S, M"],
                     ["900001", "variation", "a tee - S", "1", "10", "", f"id:{ids[0]}", "Size", "S"],
                     [ids[1], "simple", "a mug", "1", "4", f"{ids[1]}.jpg", "", "", ""],
                     [ids[2], "simple", "a draft", "-1", "4", f"{ids[2]}.jpg", "", "", ""],
                     # a variation made later lies below other products: the tee's price is its variations' lowest
                     ["900002", "variation", "a tee - M", "1", "8.5", "", f"id:{ids[0]}", "Size", "M"]])
    got = ray_index_catalog(feed, config=_config(model_dir, tmp_path / "ray"), address=cluster, workers=2,
                            batch_rows=2, progress=False)
    ref = index_catalog(feed, config=_config(model_dir, tmp_path / "single"), progress=False)
    for r in (got, ref):
        assert (r.mapping, r.accepted, r.continuation_rows, r.unlisted, r.rejected) == (
            "woocommerce", 2, 2, {"rows": 1, "deleted": 0}, [])
    for data in ("ray", "single"):
        store = CatalogStore(tmp_path / data / "catalog.sqlite")
        tee = store.get(row_key(int(ids[0])), int(ids[0]))
        assert (tee.attributes["Size"], tee.price) == ("S, M", 8.5)
        store.close()


def test_an_unreachable_address_fails_quickly_and_names_it(model_dir: Path, catalog: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    t0 = time.perf_counter()
    with pytest.raises(RayUnavailable) as err:
        ray_index_catalog(catalog, config=_config(model_dir, tmp_path / "data"), address=address, progress=False)
    assert time.perf_counter() - t0 < 15
    assert err.value.field == "ray" and address in err.value.message
    assert main(["index", str(catalog), "--ray", address, "--data", str(tmp_path / "data"),
                 "--models", str(model_dir)]) == 2
    assert address in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # nothing opened or written before the cluster answered
    assert main(["index", str(catalog), "--ray-workers", "2", "--data", str(tmp_path / "data")]) == 2
    assert "--ray-workers needs --ray" in capsys.readouterr().err


def test_a_local_start_that_fails_is_retried_once_then_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    from kuamo.engine import ray_ingest

    calls: list[str] = []

    def init(**kwargs: object) -> None:
        calls.append(str(kwargs["_temp_dir"]))
        raise TimeoutError("the raylet did not start in time")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(RayUnavailable) as err:
        ray_ingest._init_local(1, 64)
    assert len(calls) == 2 and "2 attempts" in err.value.message and "did not start in time" in err.value.message
    assert not any(Path(d).exists() for d in calls)  # each attempt's private temp dir is gone


def test_the_reader_keeps_single_process_rows(tmp_path: Path) -> None:
    """Ray-free: kuamo's readers inside the read task (row numbers, malformed lines, duplicate ids)."""
    import pickle

    from kuamo.engine.catalog_io import GENERIC

    path = tmp_path / "feed.jsonl"
    path.write_text('{"id": "7", "title": "a"}\nnot json\n\n{"id": 7, "title": "again"}\n{"id": "x", "title": 1}\n',
                    encoding="utf-8")
    blocks = list(read_blocks(str(path), GENERIC, None, 2))
    assert [b.num_rows for b in blocks] == [2, 2]
    rows = [(n, pickle.loads(raw)) for b in blocks for n, raw in zip(b["row"].to_pylist(), b["raw"].to_pylist(),
                                                                     strict=True)]
    assert [n for n, _ in rows] == [1, 2, 4, 5]  # line numbers, the blank line skipped as single-process
    assert rows[0][1] == {"id": "7", "title": "a"}  # as written: no type guessing
    assert "__error__" in rows[1][1]
    assert rows[2][1] == {"__duplicate__": (7, 7, 1, False)}  # "7" and 7 are one id: the first row wins
    assert len(list(read_blocks(str(path), GENERIC, 3, 2))) == 2  # --limit counts rows, bad ones too


def test_stored_hashes_match_exactly() -> None:
    h = "ab" * 32
    stored = StoredHashes({row_key(5): h, row_key("sku-1"): "cd" * 32})
    assert stored.matches(row_key(5), h)
    assert not stored.matches(row_key(5), "cd" * 32)
    assert not stored.matches(row_key(6), h)
    assert len(StoredHashes({})) == 0
    # digests ending (or starting) in zero bytes: 1 in 256 sha256 digests ends in 00
    tail, head, zeros = "ab" * 31 + "00", "00" + "ab" * 31, "00" * 32
    stored = StoredHashes({1: tail, 2: head, 3: zeros})
    assert stored.matches(1, tail) and stored.matches(2, head) and stored.matches(3, zeros)
    assert not stored.matches(1, "ab" * 31 + "01") and not stored.matches(3, "00" * 31 + "01")
