"""The live preview of a definition: how many subscribers it holds right now and the first few of them, through
the one compiler (the builder's live count and the JSON API's preview)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.models import Customer, Subscriber
from kinnekt.segments import compiler
from kinnekt.segments.rules import Definition

SAMPLE_SIZE = 10
"""Members shown under the live count."""

@dataclass(frozen=True)
class Member:
    """One member shown in a preview."""

    id: int
    phone: str
    name: str | None


@dataclass(frozen=True)
class Preview:
    """How many subscribers a definition holds right now, and the first few of them."""

    count: int
    sample: list[Member]


def preview(session: OrmSession, definition: Definition, *, shop, now: dt.datetime,
            sample_size: int = SAMPLE_SIZE) -> Preview:
    """Count the members of a (validated) definition at `now` and load a sample, through the one compiler."""
    total = compiler.count(session, definition, shop=shop, now=now)
    ids = compiler.compile_definition(definition, shop=shop, now=now, session=session)
    rows = session.execute(
        select(Subscriber.id, Subscriber.phone, Subscriber.first_name, Customer.first_name, Customer.last_name)
        .outerjoin(Customer, Customer.id == Subscriber.customer_id)
        .where(Subscriber.shop_id == shop.id, Subscriber.id.in_(ids.scalar_subquery()))
        .order_by(Subscriber.id).limit(sample_size)).all()
    sample = [Member(id=i, phone=phone, name=own or " ".join(p for p in (first, last) if p) or None)
              for i, phone, own, first, last in rows]
    return Preview(count=total, sample=sample)
