"""The campaigns pages through the Flask test client: list, composer and its live parts, save / schedule, detail,
progress polling, quick view, switcher, delete and End Campaign; bad input and other shops' rows, on both databases."""
from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from kinnekt.db import Session, utcnow
from kinnekt.models import (Campaign, CampaignSegment, Message, Segment, SegmentMember, StaticList,
                            StaticListEntry)
from kinnekt.sms import prices
from tests import factories
from tests.factories import add

UTC = dt.timezone.utc
PRICE = prices.price_per_part("US")  # the tests' shops text from no number: priced as the US


# ---------------------------------------------------------------------------------------------- helpers

def total(model) -> int:
    """Rows of a table in every shop (requests leave the test's session bound to their shop)."""
    return Session.scalar(select(func.count()).select_from(model).execution_options(all_shops=True))


def subscriber(shop, phone, status="subscribed", **fields):
    """A subscriber of `shop` with this number, subscribed now unless told; committed."""
    return factories.subscriber(Session, shop, phone=phone, status=status, subscribed_at=utcnow(), **fields)


def segment(shop, name, members=()):
    """A built segment with these members: its rule is a static list of their numbers (audiences read the rules)."""
    numbers = add(StaticList(shop_id=shop.id, name=f"{name} numbers", row_count=len(members)))
    for member in members:
        add(StaticListEntry(shop_id=shop.id, list_id=numbers.id, phone=member.phone))
    seg = add(Segment(shop_id=shop.id, name=name, build_status="done", member_count=len(members),
                      last_built_at=utcnow(),
                      definition={"match": "all", "rules": [{"field": "list", "op": "in", "value": numbers.id}]}))
    for member in members:
        add(SegmentMember(shop_id=shop.id, segment_id=seg.id, subscriber_id=member.id))
    return seg


def campaign(shop, name="Spring sale", status="draft", segments=(), **fields):
    """A campaign of `shop` for these segments; committed."""
    return factories.campaign(Session, shop, include=segments, name=name, status=status, **fields)


def future(days=3, hour=10) -> tuple[str, str, dt.datetime]:
    """A date and time `days` ahead in New York (the test shop's zone), and that instant in UTC."""
    from zoneinfo import ZoneInfo
    zone = ZoneInfo("America/New_York")
    local = (utcnow().astimezone(zone) + dt.timedelta(days=days)).replace(hour=hour, minute=15, second=0,
                                                                          microsecond=0)
    return f"{local:%Y-%m-%d}", f"{local:%H:%M}", local.astimezone(UTC)


@pytest.fixture
def people(shop, other_shop):
    """Three subscribed, one unsubscribed; one subscriber of another shop."""
    return {
        "ada": subscriber(shop, "+12125550101", first_name="Ada"),
        "bob": subscriber(shop, "+12125550102"),
        "cy": subscriber(shop, "+12125550103"),
        "dee": subscriber(shop, "+12125550104", status="unsubscribed"),
        "mal": subscriber(other_shop, "+12125550199"),
    }


@pytest.fixture
def segs(shop, other_shop, people):
    return {
        "vip": segment(shop, "VIP", [people["ada"], people["bob"], people["dee"]]),
        "all": segment(shop, "Everyone", [people["ada"], people["bob"], people["cy"], people["dee"]]),
        "theirs": segment(other_shop, "Their segment", [people["mal"]]),
    }


def form(segs, **changes):
    date, time, _ = future()
    data = {"name": "Spring sale - VIP", "body": "Hi {first_name}, spring sale today", "include": [str(segs["vip"].id)],
            "exclude": [], "send": "later", "send_date": date, "send_time": time, "discount_mode": "none",
            "discount_code": "", "discount_kind": "percent", "discount_value": "", "test_phone": ""}
    data.update(changes)
    return data


def post(client, auth, url, data):
    return client.post(url, data=data, headers=auth)


def hx_location(response) -> str:
    return json.loads(response.headers["HX-Location"])["path"]


def toast(response) -> dict:
    return json.loads(response.headers["HX-Trigger"])["toast"]


# ---------------------------------------------------------------------------------------------- the list

def test_list_shows_own_campaigns_with_status_switcher_and_actions(client, auth, shop, other_shop, segs):
    draft = campaign(shop, "Draft one")
    scheduled = campaign(shop, "Scheduled one", status="scheduled", send_at=future()[2], enabled=False)
    sending = campaign(shop, "Sending one", status="in_progress", send_now=True, started_at=utcnow())
    done = campaign(shop, "Done one", status="completed", body="See https://acme.example/sale",
                    started_at=utcnow())
    campaign(other_shop, "Their campaign")
    html = client.get("/campaigns/", headers=auth).get_data(as_text=True)
    assert html.lstrip().startswith('<section id="campaigns-page">')  # the partial for htmx
    assert "Their campaign" not in html
    rows = {name: html.split(f">{name}</a>", 1)[1].split("</tr>", 1)[0]
            for name in ("Draft one", "Scheduled one", "Sending one", "Done one")}
    assert 'role="switch"' in rows["Draft one"] and " checked" in rows["Draft one"]
    assert 'role="switch"' in rows["Scheduled one"] and " checked" not in rows["Scheduled one"]
    assert 'role="switch"' not in rows["Sending one"] and 'role="switch"' not in rows["Done one"]
    assert f"/campaigns/{draft.id}/edit" in rows["Draft one"] and f"/campaigns/{scheduled.id}/edit" in rows[
        "Scheduled one"]
    assert f"/campaigns/{sending.id}/end" in rows["Sending one"] and "/delete" not in rows["Sending one"]
    assert f"/campaigns/{done.id}/delete" in rows["Done one"] and "/edit" not in rows["Done one"]
    assert '<span class="badge badge--attention">In Progress</span>' in rows["Sending one"]
    # A campaign without links shows only Sent; one with a link shows its clicks.
    assert re.findall(r'<td class="numeric">([^<]+)</td>', rows["Draft one"]) == ["0"]
    assert re.findall(r'<td class="numeric">([^<]+)</td>', rows["Done one"]) == ["0", "0", "0", "$0.00"]
    full = client.get("/campaigns/", headers={"Authorization": auth["Authorization"]}).get_data(as_text=True)
    assert "<html" in full and "js/composer.js" in full and 'id="campaign-dialog"' in full


def test_switcher_turns_a_scheduled_campaign_off_and_on(client, auth, shop):
    row = campaign(shop, status="scheduled", send_at=future()[2])
    response = post(client, auth, f"/campaigns/{row.id}/enabled", {})
    assert response.status_code == 200 and 'id="campaigns-page"' in response.get_data(as_text=True)
    assert toast(response)["message"] == "“Spring sale” is off"
    Session.refresh(row)
    assert row.enabled is False
    post(client, auth, f"/campaigns/{row.id}/enabled", {"enabled": "1"})
    Session.refresh(row)
    assert row.enabled is True


def test_switcher_refuses_a_send_now_or_running_campaign(client, auth, shop):
    row = campaign(shop, status="in_progress", send_now=True)
    response = post(client, auth, f"/campaigns/{row.id}/enabled", {})
    assert toast(response)["isError"] is True and "cannot be switched" in toast(response)["message"]
    Session.refresh(row)
    assert row.enabled is True


def test_quick_view_shows_details_and_settings(client, auth, shop, segs):
    row = campaign(shop, segments=[segs["vip"]], status="scheduled", send_at=dt.datetime(2030, 5, 1, 16, 0, tzinfo=UTC),
                   discount_mode="shared", discount_code="SPRING20", discount_kind="percent",
                   discount_value=Decimal("20"), recipient_local_time=True)
    html = client.get(f"/campaigns/{row.id}/quick-view", headers=auth).get_data(as_text=True)
    assert '<dialog class="modal" id="campaign-quick-view"' in html
    for text in ("Spring sale", "Hi {first_name}, spring sale today", "VIP", "May 1, 2030, 12:00 PM",
                 "America/New_York", "each recipient's time zone", "SPRING20", "20% off", "GSM-7"):
        assert text in html, text


def test_delete_asks_first_then_deletes(client, auth, shop):
    row = campaign(shop, "Old promo")
    html = client.get(f"/campaigns/{row.id}/delete", headers=auth).get_data(as_text=True)
    assert 'id="campaign-delete-dialog"' in html and "cannot be undone" in html
    assert total(Campaign) == 1  # asking deletes nothing
    response = client.delete(f"/campaigns/{row.id}", headers=auth)
    assert response.status_code == 200 and toast(response)["message"] == "Deleted “Old promo”"
    assert total(Campaign) == 0 and "Old promo" not in response.get_data(as_text=True)


def test_a_campaign_in_progress_is_not_deleted(client, auth, shop):
    row = campaign(shop, status="in_progress", send_now=True)
    response = client.delete(f"/campaigns/{row.id}", headers=auth)
    assert toast(response) == {"message": "End the campaign before deleting it.", "isError": True}
    assert total(Campaign) == 1


def test_end_asks_first_then_stops_the_remaining_recipients(client, auth, shop, people):
    row = campaign(shop, status="in_progress", send_now=True, started_at=utcnow())
    add(Message(shop_id=shop.id, campaign_id=row.id, subscriber_id=people["ada"].id, to_phone="+12125550101",
                status="sent"),
        Message(shop_id=shop.id, campaign_id=row.id, subscriber_id=people["bob"].id, to_phone="+12125550102",
                status="pending"))
    html = client.get(f"/campaigns/{row.id}/end", headers=auth).get_data(as_text=True)
    assert 'id="campaign-end-dialog"' in html and "cannot be undone" in html and "#campaigns-page" in html
    Session.refresh(row)
    assert row.status == "in_progress"
    response = post(client, auth, f"/campaigns/{row.id}/end", {})
    assert toast(response)["message"] == "Ended “Spring sale”"
    Session.refresh(row)
    assert row.status == "ended"
    statuses = sorted(Session.scalars(select(Message.status).where(Message.campaign_id == row.id)))
    assert statuses == ["ended", "sent"]
    again = post(client, auth, f"/campaigns/{row.id}/end", {})
    assert toast(again)["isError"] is True


def test_end_from_the_detail_page_shows_the_detail_again(client, auth, shop):
    row = campaign(shop, status="in_progress", send_now=True, started_at=utcnow())
    html = client.get(f"/campaigns/{row.id}/end?from=detail", headers=auth).get_data(as_text=True)
    assert "#campaign-detail-page" in html
    response = post(client, auth, f"/campaigns/{row.id}/end", {"from": "detail"})
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<section id="campaign-detail-page"') and ">Ended</span>" in body


# ---------------------------------------------------------------------------------------------- the composer

def test_new_composer_lists_own_segments_and_the_shops_time_zone(client, auth, shop, segs):
    html = client.get("/campaigns/new", headers=auth).get_data(as_text=True)
    assert html.lstrip().startswith('<section id="campaign-composer-page">')
    assert 'id="campaign-composer"' in html and "VIP" in html and "Everyone" in html
    assert "Their segment" not in html
    assert '<strong id="campaign-zone">America/New_York</strong>' in html
    for tag in ("{first_name}", "{shop_name}", "{discount_code}"):
        assert f'data-insert-tag="{tag}"' in html
    for part in ("campaign-analysis", "campaign-preview", "campaign-cost", "campaign-breakdown", "campaign-discount",
                 "campaign-test", "campaign-name-suggestion"):
        assert f'id="{part}"' in html, part
    preselected = client.get(f"/campaigns/new?segment={segs['vip'].id}", headers=auth).get_data(as_text=True)
    assert f'name="include" value="{segs["vip"].id}" checked' in preselected
    assert 'id="campaign-sendable">2<' in preselected  # Ada and Bob (Dee unsubscribed)


def test_message_analysis_counts_points_at_unicode_and_offers_the_replacement(client, auth, shop):
    body = "Big sale — don’t miss it"
    response = post(client, auth, "/campaigns/compose/message",
                    {"body": body, "sendable": "1000", "discount_mode": "none", "include": []})
    html = response.get_data(as_text=True)
    assert html.lstrip().startswith('<div id="campaign-analysis"')
    assert '<strong id="campaign-characters">24</strong>' in html
    assert '<strong id="campaign-segments">1</strong>' in html and "Unicode (UCS-2)" in html
    assert "“<mark>—</mark>” (Em Dash) at character 10" in html
    assert "“<mark>’</mark>” (Right Single Quotation Mark)" in html
    assert 'data-replace-body="Big sale - don&#39;t miss it"' in html
    assert "The message becomes GSM-7: 1 segment." in html
    # the other parts, out of band: phone preview with footer, cost for 1000 sendable, suggested name
    carried = html.split("<template data-swap-by-id>", 1)[1]  # put in place by app.js, if still in the page
    assert '<section id="campaign-preview" class="card phone-preview-card"' in carried and "hx-swap-oob" not in html
    assert "Big sale — don’t miss it\nReply STOP to unsubscribe</div>" in html
    assert f'${PRICE * 1:.4f}' in html and f"<strong>${(PRICE * 1000).quantize(Decimal('0.01')):,}</strong>" in html
    assert 'data-use-name="Big sale — don’t miss it"' in html


def test_message_analysis_of_gsm_text_with_a_link(client, auth, shop):
    body = "Sale: https://acme.example/" + "x" * 300
    html = post(client, auth, "/campaigns/compose/message", {"body": body, "discount_mode": "none"}).get_data(
        as_text=True)
    from kinnekt.campaigns import links
    assert f'<strong id="campaign-characters">{6 + links.short_url_length()}</strong>' in html
    assert "GSM-7" in html and "campaign-unicode" not in html
    assert "1 link is counted as a tracked short link" in html
    assert "Choose segments" in html  # no sendable count yet: no total


def test_audience_breakdown_counts_and_prices(client, auth, shop, segs):
    data = {"include": [str(segs["all"].id)], "exclude": [str(segs["vip"].id)], "body": "x" * 161,
            "discount_mode": "none"}
    html = post(client, auth, "/campaigns/compose/audience", data).get_data(as_text=True)
    assert html.lstrip().startswith('<div id="campaign-breakdown"')
    figures = dict(re.findall(r"<dt>([^<]+)</dt>\s*<dd>(?:<strong[^>]*>)?([^<]+)", html))
    # Everyone's rules hold Ada, Bob and Cy (Dee unsubscribed); VIP's hold Ada and Bob.
    assert figures["In the segments"] == "3" and figures["Excluded"] == "−2" and figures["Sendable"] == "1"
    assert "Not subscribed" not in html  # the rules already leave the unsubscribed out
    assert "worked out again from the rules" in html
    assert '<input type="hidden" name="sendable" value="1">' in html
    assert f"<strong>${(PRICE * 2).quantize(Decimal('0.01'))}</strong>" in html  # 2 segments x 1 recipient
    assert 'id="campaign-name-suggestion"' in html and 'data-use-name="xxxx' in html


def test_audience_breakdown_refuses_overlap_and_another_shops_segment(client, auth, shop, segs):
    both = str(segs["vip"].id)
    html = post(client, auth, "/campaigns/compose/audience",
                {"include": [both], "exclude": [both], "body": ""}).get_data(as_text=True)
    assert "A segment cannot be both included and excluded." in html
    response = post(client, auth, "/campaigns/compose/audience", {"include": [str(segs["theirs"].id)], "body": ""})
    assert response.status_code == 404


def test_discount_fields_follow_the_chosen_kind(client, auth, shop):
    none = post(client, auth, "/campaigns/compose/discount", {"discount_mode": "none"}).get_data(as_text=True)
    assert 'id="campaign-discount"' in none and "discount_code" not in none
    shared = post(client, auth, "/campaigns/compose/discount", {"discount_mode": "shared"}).get_data(as_text=True)
    assert '<label class="field__label" for="campaign-discount-code">Code</label>' in shared
    unique = post(client, auth, "/campaigns/compose/discount", {"discount_mode": "unique"}).get_data(as_text=True)
    assert "Code prefix" in unique and 'name="discount_value"' in unique


def test_save_draft_creates_the_campaign_and_goes_to_the_list(client, auth, shop, segs):
    data = form(segs, exclude=[str(segs["all"].id)], include=[str(segs["vip"].id)], action="draft",
                recipient_local_time="1", discount_mode="shared", discount_code="SPRING20", discount_value="15",
                body="Hi {first_name}, use {discount_code}")
    response = post(client, auth, "/campaigns/", data)
    assert response.status_code == 200 and hx_location(response) == "/campaigns/"
    assert toast(response)["message"] == "Saved “Spring sale - VIP” as a draft"
    saved = Session.scalars(select(Campaign)).one()
    assert (saved.status, saved.name, saved.shop_id, saved.discount_code, saved.discount_value) == (
        "draft", "Spring sale - VIP", shop.id, "SPRING20", Decimal("15.00"))
    assert saved.send_at == future()[2] and saved.recipient_local_time
    modes = dict(Session.execute(select(CampaignSegment.segment_id, CampaignSegment.mode)).tuples().all())
    assert modes == {segs["vip"].id: "include", segs["all"].id: "exclude"}


def test_schedule_campaign_schedules_it_and_opens_its_page(client, auth, shop, segs):
    response = post(client, auth, "/campaigns/", form(segs, action="schedule"))
    saved = Session.scalars(select(Campaign)).one()
    assert saved.status == "scheduled" and hx_location(response) == f"/campaigns/{saved.id}"
    assert toast(response)["message"].startswith("Scheduled “Spring sale - VIP” for ")


def test_a_discount_the_message_does_not_show_is_mentioned(client, auth, shop, segs):
    response = post(client, auth, "/campaigns/", form(segs, discount_mode="shared", discount_code="X1",
                                                      discount_value="10"))
    assert "does not include {discount_code}" in toast(response)["message"]


@pytest.mark.parametrize("changes, field_id, message", [
    ({"name": ""}, "field-name", "Give the campaign a name."),
    ({"body": "  "}, "campaign-body", "Write the message."),
    ({"body": "Hi {name}"}, "campaign-body", "Unknown merge tag {name}."),
    ({"include": []}, "campaign-include", "Choose at least one segment to send to."),
    ({"send_date": "2020-01-01"}, "campaign-send-at", "Choose a time in the future."),
    ({"discount_mode": "shared", "discount_code": "", "discount_value": "10"}, "campaign-discount-code",
     "Enter the code recipients type at checkout"),
    ({"discount_mode": "shared", "discount_code": "A", "discount_value": "150"}, "campaign-discount-value",
     "A percentage can be at most 100."),
])
def test_bad_input_is_shown_beside_the_field_and_nothing_is_saved(client, auth, shop, segs, changes, field_id,
                                                                   message):
    response = post(client, auth, "/campaigns/", form(segs, action="schedule", **changes))
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "HX-Location" not in response.headers
    assert html.lstrip().startswith('<form id="campaign-composer"')
    if field_id != "field-name":
        error = html.split(f'id="{field_id}-error"', 1)[1].split("</p>", 1)[0]
        assert message in error
    else:
        assert message in html
    assert total(Campaign) == 0 and total(CampaignSegment) == 0


def test_the_composer_keeps_what_was_typed_after_an_error(client, auth, shop, segs):
    data = form(segs, name="", body="Hi {first_name} — sale", exclude=[str(segs["all"].id)])
    html = post(client, auth, "/campaigns/", data).get_data(as_text=True)
    assert ">Hi {first_name} — sale</textarea>" in html
    assert f'name="include" value="{segs["vip"].id}" checked' in html
    assert f'name="exclude" value="{segs["all"].id}" checked' in html
    assert "<mark>—</mark>" in html


def test_another_shops_segment_is_refused_and_nothing_saved(client, auth, shop, segs):
    html = post(client, auth, "/campaigns/", form(segs, include=[str(segs["theirs"].id)])).get_data(as_text=True)
    assert "Choose segments of this shop" in html and total(Campaign) == 0


def test_a_refused_schedule_keeps_the_draft_and_says_why(client, auth, shop, segs, monkeypatch):
    from kinnekt.campaigns import lifecycle

    def refuse(session, campaign, *, now=None):
        raise lifecycle.CampaignError("The app is not installed on this store.")
    monkeypatch.setattr(lifecycle, "schedule", refuse)
    response = post(client, auth, "/campaigns/", form(segs, action="schedule"))
    html = response.get_data(as_text=True)
    assert "HX-Location" not in response.headers
    assert "Saved as a draft, not scheduled: The app is not installed on this store." in html
    saved = Session.scalars(select(Campaign)).one()
    assert saved.status == "draft" and f'hx-post="/campaigns/{saved.id}"' in html  # the form now edits the draft


def test_edit_prefills_and_update_saves(client, auth, shop, segs):
    send_at = dt.datetime(2030, 7, 4, 13, 5, tzinfo=UTC)  # 9:05 AM in New York (EDT)
    row = campaign(shop, segments=[segs["vip"]], status="scheduled", send_at=send_at, discount_mode="unique",
                   discount_code="SPR", discount_kind="amount", discount_value=Decimal("5.50"))
    html = client.get(f"/campaigns/{row.id}/edit", headers=auth).get_data(as_text=True)
    assert f'hx-post="/campaigns/{row.id}"' in html
    assert 'value="2030-07-04"' in html and 'value="09:05"' in html and 'value="5.5"' in html
    assert f'name="include" value="{segs["vip"].id}" checked' in html
    assert "Save changes" in html and "Save draft" not in html  # a scheduled campaign stays scheduled
    date, time, when = future(days=5)
    response = post(client, auth, f"/campaigns/{row.id}", form(segs, name="Renamed", action="schedule",
                                                               send_date=date, send_time=time))
    assert hx_location(response) == f"/campaigns/{row.id}"
    Session.refresh(row)
    assert (row.name, row.status, row.send_at, row.discount_mode, total(Campaign)) == (
        "Renamed", "scheduled", when, "none", 1)
    draft = campaign(shop, "A draft")
    assert "Save draft" in client.get(f"/campaigns/{draft.id}/edit", headers=auth).get_data(as_text=True)
    response = post(client, auth, f"/campaigns/{draft.id}", form(segs, name="Still a draft", action="draft"))
    assert hx_location(response) == "/campaigns/"
    Session.refresh(draft)
    assert (draft.name, draft.status) == ("Still a draft", "draft")


def test_only_draft_or_scheduled_campaigns_are_edited(client, auth, shop, segs):
    row = campaign(shop, status="completed")
    assert client.get(f"/campaigns/{row.id}/edit", headers=auth).status_code == 404
    assert post(client, auth, f"/campaigns/{row.id}", form(segs)).status_code == 404
    Session.refresh(row)
    assert row.name == "Spring sale"


def test_send_test_checks_the_number_and_sends_one_test_message(app, client, auth, shop, segs, people):
    bad = post(client, auth, "/campaigns/compose/test", form(segs, test_phone="12"))
    html = bad.get_data(as_text=True)
    assert 'id="campaign-test-phone-error"' in html and "missing the country code" in html
    assert total(Message) == 0
    response = post(client, auth, "/campaigns/compose/test", form(segs, test_phone="+1 212 555 0101"))
    assert toast(response)["message"] == "Test message sent to +12125550101"
    message = Session.scalars(select(Message)).one()
    assert (message.kind, message.campaign_id, message.to_phone) == ("test", None, "+12125550101")
    assert message.body == "Hi Ada, spring sale today\nReply STOP to unsubscribe"
    app.extensions["kinnekt_queue"].drain()


def test_send_test_refuses_a_broken_message(client, auth, shop, segs):
    html = post(client, auth, "/campaigns/compose/test",
                form(segs, body="Hi {nme}", test_phone="+12125550101")).get_data(as_text=True)
    assert "Fix the message first: Unknown merge tag {nme}" in html and total(Message) == 0


# ---------------------------------------------------------------------------------------------- detail and progress

def test_detail_of_a_draft_shows_settings_without_progress_or_stats(client, auth, shop, segs):
    row = campaign(shop, segments=[segs["vip"]])
    html = client.get(f"/campaigns/{row.id}", headers=auth).get_data(as_text=True)
    assert html.lstrip().startswith('<section id="campaign-detail-page"')
    assert "A draft: schedule it to send." in html and "hx-trigger=\"every" not in html
    assert 'id="campaign-stats"' not in html and "VIP" in html


def test_detail_of_a_running_campaign_polls_its_progress(client, auth, shop, people):
    row = campaign(shop, status="in_progress", send_now=True, started_at=utcnow())
    # Ada: sent, no receipt yet; Bob: refused by the provider at the request; Dee: accepted, then her receipt
    # said it failed (sent, not delivered); Cy: not sent yet.
    for person, status, fields in ((people["ada"], "sent", {"provider_id": "0B0000000000A001"}),
                                   (people["bob"], "failed", {"error_code": "15", "error_reason": "Illegal sender"}),
                                   (people["dee"], "failed", {"provider_id": "0B0000000000A002",
                                                              "error_code": "dlr-2", "error_reason": "failed: Absent"}),
                                   (people["cy"], "pending", {})):
        add(Message(shop_id=shop.id, campaign_id=row.id, subscriber_id=person.id, to_phone=person.phone,
                    status=status, **fields))
    html = client.get(f"/campaigns/{row.id}", headers=auth).get_data(as_text=True)
    live_html = html.split('id="campaign-live"', 1)[1].split(">", 1)[0]
    assert f'hx-get="/campaigns/{row.id}/progress" hx-trigger="every 2s"' in live_html  # one poll for all figures
    progress_html = html.split('id="campaign-progress"', 1)[1].split("</section>", 1)[0]
    assert '<progress class="progress__bar" value="3" max="4"' in progress_html
    assert 'id="campaign-progress-sent">2<' in progress_html and 'id="campaign-progress-remaining">1<' in progress_html
    assert 'id="campaign-progress-refused">1<' in progress_html
    figures = dict(re.findall(r'<div class="metric" id="stat-([a-z-]+)">\s*<p class="metric__label">[^<]*</p>\s*'
                              r'<p class="metric__value">([^<]+)</p>', html))
    assert {k: figures[k] for k in ("sent", "delivered", "failed", "no-receipt", "refused")} == {
        "sent": "2", "delivered": "0", "failed": "1", "no-receipt": "1", "refused": "1"}
    assert 'id="campaign-end"' in html and 'id="campaign-stats"' in html
    response = client.get(f"/campaigns/{row.id}/progress", headers=auth)
    polled = response.get_data(as_text=True)
    assert response.status_code == 200 and 'hx-trigger="every 2s"' in polled
    assert 'id="campaign-progress-sent">2<' in polled and 'id="stat-sent"' in polled  # progress and figures together


def test_progress_answers_286_once_done_and_the_page_reloads(client, auth, shop, people):
    row = campaign(shop, status="completed", send_now=True, started_at=utcnow(), finished_at=utcnow())
    add(Message(shop_id=shop.id, campaign_id=row.id, subscriber_id=people["ada"].id, to_phone="+12125550101",
                status="delivered"))
    response = client.get(f"/campaigns/{row.id}/progress", headers=auth)
    html = response.get_data(as_text=True)
    assert response.status_code == 286 and "hx-trigger" not in html and ">Completed</span>" in html
    assert json.loads(response.headers["HX-Trigger"]) == {"campaign-finished": {"id": row.id}}
    page = client.get(f"/campaigns/{row.id}", headers=auth).get_data(as_text=True)
    assert 'hx-trigger="campaign-finished from:body, campaign-changed from:body"' in page and 'id="stat-sent"' in page


def test_a_poll_that_finds_the_status_changed_reloads_the_page(client, auth, shop, people):
    row = campaign(shop, status="in_progress", send_now=True, started_at=utcnow())
    add(Message(shop_id=shop.id, campaign_id=row.id, subscriber_id=people["ada"].id, to_phone="+12125550101",
                status="pending"))
    started = client.get(f"/campaigns/{row.id}/progress?shown=scheduled", headers=auth)
    assert started.status_code == 200 and 'hx-vals=\'{"shown": "in_progress"}\'' in started.get_data(as_text=True)
    assert json.loads(started.headers["HX-Trigger"]) == {"campaign-changed": {"id": row.id, "status": "in_progress"}}
    same = client.get(f"/campaigns/{row.id}/progress?shown=in_progress", headers=auth)
    assert same.status_code == 200 and "HX-Trigger" not in same.headers


def test_a_scheduled_campaign_polls_until_it_starts(client, auth, shop):
    row = campaign(shop, status="scheduled", send_at=future()[2])
    html = client.get(f"/campaigns/{row.id}/progress", headers=auth).get_data(as_text=True)
    assert "Starts " in html and 'hx-trigger="every 5s"' in html
    row.enabled = False
    Session.commit()
    response = client.get(f"/campaigns/{row.id}/progress", headers=auth)
    assert response.status_code == 286 and "Switched off" in response.get_data(as_text=True)


# ---------------------------------------------------------------------------------------------- tenancy

@pytest.mark.parametrize("method, path", [
    ("get", "/campaigns/{id}"), ("get", "/campaigns/{id}/edit"), ("post", "/campaigns/{id}"),
    ("get", "/campaigns/{id}/progress"), ("get", "/campaigns/{id}/quick-view"), ("get", "/campaigns/{id}/delete"),
    ("delete", "/campaigns/{id}"), ("get", "/campaigns/{id}/end"), ("post", "/campaigns/{id}/end"),
    ("post", "/campaigns/{id}/enabled"),
])
def test_another_shops_campaign_is_404(client, auth, shop, other_shop, method, path):
    theirs = campaign(other_shop, "Theirs", status="in_progress")
    response = getattr(client, method)(path.format(id=theirs.id), headers=auth, data={"enabled": "0"})
    assert response.status_code == 404
    Session.refresh(theirs)
    assert (theirs.status, theirs.enabled, total(Campaign)) == ("in_progress", True, 1)


def test_every_page_needs_a_session(client, shop):
    for path in ("/campaigns/", "/campaigns/new", "/campaigns/1"):
        assert client.get(path, headers={"HX-Request": "true"}).status_code in (401, 403)


# ---------------------------------------------------------------------------------------------- recurring campaigns

def test_composer_schedules_a_weekly_campaign_and_shows_its_rule_everywhere(client, auth, shop, segs):
    date, time, first = future()
    weekday = dt.date.fromisoformat(date).strftime("%A")
    response = post(client, auth, "/campaigns/", form(segs, action="schedule", repeat="weekly",
                                                      repeat_until="2099-12-31"))
    saved = Session.scalars(select(Campaign)).one()
    assert (saved.status, saved.repeat, saved.repeat_until) == ("scheduled", "weekly", dt.date(2099, 12, 31))
    assert saved.send_at == saved.repeat_anchor == first
    rule = f"Every {weekday} at {time} (America/New_York), until 31 Dec 2099"
    assert toast(response)["message"].startswith(f"Scheduled “Spring sale - VIP”: {rule}, first run ")
    listed = client.get("/campaigns/", headers=auth).get_data(as_text=True)
    row = listed.split(">Spring sale - VIP</a>", 1)[1].split("</tr>", 1)[0]
    assert rule in row and 'role="switch"' in row and f"/campaigns/{saved.id}/end" in row
    assert f"/campaigns/{saved.id}/delete" in row
    quick = client.get(f"/campaigns/{saved.id}/quick-view", headers=auth).get_data(as_text=True)
    assert rule in quick and "Next run" in quick
    page = client.get(f"/campaigns/{saved.id}", headers=auth).get_data(as_text=True)
    assert rule in page and 'id="campaign-runs"' in page and "No runs yet" in page
    assert 'id="campaign-stats"' not in page and "Next run" in page
    edit_page = client.get(f"/campaigns/{saved.id}/edit", headers=auth).get_data(as_text=True)
    assert '<option value="weekly" selected>' in edit_page and 'value="2099-12-31"' in edit_page


def test_composer_saves_a_monthly_draft_without_an_end_date(client, auth, shop, segs):
    post(client, auth, "/campaigns/", form(segs, action="draft", repeat="monthly"))
    saved = Session.scalars(select(Campaign)).one()
    assert (saved.status, saved.repeat, saved.repeat_until) == ("draft", "monthly", None)


@pytest.mark.parametrize("changes, field_id, message", [
    ({"repeat": "daily"}, "campaign-repeat-choice", "Choose Does not repeat, Weekly or Monthly."),
    ({"repeat": "weekly", "send": "now"}, "campaign-repeat-choice", "A campaign sent now cannot repeat"),
    ({"repeat": "weekly", "repeat_until": "31/12/2030"}, "campaign-repeat-until", "Enter the end date as YYYY-MM-DD."),
    ({"repeat": "weekly", "repeat_until": "2030-02-30"}, "campaign-repeat-until", "Enter the end date as YYYY-MM-DD."),
    ({"repeat": "monthly", "repeat_until": "2020-01-01"}, "campaign-repeat-until",
     "The end date is before the first run."),
])
def test_bad_repeat_input_is_shown_beside_the_field_and_nothing_is_saved(client, auth, shop, segs, changes,
                                                                          field_id, message):
    for action in ("schedule", "draft"):
        response = post(client, auth, "/campaigns/", form(segs, action=action, **changes))
        html = response.get_data(as_text=True)
        assert response.status_code == 200 and "HX-Location" not in response.headers
        assert message in html.split(f'id="{field_id}-error"', 1)[1].split("</p>", 1)[0]
        assert total(Campaign) == 0 and total(CampaignSegment) == 0


def _recurring_with_runs(shop, segs, people):
    """A weekly campaign with two runs: the older completed (one sent, one click-less), the newer in progress."""
    first = dt.datetime(2026, 3, 2, 14, 0, tzinfo=UTC)  # Monday 09:00 in New York
    parent = campaign(shop, "Weekly deals", status="scheduled", segments=[segs["vip"]], repeat="weekly",
                      repeat_anchor=first, send_at=first + dt.timedelta(weeks=2), body="Deals: https://acme.example")
    older = campaign(shop, "Weekly deals — 2 Mar 2026", status="completed", kind="run", parent_id=parent.id,
                     send_at=first, started_at=first, body=parent.body)
    newer = campaign(shop, "Weekly deals — 9 Mar 2026", status="in_progress", kind="run", parent_id=parent.id,
                     send_at=first + dt.timedelta(weeks=1), started_at=first + dt.timedelta(weeks=1),
                     body=parent.body)
    add(Message(shop_id=shop.id, campaign_id=older.id, subscriber_id=people["ada"].id, to_phone="+12125550101",
                status="delivered"),
        Message(shop_id=shop.id, campaign_id=newer.id, subscriber_id=people["ada"].id, to_phone="+12125550101",
                status="sent"),
        Message(shop_id=shop.id, campaign_id=newer.id, subscriber_id=people["bob"].id, to_phone="+12125550102",
                status="sent"))
    return parent, older, newer


def test_detail_of_a_recurring_campaign_lists_its_runs_with_their_results(client, auth, shop, segs, people):
    parent, older, newer = _recurring_with_runs(shop, segs, people)
    page = client.get(f"/campaigns/{parent.id}", headers=auth).get_data(as_text=True)
    assert "Every Monday at 09:00 (America/New_York)" in page
    section = page.split('id="campaign-runs"', 1)[1].split("</section>", 1)[0]
    assert section.index(newer.name) < section.index(older.name)  # newest first
    assert f'href="/campaigns/{newer.id}"' in section and f'href="/campaigns/{older.id}"' in section
    newer_row = section.split(newer.name, 1)[1].split("</tr>", 1)[0]
    assert "In Progress" in newer_row and re.findall(r'<td class="numeric">([^<]+)</td>', newer_row)[0] == "2"
    older_row = section.split(older.name, 1)[1].split("</tr>", 1)[0]
    assert "Completed" in older_row and re.findall(r'<td class="numeric">([^<]+)</td>', older_row)[0] == "1"
    # A run's page is a campaign page: its own statistics, a link back, no editing or switcher.
    run_page = client.get(f"/campaigns/{older.id}", headers=auth).get_data(as_text=True)
    assert 'id="stat-sent"' in run_page and f'href="/campaigns/{parent.id}" id="campaign-parent"' in run_page
    assert f"/campaigns/{older.id}/edit" not in run_page and 'role="switch"' not in run_page
    assert client.get(f"/campaigns/{older.id}/edit", headers=auth).status_code == 404
    # The list shows the campaign, not its runs.
    listed = client.get("/campaigns/", headers=auth).get_data(as_text=True)
    assert ">Weekly deals</a>" in listed and older.name not in listed


def test_end_and_delete_of_a_recurring_campaign(client, auth, shop, segs, people):
    parent, older, newer = _recurring_with_runs(shop, segs, people)
    confirm = client.get(f"/campaigns/{parent.id}/end", headers=auth).get_data(as_text=True)
    assert "makes no further runs" in confirm
    response = post(client, auth, f"/campaigns/{parent.id}/end", {})
    assert toast(response)["message"] == "Ended “Weekly deals”"
    Session.refresh(parent)
    Session.refresh(newer)
    assert (parent.status, newer.status) == ("ended", "in_progress")
    refused = client.delete(f"/campaigns/{parent.id}", headers=auth)
    assert toast(refused)["isError"] is True and "run of this campaign is in progress" in toast(refused)["message"]
    assert total(Campaign) == 3
    post(client, auth, f"/campaigns/{newer.id}/end", {"from": "detail"})
    response = client.delete(f"/campaigns/{parent.id}", headers=auth)
    assert toast(response)["message"] == "Deleted “Weekly deals”"
    assert total(Campaign) == 0 and total(Message) == 0
