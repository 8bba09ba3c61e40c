"""The demo store seeder: same arguments give the same rows, and the rows agree with each other and the contract."""
from __future__ import annotations

import datetime as dt
import hashlib
from graphlib import TopologicalSorter
import json
import re
from collections import Counter, defaultdict
from decimal import Decimal
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from sqlalchemy import func, select, text

from kinnekt import demo
from kinnekt.db import Base
from kinnekt.models import (
    Attribution, Campaign, CampaignSegment, Checkout, Click, Collection, CollectionProduct, Customer, Link, Message,
    Order, OutboxMessage, Product, ProductVariant, Segment, SegmentCount, SegmentEvent, SegmentMember, Shop, Subscriber,
    SubscriberProperty, SubscriptionEvent,
)
from kinnekt.models.subscriber import SOURCES, STATUSES
from kinnekt.subscribers import phones as phone_numbers

NOW = dt.datetime(2026, 11, 22, 17, 30, 12, 250000, tzinfo=dt.timezone.utc)
PAST_NOW = dt.datetime(2025, 3, 9, 16, 45, tzinfo=dt.timezone.utc)  # far from the wall clock; US DST starts
DOMAIN = "kinnekt-demo.myshopify.com"
SMALL = 300


def _plain(value):
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return repr(value)


SOFT_KEYS = {"segment_events": {"segment_id": "segments", "subscriber_id": "subscribers"}}
"""Ids of other rows held without a foreign key (the log outlives what it names)."""


def _trigger_key(row, value, keys):
    kind, _, ident = value.partition(":")
    return f"{kind}:{keys['subscription_events'][int(ident)]}" if kind == "subscribed" else value


EMBEDDED_KEYS = {
    ("flow_runs", "trigger_key"): _trigger_key,  # "subscribed:<subscription event id>"
    ("messages", "occurrence"): lambda row, value, keys: keys["flow_runs"][value] if row["kind"] == "flow" else value,
}
"""Ids of other rows inside values: a welcome run's key names its subscription event, a flow's message its run."""

EMBEDDED_AFTER = {"flow_runs": ("subscription_events",), "messages": ("flow_runs",)}
"""The tables those ids point into, hashed first."""


def _fingerprint(session, shop_id: int) -> str:
    """A hash of every row the shop owns; surrogate ids are replaced by the content of the row they point at."""
    keys: dict[str, dict[int, str]] = {}
    digest = hashlib.sha256()
    # Referenced tables come first (ids held in values too: EMBEDDED_KEYS); tables with soft keys after every table.
    graph = {table: {fk.column.table for fk in table.foreign_keys if fk.column.table is not table}
             | {Base.metadata.tables[name] for name in EMBEDDED_AFTER.get(table.name, ())}
             for table in Base.metadata.sorted_tables}
    tables = sorted(TopologicalSorter(graph).static_order(), key=lambda table: table.name in SOFT_KEYS)
    for table in tables:
        if table.name == "shops":
            query = select(table).where(table.c.id == shop_id)
        elif "shop_id" in table.c:
            query = select(table).where(table.c.shop_id == shop_id)
        else:
            continue
        # Keys to a row's id; shop_id always means the shop (messages key it together with their campaign).
        targets = {fk.parent.name: fk.column.table.name for fk in table.foreign_keys if fk.column.name == "id"}
        targets.update(SOFT_KEYS.get(table.name, {}))
        if "shop_id" in table.c:
            targets["shop_id"] = "shops"
        keys[table.name] = {}
        lines = []
        for row in session.execute(query).mappings():
            items = []
            for column in table.c:
                value = row[column.name]
                if column.name == "id":
                    continue
                if column.name in targets and value is not None:
                    value = keys[targets[column.name]][value]
                elif (table.name, column.name) in EMBEDDED_KEYS and value is not None:
                    value = EMBEDDED_KEYS[(table.name, column.name)](row, value, keys)
                items.append(f"{column.name}={_plain(value)}")
            line = "|".join(items)
            keys[table.name][row["id"]] = hashlib.sha256(line.encode()).hexdigest()
            lines.append(line)
        digest.update(table.name.encode() + b"\n" + "\n".join(sorted(lines)).encode() + b"\n")
    return digest.hexdigest()


def _tenant_rows(session, shop_id: int) -> dict[str, int]:
    counts = {}
    for table in Base.metadata.sorted_tables:
        if "shop_id" in table.c:
            counts[table.name] = session.execute(
                select(func.count()).select_from(table).where(table.c.shop_id == shop_id)).scalar()
    return counts


def _all(session, model, shop_id):
    return session.execute(select(model).where(model.shop_id == shop_id)).unique().scalars().all()


def _valid_e164(phone: str) -> bool:
    number = phonenumbers.parse(phone)
    return (phonenumbers.is_valid_number(number)
            and phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == phone)


def test_same_arguments_give_the_same_rows(db):
    shop = demo.seed(db, now=NOW, customers=SMALL)
    first = _fingerprint(db, shop.id)
    assert demo.is_seeded(db, DOMAIN)

    assert demo.clear(db, DOMAIN) is True
    assert not demo.is_seeded(db, DOMAIN)
    assert set(_tenant_rows(db, shop.id).values()) == {0}
    assert demo.clear(db, DOMAIN) is False

    again = demo.seed(db, now=NOW, customers=SMALL)
    assert _fingerprint(db, again.id) == first

    demo.clear(db, DOMAIN)
    other = demo.seed(db, now=NOW, customers=SMALL, seed=7)
    assert _fingerprint(db, other.id) != first


def test_seeding_leaves_the_planner_statistics_of_the_new_rows(db):
    from tests.test_db_statistics import analyzed_since, forget_statistics
    mark = forget_statistics(db)
    demo.seed(db, now=NOW, customers=60)
    assert all(analyzed_since(db, table, mark)
               for table in ("subscribers", "customers", "orders", "line_items", "messages", "segment_members"))


def test_seeding_twice_is_refused_and_needs_an_aware_now(db):
    demo.seed(db, now=NOW, customers=20)
    with pytest.raises(ValueError):
        demo.seed(db, now=NOW, customers=20)
    with pytest.raises(ValueError):
        demo.seed(db, domain="other-demo.myshopify.com", now=NOW.replace(tzinfo=None), customers=20)


def test_deleting_the_shop_cascades_to_every_row(db):
    shop = demo.seed(db, now=NOW, customers=60)
    if db.get_bind().dialect.name == "sqlite":
        assert db.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.execute(Shop.__table__.delete().where(Shop.__table__.c.id == shop.id))
    db.commit()
    assert set(_tenant_rows(db, shop.id).values()) == {0}


def test_nothing_comes_from_the_wall_clock(db):
    shop = demo.seed(db, now=PAST_NOW, customers=SMALL)
    scheduled = db.execute(select(Campaign.id).where(Campaign.shop_id == shop.id,
                                                     Campaign.status == "scheduled")).scalar_one()
    late = []
    for table in Base.metadata.sorted_tables:
        if "shop_id" not in table.c and table.name != "shops":
            continue
        where = table.c.id == shop.id if table.name == "shops" else table.c.shop_id == shop.id
        for row in db.execute(select(table).where(where)).mappings():
            for column, value in row.items():
                if isinstance(value, dt.datetime) and value > PAST_NOW:
                    # A scheduled send, expected next orders (last order + median interval), the next step of a
                    # flow's waiting run and the end of the plan's billing period lie ahead.
                    if not (table.name == "campaigns" and row["id"] == scheduled and column == "send_at") \
                            and not (table.name == "customers" and column == "expected_next_order_at") \
                            and not (table.name == "flow_runs" and column == "due_at" and row["state"] == "active") \
                            and not (table.name == "billing_plans" and column == "period_ends_at"):
                        late.append((table.name, column, value))
    assert late == []


def test_customer_facts_follow_the_counted_orders(db):
    shop = demo.seed(db, now=NOW, customers=SMALL)
    orders = _all(db, Order, shop.id)
    by_customer = defaultdict(list)
    for order in orders:
        if order.customer_id is not None:
            by_customer[order.customer_id].append(order)
    customers = _all(db, Customer, shop.id)
    assert len(customers) == SMALL
    for customer in customers:
        counted = [o for o in by_customer[customer.id] if not o.test and o.cancelled_at is None]
        spent = sum((o.current_total_price if o.current_total_price is not None else o.total_price
                     for o in counted), Decimal(0))
        assert customer.money_spent == spent
        assert customer.total_discounts == sum((o.total_discounts for o in counted), Decimal(0))
        assert customer.orders_count == len(counted)
        assert customer.first_order_at == min((o.created_at for o in counted), default=None)
        assert customer.last_order_at == max((o.created_at for o in counted), default=None)
    # The data exercises every exclusion and fallback in "Which orders count".
    assert any(o.test and o.customer_id for o in orders)
    assert any(o.cancelled_at and o.customer_id for o in orders)
    assert any(o.current_total_price is None for o in orders)
    assert any(o.current_total_price is not None and o.current_total_price < o.total_price for o in orders)
    assert sum(1 for c in customers if c.orders_count == 0) > 0
    assert max(c.orders_count for c in customers) >= 6  # a long tail
    assert 1.2 < len(orders) / SMALL < 2.0
    statuses = Counter(o.financial_status for o in orders)
    assert statuses.most_common(1)[0][0] == "paid"
    assert {"refunded", "partially_refunded", "pending", "authorized", "voided"} <= set(statuses)
    assert {o.fulfillment_status for o in orders} == {"fulfilled", "unfulfilled", "partially_fulfilled"}


def test_orders_and_catalog_look_like_shopify(db):
    shop = demo.seed(db, now=NOW, customers=SMALL)
    products = {p.shopify_id: p for p in _all(db, Product, shop.id)}
    collections = _all(db, Collection, shop.id)
    assert 35 <= len(products) <= 45 and 6 <= len(collections) <= 10
    for shopify_id in list(products) + [c.shopify_id for c in collections]:
        assert len(str(shopify_id)) == 13
    memberships = Counter(cp.product_id for cp in _all(db, CollectionProduct, shop.id))
    assert set(memberships) == set(products) and set(memberships.values()) <= {1, 2, 3}
    assert len({p.handle for p in products.values()}) == len(products)
    # Every product has its variants (the picker lists them), and every order line names one of them.
    variants = {v.shopify_id: v for v in _all(db, ProductVariant, shop.id)}
    by_row = {p.id: p for p in products.values()}
    assert {v.product_id for v in variants.values()} == set(by_row)
    assert all(v.title and v.sku.startswith("NW-") and v.price > 0 for v in variants.values())
    assert len({v.sku for v in variants.values()}) == len(variants)
    assert any(sum(v.product_id == p for v in variants.values()) >= 3 for p in by_row)

    orders = _all(db, Order, shop.id)
    assert all(len(str(o.shopify_id)) == 13 for o in orders)
    names = [o.name for o in sorted(orders, key=lambda o: (o.created_at, o.shopify_id))]
    assert names == [f"#{n}" for n in range(1001, 1001 + len(orders))]
    for order in orders:
        lines = order.line_items
        assert 1 <= len(lines) <= 4
        assert all(line.product_id in products for line in lines)
        assert all(by_row[variants[line.variant_id].product_id].shopify_id == line.product_id for line in lines)
        subtotal = sum(line.price * line.quantity for line in lines)
        assert order.total_price > 0 and order.total_discounts <= subtotal + Decimal("25.00")
        for code in order.discount_codes:
            assert set(code) == {"code", "amount", "type"} and Decimal(code["amount"]) == order.total_discounts
    assert any(o.discount_codes for o in orders)
    assert all(o.created_at <= NOW for o in orders)

    checkouts = _all(db, Checkout, shop.id)
    abandoned = [c for c in checkouts if c.completed_at is None]
    assert abandoned and all(NOW - dt.timedelta(days=60) <= c.started_at <= NOW for c in abandoned)


def test_every_phone_is_valid_e164(db):
    shop = demo.seed(db, now=NOW, customers=SMALL)
    assert _valid_e164(shop.sender)
    phones = [c.phone for c in _all(db, Customer, shop.id) if c.phone]
    phones += [s.phone for s in _all(db, Subscriber, shop.id)]
    phones += [o.phone for o in _all(db, Order, shop.id) if o.phone]
    phones += [c.phone for c in _all(db, Checkout, shop.id) if c.phone]
    phones += [m.to_phone for m in _all(db, Message, shop.id)]
    phones += [m.to_phone for m in _all(db, OutboxMessage, shop.id)]
    bad = [p for p in phones if not _valid_e164(p)]
    assert bad == []
    countries = {phonenumbers.region_code_for_number(phonenumbers.parse(p)) for p in phones}
    assert {"US", "CA", "GB", "DE", "AU"} <= countries


def test_subscribers_sources_statuses_and_number_facts(db):
    shop = demo.seed(db, now=NOW, customers=SMALL)
    subscribers = _all(db, Subscriber, shop.id)
    customers = {c.id: c for c in _all(db, Customer, shop.id)}
    assert {s.source for s in subscribers} == set(SOURCES)
    assert {s.status for s in subscribers} == set(STATUSES)
    assert sum(1 for s in subscribers if s.customer_id) == round(SMALL * 0.45)
    events = defaultdict(list)
    for event in _all(db, SubscriptionEvent, shop.id):
        events[event.subscriber_id].append(event.kind)
    for sub in subscribers:
        facts = phone_numbers.normalise(sub.phone, prefer_zone=shop.timezone)  # what the app records for a number
        assert sub.phone == facts.e164 and sub.country == facts.country and sub.carrier == facts.carrier
        assert sub.timezone == facts.timezone and sub.timezone is not None
        assert sub.consent_at is not None and sub.consent_text
        if sub.customer_id:
            assert customers[sub.customer_id].phone == sub.phone
            assert sub.first_name == customers[sub.customer_id].first_name
        if sub.source == "keyword":
            assert sub.keyword in {"JOIN", "VIP", "SUMMER"} and sub.keyword_id and sub.consent_message_id
        else:
            assert sub.keyword is None and sub.keyword_id is None
        if sub.source == "mobile_popup":
            assert sub.consent_ip
        if sub.status == "pending":
            assert sub.subscribed_at is None and events[sub.id] == ["pending"]
        else:
            assert sub.consent_at <= sub.subscribed_at <= NOW
            assert "subscribed" in events[sub.id]
        if sub.status == "unsubscribed":
            assert sub.subscribed_at < sub.unsubscribed_at <= NOW and sub.unsubscribe_reason
            assert "unsubscribed" in events[sub.id]
        assert ("suppressed" in events[sub.id]) == (sub.suppressed_at is not None)


def test_auto_segments_hold_the_marketable_subscribers_of_their_source(db):
    shop = demo.seed(db, now=NOW, customers=SMALL)
    subscribers = _all(db, Subscriber, shop.id)
    marketable = [s for s in subscribers if s.status == "subscribed" and s.suppressed_at is None]
    members = defaultdict(set)
    for member in _all(db, SegmentMember, shop.id):
        members[member.segment_id].add(member.subscriber_id)
    segments = _all(db, Segment, shop.id)
    auto = [s for s in segments if s.kind == "auto"]
    assert {s.auto_source for s in auto} == {"all", "keyword", "mobile_popup", "shareable_link", "checkout"}
    assert sum(1 for s in auto if s.auto_source == "keyword") == 3
    for segment in auto:
        rule = segment.definition["rules"][0]
        assert segment.definition["match"] == "all" and len(segment.definition["rules"]) == 1
        if segment.auto_source == "keyword":
            assert rule["field"] == "keyword" and segment.keyword_id
            expected = {s.id for s in marketable if s.source == "keyword" and s.keyword == rule["value"]}
        else:
            assert rule == {"field": "subscription_source", "op": "eq", "value": segment.auto_source}
            expected = {s.id for s in marketable if segment.auto_source in ("all", s.source)}
        assert segment.member_count == len(expected)
        assert members[segment.id] == expected
        if segment.auto_source == "all":
            assert len(expected) > SMALL * 0.3
        assert segment.build_status == "done" and segment.last_built_at == NOW
    manual = [s for s in segments if s.kind == "manual"]
    assert len(manual) == len(demo.MANUAL_SEGMENTS) == 3
    assert all(s.build_status == "pending" and s.member_count == 0 and not members[s.id] for s in manual)


def test_auto_segments_logs_and_daily_counts_replay_to_their_members(db):
    """The seeded enter/leave log of each automatic segment, replayed in id order, ends with its members; each
    daily count is the replay's count at the end of that local day; manual segments (not built yet) have none."""
    shop = demo.seed(db, now=NOW, customers=SMALL)
    zone = ZoneInfo(shop.timezone or "UTC")
    members = defaultdict(set)
    for member in _all(db, SegmentMember, shop.id):
        members[member.segment_id].add(member.subscriber_id)
    events = defaultdict(list)
    for event in sorted(_all(db, SegmentEvent, shop.id), key=lambda e: e.id):
        events[event.segment_id].append(event)
    counts = defaultdict(dict)
    for row in _all(db, SegmentCount, shop.id):
        counts[row.segment_id][row.day] = row.member_count
    for segment in _all(db, Segment, shop.id):
        if segment.kind == "manual":
            assert not events[segment.id] and not counts[segment.id]
            continue
        inside, at_end_of = set(), {}
        times = [e.at for e in events[segment.id]]
        assert times == sorted(times) and all(segment.created_at <= t <= NOW for t in times)
        for event in events[segment.id]:
            assert event.cause in ("build", "recheck") and event.kind in ("enter", "leave")
            if event.kind == "enter":
                assert event.subscriber_id not in inside
                inside.add(event.subscriber_id)
            else:
                inside.remove(event.subscriber_id)
            at_end_of[event.at.astimezone(zone).date()] = len(inside)
        assert inside == members[segment.id]
        assert {day: n for day, n in counts[segment.id].items() if day in at_end_of} == at_end_of
        assert counts[segment.id][max(counts[segment.id])] == segment.member_count
    assert sum(1 for e in _all(db, SegmentEvent, shop.id) if e.kind == "leave") > 0


def test_campaigns_messages_links_clicks_and_facts_agree(db):
    shop = demo.seed(db, now=NOW, customers=SMALL)
    campaigns = {c.id: c for c in _all(db, Campaign, shop.id)}
    statuses = Counter(c.status for c in campaigns.values())
    assert statuses["draft"] == 1 and statuses["scheduled"] == 1 and 4 <= statuses["completed"] <= 6
    scheduled = next(c for c in campaigns.values() if c.status == "scheduled")
    assert scheduled.send_at > NOW
    assert all(cs.campaign_id in campaigns for cs in _all(db, CampaignSegment, shop.id))

    subscribers = {s.id: s for s in _all(db, Subscriber, shop.id)}
    every_message = _all(db, Message, shop.id)  # the campaigns' and the flows' (test_the_demo_flows_… for those)
    messages = [m for m in every_message if m.kind == "campaign"]
    pairs = Counter((m.campaign_id, m.subscriber_id) for m in messages)
    assert pairs and max(pairs.values()) == 1
    for message in messages:
        campaign, sub = campaigns[message.campaign_id], subscribers[message.subscriber_id]
        assert campaign.status == "completed" and message.to_phone == sub.phone
        assert sub.subscribed_at <= campaign.started_at <= message.sent_at <= campaign.finished_at
        assert sub.unsubscribed_at is None or sub.unsubscribed_at > campaign.started_at
        assert message.status in ("delivered", "failed", "sent")
        assert (message.status == "failed") == (message.error_code is not None)
    assert Counter(m.status for m in messages).most_common(1)[0][0] == "delivered"

    links = {link.id: link for link in _all(db, Link, shop.id)}
    assert len([link for link in links.values() if campaigns[link.campaign_id].kind == "campaign"]) == len(messages)
    assert all(re.fullmatch(r"[A-Za-z0-9]{8}", link.code) for link in links.values())
    clicks = _all(db, Click, shop.id)
    for click in clicks:
        link = links[click.link_id]  # a link of the same shop
        assert (click.campaign_id, click.subscriber_id) == (link.campaign_id, link.subscriber_id)
    clickers = {c.subscriber_id for c in clicks}
    assert 0.05 < len(clickers) / len(messages) < 0.2

    accepted = defaultdict(list)
    for message in every_message:
        if message.provider_id:
            accepted[message.subscriber_id].append(message.sent_at)
    clicked = defaultdict(list)
    for click in clicks:
        clicked[click.subscriber_id].append(click.at)
    for sub in subscribers.values():
        assert sub.sent_count == len(accepted[sub.id])
        assert sub.last_received_at == max(accepted[sub.id], default=None)
        assert sub.clicks_count == len(clicked[sub.id])
        assert sub.last_clicked_at == max(clicked[sub.id], default=None)

    orders = {o.id: o for o in _all(db, Order, shop.id)}
    attributions = _all(db, Attribution, shop.id)
    assert attributions and {a.method for a in attributions} <= {"click", "discount_code"}
    for attribution in attributions:
        order = orders[attribution.order_id]
        assert not order.test and order.cancelled_at is None and attribution.revenue == order.revenue
        if attribution.method == "click":
            assert any(c.subscriber_id == attribution.subscriber_id and c.campaign_id == attribution.campaign_id
                       and dt.timedelta(0) <= order.created_at - c.at <= dt.timedelta(days=5) for c in clicks)
        else:
            codes = {d["code"] for d in order.discount_codes}
            assert campaigns[attribution.campaign_id].discount_code in codes
    assert _all(db, OutboxMessage, shop.id)


def test_seeded_attributions_are_what_the_attribution_engine_computes(db):
    from kinnekt.campaigns import attribution
    shop = demo.seed(db, now=NOW, customers=SMALL)
    seeded = {(a.order_id, a.campaign_id, a.method) for a in _all(db, Attribution, shop.id)}
    attribution.recompute(db, shop)
    db.expire_all()
    assert seeded and {(a.order_id, a.campaign_id, a.method) for a in _all(db, Attribution, shop.id)} == seeded


def test_the_shop_itself(db):
    shop = demo.seed(db, now=NOW, customers=20)
    stored = db.execute(select(Shop).where(Shop.domain == DOMAIN)).scalar_one()
    assert stored.is_demo and stored.token_kind == "static" and stored.access_token_enc is None
    assert stored.timezone == "America/New_York" and stored.currency == "USD"
    assert stored.sync_status == "done" and stored.last_synced_at <= NOW and stored.installed
    assert demo.is_seeded(db, DOMAIN) and not demo.is_seeded(db, "nope.myshopify.com")
    assert shop.id == stored.id


def test_seeded_texts_link_under_the_apps_public_url_and_follow_it_when_it_moves(db):
    """Issue 20: the demo's texts pointed at an address where nothing answered."""
    shop = demo.seed(db, now=NOW, customers=SMALL, link_base="http://127.0.0.1:5101/")
    # Every campaign text links; of the flows' texts, the abandoned checkout's (its recovery link).
    bodies = [m.body for m in _all(db, Message, shop.id) if m.kind == "campaign" or "/r/" in m.body]
    assert any(m.kind == "flow" and "/r/" in m.body for m in _all(db, Message, shop.id))
    codes = {link.code for link in _all(db, Link, shop.id)}
    found = [re.search(r"(\S+)/r/([A-Za-z0-9]+)", body) for body in bodies]
    assert all(f and f.group(1) == "http://127.0.0.1:5101" and f.group(2) in codes for f in found)
    db.add(OutboxMessage(shop_id=shop.id, to_phone="+12125550100", text="Sale: http://127.0.0.1:5000/r/Ab12Cd34"))
    db.commit()

    assert demo.rebase_links(db, DOMAIN, "http://127.0.0.1:5201") == 2  # the seed's base and an old send's
    db.expire_all()
    assert all("http://127.0.0.1:5201/r/" in m.body and "5101" not in m.body for m in _all(db, Message, shop.id)
               if m.kind == "campaign" or "/r/" in m.body)
    assert {o.text for o in _all(db, OutboxMessage, shop.id) if "/r/" in o.text} == {
        "Sale: http://127.0.0.1:5201/r/Ab12Cd34"}
    assert demo.rebase_links(db, DOMAIN, "http://127.0.0.1:5201") == 0


def test_seeded_message_prices_come_from_the_one_price_table(db):
    from kinnekt.sms import prices
    shop = demo.seed(db, now=NOW, customers=SMALL)
    subscribers = {s.id: s for s in _all(db, Subscriber, shop.id)}
    for message in _all(db, Message, shop.id):
        assert message.price == prices.price_per_part(subscribers[message.subscriber_id].country) * message.segments


def test_the_demo_customers_have_lifecycle_stages(db):
    from kinnekt.segments import lifecycle
    shop = demo.seed(db, now=NOW, customers=SMALL)
    customers = _all(db, Customer, shop.id)
    assert {c.lifecycle_stage for c in customers if c.orders_count} <= set(lifecycle.STAGES)
    assert all(c.lifecycle_stage is None for c in customers if not c.orders_count)
    assert all(c.lifecycle_changed_at == NOW for c in customers if c.lifecycle_stage)
    assert any(c.expected_next_order_at for c in customers if c.orders_count >= 2)
    shown = lifecycle.distribution(db, shop)
    assert not shown.empty and len([n for n in shown.counts.values() if n]) >= 3  # several stages to look at


def _property_values(db, shop_id: int) -> list[tuple]:
    phones = {s.id: s.phone for s in _all(db, Subscriber, shop_id)}
    return sorted((phones[v.subscriber_id], v.name_key, v.text_value, v.date_value, v.anniversary)
                  for v in _all(db, SubscriberProperty, shop_id))


def test_the_demo_subscribers_have_birthdays_and_languages(db):
    from kinnekt.subscribers import properties
    shop = demo.seed(db, now=NOW, customers=SMALL)
    subscribers = {s.id: s for s in _all(db, Subscriber, shop.id)}
    values = _all(db, SubscriberProperty, shop.id)
    birthdays = [v for v in values if v.name_key == "birthday"]
    languages = [v for v in values if v.name_key == "language"]
    assert len(birthdays) + len(languages) == len(values)
    assert 0.3 < len(birthdays) / len(subscribers) < 0.5 and 0.5 < len(languages) / len(subscribers) < 0.7
    for value in birthdays:
        born = value.date_value
        assert value.text_value is None and value.number_value is None
        assert value.anniversary == born.month * 100 + born.day and 18 <= NOW.year - born.year <= 70
    assert len({v.date_value.month for v in birthdays}) == 12  # spread over the whole year
    for value in languages:
        assert value.date_value is None and value.anniversary is None and value.text_folded == value.text_value
        country = subscribers[value.subscriber_id].country
        assert value.text_value in {"US": ("en", "es"), "CA": ("en", "fr"), "DE": ("de", "en")}.get(country, ("en",))
    spoken = Counter(v.text_value for v in languages)
    assert spoken.most_common(1)[0][0] == "en" and len(spoken) >= 2
    # As the app reads them: typed values of the built-in properties.
    some = birthdays[0].subscriber_id
    assert properties.values(db, shop.id, some)["birthday"] == birthdays[0].date_value


def test_the_demo_property_values_are_the_same_for_the_same_seed(db):
    shop = demo.seed(db, now=NOW, customers=SMALL)
    first = _property_values(db, shop.id)
    assert first
    demo.clear(db, DOMAIN)
    again = demo.seed(db, now=NOW, customers=SMALL)
    assert _property_values(db, again.id) == first
    demo.clear(db, DOMAIN)
    other = demo.seed(db, now=NOW, customers=SMALL, seed=7)
    assert _property_values(db, other.id) != first


@pytest.mark.parametrize("days_later", [0, 1])
def test_the_birthday_segment_has_members_on_the_demo_day_and_the_next(db, days_later):
    """Built on the seeding day (the CLI seeds at midnight UTC: still the day before in New York) or the next,
    "Birthdays in the next 7 days" holds exactly the marketable subscribers whose birthday comes in the shop's
    next 7 local days, and some."""
    from kinnekt.segments import membership
    shop = demo.seed(db, now=NOW, customers=SMALL)
    segment = db.execute(select(Segment).where(Segment.shop_id == shop.id,
                                               Segment.name == "Birthdays in the next 7 days")).scalar_one()
    assert segment.kind == "manual" and segment.definition["rules"][0]["op"] == "anniversary_next_days"
    built_at = NOW + dt.timedelta(days=days_later)
    membership.build(db, segment.id, now=built_at)
    today = built_at.astimezone(ZoneInfo("America/New_York")).date()
    coming = {((today + dt.timedelta(days=d)).month, (today + dt.timedelta(days=d)).day) for d in range(7)}
    marketable = {s.id for s in _all(db, Subscriber, shop.id) if s.status == "subscribed" and s.suppressed_at is None}
    expected = {v.subscriber_id for v in _all(db, SubscriberProperty, shop.id) if v.name_key == "birthday"
                and (v.date_value.month, v.date_value.day) in coming and v.subscriber_id in marketable}
    members = {m.subscriber_id for m in _all(db, SegmentMember, shop.id) if m.segment_id == segment.id}
    assert members == expected and members
    db.refresh(segment)
    assert segment.member_count == len(members) and segment.build_status == "done"


def test_the_demo_store_has_browsing_events_of_subscribers_and_strangers(db):
    from kinnekt.models.storefront import StorefrontBrowser, StorefrontEvent
    shop = demo.seed(db, now=NOW, customers=SMALL)
    events = db.scalars(select(StorefrontEvent).where(StorefrontEvent.shop_id == shop.id)).all()
    browsers = db.scalars(select(StorefrontBrowser).where(StorefrontBrowser.shop_id == shop.id)).all()
    assert shop.pixel_key and shop.web_pixel_id is None
    names = {e.name for e in events}
    assert {"page_viewed", "product_viewed", "collection_viewed", "product_added_to_cart",
            "checkout_started"} <= names
    attributed = [e for e in events if e.subscriber_id is not None]
    assert attributed and len(attributed) < len(events)  # strangers' events are kept unattributed
    tied = {b.client_id: b.subscriber_id for b in browsers}
    assert all(tied[e.client_id] == e.subscriber_id for e in attributed)
    assert {b.source for b in browsers} <= {"customer", "checkout", "link"} and len({b.source for b in browsers}) >= 2
    subscribed = {s.id for s in db.scalars(select(Subscriber).where(Subscriber.shop_id == shop.id,
                                                                    Subscriber.status == "subscribed"))}
    assert set(tied.values()) <= subscribed
    since = NOW - dt.timedelta(days=31)
    assert all(since <= (e.occurred_at if e.occurred_at.tzinfo else e.occurred_at.replace(tzinfo=dt.timezone.utc))
               <= NOW for e in events)
    viewed = [e for e in events if e.name == "product_viewed"]
    assert all(e.product_id and e.variant_id and e.value for e in viewed)
    assert any("kn=" in (e.url or "") for e in events)


def test_the_demo_flows_have_runs_messages_and_figures_as_the_engine_would_leave_them(db):
    """The ready-made Abandoned checkout and Welcome series, on, with runs walked through their steps: each text a
    message of its step's campaign keyed by the run, a waiting run due at its next step, a run that left early
    with its reason; the flow's page figures add up; the engine, run on the store, sends nothing twice."""
    from kinnekt.flows import engine, stats
    from kinnekt.models import Flow, FlowRun, FlowStep, Message
    shop = demo.seed(db, now=NOW, customers=400)
    flows = {f.builtin: f for f in db.scalars(select(Flow).where(Flow.shop_id == shop.id))}
    assert set(flows) == {"abandoned_checkout", "welcome_series"}
    assert {f.status for f in flows.values()} == {"on"}
    runs = db.scalars(select(FlowRun).where(FlowRun.shop_id == shop.id)).all()
    assert runs and {r.state for r in runs} >= {"active", "completed"}
    for run in runs:
        step = db.get(FlowStep, run.current_step_id)
        assert step.flow_id == run.flow_id and step.version == run.version == 1
        assert (run.state == "active") == (run.due_at is not None) == (run.finished_at is None)
        if run.state == "active":
            assert run.due_at > NOW
        assert run.exit_reason is None or run.state == "exited"
    messages = db.scalars(select(Message).where(Message.shop_id == shop.id, Message.kind == "flow")).all()
    by_run = {r.id: r for r in runs}
    campaigns = {s.campaign_id: s for s in db.scalars(select(FlowStep).where(FlowStep.campaign_id.is_not(None)))}
    for message in messages:
        run = by_run[message.occurrence]
        assert message.subscriber_id == run.subscriber_id and campaigns[message.campaign_id].flow_id == run.flow_id
        assert "{" not in message.body and message.sent_at <= NOW
    checkout = flows["abandoned_checkout"]
    figures = stats.step_figures(db, checkout)
    assert figures.entered == sum(1 for r in runs if r.flow_id == checkout.id)
    assert figures.sent == sum(1 for m in messages if campaigns[m.campaign_id].flow_id == checkout.id
                               and m.status in ("sent", "delivered"))
    assert [s.step.kind for s in figures.steps] == ["wait", "send", "wait", "send"]
    welcome = stats.step_figures(db, flows["welcome_series"])
    assert welcome.entered > 0 and welcome.steps[0].sent > 0
    # The engine on the seeded store (at the seed's time) starts nothing again and sends no text twice.
    sent_before = len(messages)
    assert engine.enter(db, shop.id, now=NOW) == 0
    while engine.advance(db, shop.id, now=NOW).runs:
        pass
    assert db.scalar(select(func.count()).select_from(Message).where(Message.shop_id == shop.id,
                                                                     Message.kind == "flow")) == sent_before
