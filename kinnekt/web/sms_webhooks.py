"""Public Vonage Messages API webhooks: inbound SMS (/sms/inbound) and message status (/sms/receipt).

Both are JSON POSTs. When VONAGE_SIGNATURE_SECRET is set every request must carry Vonage's signed JWT
(`Authorization: Bearer`, HS256, with the body's sha256 in `payload_hash`, issued within
SMS_SIGNATURE_MAX_AGE_SECONDS, each token once: kinnekt/sms/webhook_auth.py); otherwise 401.
A malformed request is a 400; nothing is stored for either. Anything well formed is answered 204 at
once (else Vonage resends): inbound texts go to kinnekt/subscribers/inbound.receive, which stores them
(once per message_uuid) and handles an opt-out, or a text that asks for nothing, before the answer
(`take_in_request`); anything that sends a text is handled by a worker, as is a text whose handling in the
request failed (the answer is still 204: the text is stored, and the recovery finds a text whose job could not
be queued). Statuses are applied to their message row. Vonage joins the parts of a long inbound text into one
webhook (`sms.num_messages`), so each inbound webhook is a whole text.
"""
from __future__ import annotations

import contextlib
import logging
import re

from flask import Blueprint, abort, current_app, g, jsonify, request

from kinnekt import defaults
from kinnekt.db import Session
from kinnekt.sms import receipts, webhook_auth
from kinnekt.sms import tasks as sms_tasks
from kinnekt.subscribers import inbound as inbound_sms
from kinnekt.subscribers.phones import InvalidPhone, from_msisdn
from kinnekt.web import guards

log = logging.getLogger(__name__)

bp = Blueprint("sms_webhooks", __name__, url_prefix="/sms")


class Malformed(ValueError):
    """The request is not a Vonage webhook we can use."""


@bp.route("/inbound", methods=["POST"])
def inbound():
    """Store an inbound SMS once per message_uuid; handle it now if it is an opt-out or asks for nothing, else
    queue it."""
    body = _verified_body()
    try:
        fields = _inbound_fields(body)
    except Malformed as exc:
        return _bad(str(exc))
    with _token_taken_back_on_error():
        inbound_sms.receive(Session, fields)  # stored once, an opt-out applied now, the rest queued; or ignored
    return "", 204


@bp.route("/receipt", methods=["POST"])
def receipt():
    """Apply a message status to its message (looked for again shortly if the send is not recorded yet)."""
    body = _verified_body()
    try:
        receipts.parse(body)
    except receipts.ReceiptError as exc:
        return _bad(str(exc))
    with _token_taken_back_on_error():
        if receipts.apply(Session, body) == "no message":
            sms_tasks.enqueue_process_receipt(body, 2)
    return "", 204


@contextlib.contextmanager
def _token_taken_back_on_error():
    """A request whose handling fails (a 500) gives its token id back, so that Vonage's retry of it, should it
    carry the same token, is taken: a refused retry could lose a STOP. Handling is idempotent (one row per
    message_uuid; statuses only move forward), so a retry is never handled twice."""
    try:
        yield
    except BaseException:
        jti, store = g.get("vonage_jti"), g.get("vonage_jti_store")
        if jti and store is not None:
            try:
                store.forget(jti)
            except Exception:  # the original error matters more
                log.exception("could not take back the token id of a failed Vonage webhook")
        raise


def _verified_body() -> dict:
    """The request's JSON object, its JWT checked first when a signature secret is set (401), then its shape
    (400)."""
    limit = current_app.config.get("MAX_WEBHOOK_BYTES") or 1_048_576
    if request.content_length is not None and request.content_length > limit:
        abort(413)
    raw = request.get_data(cache=True)
    if len(raw) > limit:
        abort(413)
    if guards.nested_too_deep(raw):  # refused before any other work, the signature check included
        abort(_bad(f"the body is nested deeper than {guards.MAX_JSON_DEPTH} levels"))
    secret = current_app.config.get("VONAGE_SIGNATURE_SECRET")
    if secret:
        try:
            store = _nonce_store()
            claims = webhook_auth.verify(request.headers.get("Authorization"), raw, secret,
                                         max_age=defaults.SMS_SIGNATURE_MAX_AGE_SECONDS, seen_jti=store)
            g.vonage_jti, g.vonage_jti_store = claims["jti"].strip(), store
        except webhook_auth.WebhookAuthError as exc:
            log.warning("refused a Vonage webhook on %s: %s", request.path, exc)
            abort(_response({"error": "bad signature", "message": str(exc)}, 401))
    data = guards.webhook_json()  # 400 for text no database stores (NUL, lone surrogates)
    if not isinstance(data, dict):
        abort(_bad("the body is not a JSON object"))
    return data


def _nonce_store():
    url = current_app.config.get("REDIS_URL")
    ttl = 2 * defaults.SMS_SIGNATURE_MAX_AGE_SECONDS
    if url:
        from kinnekt.sms.ratelimit import shared_redis
        return webhook_auth.redis_nonce_store(shared_redis(url), ttl)
    return webhook_auth.db_nonce_store(Session)


def _single(body: dict, name: str) -> str:
    value = body.get(name)
    if value is None:
        return ""
    if isinstance(value, (dict, list, bool)):
        raise Malformed(f"{name} is not a single value")
    return str(value)


def _inbound_fields(body: dict) -> dict:
    """The InboundMessage columns from a Messages API inbound SMS; raises Malformed."""
    channel = _single(body, "channel").strip().lower()
    if channel and channel != "sms":
        raise Malformed(f"not an SMS (channel {channel[:20]!r})")
    try:
        from_phone = from_msisdn(_single(body, "from"))
    except InvalidPhone:
        raise Malformed("from is missing or not a phone number") from None
    to_number = _single(body, "to").strip()
    if not re.fullmatch(r"\+?[0-9A-Za-z ]{2,20}", to_number):
        raise Malformed("to is missing or not a number")
    provider_id = _single(body, "message_uuid").strip()
    if not provider_id or len(provider_id) > 64 or not provider_id.isprintable():
        raise Malformed("message_uuid is missing or too long")
    kind = (_single(body, "message_type") or "text").strip().lower()
    if kind != "text":
        raise Malformed(f"unknown message_type {kind[:20]!r}")
    text = _single(body, "text")
    if len(text) > inbound_sms.MAX_TEXT_LENGTH:
        raise Malformed("text is too long")
    return dict(provider_id=provider_id, from_phone=from_phone, to_number=to_number, text=text)


def _bad(message: str):
    return _response({"error": "malformed", "message": message}, 400)


def _response(body: dict, status: int):
    response = jsonify(body)
    response.status_code = status
    return response
