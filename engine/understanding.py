"""Query understanding: the catalog's own attribute values named in a query, in English or Chinese, turned into
soft boosts (never filters: a wrong guess re-orders candidates, it cannot empty the results).

- colour and gender: small hand-checked lexicons (below) whose English side is the fashion catalog's own values
  (baseColour, gender); a product matches when its colour/gender attribute equals the value (case-insensitive);
- category (the catalog's leaf categories, e.g. articleType): the query's terms holding every term of a leaf
  name ("red dress" -> Dresses), else the text tower, as engine/category_prior.py reads a photo: a softmax
  over the leaf names' vectors, taken when its top name is clearly ahead, else the leaf that most of the
  query's best vector matches share (`category_from_candidates`: "黑色腰带" -> Belts; the tower matches a
  Chinese query to the catalog's products far better than to its English category names: on fashion's 43
  common articleTypes it named 9 of 43 from the names, where the top 10 products mostly hold the right one);
- price: "under 500", "below $50", "500元以下", "低于300" (an upper bound), "over 500", "500元以上" (a lower
  bound), "cheap", "便宜" (below the candidates' median price): products on the right side get the boost.

The recognised colour, gender and category also extend the lexical query with their catalog spelling, so a
Chinese query finds the catalog's English words through BM25 too. `explain` names each boost.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from kuamo.engine.category_prior import leaf_of
from kuamo.engine.lexical import terms
from kuamo.engine.types import Product

# English and Chinese colour words -> the catalog's colour value (hand-checked; longest phrases win).
COLOURS: dict[str, str] = {
    "black": "Black", "white": "White", "blue": "Blue", "brown": "Brown", "grey": "Grey", "gray": "Grey",
    "red": "Red", "green": "Green", "navy blue": "Navy Blue", "navy": "Navy Blue", "purple": "Purple",
    "pink": "Pink", "beige": "Beige", "yellow": "Yellow", "maroon": "Maroon", "silver": "Silver",
    "orange": "Orange", "olive": "Olive", "gold": "Gold", "golden": "Gold", "cream": "Cream", "steel": "Steel",
    "charcoal": "Charcoal", "off white": "Off White", "khaki": "Khaki", "lavender": "Lavender", "tan": "Tan",
    "magenta": "Magenta", "peach": "Peach", "copper": "Copper", "teal": "Teal", "mustard": "Mustard",
    "turquoise": "Turquoise Blue", "turquoise blue": "Turquoise Blue", "rust": "Rust", "bronze": "Bronze",
    "burgundy": "Burgundy", "sea green": "Sea Green", "coffee brown": "Coffee Brown", "nude": "Nude",
    "mauve": "Mauve", "taupe": "Taupe", "grey melange": "Grey Melange", "multicolour": "Multi",
    "multicolor": "Multi",
    "黑色": "Black", "黑": "Black", "白色": "White", "白": "White", "蓝色": "Blue", "蓝": "Blue", "棕色": "Brown",
    "咖啡色": "Coffee Brown", "灰色": "Grey", "灰": "Grey", "红色": "Red", "红": "Red", "绿色": "Green",
    "绿": "Green", "藏青色": "Navy Blue", "藏青": "Navy Blue", "藏蓝": "Navy Blue", "海军蓝": "Navy Blue",
    "紫色": "Purple", "紫": "Purple", "粉色": "Pink", "粉红色": "Pink", "米色": "Beige",
    "黄色": "Yellow", "黄": "Yellow", "栗色": "Maroon", "酒红色": "Burgundy", "银色": "Silver", "橙色": "Orange",
    "橙": "Orange", "橄榄绿": "Olive", "金色": "Gold", "奶油色": "Cream", "炭灰色": "Charcoal", "米白色": "Off White",
    "卡其色": "Khaki", "薰衣草紫": "Lavender", "品红": "Magenta", "桃色": "Peach", "铜色": "Copper",
    "蓝绿色": "Teal", "芥末黄": "Mustard", "绿松石色": "Turquoise Blue", "铁锈红": "Rust", "青铜色": "Bronze",
    "多色": "Multi", "彩色": "Multi",
}
# English and Chinese gender words -> the catalog's gender value.
GENDERS: dict[str, str] = {
    "men": "Men", "men's": "Men", "mens": "Men", "man": "Men", "male": "Men", "women": "Women",
    "women's": "Women", "womens": "Women", "woman": "Women", "ladies": "Women", "lady": "Women",
    "female": "Women", "boys": "Boys", "boy": "Boys", "boy's": "Boys", "girls": "Girls", "girl": "Girls",
    "girl's": "Girls", "unisex": "Unisex",
    "男士": "Men", "男款": "Men", "男式": "Men", "男装": "Men", "男": "Men", "女士": "Women", "女款": "Women",
    "女式": "Women", "女装": "Women", "女": "Women", "男童": "Boys", "男孩": "Boys", "女童": "Girls",
    "女孩": "Girls", "中性": "Unisex",
}
_NUM = r"(\d+(?:[.,]\d+)?)"
PRICE_MAX = [re.compile(p, re.I) for p in (
    rf"\b(?:under|below|less than|cheaper than|within|max|up to|upto)\s*(?:rs\.?|inr|usd|\$|€|£|¥|₹)?\s*{_NUM}",
    rf"<\s*{_NUM}", rf"{_NUM}\s*(?:元|块|块钱|rmb)?\s*(?:以下|以内|之内)", rf"(?:低于|不超过|不到|少于){_NUM}")]
PRICE_MIN = [re.compile(p, re.I) for p in (
    rf"\b(?:over|above|more than|at least|from)\s*(?:rs\.?|inr|usd|\$|€|£|¥|₹)?\s*{_NUM}",
    rf"{_NUM}\s*(?:元|块|块钱|rmb)?\s*以上", rf"(?:高于|超过|不低于){_NUM}")]
CHEAP = re.compile(r"\b(?:cheap|cheapest|budget|affordable|inexpensive|low[- ]cost)\b|便宜|实惠|平价|低价", re.I)
_COLOUR_ATTR = re.compile(r"colou?r", re.I)
_GENDER_ATTR = re.compile(r"^(gender|sex)$", re.I)

CATEGORY_TEMPERATURE = 0.03
CATEGORY_MIN_PROB = 0.5  # the tower's top leaf name must hold at least this share to count


@dataclass
class Understood:
    colour: str | None = None
    gender: str | None = None
    category: str | None = None  # a leaf name
    category_by: str = ""  # "terms", "tower" or "candidates"
    price_max: float | None = None
    price_min: float | None = None
    cheap: bool = False
    phrases: list[str] = field(default_factory=list)  # what was recognised, as the query wrote it

    def empty(self) -> bool:
        return (self.colour is None and self.gender is None and self.category is None and self.price_max is None
                and self.price_min is None and not self.cheap)

    def expansion(self) -> str:
        """The catalog's spelling of what was recognised, for the lexical query."""
        return " ".join(x for x in (self.gender, self.colour, self.category) if x)


class _Lexicon:
    """A phrase lexicon as one regex: Latin phrases as whole words, CJK anywhere; the longest phrase wins."""

    def __init__(self, lexicon: dict[str, str]) -> None:
        self.lexicon = lexicon
        phrases = sorted(lexicon, key=len, reverse=True)
        latin = "|".join(re.escape(p) for p in phrases if p.isascii())
        self._latin = re.compile(rf"(?<![\w'])(?:{latin})(?![\w'])") if latin else None
        self._cjk = [p for p in phrases if not p.isascii()]

    def find(self, text: str) -> tuple[str, str] | None:
        found = [m.group(0) for m in self._latin.finditer(text)] if self._latin is not None else []
        found += [p for p in self._cjk if p in text]
        if not found:
            return None
        phrase = max(found, key=len)  # the first of the longest, as a scan longest-first would take
        return phrase, self.lexicon[phrase]


_GENDER_LEXICON = _Lexicon(GENDERS)


def _number(m: re.Match) -> float:
    return float(m.group(1).replace(",", ""))


class QueryUnderstanding:
    """Recognises attribute values in query texts; its category names follow the catalog (`set_categories`)."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self._name_terms: list[tuple[str, tuple[str, ...], str]] = []
        self._names_with: dict[str, list[int]] = {}
        self._stems: list[tuple[int, str]] = []
        self._vectors: np.ndarray | None = None
        self._colours = _Lexicon(COLOURS)
        self._catalog_colours: frozenset[str] = frozenset()

    def set_colours(self, values: frozenset[str]) -> None:
        """The catalog's own colour values (lower-case, as the facets hold them), recognised in queries beside the
        hand-checked lexicon: "rose gold" or "multicolor" in a catalog that spells them so. The lexicon keeps its
        spelling where the catalog holds it too ("red" -> Red)."""
        if values is self._catalog_colours or values == self._catalog_colours:
            return
        merged = dict(COLOURS)
        for v in values:
            if len(v) >= (3 if v.isascii() else 2) and not v.isdigit() and merged.get(v, "").lower() not in values:
                merged[v] = v.title()
        self._colours, self._catalog_colours = _Lexicon(merged), values

    def set_categories(self, names: Sequence[str], vectors: np.ndarray | None) -> None:
        """The catalog's leaf category names and (when a text tower made them) their query vectors."""
        self.names = tuple(names)
        self._name_terms = [(n, tuple(terms(n, keep_stop_words=True)), re.sub(r"\W", "", n.lower()))
                            for n in names]
        # which names hold each term, and each name's squashed stem: a query checks only the names it can match
        self._names_with = {}
        for i, (_, name_terms, _) in enumerate(self._name_terms):
            for t in set(name_terms):
                self._names_with.setdefault(t, []).append(i)
        self._stems = [(i, joined.rstrip("s")) for i, (_, _, joined) in enumerate(self._name_terms) if len(joined) > 3]
        self._vectors = None
        if vectors is not None and len(vectors):
            v = np.asarray(vectors, dtype=np.float32)
            self._vectors = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def parse(self, text: str, text_vec: np.ndarray | None = None) -> Understood:
        raw = unicodedata.normalize("NFKC", text or "")
        low = raw.lower()
        u = Understood()
        for lexicon, attr in ((self._colours, "colour"), (_GENDER_LEXICON, "gender")):
            got = lexicon.find(low)
            if got is not None:
                setattr(u, attr, got[1])
                u.phrases.append(got[0])
        for pats, attr in ((PRICE_MAX, "price_max"), (PRICE_MIN, "price_min")):
            for p in pats:
                m = p.search(low)
                if m:
                    setattr(u, attr, _number(m))
                    u.phrases.append(m.group(0).strip())
                    break
        m = CHEAP.search(low)
        if m:
            u.cheap = True
            u.phrases.append(m.group(0))
        self._category(u, low, text_vec)
        return u

    def _category(self, u: Understood, low: str, text_vec: np.ndarray | None) -> None:
        q = set(terms(low, keep_stop_words=True))
        squashed = re.sub(r"\W", "", low)
        best: tuple[int, int, str] | None = None
        # every term of the name in the query ("dress" for Dresses), or the name spelled without spaces or
        # hyphens ("t-shirt" for Tshirts); the longest name wins ("sports shoes" over "shoes", "tshirts" over
        # "shirts"), a match of whole terms before a squashed one, the first name in catalog order on a tie
        by_terms = {i for t in q for i in self._names_with.get(t, ())
                    if all(nt in q for nt in self._name_terms[i][1])}
        for i in sorted(by_terms | {i for i, stem in self._stems if stem in squashed}):
            name, _, joined = self._name_terms[i]
            key = (len(joined), int(i in by_terms), name)
            best = key if best is None or key[:2] > best[:2] else best
        if best is not None:
            u.category, u.category_by = best[2], "terms"
            u.phrases.append(best[2])
            return
        if self._vectors is None or text_vec is None or not np.any(text_vec):
            return
        v = np.asarray(text_vec, dtype=np.float32)
        logits = self._vectors @ (v / np.linalg.norm(v)) / CATEGORY_TEMPERATURE
        p = np.exp(logits - logits.max())
        p /= p.sum()
        top = int(np.argmax(p))
        if p[top] >= CATEGORY_MIN_PROB:
            u.category, u.category_by = self.names[top], "tower"
            u.phrases.append(self.names[top])


def leaf(p: Product) -> str:
    return leaf_of(p.category)


@dataclass(frozen=True, slots=True)
class Facets:
    """What the boosts read of a product (kept in memory by the embedded backend: a SQLite read and JSON decode
    of ~100 candidates cost ~0.6 ms a query)."""

    colour: str | None  # lower-case
    gender: str | None
    leaf: str
    price: float | None
    photo_colours: tuple[str, ...] = ()  # read off its photo (engine/photo_colour.py), lower-case


def _attr(p: Product, pattern: re.Pattern) -> str | None:
    for k, v in p.attributes.items():
        if isinstance(v, str) and pattern.search(k):
            return sys.intern(v.strip().lower())
    return None


def facets_of(p: Product, photo_colours: tuple[str, ...] = ()) -> Facets:
    return Facets(_attr(p, _COLOUR_ATTR), _attr(p, _GENDER_ATTR), sys.intern(leaf(p)), p.price,
                  tuple(sys.intern(c.lower()) for c in photo_colours))


CANDIDATE_CATEGORY_TOP = 10  # the best vector matches that vote
CANDIDATE_CATEGORY_MIN_SHARE = 0.6  # the winning leaf's share of their votes (chosen on the validation split)


def category_from_candidates(u: Understood, leaves: Sequence[str | None], *,
                             min_share: float = CANDIDATE_CATEGORY_MIN_SHARE) -> None:
    """When neither the terms nor the tower named a category: the leaf category shared by at least `min_share`
    of the query's best vector matches (`leaves`, best first), so a query whose words the catalog does not
    spell ("黑色腰带", "同款 红色" with a photo) still gets its category's boost and lexical expansion."""
    if u.category is not None:
        return
    votes = [v for v in leaves[:CANDIDATE_CATEGORY_TOP] if v]
    if not votes:
        return
    name, n = max(((v, votes.count(v)) for v in set(votes)), key=lambda kv: (kv[1], kv[0]))
    if n >= min_share * len(votes) and n >= 2:
        u.category, u.category_by = name, "candidates"
        u.phrases.append(name)


def boosts(u: Understood, facets: dict[int, Facets], weight: float, *,
           photo_colours: bool = True) -> dict[int, dict[str, float]]:
    """Per product: each recognised value it has -> `weight` (named as `explain` shows it); a product without a
    colour attribute matches a colour its photo shows (`photo_colours`)."""
    out: dict[int, dict[str, float]] = {}
    if u.empty() or weight <= 0:
        return out
    prices = [f.price for f in facets.values() if f.price is not None]
    median = float(np.median(prices)) if prices else None
    colour = u.colour.lower() if u.colour is not None else None
    gender = u.gender.lower() if u.gender is not None else None
    for pid, f in facets.items():
        got: dict[str, float] = {}
        if colour is not None and f.colour == colour:
            got[f"colour={u.colour}"] = weight
        elif photo_colours and colour is not None and f.colour is None and colour in f.photo_colours:
            # the photo speaks only where the merchant's colour field is silent
            got[f"colour={u.colour} (photo)"] = weight
        if gender is not None and f.gender == gender:
            got[f"gender={u.gender}"] = weight
        if u.category is not None and f.leaf == u.category:
            got[f"category={u.category}"] = weight
        if f.price is not None:
            if u.price_max is not None and f.price <= u.price_max:
                got[f"price<={u.price_max:g}"] = weight
            if u.price_min is not None and f.price >= u.price_min:
                got[f"price>={u.price_min:g}"] = weight
            if u.cheap and median is not None and f.price <= median:
                got["price=cheap"] = weight
        if got:
            out[pid] = got
    return out
