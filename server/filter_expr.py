"""Filter expressions for the command line: "price<2000", "rating>=4", "category=Apparel/Topwear",
"brand=Nike,Puma", "baseColour=Red" (any other name is an attribute equality)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable

from kuamo.engine.errors import InvalidInput
from kuamo.engine.types import AttrValue, Filters

_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(<=|>=|==|=|<|>)\s*(.+?)\s*$")


def _number(text: str, expr: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InvalidInput(f"{expr!r}: {text!r} is not a number", field="filter") from None
    if not math.isfinite(v):
        raise InvalidInput(f"{expr!r}: {text!r} is not a finite number", field="filter")
    return v


def _attr_value(text: str) -> AttrValue:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_filters(exprs: Iterable[str]) -> Filters:
    f = Filters()
    for expr in exprs:
        m = _EXPR.match(expr)
        if not m:
            raise InvalidInput(f"{expr!r} is not 'field<op>value' (op one of < <= > >= =)", field="filter")
        name, op, value = m.group(1), m.group(2), m.group(3)
        if name == "price":
            v = _number(value, expr)
            lo, hi = f.price_min, f.price_max
            if op in ("<", "<="):
                hi = math.nextafter(v, -math.inf) if op == "<" else v
            elif op in (">", ">="):
                lo = math.nextafter(v, math.inf) if op == ">" else v
            else:
                lo = hi = v
            f = dataclasses.replace(f, price_min=lo, price_max=hi)
        elif name == "rating":
            if op not in (">", ">=", "=", "=="):
                raise InvalidInput(f"{expr!r}: rating takes a minimum (rating>=4)", field="filter")
            v = _number(value, expr)
            f = dataclasses.replace(f, min_rating=math.nextafter(v, math.inf) if op == ">" else v)
        elif op not in ("=", "=="):
            raise InvalidInput(f"{expr!r}: only price and rating take < or >; use =", field="filter")
        elif name == "category":
            f = dataclasses.replace(f, category_prefix=value)
        elif name == "brand":
            f = dataclasses.replace(f, brands=(*f.brands, *(b.strip() for b in value.split(",") if b.strip())))
        elif name == "id":
            ids = tuple(int(_number(x, expr)) for x in value.split(","))
            f = dataclasses.replace(f, ids=(*f.ids, *ids))
        else:
            f = dataclasses.replace(f, attributes={**f.attributes, name: _attr_value(value)})
    return f
