"""Static lists in Chromium: a CSV chosen in the file input is uploaded by htmx, reported, and listed."""
import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import StaticList, StaticListEntry
from tests.conftest import FAKE_APP_BRIDGE

pytestmark = pytest.mark.browser



def test_upload_a_csv_and_see_the_report_and_the_list(live_server, page, db, shop, token_for):
    token = token_for(shop.domain, ttl=600)
    page.add_init_script(FAKE_APP_BRIDGE % token)
    page.goto(f"{live_server}/segments/?id_token={token}")
    page.get_by_role("link", name="Static lists").click()
    expect(page.locator("main h1").first).to_have_text("Static lists")
    expect(page.locator("#lists-page")).to_contain_text("No static lists yet")

    page.locator("#list-name").fill("Pop-up visitors")
    page.locator("#list-file").set_input_files(files=[{
        "name": "visitors.csv", "mimeType": "text/csv",
        "buffer": "name,phone\nAda,+1 650 253 0000\nBob,not a number\n".encode()}])
    page.get_by_role("button", name="Upload list").click()

    report = page.locator("#list-report")
    expect(report).to_contain_text("“Pop-up visitors” saved with 1 number")
    expect(report.locator("tbody tr")).to_have_count(1)
    expect(report.locator("tbody tr").first).to_contain_text("3")
    expect(report.locator("tbody tr").first).to_contain_text("not a number")
    expect(report.locator("tbody tr").first).to_contain_text("not a phone number")
    row = page.locator("#lists-page .card--flush tbody tr", has_text="Pop-up visitors")
    expect(row.locator("td.numeric")).to_have_text("1")
    expect(page.locator("#toasts")).to_contain_text("Saved “Pop-up visitors” with 1 number")

    saved = Session.scalars(select(StaticList).execution_options(all_shops=True)).one()
    assert saved.shop_id == shop.id and saved.name == "Pop-up visitors"
    assert Session.scalars(select(StaticListEntry.phone).where(StaticListEntry.list_id == saved.id)
                           .execution_options(all_shops=True)).all() == ["+16502530000"]
