"""A batch of storefront events from the web pixel, read and checked against Shopify's documented event shapes.

The pixel (extensions/kinnekt-pixel/src/index.js) posts `{"key": …, "customer": {"id": …} | null,
"events": [event, …]}`, each event as Shopify's standard customer events give it (slimmed of what Kinnekt
does not use): `id`, `name`, `timestamp`, `clientId`, `context.document.location.href` and `data`, whose
shape depends on the name (`data.productVariant` for product_viewed, `data.collection` for collection_viewed,
`data.searchResult` for search_submitted, `data.cartLine` for product_added_to_cart, `data.cart` for
cart_viewed, `data.checkout` for checkout_started). `read_batch` turns that into `Event` rows or raises
InvalidBatch naming the first field that is wrong (`events[2].data.productVariant.product.id`): one bad event
refuses the whole batch, so that nothing half-read is stored. Fields Kinnekt does not use are not looked at.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from kinnekt import defaults
from kinnekt.models.storefront import STOREFRONT_EVENT_NAMES
from kinnekt.numbers import MAX_ID

TOKEN = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
"""Event ids, client ids and checkout tokens: Shopify's are UUID-like ASCII; anything else is not from a pixel."""
GID = re.compile(r"^gid://shopify/[A-Za-z]+/([0-9]{1,19})$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_URL = 2048
MAX_QUERY = 255
MAX_PHONE = 32
MAX_QUANTITY = 1_000_000
MAX_AMOUNT = Decimal(10) ** 9
MAX_TIMESTAMP = 64


class InvalidBatch(ValueError):
    """A batch that is not what the pixel sends; the message names the field and is safe to show."""


@dataclass
class Event:
    """One checked event, as a storefront_events row will hold it, with the identity clues it carried."""

    event_id: str
    name: str
    occurred_at: dt.datetime
    client_id: str
    url: str | None = None
    product_id: int | None = None
    variant_id: int | None = None
    collection_id: int | None = None
    quantity: int | None = None
    value: Decimal | None = None
    currency: str | None = None
    checkout_token: str | None = None
    search_query: str | None = None
    phone: str | None = None  # a started checkout's phone: an identity clue, never stored on the event
    phone_region: str | None = None  # the checkout address's country, to read a phone written without +


@dataclass
class Batch:
    """A checked batch: the shop key, the signed-in customer's Shopify id (None for a guest), the events."""

    key: str
    customer_id: int | None
    events: list[Event]


def _get(obj: dict, name: str, path: str, kind: type | tuple, *, required: bool = False):
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidBatch(f"{path}.{name} is missing")
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise InvalidBatch(f"{path}.{name} has the wrong type ({type(value).__name__})")
    return value


def _object(obj: dict, name: str, path: str, *, required: bool = False) -> dict | None:
    return _get(obj, name, path, dict, required=required)


def shopify_id(value: Any, path: str) -> int:
    """A Shopify id as the pixel gives it (a numeric string, a number, or a gid) as an integer 1..MAX_ID."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidBatch(f"{path} is not a Shopify id")
    if isinstance(value, str):
        match = GID.match(value)
        text = match.group(1) if match else value
        if not (text.isascii() and text.isdigit() and len(text) <= 19):
            raise InvalidBatch(f"{path} is not a Shopify id")
        value = int(text)
    if not 1 <= value <= MAX_ID:
        raise InvalidBatch(f"{path} is not a Shopify id")
    return value


def _id(obj: dict | None, name: str, path: str, *, required: bool = False) -> int | None:
    if obj is None:
        if required:
            raise InvalidBatch(f"{path} is missing")
        return None
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidBatch(f"{path}.{name} is missing")
        return None
    return shopify_id(value, f"{path}.{name}")


def _token(value: Any, path: str) -> str:
    if not isinstance(value, str) or not TOKEN.match(value):
        raise InvalidBatch(f"{path} must be 1 to 64 letters, digits or -_.:")
    return value


def _text(obj: dict | None, name: str, path: str, limit: int) -> str | None:
    """A string field cut to `limit` characters (None when absent or blank)."""
    if obj is None:
        return None
    value = _get(obj, name, path, str)
    if value is None:
        return None
    value = value.strip()[:limit]
    return value or None


def _money(obj: dict | None, path: str) -> tuple[Decimal | None, str | None]:
    """A MoneyV2 (`{amount, currencyCode}`): the amount, 0 to a billion, and its currency."""
    if obj is None:
        return None, None
    raw = obj.get("amount")
    amount = None
    if raw is not None:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)) or \
                isinstance(raw, str) and len(raw) > 32 or isinstance(raw, float) and not math.isfinite(raw):
            raise InvalidBatch(f"{path}.amount is not an amount")
        if isinstance(raw, int) and abs(raw) > MAX_AMOUNT:
            raise InvalidBatch(f"{path}.amount is out of range")
        try:
            amount = Decimal(str(raw))
        except InvalidOperation:
            raise InvalidBatch(f"{path}.amount is not an amount") from None
        if not amount.is_finite() or not 0 <= amount <= MAX_AMOUNT:
            raise InvalidBatch(f"{path}.amount is out of range")
        amount = amount.quantize(Decimal("0.0001"))
    currency = _get(obj, "currencyCode", path, str)
    if currency is not None and not CURRENCY.match(currency):
        raise InvalidBatch(f"{path}.currencyCode is not a currency code")
    return amount, currency


def _timestamp(value: Any, path: str, now: dt.datetime) -> dt.datetime:
    if not isinstance(value, str) or len(value) > MAX_TIMESTAMP:
        raise InvalidBatch(f"{path} is not a timestamp")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidBatch(f"{path} is not a timestamp") from None
    if moment.tzinfo is None:
        raise InvalidBatch(f"{path} has no time zone")
    try:
        moment = moment.astimezone(dt.timezone.utc)
    except OverflowError:
        raise InvalidBatch(f"{path} is not a timestamp") from None
    if abs((moment - now).total_seconds()) > defaults.PIXEL_CLOCK_SKEW_SECONDS:
        return now  # the browser's clock is wrong: when it arrived is the best we know
    return moment


def _variant(event: Event, variant: dict | None, path: str, *, required: bool) -> None:
    """A ProductVariant: its id, its product's id (required when the variant is), and its price."""
    if variant is None:
        if required:
            raise InvalidBatch(f"{path} is missing")
        return
    event.variant_id = _id(variant, "id", path)
    event.product_id = _id(_object(variant, "product", path, required=True), "id", f"{path}.product", required=True)


def _phone(event: Event, obj: dict | None, path: str) -> None:
    """Keep the first phone found (with its address's country) as the event's identity clue."""
    if obj is None or event.phone is not None:
        return
    event.phone = _text(obj, "phone", path, MAX_PHONE)
    country = _get(obj, "countryCode", path, str)
    event.phone_region = country if country and len(country) == 2 and country.isascii() and country.isalpha() \
        else None


def read_event(raw: Any, path: str, now: dt.datetime) -> Event:
    """One event of the batch, checked; InvalidBatch names what is wrong."""
    if not isinstance(raw, dict):
        raise InvalidBatch(f"{path} is not an object")
    name = raw.get("name")
    if name not in STOREFRONT_EVENT_NAMES:
        raise InvalidBatch(f"{path}.name is not one of {', '.join(STOREFRONT_EVENT_NAMES)}")
    event = Event(event_id=_token(raw.get("id"), f"{path}.id"), name=name,
                  occurred_at=_timestamp(raw.get("timestamp"), f"{path}.timestamp", now),
                  client_id=_token(raw.get("clientId"), f"{path}.clientId"))
    context = _object(raw, "context", path)
    document = _object(context, "document", f"{path}.context") if context else None
    location = _object(document, "location", f"{path}.context.document") if document else None
    event.url = _text(location, "href", f"{path}.context.document.location", MAX_URL)
    data = _object(raw, "data", path) or {}
    where = f"{path}.data"
    if name == "product_viewed":
        variant = _object(data, "productVariant", where, required=True)
        _variant(event, variant, f"{where}.productVariant", required=True)
        event.value, event.currency = _money(_object(variant, "price", f"{where}.productVariant"),
                                             f"{where}.productVariant.price")
    elif name == "collection_viewed":
        event.collection_id = _id(_object(data, "collection", where, required=True), "id", f"{where}.collection",
                                  required=True)
    elif name == "search_submitted":
        result = _object(data, "searchResult", where, required=True)
        query = _get(result, "query", f"{where}.searchResult", str, required=True)
        event.search_query = query.strip()[:MAX_QUERY] or None
    elif name == "product_added_to_cart":
        line = _object(data, "cartLine", where, required=True)
        lpath = f"{where}.cartLine"
        _variant(event, _object(line, "merchandise", lpath, required=True), f"{lpath}.merchandise", required=True)
        quantity = _get(line, "quantity", lpath, int)
        if quantity is not None and not 0 < quantity <= MAX_QUANTITY:
            raise InvalidBatch(f"{lpath}.quantity is out of range")
        event.quantity = quantity
        cost = _object(line, "cost", lpath)
        event.value, event.currency = _money(_object(cost, "totalAmount", f"{lpath}.cost") if cost else None,
                                             f"{lpath}.cost.totalAmount")
    elif name == "cart_viewed":
        cart = _object(data, "cart", where)  # null for an empty cart
        cost = _object(cart, "cost", f"{where}.cart") if cart else None
        event.value, event.currency = _money(_object(cost, "totalAmount", f"{where}.cart.cost") if cost else None,
                                             f"{where}.cart.cost.totalAmount")
    elif name == "checkout_started":
        checkout = _object(data, "checkout", where, required=True)
        cpath = f"{where}.checkout"
        token = checkout.get("token")
        event.checkout_token = _token(token, f"{cpath}.token") if token is not None else None
        event.value, event.currency = _money(_object(checkout, "totalPrice", cpath), f"{cpath}.totalPrice")
        if event.currency is None:
            currency = _get(checkout, "currencyCode", cpath, str)
            if currency is not None and not CURRENCY.match(currency):
                raise InvalidBatch(f"{cpath}.currencyCode is not a currency code")
            event.currency = currency
        shipping = _object(checkout, "shippingAddress", cpath)
        billing = _object(checkout, "billingAddress", cpath)
        _phone(event, checkout, cpath)
        event.phone_region = None
        _phone(event, shipping, f"{cpath}.shippingAddress")
        _phone(event, billing, f"{cpath}.billingAddress")
        if event.phone is not None and event.phone_region is None:
            address = shipping or billing or {}
            country = address.get("countryCode")
            event.phone_region = country if isinstance(country, str) and len(country) == 2 and \
                country.isascii() and country.isalpha() else None
    return event


def read_batch(document: Any, now: dt.datetime) -> Batch:
    """The checked batch of a parsed body; InvalidBatch names the first thing wrong (nothing is partly read)."""
    if not isinstance(document, dict):
        raise InvalidBatch("the body is not a JSON object")
    key = document.get("key")
    if not isinstance(key, str) or not TOKEN.match(key):
        raise InvalidBatch("key is missing or malformed")
    customer = _object(document, "customer", "batch")
    customer_id = _id(customer, "id", "customer") if customer else None
    events = document.get("events")
    if not isinstance(events, list) or not events:
        raise InvalidBatch("events must be a non-empty list")
    if len(events) > defaults.PIXEL_MAX_EVENTS:
        raise InvalidBatch(f"a batch holds at most {defaults.PIXEL_MAX_EVENTS} events")
    read = [read_event(raw, f"events[{index}]", now) for index, raw in enumerate(events)]
    # The same event twice in one batch is one event (the first): a single INSERT cannot hold both.
    unique: dict[str, Event] = {}
    for event in read:
        unique.setdefault(event.event_id, event)
    return Batch(key=key, customer_id=customer_id, events=list(unique.values()))
