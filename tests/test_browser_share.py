"""The public shareable-link page in Chromium on a phone-sized screen: the button and QR show, nothing loads
from elsewhere, and a person who texts the link's keyword joins with source Shareable Link."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import Subscriber
from kinnekt.segments.auto import ensure_default_segments
from kinnekt.subscribers.keywords import create_keyword
from kinnekt.tenancy import bind_shop
from tests.conftest import make_shop
from tests.helpers import PHONE, SENDER

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("settled_jobs")]


@pytest.fixture
def shop(db):
    """A demo shop whose shareable link uses the JOIN keyword (double opt-in on)."""
    shop = make_shop("acme-store.myshopify.com", sender=SENDER, is_demo=True, double_opt_in=True)
    create_keyword(db(), shop, word="JOIN", reply_text="Welcome to Acme!")
    shop.share_keyword = "JOIN"
    db.commit()
    ensure_default_segments(db(), shop)
    return shop


@pytest.fixture
def browser_context_args(browser_context_args):
    """A phone: the page is mostly opened from a social post or a QR code on a poster."""
    return {**browser_context_args, "viewport": {"width": 390, "height": 844}, "is_mobile": True,
            "has_touch": True}


def test_share_page_on_a_phone_then_joining_by_its_keyword(live_server, page, shop, text_in):
    requested, errors = [], []
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{live_server}/j/acme-store")

    expect(page).to_have_title("Get texts from Acme-Store")
    button = page.locator("#share-sms-link")
    expect(button).to_be_visible()
    expect(button).to_have_text("Text JOIN to join")
    expect(button).to_have_attribute("href", f"sms:+{SENDER}?&body=JOIN")
    box = button.bounding_box()
    assert box["width"] <= 390 and box["height"] >= 40  # fits the screen, big enough to tap
    qr = page.locator("#share-qr svg")
    expect(qr).to_be_visible()
    assert qr.bounding_box()["width"] >= 120
    expect(page.locator("#share-page")).to_contain_text("Reply STOP to unsubscribe")
    assert requested and all(url.startswith(live_server) or url.startswith("data:") for url in requested), requested
    assert not errors

    # What tapping the button does on a phone: the messages app opens with JOIN to the shop's number.
    text_in("JOIN")
    text_in("Y")
    bind_shop(None)
    Session.expire_all()
    person = Session.scalars(select(Subscriber).where(Subscriber.phone == PHONE)).one()
    assert (person.status, person.source) == ("subscribed", "shareable_link")
