"""Vonage SMS API gateway through the vonage SDK, set up so that a send is never silently repeated.

The SDK's HttpClient re-issues a request after `RemoteDisconnected` up to `pool_maxsize` times, POST
included, and mounts a urllib3 Retry of `max_retries`. A connection that drops after Vonage read the
request would then send the SMS twice. So: one pooled connection (no SDK re-issue loop) and
`max_retries=0` (no urllib3 retry). An error before the request left (could not connect) is retryable;
an error after it left is an unknown outcome, recorded and settled by the delivery receipt.
"""
from __future__ import annotations

import json
import logging
import re
import ssl
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import requests
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

from kinnekt import defaults
from kinnekt.sms.encoding import vonage_type
from kinnekt.sms.gateway import SendResult

log = logging.getLogger(__name__)

# SMS API `status` values (https://developer.vonage.com/api-errors/sms).
STATUS_TEXT = {
    "1": "Throttled", "2": "Missing parameters", "3": "Invalid parameters", "4": "Invalid credentials",
    "5": "Internal error", "6": "Invalid message", "7": "Number barred", "8": "Partner account barred",
    "9": "Partner quota violation", "10": "Too many existing binds", "11": "Account not enabled for HTTP",
    "12": "Message too long", "14": "Invalid signature", "15": "Invalid sender address",
    "22": "Invalid network code", "23": "Invalid callback URL", "29": "Non-whitelisted destination",
    "32": "Signature and API secret disallowed", "33": "Number de-activated",
}
RETRYABLE_STATUSES = frozenset({"1", "5", "9", "10"})
"""Throttled, internal error, out of credit (after a top-up), too many binds: try again later."""
UNREACHABLE_STATUSES = frozenset({"7", "33"})
"""The destination is barred or de-activated: stop sending to it."""

_CODE_IN_MESSAGE = re.compile(r"error code (\d+): ?(.*)", re.S)


@dataclass
class VonageClient:
    """One SDK client and the lock that keeps its single connection to one request at a time."""

    vonage: object
    lock: threading.Lock


class VonageGateway:
    """Sends through Vonage's SMS API (`POST /sms/json`)."""

    name = "vonage"
    rate_limited = True

    def __init__(self, client: VonageClient, *, sender: str, api_key: str, callback: str | None = None):
        self.client = client
        self.sender = sender
        self.api_key = api_key
        self.callback = callback

    @staticmethod
    def make_client(api_key: str, api_secret: str, host: str | None = None) -> VonageClient:
        """An SDK client with one connection, no automatic retries, and `host` (host:port) for the SMS API."""
        from vonage import Auth, HttpClientOptions, Vonage
        options = dict(pool_connections=1, pool_maxsize=1, max_retries=0,
                       timeout=defaults.SMS_HTTP_TIMEOUT_SECONDS)
        if host:
            options.update(rest_host=host, api_host=host)
        return VonageClient(Vonage(Auth(api_key=api_key, api_secret=api_secret), HttpClientOptions(**options)),
                            threading.Lock())

    @property
    def wire_sender(self) -> str:
        """A number goes as digits without +; an alphanumeric id as it is."""
        compact = self.sender.replace(" ", "")
        return compact.lstrip("+") if re.fullmatch(r"\+?\d+", compact) else self.sender

    def send(self, to: str, text: str, client_ref: str) -> SendResult:
        """Send one SMS; never raises for provider or network trouble, it reports it in the SendResult."""
        from pydantic import ValidationError
        from vonage_sms import SmsMessage
        try:
            message = SmsMessage(to=to.lstrip("+"), from_=self.wire_sender, text=text, type=vonage_type(text),
                                 client_ref=client_ref, status_report_req=True, callback=self.callback)
        except ValidationError as exc:
            return SendResult(None, "failed", error_code="invalid-request", error_text=_short(exc))
        with self.client.lock:
            return self._send(message)

    def _send(self, message) -> SendResult:
        from vonage_http_client.errors import HttpRequestError
        from vonage_sms import SmsError
        sms = self.client.vonage.sms
        try:
            response = sms.send(message)
        except SmsError as exc:
            body = self._last_body(sms)
            if body is None:
                found = _CODE_IN_MESSAGE.search(str(exc))
                code, text = (found.group(1), found.group(2).strip()) if found else ("error", str(exc))
                body = {"messages": [{"status": code, "error-text": text}]}
            return self._from_body(body, fallback=None)
        except HttpRequestError as exc:
            code = exc.response.status_code
            retryable = code == 429 or code >= 500
            return SendResult(None, "failed", error_code=f"http-{code}",
                              error_text=f"HTTP {code} from Vonage: {_short(exc.response.text)}", retryable=retryable)
        except requests.exceptions.RequestException as exc:
            if _never_left(exc):
                return SendResult(None, "failed", error_code="connect", error_text=_short(exc), retryable=True)
            log.warning("Vonage send %s: outcome unknown (%s)", message.client_ref, exc)
            return SendResult(None, "unknown", error_code="connection", error_text=_short(exc),
                              unknown_outcome=True)
        except Exception as exc:  # an unreadable answer: the request left, so it may have been sent
            log.exception("Vonage send %s: unexpected error, outcome unknown", message.client_ref)
            return SendResult(None, "unknown", error_code="unexpected", error_text=_short(exc), unknown_outcome=True)
        return self._from_body(self._last_body(sms), fallback=response)

    @staticmethod
    def _last_body(sms) -> dict | None:
        """The raw JSON of the last answer: the SDK keeps the status code only inside an exception string."""
        last = sms.http_client.last_response
        try:
            return last.json() if last is not None else None
        except (ValueError, json.JSONDecodeError):
            return None

    def _from_body(self, body: dict | None, fallback) -> SendResult:
        """Map Vonage's `messages[]` (one per part of a long SMS) to one result."""
        parts = (body or {}).get("messages") or []
        if not parts and fallback is not None:
            parts = [{"status": m.status, "message-id": m.message_id, "message-price": m.message_price}
                     for m in fallback.messages]
        if not parts:
            return SendResult(None, "unknown", error_code="unreadable", error_text="Vonage's answer had no messages",
                              unknown_outcome=True)
        accepted = [p for p in parts if str(p.get("status")) == "0"]
        failed = [p for p in parts if str(p.get("status")) != "0"]
        provider_id = next((p.get("message-id") for p in accepted if p.get("message-id")), None)
        price = _sum_prices(accepted)
        if not failed:
            return SendResult(provider_id, "sent", price=price)
        code = str(failed[0].get("status"))
        text = failed[0].get("error-text") or STATUS_TEXT.get(code, "error")
        if accepted:  # some parts went out: never resend, the phone already has part of it
            return SendResult(provider_id, "failed", price=price, error_code=code,
                              error_text=f"{len(failed)} of {len(parts)} parts refused: {text}")
        return SendResult(None, "failed", error_code=code, error_text=text, retryable=code in RETRYABLE_STATUSES,
                          recipient_unreachable=code in UNREACHABLE_STATUSES)


def _never_left(exc: Exception) -> bool:
    """True only when the error certainly happened before the request was sent (no connection, or a
    certificate refused in the handshake). Anything else, an SSL EOF included, may follow the send."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    if isinstance(reason, (NewConnectionError, ConnectTimeoutError)):
        return True
    while reason is not None:
        if isinstance(reason, ssl.SSLCertVerificationError):
            return True
        reason = reason.args[0] if isinstance(reason, Exception) and reason.args and isinstance(
            reason.args[0], Exception) else None
    return False


def _sum_prices(parts: list[dict]) -> Decimal | None:
    total = None
    for part in parts:
        try:
            price = Decimal(str(part.get("message-price")))
        except (InvalidOperation, TypeError):
            continue
        if price.is_finite():
            total = price if total is None else total + price
    return total


def _short(value) -> str:
    return str(value).strip()[:500]
