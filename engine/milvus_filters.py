"""kuamo Filters as a Milvus boolean expression, with the semantics of engine/rules.py filter_sql.

Every value reaches the expression as a literal built here, never by pasting text: strings become
double-quoted literals in which only the five characters Milvus's lexer treats specially are escaped
(backslash, double quote, newline, carriage return, tab); every other character, any unicode included,
stands for itself inside the quotes. The escape set is the intersection of what Milvus (Plan.g4 + Go's
strconv.Unquote) and Milvus Lite 3.x (search/filter/tokens.py) both accept, so one expression means the
same on both. Numbers are Python's shortest round-trip repr, which both grammars read back exactly.

Mapping (column names are the ones engine/milvus_backend.py creates):

- category prefix "A/B" (segment prefix, case-sensitive): `category == "A/B" or (category >= "A/B/" and
  category < "A/B0")`. "0" is the character right after CATEGORY_SEP "/", so the range holds exactly the
  strings that start with "A/B/" (both engines compare strings by code point / UTF-8 byte). No LIKE:
  LIKE treats % and _ in a category as wildcards and Milvus Lite has no escape for them.
- brands: `brand in [...]`; a NULL brand is never in the list (as SQL's NULL IN (...)).
- price / rating bounds: `price >= x`, inclusive; a comparison with a NULL field is never true in Milvus
  (as in SQL), so a product without a price never passes a price bound.
- attributes: SQLite's json_extract gives JSON true/false as 1/0 and compares integers and reals by value,
  but never a string with a number. So a bool or a 0/1 number matches true/false and the numbers 0/1
  alike, and Milvus (whose JSON compare does not mix bools and numbers) is asked for both explicitly:
  True -> `(attributes["k"] == true or attributes["k"] == 1)`; 2.5 -> `attributes["k"] == 2.5`;
  "1" -> `attributes["k"] == "1"` (matches only the string).
- ids: their row keys (engine/ids.py key_of): `key in [...]` on the primary key.
"""

from __future__ import annotations

from kuamo.engine.errors import InvalidInput, Unsupported
from kuamo.engine.ids import key_of
from kuamo.engine.photo_colour import PHOTO_COLOUR_FILTER
from kuamo.engine.rules import category_prefix_norm, check_attr_name, validate_filters
from kuamo.engine.types import CATEGORY_SEP, AttrValue, Filters

__all__ = ["milvus_expr", "milvus_string"]

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# The only characters with a meaning inside a double-quoted literal; both engines read these escapes back.
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})
# The character right after the separator: [p + SEP, p + _AFTER_SEP) holds exactly the paths under p.
_AFTER_SEP = chr(ord(CATEGORY_SEP) + 1)


def milvus_string(value: str, field: str = "filters") -> str:
    """A Milvus string literal whose value is exactly `value` (see the module docstring)."""
    if not isinstance(value, str):
        raise InvalidInput(f"must be a string, got {type(value).__name__}", field=field)
    try:
        value.encode("utf-8")  # a lone surrogate cannot travel over gRPC; say so here, not as a transport error
    except UnicodeEncodeError as e:
        raise InvalidInput(f"{value[:40]!r} is not valid unicode text", field=field) from e
    return '"' + value.translate(_ESCAPES) + '"'


def _number(value: int | float, field: str) -> str:
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidInput(f"integer {value} is outside the 64-bit range", field=field)
        return str(value)
    return repr(float(value))  # shortest round-trip form, e.g. 1e-05; finite (validate_filters checked)


def _attribute(name: str, value: AttrValue) -> str:
    ref = f"attributes[{milvus_string(check_attr_name(name, 'filters.attributes'), 'filters.attributes')}]"
    if isinstance(value, str):
        return f"{ref} == {milvus_string(value, 'filters.attributes')}"
    num = int(value) if isinstance(value, bool) else value
    terms = [f"{ref} == {_number(num, 'filters.attributes')}"]
    if num == 0 or num == 1:  # SQLite reads JSON false/true as 0/1
        terms.append(f"{ref} == {'true' if num == 1 else 'false'}")
    return terms[0] if len(terms) == 1 else "(" + " or ".join(terms) + ")"


def milvus_expr(filters: Filters) -> str:
    """The Milvus filter expression for `filters` ("" when there is no constraint). Raises InvalidInput
    naming the filter field at fault, as validate_filters does."""
    validate_filters(filters)
    terms: list[str] = []
    if filters.category_prefix:
        p = category_prefix_norm(filters.category_prefix)
        if p:
            lit = milvus_string(p, "filters.category_prefix")
            lo = milvus_string(p + CATEGORY_SEP, "filters.category_prefix")
            hi = milvus_string(p + _AFTER_SEP, "filters.category_prefix")
            terms.append(f"(category == {lit} or (category >= {lo} and category < {hi}))")
    if filters.brands:
        brands = dict.fromkeys(filters.brands)  # duplicates change nothing; keep the caller's order
        terms.append(f"brand in [{', '.join(milvus_string(b, 'filters.brands') for b in brands)}]")
    if filters.price_min is not None:
        terms.append(f"price >= {_number(float(filters.price_min), 'filters.price_min')}")
    if filters.price_max is not None:
        terms.append(f"price <= {_number(float(filters.price_max), 'filters.price_max')}")
    if filters.min_rating is not None:
        terms.append(f"rating >= {_number(float(filters.min_rating), 'filters.min_rating')}")
    for name, value in filters.attributes.items():
        if name == PHOTO_COLOUR_FILTER:
            raise Unsupported("the milvus backend stores no photo colours yet: filter on the catalog's own colour "
                              "attribute", field="filters.attributes")
        terms.append(_attribute(name, value))
    if filters.ids:
        keys = sorted({key_of(i, "filters.ids") for i in filters.ids})
        terms.append(f"key in [{', '.join(map(str, keys))}]")
    # Every term is one comparison, an `in`, or parenthesised; `and` binds them without regrouping anything.
    return " and ".join(terms)
