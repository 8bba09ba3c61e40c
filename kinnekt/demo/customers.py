"""The demo's customers and their orders: people with numbers, cities and e-mail addresses, two years of
orders (with the exceptions a real shop has), abandoned checkouts, and the facts segments read."""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import phonenumbers

from kinnekt.demo.data import (
    AU_CITIES, CA_AREAS, COUNTRY_MIX, DE_CITIES, DE_FIRST, DE_LAST, DISCOUNTS, EMAIL_DOMAINS, FIRST_NAMES,
    GB_CITIES, LAST_NAMES, SEASON, TAX_RATES, US_AREAS, ZERO
)
from kinnekt.demo.helpers import _cents, _email_part, _pick, _quota


class _Phones:
    """Valid, unique mobile numbers with a matching city, per country."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def new(self, country: str) -> tuple[str, str]:
        rng = self.rng
        for _ in range(200):
            if country in ("US", "CA"):
                area, city = _pick(rng, [((a, c), w) for a, c, w in (US_AREAS if country == "US" else CA_AREAS)])
                exchange = rng.randint(200, 999)
                if exchange % 100 == 11 or exchange == 555:
                    continue
                digits = f"+1{area}{exchange}{rng.randint(0, 9999):04d}"
            elif country == "GB":
                digits, city = f"+447{rng.choice('45789')}{rng.randint(0, 99_999_999):08d}", _pick(rng, GB_CITIES)
            elif country == "DE":
                prefix = rng.choice(("151", "152", "157", "160", "162", "170", "171", "172", "173", "174", "175",
                                     "176", "177", "178", "179"))
                width = 7 if prefix.startswith(("16", "17")) and rng.random() < 0.5 else 8
                digits, city = f"+49{prefix}{rng.randint(0, 10 ** width - 1):0{width}d}", _pick(rng, DE_CITIES)
            else:
                digits, city = f"+614{rng.randint(0, 99_999_999):08d}", _pick(rng, AU_CITIES)
            if digits in self.used:
                continue
            number = phonenumbers.parse(digits)
            if phonenumbers.is_valid_number(number) and phonenumbers.region_code_for_number(number) == country:
                self.used.add(digits)
                return digits, city
        raise RuntimeError(f"could not make a valid {country} number")  # pragma: no cover


class _Customers:
    """Customers, orders and checkouts of the demo store (a part of _DemoStore)."""

    def build_customers(self) -> None:
        rng = self.rng("customers")
        self.phones = _Phones(self.rng("phones"))
        emails: set[str] = set()
        countries = _quota(rng, self.n_customers, COUNTRY_MIX)
        span = (self.t0 - self.start - dt.timedelta(hours=2)).total_seconds()
        people = []
        for country in countries:
            first = rng.choice(DE_FIRST if country == "DE" else FIRST_NAMES)
            last = rng.choice(DE_LAST if country == "DE" else LAST_NAMES)
            created = self.start + dt.timedelta(seconds=int(span * rng.random() ** 0.8))
            if rng.random() < 0.8:
                phone, city = self.phones.new(country)
            else:
                phone, city = None, self._city(rng, country)
            given, family = _email_part(first), _email_part(last)
            for attempt in range(50):
                local = rng.choice((f"{given}.{family}", f"{given}{family}", f"{given[0]}{family}",
                                    f"{given}.{family}{rng.randint(1, 99)}", f"{given}{family}{rng.randint(70, 99)}",
                                    f"{given}_{family}"))
                if attempt > 5:
                    local += str(rng.randint(100, 9999))
                email = f"{local}@{_pick(rng, EMAIL_DOMAINS[country])}"
                if email not in emails:
                    emails.add(email)
                    break
            if rng.random() < 0.015:
                n_orders = rng.randint(6, 16)  # the loyal few
            elif rng.random() < 0.2:
                n_orders = 0
            else:
                n_orders = 1
                while rng.random() < 0.5 and n_orders < 25:
                    n_orders += 1
            tags = set()
            if rng.random() < 0.35:
                tags.add("newsletter")
            wholesale = rng.random() < 0.015
            if wholesale:
                tags.add("wholesale")
            acquisition = rng.random()
            if acquisition < 0.08:
                tags.add("instagram")
            elif acquisition < 0.13:
                tags.add("referral")
            elif acquisition < 0.17:
                tags.add("tiktok")
            people.append({
                "email": email, "phone": phone, "first_name": first, "last_name": last, "city": city,
                "country_code": country, "shopify_created_at": created,
                "_n_orders": n_orders, "_tags": tags, "_wholesale": wholesale, "_orders": [], "_sub": None,
            })
        people.sort(key=lambda c: (c["shopify_created_at"], c["email"]))
        cid = 6_920_000_000_000 + rng.randrange(10_000_000_000)
        for person in people:
            cid += rng.randint(2_000_000, 60_000_000)
            person["shopify_id"] = cid
        self.customers = people

    def _city(self, rng: random.Random, country: str) -> str:
        if country in ("US", "CA"):
            return _pick(rng, [(c, w) for _, c, w in (US_AREAS if country == "US" else CA_AREAS)])
        return _pick(rng, {"GB": GB_CITIES, "DE": DE_CITIES, "AU": AU_CITIES}[country])

    def build_orders(self) -> None:
        rng = self.rng("orders")
        self.orders = []
        for customer in self.customers:
            n = customer["_n_orders"]
            if not n:
                continue
            created = customer["shopify_created_at"]
            if rng.random() < 0.8:
                first = created + dt.timedelta(minutes=rng.randint(1, 40))
            else:
                first = self.shop_time(rng, created, min(self.t0, created + dt.timedelta(days=60)))
            first = min(first, self.t0 - dt.timedelta(minutes=5))
            # Repeat purchases come after a gap (shorter for the loyal, and in the holiday season); a customer
            # who arrived lately has not had the time for all of them yet.
            mean_gap = 40.0 if n >= 6 else 110.0
            times, at = [first], first
            while len(times) < n:
                season = SEASON[at.astimezone(self.tz).month]
                gap = max(2 * 86_400, int(rng.expovariate(season / mean_gap) * 86_400))
                at += dt.timedelta(seconds=gap)
                if at >= self.t0 - dt.timedelta(hours=1):
                    break
                at = self.shop_time(rng, at, min(self.t0, at + dt.timedelta(days=1)))
                times.append(at)
            for i, at in enumerate(times):
                self.make_order(rng, at, customer, first_order=i == 0)
        guests = round(len(self.orders) * 0.012)
        for _ in range(guests):
            at = self.shop_time(rng, self.start, self.t0, seasonal=True)
            self.make_order(rng, at, None, first_order=True)

    def ensure_order_exceptions(self) -> None:
        """Make sure even a small store has a test order, a cancelled one and one without a current total."""
        rng = self.rng("order-exceptions")
        owned = [o for o in self.orders if o["_customer"] and not o["test"] and o["cancelled_at"] is None]
        if owned and not any(o["test"] for o in self.orders):
            order = rng.choice(owned)
            order.update(test=True, financial_status="paid", current_total_price=order["total_price"])
            owned.remove(order)
        old_enough = [o for o in owned if self.t0 - o["created_at"] > dt.timedelta(hours=3)]
        if old_enough and not any(o["cancelled_at"] for o in self.orders):
            order = rng.choice(old_enough)
            cancelled = self.clamp(order["created_at"] + dt.timedelta(minutes=rng.randint(30, 2400)))
            order.update(cancelled_at=cancelled, financial_status="voided", fulfillment_status="unfulfilled",
                         current_total_price=ZERO, shopify_updated_at=cancelled, updated_at=cancelled)
            owned.remove(order)
        synced_early = [o for o in owned if o["financial_status"] == "paid"
                        and self.t0 - o["created_at"] > dt.timedelta(days=540)]
        if synced_early and not any(o["current_total_price"] is None for o in self.orders):
            rng.choice(synced_early)["current_total_price"] = None

    def make_order(self, rng: random.Random, at: dt.datetime, customer: dict | None, *, first_order: bool,
                   code: str | None = None, landing: str | None = None, campaign_order: bool = False) -> dict:
        """Build one order with line items, money and statuses as Shopify would report them by now."""
        country = customer["country_code"] if customer else "US"
        available = [p for p in self.products if p["_from"] <= at < p["_until"]]
        n_lines = min(rng.choices((1, 2, 3, 4), weights=(60, 27, 10, 3))[0], len(available))
        picked = []
        pool = list(available)
        for _ in range(n_lines):
            product = rng.choices(pool, weights=[p["_weight"] for p in pool])[0]
            pool.remove(product)
            picked.append(product)
        lines = []
        for product in picked:
            variant_id, variant_title, price = rng.choice(product["_variants"])
            if customer and customer["_wholesale"]:
                qty = rng.randint(3, 8)
            else:
                qty = rng.choices((1, 2, 3), weights=(88, 9, 3))[0]
            lines.append({"product_id": product["shopify_id"], "variant_id": variant_id, "title": product["title"],
                          "variant_title": variant_title, "quantity": qty, "price": price})
        subtotal = sum((line["price"] * line["quantity"] for line in lines), ZERO)

        if code is None and not campaign_order:
            summer = at.astimezone(self.tz).month in (6, 7, 8)
            loyal = customer is not None and customer["_n_orders"] >= 5
            roll = rng.random()  # disjoint bands: about one order in five carries a code
            if first_order and roll < 0.25:
                code = "WELCOME10"
            elif summer and roll >= 0.9:
                code = "SUMMER20"
            elif loyal and 0.8 <= roll < 0.9:
                code = "VIP15"
            elif 0.74 <= roll < 0.8:
                code = "TAKE10" if subtotal >= 75 else "FREESHIP"
        kind, value = DISCOUNTS[code] if code else (None, None)
        item_discount = ZERO
        if kind == "percentage":
            item_discount = _cents(subtotal * value / 100)
        elif kind == "fixed_amount":
            item_discount = min(_cents(value), subtotal)
        goods = subtotal - item_discount
        if country == "US":
            shipping = ZERO if goods >= 100 else Decimal("8.00")
        elif country == "CA":
            shipping = ZERO if goods >= 150 else Decimal("15.00")
        else:
            shipping = ZERO if goods >= 200 else Decimal("25.00")
        if code == "FREESHIP" and shipping == ZERO:
            code, kind = None, None  # nothing to waive: the code would not have been entered
        ship_discount = shipping if kind == "shipping" else ZERO
        tax = _cents(goods * TAX_RATES.get(country, ZERO))
        total = goods + shipping - ship_discount + tax
        discounts = item_discount + ship_discount
        discount_codes = [{"code": code, "amount": str(discounts), "type": kind}] if code else []

        age = self.t0 - at
        cancelled_at = None
        test = (not campaign_order) and rng.random() < 0.004
        current = total
        roll = rng.random()
        if not test and not campaign_order and age > dt.timedelta(hours=3) and roll < 0.018:
            cancelled_at = self.clamp(at + dt.timedelta(minutes=rng.randint(30, 2400)))
            financial = "voided" if rng.random() < 0.6 else "refunded"
            fulfillment, current = "unfulfilled", ZERO
        elif test:
            financial, fulfillment = "paid", rng.choice(("fulfilled", "unfulfilled"))
        elif age < dt.timedelta(days=2):
            financial = rng.choices(("paid", "authorized", "pending"), weights=(72, 22, 6))[0]
            fulfilled_share = 0.0 if age < dt.timedelta(hours=20) else 0.45
            fulfillment = "fulfilled" if rng.random() < fulfilled_share else "unfulfilled"
        else:
            recent = age < dt.timedelta(days=7)
            financial = rng.choices(
                ("paid", "partially_refunded", "refunded", "pending", "authorized", "partially_paid", "expired"),
                weights=(90, 2, 1, 2, 5, 0, 0) if recent else (87.8, 4.5, 3.5, 1.3, 1.2, 0.8, 0.9))[0]
            fulfillment = rng.choices(("fulfilled", "partially_fulfilled", "unfulfilled"),
                                      weights=(85, 5, 10) if recent else (95.5, 2, 2.5))[0]
            if financial == "refunded":
                current = ZERO
                fulfillment = "fulfilled" if rng.random() < 0.6 else "unfulfilled"
            elif financial == "partially_refunded":
                if len(lines) > 1:
                    line = rng.choice(lines)
                    share = line["price"] * line["quantity"] / subtotal
                    refund = _cents((goods * share) * (1 + TAX_RATES.get(country, ZERO)))
                else:
                    refund = _cents(total * Decimal(rng.randint(15, 50)) / 100)
                current = max(total - refund, Decimal("0.01"))
        if financial == "paid" and age > dt.timedelta(days=540) and rng.random() < 0.03:
            current = None  # old orders synced before Shopify reported a current total

        if cancelled_at:
            updated = cancelled_at
        elif financial in ("refunded", "partially_refunded"):
            updated = at + dt.timedelta(days=rng.randint(5, 30), minutes=rng.randint(0, 600))
        elif fulfillment == "fulfilled":
            updated = at + dt.timedelta(hours=rng.randint(4, 96))
        else:
            updated = at + dt.timedelta(minutes=rng.randint(1, 30))
        updated = self.clamp(max(updated, at))

        if landing is None:
            roll = rng.random()
            if roll < 0.4:
                landing = "/"
            elif roll < 0.65:
                landing = "/collections/" + rng.choice(self.collections)["handle"]
            else:
                landing = "/products/" + rng.choice(picked)["handle"]
            roll = rng.random()
            if roll < 0.1:
                landing += "?utm_source=instagram&utm_medium=social"
            elif roll < 0.15:
                landing += "?utm_source=google&utm_medium=cpc"
        source = "web" if campaign_order else rng.choices(
            ("web", "pos", "shopify_draft_order", "iphone", "android"), weights=(86, 6, 3, 3, 2))[0]
        if customer is None:
            guest_first, guest_last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            email = f"{_email_part(guest_first)}.{_email_part(guest_last)}{rng.randint(1, 99)}@gmail.com"
        self.order_seq += 1
        order = {
            "email": customer["email"] if customer else email, "phone": customer["phone"] if customer else None,
            "created_at": at, "shopify_updated_at": updated, "updated_at": updated, "cancelled_at": cancelled_at,
            "test": test, "financial_status": financial, "fulfillment_status": fulfillment, "currency": "USD",
            "total_price": total, "current_total_price": current, "total_discounts": discounts,
            "discount_codes": discount_codes, "landing_site": landing, "source_name": source,
            "_customer": customer, "_lines": lines, "_seq": self.order_seq,
        }
        self.orders.append(order)
        if customer is not None:
            customer["_orders"].append(order)
        return order

    def finish_orders(self) -> None:
        """Number the orders in time order (names, Shopify ids), as the shop would have."""
        rng = self.rng("order-ids")
        self.orders.sort(key=lambda o: (o["created_at"], o["_seq"]))
        oid = 5_640_000_000_000 + rng.randrange(10_000_000_000)
        lid = 14_230_000_000_000 + rng.randrange(10_000_000_000)
        for number, order in enumerate(self.orders, start=1001):
            oid += rng.randint(5_000_000, 60_000_000)
            order["shopify_id"], order["name"] = oid, f"#{number}"
            for line in order["_lines"]:
                lid += rng.randint(1_000_000, 30_000_000)
                line["shopify_id"] = lid
        for customer in self.customers:
            customer["_orders"].sort(key=lambda o: (o["created_at"], o["_seq"]))

    def build_checkouts(self) -> None:
        rng = self.rng("checkouts")
        tokens = self.unique_rng("checkout-tokens")
        since = self.t0 - dt.timedelta(days=60)
        self.checkouts = []
        for order in self.orders:
            if order["created_at"] < since or order["source_name"] != "web" or order["test"]:
                continue
            started = order["created_at"] - dt.timedelta(minutes=rng.randint(3, 25), seconds=rng.randrange(60))
            self.checkouts.append({
                "token": f"{tokens.getrandbits(128):032x}", "_customer": order["_customer"],
                "phone": order["phone"], "started_at": started, "completed_at": order["created_at"],
                "shopify_updated_at": order["created_at"], "created_at": started, "updated_at": order["created_at"],
            })
        unlinked = [s for s in self.subscribers if s["_customer"] is None]
        for _ in range(round(self.n_customers * 0.06)):
            started = self.shop_time(rng, since, self.t0 - dt.timedelta(minutes=30))
            customer, phone = None, None
            if rng.random() < 0.72 and self.customers:
                customer = rng.choice(self.customers)
                if customer["shopify_created_at"] > started:
                    customer = None
                else:
                    phone = customer["phone"]
            if customer is None and unlinked and rng.random() < 0.5:
                phone = rng.choice(unlinked)["phone"]
            touched = self.clamp(started + dt.timedelta(minutes=rng.randint(1, 40)))
            self.checkouts.append({
                "token": f"{tokens.getrandbits(128):032x}", "_customer": customer, "phone": phone,
                "started_at": started, "completed_at": None, "shopify_updated_at": touched,
                "created_at": started, "updated_at": touched,
            })
        self.checkouts.sort(key=lambda c: (c["started_at"], c["token"]))

    def build_customer_facts(self) -> None:
        """Facts over counted orders (not test, not cancelled), as segment-rules.md "Which orders count" says."""
        rng = self.rng("customer-facts")
        for customer in self.customers:
            counted = [o for o in customer["_orders"] if not o["test"] and o["cancelled_at"] is None]
            customer["money_spent"] = sum(
                (o["current_total_price"] if o["current_total_price"] is not None else o["total_price"]
                 for o in counted), ZERO)
            customer["total_discounts"] = sum((o["total_discounts"] for o in counted), ZERO)
            customer["orders_count"] = len(counted)
            customer["first_order_at"] = counted[0]["created_at"] if counted else None
            customer["last_order_at"] = counted[-1]["created_at"] if counted else None
            if len(counted) >= 2:
                customer["_tags"].add("returning")
            latest = max([customer["shopify_created_at"]] + [o["shopify_updated_at"] for o in customer["_orders"]])
            customer["shopify_updated_at"] = self.clamp(latest + dt.timedelta(minutes=rng.randint(0, 90)))
            customer["created_at"] = max(self.installed_at + dt.timedelta(minutes=1, seconds=rng.randrange(900)),
                                         customer["shopify_created_at"] + dt.timedelta(seconds=rng.randint(1, 20)))
            customer["updated_at"] = max(customer["created_at"], customer["shopify_updated_at"])
            sub = customer["_sub"]
            if customer["phone"] is None:
                customer["sms_consent_state"], customer["sms_consent_updated_at"] = None, None
            elif sub is not None and sub["source"] == "checkout":
                left = sub["status"] == "unsubscribed"
                customer["sms_consent_state"] = "unsubscribed" if left else "subscribed"
                customer["sms_consent_updated_at"] = sub["unsubscribed_at"] if left else sub["subscribed_at"]
            else:
                customer["sms_consent_state"] = "not_subscribed"
                customer["sms_consent_updated_at"] = None
        buyers = sorted((c for c in self.customers if c["orders_count"]),
                        key=lambda c: (c["money_spent"], c["shopify_id"]), reverse=True)
        for customer in buyers[:max(1, round(len(buyers) * 0.05))] if buyers else []:
            customer["_tags"].add("vip")
