"""Profile properties: the built-ins (birthday, language), a shop's custom ones, and subscribers' typed values.

A property is named in rules, forms and CSV columns by its name; names are compared case-insensitively
(`fold`), which is also how they are unique per shop (`profile_properties.name_key`, a database constraint).
Values are parsed from text by the property's type (`parse_value`) and written all or nothing
(`set_values`): one bad value refuses the whole change with an error per property. Writers queue the
subscriber's segment re-check after their commit (`recheck`), through the pending re-check path.
"""
from __future__ import annotations

import copy
import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Mapping

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from kinnekt import signals
from kinnekt.db import Session
from kinnekt.models import ProfileProperty, Segment, Subscriber, SubscriberProperty
from kinnekt.models.profile import PROPERTY_TYPES
from kinnekt.models.segment import iter_rules
from kinnekt.subscribers.property_catalogue import (  # noqa: F401  (re-exported)
    BUILT_IN_LABELS, BUILT_INS, TYPE_LABELS, Property, catalogue, key_of, types)

MAX_NAME = 40
MAX_KEY = 64
"""Longest folded name (folding can lengthen a name: "ß" is "ss")."""
MAX_TEXT = 255
"""Longest text value; a longer one is refused, never cut."""
MAX_NUMBER = 10**12
NUMBER_PLACES = 4
"""Numbers are stored exactly in 1/10000 units (as money is)."""
MAX_CUSTOM = 50
"""Custom properties one shop may define."""
_NAME = re.compile(r"[^\W_][\w .\-]*", re.UNICODE)


class PropertyError(ValueError):
    """A property definition or value the merchant must fix; the message says what is wrong."""


class ValuesInvalid(ValueError):
    """Some values of a change are bad: `errors` maps each property key to its message. Nothing was written."""

    def __init__(self, errors: Mapping[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"{key}: {message}" for key, message in self.errors.items()))


# ---------------------------------------------------------------------------------------------- definitions

def _checked_name(name: Any) -> str:
    name = re.sub(r"\s+", " ", str(name or "")).strip()
    if not name:
        raise PropertyError("Enter a name")
    if len(name) > MAX_NAME:
        raise PropertyError(f"A name has at most {MAX_NAME} characters")
    if not _NAME.fullmatch(name):
        raise PropertyError("Use letters, digits, spaces, dots, hyphens and underscores, starting with a letter "
                            "or digit")
    if len(key_of(name)) > MAX_KEY:
        raise PropertyError("This name is too long")
    if key_of(name) in BUILT_INS:
        raise PropertyError(f"“{name}” is a built-in property")
    return name


def checked_name(name: Any) -> str:
    """A custom property's name as it would be saved (spaces collapsed); PropertyError when it cannot be one."""
    return _checked_name(name)


def _taken(session: OrmSession, shop_id: int, key: str, but: int | None = None) -> bool:
    statement = select(ProfileProperty.id).where(ProfileProperty.shop_id == shop_id, ProfileProperty.name_key == key)
    if but is not None:
        statement = statement.where(ProfileProperty.id != but)
    return session.scalar(statement) is not None


def _flush_unique(session: OrmSession, name: str) -> None:
    """Flush in a savepoint; a name another request took meanwhile (the unique key) is the merchant's error."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise PropertyError(f"There is already a property named “{name}”") from None


def add(session: OrmSession, shop_id: int, name: Any, type_: Any) -> ProfileProperty:
    """Define a custom property (not committed); PropertyError for a bad or taken name or an unknown type."""
    name = _checked_name(name)
    if type_ not in PROPERTY_TYPES:
        raise PropertyError("Choose a type: text, number or date")
    if _taken(session, shop_id, key_of(name)):
        raise PropertyError(f"There is already a property named “{name}”")
    count = len(session.scalars(select(ProfileProperty.id).where(ProfileProperty.shop_id == shop_id)).all())
    if count >= MAX_CUSTOM:
        raise PropertyError(f"A shop has at most {MAX_CUSTOM} custom properties")
    row = ProfileProperty(shop_id=shop_id, name=name, name_key=key_of(name), type=type_)
    session.add(row)
    _flush_unique(session, name)
    return row


def _rules_naming(definition: Any, key: str) -> Iterable[dict]:
    for rule in iter_rules(definition):
        if rule.get("field") == "property" and isinstance(rule.get("attribute"), str) \
                and key_of(rule["attribute"]) == key:
            yield rule


def segments_using(session: OrmSession, shop_id: int, key: str) -> list[Segment]:
    """The shop's segments with a rule on this property."""
    found = session.scalars(select(Segment).where(Segment.shop_id == shop_id).order_by(Segment.name))
    return [segment for segment in found if any(True for _ in _rules_naming(segment.definition, key))]


def rename(session: OrmSession, shop_id: int, property_id: int, name: Any) -> ProfileProperty:
    """Rename a custom property (not committed): its values and the segment rules naming it follow the new name."""
    row = session.scalar(select(ProfileProperty).where(ProfileProperty.shop_id == shop_id,
                                                       ProfileProperty.id == property_id))
    if row is None:
        raise LookupError(property_id)
    name = _checked_name(name)
    old, new = row.name_key, key_of(name)
    if _taken(session, shop_id, new, but=row.id):
        raise PropertyError(f"There is already a property named “{name}”")
    for segment in segments_using(session, shop_id, old):
        definition = copy.deepcopy(segment.definition)
        for rule in _rules_naming(definition, old):
            rule["attribute"] = name
        segment.definition = definition  # a new object, so the JSON column is written
    if new != old:
        session.execute(update(SubscriberProperty).where(SubscriberProperty.shop_id == shop_id,
                                                         SubscriberProperty.name_key == old)
                        .values(name_key=new).execution_options(synchronize_session=False))
    row.name, row.name_key = name, new
    _flush_unique(session, name)
    return row


def remove(session: OrmSession, shop_id: int, property_id: int) -> str:
    """Delete a custom property and every value of it (not committed); refused while a segment uses it."""
    row = session.scalar(select(ProfileProperty).where(ProfileProperty.shop_id == shop_id,
                                                       ProfileProperty.id == property_id))
    if row is None:
        raise LookupError(property_id)
    using = segments_using(session, shop_id, row.name_key)
    if using:
        names = ", ".join(f"“{segment.name}”" for segment in using[:5]) + (" and others" if len(using) > 5 else "")
        raise PropertyError(f"“{row.name}” is used by the segment{'s' if len(using) > 1 else ''} {names}: "
                            "remove those rules first")
    session.execute(delete(SubscriberProperty).where(SubscriberProperty.shop_id == shop_id,
                                                     SubscriberProperty.name_key == row.name_key)
                    .execution_options(synchronize_session=False))
    session.delete(row)
    session.flush()
    return row.name


# ---------------------------------------------------------------------------------------------- values

def parse_value(type_: str, raw: Any) -> str | Decimal | dt.date | None:
    """A value of a property of this type from form, CSV or JSON input; None (no value) for blank input.

    Raises PropertyError with the reason: text longer than MAX_TEXT, a number that is not one (or has more
    than four decimal places, or is beyond 10^12), a date not written YYYY-MM-DD or not on the calendar.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float, Decimal)):
        raise PropertyError("must be text")
    text = str(raw).strip()
    if type_ == "text":
        if len(text) > MAX_TEXT:
            raise PropertyError(f"must be at most {MAX_TEXT} characters")
        return text
    if type_ == "number":
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise PropertyError("must be a number") from None
        if not number.is_finite() or not re.fullmatch(r"[+-]?[0-9]+(\.[0-9]+)?", text):
            raise PropertyError("must be a number")
        if abs(number) > MAX_NUMBER:
            raise PropertyError(f"must be between -{MAX_NUMBER:,} and {MAX_NUMBER:,}")
        if number != number.quantize(Decimal(1).scaleb(-NUMBER_PLACES)):
            raise PropertyError(f"must have at most {NUMBER_PLACES} decimal places")
        return number.quantize(Decimal(1).scaleb(-NUMBER_PLACES)).normalize() + 0
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        raise PropertyError("must be a date written YYYY-MM-DD")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise PropertyError(f"{text} is not a calendar date") from None


def show(type_: str, value: Any) -> str:
    """A stored value as a form shows it."""
    if value is None:
        return ""
    if type_ == "number":
        return format(Decimal(value).normalize(), "f")
    if type_ == "date":
        return value.isoformat()
    return str(value)


def _stored(row: SubscriberProperty | None, type_: str) -> Any:
    if row is None:
        return None
    return {"text": row.text_value, "number": row.number_value, "date": row.date_value}[type_]


def values(session: OrmSession, shop_id: int, subscriber_id: int) -> dict[str, Any]:
    """The subscriber's values by property key, typed (only properties the shop has)."""
    known = types(session, shop_id)
    rows = session.scalars(select(SubscriberProperty).where(SubscriberProperty.shop_id == shop_id,
                                                           SubscriberProperty.subscriber_id == subscriber_id))
    return {row.name_key: _stored(row, known[row.name_key]) for row in rows if row.name_key in known}


def parse_values(catalogue_: Mapping[str, Property], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every raw value (by property name or key) parsed by its type; ValuesInvalid lists every bad one."""
    parsed, errors = {}, {}
    for name, value in raw.items():
        key = key_of(name)
        prop = catalogue_.get(key)
        if prop is None:
            errors[key] = f"there is no property “{name}”"
            continue
        try:
            parsed[key] = parse_value(prop.type, value)
        except PropertyError as exc:
            errors[key] = f"{prop.label} {exc}"
    if errors:
        raise ValuesInvalid(errors)
    return parsed


def set_values(session: OrmSession, subscriber: Subscriber, raw: Mapping[str, Any], *,
               catalogue_: Mapping[str, Property] | None = None) -> list[str]:
    """Write the subscriber's values (blank clears one), all or none; returns the keys whose value changed.

    Not committed; ValuesInvalid (nothing written) when any value is bad. Call `recheck` after the commit
    when something changed.
    """
    known = catalogue_ if catalogue_ is not None else catalogue(session, subscriber.shop_id)
    parsed = parse_values(known, raw)
    existing = {row.name_key: row for row in session.scalars(
        select(SubscriberProperty).where(SubscriberProperty.shop_id == subscriber.shop_id,
                                         SubscriberProperty.subscriber_id == subscriber.id,
                                         SubscriberProperty.name_key.in_(list(parsed))))} if parsed else {}
    changed = []
    for key, value in parsed.items():
        type_ = known[key].type
        row = existing.get(key)
        if _stored(row, type_) == value:
            continue
        changed.append(key)
        if value is None:
            session.delete(row)
            continue
        if row is None:
            row = SubscriberProperty(shop_id=subscriber.shop_id, subscriber_id=subscriber.id, name_key=key)
            session.add(row)
        row.text_value = value if type_ == "text" else None
        row.number_value = value if type_ == "number" else None
        row.date_value = value if type_ == "date" else None
        row.anniversary = value.month * 100 + value.day if type_ == "date" else None
    session.flush()
    return changed


def recheck(shop_id: int, subscriber_ids: Iterable[int]) -> None:
    """Queue the segment re-check of subscribers whose properties changed (after the commit)."""
    signals.announce(signals.subscribers_changed, Session(), shop_id=shop_id, subscriber_ids=list(subscriber_ids))
