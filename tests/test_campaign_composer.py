"""Tests for kinnekt.campaigns.composer: merge tags, the live analysis, form validation and suggested names."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from kinnekt import defaults
from kinnekt.campaigns import composer, links
from kinnekt.models import Campaign, CampaignSegment, Segment
from kinnekt.sms import prices

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # Mon Mar 2, 10:00 in New York (EST)
PRICE = prices.price_per_part("US")  # the tests' shops text from no number: priced as the US


def fake_shop(**fields):
    base = {"id": 1, "name": "Acme Outfitters", "domain": "acme.myshopify.com",
            "compliance_footer": "Reply STOP to unsubscribe", "timezone": "America/New_York"}
    return SimpleNamespace(**{**base, **fields})


def person(first_name=None):
    return SimpleNamespace(first_name=first_name)


# ---------------------------------------------------------------------------------------------- render

def test_render_fills_every_tag_and_adds_the_footer_to_a_first_message():
    shop = fake_shop()
    body = "Hi {first_name}, {shop_name} has 20% off with {discount_code}!"
    assert composer.render(body, shop=shop, subscriber=person("Ada"), discount_code="SPRING20",
                           first_message=False) == "Hi Ada, Acme Outfitters has 20% off with SPRING20!"
    assert composer.render(body, shop=shop, subscriber=person("Ada"), discount_code="SPRING20",
                           first_message=True) == ("Hi Ada, Acme Outfitters has 20% off with SPRING20!\n"
                                                   "Reply STOP to unsubscribe")


def test_render_without_a_first_name_says_there_and_keeps_unknown_braces():
    shop = fake_shop()
    assert composer.render("Hi {first_name} {unknown} {", shop=shop, subscriber=person("  "), discount_code=None,
                           first_message=False) == "Hi there {unknown} {"
    assert composer.render("Hi {first_name}", shop=shop, subscriber=None, discount_code=None,
                           first_message=False) == "Hi there"


def test_render_footer_is_not_doubled_and_a_blank_footer_adds_nothing():
    body = "Sale today. Reply STOP to unsubscribe"
    assert composer.render(body, shop=fake_shop(), subscriber=person("Bo"), discount_code=None,
                           first_message=True) == body
    assert composer.render("Sale  \n", shop=fake_shop(compliance_footer=""), subscriber=person("Bo"),
                           discount_code=None, first_message=True) == "Sale  \n"


def test_render_uses_the_domain_when_the_shop_has_no_name_and_leaves_links_alone():
    shop = fake_shop(name="")
    assert composer.render("{shop_name}: https://acme.example/sale?a=1", shop=shop, subscriber=person("X"),
                           discount_code=None, first_message=False) == "acme: https://acme.example/sale?a=1"


# ---------------------------------------------------------------------------------------------- analysis

def test_analysis_of_plain_gsm_text():
    result = composer.analysis("Hello there", fake_shop())
    assert (result["characters"], result["segments"], result["encoding"]) == (11, 1, "gsm7")
    assert result["remaining"] == 160 - 11
    assert result["unicode_chars"] == [] and result["replacement"] is None
    assert result["cost_per_message"] == PRICE
    assert result["first_message_segments"] == 1
    assert result["first_message_characters"] == 11 + 1 + len("Reply STOP to unsubscribe")


def test_analysis_counts_escape_characters_twice():
    result = composer.analysis("Only 5€ [today]", fake_shop())
    assert result["encoding"] == "gsm7"
    assert result["characters"] == len("Only 5€ [today]") + 3  # € [ ] take an escape each
    assert composer.analysis("€" * 80, fake_shop())["characters"] == 160
    assert composer.analysis("€" * 81, fake_shop())["segments"] == 2


def test_analysis_points_at_the_character_forcing_unicode_and_offers_a_safe_replacement():
    body = "Big sale — don’t miss it"
    result = composer.analysis(body, fake_shop())
    assert result["encoding"] == "ucs2" and result["encoding_label"] == "Unicode (UCS-2)"
    assert [(c["char"], c["position"], c["replacement"]) for c in result["unicode_chars"]] == [
        ("—", 9, "-"), ("’", 14, "'")]
    assert result["unicode_chars"][0]["name"] == "Em Dash"
    assert result["replacement"] == "Big sale - don't miss it"
    assert result["replacement_encoding"] == "gsm7" and result["replacement_segments"] == 1
    flagged = [text for text, marked in result["highlighted"] if marked]
    assert flagged == ["—", "’"]
    assert "".join(text for text, _ in result["highlighted"]) == body


def test_analysis_of_an_emoji_has_no_replacement_and_counts_two_units():
    result = composer.analysis("Sale 🎉", fake_shop())
    assert result["encoding"] == "ucs2" and result["characters"] == 7  # the emoji is a surrogate pair
    assert [(c["char"], c["position"], c["replacement"]) for c in result["unicode_chars"]] == [("🎉", 5, None)]
    assert result["replacement"] is None
    mixed = composer.analysis("Sale — 🎉", fake_shop())
    assert mixed["replacement"] == "Sale - 🎉" and mixed["replacement_encoding"] == "ucs2"


def test_analysis_unicode_text_over_70_units_is_split_into_67_unit_segments():
    body = "é" * 10 + "ç" * 60  # ç is not in GSM-7
    result = composer.analysis(body, fake_shop())
    assert (result["characters"], result["segments"]) == (70, 1)
    result = composer.analysis(body + "ç", fake_shop())
    assert (result["characters"], result["segments"]) == (71, 2)
    assert result["cost_per_message"] == PRICE * 2


def test_analysis_counts_links_as_short_links():
    long_url = "https://acme.example/collections/spring-sale?utm_content=" + "x" * 200
    result = composer.analysis(f"Shop now: {long_url}", fake_shop())
    assert result["urls"] == 1
    assert result["characters"] == len("Shop now: ") + links.short_url_length()
    assert result["segments"] == 1


def test_analysis_counts_merge_tags_as_their_sample_values():
    shop = fake_shop(name="Ünïcode Shop")  # ï is not GSM: the shop's name makes every message Unicode
    result = composer.analysis("Hi {first_name} from {shop_name}", shop)
    assert result["characters"] == len(f"Hi {defaults.CAMPAIGN_SAMPLE_FIRST_NAME} from Ünïcode Shop")
    assert result["encoding"] == "ucs2" and result["unicode_chars"] == [] and result["unicode_from_tags"]
    shared = composer.analysis("Code {discount_code}", fake_shop(), discount_mode="shared", discount_code="SAVE10")
    assert shared["characters"] == len("Code SAVE10")
    unique = composer.analysis("Code {discount_code}", fake_shop(), discount_mode="unique", discount_code="SPR")
    assert unique["characters"] == len("Code SPR-XXXX-XXXX")


def test_analysis_of_an_empty_message_is_zero_and_a_very_long_one_is_too_long():
    empty = composer.analysis("", fake_shop())
    assert (empty["characters"], empty["segments"], empty["cost_per_message"]) == (0, 0, 0)
    too_long = composer.analysis("x" * 153 * defaults.CAMPAIGN_BODY_MAX_SEGMENTS, fake_shop())
    assert too_long["too_long"]  # the footer on a first message makes it one segment more
    assert not composer.analysis("x" * 1000, fake_shop())["too_long"]


def test_estimated_cost_is_per_message_cost_times_sendable():
    result = composer.analysis("x" * 200, fake_shop())
    assert composer.estimated_cost(result, 1000) == PRICE * 2 * 1000
    assert composer.estimated_cost(result, 0) == 0


def test_estimated_cost_prices_each_recipient_by_country_from_the_one_table():
    result = composer.analysis("x" * 200, fake_shop())  # 2 segments
    cost = composer.estimated_cost(result, 13, {"US": 10, "GB": 2, None: 1})
    assert cost == 2 * (10 * prices.PRICE_PER_PART["US"] + 2 * prices.PRICE_PER_PART["GB"]
                        + 1 * prices.PRICE_PER_PART["US"])  # no known country: the shop's own
    assert composer.estimated_cost(result, 13, {"US": 10}) == PRICE * 2 * 13  # counts that disagree: not used
    assert result["price_per_segment"] == prices.price_per_part("US")


# ---------------------------------------------------------------------------------------------- names

def test_suggested_name_is_subject_and_segments():
    assert composer.suggested_name("Spring sale", ["VIP customers"]) == "Spring sale - VIP customers"
    assert composer.suggested_name("Spring sale", ["A", "B", "C", "D"]) == "Spring sale - A, B +2"
    assert composer.suggested_name("", ["VIP"]) == "VIP"
    assert composer.suggested_name("Hello", []) == "Hello"
    assert composer.suggested_name("", []) == ""
    assert len(composer.suggested_name("x" * 300, ["y"])) == 255


def test_subject_is_the_first_line_without_greeting_tags_and_links():
    assert composer.subject_of("Hi {first_name}, spring sale!\nhttps://x.example") == "spring sale"
    assert composer.subject_of("Hey! Big sale") == "Big sale"
    assert composer.subject_of("Hello there friend") == "Hello there friend"
    assert composer.subject_of("Hiking boots at {shop_name}") == "Hiking boots at"
    assert composer.subject_of("https://x.example\n\nNew {shop_name} drop") == "New drop"
    assert composer.subject_of("\n\n  Flash sale: 50% off everything in the store today only") == \
        "Flash sale: 50% off everything in the"


# ---------------------------------------------------------------------------------------------- validate

@pytest.fixture
def segments(shop, other_shop, db):
    rows = [Segment(shop_id=shop.id, name="VIP", definition={"match": "all", "rules": []}),
            Segment(shop_id=shop.id, name="Lapsed", definition={"match": "all", "rules": []}),
            Segment(shop_id=other_shop.id, name="Theirs", definition={"match": "all", "rules": []})]
    db.add_all(rows)
    db.commit()
    return rows


def good_form(segments, **changes):
    form = {"name": "Spring sale - VIP", "body": "Hi {first_name}, 20% off with {discount_code}",
            "include": [str(segments[0].id)], "exclude": [str(segments[1].id)], "send": "later",
            "send_date": "2026-03-10", "send_time": "09:30", "recipient_local_time": "1",
            "discount_mode": "shared", "discount_code": "SPRING20", "discount_kind": "percent",
            "discount_value": "20"}
    form.update(changes)
    data = MultiDict()
    for key, value in form.items():
        for item in value if isinstance(value, list) else [value]:
            data.add(key, item)
    return data


def nothing_saved(db):
    return db.scalar(select(func.count()).select_from(Campaign)) == 0 and \
        db.scalar(select(func.count()).select_from(CampaignSegment)) == 0


def test_validate_a_good_form(db, shop, segments):
    values, errors = composer.validate(good_form(segments), session=db, shop=shop, now=NOW)
    assert errors == {}
    assert values == {
        "name": "Spring sale - VIP", "body": "Hi {first_name}, 20% off with {discount_code}",
        "include_segment_ids": [segments[0].id], "exclude_segment_ids": [segments[1].id],
        "send_now": False, "send_at": dt.datetime(2026, 3, 10, 13, 30, tzinfo=UTC),  # 9:30 EDT (after Mar 8)
        "recipient_local_time": True, "discount_mode": "shared", "discount_code": "SPRING20",
        "discount_kind": "percent", "discount_value": Decimal("20.00"), "repeat": "none", "repeat_until": None,
        "cap_choice": None}
    assert composer.warnings(values) == []
    assert nothing_saved(db)


def test_liquid_style_tags_are_the_same_tags_and_stored_short(db, shop, segments):
    body = "Hi {{ first_name }}, 20% off with {{discount_code}} {{ nope }} {{"
    assert composer.tags_in(body) == ["first_name", "discount_code", "nope"]
    filled = composer.fill_tags(body, {"first_name": "Ada", "discount_code": "X"})
    assert filled == "Hi Ada, 20% off with X {{ nope }} {{"
    liquid = "Hi {{ first_name }}, 20% off with {{ discount_code }}"
    values, errors = composer.validate(good_form(segments, body=liquid), session=db, shop=shop, now=NOW)
    assert errors == {} and values["body"] == "Hi {first_name}, 20% off with {discount_code}"
    _, errors = composer.validate(good_form(segments, body="Hi {{ frist_name }} {discount_code}"), session=db,
                                  shop=shop, now=NOW)
    assert "frist_name" in errors["body"]


def test_validate_send_now_and_a_unique_amount_discount(db, shop, segments):
    form = good_form(segments, send="now", send_date="", send_time="", exclude=[], discount_mode="unique",
                     discount_code="spr", discount_kind="amount", discount_value="5,5")
    values, errors = composer.validate(form, session=db, shop=shop, now=NOW)
    assert errors == {}
    assert values["send_now"] and values["send_at"] is None and not values["recipient_local_time"]
    assert (values["discount_code"], values["discount_kind"], values["discount_value"]) == ("SPR", "amount",
                                                                                            Decimal("5.50"))


@pytest.mark.parametrize("changes, field, message", [
    ({"name": "   "}, "name", "Give the campaign a name."),
    ({"name": "x" * 256}, "name", "Keep the name to 255 characters."),
    ({"body": " \n\t "}, "body", "Write the message."),
    ({"body": "Hi {name}"}, "body", "Unknown merge tag {name}. Use {first_name}, {shop_name}, {discount_code}."),
    ({"body": "Hi {First_Name}"}, "body", "Unknown merge tag {First_Name}. Did you mean {first_name}?"),
    ({"body": "Use {discount_code}", "discount_mode": "none"}, "body",
     "The message uses {discount_code}: choose a discount, or remove the tag."),
    ({"body": "x" * 1600}, "body", "The message is 11 SMS segments long with the footer; keep it to 10."),
    ({"include": []}, "include", "Choose at least one segment to send to."),
    ({"include": ["abc"]}, "include", "Choose segments of this shop (one of them no longer exists)."),
    ({"include": ["999999"]}, "include", "Choose segments of this shop (one of them no longer exists)."),
    ({"exclude": ["999999"]}, "exclude", "Choose segments of this shop (one of them no longer exists)."),
    ({"send": "tomorrow"}, "send_at", "Choose Send now or a date and time."),
    ({"send_date": ""}, "send_at", "Choose a date and a time."),
    ({"send_date": "10/03/2026"}, "send_at", "Enter the date as YYYY-MM-DD and the time as HH:MM."),
    ({"send_date": "2026-02-30"}, "send_at", "That date or time does not exist."),
    ({"send_time": "25:00"}, "send_at", "That date or time does not exist."),
    ({"send_date": "2026-03-02", "send_time": "09:59"}, "send_at", "Choose a time in the future."),
    ({"send_date": "2026-03-08", "send_time": "02:30"}, "send_at",
     "02:30 does not exist on Mar 8 in America/New_York: the clocks go forward then. "
     "Choose a time outside the skipped hour, such as 03:30."),
    ({"discount_mode": "free"}, "discount_mode",
     "Choose no discount, one code for everyone, or a unique code per recipient."),
    ({"discount_code": " "}, "discount_code",
     "Enter the code recipients type at checkout (1–255 characters, one line)."),
    ({"discount_code": "x" * 256}, "discount_code", "A code is one line of at most 255 characters."),
    ({"discount_mode": "unique", "discount_code": "SPR-1"}, "discount_code",
     "A prefix is 1–20 letters or digits (codes look like PREFIX-7KQ2-XM4P)."),
    ({"discount_kind": "bogo"}, "discount_kind", "Choose a percentage or a fixed amount."),
    ({"discount_value": "ten"}, "discount_value", "Enter how much the code takes off, as a number."),
    ({"discount_value": "NaN"}, "discount_value", "Enter how much the code takes off, as a number."),
    ({"discount_value": "0"}, "discount_value", "The discount must be more than 0."),
    ({"discount_value": "-5"}, "discount_value", "The discount must be more than 0."),
    ({"discount_value": "100.01"}, "discount_value", "A percentage can be at most 100."),
    ({"discount_value": "5.555", "discount_kind": "amount"}, "discount_value", "Use at most two decimals."),
])
def test_validate_reports_each_error_beside_its_field_and_saves_nothing(db, shop, segments, changes, field,
                                                                        message):
    values, errors = composer.validate(good_form(segments, **changes), session=db, shop=shop, now=NOW)
    assert errors == {field: message}
    assert nothing_saved(db)


def test_validate_refuses_another_shops_segment_and_overlapping_choices(db, shop, segments):
    theirs = str(segments[2].id)
    _, errors = composer.validate(good_form(segments, include=[theirs]), session=db, shop=shop, now=NOW)
    assert errors == {"include": "Choose segments of this shop (one of them no longer exists)."}
    both = str(segments[0].id)
    _, errors = composer.validate(good_form(segments, exclude=[both]), session=db, shop=shop, now=NOW)
    assert errors == {"exclude": "A segment cannot be both included and excluded."}
    assert nothing_saved(db)


def test_validate_collects_every_error_at_once(db, shop, segments):
    form = MultiDict({"name": "", "body": "", "send": "later", "discount_mode": "shared"})
    _, errors = composer.validate(form, session=db, shop=shop, now=NOW)
    assert set(errors) == {"name", "body", "include", "send_at", "discount_code", "discount_kind",
                           "discount_value"}
    assert nothing_saved(db)


def test_a_draft_may_leave_segments_and_time_for_later_but_not_wrong_ones(db, shop, segments):
    form = good_form(segments, include=[], exclude=[], send_date="", send_time="")
    values, errors = composer.validate(form, session=db, shop=shop, now=NOW, draft=True)
    assert errors == {} and values["include_segment_ids"] == [] and values["send_at"] is None
    _, errors = composer.validate(good_form(segments, send_time="09:00", send_date="2020-01-01"), session=db,
                                  shop=shop, now=NOW, draft=True)
    assert errors == {"send_at": "Choose a time in the future."}


def test_an_ambiguous_time_when_clocks_go_back_is_the_first_one(db, shop, segments):
    values, errors = composer.validate(good_form(segments, send_date="2026-11-01", send_time="01:30"),
                                       session=db, shop=shop, now=NOW)
    assert errors == {}
    assert values["send_at"] == dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # 1:30 EDT, not 1:30 EST


def test_send_time_is_in_the_shops_time_zone(db, segments, make_tokyo_shop):
    form = good_form(segments, send_date="2026-03-10", send_time="09:30", include=[], exclude=[])
    values, errors = composer.validate(form, session=db, shop=make_tokyo_shop, now=NOW, draft=True)
    assert errors == {} and values["send_at"] == dt.datetime(2026, 3, 10, 0, 30, tzinfo=UTC)


@pytest.fixture
def make_tokyo_shop(db):
    from tests.conftest import make_shop
    return make_shop("tokyo.myshopify.com", timezone="Asia/Tokyo")


def test_a_discount_the_message_does_not_show_is_a_warning(db, shop, segments):
    values, errors = composer.validate(good_form(segments, body="Sale today"), session=db, shop=shop, now=NOW)
    assert errors == {}
    assert composer.warnings(values) == [
        "The campaign has a discount, but the message does not include {discount_code}: "
        "recipients will not see their code."]


def test_validate_accepts_a_plain_dict(db, shop, segments):
    form = {"name": "A", "body": "B", "include": [str(segments[0].id)], "send": "now"}
    values, errors = composer.validate(form, session=db, shop=shop, now=NOW)
    assert errors == {} and values["include_segment_ids"] == [segments[0].id] and values["discount_mode"] == "none"
