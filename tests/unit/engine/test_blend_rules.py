"""When the image blend is (re)chosen or set: nothing binds a catalog that stored nothing, a choice made on
too few photos is provisional and made again at REGROW x the photos, --image-blend sets or re-chooses it,
a changed beta re-embeds the catalog, and the sample spreads over the whole file."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fake_encoders import DIM, FakeImageEncoder, FakeTextEncoder, png
from test_zero_shot_blend import BlendableImageEncoder

from kuamo.cli import main
from kuamo.engine.catalog_io import GENERIC
from kuamo.engine.engine import Engine, EngineConfig
from kuamo.engine.errors import InvalidInput
from kuamo.engine.ingest import blend_sample, index_catalog
from kuamo.engine.vector_provenance import BLEND_META, ENCODERS_META
from kuamo.engine.zero_shot_blend import (
    AUTO,
    COVER,
    MIN_CATEGORY_PHOTOS,
    MIN_SAMPLE,
    REGROW,
    covering,
    parse_image_blend,
    spread,
)
from kuamo.server.config import load_catalog_config

COLOURS = BlendableImageEncoder.COLOURS


class ZeroShotKnows(BlendableImageEncoder):
    """The tuned embedding is noise (a hash of the photo) while the logits name the photo's colour: the
    catalog is unlike the training goods, so a measured choice lands on beta 0."""

    def encode_outputs(self, items: Sequence[bytes], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        colour = FakeImageEncoder.encode(self, items)
        noise = np.stack([np.random.default_rng(int(hashlib.sha256(b).hexdigest()[:8], 16)).standard_normal(DIM)
                          for b in items]).astype(np.float32)
        return {"embedding": noise, "logits": 8.0 * (colour @ self.zero_shot.class_text.T)}


def write_catalog(root: Path, n: int, *, broken: bool = False) -> Path:
    """n products of five colours, each photo its own bytes; `broken`: every photo path is missing."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        c = COLOURS[i % len(COLOURS)]
        (root / "img" / f"{i}.png").write_bytes(png(c, (8 + i % 13, 8 + i // 13)))
        rows.append({"id": str(i + 1), "title": f"{c} thing number {i}", "category": f"Home > {c}",
                     "image": f"img/{'gone' if broken else i}.png"})
    path = root / f"catalog-{n}{'-broken' if broken else ''}.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def engine(tmp_path: Path, enc: BlendableImageEncoder | None = None, **cfg: object) -> Engine:
    return Engine(EngineConfig(data_dir=tmp_path / "data", allow_stale_vectors=True, **cfg),  # type: ignore[arg-type]
                  text_encoder=FakeTextEncoder(), image_encoder=enc or ZeroShotKnows())


def stored(eng: Engine) -> dict:
    return json.loads(eng.store.get_meta(BLEND_META))


# -- the sample ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("total", [800, 801, 1000, 1200, 1599])
def test_spread_covers_the_whole_file_at_800_to_1599_rows(total: int) -> None:
    idx = spread(total, 800)
    assert len(idx) == len(set(idx)) == 800 and idx == sorted(idx) and idx[0] == 0
    assert idx[-1] >= total - total // 800 - 1  # reaches the end of the file, not row 799
    assert sum(i >= total // 2 for i in idx) == 400  # half the sample from the second half


def test_spread_takes_every_row_of_a_small_file() -> None:
    assert spread(30, 800) == list(range(30)) and spread(0, 800) == []


@pytest.mark.parametrize("total, ties", [(9357, 6), (1200, 5), (5000, 9)])
def test_covering_holds_every_category_a_spread_misses(total: int, ties: int) -> None:
    """A file sorted by category with one rare category at its end: the spread alone takes too few of its
    photos to measure it, the covering sample all of them (up to COVER), still n rows spread over the file."""
    leaves = ["Tshirts"] * (total - ties - 40) + ["Shirts"] * 40 + ["Ties"] * ties
    plain, idx = spread(total, 800), covering(leaves, 800)
    assert sum(leaves[i] == "Ties" for i in plain) < MIN_CATEGORY_PHOTOS
    assert len(idx) == len(set(idx)) == 800 and idx == sorted(idx)
    assert sum(leaves[i] == "Ties" for i in idx) == ties and sum(leaves[i] == "Shirts" for i in idx) >= COVER
    assert sum(i >= total // 2 for i in idx) >= 350  # the rest still spreads over the whole file


def test_covering_is_the_spread_without_categories_or_small_ones() -> None:
    assert covering([""] * 3000, 800) == spread(3000, 800)
    assert covering(["A", "B"] * 1500, 800) == spread(3000, 800)  # every category already measured by the spread
    below = ["A"] * 2996 + ["rare"] * (MIN_CATEGORY_PHOTOS - 1)  # too few photos to be measured anyway
    assert covering(below, 800) == spread(3000, 800)
    assert covering(["A", "B"] * 10, 800) == list(range(20))


def test_covering_takes_at_most_half_the_sample_for_categories() -> None:
    """2,000 categories of 6 photos: the largest are covered while that takes half the sample, the rest spread."""
    leaves = [f"c{i // 6:04d}" for i in range(12000)]
    idx = covering(leaves, 800)
    assert len(idx) == len(set(idx)) == 800
    covered = [c for c in {leaves[i] for i in idx} if sum(leaves[i] == c for i in idx) == 6]
    assert 66 <= len(covered) <= 80  # 400 // 6 held whole, a few more whole by the spread's chance


def test_blend_sample_covers_a_rare_category_at_the_end_of_a_sorted_feed(tmp_path: Path) -> None:
    """kuamo index's sample (engine.ingest.blend_sample) reads each row's leaf as to_product files it."""
    path = tmp_path / "sorted.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "category"])
        w.writerows([f"t{i}", f"Tee {i}", "Apparel > Topwear > Tshirts"] for i in range(2000))
        w.writerows([f"x{i}", f"Tie {i}", "Apparel > Accessories > Ties"] for i in range(7))
    products, _ = blend_sample(path, GENERIC, tmp_path, None, n=800)
    assert len(products) == 800 and sum(p.id.startswith("x") for p in products) == 7
    assert {p.category_parts[-1] for p in products} == {"Tshirts", "Ties"}


# -- --image-blend values ---------------------------------------------------------------------------------
@pytest.mark.parametrize("value, want", [("auto", AUTO), ("AUTO", AUTO), ("0", 0.0), ("0.25", 0.25), (1, 1.0),
                                         (0.5, 0.5), (None, None)])
def test_image_blend_values(value: object, want: object) -> None:
    assert parse_image_blend(value) == want


@pytest.mark.parametrize("value", [2, -1, "abc", float("nan"), "nan", "inf", True, ""])
def test_bad_image_blend_is_invalid_input(value: object) -> None:
    with pytest.raises(InvalidInput) as e:
        parse_image_blend(value)
    assert e.value.field == "image_blend"


@pytest.mark.parametrize("value", ["2", "-1", "abc", "nan"])
def test_kuamo_index_bad_image_blend_exits_2(tmp_path, capsys, value: str) -> None:
    path = write_catalog(tmp_path / "cat", 3)
    code = main(["index", str(path), f"--image-blend={value}", "--data", str(tmp_path / "d"),
                 "--models", str(tmp_path / "no-models")])  # refused before any model is looked for
    err = capsys.readouterr().err
    assert code == 2 and "image_blend" in err and "0..1" in err and "Traceback" not in err


def test_image_blend_in_the_catalog_section(tmp_path) -> None:
    toml = tmp_path / "kuamo.toml"
    toml.write_text('[catalog]\nimage_blend = 0.25\n')
    assert load_catalog_config(toml, environ={}).image_blend == 0.25
    assert load_catalog_config(toml, environ={"KUAMO_CATALOG_IMAGE_BLEND": "auto"}).image_blend == AUTO
    assert load_catalog_config(toml, environ={}, overrides={"image_blend": "0"}).image_blend == 0.0
    toml.write_text('[catalog]\nimage_blend = nan\n')
    with pytest.raises(InvalidInput, match="image_blend"):
        load_catalog_config(toml, environ={})


# -- nothing binds before the catalog holds something ---------------------------------------------------
def test_an_ingest_that_stored_nothing_fixes_nothing(tmp_path) -> None:
    eng = engine(tmp_path)
    rep = index_catalog(write_catalog(tmp_path / "bad", 80, broken=True), engine=eng, progress=False)
    assert rep.accepted == 0 and eng.store.count() == 0
    assert eng.image_blend_pending  # a choice on a catalog that stored nothing does not bind
    rep = index_catalog(write_catalog(tmp_path / "good", 60), engine=eng, progress=False)
    assert rep.image_blend is not None and rep.image_blend["photos"] == 60 and not rep.image_blend["provisional"]
    assert eng.image_encoder.beta == 0.0 and not eng.image_blend_pending  # type: ignore[union-attr]


def test_provisional_choice_is_made_again_at_regrow_times_the_photos(tmp_path) -> None:
    eng = engine(tmp_path)
    small = 20
    rep = index_catalog(write_catalog(tmp_path / "cat", 200), engine=eng, progress=False, limit=small)
    assert rep.image_blend["photos"] == small and rep.image_blend["provisional"] and rep.image_blend["beta"] == 1.0
    first_fp = eng.fingerprint
    # not yet: fewer than REGROW x 20 photos offered
    rep = index_catalog(write_catalog(tmp_path / "cat", 200), engine=eng, progress=False, limit=REGROW * small - 1)
    assert rep.image_blend is None and eng.image_blend_pending and eng.fingerprint == first_fp
    # now: the choice is made again, lands on beta 0, and every stored vector is re-embedded with it
    rep = index_catalog(write_catalog(tmp_path / "cat", 200), engine=eng, progress=False)
    assert rep.image_blend["photos"] == 200 and not rep.image_blend["provisional"]
    assert rep.image_blend["beta"] == 0.0 and "image blend changed" in (rep.stale or "")
    assert rep.unchanged == 0 and rep.accepted == 200 and rep.stale_left == 0
    assert eng.store.get_meta(ENCODERS_META) == eng.fingerprint != first_fp and eng.stale_vectors is None
    rep = index_catalog(write_catalog(tmp_path / "cat", 200), engine=eng, progress=False)
    assert rep.image_blend is None and rep.unchanged == 200  # bound now: nothing chosen or re-embedded


def test_products_upserted_before_any_choice_leave_it_provisional(tmp_path) -> None:
    eng = engine(tmp_path)
    index_catalog(write_catalog(tmp_path / "a", 3), engine=eng, progress=False)  # 3 photos: provisional
    assert stored(eng)["provisional"] and eng.image_blend_pending
    assert not eng.image_blend_due(REGROW * 3 - 1) and eng.image_blend_due(max(MIN_SAMPLE, REGROW * 3))


def test_a_blend_stored_before_these_rules_on_few_photos_is_provisional(tmp_path) -> None:
    eng = engine(tmp_path)
    index_catalog(write_catalog(tmp_path / "a", 3), engine=eng, progress=False)  # a catalog that holds products
    eng.store.set_meta(BLEND_META, json.dumps({"beta": 1.0, "photos": 30, "reason": "old"}))
    assert eng.image_blend_pending
    eng.store.set_meta(BLEND_META, json.dumps({"beta": 1.0, "reason": "not chosen: products arrived first"}))
    assert eng.image_blend_pending
    eng.store.set_meta(BLEND_META, json.dumps({"beta": 1.0, "photos": 800, "reason": "old"}))
    assert not eng.image_blend_pending


# -- --image-blend BETA and auto ------------------------------------------------------------------------
def test_set_blend_binds_and_re_embeds_and_auto_chooses_again(tmp_path) -> None:
    path = write_catalog(tmp_path / "cat", 60)
    eng = engine(tmp_path, image_blend=0.5)
    rep = index_catalog(path, engine=eng, progress=False)
    assert rep.image_blend["source"] == "set" and not rep.image_blend["provisional"]
    assert eng.image_encoder.beta == 0.5 and rep.accepted == 60 and not eng.image_blend_pending  # type: ignore
    eng.store.close()

    eng = engine(tmp_path)  # no flag: the set blend stays, nothing re-embedded
    assert eng.image_encoder.beta == 0.5  # type: ignore[union-attr]
    rep = index_catalog(path, engine=eng, progress=False)
    assert rep.image_blend is None and rep.unchanged == 60
    eng.store.close()

    eng = engine(tmp_path, image_blend=0.25)  # another beta: the whole catalog re-embedded with it
    rep = index_catalog(path, engine=eng, progress=False)
    assert rep.stale and rep.accepted == 60 and rep.unchanged == 0 and rep.stale_left == 0
    assert stored(eng)["beta"] == 0.25 and eng.store.get_meta(ENCODERS_META) == eng.fingerprint
    eng.store.close()

    eng = engine(tmp_path, image_blend="auto")  # re-chosen now, although set
    rep = index_catalog(path, engine=eng, progress=False)
    assert rep.image_blend["source"] == "auto" and rep.image_blend["beta"] == 0.0 and rep.accepted == 60
    eng.store.close()
    Engine(EngineConfig(data_dir=tmp_path / "data"), text_encoder=FakeTextEncoder(),
           image_encoder=ZeroShotKnows()).store.close()  # opens without allow_stale_vectors: all re-embedded


def test_setting_the_same_blend_re_embeds_nothing(tmp_path) -> None:
    path = write_catalog(tmp_path / "cat", 10)
    eng = engine(tmp_path)
    index_catalog(path, engine=eng, progress=False)
    eng.store.close()
    eng = engine(tmp_path, image_blend=1)
    rep = index_catalog(path, engine=eng, progress=False)
    assert rep.image_blend["source"] == "set" and rep.stale is None and rep.unchanged == 10


def test_a_tower_without_a_zero_shot_map_cannot_take_a_blend(tmp_path) -> None:
    eng = Engine(EngineConfig(data_dir=tmp_path / "d", image_blend=0.5), text_encoder=FakeTextEncoder(),
                 image_encoder=FakeImageEncoder())
    with pytest.raises(InvalidInput, match="zero-shot"):
        index_catalog(write_catalog(tmp_path / "cat", 3), engine=eng, progress=False)
