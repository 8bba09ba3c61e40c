"""Hostile input on every route of `app.url_map`: ids past a BIGINT, NUL characters, Unicode digits, huge numbers,
lone surrogates and deep nesting in JSON, odd values in every form field and query argument. No answer is a 5xx.

Merchant routes get a valid session token and the public endpoints valid signatures (webhook HMAC, app proxy
signature), so the values reach the views and the code behind them. Each form starts from what the pages render
(their own fields and values), with some fields replaced; the names each view reads are recorded and fuzzed too.
Jobs the requests queue are recorded, not run: this is about the answers.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import time
import uuid
from html.parser import HTMLParser
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import select
from werkzeug.datastructures import ImmutableMultiDict, MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from kinnekt import demo
from kinnekt.automations import service as automations
from kinnekt.db import Session
from kinnekt.models import (Automation, Campaign, DataRequest, Keyword, Link, Segment, StaticList, Subscriber,
                            SubscriberImport)
from kinnekt.segments import lists
from kinnekt.shopify import app_proxy
from kinnekt.subscribers import share
from tests import shopify_payloads as sp

SWEEP = ["\x00", "²", "١٢", str(2**63), "9" * 40, "-1", "", "x" * 3000, "1e400", "12:61"]
"""Each is sent once in every field of a route at the same time: one request per value and route."""

HOSTILE = SWEEP + [
    "a\x00b", "³²", "𝟙", "１", "1_000", " 7 ", "+1", "NaN", "inf", "0x1f", "1.5", "-" + "9" * 40, " ", "%", "%00",
    "\\", "'", "\"", "<b>x</b>", "{first_name", "{{", "\u202e", "\ufeff", "\ufffd", "\U0010ffff", "a\r\nb", "24:00",
    "2026-02-30", "0000-01-01", "9999-12-31", "on", "true", "[]", "{}", "null", "+1 212 555 0101", "+" + "9" * 20,
]
"""What hypothesis draws field values from (besides any short text and any integer)."""

BIG_IDS = [str(2**63 - 1), str(2**63), str(2**64), "9" * 30, "0", "0" * 30 + "1"]
"""Ids in a URL: the largest a BIGINT holds, just past it, far past it, zero, leading zeros."""

SURROGATES = ["\ud800", "a\udfffb"]
"""Lone surrogates: a JSON string escape can carry them, UTF-8 text cannot (so no form or query can)."""

DEEP_BODIES = [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 20_000 + b"1" + b"}" * 20_000]
METHODS = ("GET", "POST", "PUT", "DELETE")
PUBLIC = ("auth", "shopify_oauth", "redirects", "storefront", "health", "webhooks", "sms_webhooks")
EXAMPLES = 5
"""Hypothesis examples per route and method, besides the fixed sweep: the walk stays within seconds."""

_PLACEHOLDER = re.compile(r"<(?:(\w+)(?:\(([^)]*)\))?:)?(\w+)>")


# ---------------------------------------------------------------------------------------------- stand-ins

_read: set[str] = set()


class _RecordingArgs(ImmutableMultiDict):
    """Query and form arguments that remember which names the view asked for."""

    def __getitem__(self, key):
        _read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        _read.add(key)
        return super().__contains__(key)

    def get(self, key, default=None, type=None):
        _read.add(key)
        return super().get(key, default, type)

    def getlist(self, key, type=None):
        _read.add(key)
        return super().getlist(key, type)


class _Forms(HTMLParser):
    """Every form of a page, and every element making an htmx request: (method, url, fields with their values)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str, MultiDict]] = []
        self._form: MultiDict | None = None
        self._select: tuple[str, str | None] | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for method in METHODS:
            url = attrs.get(f"hx-{method.lower()}")
            if url:
                try:
                    fields = MultiDict(json.loads(attrs.get("hx-vals") or "{}"))
                except ValueError:  # a `js:` expression
                    fields = MultiDict()
                if tag != "form" and self._form is not None and not fields:
                    fields = self._form  # a button inside a form sends the form (filled in as the page goes on)
                self.found.append((method, url, fields))
                if tag == "form":
                    self._form = fields
        if tag == "form" and self._form is None:
            self._form = MultiDict()
            self.found.append(((attrs.get("method") or "get").upper(), attrs.get("action") or "", self._form))
        name = attrs.get("name")
        if not name or self._form is None:
            if tag == "option" and self._select is not None and (self._select[1] is None or "selected" in attrs):
                self._select = (self._select[0], attrs.get("value", ""))
            return
        kind = (attrs.get("type") or "text").lower()
        if tag == "input" and kind not in ("file", "submit", "button", "image", "reset"):
            if kind not in ("checkbox", "radio") or "checked" in attrs:
                self._form.add(name, attrs.get("value") or ("on" if kind in ("checkbox", "radio") else ""))
        elif tag == "select":
            self._select = (name, None)
        elif tag == "textarea":
            self._textarea = name
            self._form.add(name, "")

    def handle_endtag(self, tag):
        if tag == "select" and self._select is not None:
            if self._form is not None and self._select[1] is not None:
                self._form.add(*self._select)
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form":
            self._form = None

    def handle_data(self, data):
        if self._textarea is not None and self._form is not None:
            self._form.setlist(self._textarea, [data])


class _ErrorLog(logging.Handler):
    """The error records logged while one request was answered (the cause of a 5xx)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


# ---------------------------------------------------------------------------------------------- the store

@pytest.fixture
def store(db, jobs):
    """The demo store (every kind of row), with the rows it lacks: automations, a static list, a data request,
    subscriber imports (one over, one waiting for its job)."""
    shop = demo.seed(db, now=dt.datetime.now(dt.timezone.utc), customers=20)
    automations.ensure_builtins(db, shop)
    lists.import_list_csv(db, shop, name="VIPs", file_bytes=b"phone\n+12125550101\n+12125550102\n")
    db.add(DataRequest(shop_id=shop.id, shopify_request_id=1, email="a@example.com", orders_requested=[],
                       report={"customer": None}))
    db.add(SubscriberImport(shop_id=shop.id, status="done", filename="done.csv", consent_text="Agreed.",
                            total_rows=3, processed_rows=3, imported=1, rejected=[[3, "x", "not a phone number"]],
                            counts={"invalid": 1, "duplicate": 1, "unsubscribed": 0, "existing": 0}))
    db.add(SubscriberImport(shop_id=shop.id, status="queued", filename="queued.csv", consent_text="Agreed.",
                            file=b"phone\n+12125550101\n", total_rows=1))
    db.commit()
    return shop


def _real_ids(shop) -> dict[str, list[str]]:
    """Ids of the shop's rows for each route argument (a merchant's own and an automatic segment, a draft and a
    sent campaign...), so the views run past their lookups."""
    def first(model, *where) -> list[str]:
        value = Session.scalar(select(model.id).where(model.shop_id == shop.id, *where).order_by(model.id).limit(1))
        return [str(value)] if value is not None else []
    return {
        "segment_id": first(Segment, Segment.kind != "auto") + first(Segment, Segment.kind == "auto"),
        "campaign_id": first(Campaign, Campaign.kind == "campaign", Campaign.status == "draft")
        + first(Campaign, Campaign.kind == "campaign", Campaign.status != "draft"),
        "automation_id": first(Automation), "keyword_id": first(Keyword), "subscriber_id": first(Subscriber),
        "list_id": first(StaticList), "request_id": first(DataRequest),
        "import_id": first(SubscriberImport, SubscriberImport.status == "done")
        + first(SubscriberImport, SubscriberImport.status == "queued"),
    }


# ---------------------------------------------------------------------------------------------- the walk

class Walk:
    """Sends the requests; keeps every 5xx with the request and the logged error, and what each endpoint reads."""

    def __init__(self, app, client, shop, token):
        self.app, self.client, self.shop, self.token = app, client, shop, token
        self.failures: list[str] = []
        self.read: dict[tuple[str, str], set[str]] = {}
        self.forms: dict[tuple[str, str], list[MultiDict]] = {}
        self.adapter = app.url_map.bind("localhost")
        self.log = _ErrorLog()

    def endpoint_of(self, method: str, url: str) -> str | None:
        try:
            return self.adapter.match(urlsplit(url).path, method=method)[0]
        except (HTTPException, RequestRedirect):
            return None

    def send(self, method: str, path: str, *, query=None, form=None, json_body=None, data=None, headers=None,
             merchant: bool = True, note: str = "") -> int:
        """One request (with the session token on merchant routes); a 5xx is kept as a failure."""
        all_headers = {"Authorization": f"Bearer {self.token}"} if merchant else {}
        all_headers.update(headers or {})
        body = {"json": json_body} if json_body is not None else {"data": data if data is not None else form}
        _read.clear()
        self.log.records.clear()
        response = self.client.open(path, method=method, query_string=query, headers=all_headers, **body)
        response.get_data()  # a streamed body (CSV exports) runs to its end inside its request
        response.close()
        endpoint = self.endpoint_of(method, path)
        if endpoint is not None:
            self.read.setdefault((method, endpoint), set()).update(_read)
        if response.status_code >= 500:
            errors = [r for r in self.log.records if r.exc_info]
            cause = repr(errors[-1].exc_info[1])[:200] if errors else "(nothing logged)"
            sent = {"query": query, "form": form, "json": json_body, "data": data, "headers": headers}
            self.failures.append(f"{response.status_code} {method} {path[:200]!r} {note} {cause} "
                                 + repr({k: v for k, v in sent.items() if v})[:400])
        return response.status_code

    def learn_forms(self, path: str) -> None:
        """Fetch a merchant page (whole, and as htmx) and keep its forms for the endpoints they send to."""
        for extra in ({}, {"HX-Request": "true"}):
            response = self.client.get(path, headers={"Authorization": f"Bearer {self.token}", **extra})
            html = response.get_data(as_text=True)
            response.close()
            if response.status_code != 200 or response.mimetype != "text/html":
                continue
            parser = _Forms()
            parser.feed(html)
            for method, url, fields in parser.found:
                endpoint = self.endpoint_of(method, url)
                if endpoint is not None:
                    query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
                    self.forms.setdefault((method, endpoint), []).append(
                        MultiDict([*query, *fields.items(multi=True)]))


def _arguments(rule) -> list[tuple[str, str, str]]:
    """(converter, its arguments, name) of each placeholder in a rule."""
    return [(m.group(1) or "default", m.group(2) or "", m.group(3)) for m in _PLACEHOLDER.finditer(rule.rule)]


def _path(rule, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: quote(values[m.group(3)], safe=""), rule.rule)


def _argument_sets(rule, ids: dict[str, list[str]], fixed: dict[str, str]) -> list[dict[str, str]]:
    """Route arguments: real ones first, then each argument in turn replaced by hostile values."""
    real, hostile = {}, {}
    for converter, options, name in _arguments(rule):
        if converter == "int":
            real[name] = (ids.get(name) or ["1"])[0]
            hostile[name] = ids.get(name, [])[1:] + BIG_IDS
        elif converter == "any":
            real[name], hostile[name] = options.split(",")[0].strip(), []
        else:
            real[name] = fixed.get(name, "x")
            hostile[name] = ["\x00", "a\x00b", "²", "x" * 3000, "%", "..", "\ufffd", "\U0010ffff"]
    return [real] + [{**real, name: value} for name, values in hostile.items() for value in values]


def _field_value():
    return st.one_of(st.sampled_from(HOSTILE), st.text(max_size=12), st.integers().map(str))


def _replaced(base: MultiDict, changes: dict[str, str]) -> MultiDict:
    out = MultiDict(base)
    for key, value in changes.items():
        out.setlist(key, [value])
    return out


def _leaves(document, replace):
    """`document` with each leaf passed through `replace`."""
    if isinstance(document, dict):
        return {key: _leaves(value, replace) for key, value in document.items()}
    if isinstance(document, list):
        return [_leaves(value, replace) for value in document]
    return replace(document)


def _walk_route(walk: Walk, rule, method: str, ids: dict[str, list[str]], fixed: dict[str, str]) -> None:
    """Route arguments, then every field at once at each SWEEP value, then hypothesis's mixes of the form."""
    merchant = rule.endpoint.split(".")[0] not in PUBLIC
    forms = walk.forms.get((method, rule.endpoint)) or [MultiDict()]
    sets = _argument_sets(rule, ids, fixed)
    for args in sets:
        walk.send(method, _path(rule, args), query=forms[0] if method == "GET" else None,
                  form=forms[0] if method != "GET" else None, merchant=merchant, note="(route arguments)")
    path = _path(rule, sets[0])
    names = sorted(walk.read.get((method, rule.endpoint), set()) | {k for form in forms for k in form.keys()})
    for value in SWEEP:
        every = _replaced(forms[0], {name: value for name in names})
        if method == "GET":
            walk.send(method, path, query=every, merchant=merchant, note="(sweep)")
        else:
            walk.send(method, path, form=every, query={name: value for name in names}, merchant=merchant,
                      note="(sweep)")
    names = sorted(walk.read.get((method, rule.endpoint), set()) | set(names))
    changes = st.dictionaries(st.sampled_from(names), _field_value(), max_size=4) if names else st.just({})

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(form=st.sampled_from(forms), changes=changes, htmx=st.booleans(), in_query=st.booleans())
    def probe(form, changes, htmx, in_query):
        headers = {"HX-Request": "true"} if htmx else {}
        mixed = _replaced(form, changes)
        if method == "GET" or in_query:
            status = walk.send(method, path, query=mixed, form=None if method == "GET" else form, headers=headers,
                               merchant=merchant)
        else:
            status = walk.send(method, path, form=mixed, headers=headers, merchant=merchant)
        assert status < 500

    try:
        probe()
    except AssertionError:
        pass  # the failure is in walk.failures, with the request that caused it


def _walk_api(walk: Walk, rule, method: str, path: str) -> None:
    """The segments API: the shop's own definitions with every leaf replaced, odd names and keys, raw bodies."""
    definitions = [d for d in Session.scalars(select(Segment.definition).where(Segment.shop_id == walk.shop.id)) if d]
    for value in SWEEP + SURROGATES + [2**63, 10**400, 1e308, True, None, [], {}]:
        for definition in definitions[:2]:
            walk.send(method, path, json_body={"name": "Odd", "definition": _leaves(definition, lambda _, v=value: v)},
                      note="(API leaves)")
        walk.send(method, path, json_body={"name": value, "definition": definitions[0]}, note="(API name)")
        if isinstance(value, str):
            walk.send(method, path, json_body={value: value}, note="(API key)")
    for raw in DEEP_BODIES + [b'"\\ud800"', b'{"name": "\\u0000"}', b"\xff\xfe", b"1" * 5000]:
        walk.send(method, path, data=raw, headers={"Content-Type": "application/json"}, note="(API raw)")


def _walk_webhook(walk: Walk, rule, method: str) -> None:
    """Signed deliveries: a sample payload of the endpoint with every leaf replaced, escapes, deep nesting."""
    secret = walk.app.config["SHOPIFY_API_SECRET"]
    topic = next(t for t, path in sp.ENDPOINTS.items() if path == rule.rule)
    if topic == "shop/redact":
        return  # it erases the shop under test; its intake is the one every other topic goes through
    samples = {"/webhooks/customers": sp.customer(sp.next_id()), "/webhooks/orders": sp.order(sp.next_id()),
               "/webhooks/catalog": sp.product(sp.next_id()), "/webhooks/checkouts": sp.checkout()}
    sample = samples.get(rule.rule, {"id": 1, "name": "x"})
    bodies = DEEP_BODIES + [b'{"a": "\\u0000"}', b'{"a": "\\ud800"}', b"\xff", b"[]"]
    bodies += [json.dumps(_leaves(sample, lambda _, v=value: v)).encode() for value in SWEEP + SURROGATES + [2**63]]
    for body in bodies:
        headers = {**sp.headers(topic, body, secret=secret, domain=walk.shop.domain), "X-Shopify-Triggered-At": "²"}
        walk.send(method, rule.rule, data=body, headers=headers, merchant=False, note=f"(webhook {topic})")


def _walk_sms(walk: Walk, rule, method: str) -> None:
    """The Messages API's JSON webhooks with a hostile value in each field in turn (and nested ones), deep JSON,
    and bodies that are not JSON."""
    from tests.fake_vonage import inbound_body, status_body
    to = walk.shop.sender or "15550100200"
    if rule.endpoint.endswith("inbound"):
        base = inbound_body("JOIN", from_="447400123456", to=to)
    else:
        base = status_body("rejected", message_uuid="aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab", client_ref="m1",
                           code="1250", detail="Unroutable")
    if method != "POST":
        walk.send(method, rule.rule, query={"text": "JOIN"}, merchant=False, note="(SMS query)")
        return
    for field in base:
        for value in ["\x00", "²", "9" * 40, "x" * 3000, 2**63, None, True, [1], {"a": "\x00"}] + SURROGATES:
            data = {**base, field: value}
            if field == "message_uuid" and value in ("²", "9" * 40):
                data[field] = f"{value}{uuid.uuid4().hex}"  # a new text each time
            walk.send(method, rule.rule, json_body=data, merchant=False, note="(SMS JSON)")
    for nested in ("error", "usage", "sms"):
        for value in ({"title": "\x00", "price": "²"}, {"title": 2**63, "price": 2**63}, "x", [None]):
            walk.send(method, rule.rule, json_body={**base, nested: value}, merchant=False, note="(SMS nested)")
    for raw in DEEP_BODIES + [b"", b"\xff", b"[]", b"null", b"JOIN"]:
        walk.send(method, rule.rule, data=raw, headers={"Content-Type": "application/json"}, merchant=False,
                  note="(SMS raw)")
    walk.send(method, rule.rule, form={"text": "JOIN"}, merchant=False, note="(SMS form)")


def _walk_upload(walk: Walk, rule, method: str) -> None:
    """The CSV uploads: odd file names and contents, and a file large enough to be imported by a job."""
    contents = [b"phone\n+12125550101\n", b"phone\n\x00\n", b"\xff\xfe\x00", "phone\n+1212555010²\n".encode(),
                b"phone,first_name\n" + b"+12125550101,\x00\n" * 3, b"phone\n" + b"+12125550101\n" * 2500]
    for filename in ("people.csv", "a\x00b.csv", "x" * 3000 + ".csv", "²\ufffd\U0010ffff.csv", ""):
        for content in contents:
            form = {"consent": "on", "name": "List", "file": (io.BytesIO(content), filename)}
            walk.send(method, rule.rule, form=form, note=f"(upload {filename[:20]!r})")


def _walk_proxy(walk: Walk, rule, method: str) -> None:
    """Requests signed as Shopify's app proxy signs them, with hostile arguments and form fields."""
    secret = walk.app.config["SHOPIFY_API_SECRET"]
    for value in SWEEP + ["+12125550199"]:
        pairs = [("shop", walk.shop.domain), ("logged_in_customer_id", value), ("path_prefix", "/apps/kinnekt"),
                 ("timestamp", str(int(time.time()))), ("extra", value)]
        query = urlencode(pairs + [("signature", app_proxy.signature_for(pairs, secret))])
        forms = [{"phone": value, "consent": "on", "country": value}, {"phone": "+12125550199", "consent": value}]
        for form in forms if method == "POST" else [None]:
            walk.send(method, f"{rule.rule}?{query}", form=form, merchant=False, note="(app proxy)")


# ---------------------------------------------------------------------------------------------- the test

def test_no_route_answers_5xx_to_hostile_input(app, client, store, token_for, monkeypatch):
    # The app's own request class (htmx-flask's, which knows HX-Request), reading its arguments through ours.
    monkeypatch.setattr(app, "request_class", type("RecordingRequest", (app.request_class,),
                                                   {"parameter_storage_class": _RecordingArgs}))
    shop = store
    walk = Walk(app, client, shop, token_for(shop.domain, ttl=900))
    logging.getLogger("kinnekt").addHandler(walk.log)
    try:
        ids = _real_ids(shop)
        fixed = {"platform": "meta", "handle": share.handle(shop),
                 "code": Session.scalar(select(Link.code).where(Link.shop_id == shop.id).limit(1))}
        rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"]
        for rule in rules:  # the forms of every merchant page, rendered for real rows
            if "GET" in rule.methods and rule.endpoint.split(".")[0] not in PUBLIC:
                walk.learn_forms(_path(rule, _argument_sets(rule, ids, fixed)[0]))
        for rule in rules:
            blueprint = rule.endpoint.split(".")[0]
            for method in sorted(rule.methods & set(METHODS)):
                if blueprint == "webhooks":
                    _walk_webhook(walk, rule, method)
                elif blueprint == "sms_webhooks":
                    _walk_sms(walk, rule, method)
                elif rule.endpoint in ("storefront.popup_markup", "storefront.popup_signup"):
                    _walk_proxy(walk, rule, method)
                else:
                    if rule.endpoint in ("api_segments.create", "api_segments.update", "api_segments.preview"):
                        _walk_api(walk, rule, method, _path(rule, _argument_sets(rule, ids, fixed)[0]))
                    if rule.endpoint in ("subscribers.import_upload", "lists.upload"):
                        _walk_upload(walk, rule, method)
                    _walk_route(walk, rule, method, ids, fixed)
    finally:
        logging.getLogger("kinnekt").removeHandler(walk.log)
    assert not walk.failures, f"{len(walk.failures)} requests answered 5xx:\n" + "\n".join(walk.failures[:40])
