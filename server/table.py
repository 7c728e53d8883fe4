"""Readable terminal output of search results."""

from __future__ import annotations

import unicodedata

from kuamo.engine.types import SearchResult


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _fit(s: str, n: int) -> str:
    out, w = "", 0
    for c in s:
        cw = _width(c)
        if w + cw > n - (1 if len(s) > len(out) + 1 else 0):
            return out + "…" + " " * (n - w - 1)
        out, w = out + c, w + cw
    return out + " " * (n - w)


def format_result(result: SearchResult, *, explain: bool = False, title_width: int = 48) -> str:
    idw = max([8, *(len(str(h.id)) for h in result.hits)])  # string ids (hex, SKUs) are shown whole
    head = (f"{'#':>3}  {'id':>{idw}}  {'score':>7}  {_fit('title', title_width)}  {'category':<28} "
            f"{'price':>8} {'rating':>6}")
    lines = [head, "-" * _width(head)]
    for rank, h in enumerate(result.hits, 1):
        p = h.product
        title = p.title if p else ""
        cat = p.category if p else ""
        price = f"{p.price:.0f}" if p and p.price is not None else "-"
        rating = f"{p.rating:.1f}" if p and p.rating is not None else "-"
        lines.append(f"{rank:>3}  {h.id!s:>{idw}}  {h.score:7.4f}  {_fit(title, title_width)}  {_fit(cat, 28)} "
                     f"{price:>8} {rating:>6}")
        if explain and h.explanation is not None:
            parts = ", ".join(f"{k} {v:+.4f}" for k, v in h.explanation.contributions.items())
            mods = ", ".join(f"{k} {v:+.4f}" for k, v in h.explanation.modifiers.items())
            lines.append(f"{'':>24}why: {parts}" + (f"; modifiers: {mods}" if mods else ""))
    t = result.timings
    lines.append(f"{len(result.hits)} hits; server {t.total_ms:.1f} ms (encode {t.encode_ms:.1f}, search "
                 f"{t.search_ms:.1f}, re-rank {t.rerank_ms:.1f})"
                 + (f"; {result.allowed} products passed the filters" if result.allowed is not None else ""))
    return "\n".join(lines)
