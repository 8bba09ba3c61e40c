"""The US registration card of Settings: each US number of the shop with its carrier registration (none,
waiting, approved, rejected with the reason), the form that submits it (prefilled from Shopify, the keywords and
the popup when it opens), resubmission after a rejection, and a status check on demand."""
from __future__ import annotations

from flask import abort, current_app, g, make_response, render_template, request

from kinnekt.db import Session
from kinnekt.models.sender import RegistrationKind, RegistrationStatus, SenderNumber
from kinnekt.shopify import registration_profile
from kinnekt.sms import registration
from kinnekt.sms.registration_client import RegistrationApiError, RegistrationClient
from kinnekt.tenancy import get_or_404
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("registration", __name__, url_prefix="/settings/registration")

KIND_LABELS = {RegistrationKind.TOLL_FREE_VERIFICATION: "Toll-free verification",
               RegistrationKind.TEN_DLC: "10DLC brand and campaign"}


def card_context() -> dict:
    """What the card shows: the shop's US numbers, their registrations, and why US texts are held, if they are."""
    numbers = registration.us_numbers(Session, g.shop.id)
    return {"numbers": numbers, "registrations": registration.registrations_by_number(Session, g.shop.id),
            "own_senders": registration.has_own_senders(Session, g.shop.id),
            "block_reason": registration.us_block_reason(Session, g.shop.id), "kinds": KIND_LABELS,
            "kind_for": registration.kind_for, "statuses": RegistrationStatus}


def _card(message: str | None = None, error: bool = False):
    response = make_response(render_template("settings/_registration.html", **card_context()))
    return hx.toast(response, message, error) if message else response


def _number(number_id: int) -> SenderNumber:
    """The shop's US phone number (another shop's, or one that needs no registration, is a 404)."""
    number = get_or_404(SenderNumber, number_id)
    if registration.kind_for(number) is None:
        abort(404, description="This number needs no US carrier registration.")
    return number


def _form(number: SenderNumber, values: dict, errors: dict | None = None, note: str | None = None):
    found = registration.registrations_by_number(Session, g.shop.id).get(number.id)
    return make_response(render_template(
        "settings/_registration_form.html", number=number, values=values, errors=errors or {}, note=note,
        fields=registration.FIELDS, entity_options=list(registration.ENTITY_TYPES.items()),
        volume_options=[(v, f"About {int(v):,}") for v in registration.VOLUMES],
        kind=KIND_LABELS[registration.kind_for(number)], previous=found, statuses=RegistrationStatus))


@bp.get("/")
def card():
    """The card (loaded after the Settings page, like the plan card)."""
    return _card()


@bp.get("/<int:number_id>/form")
def form(number_id: int):
    """The registration form of one number, prefilled when it opens (Shopify asked now; editable)."""
    number = _number(number_id)
    values, note = registration_profile.prefill(Session, g.shop, number, with_shopify=not g.shop.is_demo)
    return _form(number, values, note=note)


def _client() -> RegistrationClient:
    return RegistrationClient.from_config(current_app.config)


@bp.post("/<int:number_id>")
def submit(number_id: int):
    """Submit (or, after a rejection, resubmit) the number's registration; bad input saves and sends nothing."""
    number = _number(number_id)
    values, errors = registration.validate(request.form)
    if errors:
        Session.rollback()
        message = "Nothing was submitted: fix the highlighted fields."
        return hx.toast(_form(number, values, errors, note=message), message, error=True)
    try:
        registration.submit(Session, number, values, _client())
    except (registration.RegistrationError, RegistrationApiError) as exc:
        Session.rollback()
        return hx.toast(_form(number, values, note=str(exc)), str(exc), error=True)
    return _card("Registration submitted: the carriers usually decide within a few days.")


@bp.post("/<int:number_id>/check")
def check(number_id: int):
    """Ask Vonage now about the number's waiting registration (the periodic job does this too)."""
    number = _number(number_id)
    found = registration.registrations_by_number(Session, g.shop.id).get(number.id)
    if found is None or found.status != RegistrationStatus.PENDING:
        return _card("This number has no registration waiting for the carriers.", error=True)
    try:
        status = registration.refresh(Session, found, _client())
    except RegistrationApiError as exc:
        Session.rollback()
        return _card(f"Vonage did not answer: {exc}", error=True)
    words = {RegistrationStatus.APPROVED: "Approved: texts to US numbers can go out.",
             RegistrationStatus.REJECTED: "Rejected: see the reason, correct the form and submit it again."}
    return _card(words.get(status, "Still waiting for the carriers."))
