"""Issue 20 in Chromium, at 1280x800 and 390x844: merchant screens that agree with themselves. The composer's
button says what it will do, a switched-off campaign looks off, Show more becomes Show less, money carries the
shop's currency and one price table, error pages sit in the app with a way back, the campaign page accounts for
every recipient, and Subscribed vs All subscribers is explained by the suppressed numbers."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.sync_api import expect

from kinnekt.db import Session, utcnow
from kinnekt.models import Segment, SegmentMember
from kinnekt.sms import prices
from tests.factories import message
from tests.test_campaign_links import recipient
from tests.test_campaigns_web import campaign, segment, subscriber

pytestmark = pytest.mark.browser

VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(params=list(VIEWPORTS))
def screen(request, page):
    """The page at one of the two sizes the app must work at; no console error may happen on it."""
    page.set_viewport_size(VIEWPORTS[request.param])
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.console_problems = problems
    yield page
    # The error pages' own status is reported by Chromium as a failed load: that one is expected.
    assert [p for p in problems if "the server responded with a status of" not in p] == []


def test_the_composer_button_says_what_it_will_do(open_page, screen, shop):
    """Issue 20.4: with Send now chosen the main button said "Schedule campaign"."""
    page = open_page("/campaigns/new")
    button = page.locator("#campaign-schedule")
    expect(button).to_have_text("Schedule campaign")
    page.get_by_label("Send now").check()
    expect(button).to_have_text("Send now")
    page.get_by_label("Schedule for a date and time").check()
    expect(button).to_have_text("Schedule campaign")


def test_a_send_now_draft_opens_with_a_send_now_button(open_page, screen, shop):
    draft = campaign(shop, "Flash sale", send_now=True)
    page = open_page(f"/campaigns/{draft.id}/edit")
    expect(page.locator("#campaign-schedule")).to_have_text("Send now")


def test_a_switched_off_scheduled_campaign_looks_off_on_the_list_and_its_page(open_page, screen, shop):
    """Issue 20.9: a switched-off weekly campaign kept the blue "Scheduled" badge."""
    weekly = campaign(shop, "Weekly picks", status="scheduled", enabled=False, repeat="weekly",
                      send_at=utcnow() + dt.timedelta(days=2), repeat_anchor=utcnow() + dt.timedelta(days=2))
    page = open_page("/campaigns/")
    row = page.locator("#campaigns-page tbody tr", has_text="Weekly picks")
    badge = row.locator(".badge").first
    expect(badge).to_have_text("Scheduled · Switched off")
    expect(badge).not_to_have_class(re.compile(r"badge--info"))

    page = open_page(f"/campaigns/{weekly.id}")
    status = page.locator("#campaign-status .badge").first
    expect(status).to_have_text("Scheduled · Switched off")
    expect(status).not_to_have_class(re.compile(r"badge--info"))

    page = open_page("/campaigns/")  # switched on again: the blue badge comes back
    row = page.locator("#campaigns-page tbody tr", has_text="Weekly picks")
    row.get_by_role("switch", name="Weekly picks on or off").check()
    badge = page.locator("#campaigns-page tbody tr", has_text="Weekly picks").locator(".badge").first
    expect(badge).to_have_text("Scheduled")
    expect(badge).to_have_class(re.compile(r"badge--info"))


def test_show_more_becomes_show_less(open_page, screen, shop):
    """Issue 20.13: "Show more" never became "Show less"."""
    ada = subscriber(shop, "+12125550101")
    segment(shop, "Bought twice", [ada])
    page = open_page("/segments/")
    toggle = page.locator("#segments-page tr", has_text="Bought twice").locator(".segment-rules > summary")
    more, less = toggle.get_by_text("Show more", exact=True), toggle.get_by_text("Show less", exact=True)
    expect(more).to_be_visible()
    expect(less).to_be_hidden()
    toggle.click()
    expect(page.locator("#segments-page tr", has_text="Bought twice").locator(".segment-rules__list")).to_be_visible()
    expect(less).to_be_visible()
    expect(more).to_be_hidden()
    toggle.click()
    expect(more).to_be_visible()
    expect(less).to_be_hidden()


def test_the_cost_estimate_uses_the_price_table_by_country_with_the_currency(open_page, screen, shop):
    """Issue 20.13: $0.0079 a part in the composer, $0.027 a text in the seed; amounts without a sign."""
    people = [subscriber(shop, "+12125550101", country="US"), subscriber(shop, "+447700900123", country="GB")]
    buyers = segment(shop, "Buyers", people)
    page = open_page("/campaigns/new")
    # Each edit makes one live request (the message's counter, the segment choices' breakdown), either answer
    # carrying the cost; both must have answered before the page is left, or leaving aborts the later one.
    with page.expect_response(lambda r: r.url.split("?")[0].endswith("/compose/message")) as counted, \
            page.expect_response(lambda r: r.url.split("?")[0].endswith("/compose/audience")) as broken_down:
        page.locator("#campaign-body").fill("Spring sale today")
        page.locator("#campaign-include").get_by_label(re.compile("Buyers")).check()
    expect(page.locator("#campaign-breakdown")).to_contain_text("Sendable")
    us, gb = prices.price_per_part("US"), prices.price_per_part("GB")
    expect(page.locator("#campaign-cost-per-message")).to_contain_text(f"${us}")  # 1 part to the shop's country
    expect(page.locator("#campaign-cost-total")).to_have_text(f"${(us + gb).quantize(prices.Decimal('0.01'))}")
    assert buyers.member_count == 2
    # Not wait_for_load_state("networkidle"): once the page has been idle that returns at once, requests or not.
    assert counted.value.finished() is None and broken_down.value.finished() is None  # both bodies read in full

    page = open_page("/settings/")
    table = page.locator("#settings-prices")
    expect(table.locator("tr[data-country='US'] td").last).to_have_text(f"${us}")
    expect(table.locator("tr[data-country='GB'] td").last).to_have_text(f"${gb}")
    expect(table.locator("tr[data-country='other']")).to_contain_text(f"${prices.OTHER_COUNTRIES}")


@pytest.mark.expected_http_error(404, 500)
def test_error_pages_sit_in_the_app_with_a_way_back(open_page, screen, app, shop, monkeypatch):
    """Issue 20.13: a bare 404 (and 500) page."""
    page = open_page("/segments/")
    expect(page.locator("#segments-page")).to_be_visible()
    page = open_page("/segments/no-such-page")
    card = page.locator("#error-page")
    expect(card).to_be_visible()
    expect(card.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.locator(".frame__nav, ui-nav-menu").first).to_be_attached()  # the app's frame around it
    expect(card.get_by_role("link", name="Go to Home")).to_be_visible()
    card.get_by_role("button", name="Go back").click()
    expect(page.locator("#segments-page")).to_be_visible()

    def broken():
        raise RuntimeError("boom")
    monkeypatch.setitem(app.view_functions, "keywords.index", broken)
    page = open_page("/keywords/")
    expect(page.locator("#error-page").get_by_role("heading", name="Something went wrong")).to_be_visible()
    expect(page.locator("#error-page")).not_to_contain_text("boom")
    page.locator("#error-page").get_by_role("link", name="Go to Home").click()
    expect(page.locator("#error-page")).to_have_count(0)

    # An htmx request that fails still shows the short error in the page's error region.
    page = open_page("/segments/")
    page.evaluate("""() => {
        const link = document.createElement('a');
        link.href = '/segments/no-such-page'; link.id = 'broken-link'; link.textContent = 'Broken';
        document.querySelector('#main').prepend(link);
        window.htmx.process(link);
    }""")
    page.locator("#broken-link").click()
    expect(page.locator("#global-error")).to_contain_text("404 · Page not found")
    expect(page.locator("#segments-page")).to_be_visible()


def test_the_campaign_page_accounts_for_every_recipient(open_page, screen, shop):
    """Issue 20.13: Sent = delivered + failed + awaiting receipt, and nothing unaccounted."""
    row = campaign(shop, "Receipts", status="completed", body="Doors open at 9", started_at=utcnow(),
                   finished_at=utcnow())
    subs = [recipient(Session, shop) for _ in range(7)]
    message(Session, row, subs[0], status="delivered", provider_id="p0")
    message(Session, row, subs[1], status="delivered", provider_id="p1")
    message(Session, row, subs[2], status="failed", provider_id="p2", error_code="dlr-2",
            error_reason="Absent subscriber")
    message(Session, row, subs[3], status="sent", provider_id="p3")
    message(Session, row, subs[4], status="failed", error_code="15", error_reason="Illegal Sender Address")
    message(Session, row, subs[5], status="skipped", skip_reason="recently_texted")
    message(Session, row, subs[6], status="unknown", error_code="connection", error_reason="connection reset")
    page = open_page(f"/campaigns/{row.id}")
    expect(page.locator("#stat-sent .metric__value")).to_have_text("4")
    expect(page.locator("#stat-delivered .metric__value")).to_have_text("2")
    expect(page.locator("#stat-failed .metric__value")).to_have_text("1")
    expect(page.locator("#stat-no-receipt")).to_contain_text("Awaiting receipt")
    expect(page.locator("#stat-no-receipt .metric__value")).to_have_text("1")
    words = ("Sent 4 = 2 delivered + 1 failed + 1 awaiting receipt. Of 7 recipients, 4 sent, 1 refused by the SMS "
             "provider, 1 not sent (reasons below), 1 outcome unknown")
    expect(page.locator("#stat-accounting")).to_have_text(re.compile(r"\s+".join(map(re.escape, words.split()))))
    failed = page.locator("#stat-failure-reasons")
    expect(failed).to_contain_text("The phone was off or out of reach")  # dlr-2, in the merchant's words
    sender = "The sender (the number or name texts come from) is not allowed"  # Vonage's status 15
    expect(failed).not_to_contain_text(sender)  # refused: never sent, listed apart
    expect(page.locator("#stat-refusal-reasons")).to_contain_text(sender)


def test_subscribed_versus_all_subscribers_is_explained(open_page, screen, shop):
    """Issue 20.13: "Subscribed 1,444" on Subscribers vs "All subscribers 1,433" on Segments."""
    people = [subscriber(shop, f"+1212555{1000 + i:04d}") for i in range(3)]
    suppressed = subscriber(shop, "+12125559999", suppressed_at=utcnow(), suppressed_reason="Delivery failed twice")
    everyone = Segment(shop_id=shop.id, name="All subscribers", kind="auto", auto_source="all", build_status="done",
                       member_count=3, last_built_at=utcnow(),
                       definition={"match": "all", "rules": [{"field": "subscription_source", "op": "eq",
                                                              "value": "all"}]})
    Session.add(everyone)
    Session.flush()
    Session.add_all([SegmentMember(shop_id=shop.id, segment_id=everyone.id, subscriber_id=p.id) for p in people])
    Session.commit()
    assert suppressed.status == "subscribed"

    page = open_page("/subscribers/?status=subscribed")
    expect(page.locator(".pagination__summary")).to_contain_text("of 4 subscribers")
    note = page.locator("#subscribers-suppressed-note")
    expect(note).to_contain_text("Includes 1 suppressed number")
    expect(note).to_contain_text("segments (such as All subscribers) leave it out")

    page = open_page("/segments/")
    cell = page.locator("#segments-page tr", has_text="All subscribers")
    expect(cell).to_contain_text("3")
    expect(page.locator("#segment-suppressed-note")).to_have_text(re.compile(r"Leaves out 1 suppressed\s+number"))
