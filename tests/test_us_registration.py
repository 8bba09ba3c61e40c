"""US carrier registration: the Settings form prefilled from the fake Shopify and the shop's keywords and popup,
submitting a toll-free verification or a 10DLC brand and campaign to the fake Vonage, polling to approved or
rejected with the reason, resubmission, bad input (nothing saved, nothing sent), other shops' numbers; and the gate:
a campaign with US recipients cannot start and the composer says why, a flow to US subscribers cannot be switched
on (and one already on holds its US texts), while shops without senders of their own and non-US audiences are not
held. Both databases."""
from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from sqlalchemy import func, select

from kinnekt.campaigns import lifecycle
from kinnekt.db import Session, utcnow
from kinnekt.flows import service as flows
from kinnekt.models import Campaign, Keyword
from kinnekt.models.campaign import CampaignStatus
from kinnekt.models.flow import FlowStatus
from kinnekt.models.sender import RegistrationStatus, SenderNumber, SenderRegistration
from kinnekt.sms import registration
from kinnekt.sms.tasks import poll_registrations
from kinnekt.tenancy import bind_shop
from tests import factories
from tests.fake_shopify import connect

pytestmark = pytest.mark.usefixtures("finished_jobs")

FORM = {
    "legal_name": "Alpha Goods LLC", "brand_name": "Alpha", "entity_type": "PRIVATE_PROFIT", "ein": "12 3456789",
    "street": "1 Main Street", "city": "New York", "state": "ny", "postal_code": "10001", "country": "US",
    "website": "alpha.example.com", "privacy_policy_url": "alpha.example.com/policies/privacy-policy",
    "terms_url": "https://alpha.example.com/policies/terms-of-service", "contact_first_name": "Ada",
    "contact_last_name": "Lovelace",
    "contact_email": "ada@alpha.example.com", "contact_phone": "(212) 555-0142",
    "use_case_summary": "Marketing texts to customers who signed up: offers and new arrivals.",
    "sample_message_1": "Alpha: thanks for joining! Here is 10% off: WELCOME10. Reply STOP to opt out.",
    "sample_message_2": "Alpha: new arrivals are in, shop now. Reply STOP to opt out.",
    "opt_in_description": "Customers text JOIN to our number or sign up in the popup on our store.",
    "monthly_volume": "10000",
}


def toast(response) -> dict:
    return json.loads(response.headers["HX-Trigger"])["toast"]


def number(db, shop, *, kind: str = "toll_free", msisdn: str = "18885550199", country: str = "US") -> SenderNumber:
    """A sender row of the shop, as h25a's Numbers API purchase (or a brought number) leaves it."""
    return factories.save(db, SenderNumber(shop_id=shop.id, msisdn=msisdn, country=country, kind=kind))


def registrations() -> list[SenderRegistration]:
    bind_shop(None)
    Session.expire_all()
    return list(Session.scalars(select(SenderRegistration).order_by(SenderRegistration.id)))


def poll(app) -> int:
    """Run the periodic job as a worker would (no shop bound)."""
    bind_shop(None)
    return poll_registrations()


# ---------------------------------------------------------------------------------------------- the form

def test_the_form_opens_prefilled_from_shopify_the_keywords_and_the_popup(client, auth, db, shop, fake_shopify,
                                                                          registration_config):
    connect(fake_shopify, shop)
    factories.save(db, Keyword(shop_id=shop.id, word="JOIN", reply_text="Alpha: welcome! Here is 10% off: HELLO10."))
    toll_free = number(db, shop)
    page = client.get("/settings/", headers={"Authorization": auth["Authorization"]}).get_data(as_text=True)
    assert 'hx-get="/settings/registration/"' in page  # loaded after the page: it never waits on anyone
    card = client.get("/settings/registration/", headers=auth).get_data(as_text=True)
    assert "+18885550199" in card and "Toll-free verification" in card and "Not submitted" in card
    assert "submit it in Settings" in card  # why US texts are held
    html = client.get(f"/settings/registration/{toll_free.id}/form", headers=auth).get_data(as_text=True)
    assert fake_shopify.calls("graphql:KinnektRegistrationProfile")  # asked when the form opens
    for expected in ('value="Fake Store LLC"', 'value="1 Main Street, Suite 5"', 'value="New York"', 'value="NY"',
                     'value="10001"', 'value="+12125550142"', 'value="https://shop.example.com"',
                     'value="owner@example.com"', "Alpha: welcome! Here is 10% off: HELLO10.",
                     "text a keyword (JOIN) to +18885550199", "Consent is not a condition of purchase"):
        assert expected in html, expected
    for name in ("privacy_policy_url", "terms_url"):  # typed by the merchant: Shopify's policies need another scope
        assert re.search(rf'id="registration-{name}"[^>]*value=""', html) or \
            re.search(rf'value=""[^>]*id="registration-{name}"', html), name
    assert "/policies/privacy-policy" in html and "/policies/terms-of-service" in html  # the help says where
    assert registrations() == []  # opening the form saves nothing


def test_without_shopify_the_form_still_opens_with_what_kinnekt_knows(client, auth, db, shop, fake_shopify,
                                                                       registration_config):
    connect(fake_shopify, shop)
    fake_shopify.fail_next("503", times=10)
    toll_free = number(db, shop)
    html = client.get(f"/settings/registration/{toll_free.id}/form", headers=auth).get_data(as_text=True)
    assert "Shopify could not be asked" in html and "sign-up popup" in html


# ---------------------------------------------------------------------------------------------- toll-free

def test_a_toll_free_verification_is_submitted_then_polled_to_approved(app, client, auth, db, shop,
                                                                         registration_config):
    fake = registration_config
    toll_free = number(db, shop)
    answer = client.post(f"/settings/registration/{toll_free.id}", data=FORM, headers=auth)
    assert answer.status_code == 200 and "submitted" in toast(answer)["message"]
    (call,) = fake.registration_calls("POST")
    sent = call["message"]
    assert call["path"] == "/tfn/v1/registrations"
    assert sent["business"]["name"] == "Alpha Goods LLC" and sent["business"]["tax_id"] == "12-3456789"
    assert sent["business"]["address"]["state"] == "NY" and sent["business"]["company_website"] == \
        "https://alpha.example.com"
    assert sent["business"]["contact"]["phone"] == "12125550142" and sent["numbers"] == ["18885550199"]
    assert sent["business"]["privacy_policy_url"] == "https://alpha.example.com/policies/privacy-policy"
    assert sent["business"]["terms_and_conditions_url"] == "https://alpha.example.com/policies/terms-of-service"
    assert sent["use_case"]["message_samples"] == [FORM["sample_message_1"], FORM["sample_message_2"]]
    (row,) = registrations()
    assert row.status == RegistrationStatus.PENDING and row.kind == "toll_free_verification" and row.external_id
    assert row.details["ein"] == "12-3456789" and row.submitted_at is not None
    assert b"Waiting for the carriers" in answer.data
    assert poll(app) == 0 and registrations()[0].status == RegistrationStatus.PENDING
    fake.decide(row.external_id, "approved")
    assert poll(app) == 1
    (row,) = registrations()
    assert row.status == RegistrationStatus.APPROVED and row.decided_at is not None and row.checked_at is not None
    card = client.get("/settings/registration/", headers=auth).get_data(as_text=True)
    assert 'data-status="approved"' in card and 'id="registration-block"' not in card
    assert registration.us_block_reason(db, shop.id) is None


def test_a_rejected_verification_shows_the_reason_and_is_submitted_again(app, client, auth, db, shop,
                                                                        registration_config):
    fake = registration_config
    toll_free = number(db, shop)
    client.post(f"/settings/registration/{toll_free.id}", data=FORM, headers=auth)
    (row,) = registrations()
    fake.decide(row.external_id, "rejected", "The website does not show the opt-in terms.")
    answer = client.post(f"/settings/registration/{toll_free.id}/check", headers=auth)
    assert "Rejected" in toast(answer)["message"]
    card = answer.get_data(as_text=True)
    assert 'data-status="rejected"' in card and "The website does not show the opt-in terms." in card
    assert "Submit again" in card
    assert "was rejected (The website does not show the opt-in terms.)" in registration.us_block_reason(db, shop.id)
    form = client.get(f"/settings/registration/{toll_free.id}/form", headers=auth).get_data(as_text=True)
    assert 'value="Alpha Goods LLC"' in form and "Rejected: The website" in form  # what was sent, and why refused
    again = client.post(f"/settings/registration/{toll_free.id}",
                        data={**FORM, "website": "https://alpha.example.com/sms-terms"}, headers=auth)
    assert "submitted" in toast(again)["message"]
    (patch,) = fake.registration_calls("PATCH")
    assert patch["path"] == f"/tfn/v1/registrations/{row.external_id}"
    assert patch["message"]["business"]["company_website"] == "https://alpha.example.com/sms-terms"
    (row,) = registrations()
    assert row.status == RegistrationStatus.PENDING and row.rejection_reason is None
    fake.decide(row.external_id, "approved")
    assert poll(app) == 1 and registrations()[0].status == RegistrationStatus.APPROVED


def test_a_registration_waiting_or_approved_is_not_submitted_twice(client, auth, db, shop, registration_config):
    toll_free = number(db, shop)
    client.post(f"/settings/registration/{toll_free.id}", data=FORM, headers=auth)
    again = client.post(f"/settings/registration/{toll_free.id}", data=FORM, headers=auth)
    assert toast(again)["isError"] and "already submitted" in toast(again)["message"]
    assert len(registration_config.registration_calls("POST")) == 1 and len(registrations()) == 1


# ---------------------------------------------------------------------------------------------- 10DLC

def test_a_long_code_gets_a_10dlc_brand_and_campaign_rejected_then_resubmitted(app, client, auth, db, shop,
                                                                               registration_config):
    fake = registration_config
    local = number(db, shop, kind="long_code", msisdn="12125550100")
    client.post(f"/settings/registration/{local.id}", data=FORM, headers=auth)
    brand, campaign, link = fake.registration_calls("POST")
    assert brand["path"] == "/v1/10dlc/brands" and brand["message"]["ein"] == "12-3456789"
    assert brand["message"]["display_name"] == "Alpha" and brand["message"]["company_name"] == "Alpha Goods LLC"
    (row,) = registrations()
    assert campaign["path"] == f"/v1/10dlc/brands/{row.brand_id}/campaigns"
    sent = campaign["message"]  # Vonage's campaign shape (docs/us-registration.md, "What is confirmed")
    assert (sent["account_id"], sent["usecase"], sent["sample_one"], sent["sample_two"]) == \
        ("kinnekt1", "MARKETING", FORM["sample_message_1"], FORM["sample_message_2"])
    assert sent["subscriber_opt_in"] is sent["subscriber_opt_out"] is sent["subscriber_help"] is True
    assert sent["message_flow_details"] == {
        "brand_name": "Alpha", "pricing_disclosure": True, "frequency": "RECURRING",
        "consent_mechanisms": [{"method": "ONLINE_FORM", "details": FORM["opt_in_description"],
                                "attachment": "https://alpha.example.com"}]}
    assert "message_flow" not in sent and "sample1" not in sent  # the deprecated and the old names are not sent
    assert link["path"].endswith(f"/campaigns/{row.external_id}/numbers")
    assert link["message"] == {"country": "US", "number": "12125550100"}
    assert row.kind == "10dlc" and row.status == RegistrationStatus.PENDING
    fake.decide(row.external_id, "rejected", "Sample messages do not match the use case.")
    assert poll(app) == 1
    (row,) = registrations()
    assert row.status == RegistrationStatus.REJECTED and row.rejection_reason == \
        "Sample messages do not match the use case."
    client.post(f"/settings/registration/{local.id}", data=FORM, headers=auth)
    assert len(fake.brands) == 1 and len(fake.campaigns) == 1  # the same brand and campaign, changed
    (patch,) = fake.registration_calls("PATCH")
    assert patch["path"] == f"/v1/10dlc/brands/{row.brand_id}/campaigns/{row.external_id}"
    fake.decide(row.external_id, "approved")
    assert poll(app) == 1 and registrations()[0].status == RegistrationStatus.APPROVED


# ---------------------------------------------------------------------------------------------- bad input

BAD = [
    ("legal_name", "", "Enter the legal business name"),
    ("ein", "12345", "nine digits"),
    ("ein", "", "only a sole proprietor"),
    ("website", "not a website", "web address"),
    ("website", "javascript://alert(1)", "web address"),
    ("privacy_policy_url", "", "Enter the privacy policy web address"),
    ("privacy_policy_url", "ftp://alpha.example.com/privacy", "address of the privacy policy page"),
    ("terms_url", "", "Enter the terms of service web address"),
    ("terms_url", "terms of service", "address of the terms of service page"),
    ("contact_phone", "12", "Enter a phone number"),
    ("contact_email", "ada@", "email address"),
    ("state", "New York", "Two letters"),
    ("postal_code", "ABCDE", "ZIP code"),
    ("entity_type", "LLC", "Choose the legal form"),
    ("monthly_volume", "7", "Choose an estimate"),
    ("sample_message_1", "Hi", "at least 20 characters"),
    ("use_case_summary", "Marketing texts to our subscribers.", "at least 40 characters"),
    ("opt_in_description", "x" * 5000, "Keep it to 1000"),
    ("city", "y" * 600, "Keep it to 500"),
]


@pytest.mark.parametrize("field, value, error", BAD)
def test_bad_input_answers_with_the_reason_and_saves_and_sends_nothing(client, auth, db, shop, registration_config,
                                                                       field, value, error):
    toll_free = number(db, shop)
    answer = client.post(f"/settings/registration/{toll_free.id}", data={**FORM, field: value}, headers=auth)
    assert answer.status_code == 200 and toast(answer)["isError"]
    html = answer.get_data(as_text=True)
    assert error in html and 'aria-invalid="true"' in html
    assert registrations() == [] and registration_config.registration_calls() == []


def test_vonage_refusing_or_unreachable_leaves_the_form_and_nothing_pending(client, auth, db, shop, app,
                                                                            registration_config, monkeypatch):
    toll_free = number(db, shop)
    monkeypatch.setitem(app.config, "VONAGE_API_SECRET", "wrong")
    answer = client.post(f"/settings/registration/{toll_free.id}", data=FORM, headers=auth)
    assert toast(answer)["isError"] and "Vonage refused the registration: Unauthorized" in toast(answer)["message"]
    assert 'id="registration-form"' in answer.get_data(as_text=True)
    assert [r.status for r in registrations()] == [RegistrationStatus.DRAFT]
    monkeypatch.setitem(app.config, "VONAGE_HOST_OVERRIDE", "127.0.0.1:9")  # nobody listens
    monkeypatch.setitem(app.config, "VONAGE_API_SECRET", "fake-vonage-secret")
    answer = client.post(f"/settings/registration/{toll_free.id}", data=FORM, headers=auth)
    assert "could not be reached" in toast(answer)["message"]
    monkeypatch.setitem(app.config, "VONAGE_API_KEY", "")
    answer = client.post(f"/settings/registration/{toll_free.id}", data=FORM, headers=auth)
    assert "not configured" in toast(answer)["message"]
    assert [r.status for r in registrations()] == [RegistrationStatus.DRAFT]


def test_another_shops_number_or_a_number_without_registration_is_a_404(client, auth, db, shop, other_shop,
                                                                       registration_config):
    theirs = number(db, other_shop)
    british = number(db, shop, kind="long_code", msisdn="447700900123", country="GB")
    for target in (theirs, british):
        assert client.get(f"/settings/registration/{target.id}/form", headers=auth).status_code == 404
        assert client.post(f"/settings/registration/{target.id}", data=FORM, headers=auth).status_code == 404
        assert client.post(f"/settings/registration/{target.id}/check", headers=auth).status_code == 404
    assert client.get(f"/settings/registration/{theirs.id}/form").status_code in (401, 302, 303)
    assert registrations() == [] and registration_config.registration_calls() == []
    card = client.get("/settings/registration/", headers=auth).get_data(as_text=True)
    assert "+18885550199" not in card and "447700900123" not in card


def test_a_shop_without_senders_of_its_own_is_told_so_and_not_held(client, auth, db, shop):
    card = client.get("/settings/registration/", headers=auth).get_data(as_text=True)
    assert 'id="registration-shared"' in card
    assert registration.us_block_reason(db, shop.id) is None


# ---------------------------------------------------------------------------------------------- the gate

@pytest.fixture
def us_audience(db, shop):
    """A US and a British subscriber, a segment of each country, built."""
    factories.subscriber(db, shop, phone="+12125550187", country="US")
    factories.subscriber(db, shop, phone="+447700900456", country="GB")
    return (factories.country_segment(db, shop, "US people", ["US"]),
            factories.country_segment(db, shop, "UK people", ["GB"]))


def approve(db, shop, sender: SenderNumber) -> None:
    factories.save(db, SenderRegistration(shop_id=shop.id, sender_number_id=sender.id, kind="toll_free_verification",
                                          status=RegistrationStatus.APPROVED, external_id="x"))


def test_a_campaign_with_us_recipients_cannot_start_without_an_approved_us_sender(db, shop, us_audience):
    us, uk = us_audience
    sender = number(db, shop)
    held = factories.campaign(db, shop, include=[us], send_now=True)
    with pytest.raises(lifecycle.CampaignError, match="Its audience has 1 US number. Texts to US numbers need"):
        lifecycle.schedule(db, held, now=utcnow())
    assert db.get(Campaign, held.id).status == CampaignStatus.DRAFT
    abroad = factories.campaign(db, shop, include=[uk], send_now=True, name="UK only")
    assert lifecycle.schedule(db, abroad, now=utcnow()).status == CampaignStatus.IN_PROGRESS  # non-US unaffected
    approve(db, shop, sender)
    assert lifecycle.schedule(db, held, now=utcnow()).status == CampaignStatus.IN_PROGRESS


def test_a_scheduled_campaign_that_comes_due_while_held_fails_with_the_reason(db, shop, us_audience):
    us, _uk = us_audience
    number(db, shop)
    when = utcnow() - dt.timedelta(minutes=1)
    held = factories.campaign(db, shop, include=[us], status=CampaignStatus.SCHEDULED, send_at=when, enabled=True)
    assert lifecycle.start(db, held.id, now=utcnow()) == "failed"
    row = db.get(Campaign, held.id, populate_existing=True)
    assert row.status == CampaignStatus.FAILED and "US number" in row.failure_reason
    assert db.scalar(select(func.count()).select_from(Campaign).where(Campaign.snapshot_at.is_not(None))) == 0


def test_shops_without_senders_of_their_own_send_to_the_us_as_before(db, shop, us_audience):
    us, _uk = us_audience
    campaign = factories.campaign(db, shop, include=[us], send_now=True)
    assert lifecycle.schedule(db, campaign, now=utcnow()).status == CampaignStatus.IN_PROGRESS


def test_the_composer_says_why_and_links_to_settings_and_scheduling_is_refused(client, auth, db, shop, us_audience):
    us, uk = us_audience
    number(db, shop)
    form = {"name": "Sale", "body": "Sale today", "include": [str(us.id)], "send": "now"}
    live = client.post("/campaigns/compose/audience", data=form, headers=auth).get_data(as_text=True)
    assert 'id="campaign-us-registration"' in live and "it would text 1 US number" in live
    assert 'href="/settings/#settings-registration"' in live
    saved = client.post("/campaigns/", data={**form, "action": "schedule"}, headers=auth).get_data(as_text=True)
    assert "Saved as a draft, not scheduled: Its audience has 1 US number" in saved
    assert db.scalar(select(Campaign.status).where(Campaign.name == "Sale")) == CampaignStatus.DRAFT
    abroad = client.post("/campaigns/compose/audience", data={**form, "include": [str(uk.id)]},
                         headers=auth).get_data(as_text=True)
    assert 'id="campaign-us-registration"' not in abroad


def test_a_flow_to_us_subscribers_cannot_be_switched_on_until_a_us_sender_is_approved(client, auth, db, shop,
                                                                                     us_audience):
    flow = flows.add_builtin(db, shop, "welcome_series")
    sender = number(db, shop)
    answer = client.post(f"/flows/{flow.id}/status", headers=auth, data={"on": "1"})
    assert answer.status_code == 200 and toast(answer)["isError"]
    assert "texts your US subscribers" in toast(answer)["message"] and "Settings" in toast(answer)["message"]
    page = answer.get_data(as_text=True)
    assert 'id="flows-us-registration"' in page and 'href="/settings/#settings-registration"' in page
    db.expire_all()
    assert db.get(type(flow), flow.id).status == FlowStatus.OFF
    approve(db, shop, sender)
    answer = client.post(f"/flows/{flow.id}/status", headers=auth, data={"on": "1"})
    assert not toast(answer)["isError"]
    assert 'id="flows-us-registration"' not in answer.get_data(as_text=True)
    db.expire_all()
    assert db.get(type(flow), flow.id).status == FlowStatus.ON


def test_a_flow_of_a_shop_without_us_subscribers_switches_on(db, shop):
    factories.subscriber(db, shop, phone="+447700900456", country="GB")
    number(db, shop)
    flow = flows.add_builtin(db, shop, "welcome_series")
    assert flows.set_status(db, flow, True).status == FlowStatus.ON


# ---------------------------------------------------------------------------------------------- the polling job

@pytest.mark.parametrize("answer, expected", [
    ({"status": "IN_REVIEW"}, (RegistrationStatus.PENDING, None)),
    ({"status": "CARRIER_REVIEW"}, (RegistrationStatus.PENDING, None)),
    ({"status": "REGISTERED"}, (RegistrationStatus.APPROVED, None)),
    ({"status": "ACTIVE"}, (RegistrationStatus.APPROVED, None)),
    ({"status": "REJECTED", "rejection_reason": "No opt-in proof"}, (RegistrationStatus.REJECTED, "No opt-in proof")),
    ({"status": "BLOCKED"}, (RegistrationStatus.REJECTED, "blocked")),
    ({"status": "UPDATES_REQUIRED", "status_reason": "Add a privacy policy"},
     (RegistrationStatus.REJECTED, "changes asked for: Add a privacy policy")),
    ({}, (RegistrationStatus.PENDING, None)),
    # A 10DLC campaign: its reason is the latest status change to that status; ACTIVE with traffic held is pending.
    ({"status": "PENDING_REVIEW"}, (RegistrationStatus.PENDING, None)),
    ({"status": "CARRIERS_REVIEW"}, (RegistrationStatus.PENDING, None)),
    ({"status": "ACTIVE", "traffic_enabled": False}, (RegistrationStatus.PENDING, None)),
    ({"status": "ACTIVE", "traffic_enabled": True}, (RegistrationStatus.APPROVED, None)),
    ({"status": "REJECTED", "last_status_changes": [
        {"status": "REJECTED", "reason": "Old reason", "change_date": "2025-01-02 10:00:00"},
        {"status": "PENDING_REVIEW", "reason": "Updated", "change_date": "2025-01-03 10:00:00"},
        {"status": "REJECTED", "reason": "No privacy policy", "change_date": "2025-01-04 10:00:00"}]},
     (RegistrationStatus.REJECTED, "No privacy policy")),
    ({"status": "TERMINATED"}, (RegistrationStatus.REJECTED, "terminated")),
    ({"status": "SUSPENDED", "last_status_changes": [{"status": "SUSPENDED", "reason": "Spam complaints"}]},
     (RegistrationStatus.REJECTED, "Spam complaints")),
])
def test_vonage_statuses_become_ours(answer, expected):
    assert registration.outcome(answer) == expected


def test_the_poll_job_goes_on_past_a_registration_vonage_cannot_answer(app, client, auth, db, shop, other_shop,
                                                                      registration_config):
    fake = registration_config
    lost = factories.save(db, SenderRegistration(shop_id=other_shop.id, sender_number_id=number(db, other_shop).id,
                                                 kind="toll_free_verification", status=RegistrationStatus.PENDING,
                                                 external_id="gone-at-vonage"))
    toll_free = number(db, shop, msisdn="18885550100")
    client.post(f"/settings/registration/{toll_free.id}", data=FORM, headers=auth)
    mine = next(r for r in registrations() if r.id != lost.id)
    fake.decide(mine.external_id, "approved")
    assert poll(app) == 1  # every shop's, in one run
    statuses = {r.id: r.status for r in registrations()}
    assert statuses == {lost.id: RegistrationStatus.PENDING, mine.id: RegistrationStatus.APPROVED}


def test_the_poll_job_without_vonage_credentials_asks_nothing(app, db, shop, monkeypatch, registration_config):
    sender = number(db, shop)
    factories.save(db, SenderRegistration(shop_id=shop.id, sender_number_id=sender.id, kind="toll_free_verification",
                                          status=RegistrationStatus.PENDING, external_id="abc"))
    monkeypatch.setitem(app.config, "VONAGE_API_KEY", "")
    assert poll(app) == 0 and registration_config.registration_calls() == []


def test_the_poll_job_runs_on_a_timer():
    from kinnekt import defaults
    from kinnekt.schedule import periodic_jobs
    (entry,) = [p for p in periodic_jobs() if p.func is poll_registrations]
    assert entry.interval == defaults.REGISTRATION_POLL_SECONDS


def test_a_flow_already_on_holds_its_us_texts_until_a_us_sender_is_approved(db, shop):
    from kinnekt import defaults
    from kinnekt.flows import engine
    from kinnekt.models import FlowRun, Message
    from kinnekt.models.flow import RunState
    shop.quiet_hours_enabled = False
    db.commit()
    now = utcnow()
    american = factories.subscriber(db, shop, phone="+12125550187", country="US")
    british = factories.subscriber(db, shop, phone="+447700900456", country="GB")
    sender, step = _runs_due_at_a_send_step(db, shop, [american, british], now)  # on before the shop had a number
    result = engine.advance(db, shop.id, now=now)
    assert result.sent == 1 and result.us_held == 1
    db.expire_all()
    assert [m.to_phone for m in db.scalars(select(Message).where(Message.campaign_id == step.campaign_id))] == \
        ["+447700900456"]
    held = db.scalar(select(FlowRun).where(FlowRun.subscriber_id == american.id))
    assert held.state == RunState.ACTIVE and held.current_step_id == step.id  # waits at its send step, not dropped
    later = now + dt.timedelta(seconds=defaults.FLOW_US_HOLD_SECONDS)
    assert engine.advance(db, shop.id, now=later).us_held == 1  # still held: nothing approved yet
    approve(db, shop, sender)
    later += dt.timedelta(seconds=defaults.FLOW_US_HOLD_SECONDS)
    assert engine.advance(db, shop.id, now=later).sent == 1
    db.expire_all()
    assert sorted(m.to_phone for m in db.scalars(select(Message).where(Message.campaign_id == step.campaign_id))) \
        == ["+12125550187", "+447700900456"]


# ---------------------------------------------------------------------------------------------- test sends

def send_test(client, auth, phone: str):
    return client.post("/campaigns/compose/test", headers=auth,
                       data={"name": "Sale", "body": "Sale today", "send": "now", "test_phone": phone})


def sent_tests() -> list[str]:
    from kinnekt.models import Message
    bind_shop(None)
    Session.expire_all()
    return [m.to_phone for m in Session.scalars(select(Message).where(Message.kind == "test").order_by(Message.id))]


def test_a_test_send_to_a_us_number_is_held_like_a_campaign(client, auth, db, shop):
    sender = number(db, shop)
    held = send_test(client, auth, "+1 212 555 0101")
    html = held.get_data(as_text=True)
    assert held.status_code == 200 and 'id="campaign-test-phone-error"' in html
    assert "A test to a US number cannot go out yet. Texts to US numbers need" in html
    assert sent_tests() == []
    # Other countries (Canada's +1 included) are not held; an approved US sender lets US tests through.
    assert toast(send_test(client, auth, "+44 7911 123456"))["message"] == "Test message sent to +447911123456"
    assert toast(send_test(client, auth, "+1 416 234 5678"))["message"] == "Test message sent to +14162345678"
    approve(db, shop, sender)
    assert toast(send_test(client, auth, "+1 212 555 0101"))["message"] == "Test message sent to +12125550101"
    assert sent_tests() == ["+447911123456", "+14162345678", "+12125550101"]


def test_a_test_send_says_what_the_pending_registration_waits_for(client, auth, db, shop):
    sender = number(db, shop)
    factories.save(db, SenderRegistration(shop_id=shop.id, sender_number_id=sender.id, kind="toll_free_verification",
                                          status=RegistrationStatus.PENDING, external_id="x"))
    html = send_test(client, auth, "+12125550101").get_data(as_text=True)
    assert "registration is waiting for approval" in html and sent_tests() == []


def test_a_shop_without_senders_of_its_own_sends_tests_to_the_us_as_before(client, auth, db, shop):
    assert toast(send_test(client, auth, "+1 212 555 0101"))["message"] == "Test message sent to +12125550101"


# ------------------------------------------------------------------------------------- +1 numbers of no country

def test_a_plus_one_number_of_no_country_is_us_by_its_area_code():
    from kinnekt.subscribers.phones import is_us_number, nanp_area_codes_outside_us
    assert is_us_number("+12125550101") and is_us_number("+18885550101")  # New York; toll-free is NANP-wide
    assert not is_us_number("+14165550123") and not is_us_number("+18765550123")  # Toronto, Jamaica
    assert not is_us_number("+447700900456") and not is_us_number("+12125550101", "CA")
    assert is_us_number("+14165550123", "US")  # a stored country wins
    assert {"416", "604", "876", "787"} <= nanp_area_codes_outside_us() and "212" not in nanp_area_codes_outside_us()


@pytest.fixture
def unknown_countries(db, shop):
    """A New York and a Toronto number, both without a stored country, in one built segment."""
    from kinnekt.segments import membership
    factories.subscriber(db, shop, phone="+12125550188")
    factories.subscriber(db, shop, phone="+14165550123")
    everyone = factories.segment(db, shop, factories.where(factories.rule("subscription_source", "eq", "manual")),
                                 name="Everyone", kind="manual")
    membership.build(db, everyone.id, now=utcnow())
    return everyone


def test_the_campaign_gate_counts_plus_one_numbers_of_no_country_by_area_code(db, shop, unknown_countries):
    from kinnekt.campaigns import audience
    sender = number(db, shop)
    assert audience.breakdown(db, shop, [unknown_countries.id], []).sendable_by_country == {"US": 1, None: 1}
    held = factories.campaign(db, shop, include=[unknown_countries], send_now=True)
    with pytest.raises(lifecycle.CampaignError, match="Its audience has 1 US number."):
        lifecycle.schedule(db, held, now=utcnow())
    approve(db, shop, sender)
    assert lifecycle.schedule(db, held, now=utcnow()).status == CampaignStatus.IN_PROGRESS


def test_the_flow_gate_counts_plus_one_numbers_of_no_country_by_area_code(db, shop):
    number(db, shop)
    canadian = factories.subscriber(db, shop, phone="+14165550123")
    assert flows.us_hold(db, shop.id) is None  # Toronto's number of no country is not held
    factories.subscriber(db, shop, phone="+12125550188")
    assert "Texts to US numbers need" in flows.us_hold(db, shop.id)
    assert canadian.country is None


def test_a_flow_already_on_holds_plus_one_numbers_of_no_country_by_area_code(db, shop):
    from kinnekt.flows import engine
    from kinnekt.models import Message
    shop.quiet_hours_enabled = False
    db.commit()
    now = utcnow()
    new_yorker = factories.subscriber(db, shop, phone="+12125550187")  # no stored country, either of them
    torontonian = factories.subscriber(db, shop, phone="+14162345678")
    _, step = _runs_due_at_a_send_step(db, shop, [new_yorker, torontonian], now)
    result = engine.advance(db, shop.id, now=now)
    assert result.sent == 1 and result.us_held == 1
    db.expire_all()
    assert [m.to_phone for m in db.scalars(select(Message).where(Message.campaign_id == step.campaign_id))] == \
        ["+14162345678"]


def _runs_due_at_a_send_step(db, shop, people, now):
    """A flow switched on before the shop had a number of its own (bought now), with a run of each person due at its
    one send step; returns the number and the step."""
    from kinnekt.models import FlowRun, FlowStep
    from kinnekt.models.flow import RunState
    flow = flows.create(db, shop, name="Hello", trigger="subscribed", steps=[{"kind": "send", "body": "Hello"}])
    flows.set_status(db, flow, True, now=now)
    sender = number(db, shop)
    step = db.scalar(select(FlowStep).where(FlowStep.flow_id == flow.id))
    for person in people:
        db.add(FlowRun(shop_id=shop.id, flow_id=flow.id, subscriber_id=person.id, version=flow.version,
                       state=RunState.ACTIVE, current_step_id=step.id, due_at=now, trigger_key=f"t:{person.id}",
                       started_at=now, orders_since=now))
    db.commit()
    return sender, step
