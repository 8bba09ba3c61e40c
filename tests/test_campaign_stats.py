"""Campaign statistics checked against figures computed by hand on a hand-built dataset."""
from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

import pytest
from flask import g, render_template

from kinnekt.campaigns import attribution, stats
from kinnekt.models import SubscriptionEvent
from kinnekt.models.message import row_ref
from kinnekt.sms import receipts
from tests.conftest import make_shop
from tests.test_campaign_attribution import DAY, HOUR, click, order
from tests.factories import customer, message
from tests.test_campaign_links import T0, campaign, recipient

pytestmark = pytest.mark.usefixtures("finished_jobs")

CENT = Decimal("0.0100")


def unsubscribed(db, shop, sub, at):
    db.add(SubscriptionEvent(shop_id=shop.id, subscriber_id=sub.id, kind="unsubscribed", at=at))
    db.commit()


@pytest.fixture
def dataset(db, shop):
    """Campaign A (a link and a shared code) to 12 recipients, B (no link) to one of them, C a draft.

    A: s1-s5 delivered, s6-s7 sent (no receipt), s8-s9 accepted then failed by their receipts "Absent subscriber",
    s12 refused by the provider "Invalid number" (charged half a cent), s10 skipped not subscribed, s11 skipped
    recently texted. Sent 9 (accepted), delivered 5, failed 2, no receipt 2, refused 1.
    Clicks: s1 at +1h and +2h, s2 at +1h30, s3 at +26h: 4 clicks by 3 recipients. Orders: s1 (30.00) at +3h,
    s3 (20.50) at +27h, both by click. Unsubscribes: s4 at +2h (counts), s5 at +30h (too late), s6 at +6h after
    B reached them at +5h (B's), s7 an hour before A (no).
    """
    a = campaign(db, shop, name="Spring - VIP", body="Sale https://alpha.example/sale", discount_mode="shared",
                 discount_code="SPRING")
    b = campaign(db, shop, name="Heads up", body="We open at 9 tomorrow.", started_at=T0 + 5 * HOUR)
    c = campaign(db, shop, name="Draft", body="Soon https://alpha.example/soon", status="draft", started_at=None)
    people = {n: customer(db, shop) for n in (1, 3)}
    subs = {n: recipient(db, shop, customer_row=people.get(n)) for n in range(1, 13)}
    for n in range(1, 6):
        message(db, a, subs[n], status="delivered", price=CENT)
    for n in (6, 7):
        message(db, a, subs[n], status="sent", price=CENT)
    for n in (8, 9):
        message(db, a, subs[n], status="failed", provider_id=f"0B00000000000{n:03d}", sent_at=T0, price=CENT,
                error_code="dlr-2", error_reason="Absent subscriber")
    message(db, a, subs[12], status="failed", error_code="3", error_reason="Invalid number", price=Decimal("0.005"))
    message(db, a, subs[10], status="skipped", skip_reason="not_subscribed")
    message(db, a, subs[11], status="skipped", skip_reason="recently_texted")
    message(db, b, subs[6], status="delivered", price=CENT, sent_at=T0 + 5 * HOUR)
    click(db, shop, a, subs[1], T0 + HOUR)
    click(db, shop, a, subs[1], T0 + 2 * HOUR)
    click(db, shop, a, subs[2], T0 + 90 * dt.timedelta(minutes=1))
    click(db, shop, a, subs[3], T0 + 26 * HOUR)
    first = order(db, shop, at=T0 + 3 * HOUR, customer_row=people[1], total="30.00")
    second = order(db, shop, at=T0 + 27 * HOUR, customer_row=people[3], total="25.00", current="20.50")
    unrelated = order(db, shop, at=T0 + 4 * HOUR, total="99.00")
    attribution.attribute_orders(db, shop, [first.id, second.id, unrelated.id])
    unsubscribed(db, shop, subs[4], T0 + 2 * HOUR)
    unsubscribed(db, shop, subs[5], T0 + 30 * HOUR)
    unsubscribed(db, shop, subs[6], T0 + 6 * HOUR)
    unsubscribed(db, shop, subs[7], T0 - HOUR)
    return {"a": a, "b": b, "c": c, "subs": subs}


def test_campaign_figures_match_the_hand_computed_ones(db, shop, dataset):
    figures = stats.for_campaign(db, dataset["a"])
    assert (figures.recipients, figures.sent, figures.delivered, figures.failed, figures.skipped) == (12, 9, 5, 2, 2)
    assert (figures.no_receipt, figures.refused) == (2, 1)
    # The reasons add up to their own figure: failed after acceptance apart from refused at the request, each in
    # the merchant's words, not the provider's codes.
    assert figures.failure_reasons == [("The phone was off or out of reach until the carrier gave up.", 2)]
    assert figures.refusal_reasons == [("Vonage refused the text: the number or the sender is not valid.", 1)]
    assert figures.delivered + figures.failed + figures.awaiting_receipt == figures.sent
    assert figures.unaccounted == 0
    assert [count for _label, count in figures.skip_reasons] == [1, 1]
    assert {label for label, _count in figures.skip_reasons} == {
        stats.skip_label("not_subscribed"), stats.skip_label("recently_texted")}
    assert (figures.clicks, figures.unique_clicks) == (4, 3)
    assert figures.click_rate == pytest.approx(3 / 9)
    assert (figures.orders, figures.revenue) == (2, Decimal("50.5000"))
    assert figures.revenue_per_message == Decimal("5.6111")  # 50.50 / 9
    assert figures.cost == Decimal("0.0950")  # 9 x 0.01 + 0.005
    assert figures.unsubscribes == 1
    assert figures.unsubscribe_rate == pytest.approx(1 / 9)
    assert figures.has_links and figures.tracks_orders


def test_sent_counts_every_accepted_message_whatever_its_receipt_said(db, shop):
    # Six accepted by the provider, one refused at the request, one whose answer was lost; then the receipts.
    row = campaign(db, shop, name="Receipts", body="Doors open at 9")
    subs = [recipient(db, shop) for _ in range(8)]
    ids = [f"0B000000{n:08d}" for n in range(6)]
    for sub, provider_id in zip(subs, ids):
        message(db, row, sub, status="sent", provider_id=provider_id, price=CENT)
    message(db, row, subs[6], status="failed", error_code="15", error_reason="Illegal Sender Address - rejected")
    lost = message(db, row, subs[7], status="unknown", error_code="connection", error_reason="connection reset")
    absent = {"type": "https://developer.vonage.com/api-errors/messages#1180", "title": 1180,
              "detail": "Absent subscriber (temporary)"}
    for provider_id in ids[:3]:
        assert receipts.apply(db, {"status": "delivered", "message_uuid": provider_id}) == "delivered"
    for provider_id in ids[3:5]:  # absent subscriber (temporary): accepted, then not delivered
        assert receipts.apply(db, {"status": "undeliverable", "message_uuid": provider_id, "error": absent}) == "failed"
    # The lost answer's message was accepted after all: its receipt (found by client_ref) says it failed.
    assert receipts.apply(db, {"status": "undeliverable", "message_uuid": "aaaaaaaa-0000-4000-8000-999999999999",
                               "error": absent, "client_ref": row_ref(lost.id)}) == "failed"

    figures = stats.for_campaign(db, row)
    assert (figures.sent, figures.delivered, figures.failed) == (7, 3, 3)
    assert figures.delivered + figures.failed + figures.no_receipt == figures.sent
    assert (figures.refused, figures.unknown, figures.recipients) == (1, 0, 8)
    assert figures.failure_reasons == [("The phone was off or out of reach until the carrier gave up.", 3)]
    assert figures.refusal_reasons == [
        ("The sender (the number or name texts come from) is not allowed for this number.", 1)]
    assert figures.unaccounted == 0
    progress = stats.progress(db, row)
    assert (progress.sent, progress.refused, progress.remaining, progress.finished) == (7, 1, 0, 8)
    rows, totals = stats.campaign_rows(db, shop)
    assert [r.sent for r in rows if r.campaign.id == row.id] == [7] and totals["sent"] == 7


def test_the_latest_campaign_gets_the_unsubscribe(db, shop, dataset):
    figures = stats.for_campaign(db, dataset["b"])
    assert (figures.sent, figures.unsubscribes, figures.clicks, figures.orders) == (1, 1, 0, 0)
    assert not figures.has_links and not figures.tracks_orders
    assert figures.cost == CENT


def test_a_campaign_with_nothing_sent_has_no_rates(db, shop, dataset):
    figures = stats.for_campaign(db, dataset["c"])
    assert (figures.recipients, figures.sent, figures.click_rate, figures.revenue_per_message) == (0, 0, None, None)
    assert figures.revenue == Decimal(0) and figures.cost == Decimal(0)


def test_list_rows_and_totals(db, shop, dataset):
    other = make_shop("beta.myshopify.com")
    theirs = campaign(db, other, name="Beta")
    message(db, theirs, recipient(db, other))
    rows, totals = stats.campaign_rows(db, shop)
    by_id = {row.campaign.id: row for row in rows}
    assert set(by_id) == {dataset["a"].id, dataset["b"].id, dataset["c"].id}
    a, b, c = by_id[dataset["a"].id], by_id[dataset["b"].id], by_id[dataset["c"].id]
    assert (a.sent, a.clicks, a.orders, a.revenue, a.has_links, a.tracks_orders) == (
        9, 4, 2, Decimal("50.5000"), True, True)
    assert (b.sent, b.clicks, b.orders, b.revenue, b.has_links, b.tracks_orders) == (
        1, 0, 0, Decimal(0), False, False)
    assert (c.sent, c.has_links) == (0, True)
    assert totals == {"sent": 10, "clicks": 4, "orders": 2, "revenue": Decimal("50.5000")}
    assert [row.campaign.id for row in rows] == sorted(by_id, reverse=True)  # newest first


def test_hourly_timeline(db, shop, dataset):
    series = stats.timeline(db, dataset["a"])
    assert series["unit"] == "hour" and series["timezone"] == "America/New_York"
    assert len(series["t"]) == 28  # T0 .. T0 + 27 h
    assert series["t"][0] == int(T0.timestamp()) and series["t"][1] - series["t"][0] == 3600
    clicks = {n: v for n, v in enumerate(series["clicks"]) if v}
    orders = {n: v for n, v in enumerate(series["orders"]) if v}
    assert clicks == {1: 2, 2: 1, 26: 1}
    assert orders == {3: 1, 27: 1}
    assert series["labels"][0] == "Mar 10, 11 AM"  # 15:00 UTC is 11:00 in New York (EDT)


def test_daily_timeline_uses_the_shops_local_days(db, shop):
    camp = campaign(db, shop)
    sub = recipient(db, shop)
    click(db, shop, camp, sub, T0 + HOUR)
    click(db, shop, camp, sub, dt.datetime(2026, 3, 11, 3, 30, tzinfo=dt.timezone.utc))  # Mar 10, 23:30 local
    click(db, shop, camp, sub, T0 + 4 * DAY)
    series = stats.timeline(db, camp)
    assert series["unit"] == "day"
    assert series["labels"] == ["Mar 10", "Mar 11", "Mar 12", "Mar 13", "Mar 14"]
    assert series["clicks"] == [2, 0, 0, 0, 1]
    assert series["orders"] == [0, 0, 0, 0, 0]


def test_an_empty_timeline(db, shop):
    series = stats.timeline(db, campaign(db, shop))
    assert (series["t"], series["clicks"], series["orders"]) == ([], [], [])


def test_the_stats_partial_shows_the_figures_and_the_chart_data(app, db, shop, dataset):
    camp = dataset["a"]
    with app.test_request_context("/campaigns/1"):
        g.shop = shop
        html = render_template("campaigns/_stats.html", campaign=camp, stats=stats.for_campaign(db, camp),
                               timeline=stats.timeline(db, camp))
    assert html.lstrip().startswith("{#") is False and 'id="campaign-stats"' in html
    for label, value in (("Sent", "9"), ("Delivered", "5"), ("Failed", "2"), ("Awaiting receipt", "2"),
                         ("Refused", "1"), ("Unique clicks", "3"), ("Click rate", "33.3%"), ("Orders", "2"),
                         ("Revenue", "$50.50"), ("Revenue per message", "$5.61"), ("Unsubscribes", "1"),
                         ("Cost", "$0.10")):
        assert f'<p class="metric__label">{label}</p>\n  <p class="metric__value">{value}</p>' in html, label
    failed_card = html[html.index('id="stat-failure-reasons"'):html.index('id="stat-refusal-reasons"')]
    assert "The phone was off or out of reach" in failed_card  # 2 reasons for Failed 2, the refusal apart:
    invalid = "the number or the sender is not valid"
    assert invalid not in failed_card and invalid in html
    assert "Absent subscriber" not in html and "dlr-" not in html  # no provider code on the screen
    accounting = " ".join(re.sub(r"<[^>]+>", " ", html[html.index('id="stat-accounting"'):]).split())
    assert accounting.startswith('id="stat-accounting">Sent 9 = 5 delivered + 2 failed + 2 awaiting receipt. '
                                 'Of 12 recipients, 9 sent, 1 refused by the SMS provider, 2 not sent')
    assert '<script type="application/json" id="campaign-chart-data">' in html
    assert 'data-campaign-chart="campaign-chart-data"' in html
    assert "vendor/uplot-1.6.32.min.js" in html and "js/campaign-chart.js" in html
    assert "<script>" not in html  # no inline script a CSP would block


def test_the_stats_partial_of_a_campaign_without_links_shows_no_clicks(app, db, shop, dataset):
    camp = dataset["b"]
    with app.test_request_context("/campaigns/2"):
        g.shop = shop
        html = render_template("campaigns/_stats.html", campaign=camp, stats=stats.for_campaign(db, camp),
                               timeline=stats.timeline(db, camp))
    assert "Sent" in html and "Clicks" not in html and "Revenue" not in html and "campaign-chart" not in html


@pytest.mark.browser
def test_the_chart_draws_on_the_campaign_page_after_an_htmx_navigation(live_server, page, db, shop, token_for,
                                                                       dataset):
    """In Chromium: open the list, follow the campaign (a boosted htmx swap), and see the chart drawn, error-free."""
    from playwright.sync_api import expect
    camp = dataset["a"]
    camp.status = "completed"
    db.commit()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    token = token_for(shop.domain, ttl=600)
    page.add_init_script("window.shopify = {idToken: async () => %r};" % token)
    page.goto(f"{live_server}/campaigns/?id_token={token}")
    page.locator("#campaigns-page").get_by_role("link", name=camp.name).first.click()
    stats_section = page.locator("#campaign-stats")
    expect(stats_section.locator("#stat-unique-clicks")).to_contain_text("3")
    expect(stats_section.locator(".campaign-chart canvas")).to_have_count(1)
    expect(stats_section.locator(".campaign-chart")).to_have_attribute("data-chart-drawn", "true")
    expect(stats_section.locator(".u-legend")).to_contain_text("Clicks")
    page.goto(f"{live_server}/campaigns/{camp.id}?id_token={token}")  # a full page load draws it too
    expect(page.locator("#campaign-stats .campaign-chart canvas")).to_have_count(1)
    assert errors == []
