"""Values as merchants' feeds write them: prices with a currency ("81.70 USD", "€ 1.299,00", "1 299,00 zł") and
decimal commas, and image cells that hold a URL or a JSON list of paths (engine/catalog_io.py maps the rows)."""

from __future__ import annotations

import html
import json
import re

# an amount between an optional currency before it and after it ("Rs. 1,299", "15.00 USD", "1 299,00 zł"): the
# core runs from an optional sign and a leading decimal mark (".99") to the last digit
_AMOUNT = re.compile(r"^(\D*?)([+-]?[.,]?\d(?:.*\d)?)(\D*)$")
CURRENCY_CHARS = 4  # at most this many characters of currency on either side ("US$", "EUR", "Rs.", "руб.")
_GROUPING = str.maketrans("", "", " \u00a0\u202f'’")  # thousands separators other than , and .
_THOUSANDS_COMMAS = re.compile(r"^\d{1,3}(,\d{3})+$")  # 1,299 / 12,345,678
_THOUSANDS_DOTS = re.compile(r"^\d{1,3}(\.\d{3}){2,}$")  # 1.234.567 (one dot alone is a decimal point)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def amount_text(text: str) -> str:
    """A feed's amount as float() reads it: a currency on either side dropped, thousands separators removed and
    a decimal comma made a point. The last of ',' and '.' is the decimal mark when both appear ("1.299,00" and
    "1,299.00"); a lone ',' is a decimal mark unless it groups thousands ("12,50" -> 12.50, "1,299" -> 1299).
    Text that is not an amount comes back in a form float() refuses ("cheap 5", "10-20")."""
    s = text.strip().replace("\u2212", "-")  # the minus sign
    m = _AMOUNT.match(s)
    if m is None or any(len(side.strip()) > CURRENCY_CHARS for side in (m[1], m[3])):
        return s
    s = m[2].translate(_GROUPING)
    if "," in s and "." in s:
        decimal, grouping = (",", ".") if s.rfind(",") > s.rfind(".") else (".", ",")
        return s.replace(grouping, "").replace(decimal, ".")
    if "," in s:
        return s.replace(",", "") if _THOUSANDS_COMMAS.match(s) else s.replace(",", ".", 1)
    if _THOUSANDS_DOTS.match(s):
        return s.replace(".", "")
    return s


def is_url(ref: str) -> bool:
    return bool(_URL.match(ref.strip()))


def first_image_ref(value: object) -> str | None:
    """The photo a cell names: the cell itself, or the first entry of a JSON list of them (feeds that list
    several photos per product: '["images/a.jpg", "images/b.jpg"]')."""
    if isinstance(value, list):
        return first_image_ref(value[0]) if value else None
    text = str(value).strip()
    if text.startswith("["):
        try:
            inner = json.loads(text)
        except json.JSONDecodeError:
            return text
        return first_image_ref(inner) if isinstance(inner, list) else text
    return text or None


_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")


def html_text(value: object) -> object:
    """A description as text: HTML tags (Shopify's Body (HTML), many GMC descriptions) become spaces and
    entities their characters; a cell without tags is returned as it is (None stays None)."""
    if not isinstance(value, str) or not _TAG.search(value):
        return value
    return " ".join(html.unescape(_TAG.sub(" ", value)).split())
