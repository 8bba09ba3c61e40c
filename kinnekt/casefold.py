"""Case-insensitive text, as the segment contract defines it: trimmed, then Unicode case folding.

`fold` is Python's `str.casefold()` after `strip()` (`ZÜRICH` and `zürich` fold alike, `GRÖSSE` and
`größe` too). Neither SQLite's `lower()` (ASCII only) nor PostgreSQL's (no `ß` → `ss`, locale-dependent)
does this, so text that segments compare case-insensitively keeps a folded copy, computed here in Python
on every write: a `*_folded` column beside the original. `folded_column` declares one; it fills itself
from its source on insert (ORM and Core, one row or many) and `keep_folded` keeps it in step when the ORM
sets the source later. A Core UPDATE of a source column must set its folded column too.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Text, event
from sqlalchemy.orm import mapped_column


def fold(text: str | None) -> str | None:
    """`text` trimmed and case-folded (`str.casefold`); None stays None."""
    if text is None:
        return None
    return text.strip().casefold()


def folded_column(source: str) -> Any:
    """A nullable Text column holding `fold(<source column>)`, filled from the source when an insert leaves it out."""
    def default(context) -> str | None:
        return fold(context.get_current_parameters().get(source))
    return mapped_column(Text, default=default, info={"folded_from": source})


def keep_folded(model, *pairs: tuple[str, str]) -> None:
    """When the ORM sets `source` on a `model` instance, set its folded copy too: pairs of (source, folded)."""
    for source, folded in pairs:
        def on_set(target, value, _old, _initiator, folded=folded):
            setattr(target, folded, fold(value))
        event.listen(getattr(model, source), "set", on_set)
