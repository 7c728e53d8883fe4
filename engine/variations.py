"""A variable product's prices and SKUs live on its variation rows (WooCommerce): the product's own row has no
price, and its variations, on rows of their own, name it in their Parent column (its SKU, or "id:<ID>" when it
has none). WooCommerce exports in ID order, so a variation need not follow its parent: one pass over the file
before the run gathers each parent's variations (the lowest price, the codes) into the mapping, which every
reader of the run then carries (single process and Ray's workers alike). Shopify's variant rows sit right
below their product and are gathered on the way (catalog_io.with_variants)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kuamo.engine.catalog_io import ColumnMapping, RowError, Variations, cell_text, price_of, variant_row
from kuamo.engine.feed_files import read_rows


def gather_variations(path: Path, m: ColumnMapping, limit: int | None) -> ColumnMapping:
    """The mapping with `variations` filled from the rows to index (unchanged for mappings without a parent
    column). A variation whose price cell is not a number gives no price (it is not indexed either)."""
    if m.variant_parent is None or m.variant_row_when is None:
        return m
    parent_col, code_col = m.variant_parent
    found: dict[str, tuple[list[float], list[str]]] = {}  # parent reference -> (prices, codes)
    for _, row in read_rows(path, limit):
        if not variant_row(row, m) or (parent := cell_text(row, (parent_col,))) is None:
            continue
        prices, codes = found.setdefault(parent, ([], []))
        try:
            if (price := price_of(row, m)) is not None:
                prices.append(price)
        except RowError:
            pass
        if (code := cell_text(row, (code_col,))) is not None:
            codes.append(code)
    return dataclasses.replace(m, variations={p: Variations(min(prices) if prices else None,
                                                            tuple(dict.fromkeys(codes)))
                                              for p, (prices, codes) in found.items()})
