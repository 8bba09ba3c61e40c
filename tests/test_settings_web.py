"""Settings page: every card saves its settings, every bad value is refused beside its field with nothing saved,
checkout collection makes the Checkout segment, a new attribution window queues a recomputation; the domain checks."""
from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest
from sqlalchemy import func, select

from kinnekt import defaults, shop_settings
from kinnekt.db import Session
from kinnekt.models import Segment, Shop
from kinnekt.tenancy import bind_shop

pytestmark = pytest.mark.usefixtures("settled_jobs")

SETTING_COLUMNS = ("sender", "quiet_hours_enabled", "quiet_hours_start", "quiet_hours_end", "compliance_footer",
                   "help_text", "double_opt_in", "smart_sending_hours", "suppression_threshold",
                   "attribution_window_days", "checkout_collection")


def stored(shop_id: int) -> dict:
    """The shop's settings as the database has them now."""
    bind_shop(None)
    Session.expire_all()
    shop = Session.get(Shop, shop_id)
    return {name: getattr(shop, name) for name in SETTING_COLUMNS}


def post(client, auth, section: str, data: dict):
    return client.post(f"/settings/{section}", data=data, headers=auth)


# --- the page -----------------------------------------------------------------------------------------------

def test_page_has_one_form_per_card_with_the_shops_values(client, auth, shop, other_shop):
    shop.sender = "+15550100200"
    shop.smart_sending_hours = 12
    other_shop.sender = "OTHERBRAND"
    Session.merge(shop)
    Session.merge(other_shop)
    Session.commit()
    html = client.get("/settings/", headers=auth).get_data(as_text=True)
    for section, card in (("sender", "settings-sender"), ("quiet_hours", "settings-quiet-hours"),
                          ("compliance", "settings-compliance"), ("sending", "settings-sending"),
                          ("attribution", "settings-attribution")):
        assert f'<form class="card" id="{card}"' in html
        assert f'hx-post="/settings/{section}"' in html
    assert 'id="settings-sync"' in html  # the store data card stays
    assert 'value="+15550100200"' in html and "OTHERBRAND" not in html
    assert 'name="quiet_hours_start" type="time" value="21:00"' in html
    assert 'name="quiet_hours_end" type="time" value="08:00"' in html
    assert 'name="smart_sending_hours" type="number" value="12"' in html
    assert 'name="double_opt_in" value="on" checked' in html
    assert 'name="checkout_collection" value="on"' in html
    assert 'name="checkout_collection" value="on" checked' not in html
    assert "Texts go out between 8:00 AM and 9:00 PM" in html


def test_unknown_section_is_404(client, auth, shop):
    assert post(client, auth, "popup_sneaky", {"sender": "X"}).status_code == 404
    assert client.post("/settings/", data={}, headers=auth).status_code == 405


def test_settings_need_a_session_token(client, shop):
    response = client.post("/settings/sender", data={"sender": "EVIL"}, headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert stored(shop.id)["sender"] is None


# --- saving ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("section, data, expected", [
    ("sender", {"sender": "+1 (555) 010-0299"}, {"sender": "+15550100299"}),
    ("sender", {"sender": "447400123456"}, {"sender": "+447400123456"}),
    ("sender", {"sender": " Acme Shop "}, {"sender": "Acme Shop"}),
    ("sender", {"sender": "A"}, {"sender": "A"}),
    ("sender", {"sender": "ABCDEFGHIJK"}, {"sender": "ABCDEFGHIJK"}),
    ("sender", {"sender": "   "}, {"sender": None}),
    ("quiet_hours", {"quiet_hours_enabled": "on", "quiet_hours_start": "22:30", "quiet_hours_end": "07:15"},
     {"quiet_hours_enabled": True, "quiet_hours_start": 22 * 60 + 30, "quiet_hours_end": 7 * 60 + 15}),
    ("quiet_hours", {"quiet_hours_enabled": "on", "quiet_hours_start": "01:00", "quiet_hours_end": "06:00"},
     {"quiet_hours_start": 60, "quiet_hours_end": 360}),
    ("quiet_hours", {"quiet_hours_start": "21:00", "quiet_hours_end": "08:00"}, {"quiet_hours_enabled": False}),
    ("quiet_hours", {"quiet_hours_start": "09:00", "quiet_hours_end": "09:00"},  # off: an empty window is fine
     {"quiet_hours_enabled": False, "quiet_hours_start": 540, "quiet_hours_end": 540}),
    ("compliance", {"compliance_footer": "  Txt  stop to end ", "help_text": " Call 555-0100 ", "double_opt_in": "on"},
     {"compliance_footer": "Txt stop to end", "help_text": "Call 555-0100", "double_opt_in": True}),
    ("compliance", {"compliance_footer": "Reply STOP to opt out", "help_text": "Help!"}, {"double_opt_in": False}),
    ("sending", {"smart_sending_hours": "16", "suppression_threshold": "5"},
     {"smart_sending_hours": 16, "suppression_threshold": 5}),
    ("sending", {"smart_sending_hours": "0", "suppression_threshold": "0"},
     {"smart_sending_hours": 0, "suppression_threshold": 0}),
    ("sending", {"smart_sending_hours": str(defaults.SMART_SENDING_MAX_HOURS),
                 "suppression_threshold": str(defaults.SUPPRESSION_MAX_MESSAGES)},
     {"smart_sending_hours": defaults.SMART_SENDING_MAX_HOURS,
      "suppression_threshold": defaults.SUPPRESSION_MAX_MESSAGES}),
    ("attribution", {"attribution_window_days": "1"}, {"attribution_window_days": 1, "checkout_collection": False}),
    ("attribution", {"attribution_window_days": "90", "checkout_collection": "on"},
     {"attribution_window_days": 90, "checkout_collection": True}),
])
def test_each_card_saves_its_settings(client, auth, shop, other_shop, section, data, expected):
    before, others_before = stored(shop.id), stored(other_shop.id)
    response = post(client, auth, section, data)
    assert response.status_code == 200
    assert '"toast"' in response.headers["HX-Trigger"] and '"isError": false' in response.headers["HX-Trigger"]
    html = response.get_data(as_text=True)
    assert html.startswith("<form") or 'id="settings-' in html.split(">", 1)[0]
    assert "field__error" not in html
    after = stored(shop.id)
    assert {name: after[name] for name in expected} == expected
    untouched = set(SETTING_COLUMNS) - set(shop_settings.SECTIONS[section])
    assert {n: after[n] for n in untouched} == {n: before[n] for n in untouched}  # other cards' settings stay
    assert stored(other_shop.id) == others_before  # tenant isolation


def test_saved_card_shows_the_saved_values(client, auth, shop):
    html = post(client, auth, "quiet_hours", {"quiet_hours_enabled": "on", "quiet_hours_start": "20:00",
                                              "quiet_hours_end": "09:30"}).get_data(as_text=True)
    assert 'id="settings-quiet-hours"' in html and 'value="20:00"' in html and 'value="09:30"' in html
    assert "Texts go out between 9:30 AM and 8:00 PM" in html


@pytest.mark.parametrize("section, data, field, message", [
    ("sender", {"sender": "+1555"}, "sender", "full phone number in international format"),
    ("sender", {"sender": "0044 7400 123456"}, "sender", "full phone number"),
    ("sender", {"sender": "+1234567890123456"}, "sender", "8 to 15 digits"),
    ("sender", {"sender": "12345"}, "sender", "full phone number"),
    ("sender", {"sender": "ABCDEFGHIJKL"}, "sender", "at most 11 characters"),
    ("sender", {"sender": "Acme-Shop"}, "sender", "letters, digits and spaces"),
    ("sender", {"sender": "Café"}, "sender", "letters, digits and spaces"),
    ("sender", {"sender": "+Acme"}, "sender", "letters, digits and spaces"),
    ("quiet_hours", {"quiet_hours_enabled": "on", "quiet_hours_start": "25:00", "quiet_hours_end": "08:00"},
     "quiet_hours_start", "Enter a time"),
    ("quiet_hours", {"quiet_hours_enabled": "on", "quiet_hours_start": "21:00", "quiet_hours_end": ""},
     "quiet_hours_end", "Enter a time"),
    ("quiet_hours", {"quiet_hours_enabled": "on", "quiet_hours_start": "9pm", "quiet_hours_end": "08:00"},
     "quiet_hours_start", "Enter a time"),
    ("quiet_hours", {"quiet_hours_enabled": "on", "quiet_hours_start": "08:00", "quiet_hours_end": "08:00"},
     "quiet_hours_end", "different time"),
    ("quiet_hours", {"quiet_hours_enabled": "maybe", "quiet_hours_start": "21:00", "quiet_hours_end": "08:00"},
     "quiet_hours_enabled", "on or off"),
    ("compliance", {"compliance_footer": "", "help_text": "Help"}, "compliance_footer", "Enter the compliance footer"),
    ("compliance", {"compliance_footer": "Reply END to unsubscribe", "help_text": "Help"}, "compliance_footer",
     "with the word STOP"),
    ("compliance", {"compliance_footer": "NONSTOP deals", "help_text": "Help"}, "compliance_footer", "word STOP"),
    ("compliance", {"compliance_footer": "STOP " + "x" * defaults.COMPLIANCE_FOOTER_MAX_LENGTH, "help_text": "Help"},
     "compliance_footer", "Keep the footer to"),
    ("compliance", {"compliance_footer": "Reply STOP", "help_text": "   "}, "help_text", "Enter the reply"),
    ("compliance", {"compliance_footer": "Reply STOP", "help_text": "x" * (defaults.HELP_TEXT_MAX_LENGTH + 1)},
     "help_text", "Keep the help reply"),
    ("sending", {"smart_sending_hours": "-1", "suppression_threshold": "0"}, "smart_sending_hours", "whole number"),
    ("sending", {"smart_sending_hours": "2.5", "suppression_threshold": "0"}, "smart_sending_hours", "whole number"),
    ("sending", {"smart_sending_hours": str(defaults.SMART_SENDING_MAX_HOURS + 1), "suppression_threshold": "0"},
     "smart_sending_hours", "or 0 to turn it off"),
    ("sending", {"smart_sending_hours": "", "suppression_threshold": "0"}, "smart_sending_hours", "whole number"),
    ("sending", {"smart_sending_hours": "4", "suppression_threshold": "many"}, "suppression_threshold",
     "whole number"),
    ("sending", {"smart_sending_hours": "4", "suppression_threshold": str(defaults.SUPPRESSION_MAX_MESSAGES + 1)},
     "suppression_threshold", "from 1 to"),
    ("attribution", {"attribution_window_days": "0"}, "attribution_window_days", "from 1 to 90"),
    ("attribution", {"attribution_window_days": "91", "checkout_collection": "on"}, "attribution_window_days",
     "from 1 to 90"),
    ("attribution", {"attribution_window_days": "seven"}, "attribution_window_days", "whole number"),
    ("attribution", {}, "attribution_window_days", "whole number"),
])
def test_bad_values_are_refused_beside_the_field_and_nothing_is_saved(client, auth, shop, section, data, field,
                                                                       message):
    before = stored(shop.id)
    segments_before = Session.scalar(select(func.count()).select_from(Segment))
    assert Session.info.get("kinnekt_shop_id") is None
    response = post(client, auth, section, data)
    assert response.status_code == 200
    assert '"isError": true' in response.headers["HX-Trigger"]
    html = response.get_data(as_text=True)
    error = html.split(f'id="field-{field}-error"', 1)[1].split("</p>", 1)[0]
    assert message in error
    assert f'id="field-{field}" name="{field}"' in html and 'aria-invalid="true"' in html
    assert stored(shop.id) == before  # nothing saved, not even the card's good fields
    assert Session.scalar(select(func.count()).select_from(Segment)) == segments_before


def test_an_error_keeps_what_was_typed_and_saves_no_other_field(client, auth, shop):
    before = stored(shop.id)
    html = post(client, auth, "compliance", {"compliance_footer": "Reply END", "help_text": "New help text",
                                             "double_opt_in": ""}).get_data(as_text=True)
    assert 'value="Reply END"' in html and ">New help text</textarea>" in html
    assert 'name="double_opt_in" value="on" checked' not in html  # shown as posted (off)
    assert stored(shop.id) == before  # help text and double opt-in not saved either


def test_several_errors_at_once(client, auth, shop):
    html = post(client, auth, "sending", {"smart_sending_hours": "x", "suppression_threshold": "-3"}
                ).get_data(as_text=True)
    assert 'id="field-smart_sending_hours-error"' in html and 'id="field-suppression_threshold-error"' in html


def test_a_plain_form_post_redirects_or_shows_the_page_with_errors(client, token_for, shop):
    headers = {"Authorization": f"Bearer {token_for(shop.domain)}"}
    ok = client.post("/settings/sender", data={"sender": "ACME"}, headers=headers)
    assert ok.status_code == 303 and ok.headers["Location"].endswith("/settings/")
    bad = client.post("/settings/sender", data={"sender": "$$$"}, headers=headers)
    assert bad.status_code == 200 and 'id="settings-page"' in bad.get_data(as_text=True)
    assert 'id="field-sender-error"' in bad.get_data(as_text=True)
    assert stored(shop.id)["sender"] == "ACME"


# --- side effects ---------------------------------------------------------------------------------------

def _checkout_segments(shop_id):
    bind_shop(None)
    return Session.scalars(select(Segment).where(Segment.shop_id == shop_id, Segment.auto_source == "checkout")).all()


def test_turning_checkout_collection_on_creates_the_checkout_segment_once(client, auth, shop, other_shop):
    assert _checkout_segments(shop.id) == []
    post(client, auth, "attribution", {"attribution_window_days": "5", "checkout_collection": "on"})
    [segment] = _checkout_segments(shop.id)
    assert (segment.name, segment.kind) == ("Checkout", "auto")
    post(client, auth, "attribution", {"attribution_window_days": "5"})  # off: the segment stays
    post(client, auth, "attribution", {"attribution_window_days": "5", "checkout_collection": "on"})
    assert len(_checkout_segments(shop.id)) == 1 and stored(shop.id)["checkout_collection"] is True
    assert _checkout_segments(other_shop.id) == []


def test_checkout_segment_is_not_made_when_the_form_is_refused(client, auth, shop):
    post(client, auth, "attribution", {"attribution_window_days": "500", "checkout_collection": "on"})
    assert _checkout_segments(shop.id) == [] and stored(shop.id)["checkout_collection"] is False


@pytest.fixture
def fake_attribution(monkeypatch):
    """A stand-in kinnekt.campaigns.attribution recording recompute(session, shop) calls."""
    import kinnekt.campaigns
    calls = []
    module = types.ModuleType("kinnekt.campaigns.attribution")
    module.__spec__ = importlib.machinery.ModuleSpec("kinnekt.campaigns.attribution", None)
    module.recompute = lambda session, shop: calls.append((shop.id, shop.attribution_window_days))
    monkeypatch.setitem(sys.modules, "kinnekt.campaigns.attribution", module)
    monkeypatch.setattr(kinnekt.campaigns, "attribution", module, raising=False)
    from kinnekt.campaigns import tasks
    monkeypatch.setattr(tasks, "attribution", module)  # the recompute job's module
    return calls


def test_a_new_attribution_window_queues_a_recomputation(app, client, auth, shop, fake_attribution):
    response = post(client, auth, "attribution", {"attribution_window_days": "14"})
    assert "re-attributed" in response.headers["HX-Trigger"]
    assert app.extensions["kinnekt_queue"].drain(10)
    assert fake_attribution == [(shop.id, 14)]
    post(client, auth, "attribution", {"attribution_window_days": "14", "checkout_collection": "on"})  # same window
    assert app.extensions["kinnekt_queue"].drain(10)
    assert fake_attribution == [(shop.id, 14)]


def test_without_the_attribution_module_the_window_still_saves(monkeypatch, client, auth, shop):
    monkeypatch.setattr(shop_settings, "attribution_available", lambda: False)
    response = post(client, auth, "attribution", {"attribution_window_days": "30"})
    assert "re-attributed" not in response.headers["HX-Trigger"]
    assert stored(shop.id)["attribution_window_days"] == 30


# --- the domain directly --------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, stored_as", [
    ("+15550100200", "+15550100200"), ("1 555 010 0200", "+15550100200"), ("+44 (0)7400", None),
    ("KINNEKT", "KINNEKT"), ("Shop 24", "Shop 24"), ("", None), ("x", "x"),
])
def test_clean_sender(raw, stored_as):
    if stored_as is None and raw:
        with pytest.raises(shop_settings.SettingError):
            shop_settings.clean_sender(raw)
    else:
        assert shop_settings.clean_sender(raw) == stored_as


def test_validate_reports_every_bad_field_and_save_changes_nothing(db, shop):
    form = {"compliance_footer": "no opt out here", "help_text": "", "double_opt_in": "on"}
    values, errors = shop_settings.validate(form, "compliance")
    assert set(errors) == {"compliance_footer", "help_text"} and values == {"double_opt_in": True}
    before = stored(shop.id)
    result = shop_settings.save(db(), shop, form, "compliance")
    assert not result.ok and set(result.errors) == {"compliance_footer", "help_text"}
    assert stored(shop.id) == before


def test_save_reports_what_changed(db, shop):
    result = shop_settings.save(db(), shop, {"smart_sending_hours": "6", "suppression_threshold": "0"}, "sending")
    assert result.ok and result.changed == {"smart_sending_hours"}


def test_hidden_off_then_checkbox_reads_the_last_value(db, shop):
    from werkzeug.datastructures import MultiDict
    form = MultiDict([("quiet_hours_enabled", "off"), ("quiet_hours_enabled", "on"),
                      ("quiet_hours_start", "21:00"), ("quiet_hours_end", "08:00")])
    assert shop_settings.validate(form, "quiet_hours")[0]["quiet_hours_enabled"] is True
