"""A shop's own senders, set up from Settings: search numbers, buy one, bring one the account holds, add an
alphanumeric sender id, choose the default per country, release.

Buying is idempotent against double clicks and races, in the database: the number is claimed first by inserting
its `sender_numbers` row (a live number is unique on `msisdn`, kinnekt/models/sender.py) and committing, and only
the request that made the claim asks Vonage to buy it. A second click of the same shop finds its own claim and
answers with it; another shop's concurrent buy of the same number fails on the index and is told the number is
taken. A claim whose buy Vonage refuses (the number went meanwhile: 420) or does not answer is deleted again. Once
bought, the number is linked to Kinnekt's Vonage application (`number/update` with `app_id`), so that its inbound
texts and statuses reach /sms/inbound and /sms/receipt; a number whose link failed stays "not linked" (it neither
sends nor routes) until "Link again" succeeds.

Bringing a number checks that it is one of the account's numbers (`account/numbers`) and that it can send SMS,
then links it the same way. Releasing a bought number cancels it at Vonage; a brought one is only let go: its
application and inbound webhook are emptied (`number/update`), so its texts stop reaching Kinnekt, and the number
stays in the account (it is the merchant's). The first sender of a country becomes its default; releasing a
default passes it to the oldest other sender of that country. Which sender a text goes out from: kinnekt/sms/senders.py.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.db import utcnow
from kinnekt.models import SenderNumber, Shop
from kinnekt.models.sender import SenderKind, SenderStatus
from kinnekt.sms import senders
from kinnekt.sms.numbers_api import Number, NumbersClient, NumbersError

log = logging.getLogger(__name__)

ALPHANUMERIC_RE = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
"""An alphanumeric sender id: 1 to 11 letters, digits and spaces, at least one letter (all digits would be read
as a number)."""
UNAVAILABLE_CODES = frozenset({"420"})
"""Vonage's answer to a buy of a number that is no longer for sale (or cannot be bought by this account)."""


class NumberError(ValueError):
    """What the merchant asked cannot be done; the message says why and what to do. Nothing was saved."""


@dataclass(frozen=True)
class Offer:
    """A number for sale, as the search shows it."""

    country: str
    msisdn: str
    kind: str
    cost: str | None
    features: tuple[str, ...]


def _country(raw) -> str:
    country = str(raw or "").strip().upper()
    if country not in senders.COUNTRIES:
        raise NumberError("Choose a country from the list.")
    return country


def _kind(country: str, raw) -> str:
    kind = str(raw or "").strip()
    offer = senders.COUNTRIES[country]
    if kind == SenderKind.ALPHANUMERIC:
        if not offer.alphanumeric:
            raise NumberError(f"{offer.name} does not allow alphanumeric senders: choose a number.")
        return kind
    if kind not in offer.numbers:
        raise NumberError(f"Choose a kind of number offered in {offer.name}.")
    return kind


def _msisdn(raw) -> str:
    digits = re.sub(r"[\s()+.-]", "", str(raw or ""))
    if not re.fullmatch(r"[0-9]{6,15}", digits):
        raise NumberError("Enter the number with its country code, e.g. +1 888 555 0199.")
    return digits


def _kind_of(country: str, vonage_type: str) -> str:
    """A Vonage number type as a SenderKind (a US or Canadian long code is a long code, elsewhere a mobile)."""
    if vonage_type == "landline-toll-free":
        return SenderKind.TOLL_FREE
    if country in ("US", "CA") or vonage_type == "landline":
        return SenderKind.LONG_CODE
    return SenderKind.MOBILE


def search(country: str, kind: str, pattern: str | None = None, client: NumbersClient | None = None) -> tuple[
        int, list[Offer]]:
    """Numbers for sale in `country` of `kind` (form values, checked: NumberError), that can send SMS; with
    `pattern` (digits), numbers containing it. NumbersError when Vonage refuses or is not set up."""
    country = _country(country)
    kind = _kind(country, kind)
    if kind == SenderKind.ALPHANUMERIC:
        raise NumberError("An alphanumeric sender is not bought: type it below.")
    pattern = re.sub(r"\D", "", str(pattern or ""))[:15] or None
    client = client or NumbersClient.from_config()
    count, found = client.search(country, senders.COUNTRIES[country].numbers[kind], pattern=pattern,
                                 size=defaults.SENDER_SEARCH_SIZE)
    return count, [Offer(n.country, n.msisdn, kind, n.cost, n.features) for n in found if n.country == country]


def listing(session: OrmSession, shop: Shop) -> list[SenderNumber]:
    """The shop's active senders, by country then oldest first."""
    return list(session.scalars(
        select(SenderNumber).where(SenderNumber.shop_id == shop.id, SenderNumber.status == SenderStatus.ACTIVE)
        .order_by(SenderNumber.country, SenderNumber.created_at, SenderNumber.id)))


def _live(session: OrmSession, msisdn: str) -> SenderNumber | None:
    return session.scalar(select(SenderNumber).where(
        SenderNumber.msisdn == msisdn, SenderNumber.status == SenderStatus.ACTIVE,
        SenderNumber.kind != SenderKind.ALPHANUMERIC).execution_options(populate_existing=True))


def _claim(session: OrmSession, shop: Shop, **values) -> tuple[SenderNumber, bool]:
    """Insert the shop's row for a number and commit: (row, True). The shop's own live row for it: (row, False).
    Another shop's: NumberError."""
    existing = _live(session, values["msisdn"])
    if existing is None:
        row = SenderNumber(shop_id=shop.id, status=SenderStatus.ACTIVE, is_default=False, **values)
        session.add(row)
        try:
            session.commit()
            return row, True
        except IntegrityError:
            session.rollback()
            existing = _live(session, values["msisdn"])
    if existing is not None and existing.shop_id == shop.id:
        return existing, False
    raise NumberError("This number is taken: another store uses it. Search again.")


def _forget(session: OrmSession, row: SenderNumber) -> None:
    session.delete(row)
    session.commit()


def buy(session: OrmSession, shop: Shop, country, msisdn, kind, client: NumbersClient | None = None
        ) -> SenderNumber:
    """Buy the number for the shop and link it (the rule in this module's docstring); returns its row. A second
    call for the same number returns the same row. NumberError (nothing saved) when the input is wrong, the number
    is another shop's or no longer for sale, or Vonage did not answer."""
    country = _country(country)
    kind = _kind(country, kind)
    if kind == SenderKind.ALPHANUMERIC:
        raise NumberError("An alphanumeric sender is not bought: type it below.")
    msisdn = _msisdn(msisdn)
    client = client or NumbersClient.from_config()
    row, claimed = _claim(session, shop, msisdn=msisdn, country=country, kind=kind, origin="bought",
                          features=["SMS"])
    if not claimed:
        return row
    try:
        client.buy(country, msisdn)
    except NumbersError as exc:
        _forget(session, row)
        if exc.code in UNAVAILABLE_CODES:
            raise NumberError("This number is no longer available. Search again and pick another.") from None
        if exc.code in ("connection", "unreadable"):
            raise NumberError("Vonage did not answer, so the number may or may not be yours. Check with "
                              "\"Bring a number\" before buying again.") from None
        raise NumberError(f"Vonage refused to sell the number: {exc}") from None
    _link(session, row, client)
    _default_if_first(session, row)
    return row


def bring(session: OrmSession, shop: Shop, msisdn, client: NumbersClient | None = None) -> SenderNumber:
    """Take one of the account's numbers into the shop's senders and link it; NumberError when it is not in the
    account, cannot send SMS, or is another shop's."""
    msisdn = _msisdn(msisdn)
    client = client or NumbersClient.from_config()
    try:
        number: Number | None = client.owned(msisdn)
    except NumbersError as exc:
        raise NumberError(f"Could not check the number with Vonage: {exc}") from None
    if number is None:
        raise NumberError("This number is not in the Vonage account. Buy one, or check the digits.")
    if "SMS" not in number.features:
        raise NumberError("This number cannot send SMS.")
    if number.country not in senders.COUNTRIES:
        raise NumberError(f"Kinnekt does not send from numbers of {number.country} yet.")
    row, claimed = _claim(session, shop, msisdn=msisdn, country=number.country,
                          kind=_kind_of(number.country, number.type), origin="brought", features=list(number.features))
    if claimed or row.linked_at is None:
        _link(session, row, client)
    _default_if_first(session, row)
    return row


def add_alphanumeric(session: OrmSession, shop: Shop, country, sender_id) -> SenderNumber:
    """Add an alphanumeric sender id for a country that allows one; the same id twice gives the same row."""
    country = _country(country)
    _kind(country, SenderKind.ALPHANUMERIC)
    sender_id = " ".join(str(sender_id or "").split())
    if not ALPHANUMERIC_RE.fullmatch(sender_id):
        raise NumberError("A sender id has 1 to 11 letters, digits or spaces, with at least one letter.")
    existing = session.scalar(select(SenderNumber).where(
        SenderNumber.shop_id == shop.id, SenderNumber.status == SenderStatus.ACTIVE,
        SenderNumber.kind == SenderKind.ALPHANUMERIC, SenderNumber.country == country,
        SenderNumber.msisdn == sender_id))
    if existing is not None:
        return existing
    row = SenderNumber(shop_id=shop.id, msisdn=sender_id, country=country, kind=SenderKind.ALPHANUMERIC,
                       origin="brought", status=SenderStatus.ACTIVE, features=["SMS"], is_default=False,
                       linked_at=utcnow())
    session.add(row)
    session.commit()
    _default_if_first(session, row)
    return row


def _link(session: OrmSession, row: SenderNumber, client: NumbersClient) -> None:
    """Point the number at the app's Vonage application; a failure leaves it "not linked" (logged)."""
    app_id = current_app.config.get("VONAGE_APPLICATION_ID") or ""
    try:
        if not app_id:
            raise NumbersError("VONAGE_APPLICATION_ID is not set.", "not-configured")
        client.link(row.country, row.msisdn, app_id)
    except NumbersError as exc:
        log.warning("shop %s: number %s not linked: %s", row.shop_id, row.msisdn, exc)
        return
    row.linked_at = utcnow()
    session.commit()


def link_again(session: OrmSession, shop: Shop, sender_id: int, client: NumbersClient | None = None
               ) -> SenderNumber:
    """Try linking a "not linked" number of the shop again; NumberError when it still fails."""
    row = _own(session, shop, sender_id)
    if row.linked_at is None and row.kind != SenderKind.ALPHANUMERIC:
        _link(session, row, client or NumbersClient.from_config())
        if row.linked_at is None:
            raise NumberError("Vonage did not take the link. Try again in a moment.")
    _default_if_first(session, row)
    return row


def _own(session: OrmSession, shop: Shop, sender_id) -> SenderNumber:
    try:
        wanted = int(sender_id)
    except (TypeError, ValueError):
        raise NumberError("No such sender.") from None
    if not 0 < wanted < 2 ** 63:  # beyond any id (and PostgreSQL's bigint)
        raise NumberError("No such sender.")
    row = session.scalar(select(SenderNumber).where(SenderNumber.id == wanted, SenderNumber.shop_id == shop.id,
                                                    SenderNumber.status == SenderStatus.ACTIVE))
    if row is None:
        raise NumberError("No such sender.")
    return row


def _default_if_first(session: OrmSession, row: SenderNumber) -> None:
    """Make `row` its country's default when the shop has none there (a concurrent default wins)."""
    if row.is_default or row.status != SenderStatus.ACTIVE:
        return
    if row.kind != SenderKind.ALPHANUMERIC and row.linked_at is None:
        return
    taken = session.scalar(select(SenderNumber.id).where(
        SenderNumber.shop_id == row.shop_id, SenderNumber.country == row.country,
        SenderNumber.status == SenderStatus.ACTIVE, SenderNumber.is_default.is_(True)))
    if taken is not None:
        return
    row.is_default = True
    try:
        session.commit()
    except IntegrityError:  # another request made a default for the country meanwhile
        session.rollback()


def make_default(session: OrmSession, shop: Shop, sender_id) -> SenderNumber:
    """Make the sender its country's default (the one before loses it), in one transaction."""
    row = _own(session, shop, sender_id)
    if row.kind != SenderKind.ALPHANUMERIC and row.linked_at is None:
        raise NumberError("Link the number first.")
    session.execute(update(SenderNumber).where(
        SenderNumber.shop_id == shop.id, SenderNumber.country == row.country, SenderNumber.id != row.id,
        SenderNumber.is_default.is_(True)).values(is_default=False).execution_options(synchronize_session=False))
    row.is_default = True
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise NumberError("Another change was made at the same time. Try again.") from None
    return row


def release(session: OrmSession, shop: Shop, sender_id, client: NumbersClient | None = None) -> SenderNumber:
    """Stop sending from the sender: at Vonage first, a bought number is cancelled and a brought one is pointed away
    from Kinnekt (its application and inbound webhook emptied; it stays in the account); a refusal keeps it
    (NumberError, nothing changed). Then the row is released; a default passes to the oldest other sender of its
    country."""
    row = _own(session, shop, sender_id)
    if row.kind != SenderKind.ALPHANUMERIC:
        bought = row.origin == "bought"
        try:
            vonage = client or NumbersClient.from_config()
            if bought:
                vonage.cancel(row.country, row.msisdn)
            else:
                vonage.unlink(row.country, row.msisdn)
        except NumbersError as exc:
            if exc.code not in UNAVAILABLE_CODES:  # 420: not in the account any more, nothing to let go
                raise NumberError(f"Vonage did not {'cancel' if bought else 'unlink'} the number, so it is kept: "
                                  f"{exc}") from None
    was_default = row.is_default
    row.status, row.is_default, row.released_at = SenderStatus.RELEASED, False, utcnow()
    session.commit()
    if was_default:
        heir = session.scalar(select(SenderNumber).where(
            SenderNumber.shop_id == shop.id, SenderNumber.country == row.country,
            SenderNumber.status == SenderStatus.ACTIVE).order_by(SenderNumber.created_at, SenderNumber.id))
        if heir is not None:
            _default_if_first(session, heir)
    return row
