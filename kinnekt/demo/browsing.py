"""The demo store's storefront events, as the web pixel would have reported them over the last 30 days: visits
of subscribers (tied to them by a signed-in customer, a checkout's phone, or a tracked link) and of shoppers
nobody knows, with product and collection views, searches, carts and started checkouts (a part of _DemoStore)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from kinnekt.demo.data import STORE_URL

SEARCHES = ("rain jacket", "wool socks", "boots", "fleece", "tent", "kids", "gift card", "beanie", "backpack")
DAYS = 30


class _Browsing:
    """Storefront events and identified browsers (a part of _DemoStore)."""

    def build_browsing(self) -> None:
        rng = self.rng("browsing")
        ids = self.unique_rng("browsing-ids")
        self.pixel_key = f"demo{ids.getrandbits(128):032x}"
        self.storefront_events, self.storefront_browsers = [], []
        live = [p for p in self.products if p["status"] == "active" and p["_from"] <= self.t0]
        since = self.t0 - dt.timedelta(days=DAYS)
        subscribed = [s for s in self.subscribers if s.get("status") == "subscribed"]
        visitors = rng.sample(subscribed, min(len(subscribed), max(1, len(subscribed) // 4)))
        people = [(sub, f"{ids.getrandbits(64):016x}-{ids.getrandbits(32):08x}") for sub in visitors]
        strangers = [(None, f"{ids.getrandbits(64):016x}-{ids.getrandbits(32):08x}")
                     for _ in range(max(1, len(visitors) // 2))]
        link_codes: dict[str, str] = {}
        for link in sorted(self.links, key=lambda item: item["code"]):
            link_codes.setdefault(link["_message"]["_sub"]["phone"], link["code"])
        for sub, client_id in people + strangers:
            how = None
            if sub is not None:
                how = "customer" if sub["_customer"] is not None and rng.random() < 0.6 else \
                    "link" if sub["phone"] in link_codes and rng.random() < 0.6 else "checkout"
            visits = rng.choices((1, 2, 3, 5), weights=(5, 3, 2, 1))[0]
            moments = sorted(self.shop_time(rng, since, self.t0 - dt.timedelta(minutes=5)) for _ in range(visits))
            first = moments[0]
            for index, at in enumerate(moments):
                code = link_codes[sub["phone"]] if how == "link" and index == 0 else None
                self._visit(rng, ids, sub, how, client_id, at, live, code)
            if sub is not None:
                self.storefront_browsers.append({"client_id": client_id, "_sub": sub, "source": how,
                                                 "identified_at": first})
        self.storefront_events.sort(key=lambda e: (e["occurred_at"], e["event_id"]))

    def _visit(self, rng, ids, sub, how, client_id, at, live, link_code) -> None:
        """One visit: a landing page (a tracked link's, with its `kn` reference, when `link_code`), collections,
        a search, products viewed, some added to the cart, the cart, a started checkout."""
        customer = sub["_customer"] if sub is not None and how == "customer" else None
        base = STORE_URL

        def add(name, url, **fields):
            nonlocal at
            at = at + dt.timedelta(seconds=rng.randint(5, 140))
            self.storefront_events.append({
                "event_id": f"sh-{ids.getrandbits(128):032x}", "name": name, "occurred_at": at,
                "received_at": at + dt.timedelta(seconds=1), "client_id": client_id, "_sub": sub,
                "customer_id": customer["shopify_id"] if customer else None, "url": url,
                "product_id": None, "variant_id": None, "collection_id": None, "quantity": None, "value": None,
                "currency": None, "checkout_token": None, "search_query": None, **fields})

        landing = f"{base}/"
        if link_code:
            landing = f"{base}/collections/new-arrivals?utm_source=sms&utm_medium=kinnekt&kn={link_code}"
        add("page_viewed", landing)
        if rng.random() < 0.5:
            collection = rng.choice(self.collections)
            add("collection_viewed", f"{base}/collections/{collection['handle']}",
                collection_id=collection["shopify_id"])
        if rng.random() < 0.25:
            query = rng.choice(SEARCHES)
            add("search_submitted", f"{base}/search?q={query.replace(' ', '+')}", search_query=query)
        cart = []
        for _ in range(rng.choices((1, 2, 3, 4), weights=(4, 3, 2, 1))[0]):
            product = rng.choices(live, weights=[p["_weight"] for p in live])[0]
            variant_id, _label, price = rng.choice(product["_variants"])
            url = f"{base}/products/{product['handle']}"
            add("page_viewed", url)
            add("product_viewed", url, product_id=product["shopify_id"], variant_id=variant_id,
                value=Decimal(price), currency="USD")
            if rng.random() < 0.3:
                quantity = rng.choices((1, 2), weights=(5, 1))[0]
                add("product_added_to_cart", url, product_id=product["shopify_id"], variant_id=variant_id,
                    quantity=quantity, value=Decimal(price) * quantity, currency="USD")
                cart.append(Decimal(price) * quantity)
        if cart:
            if rng.random() < 0.6:
                add("cart_viewed", f"{base}/cart", value=sum(cart), currency="USD")
            if rng.random() < 0.45:
                add("checkout_started", f"{base}/checkouts/cn/{ids.getrandbits(64):016x}",
                    checkout_token=f"{ids.getrandbits(128):032x}", value=sum(cart), currency="USD")
