"""Outbox page (demo only): what the demo "sent", newest first (no message ever leaves for a phone), and "Text the
store", which hands a typed text to the same inbound code as Vonage's /sms/inbound, as a phone would send it."""
from __future__ import annotations

import datetime as dt
import uuid

from flask import abort, current_app, g, make_response, request, url_for
from sqlalchemy import exists, select

from kinnekt import defaults
from kinnekt.campaigns import links
from kinnekt.db import Session, utcnow
from kinnekt.models import InboundMessage, Keyword, Message, OutboxMessage
from kinnekt.models.message import MessageStatus
from kinnekt.numbers import record_id
from kinnekt.subscribers.phones import shop_region
from kinnekt.subscribers import inbound as inbound_sms
from kinnekt.subscribers.phones import InvalidPhone, normalise
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint
from kinnekt.web.templating import page_number, paginate

bp = merchant_blueprint("outbox", __name__, url_prefix="/outbox")

ANSWER_WAIT_SECONDS = 30
"""The table polls for the store's answer to a typed text at most this long (a reply deferred by quiet hours,
or a stuck job, must not keep a page polling forever)."""


@bp.before_request
def _demo_only():
    """Outside the demo there is no Outbox: a 404, as for any page that does not exist."""
    if not current_app.config.get("DEMO_MODE"):
        abort(404)


@bp.get("/")
def index():
    """The outbox page, paginated with `?page=`, only the messages to one number with `?phone=`."""
    phone = _phone_filter()
    return hx.render("outbox/index.html", "outbox/_index.html", **_context(phone=phone))


@bp.get("/table")
def table():
    """The messages card; with `?waiting=<inbound id>` it is polled until the store has answered that text."""
    phone = _phone_filter()
    waiting = _inbound(record_id(request.args.get("waiting")))
    answering = waiting is not None and _answering(waiting)
    body = hx.render("outbox/index.html", "outbox/_table.html",
                     **_context(phone=phone, waiting=waiting if answering else None))
    if hx.is_htmx() and "waiting" in request.args and not answering:  # answered, or nothing of ours to wait for
        return hx.stop_polling(body)
    return body


@bp.post("/text")
def text():
    """Text the store from a phone number, as a phone would: the text goes through kinnekt.subscribers.inbound
    (`receive`), the code behind Vonage's /sms/inbound; nothing is stored when the form has a mistake."""
    raw_phone, message = request.form.get("phone", "").strip(), request.form.get("text", "")
    errors = {}
    phone = None
    try:
        phone = normalise(raw_phone, shop_region(g.shop)).e164 if raw_phone else None
        if phone is None:
            errors["phone"] = "Enter the phone number the text comes from."
    except InvalidPhone as exc:
        errors["phone"] = str(exc)
    if not message.strip():
        errors["text"] = "Type the text to send, for example a keyword."
    elif len(message) > inbound_sms.MAX_TEXT_LENGTH:
        errors["text"] = f"A text can have at most {inbound_sms.MAX_TEXT_LENGTH:,} characters."
    store_number = _store_number()
    if not store_number:
        errors["text"] = "The demo store has no number to text: set VONAGE_SENDER."
    received = None
    if not errors:
        received = inbound_sms.receive(Session, {
            "provider_id": f"demo-{uuid.uuid4().hex}", "from_phone": phone, "to_number": store_number,
            "text": message})
        if received is None:  # another shop answers this number (it cannot happen with the demo store alone)
            errors["text"] = "No store answers texts to this number."
    if errors:
        Session.rollback()
        return hx.render("outbox/index.html", "outbox/_index.html",
                         **_context(phone=None, form={"phone": raw_phone, "text": message}, errors=errors))
    waiting = received if received.shop_id == g.shop.id else None
    response = make_response(hx.render("outbox/index.html", "outbox/_index.html",
                                       **_context(phone=phone, waiting=waiting, form={"phone": raw_phone, "text": ""},
                                                  sent={"phone": phone, "text": message})))
    response.headers["HX-Push-Url"] = url_for("outbox.index", phone=phone)  # a reload keeps this number's view
    return response


# ---------------------------------------------------------------------------------------------- helpers

def _phone_filter() -> str | None:
    """The `?phone=` argument as an E.164 number; anything unreadable shows every message."""
    raw = request.args.get("phone", "").strip()
    if not raw:
        return None
    try:
        return normalise(raw, shop_region(g.shop)).e164
    except InvalidPhone:
        return None


def _store_number() -> str | None:
    """The number the demo store's subscribers text: its own number, else its sender, else the app's VONAGE_SENDER
    (kinnekt.sms.senders.inbound_number)."""
    from kinnekt.sms import senders
    return senders.inbound_number(Session, g.shop)


def _inbound(inbound_id: int | None) -> InboundMessage | None:
    if inbound_id is None:
        return None
    return Session.scalar(select(InboundMessage).where(InboundMessage.id == inbound_id,
                                                       InboundMessage.shop_id == g.shop.id))


def _answering(inbound: InboundMessage) -> bool:
    """True while the store is still answering a text: not yet handled, or a reply to the number still on its way
    (one due now, not one deferred by quiet hours); never longer than ANSWER_WAIT_SECONDS."""
    now = utcnow()
    if inbound.received_at is not None and now - inbound.received_at > dt.timedelta(seconds=ANSWER_WAIT_SECONDS):
        return False
    if inbound.processed_at is None or inbound.intent == "handling":
        return True
    return bool(Session.scalar(select(exists().where(
        Message.shop_id == g.shop.id, Message.to_phone == inbound.from_phone, Message.campaign_id.is_(None),
        Message.status.in_(MessageStatus.OPEN), Message.created_at >= inbound.received_at,
        (Message.due_at.is_(None)) | (Message.due_at <= now)))))


def _context(*, phone: str | None, waiting: InboundMessage | None = None, form: dict | None = None,
             errors: dict | None = None, sent: dict | None = None) -> dict:
    """Everything the page and its partials show."""
    statement = select(OutboxMessage).where(OutboxMessage.shop_id == g.shop.id)
    if phone:
        statement = statement.where(OutboxMessage.to_phone == phone)
    statement = statement.order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
    results = paginate(statement, page_number(request.args.get("page")), defaults.PAGE_SIZE,
                       params={"phone": phone} if phone else {})
    keywords = Session.scalars(select(Keyword.word).where(Keyword.shop_id == g.shop.id, Keyword.active.is_(True))
                               .order_by(Keyword.word)).all()
    return {"results": results, "parts": {m.id: message_parts(m.text) for m in results.items}, "phone": phone,
            "waiting": waiting, "form": form or {"phone": "", "text": ""}, "errors": errors or {}, "sent": sent,
            "store_number": _store_number(), "keywords": keywords}


def message_parts(text: str) -> list[tuple[str, str]]:
    """A message's text as ("text", words) and ("link", url) pieces, so that the page makes each link clickable
    (a tracked /r/ link opens as a subscriber's tap would, and counts as a click)."""
    parts: list[tuple[str, str]] = []
    rest = text or ""
    for url in links.find_urls(rest):
        before, found, rest = rest.partition(url)
        if before:
            parts.append(("text", before))
        parts.append(("link", found))
    if rest:
        parts.append(("text", rest))
    return parts
