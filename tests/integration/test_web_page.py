"""The search page in a real browser (Debian's chromium + chromium-driver through Selenium) against a real
server with the real models over 240 real fashion products (prices added: the fashion catalog has none).
Skips with the reason where no browser is installed. Screenshots go to docs/ when KUAMO_SCREENSHOTS is set."""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_thread import ServerThread

from kuamo.engine.engine import Engine
from kuamo.engine.ingest import aindex_catalog
from kuamo.server.app import engine_config
from kuamo.server.config import ServerConfig

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
pytestmark = [pytest.mark.models,
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="no chromium + chromedriver (apt-get install "
                                                                   "chromium chromium-driver)")]
N_PRODUCTS = 240
SHOTS = Path(os.environ["KUAMO_SCREENSHOTS"]) if os.environ.get("KUAMO_SCREENSHOTS") else None


def price_of(pid: int) -> float:
    return float(100 + pid % 900)


def _catalog(fashion_dir: Path, dst: Path) -> Path:
    """A generic-format CSV of the first N fashion products with photos, a price and a category path."""
    (dst / "images").mkdir(parents=True)
    with open(fashion_dir / "products.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if (fashion_dir / "images" / f"{r['id']}.jpg").exists()][:N_PRODUCTS]
    with open(dst / "products.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "title", "category", "price", "image", "baseColour"])
        for r in rows:
            shutil.copy(fashion_dir / "images" / f"{r['id']}.jpg", dst / "images")
            w.writerow([r["id"], r["productDisplayName"], f"{r['masterCategory']}/{r['subCategory']}/"
                        f"{r['articleType']}", price_of(int(r["id"])), f"images/{r['id']}.jpg", r["baseColour"]])
    return dst


@pytest.fixture(scope="module")
def site(model_dir: Path, fashion_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    catalog = _catalog(fashion_dir, tmp_path_factory.mktemp("catalog"))
    cfg = ServerConfig(model_dir=model_dir, data_dir=tmp_path_factory.mktemp("data"), http_port=0,
                       catalog_dir=catalog)

    async def index() -> None:
        eng = await Engine.open(engine_config(cfg))
        try:
            rep = await aindex_catalog(catalog / "products.csv", eng, progress=False)
            assert rep.accepted == N_PRODUCTS, rep.rejected[:3]
        finally:
            await eng.close()

    asyncio.run(index())
    srv = ServerThread(cfg).load()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900", "--lang=en"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=opts)
    driver.get(f"http://127.0.0.1:{srv.server.http_port}/")
    yield driver, srv, catalog
    driver.quit()
    srv.stop()


def _search(driver, text: str) -> list:
    before = _status(driver)
    box = driver.find_element(By.ID, "q")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
    return _cards(driver, before)


LOADED = "return [...document.querySelectorAll('#results .thumb')].filter(i => i.naturalWidth > 0).length"


def _cards(driver, before: str, timeout: float = 60) -> list:
    """The cards of the answer that replaces the status line `before`, once every card's photo is decoded."""
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, timeout).until(lambda d: status.text not in ("", before), f"no answer: {status.text!r}")
    assert "error" not in (status.get_attribute("class") or ""), status.text
    cards = driver.find_elements(By.CSS_SELECTOR, "#results .card")
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script(LOADED) == len(cards),
                                         f"photos decoded: {driver.execute_script(LOADED)} of {len(cards)}")
    return cards


def _status(driver) -> str:
    return driver.find_element(By.ID, "status").text


def _shot(driver, name: str) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / name))


def test_english_query_shows_cards_with_photos_and_explanations(site) -> None:
    driver, _, _ = site
    cards = _search(driver, "men's watch")
    assert len(cards) >= 10
    titles = [c.find_element(By.CSS_SELECTOR, ".title").text.lower() for c in cards[:5]]
    assert sum("watch" in t for t in titles) >= 3, titles
    assert cards[0].find_elements(By.CSS_SELECTOR, ".why .bar"), "no explanation bars"
    assert "server" in driver.find_element(By.ID, "status").text and "ms" in driver.find_element(By.ID, "status").text
    _shot(driver, "page_english.png")


def test_chinese_query(site) -> None:
    driver, _, _ = site
    cards = _search(driver, "女士手提包")  # women's handbag
    cats = [c.find_element(By.CSS_SELECTOR, ".meta").text for c in cards[:5]]
    assert sum("Bags" in c or "Handbags" in c for c in cats) >= 3, cats
    _shot(driver, "page_chinese.png")


def test_price_filter_keeps_only_products_in_range(site) -> None:
    driver, _, _ = site
    _search(driver, "shirt")
    before = _status(driver)
    # both bounds at once (typing them one by one re-runs the search after each), then search again
    driver.execute_script("document.getElementById('price-min').value = '300';"
                          "document.getElementById('price-max').value = '500';")
    driver.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
    cards = _cards(driver, before)
    assert cards
    for c in cards:
        price = float(c.find_element(By.CSS_SELECTOR, ".meta").text.split("¥")[1].split(" ")[0])
        assert 300 <= price <= 500
        assert price == price_of(int(c.get_attribute("data-id")))
    driver.execute_script("document.getElementById('price-min').value = '';"
                          "document.getElementById('price-max').value = '';")


def test_photo_upload_and_more_like_this(site) -> None:
    driver, _, catalog = site
    with open(catalog / "products.csv", encoding="utf-8") as f:
        row = next(r for r in csv.DictReader(f) if r["category"].endswith("/Watches"))
    driver.find_element(By.ID, "q").clear()
    before = _status(driver)
    driver.find_element(By.ID, "photo").send_keys(str((catalog / row["image"]).resolve()))
    cards = _cards(driver, before)
    assert cards[0].get_attribute("data-id") == row["id"]  # its own photo first
    assert "category" in cards[0].find_element(By.CSS_SELECTOR, ".why").text  # the photo query's re-rank
    _shot(driver, "page_photo.png")
    driver.find_element(By.ID, "clear-photo").click()
    target = cards[1].get_attribute("data-id")
    before = _status(driver)
    cards[1].find_element(By.CSS_SELECTOR, ".more").click()
    more = _cards(driver, before)
    assert f"more like product {target}" in _status(driver)
    cats = [c.find_element(By.CSS_SELECTOR, ".meta").text for c in more[:5]]
    assert sum("Watches" in c for c in cats) >= 3, cats  # more like a watch: watches


def test_photos_are_served_from_the_catalog_only(site) -> None:
    import urllib.error
    import urllib.request

    _, srv, _ = site
    base = f"http://127.0.0.1:{srv.server.http_port}"
    for bad in ("../../etc/passwd", "%2e%2e%2fetc%2fpasswd", "abc", "999999999"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base}/photos/{bad}", timeout=10)
        assert e.value.code in (400, 404)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{base}/static/../server_thread.py", timeout=10)
    assert e.value.code in (403, 404)
