"""Bench data for segments: one shop of N subscribers with ~3 orders each, line items, messages, clicks, and
profile properties (birthdays, languages).

Rows are made in Python from a seeded RNG, in chunks of customers (so memory does not grow with N),
and written with the fastest bulk path of each database: COPY on PostgreSQL, executemany of plain
INSERTs in one transaction on SQLite. Ids are given explicitly, so no row is read back.
"""
from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import JSON, Boolean
from sqlalchemy.engine import Engine

from kinnekt.db import MONEY_SCALE, Money, UTCDateTime
from kinnekt.casefold import fold
from kinnekt.models import (Campaign, Checkout, Click, CollectionProduct, Customer, CustomerTag, Keyword, LineItem,
                            Link, Message, Order, Product, Shop, StorefrontEvent, Subscriber, SubscriberProperty,
                            SubscriptionEvent)

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 6, 15, 16, 0, tzinfo=UTC)
"""The instant every measurement evaluates at; the data is laid out backwards from it."""
SHOP_TIMEZONE = "America/New_York"
N_PRODUCTS = 300
N_COLLECTIONS = 24
KEYWORDS = ("SALE", "VIP", "JOIN", "DEALS")
CITIES = ("New York", "Brooklyn", "Boston", "Philadelphia", "Chicago", "Austin", "Seattle", "Denver", "Miami",
          "Toronto", "Vancouver", "London", "Manchester", "Sydney", "Melbourne", "Portland", "Atlanta", "Dallas")
COUNTRIES = (("US", 80, "+1", 2_010_000_000, ("Verizon Wireless", "AT&T Wireless", "T-Mobile USA")),
             ("CA", 10, "+1", 4_160_000_000, ("Rogers Wireless", "Bell Mobility", "Telus Mobility")),
             ("GB", 6, "+44", 7_700_000_000, ("EE", "Vodafone", "O2")),
             ("AU", 4, "+61", 410_000_000, ("Telstra", "Optus", "Vodafone")))
ORDERS_PER_CUSTOMER = ((0, 8), (1, 20), (2, 18), (3, 16), (4, 13), (5, 9), (6, 7), (8, 5), (12, 4))
"""(orders, weight): about 3.3 per customer, 3 per subscriber with 90% of subscribers linked."""
FINANCIAL = (("paid", 80), ("pending", 5), ("authorized", 3), ("partially_refunded", 4), ("refunded", 4),
             ("partially_paid", 1), ("voided", 2), ("expired", 1))
FULFILLMENT = (("fulfilled", 75), ("unfulfilled", 20), ("partially_fulfilled", 5))
SOURCES = (("keyword", 30), ("mobile_popup", 35), ("shareable_link", 10), ("checkout", 15), ("import", 7),
           ("manual", 3))
STATUSES = (("subscribed", 88), ("unsubscribed", 7), ("pending", 5))
CAMPAIGN_DAYS_AGO = (60, 25, 5)
LANGUAGES = (("en", 60), ("es", 20), ("fr", 10), ("de", 10))
"""(language, weight) of the ~half of subscribers who gave one; ~60% gave a birthday."""
PRODUCT_WORDS = ("Shirt", "Tee", "Hoodie", "Cap", "Sock", "Mug", "Tote", "Jacket", "Scarf", "Bottle")


def _weighted(rng: random.Random, pairs):
    values, weights = zip(*pairs)
    return lambda: rng.choices(values, weights)[0]


def _money(amount: Decimal) -> int:
    return int(amount * MONEY_SCALE)


@dataclass
class BenchShop:
    """What the measurements need to know about the generated shop."""

    shop_id: int
    subscribers: int
    product_ids: list[int]
    collection_ids: list[int]
    rows: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- writers

class _Writer:
    """Bulk rows into one table at a time; columns the generator leaves out get their model defaults."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.dialect = engine.dialect
        self.raw = engine.raw_connection()
        self.rows: dict[str, int] = {}

    def _completion(self, table, columns: tuple[str, ...]) -> tuple[tuple[str, ...], tuple]:
        """The other columns of the table and the constant each gets (its default, as stored)."""
        names, values = [], []
        for column in table.columns:
            if column.name in columns or column.info.get("folded_from") in columns:
                continue  # given, or a folded copy of a given column (see `write`)
            default = column.default
            if "folded_from" in column.info:
                names.append(column.name)
                values.append(None)  # the copy of a column left out (so None)
                continue
            if default is None:
                if column.server_default is not None:
                    continue
                if not column.nullable:
                    raise RuntimeError(f"bench data gives no value for {table.name}.{column.name}")
                value = None
            elif default.is_scalar:
                value = default.arg
            else:
                value = default.arg(None)
            names.append(column.name)
            values.append(self._stored(column.type, value))
        return tuple(names), tuple(values)

    @staticmethod
    def _stored(type_, value):
        if value is None:
            return None
        if isinstance(type_, Money):
            return _money(Decimal(value))
        if isinstance(type_, UTCDateTime):
            return NOW.replace(tzinfo=None)  # a clock default: the bench's now
        if isinstance(type_, JSON):
            return json.dumps(value)
        return value

    def write(self, model, columns: tuple[str, ...], rows: list[tuple]) -> None:
        if not rows:
            return
        table = model.__table__
        extra_names, extra_values = self._completion(table, columns)
        folded = [(column.name, columns.index(column.info["folded_from"])) for column in table.columns
                  if column.info.get("folded_from") in columns and column.name not in columns]
        names = columns + extra_names + tuple(name for name, _ in folded)
        self._write(table, names, [row + extra_values + tuple(fold(row[i]) for _, i in folded) for row in rows])
        self.rows[table.name] = self.rows.get(table.name, 0) + len(rows)

    def commit(self) -> None:
        self.raw.commit()

    def close(self) -> None:
        self.raw.close()


class PostgresWriter(_Writer):
    """COPY ... FROM STDIN through psycopg."""

    def _write(self, table, names, rows) -> None:
        cursor = self.raw.cursor()
        with cursor.copy(f'COPY "{table.name}" ({", ".join(names)}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)
        cursor.close()


class SqliteWriter(_Writer):
    """executemany of one INSERT; datetimes in SQLAlchemy's own text format so comparisons agree."""

    def _write(self, table, names, rows) -> None:
        kinds = [table.c[name].type for name in names]
        times = [i for i, kind in enumerate(kinds) if isinstance(kind, UTCDateTime)]
        flags = [i for i, kind in enumerate(kinds) if isinstance(kind, Boolean)]
        if times or flags:
            converted = []
            for row in rows:
                row = list(row)
                for i in times:
                    if row[i] is not None:
                        row[i] = row[i].strftime("%Y-%m-%d %H:%M:%S.%f")
                for i in flags:
                    if row[i] is not None:
                        row[i] = int(row[i])
                converted.append(row)
            rows = converted
        marks = ", ".join("?" for _ in names)
        cursor = self.raw.cursor()
        cursor.executemany(f'INSERT INTO "{table.name}" ({", ".join(names)}) VALUES ({marks})', rows)
        cursor.close()


def writer_for(engine: Engine) -> _Writer:
    """The bulk writer of the engine's database."""
    return PostgresWriter(engine) if engine.dialect.name == "postgresql" else SqliteWriter(engine)


# ---------------------------------------------------------------------------------------------- the shop

def generate(engine: Engine, n_subscribers: int, *, seed: int = 7, chunk: int = 20_000, progress=None) -> BenchShop:
    """Write the bench shop into the (empty, migrated) database and return what the measurements need."""
    rng = random.Random(seed)
    out = writer_for(engine)
    naive_now = NOW.replace(tzinfo=None)
    shop_id = 1
    out.write(Shop, ("id", "domain", "name", "timezone", "currency", "installed_at", "created_at", "updated_at"),
              [(shop_id, "bench.myshopify.com", "Bench", SHOP_TIMEZONE, "USD", naive_now, naive_now, naive_now)])

    # Catalog: products with prices, collections of 12-25 products each.
    prices, titles = {}, {}
    product_rows = []
    for p in range(1, N_PRODUCTS + 1):
        shopify_id = 8_000_000_000 + p
        prices[shopify_id] = Decimal(rng.choice((12, 18, 24, 29, 35, 48, 65, 89, 120, 160))) - Decimal("0.01")
        titles[shopify_id] = f"{rng.choice(PRODUCT_WORDS)} {p}"
        product_rows.append((p, shop_id, shopify_id, titles[shopify_id], f"product-{p}", "active",
                             naive_now, naive_now))
    out.write(Product, ("id", "shop_id", "shopify_id", "title", "handle", "status", "created_at", "updated_at"),
              product_rows)
    product_ids = list(prices)
    collection_ids = [9_000_000_000 + c for c in range(1, N_COLLECTIONS + 1)]
    links = []
    for collection in collection_ids:
        for product in rng.sample(product_ids, rng.randint(12, 25)):
            links.append((len(links) + 1, shop_id, collection, product))
    out.write(CollectionProduct, ("id", "shop_id", "collection_id", "product_id"), links)
    out.write(Keyword, ("id", "shop_id", "word", "reply_text", "active", "created_at", "updated_at"),
              [(i, shop_id, word, "Thanks!", True, naive_now, naive_now) for i, word in enumerate(KEYWORDS, 1)])
    campaign_times = [naive_now - dt.timedelta(days=d) for d in CAMPAIGN_DAYS_AGO]
    out.write(Campaign, ("id", "shop_id", "name", "body", "status", "created_at", "updated_at"),
              [(i, shop_id, f"Campaign {i}", "Hello", "completed", t, t) for i, t in enumerate(campaign_times, 1)])
    out.commit()

    # Heavy-tailed product popularity, as in real shops.
    popularity = [1.0 / (rank + 1) ** 0.8 for rank in range(len(product_ids))]
    n_orders = _weighted(rng, ORDERS_PER_CUSTOMER)
    financial = _weighted(rng, FINANCIAL)
    fulfillment = _weighted(rng, FULFILLMENT)
    source_of = _weighted(rng, SOURCES)
    status_of = _weighted(rng, STATUSES)
    country_of = _weighted(rng, [(c, w) for c, w, *_ in COUNTRIES])
    country_info = {c: (prefix, base, carriers) for c, _w, prefix, base, carriers in COUNTRIES}
    n_customers = round(n_subscribers * 0.9)
    language_of = _weighted(random.Random(seed + 1), LANGUAGES)
    profile_rng = random.Random(seed + 2)  # its own generators: the other rows stay as they were before properties
    browse_rng = random.Random(seed + 3)  # and storefront events (issue 23) theirs
    ids = {"order": 0, "line": 0, "tag": 0, "checkout": 0, "message": 0, "click": 0, "event": 0,
           "property": 0, "storefront": 0}

    for first in range(1, n_subscribers + 1, chunk):
        last = min(first + chunk - 1, n_subscribers)
        customers, tags, orders, lines, checkouts = [], [], [], [], []
        subscribers, events, messages, link_rows, clicks, profile = [], [], [], [], [], []
        storefront = []
        for s in range(first, last + 1):
            # A third of subscribers browsed the store in the last 30 days: a few visits of a few page views, some
            # product and collection views, now and then an add to cart and a checkout.
            if browse_rng.random() < 0.33:
                for _ in range(browse_rng.randint(1, 4)):
                    visit = naive_now - dt.timedelta(minutes=browse_rng.uniform(0, 30 * 24 * 60))
                    product = browse_rng.choices(product_ids, popularity)[0]
                    steps = [("page_viewed", None, None)] * browse_rng.randint(1, 4)
                    steps += [("collection_viewed", None, browse_rng.choice(collection_ids)),
                              ("product_viewed", product, None)]
                    if browse_rng.random() < 0.3:
                        steps.append(("product_added_to_cart", product, None))
                        if browse_rng.random() < 0.4:
                            steps.append(("checkout_started", None, None))
                    for step, (name, product_id, collection_id) in enumerate(steps):
                        ids["storefront"] += 1
                        at = visit + dt.timedelta(seconds=20 * step)
                        storefront.append((ids["storefront"], shop_id, f"ev{ids['storefront']}", name, at, at,
                                           f"browser{s}", s, product_id, collection_id))
            if profile_rng.random() < 0.6:
                born = dt.date(1950, 1, 1) + dt.timedelta(days=profile_rng.randrange(21_000))
                ids["property"] += 1
                profile.append((ids["property"], shop_id, s, "birthday", None, born.isoformat(),
                                born.month * 100 + born.day))
            if profile_rng.random() < 0.5:
                ids["property"] += 1
                profile.append((ids["property"], shop_id, s, "language", language_of(), None, None))
            country = country_of()
            prefix, base, carriers = country_info[country]
            phone = f"{prefix}{base + s}"
            customer_id = s if s <= n_customers else None
            if customer_id is not None:
                created = naive_now - dt.timedelta(days=rng.uniform(1, 900))
                spent = discounts = Decimal(0)
                count = 0
                first_at = last_at = None
                times = sorted(naive_now - dt.timedelta(seconds=rng.uniform(0, (naive_now - created).total_seconds()))
                               for _ in range(n_orders()))
                for at in times:
                    ids["order"] += 1
                    order_id = ids["order"]
                    test = rng.random() < 0.01
                    cancelled = at + dt.timedelta(days=1) if rng.random() < 0.03 else None
                    total = Decimal(0)
                    for product in rng.choices(product_ids, popularity, k=rng.randint(1, 3)):
                        ids["line"] += 1
                        quantity = rng.choice((1, 1, 1, 2, 3))
                        total += prices[product] * quantity
                        lines.append((ids["line"], shop_id, order_id, 70_000_000_000 + ids["line"], product,
                                      product * 10 + rng.randint(1, 4), titles[product],
                                      rng.choice(("S", "M", "L", None)), quantity, _money(prices[product]),
                                      customer_id, not test and cancelled is None))
                    discount = (total * Decimal("0.1")).quantize(Decimal("0.01")) if rng.random() < 0.2 else Decimal(0)
                    status = financial()
                    current = Decimal(0) if status == "refunded" else total - discount
                    orders.append((order_id, shop_id, 50_000_000_000 + order_id, customer_id, f"#{1000 + order_id}",
                                   at, at, cancelled, test, status, fulfillment(), "USD", _money(total),
                                   _money(current), _money(discount), "[]"))
                    if not test and cancelled is None:
                        spent += current
                        discounts += discount
                        count += 1
                        first_at = first_at or at
                        last_at = at
                customers.append((customer_id, shop_id, 60_000_000_000 + customer_id, f"c{customer_id}@example.com",
                                  phone, f"First{customer_id}", f"Last{customer_id}", rng.choice(CITIES), country,
                                  created, _money(spent), _money(discounts), count, first_at, last_at, created,
                                  naive_now))
                for tag, chance in (("vip", 0.9 if spent > 1000 else 0.03), ("newsletter", 0.3), ("wholesale", 0.02)):
                    if rng.random() < chance:
                        ids["tag"] += 1
                        tags.append((ids["tag"], shop_id, customer_id, tag))
                if rng.random() < 0.2:
                    ids["checkout"] += 1
                    started = naive_now - dt.timedelta(hours=rng.uniform(1, 60 * 24))
                    done = started + dt.timedelta(minutes=20) if rng.random() < 0.7 else None
                    checkouts.append((ids["checkout"], shop_id, f"tok{ids['checkout']}", customer_id, started, done,
                                      started, started))

            status = status_of()
            source = source_of()
            keyword = rng.choice(KEYWORDS) if source == "keyword" else None
            subscribed_at = naive_now - dt.timedelta(days=rng.uniform(0, 700))
            sent = clicked = 0
            last_received = last_clicked = None
            if status != "pending":
                ids["event"] += 1
                events.append((ids["event"], shop_id, s, "subscribed", subscribed_at, source))
                for campaign_id, when in enumerate(campaign_times, 1):
                    if when < subscribed_at or rng.random() > 0.9:
                        continue
                    ids["message"] += 1
                    sent_at = when + dt.timedelta(minutes=rng.uniform(0, 90))
                    outcome = rng.choices(("delivered", "sent", "failed"), (85, 5, 10))[0]
                    messages.append((ids["message"], shop_id, campaign_id, s, "campaign", phone, outcome, 1,
                                     sent_at if outcome != "failed" else None, sent_at, sent_at))
                    if outcome == "failed":
                        continue
                    sent += 1
                    last_received = max(last_received or sent_at, sent_at)
                    if rng.random() < 0.15:
                        ids["click"] += 1
                        at = sent_at + dt.timedelta(minutes=rng.uniform(1, 600))
                        link_rows.append((ids["click"], shop_id, f"b{ids['click']}", "https://bench.example/p",
                                          campaign_id, s, ids["message"], sent_at))
                        clicks.append((ids["click"], shop_id, ids["click"], campaign_id, s, at))
                        clicked += 1
                        last_clicked = max(last_clicked or at, at)
            unsubscribed_at = None
            if status == "unsubscribed":
                unsubscribed_at = subscribed_at + dt.timedelta(days=rng.uniform(0, 30))
                ids["event"] += 1
                events.append((ids["event"], shop_id, s, "unsubscribed", unsubscribed_at, None))
            suppressed = naive_now - dt.timedelta(days=3) if status == "subscribed" and rng.random() < 0.01 else None
            subscribers.append((s, shop_id, phone, status, source, KEYWORDS.index(keyword) + 1 if keyword else None,
                                keyword, customer_id, country, rng.choice(carriers),
                                subscribed_at, subscribed_at if status != "pending" else None, unsubscribed_at,
                                suppressed, sent, clicked, last_received, last_clicked, subscribed_at, naive_now))

        out.write(Customer, ("id", "shop_id", "shopify_id", "email", "phone", "first_name", "last_name", "city",
                             "country_code", "shopify_created_at", "money_spent", "total_discounts", "orders_count",
                             "first_order_at", "last_order_at", "created_at", "updated_at"), customers)
        out.write(CustomerTag, ("id", "shop_id", "customer_id", "tag"), tags)
        out.write(Order, ("id", "shop_id", "shopify_id", "customer_id", "name", "created_at", "updated_at",
                          "cancelled_at", "test", "financial_status", "fulfillment_status", "currency",
                          "total_price", "current_total_price", "total_discounts", "discount_codes"), orders)
        out.write(LineItem, ("id", "shop_id", "order_id", "shopify_id", "product_id", "variant_id", "title",
                             "variant_title", "quantity", "price", "customer_id", "counted"), lines)
        out.write(Checkout, ("id", "shop_id", "token", "customer_id", "started_at", "completed_at", "created_at",
                             "updated_at"), checkouts)
        out.write(Subscriber, ("id", "shop_id", "phone", "status", "source", "keyword_id", "keyword", "customer_id",
                               "country", "carrier", "consent_at", "subscribed_at", "unsubscribed_at",
                               "suppressed_at", "sent_count", "clicks_count", "last_received_at", "last_clicked_at",
                               "created_at", "updated_at"), subscribers)
        out.write(SubscriptionEvent, ("id", "shop_id", "subscriber_id", "kind", "at", "source"), events)
        out.write(SubscriberProperty, ("id", "shop_id", "subscriber_id", "name_key", "text_value", "date_value",
                                       "anniversary"), profile)
        out.write(Message, ("id", "shop_id", "campaign_id", "subscriber_id", "kind", "to_phone", "status",
                            "attempts", "sent_at", "created_at", "updated_at"), messages)
        out.write(Link, ("id", "shop_id", "code", "url", "campaign_id", "subscriber_id", "message_id", "created_at"),
                  link_rows)
        out.write(Click, ("id", "shop_id", "link_id", "campaign_id", "subscriber_id", "at"), clicks)
        out.write(StorefrontEvent, ("id", "shop_id", "event_id", "name", "occurred_at", "received_at", "client_id",
                                    "subscriber_id", "product_id", "collection_id"), storefront)
        out.commit()
        if progress:
            progress(last)
    out.close()
    return BenchShop(shop_id=shop_id, subscribers=n_subscribers, product_ids=product_ids,
                     collection_ids=collection_ids, rows=dict(out.rows))
