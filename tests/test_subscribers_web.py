"""The subscribers pages through the Flask test client: list filters and links, the detail page, unsubscribe /
resubscribe with their rules, manual add and CSV import with every bad input saving nothing; on both databases."""
from __future__ import annotations

import datetime as dt
import html as html_lib
import io
import json
import re
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kinnekt import defaults
from kinnekt.db import Session
from kinnekt.models import (Campaign, Click, Customer, InboundMessage, Keyword, Link, Message, Order, Segment,
                            SegmentMember, Subscriber, SubscriberImport, SubscriptionEvent)
from kinnekt.subscribers import optin
from tests import factories
from tests.factories import add
from tests.helpers import choices, draft_id, send_file, upload_csv as upload

pytestmark = pytest.mark.usefixtures("settled_jobs")

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # 10:00 AM in the shop's New York


def subscriber(shop, phone="+12125550101", **fields):
    """A subscriber of `shop`, subscribed at T0 unless told; committed."""
    fields.setdefault("subscribed_at", T0)
    return factories.subscriber(Session, shop, phone=phone, sent_count=0, clicks_count=0, **fields)


def count(model) -> int:
    """Rows in every shop (requests leave the test's session bound to their shop)."""
    return Session.scalar(select(func.count()).select_from(model).execution_options(all_shops=True))


def reload(row):
    Session.expire_all()
    return Session.get(type(row), row.id, populate_existing=True, execution_options={"all_shops": True})


def text(response) -> str:
    """The response body with tags dropped and whitespace collapsed, as the merchant reads it."""
    return html_lib.unescape(" ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split()))


def toast(response) -> dict:
    return json.loads(response.headers["HX-Trigger"])["toast"]


def field_error(response, field_id: str) -> str:
    """The text of the inline error beside a field (empty when there is none)."""
    match = re.search(rf'<p class="field__error" id="{field_id}-error">.*?<span>(.*?)</span></p>',
                      response.get_data(as_text=True), re.S)
    return html_lib.unescape(match.group(1)) if match else ""


# --- the list ---------------------------------------------------------------------------------------------

def test_each_row_links_to_its_detail_and_the_page_offers_add_and_import(client, auth, shop):
    sub = subscriber(shop)
    html = client.get("/subscribers/", headers=auth).get_data(as_text=True)
    assert f'<a href="/subscribers/{sub.id}">+12125550101</a>' in html
    assert 'href="/subscribers/new"' in html and 'href="/subscribers/import"' in html


def test_keyword_and_country_filters(client, auth, shop, other_shop):
    add(Keyword(shop_id=shop.id, word="JOIN"), Keyword(shop_id=shop.id, word="VIP"),
        Keyword(shop_id=other_shop.id, word="SECRET"))
    subscriber(shop, "+12125550101", source="keyword", keyword="JOIN", country="US")
    subscriber(shop, "+12125550102", source="keyword", keyword="VIP", country="US")
    subscriber(shop, "+442071838750", source="keyword", keyword="JOIN", country="GB")
    subscriber(other_shop, "+33612345678", country="FR", keyword="SECRET")

    html = client.get("/subscribers/", headers=auth).get_data(as_text=True)
    assert re.findall(r'<option value="([A-Z]*)"[^>]*>[^<]*</option>',
                      html.split('id="subscriber-keyword"')[1].split("</select>")[0]) == ["", "JOIN", "VIP"]
    countries = html.split('id="subscriber-country"')[1].split("</select>")[0]
    assert '<option value="GB">United Kingdom (GB)</option>' in countries
    assert '<option value="US">United States (US)</option>' in countries and "FR" not in countries

    def phones(query):
        html = client.get(f"/subscribers/?{query}", headers=auth).get_data(as_text=True)
        return sorted(re.findall(r'<a href="/subscribers/\d+">(\+\d+)</a>', html))

    assert phones("keyword=join") == ["+12125550101", "+442071838750"]
    assert phones("country=GB") == ["+442071838750"]
    assert phones("keyword=JOIN&country=US") == ["+12125550101"]
    assert phones("keyword=SECRET") == []  # another shop's keyword matches nobody here
    assert phones("country=FR") == []
    assert len(phones("keyword=no%20such!&country=USA")) == 3  # malformed values fall back to all
    html = client.get("/subscribers/?keyword=VIP&country=US&page=1", headers=auth).get_data(as_text=True)
    assert '<option value="VIP" selected>VIP</option>' in html
    assert '<option value="US" selected>United States (US)</option>' in html


# --- the detail page --------------------------------------------------------------------------------------

@pytest.fixture
def known(shop, other_shop):
    """A subscriber with a customer, history, messages both ways, clicks, orders and segments."""
    customer = add(Customer(shop_id=shop.id, shopify_id=501, first_name="Grace", last_name="Hopper",
                            email="grace@example.com", phone="+12125550101", orders_count=2,
                            money_spent=Decimal("150.50")))
    sub = subscriber(shop, "+12125550101", source="keyword", keyword="JOIN", country="US", carrier="Verizon",
                     timezone="America/New_York", customer_id=customer.id, first_name="Grace", consent_at=T0,
                     consent_text='Texted "JOIN" to +15550001111', consent_message_id="0B00000012345678")
    campaign = add(Campaign(shop_id=shop.id, name="Spring sale", body="Hi"))
    add(SubscriptionEvent(shop_id=shop.id, subscriber_id=sub.id, kind="pending", at=T0, source="keyword",
                          detail='Texted "JOIN"'),
        SubscriptionEvent(shop_id=shop.id, subscriber_id=sub.id, kind="confirmed", at=T0 + dt.timedelta(minutes=1),
                          source="keyword", detail="replied to confirm"))
    sent = add(Message(shop_id=shop.id, campaign_id=campaign.id, subscriber_id=sub.id, to_phone=sub.phone,
                       body="Spring sale: 20% off", status="delivered", sent_at=T0 + dt.timedelta(days=1)))
    add(Message(shop_id=shop.id, subscriber_id=sub.id, to_phone=sub.phone, kind="confirmation",
                body="Reply Y to confirm", status="failed", error_code="dlr-3",
                error_reason="failed: Absent subscriber (permanent)",
                sent_at=T0 + dt.timedelta(seconds=5)))
    add(InboundMessage(shop_id=shop.id, provider_id="in-1", subscriber_id=sub.id, from_phone=sub.phone,
                       text="JOIN", intent="keyword", received_at=T0),
        InboundMessage(shop_id=shop.id, provider_id="in-2", subscriber_id=sub.id, from_phone=sub.phone,
                       text="When does the sale end?", intent="other", received_at=T0 + dt.timedelta(days=2)))
    link = add(Link(shop_id=shop.id, code="abc123", url="https://alpha.example/sale", campaign_id=campaign.id,
                    subscriber_id=sub.id, message_id=sent.id))
    add(Click(shop_id=shop.id, link_id=link.id, campaign_id=campaign.id, subscriber_id=sub.id,
              at=T0 + dt.timedelta(days=1, hours=1)))
    add(Order(shop_id=shop.id, shopify_id=9001, customer_id=customer.id, name="#1001", created_at=T0,
              total_price=Decimal("100.00"), financial_status="paid", fulfillment_status="fulfilled"),
        Order(shop_id=shop.id, shopify_id=9002, customer_id=customer.id, name="#1002",
              created_at=T0 + dt.timedelta(days=3), total_price=Decimal("50.50"), financial_status="paid"))
    vip = add(Segment(shop_id=shop.id, name="VIP buyers", definition={"match": "all", "rules": []}))
    add(Segment(shop_id=shop.id, name="Not in this one", definition={"match": "all", "rules": []}))
    add(SegmentMember(shop_id=shop.id, segment_id=vip.id, subscriber_id=sub.id, entered_at=T0))
    # Another shop's rows about the same number must not show.
    theirs = subscriber(other_shop, "+12125550101", first_name="Mallory")
    add(InboundMessage(shop_id=other_shop.id, provider_id="in-x", subscriber_id=theirs.id, from_phone=sub.phone,
                       text="their secret", received_at=T0))
    return sub


def section(html: str, element_id: str) -> str:
    """The text of the card with this id."""
    part = html.split(f'id="{element_id}"', 1)[1].split("</section>", 1)[0]
    return html_lib.unescape(" ".join(re.sub(r"<[^>]+>", " ", part).split()))


def test_the_detail_page_shows_the_subscriber_in_full(client, auth, known):
    response = client.get(f"/subscribers/{known.id}", headers=auth)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="subscriber-detail">')
    summary = section(html, "subscriber-summary")
    for expected in ("Phone +12125550101", "National format (212) 555-0101", "Status Subscribed",
                     "Since Mar 2, 2026, 10:00 AM", "Source Keyword", "Keyword JOIN",
                     "Country United States (US)", "Carrier Verizon", "Time zone America/New_York"):
        assert expected in summary, expected
    assert '<span class="badge badge--success">Subscribed</span>' in html
    customer = section(html, "subscriber-customer")
    assert "Grace Hopper" in customer and "grace@example.com" in customer
    assert "Orders 2" in customer and "Amount spent $150.50" in customer
    consent = section(html, "subscriber-consent-record")
    assert "When Mar 2, 2026, 10:00 AM" in consent and 'Texted "JOIN" to +15550001111' in consent
    assert "Message id 0B00000012345678" in consent
    history = section(html, "subscriber-history")
    assert history.index("Confirmed") < history.index("Signed up, waiting for confirmation")  # newest first
    messages = section(html, "subscriber-messages")
    assert messages.index("Spring sale: 20% off") < messages.index("Reply Y to confirm")
    assert "Spring sale Delivered" in messages and "Confirmation Failed This number no longer works." in messages
    assert 'title="failed: Absent subscriber (permanent) · code dlr-3"' in html  # the provider's words, as a tooltip
    inbox = section(html, "subscriber-inbox")
    assert inbox.index("When does the sale end?") < inbox.index("JOIN") and "their secret" not in html
    clicks = section(html, "subscriber-clicks")
    assert "https://alpha.example/sale Spring sale" in clicks and "Mar 3, 2026, 11:00 AM" in clicks
    orders = section(html, "subscriber-orders")
    assert orders.index("#1002") < orders.index("#1001") and "$50.50" in orders and "Fulfilled" in orders
    segments = section(html, "subscriber-segments")
    assert "VIP buyers" in segments and "Not in this one" not in segments
    assert "Mallory" not in html
    assert "Showing the latest" not in html


def test_the_customer_card_shows_the_lifecycle_stage_and_the_expected_next_order(client, auth, known):
    """In the merchant's words, on the shop's local days: 03:00 UTC on Mar 5 is still Mar 4 in New York."""
    customer = reload(known).customer
    customer.lifecycle_stage, customer.lifecycle_previous_stage = "loyal", "high_potential"
    customer.lifecycle_changed_at = dt.datetime(2026, 3, 5, 3, 0, tzinfo=UTC)
    customer.expected_next_order_at = dt.datetime(2026, 3, 10, 2, 0, tzinfo=UTC)
    Session.commit()
    html = client.get(f"/subscribers/{known.id}", headers=auth).get_data(as_text=True)
    card = section(html, "subscriber-customer")
    assert "Lifecycle stage Loyal Since Mar 4, 2026; before: High potential" in card
    assert "Expected next order Mar 9, 2026" in card
    assert "No orders yet" not in card


def test_the_customer_card_without_a_stage_or_a_due_order(client, auth, known):
    """Orders the daily run has not scored yet, no order at all, and a stage without an expected next order."""
    html = client.get(f"/subscribers/{known.id}", headers=auth).get_data(as_text=True)
    card = section(html, "subscriber-customer")
    assert "Lifecycle stage Not worked out yet (stages are updated daily)" in card
    assert "Expected next order" not in card
    customer = reload(known).customer
    customer.orders_count = 0
    Session.commit()
    card = section(client.get(f"/subscribers/{known.id}", headers=auth).get_data(as_text=True), "subscriber-customer")
    assert "Lifecycle stage No orders yet" in card and "Expected next order" not in card
    customer = reload(known).customer
    customer.orders_count = 2
    customer.lifecycle_stage, customer.lifecycle_changed_at = "churned", dt.datetime(2026, 3, 5, 12, tzinfo=UTC)
    Session.commit()
    card = section(client.get(f"/subscribers/{known.id}", headers=auth).get_data(as_text=True), "subscriber-customer")
    assert "Lifecycle stage Churned Since Mar 5, 2026" in card and "before:" not in card
    assert "Expected next order" not in card


def test_the_stage_is_the_daily_runs(client, auth, known, shop):
    """The stage and due date the lifecycle run computes from the orders are the ones the page shows."""
    from kinnekt.segments import lifecycle
    customer = reload(known).customer
    customer.last_order_at = T0 + dt.timedelta(days=3)
    Session.commit()
    now = T0 + dt.timedelta(days=5)
    lifecycle.update_shop(Session, reload(shop), now=now, recheck=False)
    customer = reload(known).customer
    expected = lifecycle.STAGE_LABELS[customer.lifecycle_stage]
    card = section(client.get(f"/subscribers/{known.id}", headers=auth).get_data(as_text=True), "subscriber-customer")
    assert f"Lifecycle stage {expected} Since Mar 7, 2026" in card  # 15:00 UTC on Mar 7: Mar 7 in New York
    assert "Expected next order Mar 8, 2026" in card  # the last order plus the 3 days between the two


def test_long_lists_are_capped_with_a_note(client, auth, known, monkeypatch):
    monkeypatch.setattr(defaults, "SUBSCRIBER_DETAIL_ROWS", 1)
    html = client.get(f"/subscribers/{known.id}", headers=auth).get_data(as_text=True)
    messages = section(html, "subscriber-messages")
    assert "Spring sale: 20% off" in messages and "Reply Y to confirm" not in messages
    assert "Showing the latest 1 of 2 messages." in messages
    assert "Showing the latest 1 of 2 orders." in section(html, "subscriber-orders")
    assert "Showing the latest 1 of 2 events." in section(html, "subscriber-history")
    assert "Showing the latest 1 of 2 messages." in section(html, "subscriber-inbox")


def test_a_bare_subscriber_has_empty_states(client, auth, shop):
    sub = subscriber(shop, "+442071838750", source="import", consent_at=T0,
                     consent_text="Everyone in this file agreed to receive marketing texts from Alpha.")
    html = client.get(f"/subscribers/{sub.id}", headers=auth).get_data(as_text=True)
    assert "National format 020 7183 8750" in section(html, "subscriber-summary")
    assert "Not linked to a Shopify customer" in html and "No linked Shopify customer" in html
    assert "No messages sent yet" in html and "No messages received" in html and "No clicks yet" in html
    assert "Added by you: your attestation is the record." in section(html, "subscriber-consent-record")


def test_the_full_page_is_served_without_htmx(client, shop, token_for):
    sub = subscriber(shop)
    response = client.get(f"/subscribers/{sub.id}?id_token={token_for(shop.domain)}", headers={"Accept": "text/html"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and html.startswith("<!doctype html>") and 'id="subscriber-detail"' in html


def test_another_shops_subscriber_is_not_found_and_cannot_be_changed(client, auth, shop, other_shop):
    theirs = subscriber(other_shop, first_name="Mallory")
    stopped = subscriber(other_shop, "+12125550102", status="unsubscribed", unsubscribed_at=T0)
    assert client.get(f"/subscribers/{theirs.id}", headers=auth).status_code == 404
    assert client.post(f"/subscribers/{theirs.id}/unsubscribe", data={"reason": "x"}, headers=auth).status_code == 404
    assert client.post(f"/subscribers/{stopped.id}/resubscribe", data={"reason": "x", "asked_again": "on"},
                       headers=auth).status_code == 404
    assert client.get("/subscribers/999999", headers=auth).status_code == 404
    assert reload(theirs).status == "subscribed" and reload(stopped).status == "unsubscribed"
    assert count(SubscriptionEvent) == 0


def test_without_a_session_token_nothing_changes(client, shop):
    sub = subscriber(shop)
    response = client.post(f"/subscribers/{sub.id}/unsubscribe", data={"reason": "x"}, headers={"HX-Request": "true"})
    assert response.status_code == 401 and reload(sub).status == "subscribed"


# --- unsubscribe / resubscribe ----------------------------------------------------------------------------

def test_unsubscribe_needs_a_reason(client, auth, shop):
    sub = subscriber(shop)
    response = client.post(f"/subscribers/{sub.id}/unsubscribe", data={"reason": "   "}, headers=auth)
    assert response.status_code == 200
    assert field_error(response, "unsubscribe-reason") == "Enter why you are unsubscribing this number."
    assert reload(sub).status == "subscribed" and count(SubscriptionEvent) == 0


def test_unsubscribe_with_a_reason_shows_the_new_status(client, auth, shop):
    sub = subscriber(shop)
    response = client.post(f"/subscribers/{sub.id}/unsubscribe", data={"reason": " Asked  by phone "}, headers=auth)
    assert response.status_code == 200 and toast(response)["message"] == "Unsubscribed +12125550101"
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="subscriber-detail">')
    assert '<span class="badge">Unsubscribed</span>' in html and "Asked by phone" in section(html, "subscriber-summary")
    assert "Unsubscribed You Asked by phone" in section(html, "subscriber-history")
    assert 'id="resubscribe-form"' in html and 'id="resubscribe-asked-again"' not in html  # no STOP: no attestation
    sub = reload(sub)
    assert (sub.status, sub.unsubscribe_reason) == ("unsubscribed", "Asked by phone")
    event = Session.scalars(select(SubscriptionEvent).execution_options(all_shops=True)).one()
    assert (event.kind, event.source, event.detail) == ("unsubscribed", "merchant", "Asked by phone")


def test_resubscribe_after_a_merchant_unsubscribe_needs_only_a_reason(client, auth, shop):
    sub = subscriber(shop)
    optin.unsubscribe(Session, sub, reason="Asked by phone", source="merchant")
    refused = client.post(f"/subscribers/{sub.id}/resubscribe", data={"reason": ""}, headers=auth)
    assert field_error(refused, "resubscribe-reason") == "Enter why you are subscribing this number again."
    assert reload(sub).status == "unsubscribed"
    response = client.post(f"/subscribers/{sub.id}/resubscribe", data={"reason": "Unsubscribed by mistake"},
                           headers=auth)
    assert toast(response)["message"] == "Subscribed +12125550101 again"
    assert '<span class="badge badge--success">Subscribed</span>' in response.get_data(as_text=True)
    assert reload(sub).status == "subscribed"
    kinds = Session.execute(select(SubscriptionEvent.kind, SubscriptionEvent.source, SubscriptionEvent.detail)
                            .order_by(SubscriptionEvent.id).execution_options(all_shops=True)).all()
    assert kinds[-1] == ("resubscribed", "merchant", "Unsubscribed by mistake")


def test_a_stop_is_undone_only_when_the_merchant_confirms_the_person_asked_again(client, auth, shop):
    """Carriers require that a STOP is honoured: after one, the merchant must attest a new request."""
    sub = subscriber(shop)
    optin.unsubscribe(Session, sub, reason='Texted "STOP"', source="sms")
    page = client.get(f"/subscribers/{sub.id}", headers=auth)
    assert "They unsubscribed themselves" in text(page)
    assert 'id="resubscribe-asked-again"' in page.get_data(as_text=True)

    refused = client.post(f"/subscribers/{sub.id}/resubscribe", data={"reason": "They called us"}, headers=auth)
    assert field_error(refused, "resubscribe-asked-again").startswith(
        "This person unsubscribed by texting STOP. Resubscribe them only if they asked you to")
    assert 'value="They called us"' in refused.get_data(as_text=True)  # what the merchant typed stays
    assert reload(sub).status == "unsubscribed" and count(SubscriptionEvent) == 1

    response = client.post(f"/subscribers/{sub.id}/resubscribe", data={"reason": "They called us", "asked_again": "on"},
                           headers=auth)
    assert response.status_code == 200 and reload(sub).status == "subscribed"
    event = Session.scalars(select(SubscriptionEvent).order_by(SubscriptionEvent.id.desc()).limit(1)
                            .execution_options(all_shops=True)).one()
    assert (event.kind, event.source) == ("resubscribed", "merchant")
    assert event.detail == "They called us · the person asked to be subscribed again (confirmed by the merchant)"


def test_a_pending_subscriber_cannot_be_confirmed_by_the_merchant(client, auth, shop):
    sub = subscriber(shop, status="pending", subscribed_at=None)
    html = client.get(f"/subscribers/{sub.id}", headers=auth).get_data(as_text=True)
    assert 'id="resubscribe-form"' not in html and 'id="unsubscribe-form"' in html
    response = client.post(f"/subscribers/{sub.id}/resubscribe", data={"reason": "Confirmed in store"}, headers=auth)
    assert "has not confirmed yet: only their reply can confirm it." in section(
        response.get_data(as_text=True), "subscriber-notice")
    assert reload(sub).status == "pending" and count(SubscriptionEvent) == 0


def test_unsubscribing_twice_changes_nothing_the_second_time(client, auth, shop):
    sub = subscriber(shop)
    client.post(f"/subscribers/{sub.id}/unsubscribe", data={"reason": "Asked"}, headers=auth)
    again = client.post(f"/subscribers/{sub.id}/unsubscribe", data={"reason": "Again"}, headers=auth)
    assert count(SubscriptionEvent) == 1 and reload(sub).unsubscribe_reason == "Asked"
    assert "Unsubscribed" in text(again)


# --- manual add -------------------------------------------------------------------------------------------

def add_form(client, auth, **data):
    return client.post("/subscribers/new", data=data, headers=auth)


def test_the_add_form_shows_the_attestation(client, auth, shop):
    response = client.get("/subscribers/new", headers=auth)
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<section id="subscriber-new">')
    assert "This person agreed to receive marketing texts from Alpha." in html
    assert 'type="checkbox" id="subscriber-consent" name="consent" value="on"' in html


def test_manual_add_subscribes_with_the_attestation_as_consent(client, auth, shop):
    response = add_form(client, auth, phone="(212) 555-0123", first_name=" Ada ", consent="on")
    sub = Session.scalars(select(Subscriber).execution_options(all_shops=True)).one()
    assert response.status_code == 200
    assert json.loads(response.headers["HX-Location"])["path"] == f"/subscribers/{sub.id}"
    assert toast(response)["message"] == "Added +12125550123"
    assert (sub.shop_id, sub.phone, sub.status, sub.source, sub.first_name, sub.country) == (
        shop.id, "+12125550123", "subscribed", "manual", "Ada", "US")
    assert sub.consent_text == "This person agreed to receive marketing texts from Alpha."
    assert sub.consent_at is not None and sub.timezone == "America/New_York"
    event = Session.scalars(select(SubscriptionEvent).execution_options(all_shops=True)).one()
    assert (event.kind, event.source) == ("subscribed", "manual")
    assert count(Message) == 0  # no double opt-in for a manual add: nothing is texted


@pytest.mark.parametrize("data, field, message", [
    ({"phone": "+12125550123", "first_name": "Ada"}, "subscriber-consent",
     "Confirm that this person agreed to receive your marketing texts."),
    ({"phone": "hello", "consent": "on"}, "subscriber-phone",
     "hello is not a phone number: use digits, with + and the country code."),
    ({"phone": "+1212555", "consent": "on"}, "subscriber-phone", "+1212555 is too short to be a phone number."),
    ({"phone": "+1 212 555 0123 999", "consent": "on"}, "subscriber-phone",
     "+1 212 555 0123 999 is too long to be a phone number."),
    ({"phone": "", "consent": "on"}, "subscriber-phone", "Enter a phone number."),
    ({"phone": "+12125550123", "first_name": "x" * 256, "consent": "on"}, "subscriber-first-name",
     "The first name can be at most 255 characters."),
    ({"phone": "+12125550123", "consent": "true"}, "subscriber-consent",
     "Confirm that this person agreed to receive your marketing texts."),
])
def test_bad_manual_add_input_saves_nothing(client, auth, shop, data, field, message):
    response = add_form(client, auth, **data)
    assert response.status_code == 200 and "HX-Location" not in response.headers
    assert field_error(response, field) == message
    assert response.get_data(as_text=True).lstrip().startswith('<section id="subscriber-new">')
    assert count(Subscriber) == 0 and count(SubscriptionEvent) == 0


def test_a_missing_attestation_and_a_bad_phone_are_both_reported(client, auth, shop):
    response = add_form(client, auth, phone="hello", first_name="Ada")
    assert field_error(response, "subscriber-phone") and field_error(response, "subscriber-consent")
    assert 'value="Ada"' in response.get_data(as_text=True)
    assert count(Subscriber) == 0


@pytest.mark.parametrize("status, message", [
    ("subscribed", "+12125550123 is already a subscriber."),
    ("pending", "+12125550123 already signed up and has not confirmed yet."),
    ("unsubscribed", "+12125550123 unsubscribed. Only they can opt in again, by texting a keyword or using your "
                     "sign-up form."),
])
def test_adding_a_known_number_says_so_and_changes_nothing(client, auth, shop, status, message):
    sub = subscriber(shop, "+12125550123", status=status, first_name="Old", source="keyword")
    response = add_form(client, auth, phone="+1 212 555 0123", first_name="New", consent="on")
    assert field_error(response, "subscriber-phone") == message
    assert f'href="/subscribers/{sub.id}"' in response.get_data(as_text=True)
    sub = reload(sub)
    assert (sub.status, sub.first_name, sub.source) == (status, "Old", "keyword")
    assert count(Subscriber) == 1 and count(SubscriptionEvent) == 0


def test_the_same_number_in_another_shop_is_not_known_here(client, auth, shop, other_shop):
    subscriber(other_shop, "+12125550123", status="unsubscribed")
    add_form(client, auth, phone="+12125550123", consent="on")
    assert count(Subscriber) == 2
    mine = Session.scalars(select(Subscriber).where(Subscriber.shop_id == shop.id)
                           .execution_options(all_shops=True)).one()
    assert mine.status == "subscribed"


# --- CSV import -------------------------------------------------------------------------------------------

def test_the_import_form(client, auth, shop):
    html = client.get("/subscribers/import", headers=auth).get_data(as_text=True)
    assert html.lstrip().startswith('<section id="subscriber-import">')
    assert 'hx-encoding="multipart/form-data"' in html and 'type="file"' in html
    assert "Everyone in this file agreed to receive marketing texts from Alpha." in html


def test_an_import_saves_the_good_rows_and_reports_the_others(client, auth, shop):
    subscriber(shop, "+12125550104", status="unsubscribed", source="keyword")
    subscriber(shop, "+12125550105", status="subscribed", source="keyword")
    content = ("phone,first_name,email\n"
               "+1 212 555 0101,Ada,ada@example.com\n"
               "212-555-0102,,\n"
               "not a number,Bob,\n"
               "(212) 555-0101,Ada again,\n"
               "+12125550104,Stopped,\n"
               "+12125550105,Known,\n").encode()
    response = upload(client, auth, content)
    assert response.status_code == 200
    assert toast(response) == {"message": "Imported 2 subscribers", "isError": False}
    page = text(response)
    assert "Imported 2 subscribers" in page
    assert ("4 rows not imported: 1 not a valid phone number, 1 duplicate in the file, 1 unsubscribed, "
            "1 already subscriber.") in page
    assert "Numbers without a country code were read as US numbers." in page and "Ignored column" not in page
    assert "4 not a number not a number is not a phone number" in page
    assert "5 (212) 555-0101 duplicate of row 2" in page
    assert "6 +12125550104 unsubscribed: only they can opt in again" in page
    assert "7 +12125550105 already a subscriber" in page
    imported = Session.scalars(select(Subscriber).where(Subscriber.source == "import").order_by(Subscriber.phone)
                               .execution_options(all_shops=True)).all()
    assert [(s.phone, s.first_name, s.email, s.status) for s in imported] == [
        ("+12125550101", "Ada", "ada@example.com", "subscribed"), ("+12125550102", None, None, "subscribed")]
    assert Session.scalar(select(Subscriber.status).where(Subscriber.phone == "+12125550104")
                          .execution_options(all_shops=True)) == "unsubscribed"


def test_an_import_with_no_usable_row_reports_them_all(client, auth, shop):
    response = upload(client, auth, b"phone\nhello\n+1212\n")
    page = text(response)
    assert "Imported 0 subscribers" in page and "2 rows not imported: 2 not a valid phone number." in page
    assert count(Subscriber) == 0


@pytest.mark.parametrize("content, message", [
    ("phone\n+12125550101\nZoë\n".encode("latin-1"), "The file is not UTF-8 text."),
    (b"", "The file is empty."),
    (b" \r\n\r\n", "The file is empty."),
    (b"PK\x03\x04\x00\x00binary", "The file is not a CSV file."),
    ("phone\n+12125550101\n".encode("utf-16"), "The file is not UTF-8 text."),
    (b"\xff\xfep\x00h\x00", "The file is not UTF-8 text."),
    (b"phone\n\x00\n", "The file is not a CSV file."),
    (b'phone,name\n"+12125550101,Ada\n', "The file is not a valid CSV file"),
    (b"phone," + b"x" * 200_000 + b"\n", "The file is not a valid CSV file (field larger than field limit"),
    (b"phone" + b",x" * 60 + b"\n+12125550101\n", "The first row has 61 columns; an import reads at most 60."),
])
def test_a_bad_file_is_refused_beside_the_field_and_nothing_is_saved(client, auth, shop, content, message):
    response = send_file(client, auth, content)
    assert response.status_code == 200
    assert message in field_error(response, "import-file")
    assert 'id="import-report"' not in response.get_data(as_text=True)
    assert count(Subscriber) == 0 and count(SubscriptionEvent) == 0 and count(SubscriberImport) == 0


def test_a_file_over_the_size_limit_is_refused(client, auth, shop, monkeypatch):
    monkeypatch.setattr(defaults, "STATIC_LIST_MAX_BYTES", 1024 * 1024)
    content = b"phone\n" + b"+12125550101\n" * (1024 * 1024 // 13 + 1)
    response = upload(client, auth, content)
    assert field_error(response, "import-file") == "The file is larger than 1 MB."
    assert count(Subscriber) == 0


def test_a_file_over_the_row_limit_is_refused(client, auth, shop, monkeypatch):
    monkeypatch.setattr(defaults, "STATIC_LIST_MAX_ROWS", 2)
    response = upload(client, auth, b"phone\n+12125550101\n+12125550102\n+12125550103\n")
    assert field_error(response, "import-file") == "The file has more than 2 rows."
    assert count(Subscriber) == 0


def test_an_import_without_the_attestation_or_a_file_saves_nothing(client, auth, shop):
    response = upload(client, auth, b"phone\n+12125550101\n", consent=False)
    assert field_error(response, "import-consent") == (
        "Confirm that everyone in the file agreed to receive your marketing texts.")
    assert count(Subscriber) == 0
    response = upload(client, auth, None)
    assert field_error(response, "import-file") == "Choose a CSV file to upload."
    response = upload(client, auth, None, consent=False)
    assert field_error(response, "import-file") and field_error(response, "import-consent")
    assert count(Subscriber) == 0


def test_without_a_session_token_nothing_is_imported(client, shop):
    response = client.post("/subscribers/import", data={"consent": "on", "file": (io.BytesIO(b"phone\n+12125550101\n"),
                                                                                   "a.csv")},
                           headers={"HX-Request": "true"}, content_type="multipart/form-data")
    assert response.status_code == 401 and count(Subscriber) == 0
    response = client.post("/subscribers/new", data={"phone": "+12125550101", "consent": "on"},
                           headers={"HX-Request": "true"})
    assert response.status_code == 401 and count(Subscriber) == 0


# --- imports run as a job ------------------------------------------------------------------------------------

BIG = ("phone,first_name\n+12125550101,Ada\nnot a number,Bob\n+12125550102,Cy\n"
       "212-555-0101,Ada again\n+12125550103,Di\n").encode()


def test_a_large_import_shows_its_progress_until_its_report(client, auth, shop, import_jobs):
    from kinnekt.models import SubscriberImport
    from kinnekt.subscribers import importing
    response = upload(client, auth, BIG, filename="people.csv")
    assert response.status_code == 200
    (import_id,), _ = import_jobs.imports()[0]
    page = text(response)
    assert toast(response) == {"message": "Importing 5 rows. This page shows the progress.", "isError": False}
    assert response.headers["HX-Push-Url"] == f"/subscribers/imports/{import_id}"
    assert "Importing people.csv: 5 rows" in page and "Waiting to start." in page
    progress = re.search(r'<div id="import-progress"[^>]*>', response.get_data(as_text=True)).group(0)
    assert f'hx-get="/subscribers/imports/{import_id}/progress"' in progress and 'hx-trigger="every 1s"' in progress
    assert count(Subscriber) == 0

    importing.import_batches(Session(), import_id, batches=1)  # rows 2 and 3
    polled = client.get(f"/subscribers/imports/{import_id}/progress", headers=auth)
    assert polled.status_code == 200 and "hx-get" in polled.get_data(as_text=True)
    assert "2 of 5 rows read, 1 subscriber added so far." in text(polled)

    importing.import_batches(Session(), import_id)
    polled = client.get(f"/subscribers/imports/{import_id}/progress", headers=auth)
    assert polled.status_code == 286  # htmx stops polling
    assert toast(polled) == {"message": "Imported 3 subscribers", "isError": False}
    html = polled.get_data(as_text=True)
    assert "hx-get" not in html and 'data-status="done"' in html
    assert "Imported 3 subscribers" in text(polled)
    assert "2 rows not imported: 1 not a valid phone number, 1 duplicate in the file." in text(polled)
    assert "5 212-555-0101 duplicate of row 2" in text(polled)
    assert Session.get(SubscriberImport, import_id).file is None

    page = client.get(f"/subscribers/imports/{import_id}", headers={"Authorization": auth["Authorization"]})
    assert page.status_code == 200 and "<html" in page.get_data(as_text=True)
    assert "Import subscribers" in text(page) and "Imported 3 subscribers" in text(page)


def test_an_import_is_only_its_shops(client, auth, shop, other_shop, token_for, import_jobs):
    upload(client, auth, BIG)
    (import_id,), _ = import_jobs.imports()[0]
    theirs = {"Authorization": f"Bearer {token_for(other_shop.domain)}", "HX-Request": "true"}
    assert client.get(f"/subscribers/imports/{import_id}", headers=theirs).status_code == 404
    assert client.get(f"/subscribers/imports/{import_id}/progress", headers=theirs).status_code == 404


def test_a_failed_import_says_so_and_stops_polling(client, auth, shop, import_jobs):
    from kinnekt.subscribers import importing
    upload(client, auth, BIG)
    (import_id,), _ = import_jobs.imports()[0]
    importing.import_batches(Session(), import_id, batches=1)
    importing.fail_import(Session(), import_id, "The import stopped on an error (OperationalError).")
    polled = client.get(f"/subscribers/imports/{import_id}/progress", headers=auth)
    assert polled.status_code == 286 and toast(polled)["isError"] is True
    assert ("The import stopped on an error (OperationalError). 1 subscriber was added before it stopped."
            in text(polled))


def test_plain_form_posts_go_to_the_mapping_step_then_to_the_import_page(client, token_for, shop, import_jobs):
    plain = {"Authorization": f"Bearer {token_for(shop.domain)}"}
    response = client.post("/subscribers/import", headers=plain,
                           data={"consent": "on", "file": (io.BytesIO(BIG), "people.csv")},
                           content_type="multipart/form-data")
    assert response.status_code == 303
    import_id = int(response.location.rsplit("/", 1)[1])
    page = client.get(f"/subscribers/imports/{import_id}", headers=plain)
    assert "<html" in page.get_data(as_text=True) and 'id="import-mapping-form"' in page.get_data(as_text=True)
    assert import_jobs.imports() == []  # nothing is imported before the mapping is confirmed
    response = client.post(f"/subscribers/imports/{import_id}/confirm", headers=plain, data=choices(page))
    assert response.status_code == 303 and response.location.endswith(f"/subscribers/imports/{import_id}")
    assert import_jobs.imports()[0][0] == (import_id,)


def test_the_in_process_queue_runs_a_large_import_to_its_end(app, client, auth, shop, monkeypatch):
    """The demo's queue (no Redis) runs the import job too."""
    from kinnekt.models import SubscriberImport
    monkeypatch.setattr(defaults, "SUBSCRIBER_IMPORT_INLINE_ROWS", 3)
    monkeypatch.setattr(defaults, "SUBSCRIBER_IMPORT_BATCH_ROWS", 2)
    assert upload(client, auth, BIG).status_code == 200
    assert app.extensions["kinnekt_queue"].drain(30)
    done = Session.scalars(select(SubscriberImport).execution_options(all_shops=True, populate_existing=True)).one()
    assert (done.status, done.processed_rows, done.imported) == ("done", 5, 3)
    assert count(Subscriber) == 3


# --- the mapping step ----------------------------------------------------------------------------------------

PEOPLE = ("Mobile Number,First Name,Surname,E-mail,Birthday,Points,Notes\n"
          "(212) 555-0101,  Ada ,Lovelace,ada@example.com,1990-07-04,12.5,vip\n"
          "212-555-0102,Bob,,not an email,July 4,many,\n"
          "+12125550103,=HYPERLINK(\"http://x\"),Cy,cy@example.com,,7,@SUM(1)\n").encode()


def preview_rows(response) -> list[list[str]]:
    """The preview table's rows as the merchant reads them (row number first)."""
    table = re.search(r'<table id="import-preview">.*?</table>', response.get_data(as_text=True), re.S).group(0)
    return [[" ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", cell)).split())
             for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>\s*<td.*?</tr>", table, re.S)]


def check_of(response, column: int) -> str:
    match = re.search(rf'<td id="import-check-{column}">(.*?)</td>', response.get_data(as_text=True), re.S)
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", match.group(1))).split())


def test_the_upload_shows_each_column_with_a_suggestion_and_the_rows_as_they_will_be_saved(client, auth, shop):
    response = send_file(client, auth, PEOPLE)
    assert response.status_code == 200
    import_id = draft_id(response)
    assert response.headers["HX-Push-Url"] == f"/subscribers/imports/{import_id}"
    assert choices(response) == {
        "column-0": "phone", "column-1": "first_name", "column-2": "last_name", "column-3": "email",
        "column-4": "property:birthday", "column-5": "ignore", "column-6": "ignore",
        "name-0": "Mobile Number", "name-1": "First Name", "name-2": "Surname", "name-3": "E-mail",
        "name-4": "Birthday", "name-5": "Points", "name-6": "Notes"}
    assert preview_rows(response) == [
        ["2", "+12125550101", "Ada", "Lovelace", "ada@example.com", "1990-07-04"],
        ["3", "+12125550102", "Bob", "", "Does not fit “not an email” is not an email address",
         "Does not fit Birthday must be a date written YYYY-MM-DD"],
        ["4", "+12125550103",
         "Does not fit First name starts with “=”, which a spreadsheet would run as a formula", "Cy",
         "cy@example.com", ""]]
    assert check_of(response, 0) == "Every value fits"
    assert check_of(response, 3) == "1 value does not fit Row 3: “not an email” is not an email address"
    assert check_of(response, 6) == "Not imported"
    page = text(response)
    assert "Checked all 3 rows. Numbers without a country code are read as US numbers." in page
    assert "Import 3 rows" in page
    assert count(Subscriber) == 0 and count(SubscriptionEvent) == 0  # nothing is saved before the confirmation
    assert Session.get(SubscriberImport, import_id).status == "draft"


def test_a_changed_choice_answers_the_mapping_again_with_its_preview(client, auth, shop):
    from kinnekt.models import ProfileProperty
    import_id = draft_id(send_file(client, auth, PEOPLE))
    form = {**choices(send_file(client, auth, PEOPLE)), "column-5": "new:number", "column-6": "new:text"}
    response = client.post(f"/subscribers/imports/{import_id}/mapping", headers=auth, data=form)
    assert response.status_code == 200
    assert response.get_data(as_text=True).lstrip().startswith('<div id="import-mapping">')
    assert 'id="import-name-5"' in response.get_data(as_text=True)  # a new property asks for its name
    assert check_of(response, 5) == "1 value does not fit Row 3: Points (new) must be a number"
    assert check_of(response, 6) == ("1 value does not fit Row 4: Notes (new) starts with “@”, which a spreadsheet "
                                     "would run as a formula")
    assert [row[6:] for row in preview_rows(response)] == [
        ["12.5", "vip"], ["Does not fit Points (new) must be a number", ""], ["7", "Does not fit Notes (new) starts "
                                                                              "with “@”, which a spreadsheet would "
                                                                              "run as a formula"]]
    assert count(ProfileProperty) == 0 and count(Subscriber) == 0


def test_confirming_creates_the_new_properties_and_imports_what_fits(client, auth, shop, segment_rechecks):
    from kinnekt.models import ProfileProperty, SubscriberProperty
    response = upload(client, auth, PEOPLE, **{"column-5": "new:number", "name-5": "Loyalty points",
                                                "column-6": "ignore"})
    assert toast(response) == {"message": "Imported 1 subscriber", "isError": False}
    assert response.headers["HX-Push-Url"] == "/subscribers/import"
    page = text(response)
    assert "2 rows not imported: 2 with a value that does not fit its property." in page
    assert ("3 212-555-0102 “not an email” is not an email address; Birthday must be a date written YYYY-MM-DD; "
            "Loyalty points must be a number") in page
    assert "4 +12125550103 First name starts with “=”, which a spreadsheet would run as a formula" in page
    assert "Read into profile properties: Birthday → Birthday, Points → Loyalty points." in page
    assert "Ignored column: Notes." in page
    ada = Session.scalars(select(Subscriber).execution_options(all_shops=True)).one()
    assert (ada.phone, ada.first_name, ada.last_name, ada.email) == ("+12125550101", "Ada", "Lovelace",
                                                                     "ada@example.com")
    points = Session.scalars(select(ProfileProperty).execution_options(all_shops=True)).one()
    assert (points.shop_id, points.name, points.type) == (shop.id, "Loyalty points", "number")
    values = {(v.name_key, v.number_value or v.date_value) for v in Session.scalars(
        select(SubscriberProperty).execution_options(all_shops=True))}
    assert values == {("loyalty points", Decimal("12.5")), ("birthday", dt.date(1990, 7, 4))}
    assert count(SubscriberImport) == 0  # an import done in the request leaves no draft behind


@pytest.mark.parametrize("content, form, errors, banner", [
    (PEOPLE, {"column-0": "ignore"}, {}, "Choose the column that holds the phone numbers"),
    (b"phone,phone,first_name\n+12125550101,+12125550102,Ada\n", {"column-1": "phone"},
     {1: "Column 1 already becomes Phone number"}, None),
    (PEOPLE, {"column-5": "property:nope"}, {5: "Choose what this column becomes"}, None),
    (PEOPLE, {"column-5": "new:colour"}, {5: "Choose what this column becomes"}, None),
    (PEOPLE, {"column-5": "new:text", "name-5": "!!"}, {5: "Use letters, digits, spaces"}, None),
    (PEOPLE, {"column-5": "new:text", "name-5": "BIRTHDAY"}, {5: "“BIRTHDAY” is a built-in property"}, None),
    (PEOPLE, {"column-5": "new:date", "name-5": "x" * 41}, {5: "A name has at most 40 characters"}, None),
    (PEOPLE, {"column-5": "new:text", "column-6": "new:number", "name-6": "points "},
     {6: "Column 6 already becomes Points"}, None),
])
def test_a_mapping_that_cannot_be_imported_is_refused_beside_its_column_and_saves_nothing(
        client, auth, shop, content, form, errors, banner):
    from kinnekt.models import ProfileProperty
    response = upload(client, auth, content, **form)
    assert response.status_code == 200 and 'id="import-mapping-form"' in response.get_data(as_text=True)
    for column, message in errors.items():
        assert message in field_error(response, f"import-column-{column}")
    if banner:
        assert banner in text(response)
    assert count(Subscriber) == 0 and count(ProfileProperty) == 0
    assert Session.scalars(select(SubscriberImport.status).execution_options(all_shops=True)).all() == ["draft"]


def test_duplicate_headers_suggest_the_first_and_ignore_the_other(client, auth, shop):
    response = send_file(client, auth, b"phone,Phone,first_name,first_name\n+12125550101,+12125550102,Ada,Bo\n")
    assert {k: v for k, v in choices(response).items() if k.startswith("column")} == {
        "column-0": "phone", "column-1": "ignore", "column-2": "first_name", "column-3": "ignore"}


def test_a_confirmed_draft_is_not_imported_twice(client, auth, shop):
    response = send_file(client, auth, b"phone\n+12125550101\n")
    form, import_id = choices(response), draft_id(response)
    first = client.post(f"/subscribers/imports/{import_id}/confirm", headers=auth, data=form)
    assert toast(first)["message"] == "Imported 1 subscriber"
    again = client.post(f"/subscribers/imports/{import_id}/confirm", headers=auth, data=form)
    assert again.status_code == 404  # the draft went with its import
    assert count(Subscriber) == 1 and count(SubscriptionEvent) == 1
    assert client.post(f"/subscribers/imports/{import_id}/mapping", headers=auth, data=form).status_code == 404


def test_a_draft_is_only_its_shops(client, auth, shop, other_shop, token_for):
    response = send_file(client, auth, b"phone\n+12125550101\n")
    form, import_id = choices(response), draft_id(response)
    theirs = {"Authorization": f"Bearer {token_for(other_shop.domain)}", "HX-Request": "true"}
    assert client.get(f"/subscribers/imports/{import_id}", headers=theirs).status_code == 404
    assert client.post(f"/subscribers/imports/{import_id}/mapping", headers=theirs, data=form).status_code == 404
    assert client.post(f"/subscribers/imports/{import_id}/confirm", headers=theirs, data=form).status_code == 404
    assert client.get(f"/subscribers/imports/{import_id}/progress", headers=auth).status_code == 404
    assert count(Subscriber) == 0
    page = client.get(f"/subscribers/imports/{import_id}", headers=auth)  # the page of a draft is its mapping step
    assert 'id="import-mapping-form"' in page.get_data(as_text=True)


def test_a_shop_keeps_a_few_recent_drafts(client, auth, shop, other_shop, token_for):
    theirs = {"Authorization": f"Bearer {token_for(other_shop.domain)}", "HX-Request": "true"}
    their_draft = draft_id(send_file(client, theirs, b"phone\n+12125550101\n"))
    ids = [draft_id(send_file(client, auth, b"phone\n+12125550101\n"))
           for _ in range(defaults.SUBSCRIBER_IMPORT_DRAFTS + 2)]
    mine = Session.scalars(select(SubscriberImport.id).where(SubscriberImport.shop_id == shop.id)
                           .order_by(SubscriberImport.id).execution_options(all_shops=True)).all()
    assert mine == ids[-defaults.SUBSCRIBER_IMPORT_DRAFTS:]
    aged = Session.get(SubscriberImport, ids[-1], execution_options={"all_shops": True})
    aged.created_at = dt.datetime.now(UTC) - dt.timedelta(hours=defaults.SUBSCRIBER_IMPORT_DRAFT_HOURS + 1)
    Session.commit()
    newest = draft_id(send_file(client, auth, b"phone\n+12125550101\n"))
    mine = Session.scalars(select(SubscriberImport.id).where(SubscriberImport.shop_id == shop.id)
                           .order_by(SubscriberImport.id).execution_options(all_shops=True)).all()
    assert mine == [ids[-2], newest]  # the stale one went too
    assert Session.get(SubscriberImport, their_draft, execution_options={"all_shops": True}) is not None
