"""Numbers in Chromium: a merchant searches toll-free numbers in Settings, buys one, sees it as the store's default
sender, and a campaign goes out from it (the fake Vonage sees it as `from`)."""
from __future__ import annotations

import pytest
from sqlalchemy import select
from playwright.sync_api import expect

from kinnekt.db import Session, utcnow
from kinnekt.models.sender import RegistrationKind, RegistrationStatus, SenderNumber, SenderRegistration
from tests.fake_vonage import APPLICATION_ID
from tests.helpers import TOLL_FREE
from tests.test_browser_campaigns import vip_segment

pytestmark = pytest.mark.browser


def test_search_buy_and_send_from_the_new_number(open_page, shop, numbers_fake):
    vip_segment(shop, 2)
    page = open_page("/settings/")
    card = page.locator("#settings-numbers")
    expect(card.locator("#numbers-none")).to_contain_text("No numbers of your own yet")
    card.locator("#numbers-country").select_option("US")
    card.locator("#numbers-kind").select_option("toll_free")
    card.get_by_role("button", name="Search").click()
    offers = card.locator("#numbers-offers")
    expect(offers).to_contain_text("+18885550102")
    offers.get_by_role("button", name=f"Buy +{TOLL_FREE}").click()

    senders = page.locator("#numbers-senders")
    row = senders.locator(f'tr[data-sender="{TOLL_FREE}"]')
    expect(row).to_contain_text(f"+{TOLL_FREE}")
    expect(row).to_contain_text("Default")
    expect(row).to_contain_text("Toll-free number")
    assert numbers_fake.owned[TOLL_FREE]["app_id"] == APPLICATION_ID
    assert len(numbers_fake.numbers_calls("/number/buy")) == 1
    approve_registration(shop, TOLL_FREE)  # US numbers need it (its own browser test: test_browser_us_registration)

    page = open_page("/campaigns/new")
    page.locator("#campaign-name").fill("From our number")
    page.locator("#campaign-body").fill("Hi {first_name}, new arrivals are in")
    page.get_by_label("VIP customers (2)").check()
    page.get_by_label("Send now").check()
    page.get_by_role("button", name="Send now").click()
    expect(page.locator("#campaign-status")).to_have_text("Completed", timeout=30_000)
    assert [m["from"] for m in numbers_fake.sent()] == [TOLL_FREE, TOLL_FREE]


def approve_registration(shop, number: str) -> None:
    """The carriers approved the toll-free verification of the shop's number (as the poll would record it)."""
    sender = Session.scalars(select(SenderNumber).where(SenderNumber.shop_id == shop.id,
                                                        SenderNumber.msisdn == number)
                             .execution_options(all_shops=True)).one()
    Session.add(SenderRegistration(shop_id=shop.id, sender_number_id=sender.id,
                                   kind=RegistrationKind.TOLL_FREE_VERIFICATION, status=RegistrationStatus.APPROVED,
                                   decided_at=utcnow()))
    Session.commit()
