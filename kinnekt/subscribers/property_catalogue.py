"""The profile properties a shop has, as segment rules and forms see them: the built-ins and the custom ones.

Kept apart from `kinnekt.subscribers.properties` (which writes definitions and values and re-checks segments) so
that the segment rules and compiler can read a shop's properties without importing the segments back.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.casefold import fold
from kinnekt.models import ProfileProperty

BUILT_INS: dict[str, str] = {"birthday": "date", "language": "text"}
"""Properties every shop has: name -> type."""
BUILT_IN_LABELS = {"birthday": "Birthday", "language": "Language"}
TYPE_LABELS = {"text": "Text", "number": "Number", "date": "Date"}


@dataclass(frozen=True)
class Property:
    """One property of a shop as forms and rules see it: its key (folded name), label, type, whether built in."""

    key: str
    name: str
    type: str
    built_in: bool = False
    id: int | None = None

    @property
    def label(self) -> str:
        """The name in the merchant's words."""
        return BUILT_IN_LABELS.get(self.key, self.name)


def key_of(name: str) -> str:
    """The key a property name is compared by (trimmed, case-folded)."""
    return fold(str(name)) or ""


def catalogue(session: OrmSession, shop_id: int) -> dict[str, Property]:
    """The shop's properties by key: the built-ins first, then the custom ones by name."""
    out = {name: Property(name, name, kind, built_in=True) for name, kind in BUILT_INS.items()}
    rows = session.scalars(select(ProfileProperty).where(ProfileProperty.shop_id == shop_id)
                           .order_by(ProfileProperty.name_key))
    for row in rows:
        out[row.name_key] = Property(row.name_key, row.name, row.type, id=row.id)
    return out


def types(session: OrmSession, shop_id: int) -> dict[str, str]:
    """The shop's property keys -> types: what segment rules check a `property` rule against."""
    return {key: prop.type for key, prop in catalogue(session, shop_id).items()}
