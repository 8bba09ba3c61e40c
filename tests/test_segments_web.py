"""The segments pages through the Flask test client: list, builder, live preview, save, copy, delete, export,
suggestions; the builder's form <-> definition conversion (kinnekt.web.segment_form), on both databases."""
from __future__ import annotations

import datetime as dt
import json
import html as html_module
import re
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from tests.test_segment_rules import definitions  # the hypothesis strategy of valid definitions
from kinnekt.db import Session, utcnow
from kinnekt.models import (Campaign, CampaignSegment, Collection, Keyword, Product, Segment, StaticList,
                            Subscriber)
from kinnekt.segments import labels, references, rules, summaries
from kinnekt.segments.rules import FIELDS
from kinnekt.web import segment_form
from tests import factories
from tests.factories import add, rule, where

pytestmark = pytest.mark.usefixtures("finished_jobs")

UTC = dt.timezone.utc


# ---------------------------------------------------------------------------------------------- helpers

def person(shop, phone, *, name=None, spent=None, orders=0, last_order_days=None, status="subscribed"):
    """A subscriber, linked to a customer with these facts when `spent` is given."""
    customer = None
    if spent is not None:
        last = utcnow() - dt.timedelta(days=last_order_days) if last_order_days is not None else None
        customer = factories.customer(Session, shop, phone=phone, first_name=name, money_spent=Decimal(str(spent)),
                                      orders_count=orders, last_order_at=last, first_order_at=last)
    return factories.subscriber(Session, shop, phone=phone, status=status, subscribed_at=utcnow(), customer=customer,
                                first_name=name)


def total(model) -> int:
    """Rows of a table in every shop (requests leave the test's session bound to their shop)."""
    return Session.scalar(select(func.count()).select_from(model).execution_options(all_shops=True))


def segment(shop, definition, name=None, **fields):
    """A segment of `shop` with this definition (not built); committed."""
    return factories.segment(Session, shop, definition, name=name, **fields)


def form_of(definition, name="", segment_id=None) -> tuple[MultiDict, segment_form.Group]:
    """What the builder page posts for a definition, and the tree (its keys) it was made from."""
    tree = segment_form.definition_to_tree(definition)
    pairs = segment_form.form_data(tree, name)
    if segment_id is not None:
        pairs.append(("segment_id", str(segment_id)))
    return MultiDict(pairs), tree


class _FormReader(HTMLParser):
    """The (name, value) pairs a browser would submit for one <form id=...> of a page, in document order."""

    def __init__(self, form_id: str):
        super().__init__(convert_charrefs=True)
        self.form_id, self.inside, self.pairs = form_id, False, []
        self._select: dict | None = None
        self._textarea: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("id") == self.form_id:
            self.inside = True
        if not self.inside or "disabled" in attrs:
            return
        if tag == "input" and attrs.get("name"):
            if attrs.get("type") in ("checkbox", "radio") and "checked" not in attrs:
                return
            if attrs.get("type") not in ("button", "submit"):
                self.pairs.append((attrs["name"], attrs.get("value") or ""))
        elif tag == "select" and attrs.get("name"):
            self._select = {"name": attrs["name"], "first": None, "chosen": None, "multiple": "multiple" in attrs}
        elif tag == "option" and self._select is not None:
            value = attrs.get("value") or ""
            if self._select["first"] is None:
                self._select["first"] = value
            if "selected" in attrs and self._select["multiple"]:  # a multiple select sends each chosen option
                self.pairs.append((self._select["name"], value))
            elif "selected" in attrs:
                self._select["chosen"] = value
        elif tag == "textarea" and attrs.get("name"):
            self._textarea = {"name": attrs["name"], "text": ""}

    def handle_data(self, data):
        if self._textarea is not None:
            self._textarea["text"] += data

    def handle_endtag(self, tag):
        if tag == "form" and self.inside:
            self.inside = False
        elif tag == "select" and self._select is not None:
            chosen = self._select["chosen"] if self._select["chosen"] is not None else self._select["first"]
            if chosen is not None and not self._select["multiple"]:
                self.pairs.append((self._select["name"], chosen))
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            # A browser drops one leading newline of a textarea and submits line breaks as CRLF.
            text = self._textarea["text"]
            text = text[1:] if text.startswith("\n") else text
            self.pairs.append((self._textarea["name"], text.replace("\r\n", "\n").replace("\n", "\r\n")))
            self._textarea = None


def submitted(html: str, form_id: str = "segment-builder") -> MultiDict:
    reader = _FormReader(form_id)
    reader.feed(html)
    assert reader.pairs, f"no form #{form_id} in the page"
    return MultiDict(reader.pairs)


def errors_beside(html: str, key: str) -> str:
    """The text of the error slot of one row or group."""
    found = re.search(rf'<div class="node-errors" id="errors-{key}"[^>]*>(.*?)</div>', html, re.S)
    assert found, f"no error slot for {key}"
    return html_module.unescape(re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def count_of(html: str) -> int:
    found = re.search(r'id="segment-preview-count">([\d,]+)<', html)
    assert found, "the preview shows no count"
    return int(found.group(1).replace(",", ""))


@pytest.fixture
def page_headers(shop, token_for):
    """A full (non-htmx) request with a valid session token."""
    return {"Authorization": f"Bearer {token_for(shop.domain)}"}


@pytest.fixture
def shoppers(shop, other_shop):
    """Four subscribers of the shop with known spend and last order, one unsubscribed, one of the other shop."""
    return {
        "ada": person(shop, "+12125550101", name="Ada", spent="120.00", orders=3, last_order_days=3),
        "bob": person(shop, "+12125550102", name="Bob", spent="20.00", orders=1, last_order_days=10),
        "cy": person(shop, "+12125550103", name="Cy", spent="80.00", orders=2, last_order_days=60),
        "dee": person(shop, "+12125550104", name="Dee"),
        "gone": person(shop, "+12125550105", name="Gone", spent="500", orders=4, last_order_days=1,
                       status="unsubscribed"),
        "theirs": person(other_shop, "+12125550199", name="Mallory", spent="900", orders=9, last_order_days=1),
    }


EXAMPLE = where(rule("last_order_created", "eq", "last_30_days"), rule("money_spent", "gt", 25))
"""The Kinnekt example: ordered in the last 30 days and spent over $25."""



# ---------------------------------------------------------------------------------------------- the list

def test_list_shows_counts_times_summaries_and_actions(client, auth, shop, other_shop):
    auto = segment(shop, where(rule("subscription_source", "eq", "all")), "All subscribers", kind="auto",
                   auto_source="all", member_count=7)
    mine = segment(shop, EXAMPLE, "Recent spenders", member_count=1234, build_status="done",
                   last_built_at=dt.datetime(2026, 3, 5, 2, 5, tzinfo=UTC))
    segment(other_shop, EXAMPLE, "Their segment")
    html = client.get("/segments/", headers=auth).get_data(as_text=True)
    assert html.lstrip().startswith('<section id="segments-page"')
    assert "Their segment" not in html
    assert html.index("All subscribers") < html.index("Recent spenders")
    assert "1,234" in html and "Mar 4, 2026, 9:05 PM" in html  # shop time (New York)
    assert ('<summary><span class="when-closed">Show more</span><span class="when-open">Show less</span></summary>'
            in html)
    assert "<li>Last order was in the last 30 days</li>" in html
    assert "<li>AND Money spent is greater than $25.00</li>" in html
    assert "<li>Subscription source is Any source</li>" in html
    assert f'href="/segments/{mine.id}/edit"' in html and f'href="/segments/{auto.id}/edit"' not in html
    for ident in (auto.id, mine.id):
        assert f'hx-post="/segments/{ident}/copy"' in html
        assert f'hx-get="/segments/{ident}/delete"' in html
        assert f'href="/segments/{ident}/members.csv"' in html


def test_a_building_segment_polls_its_row_until_the_build_is_over(client, auth, shop, other_shop):
    pending = segment(shop, EXAMPLE, "Just made", build_status="pending")
    html = client.get("/segments/", headers=auth).get_data(as_text=True)
    assert f'hx-get="/segments/{pending.id}/build" hx-trigger="every 1s"' in html
    assert "Counting…" in html and "Not built yet" not in html

    polled = client.get(f"/segments/{pending.id}/build", headers=auth)
    assert polled.status_code == 200 and 'hx-trigger="every 1s"' in polled.get_data(as_text=True)
    Session.execute(Segment.__table__.update().where(Segment.id == pending.id).values(
        build_status="done", member_count=154, last_built_at=dt.datetime(2026, 3, 5, 2, 5, tzinfo=UTC)))
    Session.commit()
    Session.expire_all()
    polled = client.get(f"/segments/{pending.id}/build", headers=auth)
    body = polled.get_data(as_text=True)
    assert polled.status_code == 286 and "every 1s" not in body  # 286 stops the polling
    assert f'<template data-swap-by-id><span id="segment-count-{pending.id}">154</span></template>' in body
    assert "Mar 4, 2026, 9:05 PM" in body

    theirs = segment(other_shop, EXAMPLE, "Theirs", build_status="pending")
    for missing in (theirs.id, theirs.id + 1000):  # another shop's and a deleted one answer alike: stop, nothing
        gone = client.get(f"/segments/{missing}/build", headers=auth)
        assert gone.status_code == 286 and gone.get_data(as_text=True) == ""


def test_empty_list_offers_the_suggested_segments(client, auth, shop):
    from kinnekt.segments import service
    html = client.get("/segments/", headers=auth).get_data(as_text=True)
    assert "No segments yet" in html and "<table" not in html
    assert "Suggested segments" in html
    for suggestion in service.suggested_segments():
        assert suggestion.name.replace("'", "&#39;") in html
    assert "Ordered in last 30 days and spent over $25" in html


def test_creating_a_suggested_segment(client, auth, shop, app):
    from kinnekt.segments import service
    first = service.suggested_segments()[0]
    response = client.post("/segments/suggested", data={"suggestion": "0"}, headers=auth)
    assert response.status_code == 200
    assert json.loads(response.headers["HX-Trigger"])["toast"]["message"] == f"Created “{first.name}”"
    created = Session.scalars(select(Segment).where(Segment.shop_id == shop.id)).one()
    assert created.name == first.name and created.definition == rules.normalise(first.definition)
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="segments-page"')
    assert "Recent buyers" not in html  # no longer suggested
    again = client.post("/segments/suggested", data={"suggestion": "0"}, headers=auth)
    assert json.loads(again.headers["HX-Trigger"])["toast"]["isError"] is True
    assert total(Segment) == 1
    assert client.post("/segments/suggested", data={"suggestion": "99"}, headers=auth).status_code == 400


def test_copy_makes_an_editable_copy(client, auth, shop, other_shop):
    auto = segment(shop, where(rule("subscription_source", "eq", "keyword")), "Keyword", kind="auto",
                   auto_source="keyword")
    response = client.post(f"/segments/{auto.id}/copy", headers=auth)
    assert response.status_code == 200 and "Copy of Keyword" in response.get_data(as_text=True)
    copied = Session.scalars(select(Segment).where(Segment.name == "Copy of Keyword")).one()
    assert copied.kind == "manual" and copied.definition == auto.definition and copied.shop_id == shop.id
    theirs = segment(other_shop, EXAMPLE, "Theirs")
    assert client.post(f"/segments/{theirs.id}/copy", headers=auth).status_code == 404


def test_delete_asks_first_naming_the_scheduled_campaigns(client, auth, shop, shoppers):
    used = segment(shop, EXAMPLE, "Used one")
    campaign = add(Campaign(shop_id=shop.id, name="Spring sale", status="scheduled",
                            send_at=utcnow() + dt.timedelta(days=1)))
    add(CampaignSegment(shop_id=shop.id, campaign_id=campaign.id, segment_id=used.id))
    response = client.get(f"/segments/{used.id}/delete", headers=auth)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and '<dialog class="modal" id="segment-delete-dialog"' in html
    assert "Campaign “Spring sale” (Scheduled)" in html
    assert f'hx-delete="/segments/{used.id}"' in html
    assert Session.get(Segment, used.id) is not None  # asking deletes nothing

    response = client.delete(f"/segments/{used.id}", headers=auth)
    assert response.status_code == 200 and "Used one" not in response.get_data(as_text=True)
    assert json.loads(response.headers["HX-Trigger"])["toast"]["message"] == "Deleted “Used one”"
    Session.expire_all()
    assert Session.get(Segment, used.id) is None
    assert total(Subscriber) == len(shoppers)  # subscribers untouched


def test_unused_segment_dialog_says_nothing_uses_it(client, auth, shop):
    unused = segment(shop, EXAMPLE, "Unused")
    html = client.get(f"/segments/{unused.id}/delete", headers=auth).get_data(as_text=True)
    assert "Nothing uses this segment" in html
    assert Session.get(Segment, unused.id) is not None


def test_delete_of_another_shops_segment_is_not_found(client, auth, other_shop):
    theirs = segment(other_shop, EXAMPLE, "Theirs")
    assert client.get(f"/segments/{theirs.id}/delete", headers=auth).status_code == 404
    assert client.delete(f"/segments/{theirs.id}", headers=auth).status_code == 404
    Session.expire_all()
    assert Session.get(Segment, theirs.id) is not None


def test_export_streams_the_members_as_csv(client, auth, shop, other_shop, shoppers):
    spenders = segment(shop, where(rule("money_spent", "gt", 25)), "Big spenders!")
    response = client.get(f"/segments/{spenders.id}/members.csv", headers=auth)
    assert response.status_code == 200 and response.is_streamed
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == 'attachment; filename="Big-spenders-members.csv"'
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0].startswith("phone,")
    assert sorted(line.split(",")[0] for line in lines[1:]) == ["+12125550101", "+12125550103"]
    theirs = segment(other_shop, EXAMPLE, "Theirs")
    assert client.get(f"/segments/{theirs.id}/members.csv", headers=auth).status_code == 404


def test_export_accepts_the_token_in_the_url_for_downloads(client, shop, token_for):
    spenders = segment(shop, where(rule("money_spent", "gt", 25)), "Spenders")
    response = client.get(f"/segments/{spenders.id}/members.csv?id_token={token_for(shop.domain)}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert client.get(f"/segments/{spenders.id}/members.csv").status_code != 200


# ---------------------------------------------------------------------------------------------- builder pages

def test_new_builder_page_lists_every_field_by_category(client, page_headers, shop):
    response = client.get("/segments/new", headers=page_headers)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and html.startswith("<!doctype html>")
    assert 'id="segment-builder"' in html and "Create segment" in html
    assert "js/segment-builder.js" in html
    groups = re.findall(r'<optgroup label="([^"]+)">', html)
    assert groups[:len(labels.CATEGORIES)] == list(labels.CATEGORIES)
    offered = set(re.findall(r'<option value="([a-z_]+)"', html.split("<optgroup", 1)[1].split("</select>", 1)[0]))
    assert offered == set(FIELDS)
    assert count_of(html) == 0  # no subscribers yet; the starting rule matches everyone


def test_catalogue_covers_the_contract():
    assert {info.name for info in labels.CATALOGUE} == set(FIELDS)
    assert {info.category for info in labels.CATALOGUE} == set(labels.CATEGORIES)
    for name, spec in FIELDS.items():
        if spec.kind == "line_items":
            for attribute, ops in spec.attributes.items():
                assert [op for op, _ in labels.ops_for(name, attribute)] == list(ops)
        elif spec.kind == "property":
            for kind, ops in spec.attributes.items():
                assert [op for op, _ in labels.ops_for(name, f"{kind}:size")] == list(ops)
                assert all(label and "_" not in label for _, label in labels.ops_for(name, f"{kind}:size"))
        else:
            assert [op for op, _ in labels.ops_for(name)] == list(spec.ops)
        assert all(label and "_" not in label for _, label in labels.ops_for(name))


def test_edit_page_shows_the_segment_rules(client, auth, shop):
    mine = segment(shop, EXAMPLE, "Recent spenders")
    response = client.get(f"/segments/{mine.id}/edit", headers=auth)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and html.lstrip().startswith('<section id="segment-builder-page"')
    assert 'value="Recent spenders"' in html and "Update segment" in html
    assert segment_form.parse_form(submitted(html)).definition == rules.normalise(EXAMPLE)


def test_auto_and_other_shops_segments_cannot_be_edited(client, auth, shop, other_shop):
    auto = segment(shop, where(rule("subscription_source", "eq", "all")), "All subscribers", kind="auto",
                   auto_source="all")
    response = client.get(f"/segments/{auto.id}/edit", headers=auth)
    assert response.status_code == 404 and "Automatic segments cannot be edited" in response.get_data(as_text=True)
    form, _ = form_of(EXAMPLE, "Hijack")
    assert client.post(f"/segments/{auto.id}", data=form, headers=auth).status_code == 404
    theirs = segment(other_shop, EXAMPLE, "Theirs")
    assert client.get(f"/segments/{theirs.id}/edit", headers=auth).status_code == 404
    assert client.post(f"/segments/{theirs.id}", data=form, headers=auth).status_code == 404
    Session.expire_all()
    assert Session.get(Segment, theirs.id).name == "Theirs" and Session.get(Segment, auto.id).definition["rules"]


EVERY_KIND = where(
    rule("subscription_source", "neq", "keyword"),
    rule("keyword", "eq", "SALE"),
    rule("subscribed_at", "eq", {"from": "2026-01-01", "to": "2026-01-31"}),
    rule("country", "in", ["US", "CA"]),
    rule("carrier", "not_in", ["verizon wireless", "t-mobile"]),
    rule("money_spent", "between", ["10.5", "99.99"]),
    rule("average_money_spent", "gte", "12.3456"),
    rule("number_of_orders", "lt", 4),
    rule("last_order_created", "within_last_days", 30),
    rule("first_order_created", "before", "2025-12-01"),
    rule("customer_created", "never"),
    rule("city", "neq", "boston"),
    where(rule("tags", "contains", "vip"), rule("ordered_product", "eq", ["1001", "1002"]),
          where(rule("ordered_collection", "neq", ["2001"]),
                rule("line_items", "contains", "shirt", attribute="product_title"),
                rule("line_items", "lte", 3, attribute="quantity"), match="all"), match="any"),
    rule("fulfillment_status", "eq", "partially_fulfilled"),
    rule("payment_status", "neq", "unpaid"),
    rule("order_cancelled", "eq", "no"),
    rule("sent_count", "between", [1, 5]),
    rule("last_clicked", "more_than_days_ago", 14),
    rule("event", "performed", event="clicked_link", within={"last_days": 7}, at_least=2),
    rule("event", "not_performed", event="started_checkout", within={"from": "2026-02-01", "to": "2026-02-14"}),
    rule("line_items", "eq", "555", attribute="variant_id"),
    rule("lifecycle_stage", "in", ["loyal", "high_potential"]),
    rule("previous_lifecycle_stage", "eq", "loyal"),
    rule("expected_next_order", "more_than_days_ago", 14),
    rule("event", "performed", event="received_discount", within={"last_days": 7}),
    rule("event", "not_performed", event="used_discount", within={"last_days": 7}),
)


def test_every_kind_of_rule_survives_the_rendered_builder(client, auth, shop):
    add(Keyword(shop_id=shop.id, word="SALE"))
    add(Product(shop_id=shop.id, shopify_id=1001, title="Blue shirt"), Product(shop_id=shop.id, shopify_id=1002,
                                                                                  title="Red hat"))
    add(Collection(shop_id=shop.id, shopify_id=2001, title="Summer"))
    vips = add(StaticList(shop_id=shop.id, name="VIP list"))
    other = segment(shop, where(rule("money_spent", "gt", 100)), "Big spenders")
    definition = where(*EVERY_KIND["rules"], rule("segment", "not_in", other.id), rule("list", "in", vips.id))
    mine = segment(shop, rules.normalise(definition), "Everything")
    html = client.get(f"/segments/{mine.id}/edit", headers=auth).get_data(as_text=True)
    assert "Blue shirt" in html and "Red hat" in html and "Summer" in html  # chosen items shown as tags
    assert segment_form.parse_form(submitted(html)).definition == rules.normalise(definition)
    # and it saves as it is
    response = client.post(f"/segments/{mine.id}", data=submitted(html), headers=auth)
    assert "HX-Location" in response.headers, errors_in(response.get_data(as_text=True))


def errors_in(html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", " ", e).strip() for e in re.findall(r'<p class="field__error">(.*?)</p>', html, re.S)]


@pytest.fixture
def editable(shop):
    """A segment whose definition the property test below replaces, and the references definitions may use."""
    refs = [segment(shop, where(rule("country", "eq", "US")), f"Ref {i}").id for i in range(2)]
    lists = [add(StaticList(shop_id=shop.id, name=f"List {i}")).id for i in range(2)]
    return segment(shop, where(rule("country", "eq", "US")), "Edited"), refs, lists


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=definitions(segment_ids=(1, 2), list_ids=(1, 2)).map(rules.normalise))
def test_any_valid_definition_round_trips_through_the_rendered_form(client, auth, editable, data):
    mine, refs, lists = editable

    def remap(node):  # the strategy names segments and lists 1 and 2: use the shop's real ones
        if "field" not in node:
            return {**node, "rules": [remap(item) for item in node["rules"]]}
        if node["field"] in ("segment", "list"):
            return {**node, "value": (refs if node["field"] == "segment" else lists)[node["value"] - 1]}
        return node

    definition = remap(data)
    Session.execute(Segment.__table__.update().where(Segment.id == mine.id).values(definition=definition))
    Session.commit()
    Session.expire_all()
    html = client.get(f"/segments/{mine.id}/edit", headers=auth).get_data(as_text=True)
    assert segment_form.parse_form(submitted(html)).definition == definition


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(definitions())
def test_definition_to_form_rows_and_back_is_the_identity(definition):
    normalised = rules.normalise(definition)
    form, _ = form_of(normalised, "x")
    parsed = segment_form.parse_form(form)
    assert parsed.definition == normalised
    assert rules.normalise(parsed.definition) == normalised


# ---------------------------------------------------------------------------------------------- live preview

def test_preview_counts_and_samples_the_members(client, auth, shop, shoppers):
    form, _ = form_of(EXAMPLE)
    response = client.post("/segments/preview", data=form, headers=auth)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and 'id="segment-preview"' in html
    assert count_of(html) == 1  # Ada: spent 120, ordered 3 days ago (Bob spent 20, Cy ordered 60 days ago)
    assert "+12125550101" in html and "Ada" in html
    assert "+12125550199" not in html and "+12125550105" not in html  # other shop, unsubscribed
    everyone, _ = form_of(None)
    assert count_of(client.post("/segments/preview", data=everyone, headers=auth).get_data(as_text=True)) == 4


def test_preview_sample_is_at_most_ten(client, auth, shop):
    for n in range(12):
        person(shop, f"+1212555{n:04d}")
    form, _ = form_of(None)
    html = client.post("/segments/preview", data=form, headers=auth).get_data(as_text=True)
    assert count_of(html) == 12
    assert html.count('<span class="monospace">') == 10 and "and 2 more" in html


def test_preview_puts_each_error_beside_its_rule(client, auth, shop, shoppers):
    definition = where(rule("money_spent", "gt", "12.34567"),
                       where(rule("number_of_orders", "gte", 1), rule("number_of_orders", "eq", 2.5), match="any"))
    form, tree = form_of(definition)
    bad_money, inner = tree.items
    good, bad_whole = inner.items
    html = client.post("/segments/preview", data=form, headers=auth).get_data(as_text=True)
    assert "Fix the highlighted rules" in html and 'id="segment-preview-count"' not in html
    assert errors_beside(html, bad_money.key) == "Value must have at most 4 decimal places"
    assert errors_beside(html, bad_whole.key) == "Value must be a whole number"
    assert errors_beside(html, good.key) == "" and errors_beside(html, inner.key) == ""
    carried = html.split("<template data-swap-by-id>", 1)[1].split("</template>", 1)[0]  # put beside the row
    assert f'id="errors-{bad_money.key}"' in carried and "hx-swap-oob" not in html


def test_preview_waits_quietly_for_a_value_not_typed_yet(client, auth, shop):
    form, tree = form_of(where(rule("money_spent", "gt", 1)))
    row = tree.items[0]
    form.setlist(row.name("value"), [""])
    html = client.post("/segments/preview", data=form, headers=auth).get_data(as_text=True)
    assert "Fill in every rule to see who matches." in html and errors_beside(html, row.key) == ""


def test_preview_of_an_empty_group_says_so_beside_the_group(client, auth, shop):
    form = MultiDict([("item", "group:root:"), ("group-root-match", "all"), ("item", "group:g1:root"),
                      ("group-g1-match", "any")])
    html = client.post("/segments/preview", data=form, headers=auth).get_data(as_text=True)
    assert errors_beside(html, "g1") == "A group holds 1 to 50 items (this one has 0)"


def test_preview_refuses_another_shops_products_segments_and_lists(client, auth, shop, other_shop):
    add(Product(shop_id=shop.id, shopify_id=11, title="Ours"), Product(shop_id=other_shop.id, shopify_id=22,
                                                                        title="Theirs"))
    theirs = segment(other_shop, EXAMPLE, "Their segment")
    their_list = add(StaticList(shop_id=other_shop.id, name="Their list"))
    definition = where(rule("ordered_product", "eq", ["11", "22"]), rule("segment", "in", theirs.id),
                       rule("list", "not_in", their_list.id))
    form, tree = form_of(definition)
    html = client.post("/segments/preview", data=form, headers=auth).get_data(as_text=True)
    products, segments, lists = tree.items
    assert errors_beside(html, products.key) == "Item 2: there is no product 22 in this shop"
    assert errors_beside(html, segments.key) == f"Value: there is no segment {theirs.id} in this shop"
    assert errors_beside(html, lists.key) == f"Value: there is no list {their_list.id} in this shop"


def test_preview_of_a_malformed_form_is_a_bad_request(client, auth, shop):
    for form in (MultiDict([("name", "x")]), MultiDict([("item", "rule:a:nowhere")]),
                 MultiDict([("item", "group:root:"), ("item", "group:root:")]),
                 MultiDict([("item", "group:ROOT!:")])):
        assert client.post("/segments/preview", data=form, headers=auth).status_code == 400


# ---------------------------------------------------------------------------------------------- saving

def test_create_saves_the_normalised_definition_and_goes_to_the_list(client, auth, app, shop, shoppers):
    form, _ = form_of(EXAMPLE, "  Recent   spenders ")
    response = client.post("/segments/", data=form, headers=auth)
    assert response.status_code == 200
    assert json.loads(response.headers["HX-Location"]) == {"path": "/segments/", "target": "#main"}
    assert "Created “Recent spenders”" in json.loads(response.headers["HX-Trigger"])["toast"]["message"]
    saved = Session.scalars(select(Segment).where(Segment.shop_id == shop.id)).one()
    assert saved.name == "Recent spenders" and saved.kind == "manual"
    assert saved.definition == rules.normalise(EXAMPLE)
    app.extensions["kinnekt_queue"].drain()
    Session.expire_all()
    assert Session.get(Segment, saved.id).member_count == 1  # built in the background
    listed = client.get("/segments/", headers=auth).get_data(as_text=True)
    assert "Recent spenders" in listed


def test_a_plain_form_post_is_redirected(client, shop, token_for):
    form, _ = form_of(EXAMPLE, "Plain")
    response = client.post("/segments/", data=form, headers={"Authorization": f"Bearer {token_for(shop.domain)}"})
    assert response.status_code == 303 and response.headers["Location"] == "/segments/"


def test_errors_show_beside_the_rule_and_nothing_is_saved(client, auth, shop):
    definition = where(rule("money_spent", "gt", 25), rule("last_order_created", "eq", {"from": "2026-02-10",
                                                                                         "to": "2026-02-01"}))
    form, tree = form_of(definition, "Broken")
    response = client.post("/segments/", data=form, headers=auth)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "HX-Location" not in response.headers
    assert html.lstrip().startswith('<form id="segment-builder"')
    assert errors_beside(html, tree.items[1].key) == "Start date must not be after the end date"
    assert errors_beside(html, tree.items[0].key) == ""
    assert 'value="Broken"' in html and 'value="2026-02-10"' in html  # what was typed stays
    assert total(Segment) == 0


def test_a_missing_value_is_required_on_save(client, auth, shop):
    form, tree = form_of(where(rule("money_spent", "gt", 1)), "Needs a value")
    form.setlist(tree.items[0].name("value"), [""])
    html = client.post("/segments/", data=form, headers=auth).get_data(as_text=True)
    assert errors_beside(html, tree.items[0].key) == "Value is required"
    assert total(Segment) == 0


@pytest.mark.parametrize("name,message", [("", "Enter a name for the segment."),
                                          ("x" * 256, "The name can be at most 255 characters.")])
def test_a_name_is_required(client, auth, shop, name, message):
    form, _ = form_of(EXAMPLE, name)
    html = client.post("/segments/", data=form, headers=auth).get_data(as_text=True)
    assert message in html and 'id="segment-name-error"' in html
    assert total(Segment) == 0


def test_a_taken_name_is_refused(client, auth, shop):
    segment(shop, EXAMPLE, "Taken")
    form, _ = form_of(where(rule("money_spent", "gt", 1)), "Taken")
    html = client.post("/segments/", data=form, headers=auth).get_data(as_text=True)
    assert "already exists" in html and 'id="segment-name-error"' in html
    assert total(Segment) == 1


def test_other_shops_product_ids_are_rejected_on_save(client, auth, shop, other_shop):
    add(Product(shop_id=other_shop.id, shopify_id=22, title="Theirs"))
    form, tree = form_of(where(rule("ordered_product", "eq", ["22"])), "Sneaky")
    html = client.post("/segments/", data=form, headers=auth).get_data(as_text=True)
    assert errors_beside(html, tree.items[0].key) == "Item 1: there is no product 22 in this shop"
    assert total(Segment) == 0


def test_update_changes_name_and_rules(client, auth, app, shop, shoppers):
    mine = segment(shop, where(rule("money_spent", "gt", 1000)), "Whales")
    form, _ = form_of(EXAMPLE, "Recent spenders", segment_id=mine.id)
    response = client.post(f"/segments/{mine.id}", data=form, headers=auth)
    assert response.status_code == 200 and "HX-Location" in response.headers
    assert "Saved “Recent spenders”" in json.loads(response.headers["HX-Trigger"])["toast"]["message"]
    Session.expire_all()
    saved = Session.get(Segment, mine.id)
    assert saved.name == "Recent spenders" and saved.definition == rules.normalise(EXAMPLE)
    app.extensions["kinnekt_queue"].drain()


def test_a_segment_cannot_refer_to_itself(client, auth, shop):
    mine = segment(shop, where(rule("money_spent", "gt", 1)), "Self")
    form, tree = form_of(where(rule("segment", "in", mine.id)), "Self", segment_id=mine.id)
    html = client.post(f"/segments/{mine.id}", data=form, headers=auth).get_data(as_text=True)
    assert errors_beside(html, tree.items[0].key) == "Value: a segment cannot refer to itself"
    Session.expire_all()
    assert Session.get(Segment, mine.id).definition == where(rule("money_spent", "gt", 1))


# ---------------------------------------------------------------------------------------------- builder pieces

def test_add_rule_and_add_group(client, auth, shop):
    response = client.get("/segments/builder/rule?parent=root", headers=auth)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and response.headers["HX-Trigger-After-Swap"] == "segment-rules-changed"
    assert re.search(r'<input type="hidden" name="item" value="rule:[a-z0-9]+:root">', html)
    response = client.get("/segments/builder/group?parent=root&depth=2", headers=auth)
    html = response.get_data(as_text=True)
    assert re.search(r'name="item" value="group:([a-z0-9]+):root"', html)
    group_key = re.search(r'name="item" value="group:([a-z0-9]+):root"', html).group(1)
    assert 'value="rule:' in html and f':{group_key}"' in html  # it holds one rule
    assert "Add group" in html  # depth 2 may nest again
    deepest = client.get("/segments/builder/group?parent=abc&depth=4", headers=auth).get_data(as_text=True)
    assert "Add rule" in deepest and "Add group" not in deepest
    assert client.get("/segments/builder/group?parent=abc&depth=5", headers=auth).status_code == 400
    assert client.get("/segments/builder/rule?parent=../x", headers=auth).status_code == 400


def test_changing_the_field_rerenders_the_row_for_it(client, auth, shop):
    row = segment_form.new_row()  # Subscription source is Any source
    args = [("item", f"rule:{row.key}:root"), (row.name("field"), "money_spent"), (row.name("op"), "eq"),
            (row.name("value"), "all"), (row.name("shown-field"), "subscription_source"),
            (row.name("widget"), "choice")]
    response = client.get("/segments/builder/rule", query_string=args, headers=auth)
    html = response.get_data(as_text=True)
    assert f'id="node-{row.key}"' in html and f'value="rule:{row.key}:root"' in html
    assert '<option value="gt">is greater than</option>' in html and 'type="number"' in html
    assert f'name="{row.name("value")}" type="number" value=""' in html  # the old value is gone
    # changing the operator to `between` turns the value into two inputs, keeping the field
    args = [("item", f"rule:{row.key}:root"), (row.name("field"), "money_spent"), (row.name("op"), "between"),
            (row.name("value"), "25"), (row.name("shown-field"), "money_spent"), (row.name("widget"), "money")]
    html = client.get("/segments/builder/rule", query_string=args, headers=auth).get_data(as_text=True)
    assert f'name="{row.name("lo")}"' in html and f'name="{row.name("hi")}"' in html
    # "is" -> "is greater than" needs the same inputs: nothing to redraw (what is typed meanwhile stays)
    args = [("item", f"rule:{row.key}:root"), (row.name("field"), "money_spent"), (row.name("op"), "gt"),
            (row.name("value"), "2"), (row.name("shown-field"), "money_spent"), (row.name("widget"), "money"),
            (row.name("shape"), "money_spent//money/")]
    response = client.get("/segments/builder/rule", query_string=args, headers=auth)
    assert response.status_code == 204 and response.get_data() == b""
    # a period set to "Custom range" shows the two dates
    args = [("item", f"rule:{row.key}:root"), (row.name("field"), "last_order_created"), (row.name("op"), "eq"),
            (row.name("value"), "custom"), (row.name("shown-field"), "last_order_created"),
            (row.name("widget"), "period")]
    html = client.get("/segments/builder/rule", query_string=args, headers=auth).get_data(as_text=True)
    assert f'name="{row.name("from")}" type="date"' in html and f'name="{row.name("to")}" type="date"' in html


def test_picker_searches_only_the_shops_catalog(client, auth, shop, other_shop):
    add(Product(shop_id=shop.id, shopify_id=11, title="Blue shirt"),
        Product(shop_id=shop.id, shopify_id=12, title="Red shirt"),
        Product(shop_id=shop.id, shopify_id=13, title="Socks"),
        Product(shop_id=other_shop.id, shopify_id=99, title="Their shirt"),
        Collection(shop_id=shop.id, shopify_id=21, title="Shirts"))
    html = client.get("/segments/builder/products?key=abc&q=shirt", headers=auth).get_data(as_text=True)
    assert html.lstrip().startswith('<ul class="picker__results" id="picker-abc"')
    assert re.findall(r'>([^<>]+)</button>', html) == ["Blue shirt", "Red shirt"]
    assert "/segments/builder/products/pick?key=abc&amp;id=11" in html
    html = client.get("/segments/builder/collections?key=abc&q=", headers=auth).get_data(as_text=True)
    assert re.findall(r'>([^<>]+)</button>', html) == ["Shirts"]
    assert "No products match “hat”" in client.get("/segments/builder/products?key=abc&q=hat",
                                                    headers=auth).get_data(as_text=True)


def test_picking_adds_a_removable_tag_once(client, auth, shop, other_shop):
    add(Product(shop_id=shop.id, shopify_id=11, title="Blue shirt"),
        Product(shop_id=other_shop.id, shopify_id=99, title="Their shirt"))
    response = client.get("/segments/builder/products/pick?key=abc&id=11", headers=auth)
    html = response.get_data(as_text=True)
    assert 'name="rule-abc-value" value="11"' in html and "Blue shirt" in html and "data-remove-tag" in html
    assert '<template data-swap-by-id><ul class="picker__results" id="picker-abc"></ul></template>' in html  # closes
    assert response.headers["HX-Trigger-After-Swap"] == "segment-rules-changed"
    again = client.get("/segments/builder/products/pick?key=abc&id=11&rule-abc-value=11", headers=auth)
    assert again.status_code == 204
    assert client.get("/segments/builder/products/pick?key=abc&id=99", headers=auth).status_code == 404


def test_builder_routes_need_a_session_token(client, shop):
    for url in ("/segments/new", "/segments/builder/rule?parent=root", "/segments/builder/products?key=a"):
        assert client.get(url, headers={"HX-Request": "true"}).status_code == 401
    assert client.post("/segments/preview", headers={"HX-Request": "true"}).status_code == 401


# ---------------------------------------------------------------------------------------------- builder module

def test_errors_are_located_by_the_longest_node_path():
    paths = {"": "root", "rules[1]": "one", "rules[10]": "ten", "rules[1].rules[0]": "inner"}
    errors = [{"path": "rules[10].value", "message": "is required"},
              {"path": "rules[1].rules[0].value.from", "message": "is required"},
              {"path": "rules[1].rules", "message": "a group holds 1 to 50 items (this one has 0)"},
              {"path": "match", "message": "must be 'all' or 'any'"},
              {"path": "segment 4: rules[0].value", "message": "must be a number"}]
    assert segment_form.locate_errors(errors, paths) == [
        ("ten", "Value is required"), ("inner", "Start date is required"),
        ("one", "A group holds 1 to 50 items (this one has 0)"), ("root", "Match must be 'all' or 'any'"),
        (None, "segment 4: rules[0].value: must be a number")]


def test_summaries_read_like_sentences():
    names = references.Names(products={"1": "Blue shirt"}, segments={5: "VIPs"}, lists={6: "Event guests"})

    def money(amount):
        return f"${amount:,.2f}"

    lines = summaries.summary(where(
        rule("money_spent", "between", [10, 20]), rule("ordered_product", "neq", ["1", "2"]),
        rule("last_clicked", "more_than_days_ago", 1), rule("customer_created", "never"),
        rule("event", "performed", event="placed_order", within={"last_days": 7}, at_least=2),
        rule("event", "not_performed", event="clicked_link"),
        rule("segment", "not_in", 5), rule("list", "in", 6), rule("payment_status", "eq", "partially_paid"),
        where(rule("tags", "contains", "VIP"), rule("country", "in", ["us", "ca"]), match="any"),
        rule("line_items", "gt", "9.5", attribute="price"), rule("subscribed_at", "eq", "today"),
        rule("first_order_created", "after", "2026-01-31")), names, money)
    assert lines == [
        "Money spent is between $10.00 and $20.00",
        "AND Ordered product is none of Blue shirt, product 2",
        "AND Last link click was more than 1 day ago",
        "AND Became a customer never happened",
        "AND Event “Order placed” happened at least 2 times in the past 7 days",
        "AND Event “Link clicked” did not happen at any time",
        "AND Is not in segment “VIPs”",
        "AND Is on list “Event guests”",
        "AND Payment status of some order is Partially paid",
        "AND (Customer tags include vip OR Phone country is any of United States, Canada)",
        "AND Ordered line item price is greater than $9.50",
        "AND Subscribed was today",
        "AND First order was after Jan 31, 2026",
    ]
    assert summaries.summary({}) == [] and summaries.summary({"match": "all", "rules": []}) == []


def test_lifecycle_and_discount_rules_read_like_sentences():
    lines = summaries.summary(where(
        rule("lifecycle_stage", "not_in", ["dormant", "churned"]), rule("previous_lifecycle_stage", "eq", "loyal"),
        rule("expected_next_order", "before", "2026-04-01"),
        rule("event", "performed", event="received_discount", within={"last_days": 7}),
        rule("event", "not_performed", event="used_discount")))
    assert lines == [
        "Lifecycle stage is none of Dormant, Churned",
        "AND Previous lifecycle stage is Loyal",
        "AND Expected next order was before Apr 1, 2026",
        "AND Event “Discount code received” happened in the past 7 days",
        "AND Event “Discount code used” did not happen at any time",
    ]


def test_a_stage_list_is_a_multiple_select_and_switching_to_it_keeps_a_value():
    row = segment_form.new_row("lifecycle_stage")
    assert row.widget == "choice" and row.get("value") == "loyal"
    row.inputs["shown-field"], row.inputs["widget"] = ["lifecycle_stage"], ["choice"]
    row.set("op", "in")
    refreshed = segment_form.refresh_row(row)
    assert refreshed.widget == "choice_list" and segment_form.row_to_rule(refreshed) == rule(
        "lifecycle_stage", "in", ["loyal"])
    refreshed.set("value", "dormant", "churned")
    assert segment_form.row_to_rule(refreshed)["value"] == ["dormant", "churned"]
    refreshed.inputs.pop("value")
    assert "value" not in segment_form.row_to_rule(refreshed)  # nothing chosen: "is required"


def test_refresh_keeps_what_still_fits():
    row = segment_form.rule_to_row(rule("money_spent", "gt", "25"))
    row.inputs["shown-field"], row.inputs["widget"] = ["money_spent"], ["money"]
    row.set("op", "lte")
    assert segment_form.refresh_row(row).get("value") == "25"  # same kind of input: the amount stays
    row = segment_form.rule_to_row(rule("line_items", "eq", "55", attribute="product_id"))
    row.inputs["shown-field"], row.inputs["widget"] = ["line_items"], ["id"]
    row.set("attribute", "quantity")
    refreshed = segment_form.refresh_row(row)
    assert refreshed.op == "eq" and refreshed.widget == "number" and refreshed.get("value") == ""
    row.inputs["shown-field"], row.inputs["widget"] = ["line_items"], ["number"]
    row.set("attribute", "product_title")
    row.set("op", "between")  # not an operator of titles
    assert segment_form.refresh_row(row).op == "eq"


# ---------------------------------------------------------------------------------------------- profile properties

def test_property_rules_survive_the_rendered_builder_with_their_types(client, auth, shop):
    from kinnekt.subscribers import properties
    properties.add(Session, shop.id, "Shoe size", "number")
    properties.add(Session, shop.id, "Club", "text")
    properties.add(Session, shop.id, "Joined", "date")
    Session.commit()
    definition = where(rule("property", "anniversary_next_days", 7, attribute="birthday"),
                       rule("property", "between", ["9", "10.5"], attribute="shoe size"),
                       rule("property", "eq", "42", attribute="club"),  # looks like a number: still text
                       rule("property", "is_set", attribute="shoe size"),
                       rule("property", "eq", "last_30_days", attribute="joined"),
                       rule("property", "contains", "deu", attribute="language"))
    mine = segment(shop, rules.normalise(definition), "Profiles")
    html = client.get(f"/segments/{mine.id}/edit", headers=auth).get_data(as_text=True)
    assert '<option value="number:shoe size" selected>Shoe size</option>' in html
    assert '<option value="text:club" selected>Club</option>' in html
    assert segment_form.parse_form(submitted(html)).definition == rules.normalise(definition)
    response = client.post(f"/segments/{mine.id}", data=submitted(html), headers=auth)
    assert "HX-Location" in response.headers, errors_in(response.get_data(as_text=True))


def test_choosing_another_property_offers_the_operators_of_its_type(client, auth, shop):
    from kinnekt.subscribers import properties
    properties.add(Session, shop.id, "Shoe size", "number")
    Session.commit()
    row = segment_form.new_row("property")
    assert row.get("attribute") == "date:birthday" and row.widget == "period"
    args = [("item", f"rule:{row.key}:root"), (row.name("field"), "property"),
            (row.name("attribute"), "number:shoe size"), (row.name("op"), "eq"), (row.name("value"), "last_30_days"),
            (row.name("shown-field"), "property"), (row.name("widget"), "period")]
    html = client.get("/segments/builder/rule", query_string=args, headers=auth).get_data(as_text=True)
    assert '<option value="gt">is greater than</option>' in html and "is today (any year)" not in html
    assert f'name="{row.name("value")}" type="number" value=""' in html


def test_a_property_the_shop_does_not_have_is_an_error_beside_its_row(client, auth, shop):
    form, paths = form_of(where(rule("property", "gt", 3, attribute="hat size")), "Hats")
    html = client.post("/segments/", data=form, headers=auth).get_data(as_text=True)
    assert "Property: there is no property 'hat size' in this shop" in html_module.unescape(html)
    assert Session.scalar(select(func.count()).select_from(Segment)) == 0


def test_property_summaries_read_like_sentences():
    assert summaries.summary(where(rule("property", "anniversary_today", attribute="Birthday"),
                                 rule("property", "contains", "DEU", attribute="language"))) == [
        "Birthday is today (any year)", "AND Language contains deu"]
    assert summaries.summary(where(rule("property", "lte", 10, attribute="language"))) == []  # not a text operator
    assert summaries.describe_rule(rule("property", "anniversary_next_days", 7, attribute="birthday")) \
        == "Birthday is in the next 7 days (any year)"
    assert summaries.describe_rule(rule("property", "eq", "de", attribute="language")) == "Language is de"
