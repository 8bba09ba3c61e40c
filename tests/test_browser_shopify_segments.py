"""A Shopify customer segment in the segment builder, in Chromium: pick one of the shop's Shopify segments (listed
with when their members were read), see the count, save, and read the rule on the segment's page."""
from __future__ import annotations

import datetime as dt

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kinnekt.db import Session, utcnow
from kinnekt.models import Segment, ShopifySegment, ShopifySegmentMember
from tests import factories
from tests.test_browser_segments import redraw, row

pytestmark = pytest.mark.browser

READ_AT = dt.datetime(2026, 12, 7, 9, 5, tzinfo=dt.timezone.utc)


@pytest.fixture
def store(shop, other_shop):
    """Four subscribers linked to customers 501..504; Shopify segment 77 holds 501 and 503 (and a stranger)."""
    for i, customer_id in enumerate((501, 502, 503, 504)):
        customer = factories.customer(Session, shop, shopify_id=customer_id)
        factories.subscriber(Session, shop, phone=f"+1212555010{i}", customer=customer, subscribed_at=utcnow())
    for owner, shopify_id, name, members in ((shop, 77, "Big spenders", (501, 503, 999)),
                                             (shop, 78, "Lapsed", (502,)), (other_shop, 79, "Not ours", (504,))):
        Session.add(ShopifySegment(shop_id=owner.id, shopify_id=shopify_id, name=name, query="amount_spent > 100",
                                   member_count=len(members), refreshed_at=READ_AT))
        Session.add_all([ShopifySegmentMember(shop_id=owner.id, segment_id=shopify_id, customer_id=c)
                         for c in members])
    Session.commit()


def test_pick_a_shopify_segment_and_see_the_count(open_page, shop, store):
    page = open_page("/segments/new")
    count = page.locator("#segment-preview-count")
    expect(count).to_have_text("4")
    page.locator("#segment-name").fill("Shopify big spenders")
    redraw(page, 0, "field", "shopify_segment")
    value = row(page, 0).locator("select[name$='-value']")
    expect(value.locator("option")).to_have_text([
        "Choose a Shopify segment", "Big spenders (members read Dec 7, 2026 09:05 UTC)",
        "Lapsed (members read Dec 7, 2026 09:05 UTC)"])
    value.select_option("77")
    expect(count).to_have_text("2")
    row(page, 0).locator("select[name$='-op']").select_option("not_in")
    expect(count).to_have_text("2")  # 502 and 504
    row(page, 0).locator("select[name$='-op']").select_option("in")
    expect(count).to_have_text("2")

    row(page, 0).get_by_role("button", name="Refresh from Shopify").click()
    expect(page.locator("#toasts")).to_contain_text("Reading your Shopify segments")

    page.get_by_role("button", name="Create segment").click()
    expect(page.locator("#segments-page")).to_be_visible()
    saved = Session.scalar(select(Segment).where(Segment.name == "Shopify big spenders"))
    assert saved.definition["rules"] == [{"field": "shopify_segment", "op": "in", "value": "77"}]
    page = open_page(f"/segments/{saved.id}")
    expect(page.locator("#segment-rules")).to_contain_text(
        "Is in Shopify segment “Big spenders” (members read Dec 7, 2026 09:05 UTC)")
    expect(page.locator("#segment-shopify-segments")).to_contain_text("Big spenders")
