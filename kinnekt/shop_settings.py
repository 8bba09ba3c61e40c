"""Shop SMS settings: validate a settings form (errors per field) and save it, with the side effects of a change.

The Settings page posts one card at a time; each card is a *section* (SECTIONS) naming the fields it
owns. `save` validates every field of the section first and changes nothing when any is wrong.
Check boxes follow HTML: an unchecked box is not posted, so a missing boolean field means off.
Times are "HH:MM" (an <input type="time">) stored as minutes after midnight. Quiet hours are the
window in which nothing is sent (default 9 PM to 8 AM, so texts go out 8 AM to 9 PM in each
subscriber's time zone); the window may wrap midnight.
"""
from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.models import Shop
from kinnekt.numbers import whole_number

log = logging.getLogger(__name__)

SECTIONS: dict[str, tuple[str, ...]] = {
    "sender": ("sender",),
    "quiet_hours": ("quiet_hours_enabled", "quiet_hours_start", "quiet_hours_end"),
    "compliance": ("compliance_footer", "help_text", "double_opt_in"),
    "sending": ("smart_sending_hours", "suppression_threshold"),
    "attribution": ("attribution_window_days", "checkout_collection"),
}
"""The Settings page's cards and the Shop columns each one edits."""

BOOLEAN_FIELDS = frozenset({"quiet_hours_enabled", "double_opt_in", "checkout_collection"})
TRUE_WORDS = frozenset({"on", "true", "1", "yes"})
FALSE_WORDS = frozenset({"", "off", "false", "0", "no"})

E164_DIGITS = re.compile(r"^[1-9][0-9]{7,14}$")
ALPHANUMERIC_SENDER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 ]*[A-Za-z0-9])?$")
TIME = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])(?::00)?$")
STOP_WORD = re.compile(r"\bSTOP\b", re.IGNORECASE)


@dataclass
class Saved:
    """What `save` did: `errors` (field -> message; nothing saved when not empty) or the fields it changed."""

    errors: dict[str, str] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    attribution_recompute: str | None = None  # "queued", "unavailable" or None (window unchanged)

    @property
    def ok(self) -> bool:
        """True when the form was valid and saved."""
        return not self.errors


class SettingError(ValueError):
    """A bad value for one setting."""


# --- one field at a time ------------------------------------------------------------------------------

def clean_sender(raw: str) -> str | None:
    """The sender as stored: "+<digits>" for a phone number, the id itself for a name; None means the app's default.

    A phone number is E.164 (8 to 15 digits, spaces, dashes, dots and brackets allowed while typing); a name
    (alphanumeric sender id) is 1 to 11 letters, digits and inner spaces, with at least one letter.
    """
    text = (raw or "").strip()
    if not text:
        return None
    compact = re.sub(r"[\s().\-]", "", text)
    if re.fullmatch(r"\+?[0-9]+", compact):
        digits = compact.lstrip("+")
        if not E164_DIGITS.match(digits):
            raise SettingError("A sender number must be a full phone number in international format, "
                               "such as +15550100200 (8 to 15 digits, country code first).")
        return "+" + digits
    if len(text) > defaults.SENDER_ID_MAX_LENGTH:
        raise SettingError(f"A sender name can have at most {defaults.SENDER_ID_MAX_LENGTH} characters "
                           f"(this one has {len(text)}).")
    if not ALPHANUMERIC_SENDER.match(text):
        raise SettingError("A sender name can only use letters, digits and spaces (no symbols or accents).")
    if not re.search(r"[A-Za-z]", text):
        raise SettingError("A sender name needs at least one letter; a numeric sender must be a full phone "
                           "number such as +15550100200.")
    return text


def clean_time(raw: str) -> int:
    """Minutes after midnight of an "HH:MM" time."""
    match = TIME.match((raw or "").strip())
    if not match:
        raise SettingError("Enter a time such as 21:00.")
    return int(match.group(1)) * 60 + int(match.group(2))


def clean_footer(raw: str) -> str:
    """The compliance footer: required, short, and telling subscribers to reply STOP."""
    text = " ".join((raw or "").split())
    if not text:
        raise SettingError("Enter the compliance footer; carriers require it on first messages.")
    if len(text) > defaults.COMPLIANCE_FOOTER_MAX_LENGTH:
        raise SettingError(f"Keep the footer to {defaults.COMPLIANCE_FOOTER_MAX_LENGTH} characters "
                           f"(it has {len(text)}).")
    if not STOP_WORD.search(text):
        raise SettingError("The footer must tell subscribers how to opt out, with the word STOP "
                           "(for example “Reply STOP to unsubscribe”).")
    return text


def clean_help_text(raw: str) -> str:
    """The HELP reply: required and at most HELP_TEXT_MAX_LENGTH characters."""
    text = (raw or "").strip()
    if not text:
        raise SettingError("Enter the reply sent when someone texts HELP.")
    if len(text) > defaults.HELP_TEXT_MAX_LENGTH:
        raise SettingError(f"Keep the help reply to {defaults.HELP_TEXT_MAX_LENGTH} characters (it has {len(text)}).")
    return text


def clean_whole_number(raw: str, low: int, high: int, what: str, *, zero_is_off: bool = False) -> int:
    """A whole number within [low, high] (or 0 when `zero_is_off`)."""
    value = whole_number(raw or "", 999_999)
    if value is None:
        raise SettingError(f"Enter {what} as a whole number" + (" (0 turns it off)." if zero_is_off else "."))
    if zero_is_off and value == 0:
        return 0
    if not low <= value <= high:
        raise SettingError(f"Enter {what} from {low} to {high}" + (", or 0 to turn it off." if zero_is_off else "."))
    return value


def clean_boolean(raw) -> bool:
    """A check box's value: posted ("on") or missing."""
    text = str(raw if raw is not None else "").strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise SettingError("Choose on or off.")


_CLEANERS = {
    "sender": clean_sender,
    "quiet_hours_start": clean_time,
    "quiet_hours_end": clean_time,
    "compliance_footer": clean_footer,
    "help_text": clean_help_text,
    "smart_sending_hours": lambda raw: clean_whole_number(raw, 1, defaults.SMART_SENDING_MAX_HOURS, "the hours",
                                                          zero_is_off=True),
    "suppression_threshold": lambda raw: clean_whole_number(raw, 1, defaults.SUPPRESSION_MAX_MESSAGES,
                                                            "the number of messages", zero_is_off=True),
    "attribution_window_days": lambda raw: clean_whole_number(raw, defaults.ATTRIBUTION_WINDOW_MIN_DAYS,
                                                              defaults.ATTRIBUTION_WINDOW_MAX_DAYS, "the days"),
}


# --- a section ----------------------------------------------------------------------------------------

def validate(form: Mapping, section: str) -> tuple[dict, dict[str, str]]:
    """The section's values from a posted form, and an error message per bad field (values then incomplete)."""
    if section not in SECTIONS:
        raise KeyError(section)
    values, errors = {}, {}
    for name in SECTIONS[section]:
        raw = _last(form, name)
        try:
            if name in BOOLEAN_FIELDS:
                values[name] = clean_boolean(raw)
            else:
                values[name] = _CLEANERS[name]("" if raw is None else raw)
        except SettingError as exc:
            errors[name] = str(exc)
    if (section == "quiet_hours" and not errors and values["quiet_hours_enabled"]
            and values["quiet_hours_start"] == values["quiet_hours_end"]):
        errors["quiet_hours_end"] = "Quiet hours must end at a different time than they start."
    return values, errors


def save(session: OrmSession, shop: Shop, form: Mapping, section: str) -> Saved:
    """Validate and save one section of the shop's settings; nothing is changed when any field is wrong.

    Turning checkout collection on creates the Checkout auto segment; a new attribution window queues
    a recomputation of past orders' attribution (when the attribution module is installed).
    """
    values, errors = validate(form, section)
    if errors:
        return Saved(errors=errors)
    changed = {name for name, value in values.items() if getattr(shop, name) != value}
    for name in changed:
        setattr(shop, name, values[name])
    session.commit()
    result = Saved(changed=changed)
    if "checkout_collection" in changed and shop.checkout_collection:
        from kinnekt.segments.auto import ensure_checkout_segment
        ensure_checkout_segment(session, shop)
    if "attribution_window_days" in changed:
        result.attribution_recompute = request_attribution_recompute(shop)
    return result


def attribution_available() -> bool:
    """True when kinnekt.campaigns.attribution (with `recompute`) is part of this install."""
    try:
        return importlib.util.find_spec("kinnekt.campaigns.attribution") is not None
    except ModuleNotFoundError:
        return False


def request_attribution_recompute(shop: Shop) -> str:
    """Queue the recomputation of the shop's attributed orders; "queued", or "unavailable" without the module."""
    if not attribution_available():
        log.info("attribution window of shop %s changed; no attribution module to recompute with", shop.id)
        return "unavailable"
    from kinnekt.campaigns import tasks as campaign_tasks
    campaign_tasks.enqueue_recompute_attribution(shop.id)
    return "queued"


def _last(form: Mapping, name: str):
    """The last posted value of a field (a check box may follow a hidden "off" of the same name)."""
    getlist = getattr(form, "getlist", None)
    if getlist is not None:
        posted = getlist(name)
        return posted[-1] if posted else None
    return form.get(name)
