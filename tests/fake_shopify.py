"""A local fake Shopify for the test suite: token endpoint, GraphQL Admin, bulk JSONL downloads.

A threaded HTTP server on 127.0.0.1 (ephemeral port). The app reaches it through
SHOPIFY_BASE_URL_OVERRIDE: `<url>/<shop domain>/admin/oauth/access_token`,
`<url>/<shop domain>/admin/api/2026-10/graphql.json`, and bulk result files at the path of the
storage URL Shopify would hand out. Replies follow Shopify's documented shapes (token grants with
`expires_in` / `refresh_token`, `invalid_subject_token` / `invalid_grant` errors, GraphQL `data` +
`extensions.cost`, THROTTLED errors, bulk operation nodes, JSONL with `__parentId`, customer segments and their
members pages and members queries, aliased `tagsAdd` / `tagsRemove` costing 10 points each).

GraphQL requests are answered by operation name (every query of the app is named), not by a GraphQL
engine: each handler returns the fields the app selects.
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from tests.local_server import LocalServer

API_VERSION = "2026-10"
BULK_HOST_PATH = "/shopify-tiers-assets-prod-us-east1/bulk-operation-outputs"
INVALID_TOKEN_BODY = {"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"}


def iso(moment: dt.datetime) -> str:
    """A DateTime as Shopify writes it."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Grant:
    """A token pair the fake issued."""

    access_token: str
    access_expires: float | None
    refresh_token: str | None
    refresh_expires: float | None


@dataclass
class FakeShop:
    """One shop's data and credentials at the fake."""

    domain: str
    name: str = "Fake Store"
    email: str = "owner@example.com"
    currency: str = "EUR"
    timezone: str = "Europe/Berlin"
    primary_domain: str = "shop.example.com"
    billing_address: dict = field(default_factory=lambda: {  # ShopAddress (the US registration's prefill)
        "company": "Fake Store LLC", "address1": "1 Main Street", "address2": "Suite 5", "city": "New York",
        "provinceCode": "NY", "zip": "10001", "countryCodeV2": "US", "phone": "(212) 555-0142"})
    customers: dict = field(default_factory=dict)    # id -> Customer node
    orders: dict = field(default_factory=dict)       # id -> Order node (+ "lineItems": [LineItem nodes])
    products: dict = field(default_factory=dict)     # id -> Product node
    collections: dict = field(default_factory=dict)  # id -> Collection node (+ "productIds": [ids])
    access_tokens: dict = field(default_factory=dict)  # token -> expiry (epoch) or None
    refresh_tokens: dict = field(default_factory=dict)  # token -> {"expires", "state", "replaced_by", "previous"}
    codes: dict = field(default_factory=dict)        # authorization code -> used?
    discounts: dict = field(default_factory=dict)    # gid -> {"input", "codes": [..]}
    code_imports: dict = field(default_factory=dict)  # gid -> status node
    bulk: dict = field(default_factory=dict)         # gid -> operation dict
    subscriptions: dict = field(default_factory=dict)  # AppSubscription gid -> subscription dict (billing)
    usage_records: dict = field(default_factory=dict)  # idempotency key (or gid) -> AppUsageRecord node
    revoked: bool = False                            # uninstalled: every refresh is refused
    consent_writes: list = field(default_factory=list)  # CustomerSmsMarketingConsentUpdateInput objects received
    themes: list = field(default_factory=list)       # OnlineStoreTheme nodes (+ "files": {filename: text})
    read_themes: bool = True                         # the merchant granted read_themes
    web_pixel: dict | None = None                    # the app's WebPixel {"id", "settings"} (one per app and shop)
    segments: dict = field(default_factory=dict)     # id -> {"id", "name", "query", "members": [customer ids]}
    member_queries: dict = field(default_factory=dict)  # CustomerSegmentMembersQuery gid -> {"members", "polls_left"}
    tag_calls: list = field(default_factory=list)    # (mutation, customer id, tags) of every tagsAdd / tagsRemove

    def _next_id(self, table: dict) -> int:
        return max(table, default=1000) + 1

    def add_customer(self, *, first_name="Ada", last_name="Lovelace", email=None, phone=None, tags=(),
                     city=None, country="US", sms_state="NOT_SUBSCRIBED", sms_updated=None, updated_at=None,
                     created_at=None, customer_id=None, sms_level="SINGLE_OPT_IN") -> dict:
        """Add (or replace) a customer, as a GraphQL Customer node (SMS consent in `smsMarketingConsent`, a
        CustomerSmsMarketingConsentState; null for a customer without a phone, as Shopify answers)."""
        cid = customer_id or self._next_id(self.customers)
        updated_at = updated_at or dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        node = {
            "id": f"gid://shopify/Customer/{cid}", "firstName": first_name, "lastName": last_name,
            "createdAt": iso(created_at or updated_at), "updatedAt": iso(updated_at), "tags": list(tags),
            "defaultEmailAddress": {"emailAddress": email} if email else None,
            "defaultPhoneNumber": {"phoneNumber": phone} if phone else None,
            "smsMarketingConsent": ({"marketingState": sms_state,
                                     "marketingOptInLevel": sms_level if sms_state != "NOT_SUBSCRIBED" else None,
                                     "consentUpdatedAt": iso(sms_updated) if sms_updated else None}
                                    if phone else None),
            "defaultAddress": {"city": city, "countryCodeV2": country} if city or country else None,
        }
        self.customers[cid] = node
        return node

    def add_segment(self, name, members=(), *, query="number_of_orders > 0", segment_id=None) -> dict:
        """Add (or replace) a customer segment (a Segment node) holding these customer ids."""
        sid = segment_id or self._next_id(self.segments)
        node = {"id": f"gid://shopify/Segment/{sid}", "name": name, "query": query, "members": list(members)}
        self.segments[sid] = node
        return node

    def customer_tags(self, customer_id) -> list[str]:
        """A customer's tags at the fake."""
        return list(self.customers[customer_id]["tags"])

    def add_theme(self, name="Dawn", *, role="MAIN", files=None, theme_id=None) -> dict:
        """Add a theme (an OnlineStoreTheme node); `files` maps a filename to its text (config/settings_data.json)."""
        node = {"id": f"gid://shopify/OnlineStoreTheme/{theme_id or 130000 + len(self.themes)}", "name": name,
                "role": role, "files": dict(files or {})}
        self.themes.append(node)
        return node

    def add_product(self, title, *, handle=None, status="ACTIVE", updated_at=None, product_id=None,
                    variants=()) -> dict:
        """Add (or replace) a product; `variants` are (id, title, sku, price) of its ProductVariant nodes."""
        pid = product_id or self._next_id(self.products)
        node = {"id": f"gid://shopify/Product/{pid}", "title": title,
                "handle": handle or re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"), "status": status,
                "updatedAt": iso(updated_at or dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)),
                "featuredMedia": {"preview": {"image": {"url": f"https://cdn.example.com/{pid}.jpg"}}}}
        if variants:
            node["variants"] = {"nodes": [
                {"id": f"gid://shopify/ProductVariant/{vid}", "title": vtitle, "sku": sku, "price": price,
                 "position": position} for position, (vid, vtitle, sku, price) in enumerate(variants, start=1)]}
            node["variantsCount"] = {"count": len(variants)}
        self.products[pid] = node
        return node

    def add_collection(self, title, product_ids=(), *, updated_at=None, collection_id=None) -> dict:
        """Add (or replace) a collection holding these products."""
        cid = collection_id or self._next_id(self.collections)
        node = {"id": f"gid://shopify/Collection/{cid}", "title": title,
                "handle": re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"),
                "updatedAt": iso(updated_at or dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)),
                "productIds": list(product_ids)}
        self.collections[cid] = node
        return node

    def add_order(self, customer_id, lines, *, name=None, total=None, created_at=None, updated_at=None,
                  financial="PAID", fulfillment="UNFULFILLED", cancelled_at=None, test=False, discount_codes=(),
                  order_id=None) -> dict:
        """Add (or replace) an order; `lines` are (product_id, title, quantity, unit price) tuples."""
        oid = order_id or self._next_id(self.orders)
        created_at = created_at or dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)
        items = []
        for index, (product_id, title, quantity, price) in enumerate(lines):
            items.append({"id": f"gid://shopify/LineItem/{oid * 100 + index}", "title": title,
                          "variantTitle": "Default", "quantity": quantity,
                          "originalUnitPriceSet": {"shopMoney": {"amount": str(price), "currencyCode": self.currency}},
                          "product": {"id": f"gid://shopify/Product/{product_id}"} if product_id else None,
                          "variant": {"id": f"gid://shopify/ProductVariant/{(product_id or 0) * 10 + 1}"}
                          if product_id else None})
        total = total if total is not None else sum(float(p) * q for _pid, _t, q, p in lines)
        money = {"shopMoney": {"amount": f"{total:.2f}", "currencyCode": self.currency}}
        node = {
            "id": f"gid://shopify/Order/{oid}", "name": name or f"#{oid}", "email": None, "phone": None,
            "createdAt": iso(created_at), "updatedAt": iso(updated_at or created_at),
            "cancelledAt": iso(cancelled_at) if cancelled_at else None, "test": test,
            "displayFinancialStatus": financial, "displayFulfillmentStatus": fulfillment,
            "currencyCode": self.currency, "totalPriceSet": money, "currentTotalPriceSet": money,
            "totalDiscountsSet": {"shopMoney": {"amount": "0.00", "currencyCode": self.currency}},
            "discountCodes": list(discount_codes), "sourceName": "web",
            "customerJourneySummary": {"firstVisit": {"landingPage": "https://shop.example.com/?utm_source=sms"}},
            "customer": {"id": f"gid://shopify/Customer/{customer_id}"} if customer_id else None,
            "lineItems": items,
        }
        self.orders[oid] = node
        return node


class FakeShopify(LocalServer):
    """The fake's state, shared by its request handlers (guarded by one lock)."""

    def __init__(self, api_key: str, api_secret: str):
        self.api_key, self.api_secret = api_key, api_secret
        self.lock = threading.RLock()
        self.shops: dict[str, FakeShop] = {}
        self.log: list[dict] = []
        self.faults: deque = deque()
        self.access_ttl = 3600
        self.refresh_ttl = 90 * 86400
        self.bulk_polls_until_done = 1
        self.bulk_limit = 5
        self.bulk_layout = "scattered"
        self.bucket_available = 1990.0
        self.refuse_session_tokens = False
        self.token_faults: deque = deque()
        self.on_consent_write = None  # a test's hook, called with each consent write before it is applied
        self.webhook_url = ""  # where billing webhooks go (the app's /webhooks/billing), when a test sets it
        self.segment_query_polls = 1  # status polls before a customerSegmentMembersQuery is done
        self._tokens = itertools.count(1)
        self._ids = itertools.count(1)
        self.files = tempfile.mkdtemp(prefix="fake-shopify-")
        super().__init__(_handler(self))

    # -- lifecycle --
    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.files, ignore_errors=True)

    def reset(self) -> None:
        """Forget every shop, fault and logged request (between tests)."""
        with self.lock:
            self.shops.clear()
            self.log.clear()
            self.faults.clear()
            self.access_ttl, self.refresh_ttl = 3600, 90 * 86400
            self.bulk_polls_until_done, self.bulk_limit, self.bulk_layout = 1, 5, "scattered"
            self.bucket_available = 1990.0
            self.refuse_session_tokens = False
            self.token_faults.clear()
            self.on_consent_write = None
            self.webhook_url = ""
            self.segment_query_polls = 1

    # -- test helpers --
    def shop(self, domain: str) -> FakeShop:
        """The fake's shop for a domain (created on first use)."""
        with self.lock:
            if domain not in self.shops:
                self.shops[domain] = FakeShop(domain)
            return self.shops[domain]

    def fail_next(self, kind: str, times: int = 1) -> None:
        """Make the next GraphQL calls fail: "throttled", "429", "500", "503", "401" or "403"; or "drop": the
        call is carried out, then the connection closes without an answer."""
        with self.lock:
            self.faults.extend([kind] * times)

    def fail_next_token(self, status: int = 503, times: int = 1) -> None:
        """Make the next token endpoint calls answer this HTTP status (5xx: Shopify having trouble)."""
        with self.lock:
            self.token_faults.extend([status] * times)

    def issue_tokens(self, domain: str, *, access_ttl: int | None = None) -> Grant:
        """Issue an expiring offline pair directly (as if a token exchange had happened)."""
        with self.lock:
            return self._issue(self.shop(domain), expiring=True, access_ttl=access_ttl)

    def static_token(self, domain: str) -> str:
        """A custom app's Admin API token that never expires."""
        with self.lock:
            token = f"shpat_{next(self._tokens):032x}"
            self.shop(domain).access_tokens[token] = None
            return token

    def issue_code(self, domain: str) -> str:
        """An authorization code the callback can exchange."""
        with self.lock:
            code = f"code{next(self._tokens):028x}"
            self.shop(domain).codes[code] = False
            return code

    def uninstall(self, domain: str) -> None:
        """The merchant uninstalled the app: every token of the shop is revoked (401, and refreshes refused)."""
        with self.lock:
            shop = self.shop(domain)
            shop.access_tokens.clear()
            shop.revoked = True

    def expire_access_tokens(self, domain: str) -> None:
        """Every access token of the shop stops working (401)."""
        with self.lock:
            self.shop(domain).access_tokens.clear()

    def calls(self, kind: str | None = None, shop: str | None = None) -> list[dict]:
        """Logged requests, optionally only of one kind ("token:<grant>", "graphql:<operation>", "download")."""
        with self.lock:
            return [c for c in self.log if (kind is None or c["kind"] == kind) and (shop is None or c["shop"] == shop)]

    def finish_bulk(self, domain: str, *kinds: str) -> list[str]:
        """Let the shop's bulk operations (of these kinds, or all) complete at the next poll; returns their ids."""
        with self.lock:
            ops = [op for op in self.shop(domain).bulk.values() if not kinds or op["kind"] in kinds]
            for op in ops:
                op["polls_left"] = 0
            return [op["id"] for op in ops]

    def hold_bulk(self, domain: str, *kinds: str) -> None:
        """Keep the shop's bulk operations of these kinds running until finish_bulk."""
        with self.lock:
            for op in self.shop(domain).bulk.values():
                if op["kind"] in kinds:
                    op["polls_left"] = 10 ** 9

    def fail_bulk(self, domain: str, kind: str, error_code: str = "INTERNAL_SERVER_ERROR") -> None:
        """Make the shop's bulk operation for `kind` end FAILED with this error code."""
        with self.lock:
            for op in self.shop(domain).bulk.values():
                if op["kind"] == kind:
                    op["status"], op["errorCode"] = "FAILED", error_code

    # -- billing --
    def subscription(self, domain: str, gid: str | None = None) -> dict | None:
        """The shop's subscription `gid` (or its newest), as the fake keeps it."""
        with self.lock:
            subs = self.shop(domain).subscriptions
            return subs.get(gid) if gid else (list(subs.values())[-1] if subs else None)

    def approve(self, domain: str, gid: str | None = None) -> dict:
        """The merchant approves the pending subscription, or the pending raise of its capped amount."""
        with self.lock:
            sub = self.subscription(domain, gid)
            for other in self.shop(domain).subscriptions.values():  # one active subscription per app and shop
                if other is not sub and other["status"] == "ACTIVE":
                    other["status"] = "CANCELLED"
            sub["status"] = "ACTIVE"
            if sub.get("pending_cap") is not None:
                sub["line"]["capped"], sub["pending_cap"] = sub.pop("pending_cap"), None
            return sub

    def set_subscription_status(self, domain: str, status: str, gid: str | None = None) -> dict:
        """The subscription's status changes at Shopify (DECLINED, CANCELLED, FROZEN, …)."""
        with self.lock:
            sub = self.subscription(domain, gid)
            sub["status"] = status
            return sub

    def charged(self, domain: str) -> list[dict]:
        """Every usage record the shop was charged, once each."""
        with self.lock:
            return list(self.shop(domain).usage_records.values())

    def subscription_webhook(self, domain: str, topic: str = "app_subscriptions/update") -> dict:
        """The body Shopify sends for the shop's newest subscription under this topic (its documented shape)."""
        with self.lock:
            sub = self.subscription(domain)
            if topic == "app_subscriptions/update":
                return {"app_subscription": {
                    "admin_graphql_api_id": sub["id"], "name": sub["name"], "status": sub["status"],
                    "admin_graphql_api_shop_id": "gid://shopify/Shop/548380009", "created_at": sub["created_at"],
                    "updated_at": iso(dt.datetime.now(dt.timezone.utc)), "currency": "USD",
                    "capped_amount": str(sub["line"]["capped"]), "price": "0.00", "interval": "every_30_days",
                    "plan_handle": None}}
            return {"admin_graphql_api_id": sub["id"], "name": sub["name"], "status": sub["status"],
                    "admin_graphql_api_shop_id": "gid://shopify/Shop/548380009",
                    "balance_used": float(sub["line"]["used"]),
                    "capped_amount": str(sub["line"]["capped"]), "currency_code": "USD",
                    "created_at": sub["created_at"], "updated_at": iso(dt.datetime.now(dt.timezone.utc))}

    def bulk_ids(self, domain: str) -> dict[str, str]:
        """kind -> id of the shop's bulk operations."""
        with self.lock:
            return {op["kind"]: gid for gid, op in self.shop(domain).bulk.items()}

    def deliver(self, url: str, domain: str, topic: str, body: bytes) -> int:
        """POST a webhook to the app as Shopify does: HMAC-SHA256 of the body with the app secret, base64."""
        import base64
        import hashlib
        import hmac
        import urllib.request
        digest = base64.b64encode(hmac.new(self.api_secret.encode(), body, hashlib.sha256).digest()).decode()
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "X-Shopify-Topic": topic, "X-Shopify-Shop-Domain": domain,
            "X-Shopify-Hmac-Sha256": digest, "X-Shopify-Webhook-Id": f"wh-{next(self._ids)}",
            "X-Shopify-API-Version": API_VERSION, "X-Shopify-Event-Id": f"ev-{next(self._ids)}",
            "X-Shopify-Triggered-At": iso(dt.datetime.now(dt.timezone.utc))})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status

    # -- internals (called with the lock held) --
    def _issue(self, shop: FakeShop, *, expiring: bool, access_ttl: int | None = None) -> Grant:
        now = time.time()
        token = f"shpua_{next(self._tokens):032x}"
        ttl = self.access_ttl if access_ttl is None else access_ttl
        if not expiring:
            shop.access_tokens[token] = None
            return Grant(token, None, None, None)
        shop.access_tokens[token] = now + ttl
        refresh = f"shprt_{next(self._tokens):032x}"
        shop.refresh_tokens[refresh] = {"expires": now + self.refresh_ttl, "state": "active", "previous": None}
        return Grant(token, now + ttl, refresh, now + self.refresh_ttl)


def _grant_body(grant: Grant, scope: str) -> dict:
    body = {"access_token": grant.access_token, "scope": scope}
    if grant.access_expires is not None:
        now = time.time()
        body["expires_in"] = int(round(grant.access_expires - now))
        body["refresh_token"] = grant.refresh_token
        body["refresh_token_expires_in"] = int(round(grant.refresh_expires - now))
    return body


SCOPE = ("read_customers,write_customers,read_orders,read_all_orders,read_products,read_discounts,write_discounts,"
         "read_themes")


def _handler(fake: FakeShopify):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as separate writes; do not wait 40 ms on the ACK

        def log_message(self, *args):  # keep test output clean
            pass

        # -- plumbing --
        def _reply(self, status: int, body) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict:
            raw = self.raw_body
            if "json" in (self.headers.get("Content-Type") or ""):
                return json.loads(raw or b"{}")
            return {k: v[0] for k, v in parse_qs(raw.decode()).items()}

        def do_GET(self):
            path = urlsplit(self.path).path
            if path.startswith(BULK_HOST_PATH + "/"):
                return self._download(path.rsplit("/", 1)[-1])
            match = re.fullmatch(r"/([^/]+)/admin/charges/(\d+)/confirm", path)
            if match:
                return self._confirmation_page(match.group(1), match.group(2))
            self._reply(404, {"errors": "Not Found"})

        def _confirmation_page(self, domain: str, number: str):
            """Shopify's page where the merchant approves a charge (or a raise of its capped amount)."""
            with fake.lock:
                sub = fake.shop(domain).subscriptions.get(f"gid://shopify/AppSubscription/{number}")
            if sub is None:
                return self._reply(404, {"errors": "Not Found"})
            cap = sub.get("pending_cap") or sub["line"]["capped"]
            page = (f"<!doctype html><html><head><title>Approve charge</title><link rel=icon href='data:,'></head>"
                    f"<body><h1>{sub['name']}</h1>"
                    f"<p>Usage charges up to <strong>${cap}</strong> every 30 days.</p><p>{sub['line']['terms']}</p>"
                    f"<form method=post><button name=decision value=approve>Approve</button>"
                    f"<button name=decision value=decline>Decline</button></form></body></html>").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def do_POST(self):
            # Read the whole body first: an unread body would corrupt the next request on this connection.
            length = int(self.headers.get("Content-Length") or 0)
            self.raw_body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path).path.strip("/").split("/")
            if len(parts) == 5 and parts[1:3] == ["admin", "charges"] and parts[4] == "confirm":
                return self._decide(parts[0], parts[3])
            if len(parts) >= 4 and parts[1:4] == ["admin", "oauth", "access_token"]:
                return self._token(parts[0])
            if len(parts) == 5 and parts[1:3] == ["admin", "api"] and parts[4] == "graphql.json":
                if parts[3] != API_VERSION:
                    return self._reply(404, {"errors": f"API version {parts[3]} is not served by this fake"})
                return self._graphql(parts[0])
            self._reply(404, {"errors": "Not Found"})

        def _decide(self, domain: str, number: str):
            """The merchant pressed Approve or Decline: the status changes, app_subscriptions/update is delivered
            (when the fake knows where: `fake.webhook_url`), and the browser goes to the charge's returnUrl."""
            decision = self._body().get("decision")
            gid = f"gid://shopify/AppSubscription/{number}"
            with fake.lock:
                sub = fake.shop(domain).subscriptions.get(gid)
                if sub is None:
                    return self._reply(404, {"errors": "Not Found"})
                if decision == "approve":
                    fake.approve(domain, gid)
                elif sub["status"] == "PENDING":
                    sub["status"] = "DECLINED"
                else:
                    sub["pending_cap"] = None
                body = json.dumps(fake.subscription_webhook(domain)).encode()
                target = fake.webhook_url
            if target:
                fake.deliver(target, domain, "app_subscriptions/update", body)
            self.send_response(303)
            self.send_header("Location", f"{sub['return_url']}?charge_id={number}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        # -- token endpoint --
        def _token(self, domain: str):
            body = self._body()
            grant_type = body.get("grant_type") or ("authorization_code" if "code" in body else "")
            with fake.lock:
                fake.log.append({"kind": f"token:{grant_type}", "shop": domain, "body": body})
                shop = fake.shop(domain)
                if fake.token_faults:
                    return self._reply(fake.token_faults.popleft(), b'{"errors":"Internal Server Error"}')
                if body.get("client_id") != fake.api_key or body.get("client_secret") != fake.api_secret:
                    return self._reply(401, {"error": "invalid_client",
                                             "error_description": "Client credentials are invalid"})
                expiring = str(body.get("expiring")) == "1"
                if grant_type == "urn:ietf:params:oauth:grant-type:token-exchange":
                    try:
                        claims = jwt.decode(body.get("subject_token") or "", fake.api_secret, algorithms=["HS256"],
                                            audience=fake.api_key, leeway=10)
                    except jwt.PyJWTError:
                        claims = None
                    if claims is None or fake.refuse_session_tokens:
                        return self._reply(400, {"error": "invalid_subject_token",
                                                 "error_description": "Invalid subject token"})
                    if urlsplit(str(claims.get("dest"))).hostname != domain:
                        return self._reply(400, {"error": "invalid_subject_token",
                                                 "error_description": "Token is for another shop"})
                    if body.get("requested_token_type") != "urn:shopify:params:oauth:token-type:offline-access-token":
                        return self._reply(400, {"error": "invalid_request"})
                    shop.revoked = False
                    return self._reply(200, _grant_body(fake._issue(shop, expiring=expiring), SCOPE))
                if grant_type == "refresh_token":
                    record = shop.refresh_tokens.get(body.get("refresh_token"))
                    if (shop.revoked or record is None or record["state"] != "active"
                            or record["expires"] <= time.time()):
                        return self._reply(400, {"error": "invalid_grant",
                                                 "error_description": "The refresh token is invalid or revoked"})
                    if record.get("previous"):
                        # First use of a replacement ends the recovery window of the token it replaced.
                        shop.refresh_tokens[record["previous"]]["state"] = "used"
                    grant = fake._issue(shop, expiring=True)
                    shop.refresh_tokens[grant.refresh_token]["previous"] = body["refresh_token"]
                    return self._reply(200, _grant_body(grant, SCOPE))
                if grant_type == "authorization_code":
                    if shop.codes.get(body.get("code")) is not False:
                        return self._reply(400, {"error": "invalid_request", "error_description":
                                                 "The authorization code was not found or was already used"})
                    shop.codes[body["code"]] = True
                    return self._reply(200, _grant_body(fake._issue(shop, expiring=expiring), SCOPE))
            return self._reply(400, {"error": "unsupported_grant_type"})

        # -- GraphQL Admin --
        def _graphql(self, domain: str):
            body = self._body()
            query = body.get("query") or ""
            variables = body.get("variables") or {}
            self._query = query  # handlers that read arguments written in the query (themes' roles, filenames)
            match = re.search(r"\b(?:query|mutation)\s+(\w+)", query)
            operation = match.group(1) if match else "anonymous"
            token = self.headers.get("X-Shopify-Access-Token", "")
            with fake.lock:
                fake.log.append({"kind": f"graphql:{operation}", "shop": domain, "variables": variables,
                                 "token": token, "query": query})
                shop = fake.shop(domain)
                fault = fake.faults.popleft() if fake.faults else None
                expiry = shop.access_tokens.get(token, "missing")
                if expiry == "missing" or (expiry is not None and expiry <= time.time()) or fault == "401":
                    return self._reply(401, INVALID_TOKEN_BODY)
                if fault == "403":
                    return self._reply(403, {"errors": "This action requires merchant approval for read_customers"
                                                       " scope."})
                if fault in ("500", "502", "503"):
                    return self._reply(int(fault), b'{"errors":"Internal Server Error"}')
                if fault == "429":
                    return self._reply(429, {"errors": "Exceeded 2 calls per second for api client."
                                                       " Reduce request rates to resume uninterrupted service."})
                cost = 12 if operation.startswith("Kinnekt") else 1
                if operation in ("KinnektTagsAdd", "KinnektTagsRemove"):  # 10 points per aliased mutation
                    cost = 10 * max(1, len(re.findall(r"\btags(?:Add|Remove)\(", query)))
                if fault == "throttled":
                    return self._reply(200, {"errors": [{"message": "Throttled", "extensions": {
                        "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                        "extensions": {"cost": self._cost(cost, available=2.0, actual=None)}})
                handler = getattr(self, f"_op_{operation}", None)
                if handler is None:
                    return self._reply(200, {"errors": [{"message": f"fake Shopify does not know {operation}"}]})
                data = handler(shop, variables)
                if fault == "drop":  # done at Shopify, but the answer is lost with the connection
                    self.close_connection = True
                    return
                if isinstance(data, tuple):  # (status, body) for top-level errors
                    return self._reply(*data)
                return self._reply(200, {"data": data, "extensions": {"cost": self._cost(cost)}})

        def _cost(self, cost: int, available: float | None = None, actual: int | None = 0):
            left = fake.bucket_available if available is None else available
            return {"requestedQueryCost": cost, "actualQueryCost": cost if actual is not None else None,
                    "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": left, "restoreRate": 100.0}}

        # shop
        def _op_KinnektShop(self, shop: FakeShop, _vars):
            return {"shop": {"name": shop.name, "email": shop.email, "contactEmail": shop.email,
                             "currencyCode": shop.currency, "ianaTimezone": shop.timezone,
                             "myshopifyDomain": shop.domain, "primaryDomain": {"host": shop.primary_domain}}}

        def _op_KinnektRegistrationProfile(self, shop: FakeShop, _vars):
            return {"shop": {"name": shop.name, "email": shop.email, "contactEmail": shop.email,
                             "billingAddress": dict(shop.billing_address),
                             "primaryDomain": {"url": f"https://{shop.primary_domain}", "host": shop.primary_domain}}}

        def _op_KinnektAppInstalled(self, shop: FakeShop, _vars):
            return {"shop": {"id": "gid://shopify/Shop/548380009"}}

        # bulk operations
        def _op_KinnektBulkQuery(self, shop: FakeShop, variables):
            inner = variables.get("query") or ""
            root = re.match(r"\s*\{\s*(\w+)", inner)
            running = [op for op in shop.bulk.values() if op["status"] in ("CREATED", "RUNNING")]
            if len(running) >= fake.bulk_limit:
                return {"bulkOperationRunQuery": {"bulkOperation": None, "userErrors": [{
                    "field": None, "code": "LIMIT_REACHED",
                    "message": "A bulk query operation for this app and shop is already in progress."}]}}
            if root is None or root.group(1) not in ("customers", "orders", "products", "collections"):
                return {"bulkOperationRunQuery": {"bulkOperation": None, "userErrors": [{
                    "field": ["query"], "code": "INVALID", "message": "Invalid bulk query"}]}}
            gid = f"gid://shopify/BulkOperation/{next(fake._ids)}"
            path, count, roots = self._write_jsonl(shop, root.group(1), gid)
            shop.bulk[gid] = {"id": gid, "status": "CREATED", "kind": root.group(1), "file": path,
                              "objectCount": count, "rootObjectCount": roots,
                              "polls_left": fake.bulk_polls_until_done, "query": inner}
            return {"bulkOperationRunQuery": {"bulkOperation": {"id": gid, "status": "CREATED"}, "userErrors": []}}

        def _write_jsonl(self, shop: FakeShop, kind: str, gid: str):
            path = os.path.join(fake.files, gid.rsplit("/", 1)[-1] + ".jsonl")
            count = roots = 0
            pending: list[dict] = []
            with open(path, "w") as out:
                def write(obj):
                    out.write(json.dumps(obj, separators=(",", ":")) + "\n")
                source = {"customers": shop.customers, "orders": shop.orders, "products": shop.products,
                          "collections": shop.collections}[kind]
                for _key, node in sorted(source.items()):
                    parent = {k: v for k, v in node.items()
                              if k not in ("lineItems", "productIds", "variants", "variantsCount")}
                    write(parent)
                    roots += 1
                    count += 1
                    # Without groupObjects, children need not follow their parent directly: hold them back
                    # until after the next parent.
                    for child in pending:
                        write(child)
                        count += 1
                    pending = []
                    if kind == "orders":
                        children = [{**item, "__parentId": node["id"]} for item in node["lineItems"]]
                    elif kind == "collections":
                        children = [{"id": f"gid://shopify/Product/{pid}", "__parentId": node["id"]}
                                    for pid in node["productIds"]]
                    elif kind == "products":
                        children = [{**variant, "__parentId": node["id"]}
                                    for variant in (node.get("variants") or {}).get("nodes", [])]
                    else:
                        children = []
                    if fake.bulk_layout == "grouped":
                        for child in children:
                            write(child)
                            count += 1
                    else:
                        pending = children
                for child in pending:
                    write(child)
                    count += 1
            return path, count, roots

        def _op_KinnektBulkOperation(self, shop: FakeShop, variables):
            op = shop.bulk.get(variables.get("id"))
            if op is None:
                return {"bulkOperation": None}
            if op["status"] in ("CREATED", "RUNNING"):
                if op["polls_left"] > 0:
                    op["polls_left"] -= 1
                    op["status"] = "RUNNING"
                else:
                    op["status"] = "COMPLETED"
            done = op["status"] == "COMPLETED"
            name = os.path.basename(op["file"])
            url = (f"https://storage.googleapis.com{BULK_HOST_PATH}/{name}?GoogleAccessId=fake&Signature=abc"
                   if done and op["objectCount"] else None)
            return {"bulkOperation": {"id": op["id"], "status": op["status"], "errorCode": op.get("errorCode"),
                                      "objectCount": str(op["objectCount"] if done else 0),
                                      "rootObjectCount": str(op["rootObjectCount"] if done else 0),
                                      "url": url, "partialDataUrl": None}}

        def _download(self, name: str):
            path = os.path.join(fake.files, os.path.basename(name))
            with fake.lock:
                fake.log.append({"kind": "download", "shop": None, "name": name})
            if not os.path.exists(path):
                return self._reply(404, {"errors": "Not Found"})
            self.send_response(200)
            self.send_header("Content-Type", "application/jsonl")
            self.send_header("Content-Length", str(os.path.getsize(path)))
            self.end_headers()
            with open(path, "rb") as source:
                while chunk := source.read(64 * 1024):
                    self.wfile.write(chunk)

        # reconciliation
        def _changed(self, nodes, variables):
            match = re.search(r"updated_at:>'([^']+)'", variables.get("query") or "")
            since = parse_iso(match.group(1)) if match else None
            rows = [n for n in nodes if since is None or parse_iso(n["updatedAt"]) > since]
            return sorted(rows, key=lambda n: (n["updatedAt"], n["id"]))

        def _page(self, rows, variables, shape=lambda n: n):
            start = int(variables.get("after") or 0)
            first = int(variables.get("first") or 50)
            chunk = rows[start:start + first]
            more = start + first < len(rows)
            return {"nodes": [shape(n) for n in chunk],
                    "pageInfo": {"hasNextPage": more, "endCursor": str(start + first) if more else None}}

        # themes (read_themes): `themes(roles:)` and a theme's `files(filenames:)`, text bodies
        def _op_KinnektThemeEmbed(self, shop, variables):
            if not shop.read_themes:
                return 200, {"errors": [{"message": "Access denied for themes field. Required access: `read_themes` "
                                                    "access scope.", "locations": [{"line": 3, "column": 3}],
                                         "path": ["themes"], "extensions": {"code": "ACCESS_DENIED"}}],
                             "data": {"themes": None}}
            roles = re.search(r"roles:\s*\[([A-Z_,\s]*)\]", self._query or "")
            wanted = {r.strip() for r in roles.group(1).split(",")} if roles else None
            asked = re.search(r'filenames:\s*\[([^\]]*)\]', self._query or "")
            filenames = re.findall(r'"([^"]+)"', asked.group(1)) if asked else []
            nodes = []
            for theme in shop.themes:
                if wanted is not None and theme["role"] not in wanted:
                    continue
                found = [{"filename": f, "body": {"__typename": "OnlineStoreThemeFileBodyText",
                                                  "content": theme["files"][f]}}
                         for f in filenames if f in theme["files"]]
                missing = [{"code": "NOT_FOUND", "filename": f} for f in filenames if f not in theme["files"]]
                nodes.append({"id": theme["id"], "name": theme["name"], "role": theme["role"],
                              "files": {"nodes": found, "userErrors": missing}})
            return {"themes": {"nodes": nodes[:1]}}

        # SMS consent (customerSmsMarketingConsentUpdate: the customer's `smsMarketingConsent` is replaced)
        def _op_KinnektSmsConsent(self, shop, variables):
            data = variables.get("input") or {}
            shop.consent_writes.append(data)
            if fake.on_consent_write is not None:
                fake.on_consent_write(data)
            node = shop.customers.get(int(str(data.get("customerId", "")).rsplit("/", 1)[-1] or 0))
            if node is None:
                return {"customerSmsMarketingConsentUpdate": {"customer": None, "userErrors": [
                    {"field": ["input", "customerId"], "message": "Customer does not exist"}]}}
            if not node.get("defaultPhoneNumber"):
                return {"customerSmsMarketingConsentUpdate": {"customer": None, "userErrors": [
                    {"field": ["input", "smsMarketingConsent"],
                     "message": "A phone number is required to set the SMS consent state."}]}}
            consent = data.get("smsMarketingConsent") or {}
            node["smsMarketingConsent"] = {
                "marketingState": consent.get("marketingState"),
                "marketingOptInLevel": consent.get("marketingOptInLevel"),
                "consentUpdatedAt": consent.get("consentUpdatedAt") or iso(dt.datetime.now(dt.timezone.utc))}
            return {"customerSmsMarketingConsentUpdate": {
                "customer": {"id": node["id"], "smsMarketingConsent": node["smsMarketingConsent"]}, "userErrors": []}}

        def _op_KinnektReconcileCustomers(self, shop, variables):
            return {"customers": self._page(self._changed(shop.customers.values(), variables), variables)}

        def _op_KinnektReconcileProducts(self, shop, variables):
            def shape(node):
                variants = (node.get("variants") or {}).get("nodes", [])
                more = len(variants) > 50
                return {**{k: v for k, v in node.items() if k not in ("variants", "variantsCount")},
                        "variants": {"nodes": variants[:50],
                                     "pageInfo": {"hasNextPage": more, "endCursor": "50" if more else None}}}
            return {"products": self._page(self._changed(shop.products.values(), variables), variables, shape)}

        def _op_KinnektProductVariants(self, shop, variables):
            product = shop.products.get(int(variables["id"].rsplit("/", 1)[-1]))
            if product is None:
                return {"product": None}
            variants = (product.get("variants") or {}).get("nodes", [])
            return {"product": {"variants": self._page(variants, {"first": 250, **variables})}}

        def _op_KinnektReconcileCollections(self, shop, variables):
            return {"collections": self._page(self._changed(shop.collections.values(), variables), variables,
                                              lambda n: {k: v for k, v in n.items() if k != "productIds"})}

        def _op_KinnektReconcileOrders(self, shop, variables):
            def shape(node):
                items = node["lineItems"]
                more = len(items) > 50
                return {**{k: v for k, v in node.items() if k != "lineItems"},
                        "lineItems": {"nodes": items[:50],
                                      "pageInfo": {"hasNextPage": more, "endCursor": "50" if more else None}}}
            return {"orders": self._page(self._changed(shop.orders.values(), variables), variables, shape)}

        def _op_KinnektOrderLineItems(self, shop, variables):
            order = shop.orders.get(int(variables["id"].rsplit("/", 1)[-1]))
            if order is None:
                return {"order": None}
            return {"order": {"lineItems": self._page(order["lineItems"], {"first": 100, **variables})}}

        # picker fallback
        def _search(self, nodes, variables):
            words = re.findall(r"title:\*([^*]+)\*", variables.get("query") or "")
            hits = [n for n in nodes if all(w.lower() in n["title"].lower() for w in words)]
            return sorted(hits, key=lambda n: n["title"])[: int(variables.get("first") or 20)]

        def _op_KinnektPickProducts(self, shop, variables):
            return {"products": {"nodes": self._search(shop.products.values(), variables)}}

        def _op_KinnektPickCollections(self, shop, variables):
            return {"collections": {"nodes": [{k: v for k, v in n.items() if k in ("id", "title", "handle")}
                                              for n in self._search(shop.collections.values(), variables)]}}

        # discounts
        def _taken(self, shop, code: str) -> bool:
            return any(code.upper() == c.upper() for d in shop.discounts.values() for c in d["codes"])

        def _op_KinnektCreateDiscount(self, shop, variables):
            given = variables.get("discount") or {}
            errors = []
            for key in ("title", "code", "startsAt", "customerGets"):
                if not given.get(key):
                    errors.append({"field": ["basicCodeDiscount", key], "code": "BLANK",
                                   "message": f"{key} can't be blank"})
            if given.get("context") != {"all": "ALL"}:
                errors.append({"field": ["basicCodeDiscount", "context"], "code": "INVALID",
                               "message": "Context must be specified"})
            if given.get("code") and self._taken(shop, given["code"]):
                errors.append({"field": ["basicCodeDiscount", "code"], "code": "TAKEN",
                               "message": "Code must be unique. Please try a different code."})
            if errors:
                return {"discountCodeBasicCreate": {"codeDiscountNode": None, "userErrors": errors}}
            gid = f"gid://shopify/DiscountCodeNode/{next(fake._ids)}"
            shop.discounts[gid] = {"input": given, "codes": [given["code"]]}
            return {"discountCodeBasicCreate": {"codeDiscountNode": {"id": gid, "codeDiscount": {
                "title": given["title"], "codes": {"nodes": [{"code": given["code"]}]}}}, "userErrors": []}}

        def _op_KinnektAddDiscountCodes(self, shop, variables):
            discount = shop.discounts.get(variables.get("discountId"))
            codes = [c.get("code") for c in variables.get("codes") or []]
            if discount is None:
                return {"discountRedeemCodeBulkAdd": {"bulkCreation": None, "userErrors": [{
                    "field": ["discountId"], "code": "INVALID", "message": "Discount does not exist"}]}}
            if len(codes) > 250:
                return {"discountRedeemCodeBulkAdd": {"bulkCreation": None, "userErrors": [{
                    "field": ["codes"], "code": "TOO_LONG", "message": "Codes is too long (maximum is 250)"}]}}
            nodes, imported = [], 0
            for code in codes:
                if self._taken(shop, code):
                    nodes.append({"code": code, "errors": [{"field": ["code"], "code": "TAKEN",
                                                            "message": "Code must be unique"}]})
                else:
                    discount["codes"].append(code)
                    nodes.append({"code": code, "errors": []})
                    imported += 1
            gid = f"gid://shopify/DiscountRedeemCodeBulkCreation/{next(fake._ids)}"
            shop.code_imports[gid] = {"id": gid, "done": False, "codesCount": len(codes), "importedCount": imported,
                                      "failedCount": len(codes) - imported, "codes": {"nodes": nodes}}
            return {"discountRedeemCodeBulkAdd": {"bulkCreation": {"id": gid}, "userErrors": []}}

        def _op_KinnektDiscountCodeImport(self, shop, variables):
            status = shop.code_imports.get(variables.get("id"))
            if status is None:
                return {"discountRedeemCodeBulkCreation": None}
            reply = dict(status)
            status["done"] = True  # done from the second poll on, as a real import takes a moment
            return {"discountRedeemCodeBulkCreation": reply}

        # web pixel (one per app and shop; settings checked against the extension's schema, as Shopify does)
        def _pixel_errors(self, web_pixel) -> list[dict]:
            raw = (web_pixel or {}).get("settings")
            try:
                settings = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError:
                settings = None
            if not isinstance(settings, dict):
                return [{"code": "INVALID_SETTINGS", "field": ["webPixel", "settings"],
                         "message": "Settings must be a JSON object"}]
            errors = []
            for name, spec in PIXEL_SETTINGS.items():
                value = settings.get(name)
                low, high = spec
                if not isinstance(value, str) or not low <= len(value) <= high:
                    errors.append({"code": "INVALID_SETTINGS", "field": ["webPixel", "settings", name],
                                   "message": f"{name} is invalid"})
            unknown = set(settings) - set(PIXEL_SETTINGS)
            if unknown:
                errors.append({"code": "INVALID_SETTINGS", "field": ["webPixel", "settings"],
                               "message": f"unknown settings: {', '.join(sorted(unknown))}"})
            return errors

        def _op_KinnektWebPixelCreate(self, shop, variables):
            given = variables.get("webPixel")
            errors = self._pixel_errors(given)
            if not errors and shop.web_pixel is not None:
                errors = [{"code": "TAKEN", "field": ["webPixel"], "message": "Web pixel already exists"}]
            if errors:
                return {"webPixelCreate": {"webPixel": None, "userErrors": errors}}
            shop.web_pixel = {"id": f"gid://shopify/WebPixel/{next(fake._ids)}", "settings": given["settings"]}
            return {"webPixelCreate": {"webPixel": dict(shop.web_pixel), "userErrors": []}}

        def _op_KinnektWebPixelUpdate(self, shop, variables):
            if shop.web_pixel is None or shop.web_pixel["id"] != variables.get("id"):
                return {"webPixelUpdate": {"webPixel": None, "userErrors": [
                    {"code": "NOT_FOUND", "field": ["id"], "message": "Web pixel not found"}]}}
            errors = self._pixel_errors(variables.get("webPixel"))
            if errors:
                return {"webPixelUpdate": {"webPixel": None, "userErrors": errors}}
            shop.web_pixel["settings"] = variables["webPixel"]["settings"]
            return {"webPixelUpdate": {"webPixel": dict(shop.web_pixel), "userErrors": []}}

        def _op_KinnektWebPixel(self, shop, _vars):
            return {"webPixel": dict(shop.web_pixel) if shop.web_pixel is not None else None}
        # billing
        def _subscription_node(self, sub: dict) -> dict:
            line = sub["line"]
            return {"id": sub["id"], "name": sub["name"], "status": sub["status"], "test": sub["test"],
                    "currentPeriodEnd": sub["period_end"] if sub["status"] == "ACTIVE" else None,
                    "lineItems": [{"id": line["id"], "plan": {"pricingDetails": {
                        "__typename": "AppUsagePricing", "terms": line["terms"],
                        "cappedAmount": {"amount": str(line["capped"]), "currencyCode": "USD"},
                        "balanceUsed": {"amount": str(line["used"]), "currencyCode": "USD"}}}}]}

        def _confirmation_url(self, shop, sub) -> str:
            number = sub["id"].rsplit("/", 1)[-1]
            return f"{fake.url}/{shop.domain}/admin/charges/{number}/confirm?signature=fake"

        def _op_KinnektSubscribe(self, shop, variables):
            from decimal import Decimal
            items = variables.get("lineItems") or []
            errors = []
            if not variables.get("name"):
                errors.append({"field": ["name"], "message": "Name can't be blank"})
            if not str(variables.get("returnUrl") or "").startswith(("http://", "https://")):
                errors.append({"field": ["returnUrl"], "message": "Return url is invalid"})
            usage = [((i or {}).get("plan") or {}).get("appUsagePricingDetails") for i in items]
            usage = [u for u in usage if u]
            if len(usage) != 1 or not (usage[0].get("terms") and (usage[0].get("cappedAmount") or {}).get("amount")):
                errors.append({"field": ["lineItems"], "message": "Usage pricing needs terms and a capped amount"})
            if errors:
                return {"appSubscriptionCreate": {"appSubscription": None, "confirmationUrl": None,
                                                  "userErrors": errors}}
            number = next(fake._ids)
            now = dt.datetime.now(dt.timezone.utc)
            sub = {"id": f"gid://shopify/AppSubscription/{number}", "name": variables["name"], "status": "PENDING",
                   "test": bool(variables.get("test")), "return_url": variables["returnUrl"],
                   "created_at": iso(now), "period_end": iso(now + dt.timedelta(days=30)), "pending_cap": None,
                   "line": {"id": f"gid://shopify/AppSubscriptionLineItem/{number}?v=1&index=0",
                            "terms": usage[0]["terms"], "capped": Decimal(usage[0]["cappedAmount"]["amount"]),
                            "used": Decimal(0)}}
            shop.subscriptions[sub["id"]] = sub
            return {"appSubscriptionCreate": {"appSubscription": self._subscription_node(sub),
                                              "confirmationUrl": self._confirmation_url(shop, sub), "userErrors": []}}

        def _line(self, shop, line_id):
            for sub in shop.subscriptions.values():
                if sub["line"]["id"] == line_id:
                    return sub
            return None

        def _op_KinnektRaiseCap(self, shop, variables):
            from decimal import Decimal
            sub = self._line(shop, variables.get("id"))
            amount = Decimal(str((variables.get("cappedAmount") or {}).get("amount") or 0))
            if sub is None or sub["status"] != "ACTIVE":
                return {"appSubscriptionLineItemUpdate": {"appSubscription": None, "confirmationUrl": None,
                        "userErrors": [{"field": ["id"], "message": "Subscription line item not found"}]}}
            if amount <= sub["line"]["capped"]:
                return {"appSubscriptionLineItemUpdate": {"appSubscription": None, "confirmationUrl": None,
                        "userErrors": [{"field": ["cappedAmount"],
                                        "message": "The capped amount must be greater than the existing one"}]}}
            sub["pending_cap"] = amount
            return {"appSubscriptionLineItemUpdate": {"appSubscription": {"id": sub["id"], "status": sub["status"]},
                                                      "confirmationUrl": self._confirmation_url(shop, sub),
                                                      "userErrors": []}}

        def _op_KinnektSubscription(self, shop, variables):
            sub = shop.subscriptions.get(variables.get("id"))
            return {"node": self._subscription_node(sub) if sub else None}

        def _op_KinnektUsageRecord(self, shop, variables):
            from decimal import Decimal
            key = variables.get("key")
            if key and key in shop.usage_records:  # the same answer as the first time, charged once
                return {"appUsageRecordCreate": {"appUsageRecord": shop.usage_records[key], "userErrors": []}}
            sub = self._line(shop, variables.get("lineItemId"))
            if sub is None or sub["status"] != "ACTIVE":
                return {"appUsageRecordCreate": {"appUsageRecord": None, "userErrors": [
                    {"field": ["subscriptionLineItemId"], "message": "Subscription line item is not active"}]}}
            price = Decimal(str((variables.get("price") or {}).get("amount") or 0))
            if price <= 0 or not variables.get("description"):
                return {"appUsageRecordCreate": {"appUsageRecord": None, "userErrors": [
                    {"field": ["price"], "message": "Price must be greater than 0"}]}}
            if sub["line"]["used"] + price > sub["line"]["capped"]:
                return {"appUsageRecordCreate": {"appUsageRecord": None, "userErrors": [
                    {"field": None, "message": "Total price exceeds balance remaining"}]}}
            sub["line"]["used"] += price
            node = {"id": f"gid://shopify/AppUsageRecord/{next(fake._ids)}", "idempotencyKey": key,
                    "price": {"amount": str(price), "currencyCode": "USD"}, "description": variables["description"]}
            shop.usage_records[key or node["id"]] = node
            return {"appUsageRecordCreate": {"appUsageRecord": node, "userErrors": []}}

        # customer segments: `segments`, `customerSegmentMembers` (by segmentId or queryId, first <= 1000, edges of
        # CustomerSegmentMember nodes whose id's tail is the customer id), members queries and their status
        def _op_KinnektSegments(self, shop, variables):
            rows = [{k: v for k, v in node.items() if k != "members"} for _, node in sorted(shop.segments.items())]
            return {"segments": self._page(rows, variables)}

        def _members_page(self, members, variables):
            first = int(variables.get("first") or 0)
            if not 1 <= first <= 1000:
                return 200, {"errors": [{"message": "The maximum page size is 1000.", "extensions": {
                    "code": "BAD_REQUEST"}}], "data": {"customerSegmentMembers": None}}
            start = int(variables.get("after") or 0)
            chunk = sorted(members)[start:start + first]
            more = start + first < len(members)
            return {"customerSegmentMembers": {
                "totalCount": len(members),
                "edges": [{"cursor": str(start + i + 1), "node": {"id": f"gid://shopify/CustomerSegmentMember/{cid}"}}
                          for i, cid in enumerate(chunk)],
                "pageInfo": {"hasNextPage": more, "endCursor": str(start + first) if more else None}}}

        def _segment_of(self, shop, segment_gid):
            tail = str(segment_gid or "").rsplit("/", 1)[-1]
            return shop.segments.get(int(tail)) if tail.isdigit() else None

        def _op_KinnektSegmentMembers(self, shop, variables):
            segment = self._segment_of(shop, variables.get("segmentId"))
            if segment is None:
                return 200, {"errors": [{"message": "Segment does not exist", "path": ["customerSegmentMembers"]}],
                             "data": {"customerSegmentMembers": None}}
            return self._members_page(segment["members"], variables)

        def _op_KinnektSegmentQueryMembers(self, shop, variables):
            job = shop.member_queries.get(variables.get("queryId"))
            if job is None or job["polls_left"] > 0:
                return 200, {"errors": [{"message": "Segment members query is not complete or does not exist"}],
                             "data": {"customerSegmentMembers": None}}
            return self._members_page(job["members"], variables)

        def _op_KinnektSegmentMembersQueryCreate(self, shop, variables):
            segment = self._segment_of(shop, ((variables.get("input") or {}).get("segmentId")))
            if segment is None:
                return {"customerSegmentMembersQueryCreate": {"customerSegmentMembersQuery": None, "userErrors": [
                    {"field": ["input", "segmentId"], "message": "Segment does not exist", "code": "INVALID"}]}}
            gid = f"gid://shopify/CustomerSegmentMembersQuery/{next(fake._ids)}"
            shop.member_queries[gid] = {"members": list(segment["members"]), "polls_left": fake.segment_query_polls}
            return {"customerSegmentMembersQueryCreate": {"customerSegmentMembersQuery": {
                "id": gid, "currentCount": 0, "done": False}, "userErrors": []}}

        def _op_KinnektSegmentMembersQuery(self, shop, variables):
            job = shop.member_queries.get(variables.get("id"))
            if job is None:
                return {"customerSegmentMembersQuery": None}
            job["polls_left"] = max(0, job["polls_left"] - 1)
            done = job["polls_left"] == 0
            return {"customerSegmentMembersQuery": {"id": variables["id"], "done": done,
                                                    "currentCount": len(job["members"]) if done else 0}}

        # customer tags: aliased `tagsAdd` / `tagsRemove` (t0: tagsAdd(id: $id0, tags: $tags) ...)
        def _tags(self, shop, variables, adding: bool):
            out = {}
            for alias, kind, var in re.findall(r"(\w+):\s*tags(Add|Remove)\(id:\s*\$(\w+),\s*tags:\s*\$tags\)",
                                               self._query or ""):
                node_gid = variables.get(var) or ""
                tail = node_gid.rsplit("/", 1)[-1]
                customer = shop.customers.get(int(tail)) if tail.isdigit() else None
                tags = [t.strip() for t in variables.get("tags") or [] if t.strip()]
                if customer is None or not node_gid.startswith("gid://shopify/Customer/"):
                    out[alias] = {"node": None, "userErrors": [{"field": ["id"], "message": "Resource not found"}]}
                    continue
                shop.tag_calls.append((f"tags{kind}", int(tail), tags))
                if adding:
                    customer["tags"] = customer["tags"] + [t for t in tags if t not in customer["tags"]]
                else:
                    customer["tags"] = [t for t in customer["tags"] if t not in tags]
                out[alias] = {"node": {"id": node_gid}, "userErrors": []}
            return out

        def _op_KinnektTagsAdd(self, shop, variables):
            return self._tags(shop, variables, True)

        def _op_KinnektTagsRemove(self, shop, variables):
            return self._tags(shop, variables, False)

    return Handler


def _pixel_settings_schema() -> dict:
    """The pixel extension's settings fields with their length bounds (name -> (min, max))."""
    import tomllib
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "extensions" / "kinnekt-pixel" / "shopify.extension.toml"
    fields = tomllib.loads(path.read_text())["settings"]["fields"]
    bounds = {}
    for name, spec in fields.items():
        limits = {v["name"]: int(v["value"]) for v in spec.get("validations", [])}
        bounds[name] = (limits.get("min", 0), limits.get("max", 10 ** 6))
    return bounds


PIXEL_SETTINGS = _pixel_settings_schema()
"""What the fake accepts as the pixel's settings: the extension's own schema (extensions/kinnekt-pixel)."""


@pytest.fixture(scope="session")
def fake_shopify_server(app):
    """The fake Shopify server, one per test session."""
    fake = FakeShopify(app.config["SHOPIFY_API_KEY"], app.config["SHOPIFY_API_SECRET"]).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_shopify(app, fake_shopify_server, monkeypatch):
    """A clean fake, with the app's Shopify calls pointed at it; queued jobs finish before the test ends."""
    from kinnekt import defaults, queue
    from kinnekt.shopify import graphql
    fake_shopify_server.reset()
    # Another test may have built a second app, which made its own queue the global one: jobs must run here.
    monkeypatch.setattr(queue, "_queue", app.extensions["kinnekt_queue"])
    monkeypatch.setitem(app.config, "SHOPIFY_BASE_URL_OVERRIDE", fake_shopify_server.url)
    # A delayed poll must never fire into a later test (ids are reused after the tables are emptied).
    monkeypatch.setattr(defaults, "BULK_POLL_INTERVAL_SECONDS", 10 ** 6)
    monkeypatch.setattr(defaults, "SHOPIFY_RETRY_BASE_SECONDS", 0.01)
    graphql._buckets.clear()
    yield fake_shopify_server
    app.extensions["kinnekt_queue"].drain(30)
    graphql._buckets.clear()


def connect(fake: FakeShopify, shop, *, access_ttl: int | None = None) -> Grant:
    """Give a shop row an expiring offline token pair issued by the fake (as after a token exchange)."""
    from kinnekt.shopify import tokens
    grant = fake.issue_tokens(shop.domain, access_ttl=access_ttl)
    as_dt = lambda epoch: dt.datetime.fromtimestamp(epoch, dt.timezone.utc)  # noqa: E731
    tokens.save_tokens(shop, tokens.TokenSet(grant.access_token, SCOPE, as_dt(grant.access_expires),
                                             grant.refresh_token, as_dt(grant.refresh_expires)))
    return grant
