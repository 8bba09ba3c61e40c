"""Writing the demo store: every row in a few bulk statements, one commit."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from kinnekt.config import Config
from kinnekt.demo.catalog import _sku
from kinnekt.demo.data import SENDER, SHOP_NAME, SHOP_TIMEZONE, STORE_HOST
from kinnekt.models import (
    Attribution, Campaign, CampaignSegment, Checkout, Click, Collection, CollectionProduct, Customer, CustomerTag,
    InboundMessage, Keyword, LineItem, Link, Message, Order, OutboxMessage, Product, ProductVariant, Segment,
    SegmentCount, SegmentEvent, SegmentMember, Shop, Subscriber, SubscriberProperty, SubscriptionEvent,
)
from kinnekt.models.storefront import StorefrontBrowser, StorefrontEvent


def _insert(session, model, rows: list[dict], returning: tuple[str, ...] = ()):
    """Bulk insert one shop's rows (Core executemany) and return `returning` columns of all its rows in the table.

    Refuses rows that leave out a column whose default is a call (a clock), so the data stays deterministic.
    """
    if not rows:
        return []
    table = model.__table__
    keys = rows[0].keys()
    for column in table.c:
        default = column.default
        if column.name not in keys and default is not None and default.is_callable and not column.primary_key \
                and "folded_from" not in column.info:  # a folded copy is computed from its row, not a clock
            raise AssertionError(f"{table.name}.{column.name} must be given explicitly (its default is a call)")
    session.execute(table.insert(), rows)
    if not returning:
        return []
    # Reading the new ids back is much faster on PostgreSQL than executemany with RETURNING.
    query = select(*(table.c[name] for name in returning)).where(table.c.shop_id == rows[0]["shop_id"])
    return session.execute(query.execution_options(all_shops=True)).all()


class _Writer:
    """Writes what _DemoStore built (a part of _DemoStore)."""

    # write

    def write(self, session) -> Shop:
        """Insert everything in a few bulk statements and commit once."""
        t0, installed = self.t0, self.installed_at
        shop = Shop(
            domain=self.domain, name=SHOP_NAME, email=f"hello@{STORE_HOST}", timezone=SHOP_TIMEZONE, currency="USD",
            primary_domain=STORE_HOST, token_kind="static", access_token_enc=None, refresh_token_enc=None,
            scopes=Config.SCOPES, installed_at=installed, is_demo=True, sync_status="done", sync_progress=100,
            last_synced_at=t0 - dt.timedelta(hours=6), sender=SENDER, checkout_collection=True,
            double_opt_in=True, attribution_window_days=5, created_at=installed, updated_at=t0 - dt.timedelta(hours=6),
            pixel_key=self.pixel_key,
        )
        session.add(shop)
        session.flush()
        sid = shop.id

        def clean(obj: dict, **extra) -> dict:
            row = {k: v for k, v in obj.items() if not k.startswith("_")}
            row.update(extra, shop_id=sid)
            return row

        rows = _insert(session, Product, [clean(p) for p in self.products], returning=("id", "shopify_id"))
        product_ids = {shopify_id: id_ for id_, shopify_id in rows}
        _insert(session, ProductVariant, [
            {"shop_id": sid, "product_id": product_ids[p["shopify_id"]], "shopify_id": variant_id,
             "title": label or "Default Title", "sku": _sku(p["handle"], label), "price": price, "position": position,
             "created_at": p["created_at"], "updated_at": p["updated_at"]}
            for p in self.products for position, (variant_id, label, price) in enumerate(p["_variants"], start=1)])
        _insert(session, Collection, [clean(c) for c in self.collections])
        _insert(session, CollectionProduct, [
            {"shop_id": sid, "collection_id": c["shopify_id"], "product_id": p["shopify_id"]}
            for c in self.collections for p in c["_members"]])

        rows = _insert(session, Customer, [clean(c) for c in self.customers], returning=("id", "shopify_id"))
        customer_ids = {shopify_id: id_ for id_, shopify_id in rows}
        for customer in self.customers:
            customer["_id"] = customer_ids[customer["shopify_id"]]
        _insert(session, CustomerTag, [{"shop_id": sid, "customer_id": c["_id"], "tag": tag}
                                       for c in self.customers for tag in sorted(c["_tags"])])

        def cid(customer):
            return customer["_id"] if customer else None

        rows = _insert(session, Order, [clean(o, customer_id=cid(o["_customer"])) for o in self.orders],
                       returning=("id", "shopify_id"))
        order_ids = {shopify_id: id_ for id_, shopify_id in rows}
        for order in self.orders:
            order["_id"] = order_ids[order["shopify_id"]]
        _insert(session, LineItem, [dict(line, shop_id=sid, order_id=o["_id"], customer_id=cid(o["_customer"]),
                                         counted=not o["test"] and o["cancelled_at"] is None)
                                    for o in self.orders for line in o["_lines"]])
        _insert(session, Checkout, [clean(c, customer_id=cid(c["_customer"])) for c in self.checkouts])

        rows = _insert(session, Keyword, [clean(k) for k in self.keywords.values()], returning=("id", "word"))
        for id_, word in rows:
            self.keywords[word]["_id"] = id_

        def kid(word):
            return self.keywords[word]["_id"] if word else None

        rows = _insert(session, Subscriber, [
            clean(s, keyword_id=kid(s["keyword"]), customer_id=cid(s["_customer"]),
                  created_at=s["_consent"], updated_at=self._sub_updated(s)) for s in self.subscribers],
            returning=("id", "phone"))
        sub_ids = {phone: id_ for id_, phone in rows}
        for sub in self.subscribers:
            sub["_id"] = sub_ids[sub["phone"]]
        _insert(session, SubscriptionEvent, self._events(sid))
        _insert(session, SubscriberProperty, [clean(p, subscriber_id=p["_sub"]["_id"]) for p in self.properties])
        _insert(session, InboundMessage, [clean(m, subscriber_id=m["_sub"]["_id"]) for m in self.inbound])

        rows = _insert(session, Segment, [
            clean(s, keyword_id=s["_keyword"]["_id"] if s["_keyword"] else None) for s in self.segments],
            returning=("id", "name"))
        seg_ids = {name: id_ for id_, name in rows}
        for segment in self.segments:
            segment["_id"] = seg_ids[segment["name"]]
        _insert(session, SegmentMember, [{"shop_id": sid, "segment_id": seg["_id"], "subscriber_id": sub["_id"],
                                          "entered_at": entered}
                                         for seg in self.segments for sub, entered in seg["_members"]])
        # In time order across segments, so that the log's ids follow time as a live shop's do.
        _insert(session, SegmentEvent, sorted(
            ({"shop_id": sid, "segment_id": seg["_id"], "subscriber_id": event["_sub"]["_id"], "kind": event["kind"],
              "at": event["at"], "cause": event["cause"]} for seg in self.segments for event in seg["_events"]),
            key=lambda e: (e["at"], e["segment_id"], e["kind"] == "enter", e["subscriber_id"])))
        _insert(session, SegmentCount, [{"shop_id": sid, "segment_id": seg["_id"], **count}
                                        for seg in self.segments for count in seg["_counts"]])

        rows = _insert(session, Campaign, [clean(c) for c in self.campaigns], returning=("id", "name"))
        camp_ids = {name: id_ for id_, name in rows}
        for campaign in self.campaigns:
            campaign["_id"] = camp_ids[campaign["name"]]
        _insert(session, CampaignSegment, [{"shop_id": sid, "campaign_id": c["_id"], "segment_id": seg["_id"],
                                            "mode": mode} for c in self.campaigns for seg, mode in c["_audience"]])
        rows = _insert(session, Message, [
            clean(m, campaign_id=m["_campaign"]["_id"], subscriber_id=m["_sub"]["_id"]) for m in self.messages],
            returning=("id", "provider_id"))
        msg_ids = {provider_id: id_ for id_, provider_id in rows}
        rows = _insert(session, Link, [
            clean(link, campaign_id=link["_message"]["_campaign"]["_id"],
                  subscriber_id=link["_message"]["_sub"]["_id"],
                  message_id=msg_ids[link["_message"]["provider_id"]]) for link in self.links],
            returning=("id", "code"))
        link_ids = {code: id_ for id_, code in rows}
        self.clicks.sort(key=lambda c: (c["at"], c["_link"]["code"]))
        _insert(session, Click, [clean(c, link_id=link_ids[c["_link"]["code"]], campaign_id=c["_campaign"]["_id"],
                                       subscriber_id=c["_sub"]["_id"]) for c in self.clicks])
        _insert(session, Attribution, [
            clean(a, order_id=a["_order"]["_id"], campaign_id=a["_campaign"]["_id"],
                  subscriber_id=a["_sub"]["_id"] if a["_sub"] else None) for a in self.attributions])
        self.write_flows(session, sid)
        _insert(session, OutboxMessage, [clean(m) for m in self.outbox])
        _insert(session, StorefrontEvent, [
            clean(e, subscriber_id=e["_sub"]["_id"] if e["_sub"] else None) for e in self.storefront_events])
        _insert(session, StorefrontBrowser, [clean(b, subscriber_id=b["_sub"]["_id"])
                                             for b in self.storefront_browsers])
        session.commit()
        return shop

    def _sub_updated(self, sub: dict) -> dt.datetime:
        moments = [sub["_consent"], sub["subscribed_at"], sub["unsubscribed_at"], sub["suppressed_at"],
                   sub["last_received_at"], sub["last_clicked_at"]]
        return max(m for m in moments if m is not None)

    def _events(self, sid: int) -> list[dict]:
        """The consent history: pending -> subscribed (double opt-in), unsubscribed, suppressed."""
        events = []
        for sub in self.subscribers:
            source, sub_id = sub["source"], sub["_id"]

            def add(kind, at, detail, event_source=None, sub_id=sub_id):
                events.append({"shop_id": sid, "subscriber_id": sub_id, "kind": kind, "at": at,
                               "source": event_source, "detail": detail})

            if source in ("mobile_popup", "shareable_link"):
                add("pending", sub["consent_at"], "Confirmation text sent (double opt-in)", source)
                if sub["subscribed_at"]:
                    add("subscribed", sub["subscribed_at"], "Replied Y to confirm", source)
            elif source == "keyword":
                add("subscribed", sub["subscribed_at"],
                    f"Texted {sub['keyword']} (message {sub['consent_message_id']})", source)
            elif source == "checkout":
                add("subscribed", sub["subscribed_at"], f"SMS consent at checkout, order {sub['_order']['name']}",
                    source)
            elif source == "import":
                add("subscribed", sub["subscribed_at"], "Imported from sms-subscribers-export.csv", source)
            else:
                add("subscribed", sub["subscribed_at"], "Added by store staff", source)
            if sub["unsubscribed_at"]:
                add("unsubscribed", sub["unsubscribed_at"], sub["unsubscribe_reason"])
            if sub["suppressed_at"]:
                add("suppressed", sub["suppressed_at"], sub["suppressed_reason"])
        events.sort(key=lambda e: (e["at"], e["subscriber_id"], e["kind"]))
        return events
