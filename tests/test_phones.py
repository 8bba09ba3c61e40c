"""Phone normalising: E.164, country, carrier, the time zone rule, and merchant-readable errors."""
from __future__ import annotations

import pytest

from kinnekt.subscribers.phones import InvalidPhone, from_msisdn, normalise


@pytest.mark.parametrize("raw, region, e164, country", [
    ("+44 7400 123456", None, "+447400123456", "GB"),
    ("07400 123456", "GB", "+447400123456", "GB"),
    ("0044 7400 123456", None, "+447400123456", "GB"),
    ("(415) 555-2671", "US", "+14155552671", "US"),
    ("+1 415.555.2671", "de", "+14155552671", "US"),      # a leading + wins over the default region
    ("0151 12345678", "DE", "+4915112345678", "DE"),
])
def test_e164_and_country(raw, region, e164, country):
    info = normalise(raw, region)
    assert (info.e164, info.country) == (e164, country)


def test_carrier_from_the_number_and_none_when_unknown():
    assert normalise("+447400123456").carrier == "Three"
    assert normalise("+4915112345678").carrier == "T-Mobile"
    assert normalise("+14155552671").carrier is None  # US numbers are ported: phonenumbers gives ""


@pytest.mark.parametrize("raw, zone", [
    ("+447400123456", "Europe/London"),          # candidates Guernsey, Isle of Man, Jersey, London
    ("+442071234567", "Europe/London"),
    ("+61412345678", "Australia/Sydney"),        # a mobile: the most populous zone
    ("+61892345678", "Australia/Perth"),         # 08 9xxx: Western Australia
    ("+61881234567", "Australia/Adelaide"),      # 08 8xxx: South Australia
    ("+61731234567", "Australia/Brisbane"),
    ("+14155552671", "America/Los_Angeles"),
    ("+18005550199", "America/New_York"),        # toll free: every North American zone; the primary
    ("+79161234567", "Europe/Moscow"),
    ("+34612345678", "Europe/Madrid"),           # not Atlantic/Canary, which sorts first
    ("+4915112345678", "Europe/Berlin"),
])
def test_time_zone_rule(raw, zone):
    assert normalise(raw).timezone == zone


def test_preferred_zone_decides_between_candidates():
    assert normalise("+61412345678", prefer_zone="Australia/Perth").timezone == "Australia/Perth"
    # a preference that is not a candidate is ignored
    assert normalise("+447400123456", prefer_zone="America/New_York").timezone == "Europe/London"


@pytest.mark.parametrize("raw, region, message", [
    ("+1 555 010 0000", None, "+1 555 010 0000 is not a valid US number."),
    ("555-0100", "US", "555-0100 is not a valid US number."),
    ("7400 123456", None, "missing the country code"),
    ("", None, "Enter a phone number."),
    ("   ", "US", "Enter a phone number."),
    ("call me", "US", "is not a phone number"),
    ("1-800-FLOWERS", "US", "is not a phone number"),
    ("+999 123456789", None, "unknown country code"),
    ("+44 12", None, "too short"),
    ("+44" + "1" * 40, None, "too long"),
    ("+447700900000", None, "is not a valid GB number"),  # Ofcom's drama range: possible, never valid
])
def test_invalid_numbers_have_clear_messages(raw, region, message):
    with pytest.raises(InvalidPhone) as err:
        normalise(raw, region)
    assert message in str(err.value)


def test_lenient_accepts_a_possible_number_that_texted_us():
    info = normalise("+447700900123", lenient=True)
    assert info.e164 == "+447700900123" and info.country == "GB"
    with pytest.raises(InvalidPhone):
        normalise("+44 12", lenient=True)


def test_msisdn_from_vonage():
    assert from_msisdn("447400123456") == "+447400123456"
    for bad in ("", "12a45678", "123", "1" * 16):
        with pytest.raises(InvalidPhone):
            from_msisdn(bad)
