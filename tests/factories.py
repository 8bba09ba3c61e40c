"""Builders of the rows tests need: subscribers, customers, segments, campaigns, messages and orders of a shop.

Each takes the session first (the `db` fixture, or `Session` where a test has no `db`) and the shop, fills what the
row must have with plain defaults (a subscribed, manually added subscriber with a new number), takes any other
column as a keyword, and commits (flushes with `commit=False`). `new_subscriber` builds the row without adding it.
A test module that wants other defaults passes them (often with functools.partial); it does not copy a builder.
"""
from __future__ import annotations

import itertools

from kinnekt.db import Session
from kinnekt.models import (Campaign, CampaignSegment, Customer, CustomerTag, LineItem, Message, Order, Segment,
                            Subscriber)

_serial = itertools.count(1)


def serial() -> int:
    """A number no other call returns in this test run (Shopify ids, names, codes)."""
    return next(_serial)


def new_phone() -> str:
    """A US number not yet handed out: +1 212 555 1000 to 9998 (the numbers tests spell out are below 1000, or 9999)."""
    return f"+1212555{1000 + serial() % 8999:04d}"


def save(db, row, *, commit: bool = True):
    """Add `row` and commit it (only flush it with `commit=False`, leaving the transaction to the test)."""
    db.add(row)
    if commit:
        db.commit()
    else:
        db.flush()
    return row


def add(*rows):
    """Add and commit rows through the shared Session; one row back for one row, else the tuple."""
    Session.add_all(rows)
    Session.commit()
    return rows[0] if len(rows) == 1 else rows


def where(*rules, match: str = "all") -> dict:
    """A segment definition whose root group holds `rules`."""
    return {"match": match, "rules": list(rules)}


def rule(field: str, op: str, value=None, **extras) -> dict:
    """One rule of a definition; `value` left out when None (operators such as is_set take none)."""
    out = {"field": field, "op": op, **extras}
    if value is not None:
        out["value"] = value
    return out


def new_subscriber(shop, *, phone: str | None = None, status: str = "subscribed", source: str = "manual",
                   customer: Customer | None = None, **fields) -> Subscriber:
    """A subscriber of `shop`, not added to any session: subscribed, added by hand, a new number unless given,
    linked to `customer` when given."""
    if customer is not None:
        fields["customer_id"] = customer.id
    return Subscriber(shop_id=shop.id, phone=phone or new_phone(), status=status, source=source, **fields)


def subscriber(db, shop, *, commit: bool = True, **fields) -> Subscriber:
    """A subscriber of `shop` as new_subscriber makes it; saved."""
    return save(db, new_subscriber(shop, **fields), commit=commit)


def customer(db, shop, *, tags=(), commit: bool = True, **fields) -> Customer:
    """A Shopify customer of `shop` with these columns (facts) and (lower-case) tags; saved."""
    fields.setdefault("shopify_id", serial())
    row = save(db, Customer(shop_id=shop.id, **fields), commit=commit)
    for tag in tags:
        save(db, CustomerTag(shop_id=shop.id, customer_id=row.id, tag=tag), commit=commit)
    return row


def buyer(db, shop, *, commit: bool = True, **customer_fields) -> tuple[Subscriber, Customer]:
    """A subscribed subscriber linked to a new customer with these columns; both saved."""
    person = customer(db, shop, commit=commit, **customer_fields)
    return subscriber(db, shop, customer=person, commit=commit), person


def segment(db, shop, definition: dict, *, name: str | None = None, commit: bool = True, **fields) -> Segment:
    """A segment of `shop` with this definition, stored as given (not built); named "Segment <n>" unless told."""
    return save(db, Segment(shop_id=shop.id, name=name or f"Segment {serial()}", definition=definition, **fields),
                commit=commit)


def country_segment(db, shop, name: str, countries, *, built_at=None) -> Segment:
    """A manual segment of the subscribers whose number is from one of `countries`; built at `built_at` if given."""
    from kinnekt.segments import membership
    row = segment(db, shop, where({"field": "country", "op": "in", "value": list(countries)}), name=name,
                  kind="manual")
    if built_at is not None:
        membership.build(db, row.id, now=built_at)
    return row


def campaign(db, shop, *, include=(), exclude=(), name: str = "Spring sale",
             body: str = "Hi {first_name}, spring sale today", status: str = "draft", commit: bool = True,
             **fields) -> Campaign:
    """A campaign of `shop` for the segments `include` minus `exclude`; saved with its segment links."""
    row = save(db, Campaign(shop_id=shop.id, name=name, body=body, status=status, **fields), commit=False)
    for mode, segments in (("include", include), ("exclude", exclude)):
        for seg in segments:
            db.add(CampaignSegment(shop_id=shop.id, campaign_id=row.id, segment_id=seg.id, mode=mode))
    if commit:
        db.commit()
    else:
        db.flush()
    return row


def message(db, campaign_row, subscriber, *, status: str = "delivered", sent_at=None, commit: bool = True,
            **fields) -> Message:
    """The campaign's message to `subscriber`; sent when the campaign started if it was sent or delivered and
    `sent_at` is not given; saved."""
    sent = sent_at if sent_at is not None else (campaign_row.started_at if status in ("sent", "delivered") else None)
    return save(db, Message(shop_id=campaign_row.shop_id, campaign_id=campaign_row.id, subscriber_id=subscriber.id,
                            to_phone=subscriber.phone, status=status, sent_at=sent, **fields), commit=commit)


def order(db, shop, customer=None, *, created_at, lines=(), commit: bool = True, **fields) -> Order:
    """An order of `shop` placed at `created_at` by `customer` (a Customer, or none), with line items given as
    dicts of LineItem columns; saved."""
    fields.setdefault("shopify_id", serial())
    row = save(db, Order(shop_id=shop.id, customer_id=customer.id if customer else None, created_at=created_at,
                         **fields), commit=commit)
    for line in lines:
        save(db, LineItem(shop_id=shop.id, order_id=row.id, shopify_id=serial(), **line), commit=commit)
    return row
