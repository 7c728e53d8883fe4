"""Lexical terms for the BM25 index beside the vectors (engine/store.py keeps it, in the catalog's own SQLite
file, as an FTS5 table written in the same transaction as the products).

Shoppers type brand names, model numbers and exact attribute values that a 384-d embedding blurs; BM25 over
the product's own words catches them. One function makes the terms of both the documents and the queries, so
they always agree:

- NFKC, lower case; Latin/digit words split on anything that is not a letter or digit, a light English plural
  stemmer ("dresses" -> "dress", "shirts" -> "shirt", "watches" -> "watch": the fashion catalog's articleTypes
  are plural, its titles singular), English stop words dropped;
- Chinese/Japanese/Korean runs as overlapping character bigrams (a one-character run as itself): the
  n-gram scheme of Lucene's CJKAnalyzer. It needs no dictionary, has no out-of-vocabulary words (brand names,
  new product words) and is what FTS5 can match exactly; word segmentation (jieba) would add a dependency and a
  dictionary whose misses lose matches. FTS5's own `trigram` tokenizer cannot match 2-character words (most
  Chinese words: 红色, 裙子) and `unicode61` keeps a whole run of Han characters as one token, so the terms are
  made here and FTS5 (unicode61) only splits them on spaces.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

from kuamo.engine.types import CATEGORY_SEP, Product

MAX_QUERY_TERMS = 32  # a 10k-character query must not become a 2,000-term OR (bounded cost per query)
COLUMNS = ("lx_title", "lx_brand", "lx_attrs", "lx_desc")
# BM25 weight of a match per column: a brand or an attribute value says more than a word of a description
COLUMN_WEIGHTS = (2.0, 3.0, 1.5, 1.0)

STOP_WORDS = frozenset("""a an and are as at be but by for from has have i in into is it its me my of on or our
so that the their them these this those to was we were what which with without you your
like want need looking some any very just show find get buy please
的 了 和 与 及 或 是 在 我 要 想 一 个 一个 找""".split())

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2A6DF or 0xF900 <= o <= 0xFAFF
            or 0x3040 <= o <= 0x30FF or 0xAC00 <= o <= 0xD7AF)


def stem(word: str) -> str:
    """A light English plural stemmer (an S-stemmer): enough to match "Dresses" with "dress"."""
    if len(word) <= 3 or not word.isascii() or not word.isalpha():
        return word
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("shes", "ches", "xes")):
        return word[:-2]
    if word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("s"):
        return word[:-1]
    return word


def _split_cjk(token: str) -> Iterable[str]:
    """A token with CJK characters: its CJK runs as bigrams, the rest as words, except a lone letter or digit
    glued to CJK: the "T" of "T恤" (T-shirt) is part of a Chinese word, and as the term "t" it matched every
    "T-shirt" title whatever its colour (Chinese colour + type queries lost 8 points of P@10 to it)."""
    run: list[str] = []
    other: list[str] = []

    def flush_run() -> Iterable[str]:
        if len(run) == 1:
            yield run[0]
        for i in range(len(run) - 1):
            yield run[i] + run[i + 1]
        run.clear()

    for ch in token:
        if _is_cjk(ch):
            if len(other) > 1:
                yield stem("".join(other))
            other.clear()
            run.append(ch)
        else:
            yield from flush_run()
            other.append(ch)
    yield from flush_run()
    if len(other) > 1:
        yield stem("".join(other))


def _is_term(t: str) -> bool:
    """A lone Latin letter is no term: the "s" of "men's", the "t" of "T-shirt" match half a fashion catalog and
    pulled T-shirts above watches for "men's wrist watch" (a lone digit, a size, stays)."""
    return bool(t) and not (len(t) == 1 and t.isascii() and t.isalpha())


def terms(text: str, *, keep_stop_words: bool = False) -> list[str]:
    """The terms of a text in order (repeats kept: a document's term frequency counts)."""
    out: list[str] = []
    for word in _WORD.findall(unicodedata.normalize("NFKC", text or "").lower()):
        parts = _split_cjk(word) if any(_is_cjk(c) for c in word) else (stem(word),)
        out.extend(t for t in parts if _is_term(t) and (keep_stop_words or t not in STOP_WORDS))
    return out


def query_terms(text: str, max_terms: int = MAX_QUERY_TERMS) -> list[str]:
    """The distinct terms of a query, at most `max_terms` (the first ones): [] for a query of only stop words
    or punctuation (then there is no lexical part, the vectors answer alone)."""
    return list(_query_terms(text, max_terms))


@lru_cache(maxsize=8192)  # every hybrid query asks three times (ranking, backend, explain); head queries repeat
def _query_terms(text: str, max_terms: int) -> tuple[str, ...]:
    return tuple(dict.fromkeys(terms(text)))[:max_terms]


def match_expression(query: Iterable[str]) -> str:
    """An FTS5 MATCH expression: any of the terms, each a quoted string (no FTS5 syntax gets through)."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in query)


def attribute_text(p: Product) -> str:
    """Category path segments and string attribute values ("Apparel Topwear Shirts Men Navy Blue Casual")."""
    vals = [s for s in p.category.split(CATEGORY_SEP) if s.strip()]
    vals += [v for v in p.attributes.values() if isinstance(v, str)]
    return " ".join(vals)


def document_columns(p: Product) -> tuple[str, str, str, str]:
    """The FTS5 row of a product: its terms per column (COLUMNS), space-separated."""
    return (" ".join(terms(p.title, keep_stop_words=True)), " ".join(terms(p.brand or "", keep_stop_words=True)),
            " ".join(terms(attribute_text(p), keep_stop_words=True)),
            " ".join(terms(p.description, keep_stop_words=True)))


def matched(query: Iterable[str], p: Product) -> list[str]:
    """The query terms the product's indexed text holds (for `explain`)."""
    have = set(" ".join(document_columns(p)).split())
    return [t for t in query if t in have]
