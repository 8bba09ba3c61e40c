"""The subscribers pages in Chromium: add one by hand, find it on the list and open its detail; unsubscribe it;
import a CSV and read the report; follow a large import's progress bar to its report."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import Subscriber, SubscriberImport
from tests.conftest import FAKE_APP_BRIDGE

pytestmark = pytest.mark.browser



def open_subscribers(page, live_server, shop, token_for):
    token = token_for(shop.domain, ttl=600)
    page.add_init_script(FAKE_APP_BRIDGE % token)
    page.goto(f"{live_server}/subscribers/?id_token={token}")
    expect(page.locator("main h1").first).to_have_text("Subscribers")


def test_add_a_subscriber_find_it_and_unsubscribe_it(live_server, page, db, shop, token_for):
    open_subscribers(page, live_server, shop, token_for)
    page.get_by_role("link", name="Add subscriber").click()
    expect(page.locator("main h1").first).to_have_text("Add subscriber")

    # Without the attestation nothing is saved and the checkbox says why.
    page.locator("#subscriber-phone").fill("(212) 555-0188")
    page.locator("#subscriber-first-name").fill("Ada")
    page.get_by_role("button", name="Add subscriber").click()
    expect(page.locator("#subscriber-consent-error")).to_contain_text("Confirm that this person agreed")
    assert Session.scalars(select(Subscriber).execution_options(all_shops=True)).all() == []

    page.get_by_label("This person agreed to receive marketing texts from Alpha.").check()
    page.get_by_role("button", name="Add subscriber").click()
    expect(page.locator("#subscriber-detail h1")).to_have_text("+12125550188")
    expect(page.locator("#subscriber-status")).to_have_text("Subscribed")
    expect(page.locator("#subscriber-consent-record")).to_contain_text(
        "This person agreed to receive marketing texts from Alpha.")
    expect(page.locator("#toasts")).to_contain_text("Added +12125550188")

    page.get_by_role("link", name="Back to subscribers").click()
    page.locator("#subscriber-search").fill("ada")
    row = page.locator("#subscribers-table tbody tr", has_text="+12125550188")
    expect(row).to_contain_text("Manual")
    expect(page.locator("#subscribers-table tbody tr")).to_have_count(1)
    row.get_by_role("link", name="+12125550188").click()
    expect(page.locator("#subscriber-detail h1")).to_have_text("+12125550188")
    expect(page.locator("#subscriber-summary")).to_contain_text("(212) 555-0188")

    page.locator("#unsubscribe-reason").fill("Asked by phone")
    page.get_by_role("button", name="Unsubscribe").click()
    expect(page.locator("#subscriber-status")).to_have_text("Unsubscribed")
    expect(page.locator("#subscriber-history")).to_contain_text("Asked by phone")
    sub = Session.scalars(select(Subscriber).execution_options(all_shops=True)).one()
    Session.refresh(sub)
    assert (sub.shop_id, sub.source, sub.status, sub.first_name) == (shop.id, "manual", "unsubscribed", "Ada")


def test_import_a_csv_and_see_the_report(live_server, page, db, shop, token_for):
    open_subscribers(page, live_server, shop, token_for)
    page.get_by_role("link", name="Import CSV").click()
    expect(page.locator("main h1").first).to_have_text("Import subscribers")

    page.locator("#import-file").set_input_files(files=[{
        "name": "people.csv", "mimeType": "text/csv",
        "buffer": "phone,first_name\n+1 212 555 0101,Ada\nnot a number,Bob\n212-555-0101,Ada again\n".encode()}])
    page.get_by_label("Everyone in this file agreed to receive marketing texts from Alpha.").check()
    page.get_by_role("button", name="Upload and match columns").click()
    expect(page.locator("#import-preview tbody tr")).to_have_count(3)
    page.get_by_role("button", name="Import 3 rows").click()

    report = page.locator("#import-report")
    expect(report).to_contain_text("Imported 1 subscriber")
    expect(report).to_contain_text("2 rows not imported: 1 not a valid phone number, 1 duplicate in the file.")
    expect(report.locator("tbody tr")).to_have_count(2)
    expect(report.locator("tbody tr").first).to_contain_text("not a number is not a phone number")
    expect(report.locator("tbody tr").nth(1)).to_contain_text("duplicate of row 2")
    expect(page.locator("#toasts")).to_contain_text("Imported 1 subscriber")

    report.get_by_role("link", name="See your subscribers").click()
    expect(page.locator("#subscribers-table tbody tr")).to_have_count(1)
    expect(page.locator("#subscribers-table tbody tr").first).to_contain_text("Ada")
    saved = Session.scalars(select(Subscriber).execution_options(all_shops=True)).one()
    assert (saved.shop_id, saved.phone, saved.source) == (shop.id, "+12125550101", "import")


def test_a_large_import_shows_its_progress_then_its_report(live_server, page, db, shop, token_for, import_jobs):
    """A file over the inline limit is imported by a job: the page polls its progress bar, then shows the report.
    The test runs the job itself, a batch at a time (the `import_jobs` fixture records jobs instead of running them)."""
    from kinnekt.models import SubscriberImport
    from kinnekt.subscribers import importing
    open_subscribers(page, live_server, shop, token_for)
    page.get_by_role("link", name="Import CSV").click()
    rows = ["phone,first_name", "+1 212 555 0101,Ada", "not a number,Bob", "+1 212 555 0102,Cy",
            "212-555-0101,Ada again", "+1 212 555 0103,Di", "+1 212 555 0104,Ed"]
    page.locator("#import-file").set_input_files(files=[{
        "name": "people.csv", "mimeType": "text/csv", "buffer": ("\n".join(rows) + "\n").encode()}])
    page.get_by_label("Everyone in this file agreed to receive marketing texts from Alpha.").check()
    page.get_by_role("button", name="Upload and match columns").click()
    page.get_by_role("button", name="Import 6 rows").click()

    progress = page.locator("#import-progress")
    expect(progress).to_contain_text("Importing people.csv: 6 rows")
    expect(progress).to_contain_text("Waiting to start.")
    expect(page.locator("#toasts")).to_contain_text("Importing 6 rows")
    import_id = Session.scalars(select(SubscriberImport.id).execution_options(all_shops=True)).one()
    expect(page).to_have_url(re.compile(rf"/subscribers/imports/{import_id}$"))

    importing.import_batches(Session(), import_id, batches=1)
    expect(progress).to_have_attribute("data-status", "running")
    expect(page.locator("#import-progress-rows")).to_contain_text("2 of 6 rows read, 1 subscriber added so far.")
    expect(progress.locator("progress")).to_have_attribute("value", "2")

    importing.import_batches(Session(), import_id)
    report = page.locator("#import-report")
    expect(report).to_contain_text("Imported 4 subscribers")
    expect(report).to_contain_text("2 rows not imported: 1 not a valid phone number, 1 duplicate in the file.")
    expect(report.locator("tbody tr").nth(1)).to_contain_text("duplicate of row 2")
    expect(page.locator("#toasts")).to_contain_text("Imported 4 subscribers")
    expect(progress).to_have_attribute("data-status", "done")
    expect(progress).not_to_have_attribute("hx-get", re.compile(".*"))  # the 286 stopped the polling

    report.get_by_role("link", name="See your subscribers").click()
    expect(page.locator("#subscribers-table tbody tr")).to_have_count(4)


def test_a_failed_text_reads_as_a_sentence_with_the_code_in_a_tooltip(open_page, shop):
    from kinnekt.db import utcnow
    from kinnekt.models import Message
    sub = Subscriber(shop_id=shop.id, phone="+12125550123", status="subscribed", source="manual",
                     suppressed_at=utcnow(), suppressed_reason="Delivery failed twice: this number no longer works")
    Session.add(sub)
    Session.commit()
    Session.add(Message(shop_id=shop.id, subscriber_id=sub.id, to_phone=sub.phone, kind="confirmation",
                        body="Reply Y to confirm", status="failed", error_code="dlr-3",
                        error_reason="failed: Absent subscriber (permanent)", sent_at=utcnow()))
    Session.commit()
    page = open_page(f"/subscribers/{sub.id}")
    messages = page.locator("#subscriber-messages")
    reason = messages.get_by_text("This number no longer works.")
    expect(reason).to_be_visible()
    expect(reason).to_have_attribute("title", "failed: Absent subscriber (permanent) · code dlr-3")
    main = page.locator("main")
    expect(main).not_to_contain_text("err-code")
    expect(main).not_to_contain_text("dlr-3")
    expect(main).not_to_contain_text("Absent subscriber")


def test_map_the_columns_of_a_csv_see_the_preview_change_then_import(live_server, page, db, shop, token_for):
    """The whole mapping step in a browser: the suggestion, a changed column and a new property refreshing the
    preview and its per-column checks, a refused mapping, then the import with that mapping and its report."""
    from kinnekt.models import ProfileProperty, SubscriberProperty
    open_subscribers(page, live_server, shop, token_for)
    page.get_by_role("link", name="Import CSV").click()
    content = ("Cell,Vorname,Surname,Geburtstag,Points\n"
               "+1 212 555 0101,Ada,Lovelace,1990-07-04,12\n"
               "212-555-0102,=cmd|' /C calc'!A0,Byron,1815-12-10,lots\n"
               "+1 212 555 0103,Cy,,04.07.1990,3\n")
    page.locator("#import-file").set_input_files(files=[{
        "name": "people.csv", "mimeType": "text/csv", "buffer": content.encode()}])
    page.get_by_label("Everyone in this file agreed to receive marketing texts from Alpha.").check()
    page.get_by_role("button", name="Upload and match columns").click()

    mapping = page.locator("#import-mapping")
    expect(mapping).to_contain_text("Match the columns of people.csv")
    import_id = Session.scalars(select(SubscriberImport.id).execution_options(all_shops=True)).one()
    expect(page).to_have_url(re.compile(rf"/subscribers/imports/{import_id}$"))
    expect(page.locator("#import-column-0")).to_have_value("phone")
    expect(page.locator("#import-column-1")).to_have_value("ignore")
    expect(page.locator("#import-column-2")).to_have_value("last_name")
    expect(page.locator("#import-preview thead th")).to_have_text(["Row", "Phone number", "Last name"])

    page.get_by_label("What column “Vorname” becomes").select_option("first_name")
    expect(page.locator("#import-preview thead th")).to_have_text(["Row", "Phone number", "First name", "Last name"])
    expect(page.locator("#import-check-1")).to_contain_text("1 value does not fit")
    expect(page.locator("#import-check-1")).to_contain_text("Row 3: First name starts with “=”")
    page.get_by_label("What column “Geburtstag” becomes").select_option("property:birthday")
    expect(page.locator("#import-check-3")).to_contain_text("Row 4: Birthday must be a date written YYYY-MM-DD")
    expect(page.locator("#import-preview tbody tr").first).to_contain_text("1990-07-04")

    page.get_by_label("What column “Points” becomes").select_option("new:number")
    name = page.locator("#import-name-4")
    expect(name).to_have_value("Points")
    name.fill("Loyalty points")
    name.dispatch_event("change")
    expect(page.locator("#import-preview thead th").last).to_have_text("Loyalty points (new)")
    expect(page.locator("#import-check-4")).to_contain_text("Row 3: Loyalty points (new) must be a number")

    # Two columns for the phone number: refused beside the second one, and nothing is saved.
    page.get_by_label("What column “Surname” becomes").select_option("phone")
    page.get_by_role("button", name="Import 3 rows").click()
    expect(page.locator("#import-column-2-error")).to_contain_text("Column 1 already becomes Phone number")
    assert Session.scalars(select(Subscriber).execution_options(all_shops=True)).all() == []
    assert Session.scalars(select(ProfileProperty).execution_options(all_shops=True)).all() == []

    page.get_by_label("What column “Surname” becomes").select_option("last_name")
    expect(page.locator("#import-column-2-error")).to_have_count(0)
    page.get_by_role("button", name="Import 3 rows").click()
    report = page.locator("#import-report")
    expect(report).to_contain_text("Imported 1 subscriber")
    expect(report).to_contain_text("2 rows not imported: 2 with a value that does not fit its property.")
    expect(report).to_contain_text("Read into profile properties: Geburtstag → Birthday, Points → Loyalty points.")
    expect(page.locator("#toasts")).to_contain_text("Imported 1 subscriber")
    expect(page).to_have_url(re.compile(r"/subscribers/import$"))

    ada = Session.scalars(select(Subscriber).execution_options(all_shops=True)).one()
    assert (ada.phone, ada.first_name, ada.last_name) == ("+12125550101", "Ada", "Lovelace")
    stored = {(v.name_key, v.number_value or v.date_value) for v in Session.scalars(
        select(SubscriberProperty).execution_options(all_shops=True))}
    assert {key for key, _ in stored} == {"birthday", "loyalty points"}
    report.get_by_role("link", name="See your subscribers").click()
    page.locator("#subscribers-table tbody tr").first.get_by_role("link").first.click()
    expect(page.locator("#subscriber-summary")).to_contain_text("Ada Lovelace")

