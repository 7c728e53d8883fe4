"""The real server over the real exported models: ingest real fashion products through the Upsert
stream (photos as bytes), then text, Chinese, photo and filtered queries through the Python client."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from server_thread import ServerThread

from kuamo.engine.types import Filters, Product, Query
from kuamo.server.client import Client
from kuamo.server.config import ServerConfig

pytestmark = pytest.mark.models
ARTICLES = ("Watches", "Handbags", "Sports Shoes", "Tshirts", "Dresses", "Jeans")
PER_ARTICLE = 25


def _products(fashion_dir: Path) -> tuple[list[Product], list[bytes]]:
    per: dict[str, int] = {}
    products, images = [], []
    with open(fashion_dir / "products.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            a = row["articleType"]
            img = fashion_dir / "images" / f"{row['id']}.jpg"
            if a in ARTICLES and per.get(a, 0) < PER_ARTICLE and img.exists():
                per[a] = per.get(a, 0) + 1
                products.append(Product(id=int(row["id"]), title=row["productDisplayName"],
                                        category=f"{row['masterCategory']}/{row['subCategory']}/{a}",
                                        attributes={"gender": row["gender"], "baseColour": row["baseColour"]}))
                images.append(img.read_bytes())
    return products, images


@pytest.fixture(scope="module")
def real(model_dir: Path, fashion_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    srv = ServerThread(ServerConfig(model_dir=model_dir, data_dir=tmp_path_factory.mktemp("real"),
                                    http_port=0)).load()
    client = Client(srv.target)
    products, images = _products(fashion_dir)
    res = client.upsert(products, images)
    assert len(res.accepted) == len(products) and not res.rejected
    yield srv, client, products, images
    client.close()
    srv.stop()


def test_text_queries_in_english_and_chinese_find_the_right_article(real) -> None:
    _, client, products, _ = real
    article = {p.id: p.category.rsplit("/", 1)[1] for p in products}
    for text, want in [("men's wrist watch", "Watches"), ("女士手提包", "Handbags"), ("running shoes", "Sports Shoes"),
                       ("手表", "Watches")]:
        hits = client.search(Query(text=text, k=5)).hits
        share = sum(article[h.id] == want for h in hits) / len(hits)
        assert share >= 0.6, (text, [article[h.id] for h in hits])


def test_photo_query_finds_its_own_product_first(real) -> None:
    _, client, products, images = real
    for i in (0, 40, 80):
        hits = client.search(Query(image=images[i], k=3)).hits
        assert hits[0].id == products[i].id


def test_filters_and_embed_dimensions(real) -> None:
    _, client, _, _ = real
    hits = client.search(Query(text="watch", k=10, filters=Filters(attributes={"gender": "Women"}))).hits
    assert hits and all(h.product.attributes["gender"] == "Women" for h in hits)
    vec = client.embed(texts=["红色连衣裙"])
    assert vec.shape == (1, 384)
    assert client.stats().indexed == PER_ARTICLE * len(ARTICLES)


def test_openai_client_embeddings_equal_grpc_embed_with_the_real_text_tower(real) -> None:
    openai = pytest.importorskip("openai")
    srv, client, _, _ = real
    texts = ["red running shoes for men", "红色连衣裙", "a watch"]
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{srv.server.http_port}/v1", api_key="unused")
    res = api.embeddings.create(input=texts, model="intfloat/multilingual-e5-small")
    got = np.asarray([d.embedding for d in res.data], dtype=np.float32)
    want = client.embed(texts=texts)
    assert ((got * want).sum(1)).min() >= 0.9999  # both unit length
    tokens = res.usage.prompt_tokens
    assert tokens == sum(len(ids) for ids in srv.server.engine.text_encoder.tokenize(texts, "query"))
