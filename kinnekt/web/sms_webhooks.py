"""Public Vonage webhooks: inbound SMS (/sms/inbound) and delivery receipts (/sms/receipt).

Vonage may call them with GET (query string), POST (form) or POST (JSON), as set in its dashboard.
When VONAGE_SIGNATURE_SECRET is set every request must be signed (bad or missing signature: 401).
A malformed request is a 400; nothing is stored for either. Anything well formed is answered 204 at
once (else Vonage resends for a day): inbound texts go to kinnekt/subscribers/inbound.receive, which stores them
(once per messageId) and handles an opt-out, or a text that asks for nothing, before the answer
(`take_in_request`); anything that sends a text is handled by a worker, as is a text whose handling in the
request failed (the answer is still 204: the text is stored, and the recovery finds a text whose job could not
be queued). Receipts are applied to their message row.
"""
from __future__ import annotations

import logging
import re

from flask import Blueprint, abort, current_app, jsonify, request

from kinnekt import defaults
from kinnekt.db import Session
from kinnekt.sms import receipts, signatures
from kinnekt.sms import tasks as sms_tasks
from kinnekt.subscribers import inbound as inbound_sms
from kinnekt.subscribers.phones import InvalidPhone, from_msisdn
from kinnekt.web import guards

log = logging.getLogger(__name__)

bp = Blueprint("sms_webhooks", __name__, url_prefix="/sms")

class Malformed(ValueError):
    """The request is not a Vonage webhook we can use."""


@bp.route("/inbound", methods=["GET", "POST"])
def inbound():
    """Store an inbound SMS once per messageId; handle it now if it is an opt-out or asks for nothing, else queue it."""
    params = _verified_params()
    try:
        fields = _inbound_fields(params)
    except Malformed as exc:
        return _bad(str(exc))
    inbound_sms.receive(Session, fields)  # stored once, an opt-out applied now, the rest queued; or ignored
    return "", 204


@bp.route("/receipt", methods=["GET", "POST"])
def receipt():
    """Apply a delivery receipt to its message (looked for again shortly if the send is not recorded yet)."""
    params = _verified_params()
    try:
        receipts.parse(params)
    except receipts.ReceiptError as exc:
        return _bad(str(exc))
    if receipts.apply(Session, params) == "no message":
        sms_tasks.enqueue_process_receipt(params, 2)
    return "", 204


def _verified_params() -> dict[str, str]:
    """The request's parameters (query, form or JSON object), signature-checked when a secret is set."""
    limit = current_app.config.get("MAX_WEBHOOK_BYTES") or 1_048_576
    if request.content_length is not None and request.content_length > limit:
        abort(413)
    if request.method == "POST" and request.is_json:
        data = guards.webhook_json()
        if not isinstance(data, dict):
            abort(_bad("the body is not a JSON object"))
        params = {}
        for key, value in data.items():
            if isinstance(value, (dict, list)):
                abort(_bad(f"{key} is not a single value"))
            params[str(key)] = "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
        for key in request.args:
            params.setdefault(key, request.args[key])
    else:
        params = {key: request.values.get(key, "") for key in request.values.keys()}
    secret = current_app.config.get("VONAGE_SIGNATURE_SECRET")
    if secret:
        try:
            signatures.verify(params, secret, current_app.config.get("VONAGE_SIGNATURE_METHOD") or "md5hash",
                              max_age=defaults.SMS_SIGNATURE_MAX_AGE_SECONDS, seen_nonce=_nonce_store())
        except signatures.SignatureError as exc:
            log.warning("refused a Vonage webhook on %s: %s", request.path, exc)
            abort(_response({"error": "bad signature", "message": str(exc)}, 401))
    return params


def _nonce_store():
    url = current_app.config.get("REDIS_URL")
    ttl = 2 * defaults.SMS_SIGNATURE_MAX_AGE_SECONDS
    if url:
        from kinnekt.sms.ratelimit import shared_redis
        return signatures.redis_nonce_store(shared_redis(url), ttl)
    return signatures.db_nonce_store(Session)


def _inbound_fields(params: dict[str, str]) -> dict:
    """The InboundMessage columns from Vonage's inbound fields; raises Malformed."""
    try:
        from_phone = from_msisdn(params.get("msisdn", ""))
    except InvalidPhone:
        raise Malformed("msisdn is missing or not a phone number") from None
    to_number = (params.get("to") or "").strip()
    if not re.fullmatch(r"\+?[0-9A-Za-z ]{2,20}", to_number):
        raise Malformed("to is missing or not a number")
    provider_id = (params.get("messageId") or params.get("message-id") or "").strip()
    if not provider_id or len(provider_id) > 64 or not provider_id.isprintable():
        raise Malformed("messageId is missing or too long")
    kind = (params.get("type") or "text").strip().lower()
    if kind not in ("text", "unicode", "binary"):
        raise Malformed(f"unknown type {kind[:20]!r}")
    text = "" if kind == "binary" else params.get("text", "")
    if len(text) > inbound_sms.MAX_TEXT_LENGTH:
        raise Malformed("text is too long")
    fields = dict(provider_id=provider_id, from_phone=from_phone, to_number=to_number, text=text)
    if (params.get("concat") or "").strip().lower() == "true":
        ref = (params.get("concat-ref") or "").strip()
        try:
            total, part = int(params.get("concat-total", "")), int(params.get("concat-part", ""))
        except ValueError:
            raise Malformed("concat-total and concat-part must be numbers") from None
        if not ref or len(ref) > 32 or not 1 <= part <= total <= 255:
            raise Malformed("bad concat-ref, concat-total or concat-part")
        fields.update(concat_ref=ref, concat_total=total, concat_part=part)
    return fields


def _bad(message: str):
    return _response({"error": "malformed", "message": message}, 400)


def _response(body: dict, status: int):
    response = jsonify(body)
    response.status_code = status
    return response
