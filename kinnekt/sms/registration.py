"""The US carrier registration of a shop's own numbers, and what it lets through.

A US toll-free number needs a **toll-free verification**, a US long code a **10DLC brand and campaign**, before
the carriers let marketing texts from it through. The merchant fills one form (Settings, prefilled from Shopify
and the shop's keywords and popup: kinnekt.shopify.registration_profile); `validate` checks it, `submit` sends it
to Vonage (kinnekt.sms.registration_client) and keeps it as the number's `SenderRegistration` (pending), `refresh`
asks Vonage for its status (the periodic job `kinnekt.sms.tasks.poll_registrations`): approved, or rejected with
the reason, after which the merchant may correct and submit it again.

**The gate** (`us_block_reason`): a shop that has at least one `SenderNumber` row (it sends from numbers of its
own) may text US numbers only once one of its active US numbers has an approved registration. A shop without any
sender row keeps sending through the environment's sender (`VONAGE_SENDER`) as before: the demo store and shops
that have not set up a number of their own are not gated. Campaign starts (kinnekt.campaigns.lifecycle), switching
a flow on (kinnekt.flows.service), a flow's send step (kinnekt.flows.engine) and test sends
(kinnekt.campaigns.composer.send_test) ask it; which numbers are US ones: kinnekt.subscribers.phones.is_us_number.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from kinnekt.db import utcnow
from kinnekt.models.sender import (RegistrationKind, RegistrationStatus, SenderKind, SenderNumber,
                                   SenderRegistration, SenderStatus)
from kinnekt.sms.registration_client import RegistrationApiError, RegistrationClient

log = logging.getLogger(__name__)

ENTITY_TYPES = {
    "PRIVATE_PROFIT": "Privately held company",
    "PUBLIC_PROFIT": "Publicly traded company",
    "NON_PROFIT": "Non-profit organisation",
    "GOVERNMENT": "Government",
    "SOLE_PROPRIETOR": "Sole proprietor",
}
"""The legal forms both registrations know (Vonage's `entity_type`)."""

VOLUMES = ("1000", "10000", "100000", "250000", "500000", "1000000")
"""Estimated texts per month the form offers."""

TEXT_MAX = 500
"""Longest one-line field (Vonage's limit on the TFN registration's fields)."""
LONG_MAX = 1000
"""Longest sample message, use-case summary and opt-in description."""
LONG_MIN = 20
"""Shortest sample message and opt-in description: the carriers reject vague ones."""
SUMMARY_MIN = 40
"""Shortest use-case summary: it is the 10DLC campaign's `description`, which Vonage wants of 40 characters at
least (docs/us-registration.md)."""


@dataclass(frozen=True)
class Field:
    """One field of the form: its name, label, kind (text, email, url, tel, textarea, select) and help."""

    name: str
    label: str
    kind: str = "text"
    help: str | None = None
    required: bool = True


FIELDS = (
    Field("legal_name", "Legal business name", help="As registered with the IRS (or your country's registry)."),
    Field("brand_name", "Brand name (doing business as)", required=False),
    Field("entity_type", "Legal form", "select"),
    Field("ein", "EIN (tax id)", help="Nine digits, like 12-3456789. A sole proprietor may leave it empty.",
          required=False),
    Field("street", "Street address"),
    Field("city", "City"),
    Field("state", "State or province", help="Two letters, like NY."),
    Field("postal_code", "ZIP or postal code"),
    Field("country", "Country", help="Two letters, like US."),
    Field("website", "Website", "url"),
    Field("privacy_policy_url", "Privacy policy web address", "url",
          help="The public page of your privacy policy; on Shopify usually https://your-store/policies/privacy-policy."),
    Field("terms_url", "Terms of service web address", "url",
          help="The public page of your terms; on Shopify usually https://your-store/policies/terms-of-service."),
    Field("contact_first_name", "Contact first name"),
    Field("contact_last_name", "Contact last name"),
    Field("contact_email", "Contact email", "email"),
    Field("contact_phone", "Contact phone", "tel", help="With the country code for numbers outside the US."),
    Field("use_case_summary", "What the texts are for", "textarea"),
    Field("sample_message_1", "Sample message 1", "textarea", help="From your keywords' replies, when they have one."),
    Field("sample_message_2", "Sample message 2", "textarea"),
    Field("opt_in_description", "How people opt in", "textarea",
          help="Taken from your keywords and your popup's consent text."),
    Field("monthly_volume", "Texts per month (estimate)", "select"),
)
"""The registration form, in order (the template draws it from this)."""

_EIN = re.compile(r"\d{2}-?\d{7}")
_STATE = re.compile(r"[A-Z]{2}")
_US_ZIP = re.compile(r"\d{5}(-\d{4})?")
_POSTAL = re.compile(r"[A-Z0-9][A-Z0-9 -]{1,9}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
_HOST = re.compile(r"([A-Za-z0-9-]+\.)+[A-Za-z]{2,}")


class RegistrationError(ValueError):
    """A registration that cannot be submitted now (already waiting, approved, or Vonage refused it)."""


# ---------------------------------------------------------------------------------------------- which numbers

def kind_for(number: SenderNumber) -> RegistrationKind | None:
    """The registration a number needs: toll-free verification, 10DLC, or None (not a US phone number)."""
    if number.country != "US" or number.kind == SenderKind.ALPHANUMERIC:
        return None
    return RegistrationKind.TOLL_FREE_VERIFICATION if number.kind == SenderKind.TOLL_FREE else RegistrationKind.TEN_DLC


def us_numbers(session: OrmSession, shop_id: int) -> list[SenderNumber]:
    """The shop's active US phone numbers (those that need a registration), oldest first."""
    return list(session.scalars(select(SenderNumber).where(
        SenderNumber.shop_id == shop_id, SenderNumber.status == SenderStatus.ACTIVE, SenderNumber.country == "US",
        SenderNumber.kind != SenderKind.ALPHANUMERIC).order_by(SenderNumber.id)))


def registrations_by_number(session: OrmSession, shop_id: int) -> dict[int, SenderRegistration]:
    """The shop's registrations by sender number id."""
    rows = session.scalars(select(SenderRegistration).where(SenderRegistration.shop_id == shop_id))
    return {row.sender_number_id: row for row in rows}


def has_own_senders(session: OrmSession, shop_id: int) -> bool:
    """True when the shop has any sender row (bought, brought or released): the US gate applies to it."""
    return session.scalar(select(SenderNumber.id).where(SenderNumber.shop_id == shop_id).limit(1)) is not None


def us_block_reason(session: OrmSession, shop_id: int) -> str | None:
    """Why texts to US numbers may not go out for this shop now (in the merchant's words, saying what to do), or
    None when they may: the shop has no sender of its own (the environment's sender, as before), or one of its
    active US numbers has an approved registration."""
    if not has_own_senders(session, shop_id):
        return None
    numbers = us_numbers(session, shop_id)
    registrations = registrations_by_number(session, shop_id)
    found = [registrations[n.id] for n in numbers if n.id in registrations]
    if any(r.status == RegistrationStatus.APPROVED for r in found):
        return None
    if not numbers:
        return ("Texts to US numbers need a US number of your own with an approved carrier registration: "
                "add one in Settings.")
    if any(r.status == RegistrationStatus.PENDING for r in found):
        return ("Your US number's carrier registration is waiting for approval: texts to US numbers go out once "
                "it is approved (Settings shows its status).")
    rejected = next((r for r in found if r.status == RegistrationStatus.REJECTED), None)
    if rejected is not None:
        return (f"Your US number's carrier registration was rejected ({rejected.rejection_reason or 'no reason given'}"
                "): correct it and submit it again in Settings.")
    return ("Texts to US numbers need your US number's carrier registration (toll-free verification or 10DLC): "
            "submit it in Settings.")


# ---------------------------------------------------------------------------------------------- the form

def blank_form() -> dict[str, str]:
    """Every field empty (the form before the prefill)."""
    return {f.name: "" for f in FIELDS}


def validate(form: Mapping) -> tuple[dict[str, str], dict[str, str]]:
    """The posted form cleaned, and an error per wrong field (nothing is written here)."""
    values = {f.name: " ".join(str(form.get(f.name) or "").split()) if f.kind != "textarea"
              else str(form.get(f.name) or "").replace("\r\n", "\n").strip() for f in FIELDS}
    errors: dict[str, str] = {}
    for f in FIELDS:
        limit = LONG_MAX if f.kind == "textarea" else TEXT_MAX
        if f.required and not values[f.name]:
            errors[f.name] = f"Enter the {f.label.lower()}." if f.kind != "select" else f"Choose the {f.label.lower()}."
        elif len(values[f.name]) > limit:
            errors[f.name] = f"Keep it to {limit} characters."
        elif f.kind == "textarea" and len(values[f.name]) < _shortest(f.name):
            errors[f.name] = (f"Write at least {_shortest(f.name)} characters: the carriers reject vague "
                              "registrations.")
    if values["entity_type"] and values["entity_type"] not in ENTITY_TYPES:
        errors["entity_type"] = "Choose the legal form from the list."
    values["ein"] = values["ein"].replace(" ", "")
    if values["ein"]:
        if not _EIN.fullmatch(values["ein"]):
            errors["ein"] = "An EIN is nine digits, like 12-3456789."
        else:
            digits = values["ein"].replace("-", "")
            values["ein"] = f"{digits[:2]}-{digits[2:]}"
    elif values["entity_type"] != "SOLE_PROPRIETOR" and "entity_type" not in errors:
        errors["ein"] = "Enter the EIN (only a sole proprietor may register without one)."
    for name in ("state", "country"):
        values[name] = values[name].upper()
        if values[name] and name not in errors and not _STATE.fullmatch(values[name]):
            errors[name] = "Two letters, like NY." if name == "state" else "Two letters, like US."
    values["postal_code"] = values["postal_code"].upper()
    if values["postal_code"] and "postal_code" not in errors:
        pattern = _US_ZIP if values["country"] == "US" else _POSTAL
        if not pattern.fullmatch(values["postal_code"]):
            errors["postal_code"] = "A US ZIP code is five digits (or ZIP+4)." if values["country"] == "US" \
                else "Enter the postal code."
    for name, message in (
            ("website", "Enter the store's web address, like https://example.com."),
            ("privacy_policy_url", "Enter the address of the privacy policy page, like "
                                   "https://example.com/policies/privacy-policy."),
            ("terms_url", "Enter the address of the terms of service page, like "
                          "https://example.com/policies/terms-of-service.")):
        if values[name] and name not in errors:
            address = web_address(values[name])
            if address is None:
                errors[name] = message
            else:
                values[name] = address
    if values["contact_email"] and "contact_email" not in errors and not _EMAIL.fullmatch(values["contact_email"]):
        errors["contact_email"] = "Enter an email address, like owner@example.com."
    if values["contact_phone"] and "contact_phone" not in errors:
        phone = e164(values["contact_phone"])
        if phone is None:
            errors["contact_phone"] = "Enter a phone number, like (212) 555-0100 or +44 20 7946 0000."
        else:
            values["contact_phone"] = phone
    if values["monthly_volume"] and values["monthly_volume"] not in VOLUMES:
        errors["monthly_volume"] = "Choose an estimate from the list."
    return values, errors


def web_address(text: str) -> str | None:
    """A typed web address as an http(s) URL with a real host name (`https://` added when no scheme is given), or
    None when it is not one."""
    address = text if "://" in text else f"https://{text}"
    scheme, _, rest = address.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if scheme.lower() not in ("http", "https") or not _HOST.fullmatch(host):
        return None
    return address


def _shortest(name: str) -> int:
    """The fewest characters a long field takes."""
    return SUMMARY_MIN if name == "use_case_summary" else LONG_MIN


def e164(text: str) -> str | None:
    """A typed phone number as E.164 ("+12125550100"): ten digits are a US number; otherwise a + and 8–15
    digits. None when it is neither."""
    digits = re.sub(r"[\s().-]", "", text or "")
    if re.fullmatch(r"1?\d{10}", digits) and not digits.startswith("+"):
        return "+1" + digits[-10:]
    if re.fullmatch(r"\+[1-9]\d{7,14}", digits):
        return digits
    return None


# ---------------------------------------------------------------------------------------------- Vonage's shapes

TFN_TERMS_FIELD = "terms_and_conditions_url"
"""The `business` field of the terms' link in a TFN registration (its place is confirmed, its name is not)."""
TFN_PRIVACY_FIELD = "privacy_policy_url"
"""The `business` field of the privacy policy's link in a TFN registration (its place is confirmed, its name is not)."""


def tfn_body(number: SenderNumber, values: Mapping[str, str]) -> dict:
    """The TFN Registration API's request for the form's values and the number."""
    business = {
        "name": values["legal_name"],
        "address": {"street": values["street"], "city": values["city"], "state": values["state"],
                    "postal_code": values["postal_code"], "country": values["country"]},
        "company_website": values["website"],
        "contact": {"first_name": values["contact_first_name"], "last_name": values["contact_last_name"],
                    "email": values["contact_email"], "phone": values["contact_phone"].lstrip("+")},
        "entity_type": values["entity_type"],
    }
    if values.get("brand_name"):
        business["dba"] = values["brand_name"]
    # The reference lists a Terms link and a Privacy Policy link in `business` (after `dba`, each a valid URL of
    # at most 500 characters); the rendering read shows no field names, so these two are ours (docs/us-registration.md).
    if values.get("terms_url"):
        business[TFN_TERMS_FIELD] = values["terms_url"]
    if values.get("privacy_policy_url"):
        business[TFN_PRIVACY_FIELD] = values["privacy_policy_url"]
    if values.get("ein"):
        business["tax_id_type"], business["tax_id"] = "EIN", values["ein"]
    return {
        "business": business,
        # Not confirmed from the public reference (docs/us-registration.md): the use case's field names.
        "use_case": {"category": "MARKETING", "summary": values["use_case_summary"],
                     "message_samples": [values["sample_message_1"], values["sample_message_2"]],
                     "opt_in_workflow": values["opt_in_description"],
                     "estimated_monthly_volume": values["monthly_volume"]},
        "numbers": [number.msisdn],
    }


def brand_body(values: Mapping[str, str]) -> dict:
    """The 10DLC API's brand for the form's values."""
    body = {
        "entity_type": values["entity_type"], "display_name": values.get("brand_name") or values["legal_name"],
        "company_name": values["legal_name"], "first_name": values["contact_first_name"],
        "last_name": values["contact_last_name"], "phone": values["contact_phone"], "street": values["street"],
        "city": values["city"], "state": values["state"], "postal_code": values["postal_code"],
        "country": values["country"], "email": values["contact_email"], "website": values["website"],
        "vertical": "RETAIL",
    }
    if values.get("ein"):
        body["ein"], body["ein_issuing_country"] = values["ein"], values["country"]
    return body


OPT_OUT_KEYWORDS = "STOP,UNSUBSCRIBE,CANCEL,END,QUIT"
"""The opt-out words a campaign declares (kinnekt.subscribers.keywords honours these and more)."""
HELP_KEYWORDS = "HELP,INFO"
"""The help words a campaign declares."""


def campaign_body(values: Mapping[str, str], account_id: str) -> dict:
    """The 10DLC API's campaign (marketing texts with opt-in, opt-out and help) for the form's values, in the shape
    of Vonage's campaign object (docs/us-registration.md, "What is confirmed"): `sample_one`/`sample_two`,
    `subscriber_opt_in`/`_opt_out`/`_help`, and `message_flow_details` (which replaced `message_flow`) with the
    brand, how people consent (the storefront's signup form, on the website), the price disclosure and recurring
    texts, as the popup's consent text says (kinnekt.subscribers.popup.disclosure)."""
    return {
        "account_id": account_id, "usecase": "MARKETING", "description": values["use_case_summary"],
        "sample_one": values["sample_message_1"], "sample_two": values["sample_message_2"],
        "message_flow_details": {
            "brand_name": values.get("brand_name") or values["legal_name"],
            "consent_mechanisms": [{"method": "ONLINE_FORM", "details": values["opt_in_description"],
                                    "attachment": values["website"]}],
            "pricing_disclosure": True, "frequency": "RECURRING",
        },
        "subscriber_opt_in": True, "subscriber_opt_out": True, "subscriber_help": True,
        "opt_out_keywords": OPT_OUT_KEYWORDS, "help_keywords": HELP_KEYWORDS,
        "embedded_link": True, "embedded_phone": False, "number_pool": False, "age_gated": False,
        "direct_lending": False,
    }


APPROVED_STATUSES = frozenset({"REGISTERED", "APPROVED", "ACTIVE", "VERIFIED"})
"""Vonage statuses that mean the carriers accepted the registration (a TFN registration's REGISTERED, a 10DLC
campaign's ACTIVE)."""
REJECTED_STATUSES = frozenset({"REJECTED", "BLOCKED", "UPDATES_REQUIRED", "DECLINED", "FAILED", "SUSPENDED",
                               "EXPIRED", "TERMINATED", "CANCELED", "CANCELLED"})
"""Vonage statuses that mean the registration must be corrected (and may be submitted again)."""
TFN_REASON_FIELDS = ("rejection_reason", "status_reason", "reason", "failure_reason")
"""Where a TFN registration's reason may come (not confirmed: docs/us-registration.md)."""


def outcome(answer: Mapping) -> tuple[str, str | None]:
    """Our status for Vonage's answer about a registration, and the reason of a rejection: a campaign's reason is
    its latest `last_status_changes` entry of that status; an ACTIVE campaign whose `traffic_enabled` is false is
    in Vonage's review again after a change, so still pending."""
    status = str(answer.get("status") or "").upper()
    if status in APPROVED_STATUSES:
        if answer.get("traffic_enabled") is False:
            return RegistrationStatus.PENDING, None
        return RegistrationStatus.APPROVED, None
    if status in REJECTED_STATUSES:
        reason = _status_change_reason(answer, status) or next(
            (str(answer[k]) for k in TFN_REASON_FIELDS if answer.get(k)), None)
        if status == "UPDATES_REQUIRED":
            reason = f"changes asked for: {reason}" if reason else "changes asked for"
        return RegistrationStatus.REJECTED, (reason or status.replace("_", " ").lower())[:1000]
    return RegistrationStatus.PENDING, None


def _status_change_reason(answer: Mapping, status: str) -> str | None:
    """The reason of the latest of a campaign's `last_status_changes` (`status`, `reason`, `change_date`) that
    moved it to `status`, or None."""
    changes = [c for c in answer.get("last_status_changes") or () if isinstance(c, Mapping)
               and str(c.get("status") or "").upper() == status and c.get("reason")]
    if not changes:
        return None
    return str(max(changes, key=lambda c: str(c.get("change_date") or ""))["reason"])


# ---------------------------------------------------------------------------------------------- submit, refresh

def submit(session: OrmSession, number: SenderNumber, values: Mapping[str, str], client: RegistrationClient, *,
           now: dt.datetime | None = None) -> SenderRegistration:
    """Send the (validated) form to Vonage as the number's registration, or again after a rejection; commits.

    The row is claimed first (draft or rejected -> pending in one conditional UPDATE), so two clicks never
    submit twice; when Vonage refuses or cannot be reached the row goes back to what it was and
    RegistrationError says why."""
    now = now or utcnow()
    kind = kind_for(number)
    if kind is None:
        raise RegistrationError("Only US phone numbers need a carrier registration.")
    row = _row(session, number, kind)
    before, before_reason = row.status, row.rejection_reason
    claimed = session.execute(
        update(SenderRegistration).where(SenderRegistration.id == row.id, SenderRegistration.status.in_(
            (RegistrationStatus.DRAFT, RegistrationStatus.REJECTED)))
        .values(status=RegistrationStatus.PENDING, details=dict(values), kind=kind, submitted_at=now,
                rejection_reason=None, decided_at=None, updated_at=now)
        .execution_options(synchronize_session=False)).rowcount
    session.commit()
    session.refresh(row)
    if not claimed:
        raise RegistrationError("This number's registration is already submitted." if row.status ==
                                RegistrationStatus.PENDING else "This number's registration is approved already.")
    try:
        answer = _send(session, row, number, values, client, resubmit=before == RegistrationStatus.REJECTED)
    except RegistrationApiError as exc:
        session.rollback()
        session.execute(update(SenderRegistration).where(SenderRegistration.id == row.id)
                        .values(status=before, rejection_reason=before_reason, updated_at=utcnow())
                        .execution_options(synchronize_session=False))
        session.commit()
        session.refresh(row)
        if exc.unavailable:
            raise RegistrationError("Vonage could not be reached to submit the registration; nothing was sent. "
                                    "Try again in a moment.") from exc
        raise RegistrationError(f"Vonage refused the registration: {exc}") from exc
    status, reason = outcome(answer)
    _decide(row, status, reason, now)
    session.commit()
    return row


def _row(session: OrmSession, number: SenderNumber, kind: str) -> SenderRegistration:
    """The number's registration row, made (as a draft) when it has none; a concurrent insert is found again."""
    found = session.scalar(select(SenderRegistration).where(SenderRegistration.sender_number_id == number.id,
                                                            SenderRegistration.shop_id == number.shop_id))
    if found is not None:
        return found
    session.add(SenderRegistration(shop_id=number.shop_id, sender_number_id=number.id, kind=kind,
                                   status=RegistrationStatus.DRAFT, details={}))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
    return session.scalar(select(SenderRegistration).where(SenderRegistration.sender_number_id == number.id,
                                                           SenderRegistration.shop_id == number.shop_id))


def _send(session: OrmSession, row: SenderRegistration, number: SenderNumber, values: Mapping[str, str],
          client: RegistrationClient, *, resubmit: bool) -> dict:
    """The calls to Vonage for this kind of registration; Vonage's answer about the registration."""
    if row.kind == RegistrationKind.TOLL_FREE_VERIFICATION:
        if row.external_id:  # made before: updated, which submits it again
            return client.update_tfn_registration(row.external_id, tfn_body(number, values))
        answer = client.create_tfn_registration(tfn_body(number, values))
        row.external_id = str(answer.get("id") or "")[:128] or None
        session.commit()
        return answer
    if not row.brand_id:  # kept once made: a failed campaign never makes a second brand
        brand = client.create_brand(brand_body(values))
        row.brand_id = str(brand.get("brand_id") or "")[:128] or None
        session.commit()
        if not row.brand_id:
            raise RegistrationApiError("Vonage gave no brand id.", 502)
    if resubmit and row.external_id:
        return client.update_campaign(row.brand_id, row.external_id, campaign_body(values, client.api_key))
    if row.external_id:  # made before, but linking the number failed: link it now
        answer = client.get_campaign(row.brand_id, row.external_id)
    else:
        answer = client.create_campaign(row.brand_id, campaign_body(values, client.api_key))
        row.external_id = str(answer.get("campaign_id") or "")[:128] or None
        session.commit()
        if not row.external_id:
            raise RegistrationApiError("Vonage gave no campaign id.", 502)
    client.link_number(row.brand_id, row.external_id, number.msisdn, number.country)
    return answer


def _decide(row: SenderRegistration, status: str, reason: str | None, now: dt.datetime) -> None:
    row.status, row.checked_at = status, now
    if status in (RegistrationStatus.APPROVED, RegistrationStatus.REJECTED):
        row.decided_at = now
    row.rejection_reason = reason if status == RegistrationStatus.REJECTED else None


def refresh(session: OrmSession, registration: SenderRegistration, client: RegistrationClient, *,
            now: dt.datetime | None = None) -> str:
    """Ask Vonage about a pending registration and keep what it says (approved, rejected with the reason, still
    pending); commits. Returns the status."""
    now = now or utcnow()
    if registration.status != RegistrationStatus.PENDING or not registration.external_id:
        return registration.status
    if registration.kind == RegistrationKind.TOLL_FREE_VERIFICATION:
        answer = client.get_tfn_registration(registration.external_id)
    else:
        answer = client.get_campaign(registration.brand_id or "", registration.external_id)
    status, reason = outcome(answer)
    moved = session.execute(
        update(SenderRegistration).where(SenderRegistration.id == registration.id,
                                         SenderRegistration.status == RegistrationStatus.PENDING)
        .values(status=status, checked_at=now, rejection_reason=reason,
                decided_at=now if status != RegistrationStatus.PENDING else None, updated_at=now)
        .execution_options(synchronize_session=False)).rowcount
    session.commit()
    session.refresh(registration)
    if moved and status != RegistrationStatus.PENDING:
        log.info("registration %s of shop %s: %s", registration.id, registration.shop_id, status)
    return registration.status


def pending_ids(session: OrmSession) -> list[int]:
    """Ids of every shop's registrations waiting for the carriers (with something to ask Vonage about)."""
    return list(session.scalars(select(SenderRegistration.id).where(
        SenderRegistration.status == RegistrationStatus.PENDING, SenderRegistration.external_id.is_not(None))
        .order_by(SenderRegistration.id).execution_options(all_shops=True)))
