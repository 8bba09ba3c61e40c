"""Small helpers of the demo seeder: money, slugs and e-mail names, weighted picks and quotas, SMS parts and
phone facts."""
from __future__ import annotations

import random
import re
import unicodedata
from decimal import ROUND_HALF_UP, Decimal

import phonenumbers
from phonenumbers import carrier as pn_carrier, timezone as pn_timezone


_GSM7 = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM7_EXT = set("^{}\\[~]|€\f")


def _cents(value) -> Decimal:
    return Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _slug(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def _email_part(name: str) -> str:
    for src, dst in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss"), ("Ä", "ae"), ("Ö", "oe"), ("Ü", "ue")):
        name = name.replace(src, dst)
    return re.sub(r"[^a-z]", "", unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower())


def _pick(rng: random.Random, weighted):
    """One item from ((item, weight), ...)."""
    items = [item for item, _ in weighted]
    return rng.choices(items, weights=[w for _, w in weighted])[0]


def _quota(rng: random.Random, n: int, weights: dict) -> list:
    """n labels in proportion to weights (largest remainder), each present once n allows it, shuffled."""
    total = sum(weights.values())
    raw = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in raw.items()}
    if n >= len(weights):
        for k in counts:
            counts[k] = max(counts[k], 1)
    by_remainder = sorted(weights, key=lambda k: (-(raw[k] - int(raw[k])), list(weights).index(k)))
    i = 0
    while sum(counts.values()) < n:
        counts[by_remainder[i % len(by_remainder)]] += 1
        i += 1
    while sum(counts.values()) > n:
        largest = max(counts, key=lambda k: (counts[k], -list(weights).index(k)))
        counts[largest] -= 1
    out = [k for k in weights for _ in range(counts[k])]
    rng.shuffle(out)
    return out


def _sms_parts(text: str) -> tuple[str, int]:
    """The encoding ("gsm7" or "ucs2") and the number of SMS parts a text needs."""
    if all(c in _GSM7 or c in _GSM7_EXT for c in text):
        units, single, multi, enc = [2 if c in _GSM7_EXT else 1 for c in text], 160, 153, "gsm7"
    else:
        units, single, multi, enc = [2 if ord(c) > 0xFFFF else 1 for c in text], 70, 67, "ucs2"
    if sum(units) <= single:
        return enc, 1
    parts, used = 1, 0
    for u in units:  # never split an escape pair or a surrogate pair
        if used + u > multi:
            parts, used = parts + 1, 0
        used += u
    return enc, parts


def _phone_facts(e164: str) -> tuple[str | None, str | None, str | None]:
    """Country, carrier (by prefix) and first time zone of a number, as the subscriber record keeps them."""
    number = phonenumbers.parse(e164)
    country = phonenumbers.region_code_for_number(number)
    carrier_name = pn_carrier.name_for_number(number, "en") or None
    zones = pn_timezone.time_zones_for_number(number)
    zone = zones[0] if zones and zones[0] != "Etc/Unknown" else None
    return country, carrier_name, zone
