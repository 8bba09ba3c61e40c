"""A local fake Shopify for the test suite: token endpoint, GraphQL Admin, bulk JSONL downloads.

A threaded HTTP server on 127.0.0.1 (ephemeral port). The app reaches it through
SHOPIFY_BASE_URL_OVERRIDE: `<url>/<shop domain>/admin/oauth/access_token`,
`<url>/<shop domain>/admin/api/2026-10/graphql.json`, and bulk result files at the path of the
storage URL Shopify would hand out. Replies follow Shopify's documented shapes (token grants with
`expires_in` / `refresh_token`, `invalid_subject_token` / `invalid_grant` errors, GraphQL `data` +
`extensions.cost`, THROTTLED errors, bulk operation nodes, JSONL with `__parentId`).

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

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
    revoked: bool = False                            # uninstalled: every refresh is refused

    def _next_id(self, table: dict) -> int:
        return max(table, default=1000) + 1

    def add_customer(self, *, first_name="Ada", last_name="Lovelace", email=None, phone=None, tags=(),
                     city=None, country="US", sms_state="NOT_SUBSCRIBED", sms_updated=None, updated_at=None,
                     created_at=None, customer_id=None) -> dict:
        """Add (or replace) a customer, as a GraphQL Customer node."""
        cid = customer_id or self._next_id(self.customers)
        updated_at = updated_at or dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        node = {
            "id": f"gid://shopify/Customer/{cid}", "firstName": first_name, "lastName": last_name,
            "createdAt": iso(created_at or updated_at), "updatedAt": iso(updated_at), "tags": list(tags),
            "defaultEmailAddress": {"emailAddress": email} if email else None,
            "defaultPhoneNumber": ({"phoneNumber": phone, "marketingState": sms_state,
                                    "marketingUpdatedAt": iso(sms_updated) if sms_updated else None}
                                   if phone else None),
            "defaultAddress": {"city": city, "countryCodeV2": country} if city or country else None,
        }
        self.customers[cid] = node
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


class FakeShopify:
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
        self._tokens = itertools.count(1)
        self._ids = itertools.count(1)
        self.files = tempfile.mkdtemp(prefix="fake-shopify-")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle --
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> "FakeShopify":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
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

    # -- test helpers --
    def shop(self, domain: str) -> FakeShop:
        """The fake's shop for a domain (created on first use)."""
        with self.lock:
            if domain not in self.shops:
                self.shops[domain] = FakeShop(domain)
            return self.shops[domain]

    def fail_next(self, kind: str, times: int = 1) -> None:
        """Make the next GraphQL calls fail: "throttled", "429", "500", "503", "401" or "403"."""
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

    def bulk_ids(self, domain: str) -> dict[str, str]:
        """kind -> id of the shop's bulk operations."""
        with self.lock:
            return {op["kind"]: gid for gid, op in self.shop(domain).bulk.items()}

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


SCOPE = "read_customers,write_customers,read_orders,read_all_orders,read_products,read_discounts,write_discounts"


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
            self._reply(404, {"errors": "Not Found"})

        def do_POST(self):
            # Read the whole body first: an unread body would corrupt the next request on this connection.
            length = int(self.headers.get("Content-Length") or 0)
            self.raw_body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path).path.strip("/").split("/")
            if len(parts) >= 4 and parts[1:4] == ["admin", "oauth", "access_token"]:
                return self._token(parts[0])
            if len(parts) == 5 and parts[1:3] == ["admin", "api"] and parts[4] == "graphql.json":
                if parts[3] != API_VERSION:
                    return self._reply(404, {"errors": f"API version {parts[3]} is not served by this fake"})
                return self._graphql(parts[0])
            self._reply(404, {"errors": "Not Found"})

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
                if fault == "throttled":
                    return self._reply(200, {"errors": [{"message": "Throttled", "extensions": {
                        "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                        "extensions": {"cost": self._cost(cost, available=2.0, actual=None)}})
                handler = getattr(self, f"_op_{operation}", None)
                if handler is None:
                    return self._reply(200, {"errors": [{"message": f"fake Shopify does not know {operation}"}]})
                data = handler(shop, variables)
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

    return Handler


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
