"""The demo's keywords and subscribers: who joined, from where, when, and who left."""
from __future__ import annotations

import datetime as dt

from kinnekt.demo.data import CAMPAIGNS, CONSENT_TEXTS, DE_FIRST, FIRST_NAMES, KEYWORDS, SHOP_TIMEZONE
from kinnekt.demo.helpers import _pick, _quota
from kinnekt.subscribers import phones


class _Subscribers:
    """Keywords and subscribers of the demo store (a part of _DemoStore)."""

    def build_keywords(self) -> None:
        rng = self.rng("keywords")
        self.keywords = {}
        for word, after_days, reply, share in KEYWORDS:
            created = self.installed_at + dt.timedelta(days=after_days, minutes=rng.randint(10, 600))
            self.keywords[word] = {"word": word, "reply_text": reply, "active": True, "created_at": created,
                                   "updated_at": created + dt.timedelta(minutes=rng.randint(0, 30)),
                                   "_share": share}

    def build_subscribers(self) -> None:
        rng = self.rng("subscribers")
        n = self.n_customers
        with_phone = [c for c in self.customers if c["phone"]]
        # Buyers subscribe more often than browsers (weighted sampling without replacement).
        keyed = sorted(with_phone, key=lambda c: rng.random() ** (1 / (2.0 if c["_orders"] else 1.0)), reverse=True)
        linked = keyed[:min(round(n * 0.45), len(keyed))]
        subs = []
        for customer in linked:
            sub = {"phone": customer["phone"], "first_name": customer["first_name"], "_customer": customer}
            customer["_sub"] = sub
            subs.append(sub)
        countries = _quota(rng, round(n * 0.1), {"US": 88, "CA": 4, "GB": 3, "DE": 2, "AU": 3})
        for country in countries:
            phone, _ = self.phones.new(country)
            first = rng.choice(DE_FIRST if country == "DE" else FIRST_NAMES) if rng.random() < 0.45 else None
            subs.append({"phone": phone, "first_name": first, "_customer": None})

        # Checkout consent needs an order placed after install.
        quota_checkout = round(len(subs) * 0.2)
        eligible = [s for s in subs if s["_customer"] and any(
            o["created_at"] >= self.installed_at and not o["test"] for o in s["_customer"]["_orders"])]
        rng.shuffle(eligible)
        checkout = eligible[:quota_checkout]
        for sub in checkout:
            order = rng.choice([o for o in sub["_customer"]["_orders"]
                                if o["created_at"] >= self.installed_at and not o["test"]])
            sub["source"], sub["_order"], sub["_consent"] = "checkout", order, order["created_at"]
        rest = [s for s in subs if "source" not in s]
        for sub, source in zip(rest, _quota(rng, len(rest), {"keyword": 27, "mobile_popup": 33,
                                                              "shareable_link": 11, "import": 12, "manual": 5})):
            sub["source"] = source

        import_batches = (self.installed_at + dt.timedelta(days=2, hours=3), self.installed_at +
                          dt.timedelta(days=96, hours=5))
        for sub in subs:
            source = sub["source"]
            customer = sub["_customer"]
            lo = self.installed_at + dt.timedelta(days=1)
            if customer:
                lo = max(lo, customer["shopify_created_at"])
            if source == "import":
                batch = import_batches[0] if rng.random() < 0.8 else import_batches[1]
                if customer and customer["shopify_created_at"] > batch:
                    batch = import_batches[1] if customer["shopify_created_at"] <= import_batches[1] else None
                if batch is None:
                    source = sub["source"] = "manual"
                else:
                    sub["_consent"] = batch - dt.timedelta(days=rng.randint(20, 400))
                    sub["_joined"] = batch + dt.timedelta(seconds=rng.randrange(600))
            if source != "checkout" and "_joined" not in sub:
                moment = lo + dt.timedelta(seconds=int((self.t0 - lo).total_seconds() * rng.random() ** 0.75))
                moment = self.shop_time(rng, max(lo, moment - dt.timedelta(hours=12)),
                                        min(self.t0 - dt.timedelta(minutes=10), moment + dt.timedelta(hours=12)))
                sub["_consent"] = moment
            if source == "keyword":
                options = [(w, k["_share"]) for w, k in self.keywords.items() if k["created_at"] <= sub["_consent"]]
                if not options:
                    sub["_consent"] = self.keywords["JOIN"]["created_at"] + dt.timedelta(hours=rng.randint(1, 200))
                    options = [("JOIN", 1)]
                sub["keyword"] = _pick(rng, options)
            if source == "checkout":
                sub["_joined"] = sub["_consent"]
            elif source in ("keyword", "manual"):
                sub["_joined"] = sub["_consent"] + dt.timedelta(seconds=rng.randint(1, 5))
            elif source in ("mobile_popup", "shareable_link"):
                sub["_joined"] = sub["_consent"] + dt.timedelta(seconds=rng.randint(40, 900))

        # Statuses: pending only where double opt-in applies; everyone else subscribed, some left since.
        opt_in = [s for s in subs if s["source"] in ("mobile_popup", "shareable_link")]
        rng.shuffle(opt_in)
        pending = opt_in[:max(1, round(len(subs) * 0.035))] if opt_in else []
        for sub in pending:
            sub["status"] = "pending"
        for sub in subs:
            sub["_joined"] = min(sub["_joined"], self.t0)  # a confirmation reply cannot come after now
        others = [s for s in subs if "status" not in s and s["_joined"] < self.t0 - dt.timedelta(hours=1)]
        rng.shuffle(others)
        leaving = others[:max(1, round(len(subs) * 0.09))] if len(others) > 1 else []
        campaign_times = [self.campaign_time(days) for _, days, *_ in CAMPAIGNS]
        for sub in subs:
            sub.setdefault("status", "subscribed")
        for sub in leaving:
            sub["status"] = "unsubscribed"
            joined = sub["_joined"]
            after = [t for t in campaign_times if t > joined]
            if after and rng.random() < 0.65:
                left = rng.choice(after) + dt.timedelta(minutes=rng.randint(2, 180))
            else:
                left = joined + dt.timedelta(seconds=int((self.t0 - joined).total_seconds() * rng.random()))
            sub["_left"] = min(max(left, joined + dt.timedelta(minutes=1)), self.t0 - dt.timedelta(minutes=1))
            if sub["source"] == "checkout" and rng.random() < 0.3:
                sub["_left_how"] = "Withdrew SMS consent in Shopify"
            elif rng.random() < 0.1:
                sub["_left_how"] = "Removed by store staff"
            else:
                sub["_left_how"] = "Replied " + _pick(rng, (("STOP", 80), ("Stop", 8), ("UNSUBSCRIBE", 6),
                                                              ("CANCEL", 4), ("END", 2)))
        # A few numbers that stopped working: every send fails for good; the second failure suppresses them.
        live = [s for s in subs if s["status"] == "subscribed"]
        for sub in live:
            sub["_dead"] = False
        rng.shuffle(live)
        for sub in live[:max(1, round(len(live) * 0.008))]:
            sub["_dead"] = True

        subs.sort(key=lambda s: (s["_consent"], s["phone"]))
        ip_rng = self.rng("consent-ip")
        for sub in subs:
            facts = phones.normalise(sub["phone"], prefer_zone=SHOP_TIMEZONE)  # as the app records a number
            country, carrier_name, zone = facts.country, facts.carrier, facts.timezone
            source = sub["source"]
            word = sub.get("keyword")
            consent_text = CONSENT_TEXTS[source].format(word=word)
            sub.update({
                "status": sub["status"], "source": source, "keyword": word, "country": country,
                "carrier": carrier_name, "timezone": zone, "consent_at": sub["_consent"], "consent_text": consent_text,
                "consent_ip": None, "consent_message_id": None,
                "subscribed_at": None if sub["status"] == "pending" else sub["_joined"],
                "unsubscribed_at": sub.get("_left"), "unsubscribe_reason": sub.get("_left_how"),
                "suppressed_at": None, "suppressed_reason": None,
                "sent_count": 0, "clicks_count": 0, "last_received_at": None, "last_clicked_at": None,
                "_messages": [], "_clicks": [],
            })
            if source in ("mobile_popup", "shareable_link"):
                if ip_rng.random() < 0.85:
                    sub["consent_ip"] = (f"{ip_rng.choice(('192.0.2', '198.51.100', '203.0.113'))}."
                                         f"{ip_rng.randint(1, 254)}")
                else:
                    sub["consent_ip"] = f"2001:db8:{ip_rng.randrange(0x10000):x}::{ip_rng.randrange(0x10000):x}"
        self.subscribers = subs
