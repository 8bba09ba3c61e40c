"""The Settings page's numbers card: the shop's senders (default per country, release), searching and buying a
number, bringing one the Vonage account holds, and adding an alphanumeric sender id (kinnekt/sms/numbers.py).

The settings page includes `settings/_numbers.html`, which loads itself from here. Every action answers with the
card (or, for a search, its results) and a toast; a refused one says why and saves nothing (status 200 for htmx,
so that the card is swapped, else 400). An action that changed the shop's senders also triggers `senders-changed`
(SENDERS_CHANGED), on which the US registration card reloads itself: a number bought is there to register at once.
The card holds no <form>: its fields are sent with `hx-include`, so that the settings page's unsaved-changes guard
does not count a search as an edit.
"""
from __future__ import annotations

from flask import current_app, g, make_response, redirect, render_template, request, url_for

from kinnekt.db import Session
from kinnekt.sms import numbers, senders
from kinnekt.sms.numbers_api import NumbersError
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("numbers", __name__, url_prefix="/settings/numbers")

SENDERS_CHANGED = "senders-changed"
"""The HX-Trigger event of an action that changed the shop's senders (templates/settings/_registration.html)."""


def card_context(**extra) -> dict:
    """What the card shows: the shop's senders, what can be bought where, and whether buying is set up."""
    config = current_app.config
    return {"numbers_shop": g.shop, "numbers_senders": numbers.listing(Session, g.shop),
            "numbers_countries": senders.COUNTRIES, "numbers_kinds": senders.KIND_LABELS,
            "numbers_rate_for": senders.rate_for,
            "numbers_country_options": [(code, offer.name) for code, offer in senders.COUNTRIES.items()],
            "numbers_alpha_options": [(code, offer.name) for code, offer in senders.COUNTRIES.items()
                                      if offer.alphanumeric],
            "numbers_ready": bool(config.get("VONAGE_API_KEY") and config.get("VONAGE_API_SECRET")),
            "numbers_fallback": senders.fallback(g.shop), **extra}


def _card(message: str | None = None, error: bool = False, status: int = 200, changed: bool = False, **extra):
    response = make_response(render_template("settings/_numbers.html", **card_context(**extra)),
                             status if not hx.is_htmx() else 200)
    if changed:
        hx.trigger(response, SENDERS_CHANGED)
    return hx.toast(response, message, error=error) if message else response


def _done(message: str):
    if not hx.is_htmx():
        return redirect(url_for("settings.index"))
    return _card(message, changed=True)


def _refused(exc: Exception, **extra):
    Session.rollback()
    return _card(f"Nothing was changed: {exc}", error=True, status=400, numbers_error=str(exc), **extra)


@bp.get("/")
def card():
    """The card (the settings page for a full navigation)."""
    if not hx.is_htmx():
        return redirect(url_for("settings.index"))
    return _card()


@bp.get("/search")
def search():
    """Numbers for sale for the chosen country and kind; the results list, or its error."""
    args = request.args
    form = {"country": args.get("country", "")[:2], "kind": args.get("kind", "")[:16],
            "pattern": args.get("pattern", "")[:20]}
    try:
        count, offers = numbers.search(form["country"], form["kind"], form["pattern"])
        error = None
    except (numbers.NumberError, NumbersError) as exc:
        count, offers, error = 0, [], str(exc)
    body = render_template("settings/_numbers_results.html", offers=offers, count=count, error=error,
                           search=form, kinds=senders.KIND_LABELS)
    return make_response(body, 200 if error is None or hx.is_htmx() else 400)


@bp.post("/buy")
def buy():
    """Buy the chosen number and link it (a second click answers with the same number)."""
    form = request.form
    try:
        row = numbers.buy(Session, g.shop, form.get("country"), form.get("msisdn"), form.get("kind"))
    except (numbers.NumberError, NumbersError) as exc:
        return _refused(exc)
    if row.linked_at is None:
        return _card(f"+{row.msisdn} is yours, but Vonage did not link it yet: press Link again.", error=True,
                     changed=True)
    return _done(f"+{row.msisdn} is yours. Texts to {senders.COUNTRIES[row.country].name} now come from it"
                 if row.is_default else f"+{row.msisdn} is yours.")


@bp.post("/bring")
def bring():
    """Add a number the Vonage account already holds."""
    try:
        row = numbers.bring(Session, g.shop, request.form.get("msisdn"))
    except (numbers.NumberError, NumbersError) as exc:
        return _refused(exc, numbers_bring=request.form.get("msisdn", "")[:20])
    if row.linked_at is None:
        return _card(f"+{row.msisdn} was added, but Vonage did not link it yet: press Link again.", error=True,
                     changed=True)
    return _done(f"+{row.msisdn} added")


@bp.post("/alphanumeric")
def alphanumeric():
    """Add an alphanumeric sender id for a country that allows one."""
    form = request.form
    try:
        row = numbers.add_alphanumeric(Session, g.shop, form.get("country"), form.get("sender_id"))
    except numbers.NumberError as exc:
        return _refused(exc, numbers_alpha=form.get("sender_id", "")[:20])
    return _done(f"Sender {row.msisdn} added")


@bp.post("/<int:sender_id>/default")
def make_default(sender_id: int):
    """Make the sender its country's default."""
    try:
        row = numbers.make_default(Session, g.shop, sender_id)
    except numbers.NumberError as exc:
        return _refused(exc)
    offer = senders.COUNTRIES.get(row.country)
    return _done(f"Texts to {offer.name if offer else row.country} now come from {senders.address(row)}")


@bp.post("/<int:sender_id>/link")
def link(sender_id: int):
    """Try linking a number to Kinnekt's Vonage application again."""
    try:
        row = numbers.link_again(Session, g.shop, sender_id)
    except (numbers.NumberError, NumbersError) as exc:
        return _refused(exc)
    return _done(f"{senders.address(row)} is linked")


@bp.post("/<int:sender_id>/release")
def release(sender_id: int):
    """Stop sending from the sender (a bought number is cancelled at Vonage)."""
    try:
        row = numbers.release(Session, g.shop, sender_id)
    except (numbers.NumberError, NumbersError) as exc:
        return _refused(exc)
    return _done(f"{senders.address(row)} released")
