"""engine/milvus_filters.py: kuamo Filters as Milvus expressions. No filter value may change the expression's
structure: checked on Milvus Lite's parser (every string comes back as one literal, unchanged) and on a tiny
Milvus Lite collection (a product whose brand / category / attribute is exactly that string is matched, and
no other)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kuamo.engine.errors import InvalidInput
from kuamo.engine.ids import key_of, row_key
from kuamo.engine.milvus_filters import milvus_expr, milvus_string
from kuamo.engine.rules import category_prefix_norm
from kuamo.engine.types import CATEGORY_SEP, Filters

# Any unicode text but lone surrogates (not text: they cannot be sent, stored or encoded as UTF-8).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
NASTY = ['" or 1==1 or "', "' or 1==1 or '", '"', "'", "\\", '\\"', "a\\", "%", "_", "A/B%", "\n", "\r\n", "\t",
         "\x00", "line\nbreak", "ünï ☃ 家居", "]) or key in [1", "${x}", "a\u2028b", "true", "NULL"]


def test_expressions_for_each_filter_kind() -> None:
    assert milvus_expr(Filters()) == ""
    assert milvus_expr(Filters(category_prefix=" Apparel / Topwear/")) == \
        '(category == "Apparel/Topwear" or (category >= "Apparel/Topwear/" and category < "Apparel/Topwear0"))'
    assert milvus_expr(Filters(category_prefix=" / ")) == ""  # nothing left after normalising: no constraint
    assert milvus_expr(Filters(brands=("a", 'b"c', "a"))) == 'brand in ["a", "b\\"c"]'
    assert milvus_expr(Filters(price_min=1, price_max=2.5, min_rating=4)) == \
        "price >= 1.0 and price <= 2.5 and rating >= 4.0"
    assert milvus_expr(Filters(price_min=1e-5)) == "price >= 1e-05"
    assert milvus_expr(Filters(attributes={"on": True})) == '(attributes["on"] == 1 or attributes["on"] == true)'
    assert milvus_expr(Filters(attributes={"n": 0.0})) == '(attributes["n"] == 0.0 or attributes["n"] == false)'
    assert milvus_expr(Filters(attributes={"n": -3, "s": "1"})) == 'attributes["n"] == -3 and attributes["s"] == "1"'
    assert milvus_expr(Filters(ids=(5, "SKU-1", "5"))) == f"key in [5, {key_of('SKU-1')}]"
    assert CATEGORY_SEP == "/"  # the "0" upper bound above is the character after it


def test_escaping_covers_exactly_the_special_characters() -> None:
    assert milvus_string('a"b\\c\nd\re\tf') == '"a\\"b\\\\c\\nd\\re\\tf"'
    assert milvus_string("'ü\x00") == "\"'ü\x00\""
    with pytest.raises(InvalidInput):
        milvus_string("\ud800")


@pytest.mark.parametrize("filters,field", [
    (Filters(brands=("",)), "filters.brands"),
    (Filters(price_min=5, price_max=1), "filters.price_min"),
    (Filters(min_rating=6), "filters.min_rating"),
    (Filters(attributes={'x"] or 1': 1}), "filters.attributes"),
    (Filters(attributes={"x": 1 << 70}), "filters.attributes"),
    (Filters(attributes={"x": float("nan")}), "filters.attributes"),
    (Filters(ids=("",)), "filters.ids"),
    (Filters(brands=("\udc00",)), "filters.brands"),
])
def test_invalid_filters_name_the_field(filters: Filters, field: str) -> None:
    with pytest.raises(InvalidInput) as e:
        milvus_expr(filters)
    assert e.value.field == field


# -- Milvus Lite's parser: the value inside the literal is the string, whatever it holds ---------------------------
@settings(max_examples=300, deadline=None)
@given(st.one_of(TEXT, st.sampled_from(NASTY)))
def test_any_string_parses_back_as_one_literal(s: str) -> None:
    parser = pytest.importorskip("milvus_lite.search.filter.parser")
    from milvus_lite.search.filter.ast import CmpOp, FieldRef, StringLit

    tree = parser.parse_expr(f"brand == {milvus_string(s)}")
    assert tree == CmpOp(op="==", left=FieldRef(name="brand", pos=0), right=StringLit(value=s, pos=9), pos=6)


# -- a tiny Milvus Lite collection: the expression selects exactly the rows it should ------------------------------
@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory):
    pymilvus = pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    client = pymilvus.MilvusClient(uri=str(Path(tmp_path_factory.mktemp("lite")) / "f.db"))
    schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", pymilvus.DataType.INT64, is_primary=True)
    schema.add_field("brand", pymilvus.DataType.VARCHAR, max_length=65_535, nullable=True)
    schema.add_field("category", pymilvus.DataType.VARCHAR, max_length=65_535)
    schema.add_field("attributes", pymilvus.DataType.JSON)
    schema.add_field("vector", pymilvus.DataType.FLOAT_VECTOR, dim=2)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="IP")
    client.create_collection("f", schema=schema, index_params=index)
    rows: dict[int, str] = {}  # key -> the string its brand, category and attribute "a" hold

    def add(s: str) -> int:
        key = row_key(s) if s else 0
        if key not in rows:
            client.upsert("f", [{"key": key, "brand": s, "category": s, "attributes": {"a": s},
                                 "vector": [1.0, 0.0]}])
            rows[key] = s
        return key

    def select(f: Filters) -> set[int]:
        return {r["key"] for r in client.query("f", filter=milvus_expr(f), output_fields=["key"], limit=16_384)}

    client.upsert("f", [{"key": -1, "brand": None, "category": "", "attributes": {}, "vector": [0.0, 1.0]}])
    for s in NASTY:
        add(s)
    yield add, select, rows
    client.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(TEXT.filter(bool), st.sampled_from(NASTY)))
def test_any_string_is_matched_as_a_literal_value(lite, s: str) -> None:
    add, select, rows = lite
    key = add(s)
    assert select(Filters(brands=(s,))) == {key}
    assert select(Filters(brands=(s, s + "x"))) == {k for k, v in rows.items() if v in (s, s + "x")}
    assert select(Filters(attributes={"a": s})) == {key}
    p = category_prefix_norm(s)
    if p:  # the segment-prefix rule of filter_sql, in Python, over every row stored so far
        want = {k for k, v in rows.items() if v == p or v.startswith(p + CATEGORY_SEP)}
        assert select(Filters(category_prefix=s)) == want
