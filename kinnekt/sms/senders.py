"""Which of a shop's senders a text goes out from, what each kind of sender is offered where, and its send rate.

A shop's senders are its `SenderNumber` rows (kinnekt/models/sender.py): numbers bought or brought through
Settings (kinnekt/sms/numbers.py) and alphanumeric sender ids. Only active senders that are set up count: a
number once it is linked to Kinnekt's Vonage application (`linked_at`), an alphanumeric id at once.

The sender of a message (`choose`), in order:
1. the shop's default sender for the recipient's country;
2. else the shop's default sender for any other country (a number before an alphanumeric id, which a country
   that does not allow them would refuse; the oldest first);
3. else the shop's "Sender" setting (`shops.sender`, the one sender of the app's first releases);
4. else the app's VONAGE_SENDER: the fallback for development and the demo, shared by every shop without a
   sender of its own.
An alphanumeric sender is chosen by rule 1 or 2 only for a country whose row in `COUNTRIES` allows one.

The send rate of a sender (`rate_for`): its `messages_per_second` when set (e.g. what a 10DLC registration
granted), else the default for its kind (defaults.SENDER_RATE_PER_SECOND), beside the account's limit.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.models import SenderNumber, Shop
from kinnekt.models.sender import SenderKind, SenderStatus
from kinnekt.sms.prices import country_of


@dataclass(frozen=True)
class CountryOffer:
    """What Kinnekt offers in one country: the kinds of number to buy (SenderKind -> Vonage's number type) and
    whether an alphanumeric sender id may be used there."""

    name: str
    numbers: dict[str, str]
    alphanumeric: bool


COUNTRIES: dict[str, CountryOffer] = {
    "US": CountryOffer("United States", {SenderKind.TOLL_FREE: "landline-toll-free",
                                         SenderKind.LONG_CODE: "mobile-lvn"}, False),
    "CA": CountryOffer("Canada", {SenderKind.TOLL_FREE: "landline-toll-free", SenderKind.LONG_CODE: "mobile-lvn"},
                       False),
    "GB": CountryOffer("United Kingdom", {SenderKind.MOBILE: "mobile-lvn"}, True),
    "IE": CountryOffer("Ireland", {SenderKind.MOBILE: "mobile-lvn"}, True),
    "AU": CountryOffer("Australia", {SenderKind.MOBILE: "mobile-lvn"}, True),
    "NZ": CountryOffer("New Zealand", {SenderKind.MOBILE: "mobile-lvn"}, False),
    "DE": CountryOffer("Germany", {SenderKind.MOBILE: "mobile-lvn"}, True),
    "FR": CountryOffer("France", {SenderKind.MOBILE: "mobile-lvn"}, True),
    "NL": CountryOffer("Netherlands", {SenderKind.MOBILE: "mobile-lvn"}, True),
}
"""The countries of the price table (kinnekt/sms/prices.py) and what a shop can send from in each: in the US and
Canada a toll-free number or a long code (10DLC in the US), which need the carriers' registration in the US and
where alphanumeric senders are not delivered; elsewhere a mobile number (two-way) or an alphanumeric sender id
(one-way: nobody can reply, so keywords and STOP by text need a number too). docs/numbers.md has the table."""

KIND_LABELS = {SenderKind.TOLL_FREE: "Toll-free number", SenderKind.LONG_CODE: "Long code (10DLC in the US)",
               SenderKind.MOBILE: "Mobile number", SenderKind.ALPHANUMERIC: "Alphanumeric sender"}
"""The kinds in the merchant's words."""


@dataclass(frozen=True)
class Sender:
    """The sender one text goes out from: its address as the gateway names it ("+<digits>" for a number, the id
    for an alphanumeric sender) and its own rate (None: SMS_SENDER_RATE_PER_SECOND, for the fallbacks)."""

    address: str
    rate: int | None = None
    sender_number_id: int | None = None


def rate_for(number: SenderNumber) -> int:
    """Messages per second the sender may send: its own setting, else its kind's default (0: the account's)."""
    if number.messages_per_second is not None and number.messages_per_second >= 0:
        return int(number.messages_per_second)
    return int(defaults.SENDER_RATE_PER_SECOND.get(number.kind, 1))


def address(number: SenderNumber) -> str:
    """How the gateway names the sender: "+" and the digits for a number, the id itself for an alphanumeric one."""
    return number.msisdn if number.kind == SenderKind.ALPHANUMERIC else "+" + number.msisdn


def usable(session: OrmSession, shop_id: int) -> list[SenderNumber]:
    """The shop's senders that can send: active and set up (linked, or alphanumeric), oldest first."""
    return list(session.scalars(
        select(SenderNumber).where(SenderNumber.shop_id == shop_id, SenderNumber.status == SenderStatus.ACTIVE,
                                   (SenderNumber.linked_at.is_not(None))
                                   | (SenderNumber.kind == SenderKind.ALPHANUMERIC))
        .order_by(SenderNumber.created_at, SenderNumber.id)))


def allows_alphanumeric(country: str | None) -> bool:
    """True when an alphanumeric sender may be used towards `country` (by `COUNTRIES`; unknown: no)."""
    offer = COUNTRIES.get((country or "").upper())
    return bool(offer and offer.alphanumeric)


def pick(senders: list[SenderNumber], country: str | None) -> SenderNumber | None:
    """The sender for a recipient in `country` among the shop's usable senders (rules 1 and 2 of the module's
    docstring), or None."""
    alpha_ok = allows_alphanumeric(country)
    defaults_ = [s for s in senders if s.is_default and (alpha_ok or s.kind != SenderKind.ALPHANUMERIC)]
    for sender in defaults_:
        if country and sender.country == country:
            return sender
    numbers = [s for s in defaults_ if s.kind != SenderKind.ALPHANUMERIC]
    return (numbers or defaults_ or [None])[0]


def fallback(shop: Shop) -> Sender | None:
    """Rules 3 and 4: the shop's Sender setting, else VONAGE_SENDER; None when neither is set."""
    chosen = (shop.sender or "").strip() or (current_app.config.get("VONAGE_SENDER") or "").strip()
    return Sender(chosen) if chosen else None


def choose(session: OrmSession, shop: Shop, to_phone: str | None = None,
           senders: list[SenderNumber] | None = None) -> Sender | None:
    """The sender of a text from `shop` to `to_phone` (without one: the shop's default), by the rule in this
    module's docstring. `senders` may be passed to spare the query (a campaign batch loads them once)."""
    senders = usable(session, shop.id) if senders is None else senders
    number = pick(senders, country_of(to_phone) if to_phone else None)
    if number is not None:
        return Sender(address(number), rate_for(number), number.id)
    return fallback(shop)


def inbound_number(session: OrmSession, shop: Shop) -> str | None:
    """The number people text to reach the shop ("+<digits>"): its default number (not an alphanumeric id, which
    cannot receive), else any of its linked numbers, else its Sender setting when that is a number, else
    VONAGE_SENDER when that is one."""
    numbers = [s for s in usable(session, shop.id) if s.kind != SenderKind.ALPHANUMERIC]
    numbers.sort(key=lambda s: not s.is_default)
    if numbers:
        return address(numbers[0])
    digits = re.sub(r"\D", "", shop.sender or "") or re.sub(r"\D", "", current_app.config.get("VONAGE_SENDER") or "")
    return "+" + digits if digits else None
