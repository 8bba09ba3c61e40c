"""The home page's figures (kinnekt/dashboard.py) checked against a hand-built dataset, and against the figures
the campaign and flow pages show for the same rows."""
from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import pytest

from kinnekt import dashboard, defaults
from kinnekt.campaigns import stats
from kinnekt.models import Attribution, Flow, FlowStep, Subscriber, SubscriptionEvent
from tests.conftest import make_shop
from tests.test_campaign_attribution import order
from tests.factories import message
from tests.test_campaign_links import campaign, recipient

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 20, 16, 0, tzinfo=UTC)  # noon in New York (EDT since March 8), 01:00 in Tokyo
HOUR = dt.timedelta(hours=1)


_phones = itertools.count(1)


def joined(db, shop, source, at, status="subscribed"):
    """A subscriber of `shop` from `source` whose latest subscription was at `at`; committed."""
    row = Subscriber(shop_id=shop.id, phone=f"+1646555{next(_phones):04d}", status=status, source=source,
                     subscribed_at=at)
    db.add(row)
    db.commit()
    return row


def opted_out(db, shop, sub, at):
    db.add(SubscriptionEvent(shop_id=shop.id, subscriber_id=sub.id, kind="unsubscribed", at=at))
    db.commit()


def credit(db, shop, camp, at, revenue):
    """An order placed at `at` credited to `camp` (by click) for `revenue`."""
    row = order(db, shop, at=at, total=revenue)
    db.add(Attribution(shop_id=shop.id, order_id=row.id, campaign_id=camp.id, method="click",
                       revenue=Decimal(revenue)))
    db.commit()


@pytest.fixture
def dataset(db, shop, other_shop):
    """A shop in New York with a week of activity, and another shop whose rows must never count.

    Growth (7 days = Mar 14-20 New York): keyword Mar 19 23:30 local (03:30 UTC on the 20th), keyword Mar 14 00:30
    local, manual Mar 18 (opted out Mar 19); checkout Mar 13 23:30 local (30 days only); import 40 days ago (90
    only); a pending popup sign-up (never counted). Opt-outs: the manual one, recipient r1 an hour after campaign
    A; s_old on Mar 10 (30 days only).
    Campaign A (started Mar 17): r1-r6 delivered, r7-r8 sent, r9-r10 accepted then failed, r11 refused: sent 10,
    failed 2, 1 opt-out (10%). Campaign B (Mar 1): 5 delivered. Automation W: 2 delivered Mar 19.
    Revenue: A 30.00 (Mar 18) and 20.50 (Mar 12), W 12.25 (Mar 19).
    Quiet hours (21:00-08:00): q1 in Tokyo is held until 08:00 Tokyo (23:00 UTC) by two messages; q2 in Tokyo
    waits for a later delay; q3 in New York waits until tomorrow morning but is not in quiet hours now.
    """
    a = campaign(db, shop, name="Spring A", body="Sale https://alpha.example/s", status="completed",
                 started_at=dt.datetime(2026, 3, 17, 15, 0, tzinfo=UTC),
                 finished_at=dt.datetime(2026, 3, 17, 15, 30, tzinfo=UTC))
    b = campaign(db, shop, name="March B", body="Hello", status="completed",
                 started_at=dt.datetime(2026, 3, 1, 15, 0, tzinfo=UTC),
                 finished_at=dt.datetime(2026, 3, 1, 15, 20, tzinfo=UTC))
    w = campaign(db, shop, name="Welcome", body="Welcome https://alpha.example/w", kind="flow",
                 status="draft", started_at=None)
    flow = Flow(shop_id=shop.id, name="Welcome series", trigger="subscribed", trigger_config={},
                exit_conditions=[], status="on")
    db.add(flow)
    db.flush()
    db.add(FlowStep(shop_id=shop.id, flow_id=flow.id, version=1, position=0, kind="send", campaign_id=w.id))
    q = campaign(db, shop, name="Tonight", body="Hi", started_at=NOW - HOUR)
    later = campaign(db, shop, name="Later", body="Soon", status="scheduled",
                     send_at=dt.datetime(2026, 3, 25, 14, 0, tzinfo=UTC), started_at=None)
    sooner = campaign(db, shop, name="Sooner (off)", body="Soon", status="scheduled", enabled=False,
                      send_at=dt.datetime(2026, 3, 22, 14, 0, tzinfo=UTC), started_at=None)
    campaign(db, shop, name="Draft", body="Draft", status="draft", started_at=None)

    joined(db, shop, "keyword", dt.datetime(2026, 3, 20, 3, 30, tzinfo=UTC))
    joined(db, shop, "keyword", dt.datetime(2026, 3, 14, 4, 30, tzinfo=UTC))
    manual = joined(db, shop, "manual", dt.datetime(2026, 3, 18, 12, 0, tzinfo=UTC), status="unsubscribed")
    opted_out(db, shop, manual, dt.datetime(2026, 3, 19, 14, 0, tzinfo=UTC))
    joined(db, shop, "checkout", dt.datetime(2026, 3, 14, 3, 30, tzinfo=UTC))
    joined(db, shop, "import", NOW - dt.timedelta(days=40))
    joined(db, shop, "mobile_popup", None, status="pending")
    old = joined(db, shop, "keyword", NOW - dt.timedelta(days=200), status="unsubscribed")
    opted_out(db, shop, old, dt.datetime(2026, 3, 10, 12, 0, tzinfo=UTC))

    r = {n: recipient(db, shop) for n in range(1, 12)}
    for n in range(1, 7):
        message(db, a, r[n], status="delivered")
    for n in (7, 8):
        message(db, a, r[n], status="sent")
    for n in (9, 10):
        message(db, a, r[n], status="failed", provider_id=f"0C0000000000{n:04d}", sent_at=a.started_at,
                error_reason="Absent subscriber")
    message(db, a, r[11], status="failed", error_reason="Invalid number")
    r[1].status = "unsubscribed"
    db.commit()
    opted_out(db, shop, r[1], a.started_at + HOUR)
    for n in range(2, 7):
        message(db, b, r[n], status="delivered")
    for n in (2, 3):
        message(db, w, r[n], status="delivered", sent_at=dt.datetime(2026, 3, 19, 13, 0, tzinfo=UTC))
    credit(db, shop, a, dt.datetime(2026, 3, 18, 16, 0, tzinfo=UTC), "30.00")
    credit(db, shop, a, dt.datetime(2026, 3, 12, 16, 0, tzinfo=UTC), "20.50")
    credit(db, shop, w, dt.datetime(2026, 3, 19, 16, 0, tzinfo=UTC), "12.25")

    end_of_tokyo_night = dt.datetime(2026, 3, 20, 23, 0, tzinfo=UTC)
    q1 = recipient(db, shop, timezone="Asia/Tokyo")
    q2 = recipient(db, shop, timezone="Asia/Tokyo")
    q3 = recipient(db, shop, timezone="America/New_York")
    message(db, q, q1, status="pending", due_at=end_of_tokyo_night)
    message(db, w, q1, status="pending", due_at=end_of_tokyo_night)
    message(db, q, q2, status="pending", due_at=end_of_tokyo_night + dt.timedelta(days=1))
    message(db, q, q3, status="pending", due_at=dt.datetime(2026, 3, 21, 12, 0, tzinfo=UTC))

    # The other shop: the same kinds of rows, on the same days; none of them may count for `shop`.
    theirs = campaign(db, other_shop, name="Theirs", body="x https://beta.example", status="completed",
                      started_at=dt.datetime(2026, 3, 18, 15, 0, tzinfo=UTC))
    stranger = joined(db, other_shop, "keyword", dt.datetime(2026, 3, 19, 12, 0, tzinfo=UTC))
    opted_out(db, other_shop, stranger, dt.datetime(2026, 3, 19, 13, 0, tzinfo=UTC))
    message(db, theirs, stranger, status="failed", provider_id="0D00000000000001",
            sent_at=theirs.started_at)
    credit(db, other_shop, theirs, dt.datetime(2026, 3, 19, 16, 0, tzinfo=UTC), "100.00")
    night_owl = recipient(db, other_shop, timezone="Asia/Tokyo")
    message(db, theirs, night_owl, status="pending", due_at=end_of_tokyo_night)
    return {"a": a, "b": b, "w": w, "q": q, "later": later, "sooner": sooner, "flow": flow}


def test_period_is_the_last_n_local_days_like_the_segment_rules(shop):
    span = dashboard.period(shop, 7, NOW)
    assert span.start == dt.datetime(2026, 3, 14, 4, 0, tzinfo=UTC)  # midnight in New York (EDT)
    assert span.dates[0] == dt.date(2026, 3, 14) and span.dates[-1] == dt.date(2026, 3, 20) and len(span.dates) == 7
    assert len(dashboard.period(shop, 90, NOW).dates) == 90


@pytest.mark.parametrize("raw", ["45", "abc", "-7", "7.0", "٧", "0", "99999999999999999999"])
def test_a_period_not_offered_is_refused_in_plain_words(raw):
    with pytest.raises(dashboard.InvalidPeriod, match="Choose a period of 7, 30 or 90 days"):
        dashboard.parse_days(raw)


def test_missing_period_is_the_default_and_offered_ones_are_taken():
    assert dashboard.parse_days(None) == dashboard.parse_days("") == defaults.DASHBOARD_DEFAULT_DAYS
    assert [dashboard.parse_days(str(d)) for d in (7, 30, 90)] == [7, 30, 90]


def test_growth_counts_new_subscribers_by_source_per_local_day(db, shop, dataset):
    growth = dashboard.growth(db, shop, dashboard.period(shop, 7, NOW))
    assert growth.zone == "America/New_York"
    assert growth.labels[0] == "Mar 14" and growth.labels[-1] == "Mar 20"
    by_source = {s["key"]: s["counts"] for s in growth.sources}
    assert by_source == {"keyword": [1, 0, 0, 0, 0, 1, 0], "manual": [0, 0, 0, 0, 1, 0, 0]}
    assert [s["label"] for s in growth.sources] == ["Keyword", "Manual"]
    assert growth.opt_outs == [0, 0, 0, 1, 0, 1, 0]  # r1 on Mar 17, the manual one on Mar 19 (not the other shop's)
    assert (growth.new_subscribers, growth.total_opt_outs) == (3, 2)
    assert growth.t[0] == int(dt.datetime(2026, 3, 14, 4, 0, tzinfo=UTC).timestamp())

    month = dashboard.growth(db, shop, dashboard.period(shop, 30, NOW))
    assert {s["key"]: sum(s["counts"]) for s in month.sources} == {"keyword": 2, "checkout": 1, "manual": 1}
    assert month.total_opt_outs == 3
    quarter = dashboard.growth(db, shop, dashboard.period(shop, 90, NOW))
    assert {s["key"]: sum(s["counts"]) for s in quarter.sources} == {"keyword": 2, "checkout": 1, "import": 1,
                                                                      "manual": 1}


def test_growth_uses_local_days_in_a_zone_off_the_whole_hour(db):
    kolkata = make_shop("india.myshopify.com", timezone="Asia/Kolkata")
    joined(db, kolkata, "keyword", dt.datetime(2026, 3, 19, 18, 45, tzinfo=UTC))  # 00:15 on the 20th in India
    joined(db, kolkata, "keyword", dt.datetime(2026, 3, 19, 18, 15, tzinfo=UTC))  # 23:45 on the 19th
    growth = dashboard.growth(db, kolkata, dashboard.period(kolkata, 7, NOW))
    assert growth.sources[0]["counts"][-2:] == [1, 1]


def test_subscribers_now_counts_the_subscribed(db, shop, dataset):
    # keyword x2, checkout, import, r2-r11, q1-q3 (r1, the manual and the old one opted out; one is pending).
    assert dashboard.subscribers_now(db, shop) == 17


def test_revenue_sums_the_attributions_of_orders_placed_in_the_period(db, shop, dataset):
    week = dashboard.revenue(db, shop, dashboard.period(shop, 7, NOW))
    assert (week.orders, week.revenue, week.campaigns, week.automations) == (
        2, Decimal("42.25"), Decimal("30.00"), Decimal("12.25"))
    month = dashboard.revenue(db, shop, dashboard.period(shop, 30, NOW))
    assert (month.orders, month.revenue) == (3, Decimal("62.75"))
    # Every order of A is within 90 days: the same revenue as its campaign page.
    quarter = dashboard.revenue(db, shop, dashboard.period(shop, 90, NOW))
    assert quarter.campaigns == stats.for_campaign(db, dataset["a"]).revenue == Decimal("50.50")


def test_recent_and_scheduled_campaigns(db, shop, dataset):
    board = dashboard.summary(db, shop, 30, NOW)
    assert [r.campaign.name for r in board.recent] == ["Tonight", "Spring A", "March B"]
    assert [r.campaign.name for r in board.scheduled] == ["Sooner (off)", "Later"]
    a = next(r for r in board.recent if r.campaign.name == "Spring A")
    figures = stats.for_campaign(db, dataset["a"])
    assert (a.sent, a.revenue) == (figures.sent, figures.revenue) == (10, Decimal("50.50"))


def test_flow_results_are_the_sums_of_their_messages_campaigns(db, shop, dataset):
    results = dashboard.flow_results(db, shop)
    assert [a.name for a, _row in results] == ["Welcome series"]
    row = results[0][1]
    assert (row.sent, row.orders, row.revenue) == (2, 1, Decimal("12.25"))
    page_rows, _totals = stats.campaign_rows(db, shop, kind="flow")
    assert (row.sent, row.clicks, row.orders, row.revenue) == (
        page_rows[0].sent, page_rows[0].clicks, page_rows[0].orders, page_rows[0].revenue)


def test_health_failure_and_opt_out_rates_against_the_thresholds(db, shop, dataset):
    week = dashboard.summary(db, shop, 7, NOW).health
    # Sent in the week: A's 10 and W's 2 (the refused one was never sent); 2 failed.
    assert (week.sent, week.failed) == (12, 2)
    assert week.failure_rate == pytest.approx(2 / 12) and week.failure_flagged
    assert week.failure_threshold == defaults.FAILURE_RATE_WARNING == 0.05
    figures = stats.for_campaign(db, dataset["a"])
    a = next(c for c in week.campaigns if c.campaign.id == dataset["a"].id)
    assert (a.sent, a.opt_outs) == (figures.sent, figures.unsubscribes) == (10, 1)
    assert a.rate == figures.unsubscribe_rate == 0.1 and a.flagged
    assert [c.campaign.name for c in week.flagged_campaigns] == ["Spring A"]
    assert week.opt_out_rate == pytest.approx(0.1) and week.opt_out_threshold == defaults.OPT_OUT_RATE_WARNING

    month = dashboard.summary(db, shop, 30, NOW).health
    assert (month.sent, month.failed) == (17, 2)  # B's 5 too
    assert (month.opt_outs, month.campaign_sent) == (1, 15)
    assert not any(c.flagged for c in month.campaigns if c.campaign.name == "March B")


def test_failures_count_by_send_time_even_for_a_campaign_ended_just_before_the_period(db, shop):
    """A message in flight when its campaign was ended is sent after the campaign's finished_at."""
    start = dashboard.period(shop, 7, NOW).start
    camp = campaign(db, shop, status="ended", started_at=start - 3 * HOUR, finished_at=start - HOUR)
    message(db, camp, recipient(db, shop), status="failed", provider_id="0F00000000000001", sent_at=start + HOUR)
    message(db, camp, recipient(db, shop), status="delivered", sent_at=start - 2 * HOUR)
    health = dashboard.summary(db, shop, 7, NOW).health
    assert (health.sent, health.failed) == (1, 1)


def test_health_below_the_thresholds_is_not_flagged(db, shop):
    camp = campaign(db, shop, status="completed", started_at=NOW - 2 * HOUR)
    for _ in range(20):
        message(db, camp, recipient(db, shop), status="delivered")
    message(db, camp, recipient(db, shop), status="failed", provider_id="0E00000000000001", sent_at=camp.started_at)
    health = dashboard.summary(db, shop, 7, NOW).health
    assert (health.sent, health.failed) == (21, 1) and not health.failure_flagged  # 4.8%
    assert health.opt_out_rate == 0 and health.flagged_campaigns == []


def test_numbers_waiting_for_quiet_hours(db, shop, dataset):
    assert dashboard.waiting_for_quiet_hours(db, shop, NOW) == 1  # q1 (two messages), in Tokyo's night
    # At 14:00 UTC it is 23:00 in Tokyo, inside the same window that ends at 23:00 UTC: q1 is held then too.
    assert dashboard.waiting_for_quiet_hours(db, shop, NOW - 2 * HOUR) == 1
    # After Tokyo's night has ended nobody is held.
    assert dashboard.waiting_for_quiet_hours(db, shop, dt.datetime(2026, 3, 20, 23, 30, tzinfo=UTC)) == 0
    shop.quiet_hours_enabled = False
    db.commit()
    assert dashboard.waiting_for_quiet_hours(db, shop, NOW) == 0


def test_a_new_shop_has_an_empty_dashboard(db, shop, other_shop, dataset):
    board = dashboard.summary(db, other_shop, 30, NOW)
    assert not board.is_new_shop  # the other shop has a subscriber and a campaign
    fresh = make_shop("fresh.myshopify.com")
    board = dashboard.summary(db, fresh, 30, NOW)
    assert board.is_new_shop
    assert (board.subscribers, board.growth.new_subscribers, board.growth.total_opt_outs) == (0, 0, 0)
    assert board.growth.empty and board.growth.sources == [] and board.growth.opt_outs == [0] * 30
    assert (board.revenue.orders, board.revenue.revenue) == (0, Decimal(0))
    assert board.recent == board.scheduled == board.automations == []
    assert (board.health.sent, board.health.failure_rate, board.health.opt_out_rate) == (0, None, None)
    assert board.health.waiting_for_quiet_hours == 0
