"""Whole numbers and ids read from forms, URLs and other systems' fields: ASCII digits only, within range.

`str.isdigit()` is true for "²" and for other scripts' digits ("١٢"), and `int()` takes the latter ("١٢" is
12) but not the former: a check with one and a conversion with the other crashes on "²". Every number a
person or another system writes is read here instead, so "²" is simply not a number (a field error), and an
id past what a BIGINT column holds is no id at all (a 404), never a database error.
"""
from __future__ import annotations

MAX_ID = 2**63 - 1
"""The largest id a BIGINT column holds (PostgreSQL's and SQLite's integers alike)."""


def whole_number(text: object, maximum: int) -> int | None:
    """`text` as a whole number from 0 to `maximum` written in ASCII digits (spaces around it allowed), else None."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text if 0 <= text <= maximum else None
    if not isinstance(text, str):
        return None
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()):
        return None
    # Leading zeros aside, more digits than the maximum has is too large: no int() of a 4,000-digit string.
    if len(digits.lstrip("0")) > len(str(maximum)):
        return None
    number = int(digits)
    return number if number <= maximum else None


def record_id(text: object) -> int | None:
    """`text` as the id of a row (1 to MAX_ID, ASCII digits), else None."""
    number = whole_number(text, MAX_ID)
    return number if number else None
