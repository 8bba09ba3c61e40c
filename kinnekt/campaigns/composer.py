"""The campaign composer: merge tags, the live message analysis (size, encoding, cost), form validation, names,
test sends."""
from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.db import utcnow
from kinnekt.models import Campaign, Message, Segment, Shop, Subscriber
from kinnekt.numbers import record_id
from kinnekt.shopify.discounts import DiscountInputError, check_code
from kinnekt.sms import encoding, prices

MERGE_TAGS = {"first_name": "First name", "shop_name": "Shop name", "discount_code": "Discount code"}
"""The merge tags a message may use (`{first_name}`), with their labels for the composer's buttons."""

FIRST_NAME_FALLBACK = "there"
"""What {first_name} becomes for a subscriber without a first name ("Hi {first_name}" -> "Hi there")."""

DISCOUNT_KINDS = {"percent": "Percentage", "amount": "Fixed amount"}
"""What a campaign's discount takes off, in the merchant's words."""

DISCOUNT_MODES = {"none": "No discount", "shared": "One code for everyone", "unique": "A unique code per recipient"}
"""How a campaign hands out its discount, in the merchant's words."""

SAMPLE_UNIQUE_CODE = "XXXX-XXXX"
"""Shape of the random part of a unique code (kinnekt.shopify.discounts.generate_codes), for counting."""

_TAG = re.compile(r"\{\{\s*([^{}\s]{1,40})\s*\}\}|\{([^{}\s]{1,40})\}")
"""A merge tag: `{first_name}`, or the same written the Liquid way, `{{ first_name }}`, as Shopify's own templates
write them; `normalize_tags` stores the short form."""
_PREFIX = re.compile(r"[A-Za-z0-9]{1,20}")
_URL = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIME = re.compile(r"[0-9]{1,2}:[0-9]{2}")
_NAME_MAX = 255
_GREETING = re.compile(r"^\s*(?:hi|hey|hello|dear|hiya)(?:\s+\{first_name\}\s*[,!.:;-]*|\s*[,!.:;-]+)\s*",
                       re.IGNORECASE)


# ---------------------------------------------------------------------------------------------- rendering

def render(body: str, *, shop, subscriber, discount_code: str | None, first_message: bool,
           extra: Mapping[str, str] | None = None) -> str:
    """The text one subscriber receives: merge tags filled in, the compliance footer after a first message.

    {first_name} is the subscriber's first name (or "there" when we have none), {shop_name} the shop's
    name, {discount_code} the recipient's code (empty when there is none: validation keeps that from
    happening); `extra` adds the trigger's tags of a flow message (kinnekt/campaigns/trigger_tags.py). Unknown
    tags are left as typed. Links are left alone (kinnekt.campaigns.links shortens them).
    """
    first_name = (getattr(subscriber, "first_name", None) or "").strip() if subscriber is not None else ""
    values = {
        **(extra or {}),
        "first_name": first_name or FIRST_NAME_FALLBACK,
        "shop_name": shop_display_name(shop),
        "discount_code": discount_code or "",
    }
    text = fill_tags(body, values)
    footer = (shop.compliance_footer or "").strip()
    if first_message and footer and footer not in text:
        text = f"{text.rstrip()}\n{footer}"
    return text


def fill_tags(body: str, values: Mapping[str, str]) -> str:
    """`body` with each known `{tag}` replaced by its value; other braces are left as they are."""
    return _TAG.sub(lambda m: values.get(_tag_name(m), m.group(0)), body or "")


def _tag_name(match: re.Match) -> str:
    return match.group(1) or match.group(2)


def normalize_tags(body: str) -> str:
    """`body` with each `{{ tag }}` written as `{tag}`, the one form stored (other braces are left as they are)."""
    return _TAG.sub(lambda m: "{" + _tag_name(m) + "}", body or "")


def shop_display_name(shop) -> str:
    """The shop's name as {shop_name} shows it (the domain's first label when the name is blank)."""
    return (shop.name or "").strip() or shop.domain.split(".")[0]


def tags_in(body: str) -> list[str]:
    """The `{tags}` a body uses, known or not, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in _TAG.finditer(body or ""):
        seen.setdefault(_tag_name(match), None)
    return list(seen)


def find_urls(text: str) -> list[str]:
    """The http(s) links in a text (D3's links.find_urls when it exists, so both agree)."""
    try:
        from kinnekt.campaigns import links
        return links.find_urls(text)
    except (ImportError, AttributeError):
        return [m.group(0).rstrip(".,;:!?)") for m in _URL.finditer(text or "")]


def short_url_length() -> int:
    """How long a tracked short link is (links.short_url_length when it exists)."""
    try:
        from kinnekt.campaigns import links
        return int(links.short_url_length())
    except (ImportError, AttributeError):
        return defaults.CAMPAIGN_SHORT_URL_LENGTH


# ---------------------------------------------------------------------------------------------- analysis

def home_country(shop) -> str:
    """The country the shop texts from (its sender number's), the US when that cannot be told."""
    return prices.country_of(getattr(shop, "sender", None)) or "US"


def price_per_segment(shop=None) -> Decimal:
    """The price of one SMS segment to the shop's own country (kinnekt/sms/prices.py)."""
    return prices.price_per_part(home_country(shop))


def sample_text(body: str, shop, *, discount_mode: str = "none", discount_code: str | None = None,
                shorten: bool = True, first_message: bool = False) -> str:
    """`body` as a typical recipient gets it: sample name, the shop's name, a code of the right length,
    every link as long as a short tracked link (when `shorten`), and the footer on a first message."""
    if discount_mode == "unique":
        code = f"{discount_code}-{SAMPLE_UNIQUE_CODE}" if discount_code else SAMPLE_UNIQUE_CODE
    else:
        code = discount_code or ""
    text = fill_tags(body or "", {"first_name": defaults.CAMPAIGN_SAMPLE_FIRST_NAME,
                                  "shop_name": shop_display_name(shop), "discount_code": code})
    if shorten:
        length = short_url_length()
        for url in sorted(set(find_urls(text)), key=len, reverse=True):
            text = text.replace(url, "x" * length)
    footer = (shop.compliance_footer or "").strip()
    if first_message and footer and footer not in text:
        text = f"{text.rstrip()}\n{footer}"
    return text


def analysis(body: str, shop, *, discount_mode: str = "none", discount_code: str | None = None) -> dict:
    """What the live counter shows for a message: size, segments, encoding, what forces Unicode, a GSM-safe
    replacement, and the estimated cost of one message (with and without the first-message footer).

    Counted on the sample recipient's text (`sample_text`): links as short links, {first_name} as a typical
    name. `characters` is in the message's own units (GSM septets: € [ ] { } count 2; UCS-2 units: an emoji
    counts 2). `unicode_chars` point into `body` as typed: char, position, Unicode name, replacement or None.
    """
    body = body or ""
    info = encoding.analyze(sample_text(body, shop, discount_mode=discount_mode, discount_code=discount_code))
    first = encoding.analyze(sample_text(body, shop, discount_mode=discount_mode, discount_code=discount_code,
                                         first_message=True))
    replacements = dict(encoding.suggest_replacements(body))
    culprits = [{"char": char, "position": position, "name": _char_name(char),
                 "replacement": replacements.get(char)}
                for char, position in encoding.analyze(body).unicode_chars]
    safe = encoding.gsm_safe(body)
    offer = safe if safe != body and any(c["replacement"] is not None for c in culprits) else None
    safe_info = encoding.analyze(sample_text(safe, shop, discount_mode=discount_mode,
                                             discount_code=discount_code)) if offer is not None else None
    price = price_per_segment(shop)
    return {
        "characters": info.units,
        "segments": info.segments,
        "encoding": info.encoding,
        "encoding_label": "Unicode (UCS-2)" if info.encoding == "ucs2" else "GSM-7",
        "per_segment": info.per_segment,
        "remaining": info.remaining,
        "unicode_chars": culprits,
        "unicode_from_tags": info.encoding == "ucs2" and not culprits,
        "highlighted": _highlight(body, {c["char"] for c in culprits}),
        "replacement": offer,
        "replacement_encoding": safe_info.encoding if safe_info else None,
        "replacement_segments": safe_info.segments if safe_info else None,
        "urls": len(find_urls(body)),
        "short_url_length": short_url_length(),
        "first_message_segments": first.segments,
        "first_message_characters": first.units,
        "price_per_segment": price,
        "home_country": home_country(shop),
        "home_country_name": prices.COUNTRY_NAMES.get(home_country(shop), home_country(shop)),
        "cost_per_message": price * info.segments,
        "cost_first_message": price * first.segments,
        "too_long": first.segments > defaults.CAMPAIGN_BODY_MAX_SEGMENTS,
    }


def estimated_cost(analysed: Mapping, sendable: int, by_country: Mapping | None = None) -> Decimal:
    """Estimated cost of a send: each recipient's country price (kinnekt/sms/prices.py) times the message's
    segments; without the recipients' countries, the per-message cost times the recipients who would get it."""
    if by_country and sum(by_country.values()) == max(0, int(sendable or 0)):
        home = analysed.get("home_country")
        counts: dict[str | None, int] = {}
        for country, count in by_country.items():  # a number of no known country is priced as the shop's own
            counts[country or home] = counts.get(country or home, 0) + count
        return prices.estimated_cost(analysed["segments"], counts)
    return analysed["cost_per_message"] * max(0, int(sendable or 0))


def _char_name(char: str) -> str:
    try:
        return " + ".join(unicodedata.name(c).title() for c in char)
    except ValueError:
        return f"U+{ord(char[0]):04X}"


def _highlight(body: str, culprits: set[str]) -> list[tuple[str, bool]]:
    """`body` as (text, forces_unicode) runs, so the template can mark each culprit where it stands."""
    runs: list[tuple[str, bool]] = []
    for _, atom in encoding._atoms(body):  # surrogate pairs stay whole
        flagged = atom in culprits
        if runs and runs[-1][1] == flagged and not flagged:
            runs[-1] = (runs[-1][0] + atom, False)
        else:
            runs.append((atom, flagged))
    return runs


# ---------------------------------------------------------------------------------------------- validation

def _get_list(form: Mapping, key: str) -> list[str]:
    if hasattr(form, "getlist"):
        values = form.getlist(key)
    else:
        value = form.get(key)
        values = value if isinstance(value, (list, tuple)) else ([] if value is None else [value])
    return [str(v).strip() for v in values if str(v).strip()]


def check_name(form: Mapping, errors: dict[str, str], noun: str) -> str:
    """The posted name with its spaces tidied; an error under "name" when it is empty or too long."""
    name = " ".join(form_value(form, "name").split())
    if not name:
        errors["name"] = f"Give the {noun} a name."
    elif len(name) > _NAME_MAX:
        errors["name"] = f"Keep the name to {_NAME_MAX} characters."
    return name


def form_value(form: Mapping, key: str) -> str:
    """One posted field as a string ("" when missing; the first of several)."""
    value = form.get(key)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else ""
    return "" if value is None else str(value)


def _ids(raw: Iterable[str]) -> tuple[list[int], bool]:
    ids, bad = [], False
    for value in raw:
        number = record_id(value)
        if number is None:
            bad = True
        elif number not in ids:
            ids.append(number)
    return ids, bad


def shop_zone(shop) -> ZoneInfo:
    """The shop's time zone (UTC when it is unknown)."""
    try:
        return ZoneInfo(shop.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_send_time(date_text: str, time_text: str, zone: ZoneInfo) -> tuple[dt.datetime | None, str | None]:
    """A wall-clock date and time in `zone` as a UTC instant, or why it cannot be one.

    A time skipped when clocks go forward (a DST gap) does not exist there: refused, naming the first valid
    time. A time that happens twice when clocks go back (an overlap) is the first of the two.
    """
    date_text, time_text = date_text.strip(), time_text.strip()
    if not date_text or not time_text:
        return None, "Choose a date and a time."
    if not _DATE.fullmatch(date_text) or not _TIME.fullmatch(time_text):
        return None, "Enter the date as YYYY-MM-DD and the time as HH:MM."
    try:
        naive = dt.datetime.fromisoformat(f"{date_text}T{int(time_text.split(':')[0]):02d}:{time_text.split(':')[1]}")
    except ValueError:
        return None, "That date or time does not exist."
    local = naive.replace(tzinfo=zone, fold=0)
    instant = local.astimezone(dt.timezone.utc)
    if instant.astimezone(zone).replace(tzinfo=None) != naive:
        after = instant.astimezone(zone)  # the same distance past the change, on the clock after it
        return None, (f"{naive:%H:%M} does not exist on {naive:%b} {naive.day} in {zone.key}: the clocks go forward "
                      f"then. Choose a time outside the skipped hour, such as {after:%H:%M}.")
    return instant, None


def validate(form: Mapping, *, session: OrmSession, shop, now: dt.datetime | None = None,
             draft: bool = False) -> tuple[dict, dict[str, str]]:
    """Check a posted composer form: the campaign's values, and an error per field that is wrong.

    A draft may still lack its segments and send time (scheduling asks for them); everything given must
    be right either way. Nothing is written: the caller saves `values` only when `errors` is empty.
    Fields: name, body, include, exclude (segment ids), send (now | later), send_date, send_time,
    recipient_local_time, discount_mode, discount_code, discount_kind, discount_value, repeat (none | weekly |
    monthly), repeat_until (YYYY-MM-DD, optional: the last day a run may happen, in the shop's zone), cap_choice
    ("up_to_cap" or absent).
    """
    now = now or utcnow()
    errors: dict[str, str] = {}

    name = check_name(form, errors, "campaign")

    body = normalize_tags(form_value(form, "body").replace("\r\n", "\n"))
    unknown = [tag for tag in tags_in(body) if tag not in MERGE_TAGS]
    if not body.strip():
        errors["body"] = "Write the message."
    elif unknown:
        errors["body"] = _unknown_tags_message(unknown)

    include_ids, bad_include = _ids(_get_list(form, "include"))
    exclude_ids, bad_exclude = _ids(_get_list(form, "exclude"))
    known = set()
    if include_ids or exclude_ids:
        known = set(session.scalars(select(Segment.id).where(
            Segment.shop_id == shop.id, Segment.id.in_(include_ids + exclude_ids))))
    if bad_include or any(i not in known for i in include_ids):
        errors["include"] = "Choose segments of this shop (one of them no longer exists)."
    elif not include_ids and not draft:
        errors["include"] = "Choose at least one segment to send to."
    if bad_exclude or any(i not in known for i in exclude_ids):
        errors["exclude"] = "Choose segments of this shop (one of them no longer exists)."
    elif set(include_ids) & set(exclude_ids):
        errors["exclude"] = "A segment cannot be both included and excluded."

    send = form_value(form, "send") or "later"
    send_now = send == "now"
    send_at = None
    if send not in ("now", "later"):
        errors["send_at"] = "Choose Send now or a date and time."
    elif not send_now:
        date_text, time_text = form_value(form, "send_date"), form_value(form, "send_time")
        if draft and not date_text.strip() and not time_text.strip():
            pass
        else:
            send_at, problem = local_send_time(date_text, time_text, shop_zone(shop))
            if problem:
                errors["send_at"] = problem
            elif send_at <= now:
                errors["send_at"] = "Choose a time in the future."
    recipient_local_time = (not send_now) and form_value(form, "recipient_local_time") in ("1", "on", "true", "yes")
    repeat, repeat_until = _repeat(form, errors, send_now=send_now, send_at=send_at, zone=shop_zone(shop))

    discount = _discount(form, errors)
    if ("body" not in errors and "discount_mode" not in errors and "{discount_code}" in body
            and discount["discount_mode"] == "none"):
        errors["body"] = "The message uses {discount_code}: choose a discount, or remove the tag."
    if "body" not in errors and body.strip():
        size = analysis(body, shop, discount_mode=discount["discount_mode"], discount_code=discount["discount_code"])
        if size["too_long"]:
            errors["body"] = (f"The message is {size['first_message_segments']} SMS segments long with the footer; "
                              f"keep it to {defaults.CAMPAIGN_BODY_MAX_SEGMENTS}.")

    values = {
        "name": name, "body": body, "include_segment_ids": include_ids, "exclude_segment_ids": exclude_ids,
        "send_now": send_now, "send_at": send_at, "recipient_local_time": recipient_local_time, **discount,
        "repeat": repeat, "repeat_until": repeat_until,
        # Send only as far as the plan's cap allows (kinnekt.billing.allowance), when the merchant ticked it.
        "cap_choice": "up_to_cap" if form_value(form, "cap_choice") == "up_to_cap" else None,
    }
    return values, errors


REPEATS = ("none", "weekly", "monthly")
"""How often a campaign may repeat (kinnekt.campaigns.recurrence has the rule and the words)."""


def _repeat(form: Mapping, errors: dict[str, str], *, send_now: bool, send_at: dt.datetime | None,
            zone: ZoneInfo) -> tuple[str, dt.date | None]:
    """The Repeat choice and its optional end date, with an error per field that is wrong."""
    repeat = form_value(form, "repeat").strip() or "none"
    if repeat not in REPEATS:
        errors["repeat"] = "Choose Does not repeat, Weekly or Monthly."
        return "none", None
    if repeat == "none":
        return "none", None
    if send_now:
        errors["repeat"] = "A campaign sent now cannot repeat: schedule its first run for a date and time."
    text = form_value(form, "repeat_until").strip()
    if not text:
        return repeat, None
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        until = dt.date.fromisoformat(text)
    except ValueError:
        errors["repeat_until"] = "Enter the end date as YYYY-MM-DD."
        return repeat, None
    if send_at is not None and send_at.astimezone(zone).date() > until:
        errors["repeat_until"] = "The end date is before the first run."
    return repeat, until


def warnings(values: Mapping) -> list[str]:
    """Things that are allowed but probably not meant (a discount the message never mentions)."""
    found = []
    if values.get("discount_mode", "none") != "none" and "{discount_code}" not in (values.get("body") or ""):
        found.append("The campaign has a discount, but the message does not include {discount_code}: "
                     "recipients will not see their code.")
    return found


def _unknown_tags_message(unknown: list[str]) -> str:
    names = ", ".join("{" + tag + "}" for tag in unknown)
    hints = [f"{{{known}}}" for tag in unknown for known in MERGE_TAGS if tag.lower().strip("_ ") == known]
    known_list = ", ".join("{" + tag + "}" for tag in MERGE_TAGS)
    hint = f" Did you mean {', '.join(hints)}?" if hints else f" Use {known_list}."
    return f"Unknown merge tag {names}.{hint}"


def check_discount(form: Mapping, errors: dict[str, str]) -> dict:
    """The discount fields of a form (`discount_mode`, `discount_code`, `discount_kind`, `discount_value`) checked
    as the composer checks them: the clean values, each problem added to `errors` by field (the flow editor's
    messages use this too)."""
    return _discount(form, errors)


def _discount(form: Mapping, errors: dict[str, str]) -> dict:
    mode = form_value(form, "discount_mode") or "none"
    out = {"discount_mode": mode, "discount_code": None, "discount_kind": None, "discount_value": None}
    if mode not in DISCOUNT_MODES:
        errors["discount_mode"] = "Choose no discount, one code for everyone, or a unique code per recipient."
        out["discount_mode"] = "none"
        return out
    if mode == "none":
        return out
    code = form_value(form, "discount_code").strip()
    if mode == "shared":
        try:
            out["discount_code"] = check_code(code)
        except DiscountInputError:
            errors["discount_code"] = ("Enter the code recipients type at checkout (1–255 characters, one line)."
                                       if not code else "A code is one line of at most 255 characters.")
    elif code:
        if _PREFIX.fullmatch(code):
            out["discount_code"] = code.upper()
        else:
            errors["discount_code"] = "A prefix is 1–20 letters or digits (codes look like PREFIX-7KQ2-XM4P)."
    kind = form_value(form, "discount_kind")
    if kind not in DISCOUNT_KINDS:
        errors["discount_kind"] = "Choose a percentage or a fixed amount."
    else:
        out["discount_kind"] = kind
    raw = form_value(form, "discount_value").strip().replace(",", ".").rstrip("%")
    try:
        value = Decimal(raw)
        if not value.is_finite():
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        errors["discount_value"] = "Enter how much the code takes off, as a number."
        return out
    if value <= 0:
        errors["discount_value"] = "The discount must be more than 0."
    elif kind == "percent" and value > 100:
        errors["discount_value"] = "A percentage can be at most 100."
    elif value >= Decimal("1000000"):  # before quantize: a 30-digit amount has no room for two decimals
        errors["discount_value"] = "That discount is too large."
    elif value != value.quantize(Decimal("0.01")):
        errors["discount_value"] = "Use at most two decimals."
    else:
        out["discount_value"] = value.quantize(Decimal("0.01"))
    return out


# ---------------------------------------------------------------------------------------------- names

def subject_of(body: str, limit: int = 40) -> str:
    """A short subject from a message: its first line without tags, links or a leading "Hi {first_name}"."""
    cleaned = (" ".join(_URL.sub("", _TAG.sub("", _GREETING.sub("", line))).split()).strip(" ,.;:!-")
               for line in (body or "").splitlines())
    first = next((line for line in cleaned if line), "")
    if len(first) <= limit:
        return first
    cut = first[:limit].rsplit(" ", 1)[0] if " " in first[:limit] else first[:limit]
    return cut.strip(" ,.;:!-")


def suggested_name(subject: str, segment_names: Iterable[str]) -> str:
    """A campaign name like "Spring sale - VIP customers" (two segments at most, then "+N")."""
    names = [n for n in segment_names if n]
    audience = ", ".join(names[:2]) + (f" +{len(names) - 2}" if len(names) > 2 else "")
    subject = " ".join((subject or "").split())
    return " - ".join(part for part in (subject, audience) if part)[:_NAME_MAX]


def send_test(session: OrmSession, shop: Shop, campaign_or_values, phone: str) -> Message:
    """Send the campaign's message once to `phone` (kind "test", no campaign: never in statistics).

    A test to a US number is held like a campaign (kinnekt.sms.registration.us_block_reason): ValueError with the
    reason, nothing queued."""
    from kinnekt.sms import registration
    from kinnekt.sms.outgoing import queue_message
    from kinnekt.subscribers.phones import is_us_number, normalise
    if isinstance(campaign_or_values, Campaign):
        body, mode, code = (campaign_or_values.body, campaign_or_values.discount_mode,
                            campaign_or_values.discount_code)
    else:
        values = dict(campaign_or_values)
        body, mode, code = values.get("body") or "", values.get("discount_mode") or "none", values.get("discount_code")
    info = normalise(phone)  # raises InvalidPhone (a ValueError) with the reason
    number = info.e164
    if is_us_number(number, info.country):
        blocked = registration.us_block_reason(session, shop.id)
        if blocked:
            raise ValueError(f"A test to a US number cannot go out yet. {blocked}")
    subscriber = session.scalar(select(Subscriber).where(Subscriber.shop_id == shop.id, Subscriber.phone == number))
    sample_code = None
    if mode == "shared":
        sample_code = code
    elif mode == "unique":
        from kinnekt.shopify.discounts import generate_codes
        sample_code = generate_codes(1, prefix=(code or "").strip().upper())[0]
    text = render(body, shop=shop, subscriber=subscriber, discount_code=sample_code, first_message=True)
    return queue_message(session, shop, None, text, kind="test", to_phone=number)
