"""Campaigns in Chromium: compose a campaign for a segment, schedule it, watch it send (the bar moves) and complete
with its statistics; end a campaign mid-send. Sends go through the in-process queue to the fake Vonage, slowed
down by a low rate limit so the progress is observable."""
from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select, update

from kinnekt.db import Session, utcnow
from kinnekt.models import Campaign, Message
from kinnekt.queue import get_queue
from tests.test_campaigns_web import segment, subscriber

pytestmark = pytest.mark.browser

EVERYONE = {"match": "all", "rules": [{"field": "subscription_source", "op": "eq", "value": "all"}]}
RATE_PER_SECOND = 2
"""Sends per second in these tests: slow enough to watch the bar move between two 2-second polls."""


@pytest.fixture
def slow_sending(app, vonage_config, settled_jobs, monkeypatch):
    """Campaign sends go to the fake Vonage at RATE_PER_SECOND; every job has finished before the tables empty."""
    monkeypatch.setitem(app.config, "SMS_RATE_PER_SECOND", RATE_PER_SECOND)
    return vonage_config


def vip_segment(shop, size: int):
    """A "VIP customers" segment of `size` subscribers; quiet hours off so the tests pass at any hour."""
    shop.quiet_hours_enabled = False
    Session.commit()
    people = [subscriber(shop, f"+1212555{1000 + i:04d}", first_name=f"Pat{i}") for i in range(size)]
    vip = segment(shop, "VIP customers", people)
    vip.definition = EVERYONE
    Session.commit()
    return vip


@pytest.fixture
def audience(shop):
    """12 VIP subscribers: six seconds of sending, three polls of the progress bar."""
    return vip_segment(shop, 12)


@pytest.fixture
def big_audience(shop):
    """30 VIP subscribers: fifteen seconds of sending, time enough to end the campaign part-way."""
    return vip_segment(shop, 30)




def the_clock_reaches(campaign_id: int) -> None:
    """The scheduled time arrives: move send_at to just now and run the start job the scheduler would run."""
    from kinnekt.campaigns.tasks import start_campaign
    Session.execute(update(Campaign).where(Campaign.id == campaign_id)
                    .values(send_at=utcnow() - dt.timedelta(seconds=1)))
    Session.commit()
    get_queue().enqueue(start_campaign, campaign_id, job_id=f"campaign-{campaign_id}-start")


def test_compose_schedule_send_and_see_the_statistics(open_page, shop, audience, slow_sending):
    page = open_page("/campaigns/")
    page.get_by_role("link", name="Create campaign").click()
    expect(page.locator("#campaign-composer")).to_be_visible()

    body = page.locator("#campaign-body")
    body.fill("Hi {first_name}! Spring sale — 20% off: https://alpha.example/sale")
    expect(page.locator("#campaign-encoding")).to_have_text("Unicode (UCS-2)")
    expect(page.locator("#campaign-unicode mark").first).to_have_text("—")
    page.get_by_role("button", name="Use GSM-safe characters").click()
    expect(body).to_have_value("Hi {first_name}! Spring sale - 20% off: https://alpha.example/sale")
    expect(page.locator("#campaign-encoding")).to_have_text("GSM-7")
    expect(page.locator("#campaign-segments")).to_have_text("1")
    expect(page.locator("#campaign-preview-text")).to_contain_text("Hi Alex! Spring sale - 20% off")
    expect(page.locator("#campaign-preview-text")).to_contain_text("Reply STOP to unsubscribe")

    page.get_by_label("VIP customers (12)").check()
    expect(page.locator("#campaign-sendable")).to_have_text("12")
    expect(page.locator("#campaign-cost-total")).to_contain_text("$0.10")  # 12 x 1 segment x 0.0081 (US)
    page.get_by_role("button", name=re.compile("^Use the suggested name")).click()
    expect(page.locator("#campaign-name")).to_have_value("Spring sale - 20% off - VIP customers")

    tomorrow = (utcnow() + dt.timedelta(days=1)).strftime("%Y-%m-%d")
    page.locator("#campaign-send-date").fill(tomorrow)
    page.locator("#campaign-send-time-of-day").fill("10:30")
    expect(page.locator("#campaign-zone")).to_have_text("America/New_York")
    page.get_by_role("button", name="Schedule campaign").click()

    expect(page.locator("#campaign-detail-page")).to_be_visible()
    expect(page.locator("#toasts")).to_contain_text("Scheduled “Spring sale - 20% off - VIP customers”")
    expect(page.locator("#campaign-status")).to_have_text("Scheduled")
    campaign = Session.scalars(select(Campaign)).one()
    assert campaign.status == "scheduled" and campaign.send_at > utcnow()

    the_clock_reaches(campaign.id)
    expect(page.locator("#campaign-status")).to_have_text("In Progress", timeout=15_000)
    sent = page.locator("#campaign-progress-sent")
    expect(sent).to_have_text(re.compile(r"^([1-9]|1[01])$"), timeout=10_000)  # part-way: the bar moves
    bar = page.locator("#campaign-progress progress")
    assert bar.get_attribute("max") == "12"

    expect(page.locator("#campaign-status")).to_have_text("Completed", timeout=30_000)
    expect(page.locator("#campaign-progress")).not_to_have_attribute("hx-trigger", re.compile("every"))
    stats = page.locator("#campaign-stats")
    expect(stats).to_be_visible()
    expect(page.locator("#stat-sent .metric__value")).to_have_text("12")
    expect(page.locator("#stat-failed .metric__value")).to_have_text("0")
    expect(page.locator("#stat-clicks .metric__value")).to_have_text("0")  # it has a link, so clicks are shown
    assert len(slow_sending.sent()) == 12
    assert sorted(m.status for m in Session.scalars(select(Message).where(Message.campaign_id == campaign.id))) \
        == ["sent"] * 12

    page.get_by_role("link", name="Back to campaigns").click()
    expect(page.locator("#campaign-detail-page")).to_have_count(0)
    expect(page.locator(".frame")).to_have_count(1)
    listed = page.locator("#campaigns-page tbody tr", has_text="Spring sale - 20% off - VIP customers")
    expect(listed).to_contain_text("Completed")
    expect(page.locator("#campaign-totals")).to_contain_text("12")


def test_end_a_running_campaign(open_page, shop, big_audience, slow_sending):
    page = open_page("/campaigns/new")
    page.locator("#campaign-name").fill("Flash sale")
    page.locator("#campaign-body").fill("Flash sale today only at ")
    page.get_by_role("button", name="Insert Shop name").click()
    expect(page.locator("#campaign-body")).to_have_value("Flash sale today only at {shop_name}")
    expect(page.locator("#campaign-preview-text")).to_contain_text("Flash sale today only at Alpha")
    page.get_by_label("VIP customers (30)").check()
    expect(page.locator("#campaign-sendable")).to_have_text("30")
    page.get_by_label("Send now").check()
    expect(page.locator("#campaign-send-date")).to_be_hidden()
    page.get_by_role("button", name="Send now").click()

    expect(page.locator("#campaign-status")).to_have_text("In Progress")
    expect(page.locator("#campaign-progress-sent")).to_have_text(re.compile(r"^[1-9]$"), timeout=10_000)
    page.locator("#campaign-end").click()
    dialog = page.locator("#campaign-end-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("cannot be undone")
    dialog.get_by_role("button", name="End campaign").click()
    expect(page.locator("#campaign-status")).to_have_text("Ended")
    expect(page.locator("#toasts")).to_contain_text("Ended “Flash sale”")

    campaign = Session.scalars(select(Campaign)).one()
    assert campaign.status == "ended"
    page.wait_for_timeout(1500)  # a message already handed to the provider may finish; nothing new starts
    statuses = [m.status for m in Session.scalars(select(Message).where(Message.campaign_id == campaign.id))]
    sent = statuses.count("sent")
    assert 1 <= sent < 30 and statuses.count("ended") == 30 - sent
    assert len(slow_sending.sent()) == sent
    expect(page.locator("#campaign-progress-remaining")).to_have_text("0")


def test_list_quick_view_switcher_and_delete(open_page, shop, audience):
    from tests.test_campaigns_web import campaign
    later = utcnow() + dt.timedelta(days=2)
    scheduled = campaign(shop, "Weekend promo", status="scheduled", send_at=later, segments=[audience])
    campaign(shop, "Old draft")
    page = open_page("/campaigns/")
    row = page.locator("#campaigns-page tbody tr", has_text="Weekend promo")

    row.get_by_role("button", name="Actions for Weekend promo").click()
    page.get_by_role("menuitem", name="Quick view of Weekend promo").click()
    dialog = page.locator("#campaign-quick-view")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("VIP customers")
    expect(dialog).to_contain_text("America/New_York")
    dialog.locator("footer").get_by_role("button", name="Close").click()
    expect(dialog).to_be_hidden()

    switch = row.get_by_role("switch", name="Weekend promo on or off")
    expect(switch).to_be_checked()
    switch.uncheck()
    expect(page.locator("#toasts")).to_contain_text("“Weekend promo” is off")
    expect(page.locator("#campaigns-page tbody tr", has_text="Weekend promo").get_by_role("switch")).not_to_be_checked()
    Session.refresh(scheduled)
    assert scheduled.enabled is False

    page.get_by_role("button", name="Actions for Old draft").click()
    page.get_by_role("menuitem", name="Delete Old draft").click()
    confirm = page.locator("#campaign-delete-dialog")
    expect(confirm).to_contain_text("This cannot be undone.")
    confirm.get_by_role("button", name="Delete campaign").click()
    expect(page.locator("#campaigns-page tbody tr")).to_have_count(1)
    expect(page.locator("#toasts")).to_contain_text("Deleted “Old draft”")


def test_a_weekly_campaign_shows_its_rule_and_lists_its_runs(open_page, shop, audience, slow_sending):
    from kinnekt.campaigns.tasks import start_campaign
    page = open_page("/campaigns/new")
    page.locator("#campaign-name").fill("Weekly deals")
    page.locator("#campaign-body").fill("This week's deals: https://alpha.example/deals")
    page.get_by_label("VIP customers (12)").check()
    expect(page.locator("#campaign-sendable")).to_have_text("12")
    tomorrow = (utcnow() + dt.timedelta(days=1)).strftime("%Y-%m-%d")
    page.locator("#campaign-send-date").fill(tomorrow)
    page.locator("#campaign-send-time-of-day").fill("10:30")
    page.locator("#campaign-repeat-choice").select_option("weekly")
    page.get_by_role("button", name="Schedule campaign").click()

    rule = f"Every {dt.date.fromisoformat(tomorrow):%A} at 10:30 (America/New_York)"
    expect(page.locator("#campaign-schedule")).to_have_text(rule)
    expect(page.locator("#campaign-runs")).to_contain_text("No runs yet")
    parent = Session.scalars(select(Campaign)).one()
    assert (parent.status, parent.repeat) == ("scheduled", "weekly")

    # The first run is due: the start job makes the run (it sends on its own) and the campaign waits for the next.
    Session.execute(update(Campaign).where(Campaign.id == parent.id).values(send_at=utcnow() - dt.timedelta(seconds=1)))
    Session.commit()
    start_campaign(parent.id)
    Session.expire_all()
    run = Session.scalars(select(Campaign).where(Campaign.parent_id == parent.id)).one()
    assert Session.get(Campaign, parent.id).send_at == parent.repeat_anchor  # tomorrow 10:30 again

    page.get_by_role("link", name="Back to campaigns").click()
    listed = page.locator("#campaigns-page tbody tr", has_text="Weekly deals")
    expect(listed).to_contain_text(rule)
    listed.get_by_role("link", name="Weekly deals", exact=True).click()
    runs = page.locator("#campaign-runs")
    expect(runs).to_contain_text(run.name)
    runs.get_by_role("link", name=run.name).click()
    expect(page.locator("#campaign-parent")).to_have_text("Weekly deals")
    expect(page.locator("#campaign-status")).to_have_text("Completed", timeout=30_000)
    expect(page.locator("#stat-sent .metric__value")).to_have_text("12")


def test_leaving_the_composer_while_the_message_counter_is_on_its_way_logs_no_error(open_page, shop, audience,
                                                                                     monkeypatch):
    import threading

    from kinnekt.web import campaigns as campaigns_web
    gate = threading.Event()
    gate.set()
    real = campaigns_web._live_context

    def held(*args, **kwargs):
        gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(campaigns_web, "_live_context", held)
    page = open_page("/campaigns/new")
    page.locator("#campaign-name").fill("Quick one")
    expect(page.locator("#campaign-preview")).to_be_visible()
    gate.clear()  # the counter's answer (with the preview, cost and name for elsewhere in the page) waits
    with page.expect_request("**/campaigns/compose/message"):
        page.locator("#campaign-body").fill("Hello there")
    page.once("dialog", lambda dialog: dialog.accept())  # "Leave with unsaved changes?": yes
    page.get_by_role("link", name="Back to campaigns").click()
    expect(page.locator("#campaigns-page")).to_be_visible()
    with page.expect_response("**/campaigns/compose/message"):
        gate.set()  # it arrives after the merchant left: its parts have nowhere to go, and no console error
    expect(page.locator("#loading-bar")).not_to_have_class(re.compile(r"\bhtmx-request\b"))  # htmx is done with it
    expect(page.locator("#campaign-preview")).to_have_count(0)
