"""The demo's campaigns and messages: sends with quiet hours, delivery receipts, short links and clicks, the
orders they brought (attributions), and what the Outbox sent lately."""
from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

from kinnekt.demo.data import (
    _ALNUM, CAMPAIGNS, CONFIRM_TEXT, PERMANENT_ERROR, SENDER, SHOP_TIMEZONE, STORE_URL, TRANSIENT_ERRORS,
    USER_AGENTS, UTC, WELCOME_TEXT
)
from kinnekt.demo.helpers import _pick, _slug
from kinnekt.sms import encoding as sms_encoding, prices


class _Campaigns:
    """Campaigns, messages, clicks and the Outbox of the demo store (a part of _DemoStore)."""

    def campaign_time(self, days_ago: int) -> dt.datetime:
        """A campaign's send time: 10 or 11 a.m. in New York, `days_ago` days before now."""
        day = (self.t0 - dt.timedelta(days=days_ago)).date()
        return dt.datetime(day.year, day.month, day.day, 15, 0, tzinfo=UTC)

    def deferred(self, sub: dict, moment: dt.datetime) -> dt.datetime | None:
        """The end of the recipient's quiet hours (21:00-08:00 local) when `moment` falls inside them."""
        zone = ZoneInfo(sub["timezone"] or SHOP_TIMEZONE)
        local = moment.astimezone(zone)
        minutes = local.hour * 60 + local.minute
        if 8 * 60 <= minutes < 21 * 60:
            return None
        day = local.date() if minutes < 8 * 60 else local.date() + dt.timedelta(days=1)
        return dt.datetime(day.year, day.month, day.day, 8, 0, tzinfo=zone).astimezone(UTC)

    def build_campaigns(self) -> None:
        rng = self.rng("campaigns")
        ids = self.unique_rng("ids")
        self.campaigns, self.messages, self.links, self.clicks = [], [], [], []
        order_rng = self.rng("campaign-orders")
        for name, days, include, exclude, code, path, body, click_rate in CAMPAIGNS:
            started = self.campaign_time(days)
            url = STORE_URL + path
            campaign = {
                "name": name, "body": body.format(url=url), "status": "completed", "enabled": True,
                "send_now": False, "send_at": started, "recipient_local_time": False,
                "discount_mode": "shared" if code else "none", "discount_code": code, "started_at": started,
                "failure_reason": None,
                "created_at": started - dt.timedelta(days=rng.randint(1, 6), hours=rng.randint(0, 8)),
                "_include": include, "_exclude": exclude, "_url": url, "_messages": [],
            }
            recipients = [s for s in self.subscribers
                          if s["subscribed_at"] is not None and s["subscribed_at"] <= started
                          and (s["unsubscribed_at"] is None or s["unsubscribed_at"] > started)
                          and (s["suppressed_at"] is None or s["suppressed_at"] > started)
                          and any(self.in_segment(s, k) for k in include)
                          and not any(self.in_segment(s, k) for k in exclude)]
            finished = started
            for i, sub in enumerate(recipients):
                slot = started + dt.timedelta(seconds=i // 30)  # the provider's 30 messages a second
                due = self.deferred(sub, slot)
                sent = (due + dt.timedelta(seconds=(i % 90) // 3)) if due else slot
                code_chars = self.short_code(ids)
                text = campaign["body"].replace(url, self.link_base + code_chars) + "\nReply STOP to unsubscribe"
                encoding, parts = sms_encoding.size(text)
                provider_id = self.provider_id(ids)
                message = {
                    "kind": "campaign", "to_phone": sub["phone"], "body": text, "skip_reason": None, "due_at": due,
                    "attempts": 1, "client_ref": None, "provider_id": provider_id, "encoding": encoding,
                    "segments": parts, "price": prices.price_per_part(sub["country"]) * parts,
                    "error_code": None, "error_reason": None, "sent_at": sent, "delivered_at": None,
                    "created_at": started, "_campaign": campaign, "_sub": sub,
                }
                roll = rng.random()
                if sub.get("_dead"):
                    message["status"] = "failed"
                    message["error_code"], message["error_reason"] = PERMANENT_ERROR
                    message["updated_at"] = sent + dt.timedelta(seconds=rng.randint(5, 120))
                    failures = sum(1 for m in sub["_messages"] if m["status"] == "failed") + 1
                    if failures >= 2:
                        sub["suppressed_at"] = message["updated_at"]
                        sub["suppressed_reason"] = "Delivery failed twice: this number no longer works"
                elif roll < 0.02:
                    message["status"] = "failed"
                    message["error_code"], message["error_reason"] = rng.choice(TRANSIENT_ERRORS)
                    message["updated_at"] = sent + dt.timedelta(seconds=rng.randint(5, 3600))
                elif roll < 0.035:
                    message["status"], message["updated_at"] = "sent", sent + dt.timedelta(seconds=1)
                else:
                    message["status"] = "delivered"
                    message["delivered_at"] = sent + dt.timedelta(seconds=rng.randint(2, 40))
                    message["updated_at"] = message["delivered_at"]
                finished = max(finished, sent)
                link = {"code": code_chars, "url": url, "created_at": started, "_message": message}
                self.messages.append(message)
                self.links.append(link)
                sub["_messages"].append(message)
                campaign["_messages"].append(message)
                if message["status"] == "delivered" and rng.random() < click_rate:
                    self.click(rng, order_rng, campaign, sub, link, message, code, path)
                elif (message["status"] == "delivered" and code and sub["_customer"] is not None
                      and order_rng.random() < 0.025):
                    at = self.clamp(sent + dt.timedelta(minutes=order_rng.randint(20, 4 * 24 * 60)))
                    if at > sub["_customer"]["shopify_created_at"] and at < self.t0:
                        self.make_order(order_rng, at, sub["_customer"], first_order=False, code=code,
                                        campaign_order=True)
            campaign["finished_at"] = finished + dt.timedelta(seconds=1)
            campaign["updated_at"] = campaign["finished_at"]
            self.campaigns.append(campaign)

        for sub in self.subscribers:
            accepted = [m for m in sub["_messages"] if m["provider_id"]]
            sub["sent_count"] = len(accepted)
            sub["last_received_at"] = max((m["sent_at"] for m in accepted), default=None)
            sub["clicks_count"] = len(sub["_clicks"])
            sub["last_clicked_at"] = max((c["at"] for c in sub["_clicks"]), default=None)

    def click(self, rng, order_rng, campaign, sub, link, message, code, path) -> None:
        """One or more clicks on a delivered message's link, and sometimes the order that followed."""
        sent = message["delivered_at"]
        first = sent + dt.timedelta(seconds=min(int(rng.lognormvariate(7.0, 1.3)), 2 * 86_400))
        moments = [first]
        if rng.random() < 0.25:
            moments.append(first + dt.timedelta(seconds=int(rng.lognormvariate(8.0, 1.5))))
        agent = _pick(rng, USER_AGENTS)
        for at in moments:
            if at >= self.t0:
                continue
            click = {"at": at, "user_agent": agent, "_link": link, "_campaign": campaign, "_sub": sub}
            self.clicks.append(click)
            sub["_clicks"].append(click)
        customer = sub["_customer"]
        if customer is None or not sub["_clicks"] or sub["_clicks"][-1]["_link"] is not link:
            return
        if order_rng.random() < 0.22:
            at = first + dt.timedelta(seconds=min(int(order_rng.lognormvariate(7.5, 1.6)), 4 * 86_400))
            if customer["shopify_created_at"] < at < self.t0:
                slug = _slug(campaign["name"])
                landing = f"{path}?utm_source=sms&utm_medium=kinnekt&utm_campaign={slug}&kn={link['code']}"
                use_code = code if code and order_rng.random() < 0.7 else None
                self.make_order(order_rng, at, customer, first_order=not customer["_orders"], code=use_code,
                                landing=landing, campaign_order=True)

    def short_code(self, rng: random.Random) -> str:
        while True:
            code = "".join(rng.choice(_ALNUM) for _ in range(8))
            if code not in self.codes:
                self.codes.add(code)
                return code

    def provider_id(self, rng: random.Random) -> str:
        while True:
            value = f"{rng.getrandbits(64):016X}"
            if value not in self.provider_ids:
                self.provider_ids.add(value)
                return value

    def build_attributions(self) -> None:
        """Credit orders to campaigns: the campaign's discount code first, else the last click within the window."""
        window = dt.timedelta(days=5)
        by_code = {c["discount_code"].lower(): c for c in self.campaigns if c["discount_code"]}
        rng = self.rng("attributions")
        self.attributions = []
        for order in self.orders:
            if order["test"] or order["cancelled_at"] is not None:
                continue
            customer = order["_customer"]
            sub = customer["_sub"] if customer else None
            at = order["created_at"]
            campaign, method = None, None
            codes = [d["code"].lower() for d in order["discount_codes"]]
            for code in codes:  # a campaign's code wins over a click, as in kinnekt.campaigns.attribution
                candidate = by_code.get(code)
                if candidate and candidate["started_at"] <= at:
                    campaign, method = candidate, "discount_code"
                    break
            if campaign is None and sub is not None:
                clicks = [c for c in sub["_clicks"] if c["at"] <= at and at - c["at"] <= window]
                if clicks:
                    campaign, method = max(clicks, key=lambda c: c["at"])["_campaign"], "click"
            if campaign is None:
                continue
            revenue = order["current_total_price"] if order["current_total_price"] is not None else order["total_price"]
            self.attributions.append({
                "method": method, "revenue": revenue,
                "attributed_at": at + dt.timedelta(seconds=rng.randint(2, 90)),
                "_order": order, "_campaign": campaign,
                "_sub": sub if method == "click" or (sub and any(
                    m["_campaign"] is campaign for m in sub["_messages"])) else None,
            })

    def build_outbox(self) -> None:
        """What the outbox sink "sent" lately: confirmation requests, welcome texts and keyword replies."""
        refs = self.unique_rng("outbox")
        recent = sorted(self.subscribers, key=lambda s: (s["_consent"], s["phone"]))[-10:]
        texts = []
        for sub in recent:
            if sub["source"] in ("mobile_popup", "shareable_link"):
                texts.append((sub["_consent"] + dt.timedelta(seconds=2), sub["phone"], CONFIRM_TEXT))
                if sub["subscribed_at"]:
                    texts.append((sub["subscribed_at"] + dt.timedelta(seconds=2), sub["phone"], WELCOME_TEXT))
            elif sub["source"] == "keyword":
                texts.append((sub["subscribed_at"] + dt.timedelta(seconds=2), sub["phone"],
                              self.keywords[sub["keyword"]]["reply_text"]))
        texts.sort()
        self.outbox = [{"to_phone": phone, "sender": SENDER, "text": text,
                        "client_ref": f"outbox-{refs.getrandbits(64):016x}", "created_at": self.clamp(at)}
                       for at, phone, text in texts[-8:]]
        # Inbound texts behind keyword sign-ups and STOP replies.
        inbound = self.unique_rng("inbound")
        self.inbound = []
        for sub in self.subscribers:
            if sub["source"] == "keyword":
                provider_id = self.provider_id(inbound)
                sub["consent_message_id"] = provider_id
                text = _pick(inbound, ((sub["keyword"], 80), (sub["keyword"].lower(), 12),
                                       (sub["keyword"].title(), 8)))
                self.inbound.append({"provider_id": provider_id, "_sub": sub, "from_phone": sub["phone"],
                                     "to_number": SENDER, "text": text, "intent": "keyword",
                                     "received_at": sub["_consent"],
                                     "processed_at": sub["_consent"] + dt.timedelta(seconds=1)})
            if (sub.get("_left_how") or "").startswith("Replied "):
                word = sub["_left_how"].split(" ", 1)[1]
                self.inbound.append({"provider_id": self.provider_id(inbound), "_sub": sub,
                                     "from_phone": sub["phone"], "to_number": SENDER, "text": word,
                                     "intent": "stop", "received_at": sub["unsubscribed_at"],
                                     "processed_at": sub["unsubscribed_at"] + dt.timedelta(seconds=1)})
        self.inbound.sort(key=lambda m: (m["received_at"], m["provider_id"]))
