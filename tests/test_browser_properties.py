"""Profile properties in Chromium: the merchant adds a property, edits a subscriber's values on its page (a bad
value refused beside its field, then saved), and a shopper fills the popup's birthday and language fields."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import Subscriber
from kinnekt.queue import get_queue
from kinnekt.subscribers import properties
from tests.conftest import make_shop
from tests.fake_vonage import settled_jobs  # noqa: F401 (fixture)
from tests.test_browser_popup import STOREFRONT, embed, storefront  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("settled_jobs")]


def values_of(subscriber) -> dict:
    Session.expire_all()
    return properties.values(Session, subscriber.shop_id, subscriber.id)


def test_merchant_adds_a_property_and_edits_a_subscribers_values(open_page, db, shop):
    someone = Subscriber(shop_id=shop.id, phone="+12125550188", status="subscribed", source="manual")
    db.add(someone)
    db.commit()
    page = open_page("/subscribers/")
    page.get_by_role("link", name="Profile properties").click()
    expect(page.locator("main h1").first).to_have_text("Profile properties")
    page.locator("#property-new-name").fill("Shoe size")
    page.locator("#property-new-type").select_option("number")
    page.get_by_role("button", name="Add property").click()
    expect(page.locator("#toasts")).to_contain_text("Added “Shoe size”")
    expect(page.locator("#profile-properties table")).to_contain_text("Number")

    page.get_by_role("link", name="Back to subscribers").click()
    page.get_by_role("link", name="+12125550188").click()
    card = page.locator("#subscriber-properties")
    expect(card).to_contain_text("Shoe size")
    card.get_by_label("Birthday").fill("1990-07-04")
    card.get_by_label("Language").fill("Deutsch")
    card.get_by_label("Shoe size").fill("ten")
    card.get_by_role("button", name="Save properties").click()
    expect(card.locator(".field__error")).to_have_text(["must be a number"])
    expect(card.get_by_label("Shoe size")).to_have_attribute("aria-invalid", "true")
    expect(card.get_by_label("Language")).to_have_value("Deutsch")  # what was typed stays
    assert values_of(someone) == {}  # nothing half-saved

    card.get_by_label("Shoe size").fill("10.5")
    card.get_by_role("button", name="Save properties").click()
    expect(page.locator("#toasts")).to_contain_text("Properties saved")
    expect(card.locator(".field__error")).to_have_count(0)
    assert values_of(someone) == {"birthday": dt.date(1990, 7, 4), "language": "Deutsch",
                                  "shoe size": Decimal("10.5")}
    open_page(f"/subscribers/{someone.id}")
    expect(page.locator("#subscriber-properties").get_by_label("Birthday")).to_have_value("1990-07-04")


def test_shopper_gives_a_birthday_and_a_language_in_the_popup(page, db, storefront):  # noqa: F811
    shop = make_shop("alpha.myshopify.com", is_demo=True, popup_settings={
        "enabled": True, "headline": "Birthday treats", "button": "Join",
        "ask_birthday": True, "ask_language": True})
    page.goto(f"{STOREFRONT}/")
    popup = page.get_by_role("dialog", name="Birthday treats")
    expect(popup).to_be_visible()
    popup.get_by_label("Mobile number").fill("(650) 253-0000")
    popup.get_by_label("Birthday").fill("1992-02-29")
    popup.get_by_label("Preferred language").fill("Español")
    popup.get_by_role("checkbox").check()
    popup.get_by_role("button", name="Join").click()
    expect(popup.get_by_role("status")).to_contain_text("Check your phone")
    assert get_queue().drain(20)
    subscriber = db.scalar(select(Subscriber))
    assert (subscriber.shop_id, subscriber.status) == (shop.id, "pending")
    assert values_of(subscriber) == {"birthday": dt.date(1992, 2, 29), "language": "Español"}


def test_merchant_builds_a_segment_on_a_profile_property(open_page, db, shop):
    from kinnekt.models import Segment
    from tests.test_browser_segments import redraw, row, settled
    properties.add(db, shop.id, "Shoe size", "number")
    for phone, size in (("+12125550101", "9"), ("+12125550102", "10.5"), ("+12125550103", None)):
        someone = Subscriber(shop_id=shop.id, phone=phone, status="subscribed", source="manual")
        db.add(someone)
        db.flush()
        if size:
            properties.set_values(db, someone, {"shoe size": size})
    db.commit()
    page = open_page("/segments/new")
    count = page.locator("#segment-preview-count")
    expect(count).to_have_text("3")
    page.locator("#segment-name").fill("Big feet")
    redraw(page, 0, "field", "property")
    expect(row(page, 0).locator("select[name$='-attribute']")).to_have_value("date:birthday")
    redraw(page, 0, "attribute", label="Shoe size")
    ops = row(page, 0).locator("select[name$='-op']")
    ops.select_option("gt")
    settled(page)
    row(page, 0).locator("input[name$='-value']").fill("9.5")
    expect(count).to_have_text("1")
    expect(page.locator("#segment-preview")).to_contain_text("+12125550102")
    page.get_by_role("button", name="Create segment").click()
    expect(page.locator("#toasts")).to_contain_text("Created “Big feet”")
    Session.expire_all()
    saved = Session.scalars(select(Segment.definition).where(Segment.name == "Big feet")
                            .execution_options(all_shops=True)).one()
    assert saved["rules"] == [{"field": "property", "attribute": "shoe size", "op": "gt", "value": "9.5"}]
