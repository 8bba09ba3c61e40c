"""What every ingested change shares: phones in E.164, linking subscribers to customers, telling segments."""
from __future__ import annotations

import phonenumbers
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from kinnekt.models import Customer, Subscriber

CHUNK = 500  # ids per IN (...) list: well under SQLite's and PostgreSQL's parameter limits


def chunks(ids, size: int = CHUNK):
    """Split a collection of ids into lists of at most `size`."""
    ids = list(ids)
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def e164(raw: str | None, region: str | None = None) -> str | None:
    """A phone number in E.164, or None when it is missing or not a valid number."""
    if not raw:
        return None
    try:
        number = phonenumbers.parse(raw, (region or "").upper() or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def link_by_phone(session, shop_id: int, phones) -> None:
    """Link unlinked subscribers whose phone is one of these to the shop's customer with the same phone."""
    phones = sorted({p for p in phones if p})
    for batch in chunks(phones):
        same_phone = (select(Customer.id)
                      .where(Customer.shop_id == Subscriber.shop_id, Customer.phone == Subscriber.phone)
                      .order_by(Customer.id).limit(1).scalar_subquery())
        session.execute(
            update(Subscriber)
            .where(Subscriber.shop_id == shop_id, Subscriber.customer_id.is_(None), Subscriber.phone.in_(batch))
            .values(customer_id=same_phone)
            .execution_options(synchronize_session=False)
        )


def subscribers_of(session, shop_id: int, customer_ids) -> list[int]:
    """Ids of the subscribers linked to these customers."""
    found: list[int] = []
    for batch in chunks(sorted(set(customer_ids))):
        found.extend(session.scalars(
            select(Subscriber.id).where(Subscriber.shop_id == shop_id, Subscriber.customer_id.in_(batch))))
    return sorted(set(found))


def notify_segments(shop_id: int, subscriber_ids) -> None:
    """Ask the segment engine to re-check these subscribers (after the change is committed)."""
    ids = sorted(set(subscriber_ids))
    if not ids:
        return
    from kinnekt.segments.membership import subscribers_changed
    subscribers_changed(shop_id, ids)


def commit_with_retry(session, work):
    """Run `work()` and commit; once more after a unique-constraint race with a concurrent job.

    A concurrent job may insert one of the same rows first; on the second pass the upsert finds it and updates.
    """
    for attempt in (1, 2):
        try:
            result = work()
            session.commit()
            return result
        except IntegrityError:
            session.rollback()
            if attempt == 2:
                raise
