"""Phone numbers: E.164 normalising with country, carrier and time zone, and merchant-readable errors.

Time zone rule (a number can map to several zones; phonenumbers lists them alphabetically, so the
first one is an accident of spelling, e.g. Europe/Guernsey for every UK mobile):

1. one candidate zone: that zone ("Etc/Unknown" means none);
2. the number's place (English geocoder text, e.g. "Perth") names a candidate's city: that zone;
3. a national prefix that pins a state inside a multi-zone area code (Australia's 08: 86/89 is
   Western Australia, 87/88 South Australia and the Northern Territory): that zone;
4. the caller's preferred zone (the shop's), when it is a candidate: mobiles are not geographic,
   and a shop's subscribers mostly live near it;
5. the country's most populous zone (GB Europe/London, AU Australia/Sydney, US America/New_York…)
   when it is a candidate;
6. otherwise the first candidate.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import phonenumbers
from phonenumbers import NumberParseException, carrier, geocoder, timezone as pn_timezone

if TYPE_CHECKING:
    from kinnekt.models import Shop

MAX_INPUT_LENGTH = 40
"""Longer input is not a phone number, whatever its digits."""

_ALLOWED = re.compile(r"^[0-9+()\-.\s/]+$")

# The zone most of each multi-zone country's people live in (rule 5).
PRIMARY_ZONES = {
    "AR": "America/Argentina/Buenos_Aires", "AU": "Australia/Sydney", "BR": "America/Sao_Paulo",
    "CA": "America/Toronto", "CD": "Africa/Kinshasa", "CL": "America/Santiago", "CN": "Asia/Shanghai",
    "EC": "America/Guayaquil", "ES": "Europe/Madrid", "FM": "Pacific/Pohnpei", "GB": "Europe/London",
    "GL": "America/Nuuk", "ID": "Asia/Jakarta", "KI": "Pacific/Tarawa", "KZ": "Asia/Almaty",
    "MN": "Asia/Ulaanbaatar", "MX": "America/Mexico_City", "MY": "Asia/Kuala_Lumpur", "NZ": "Pacific/Auckland",
    "PF": "Pacific/Tahiti", "PG": "Pacific/Port_Moresby", "PT": "Europe/Lisbon", "RU": "Europe/Moscow",
    "UA": "Europe/Kyiv", "US": "America/New_York", "UZ": "Asia/Tashkent",
}

# National-number prefixes that pin a zone where the area code spans several (rule 3).
PREFIX_ZONES = {
    "AU": (("86", "Australia/Perth"), ("89", "Australia/Perth"),
           ("87", "Australia/Adelaide"), ("88", "Australia/Adelaide")),
}


@dataclass(frozen=True)
class PhoneInfo:
    """A normalised number: E.164, ISO country, carrier (as allocated; None if unknown) and IANA time zone."""

    e164: str
    country: str | None
    carrier: str | None
    timezone: str | None


class InvalidPhone(ValueError):
    """The input is not a number we can text; the message says what is wrong, in the merchant's words."""


def normalise(raw: str, default_region: str | None = None, *, prefer_zone: str | None = None,
              lenient: bool = False) -> PhoneInfo:
    """Parse `raw` (with + and country code, or national in `default_region`) into a PhoneInfo.

    `lenient` accepts a number that is possible but not valid by the metadata: only for numbers that
    just texted us (they exist, whatever the metadata says). Raises InvalidPhone otherwise.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("Enter a phone number.")
    if len(text) > MAX_INPUT_LENGTH:
        raise InvalidPhone(f"{text[:20]}… is too long to be a phone number.")
    if not _ALLOWED.match(text) or not any(ch.isdigit() for ch in text):
        raise InvalidPhone(f"{text} is not a phone number: use digits, with + and the country code.")
    if text.startswith("00") and not default_region:
        text = "+" + text[2:]  # the international prefix used in most of the world
    region = default_region.upper() if default_region else None
    if not text.startswith("+") and not region:
        raise InvalidPhone(f"{text} is missing the country code: write it with + and the country code, "
                           f"e.g. +1 415 555 2671.")
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except NumberParseException as exc:
        raise InvalidPhone(_parse_error(text, exc)) from None
    main_region = phonenumbers.region_code_for_country_code(number.country_code)
    main_region = main_region if main_region not in (None, "ZZ", "001") else None
    if not phonenumbers.is_valid_number(number):
        possible = phonenumbers.is_possible_number_with_reason(number)
        if possible == phonenumbers.ValidationResult.TOO_SHORT:
            raise InvalidPhone(f"{text} is too short to be a phone number.")
        if possible == phonenumbers.ValidationResult.TOO_LONG:
            raise InvalidPhone(f"{text} is too long to be a phone number.")
        if not (lenient and possible in (phonenumbers.ValidationResult.IS_POSSIBLE,
                                         phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY)):
            raise InvalidPhone(f"{text} is not a valid {main_region + ' ' if main_region else ''}number.")
    # an unlisted (lenient) number belongs to its calling code's main country
    country = phonenumbers.region_code_for_number(number) or main_region
    country = country if country and len(country) == 2 and country.isalpha() and country != "ZZ" else None
    return PhoneInfo(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        country=country,
        carrier=carrier.name_for_number(number, "en") or None,
        timezone=choose_timezone(number, country, prefer_zone),
    )


def choose_timezone(number: phonenumbers.PhoneNumber, country: str | None,
                    prefer_zone: str | None = None) -> str | None:
    """The one IANA zone for `number`, by the rule in this module's docstring."""
    zones = [z for z in pn_timezone.time_zones_for_number(number) if z and z != "Etc/Unknown"]
    if not zones:
        return None
    if len(zones) == 1:
        return zones[0]
    place = (geocoder.description_for_number(number, "en") or "").split(",")[0].strip().lower()
    for zone in zones:
        if place and zone.rsplit("/", 1)[-1].replace("_", " ").lower() == place:
            return zone
    national = str(number.national_number)
    for prefix, zone in PREFIX_ZONES.get(country or "", ()):
        if national.startswith(prefix) and zone in zones:
            return zone
    if prefer_zone in zones:
        return prefer_zone
    primary = PRIMARY_ZONES.get(country or "")
    if primary in zones:
        return primary
    return zones[0]


def from_msisdn(msisdn: str) -> str:
    """Vonage's msisdn (digits, no +) as E.164 text; raises InvalidPhone when it is not 6-15 digits."""
    digits = (msisdn or "").strip().lstrip("+")
    if not (digits.isascii() and digits.isdigit()) or not 6 <= len(digits) <= 15:
        raise InvalidPhone(f"{msisdn!r} is not a phone number.")
    return "+" + digits


def _parse_error(text: str, exc: NumberParseException) -> str:
    kind = exc.error_type
    if kind == NumberParseException.INVALID_COUNTRY_CODE:
        if text.startswith("+"):
            return f"{text} has an unknown country code."
        return f"{text} is missing the country code: write it with + and the country code."
    if kind in (NumberParseException.TOO_SHORT_NSN, NumberParseException.TOO_SHORT_AFTER_IDD):
        return f"{text} is too short to be a phone number."
    if kind == NumberParseException.TOO_LONG:
        return f"{text} is too long to be a phone number."
    return f"{text} is not a phone number."


# ------------------------------------------------------------------------------------------ the shop's country

@lru_cache(maxsize=1)
def _zone_countries() -> dict[str, str]:
    """IANA time zone -> ISO country code, from the time zone database's zone.tab."""
    candidates = []
    try:
        candidates.append(resources.files("tzdata").joinpath("zoneinfo", "zone.tab"))
    except ModuleNotFoundError:
        pass
    candidates.append(Path("/usr/share/zoneinfo/zone.tab"))
    for path in candidates:
        try:
            content = path.read_text(encoding="utf-8")
        except OSError:
            continue
        zones = {}
        for line in content.splitlines():
            if line and not line.startswith("#"):
                parts = line.split("\t")
                if len(parts) >= 3:
                    zones[parts[2]] = parts[0]
        return zones
    return {}


def shop_region(shop: Shop) -> str | None:
    """The shop's country as the default for numbers without a country code, inferred from its time zone."""
    region = _zone_countries().get(shop.timezone or "")
    return region if region in phonenumbers.SUPPORTED_REGIONS else None


# ------------------------------------------------------------------------------------------ +1 numbers (NANP)

_NANP_SAMPLES = ("2345678", "5550123", "8675309")
"""Seven-digit tails tried after each area code: phonenumbers places a +1 number by its area code and exchange."""


@lru_cache(maxsize=1)
def nanp_area_codes_outside_us() -> frozenset[str]:
    """The +1 area codes phonenumbers places outside the United States: Canada's, the NANP Caribbean countries' and
    the territories with their own country code (PR, GU, VI, AS, MP). Worked out once, from phonenumbers' metadata
    (about 90 of the 800 three-digit codes); every other +1 area code counts as a US one."""
    outside = set()
    for area in range(200, 1000):
        for tail in _NANP_SAMPLES:
            region = phonenumbers.region_code_for_number(phonenumbers.parse(f"+1{area}{tail}"))
            if region and region != "US":
                outside.add(str(area))
                break
    return frozenset(outside)


def is_us_number(e164: str, country: str | None = None) -> bool:
    """Whether texts to this number count as texts to the US for the carriers' registration gate: its stored
    country when known; else a +1 number whose area code is not one of `nanp_area_codes_outside_us`."""
    if country:
        return country == "US"
    return (e164 or "").startswith("+1") and len(e164) == 12 and e164[2:5] not in nanp_area_codes_outside_us()


def gate_country(country_column, phone_column):
    """SQL: the subscriber's country for the US registration gate, the stored one, else "US" for a +1 number with a
    US area code (`is_us_number`), else NULL. Literal SQL only (no bound parameters), so that it can be grouped by
    on PostgreSQL as well as SQLite."""
    from sqlalchemy import and_, case, func, literal_column
    areas = [literal_column(f"'{area}'") for area in sorted(nanp_area_codes_outside_us())]
    return case((and_(country_column.is_(None), phone_column.like(literal_column("'+1%'")),
                      func.length(phone_column) == literal_column("12"),
                      func.substr(phone_column, literal_column("3"), literal_column("3")).not_in(areas)),
                 literal_column("'US'")), else_=country_column)
