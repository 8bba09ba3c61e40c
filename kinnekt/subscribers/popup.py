"""The storefront mobile popup: its settings (kept in Shop.popup_settings), the disclosure, and signing up by it.

Kinnekt keeps what the popup says (headline, body, button, the optional fields) and the consent statement; when
and where it opens and its colours are the app embed's settings in the theme editor (extensions/kinnekt-theme).

A sign-up from the popup is always double opt-in, whatever the shop's setting: a web form cannot prove
the number belongs to the person typing it, so the number must answer the confirmation text first.
The merchant may switch on optional fields for profile properties (birthday, language); their answers are
kept only on a sign-up that is still waiting for its confirmation (a new one, or one not confirmed yet), so
that typing someone else's number never changes a subscriber's profile.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.db import utcnow
from kinnekt.models import Shop, Subscriber
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.subscribers import optin, phones, properties, signup_limits

SUCCESS_MESSAGE = ("Reply Y to the text we just sent to confirm your subscription. "
                   "Already subscribed? Then there is nothing more to do.")
"""What the popup says after a sign-up (the same for every number, so it reveals nobody's status)."""

TOO_MANY_ATTEMPTS = "Too many sign-up attempts. Try again later."
"""The popup's answer over a limit (one wording for the IP and the number limits, known numbers or not)."""

LIMITS = {"headline": 80, "body": 300, "button": 30}
"""Longest headline, body text and button label, in characters."""

OPTIONAL_FIELDS = {"ask_birthday": "birthday", "ask_language": "language"}
"""Popup setting that switches a field on -> the built-in profile property the field fills."""
MAX_LANGUAGE = 64


@dataclass(frozen=True)
class PopupSettings:
    """What the merchant chose for the popup."""

    enabled: bool = False
    headline: str = "Get 10% off your first order"
    body: str = "Join our text list for exclusive offers and early access to sales."
    button: str = "Sign up"
    ask_birthday: bool = False
    ask_language: bool = False

    @property
    def asked(self) -> list[str]:
        """The profile properties the popup asks for (optional fields the merchant switched on)."""
        return [name for setting, name in OPTIONAL_FIELDS.items() if getattr(self, setting)]

    def as_json(self) -> dict:
        """The JSON stored in Shop.popup_settings."""
        return asdict(self)


class SignupError(ValueError):
    """A popup sign-up that cannot be accepted; `field` says which input it is about (None: the whole form)."""

    def __init__(self, message: str, field: str | None = None, status: int = 422):
        super().__init__(message)
        self.field = field
        self.status = status


def settings_for(shop: Shop) -> PopupSettings:
    """The shop's popup settings, with defaults for anything not chosen yet."""
    stored = shop.popup_settings or {}
    base = PopupSettings()
    values = {}
    for name, default in asdict(base).items():
        value = stored.get(name, default)
        values[name] = value if isinstance(value, type(default)) else default
    return PopupSettings(**values)


def validate(form: Mapping) -> tuple[PopupSettings, dict[str, str]]:
    """Popup settings from the settings form, and errors per field (nothing is saved when there are any)."""
    errors: dict[str, str] = {}
    texts = {}
    for name, label in (("headline", "Headline"), ("body", "Body text"), ("button", "Button text")):
        value = " ".join(str(form.get(name, "")).split())
        if name != "body" and not value:
            errors[name] = f"{label} cannot be empty."
        elif len(value) > LIMITS[name]:
            errors[name] = f"{label} can be at most {LIMITS[name]} characters (it has {len(value)})."
        texts[name] = value
    enabled = str(form.get("enabled", "")).lower() in ("1", "on", "true", "yes")
    asks = {name: str(form.get(name, "")).lower() in ("1", "on", "true", "yes") for name in OPTIONAL_FIELDS}
    return PopupSettings(enabled=enabled, **texts, **asks), errors


def save(session: OrmSession, shop: Shop, settings: PopupSettings) -> PopupSettings:
    """Store the popup settings on the shop and commit."""
    shop.popup_settings = settings.as_json()
    session.commit()
    return settings


def disclosure(shop: Shop) -> str:
    """The consent statement beside the checkbox (the wording carriers and the TCPA expect)."""
    name = shop.name or shop.domain
    return (f"By submitting, you agree to receive recurring automated marketing texts from {name} at this "
            f"number. Consent is not a condition of purchase. Msg & data rates may apply. "
            f"Reply STOP to unsubscribe, HELP for help.")


def _answers(settings: PopupSettings, form: Mapping[str, str] | None) -> dict:
    """The optional fields' answers (only those the popup asks), parsed; SignupError names a bad one."""
    answers = {}
    for name in settings.asked:
        raw = str((form or {}).get(name, "") or "")[:1000]
        try:
            value = properties.parse_value(properties.BUILT_INS[name], raw)
        except properties.PropertyError:
            message = "Enter your birthday as a date." if name == "birthday" else "Enter a language."
            raise SignupError(message, field=name) from None
        if name == "language" and value is not None and len(value) > MAX_LANGUAGE:
            raise SignupError(f"A language has at most {MAX_LANGUAGE} characters.", field=name)
        if value is not None:
            answers[name] = raw
    return answers


def sign_up(session: OrmSession, shop: Shop, phone_raw: str, *, consented: bool, ip: str | None,
            country: str | None = None, now: dt.datetime | None = None,
            fields: Mapping[str, str] | None = None) -> Subscriber:
    """Sign a number up from the popup: a pending subscriber (source Mobile Popup) and the confirmation text.

    `country` (the storefront's market, `Shopify.country`) reads a number typed without its country code;
    `ip` is the shopper's address, None when it cannot be told (such sign-ups share one allowance).

    Raises SignupError when the popup is off, the box is not ticked, or the number is invalid (nothing is
    kept), and with status 429 when the IP address or the number made too many attempts lately; the
    limits count every attempt alike, whether the number is on the list or not (signup_limits). The
    same number again within the resend cool-down is answered as a success without a second text; a
    number that opted out stays opted out and is only asked to reply Y (kinnekt.subscribers.optin).
    `fields` holds the optional fields' answers (birthday as YYYY-MM-DD, language), kept on a sign-up still
    waiting for its confirmation; a bad one is a SignupError naming it, and nothing is kept.
    """
    settings = settings_for(shop)
    if not settings.enabled:
        raise SignupError("Sign-up is closed.", status=404)
    if not (phone_raw or "").strip():
        raise SignupError("Enter your mobile number.", field="phone")
    if not consented:
        raise SignupError("Tick the box to agree to receive texts.", field="consent")
    try:
        region = country.upper() if country and len(country) == 2 and country.isalpha() else None
        info = phones.normalise(phone_raw, region, prefer_zone=shop.timezone)
    except phones.InvalidPhone as exc:
        raise SignupError(str(exc), field="phone") from None
    answers = _answers(settings, fields)
    now = now or utcnow()
    if not signup_limits.admit(session, shop, ip=ip, phone=info.e164, now=now):
        raise SignupError(TOO_MANY_ATTEMPTS, status=429)
    existing = session.scalar(select(Subscriber).where(Subscriber.shop_id == shop.id, Subscriber.phone == info.e164))
    if existing is not None and existing.status == SubscriberStatus.PENDING and existing.consent_at is not None and \
            _aware(existing.consent_at) > now - dt.timedelta(seconds=defaults.POPUP_RESEND_COOLDOWN_SECONDS):
        return _keep_answers(session, existing, answers)
    subscriber = optin.subscribe(session, shop, info.e164, source="mobile_popup", consent_text=disclosure(shop),
                                 consent_ip=ip, double_opt_in=True)
    return _keep_answers(session, subscriber, answers)


def _keep_answers(session: OrmSession, subscriber: Subscriber, answers: Mapping[str, str]) -> Subscriber:
    """Save the optional fields' answers on a sign-up waiting for its confirmation (commits). A pending
    subscriber is in no segment; its confirmation re-checks it with these values."""
    if answers and subscriber.status == "pending":
        properties.set_values(session, subscriber, answers)
        session.commit()
    return subscriber


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
