"""Vonage SMS API gateway: the SDK's message model, one kept-alive HTTPS connection, never a silent repeat.

The SDK's HttpClient re-issues a request after `RemoteDisconnected` up to `pool_maxsize` times, POST
included, and mounts a urllib3 Retry of `max_retries`. A connection that drops after Vonage read the
request would then send the SMS twice. So the request does not go through that loop: the SDK's
`SmsMessage` validates the message and gives the wire fields (exactly what the SDK would post), and the
gateway posts them itself (`POST https://{host}/sms/json`, form-encoded, Basic auth) on a urllib3 pool of
its own: one kept-alive connection, `retries=False` (no retry of any kind, the first error is raised) and no
redirects. This also leaves out the SDK's and requests' per-call costs (two pydantic call validations, the
response model, reading the environment for proxies, netrc and the CA bundle at every request: those are
read once, when the client is made), about half of a campaign sender's CPU per message. An error before
the request left (could not connect) is retryable; an error after it left is an unknown outcome,
recorded and settled by the delivery receipt.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import ssl
import threading
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import urllib.request
from urllib.parse import urlencode

from urllib3.exceptions import ConnectTimeoutError, HTTPError, MaxRetryError, NewConnectionError

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
DEFAULT_REST_HOST = "rest.nexmo.com"
"""Where the SMS API lives (the SDK's default rest_host)."""


@dataclass
class VonageClient:
    """One HTTP session (one kept-alive connection), where it posts, and the lock that keeps that connection to
    one request at a time."""

    pool: object
    """A urllib3 HTTPSConnectionPool (or a ProxyManager when an HTTPS proxy is set)."""
    target: str
    """What the pool posts to: the path, or the whole URL through a proxy."""
    headers: dict
    timeout: object
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
        """A session with one connection and no automatic retries, for the SMS API at `host` (host:port;
        default Vonage's rest.nexmo.com). The environment (HTTPS proxy, REQUESTS_CA_BUNDLE) is read now."""
        import certifi
        import urllib3
        url = urllib3.util.parse_url(f"https://{host or DEFAULT_REST_HOST}/sms/json")
        tls = dict(cert_reqs="CERT_REQUIRED",
                   ca_certs=os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where())
        proxy = None if urllib.request.proxy_bypass(url.host) else urllib.request.getproxies().get("https")
        if proxy:
            pool, target = urllib3.ProxyManager(proxy, num_pools=1, maxsize=1, **tls), url.url
        else:
            pool, target = urllib3.HTTPSConnectionPool(url.host, url.port or 443, maxsize=1, **tls), url.path
        token = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode("ascii")
        headers = {"Authorization": f"Basic {token}", "Accept": "application/json",
                   "Content-Type": "application/x-www-form-urlencoded", "User-Agent": "kinnekt"}
        timeout = urllib3.Timeout(connect=defaults.SMS_HTTP_TIMEOUT_SECONDS, read=defaults.SMS_HTTP_TIMEOUT_SECONDS)
        return VonageClient(pool, target, headers, timeout, threading.Lock())

    @property
    def wire_sender(self) -> str:
        """A number goes as digits without +; an alphanumeric id as it is."""
        compact = self.sender.replace(" ", "")
        return compact.lstrip("+") if re.fullmatch(r"\+?\d+", compact) else self.sender

    def warm(self) -> None:
        """Get ready to send before the first rate-limiter slot is taken: load the message model and open the
        kept-alive connection (TCP, TLS, the CA bundle). Done inside the first send instead, those tens of
        milliseconds would lie between a slot and its request, and the next slot's request could catch up
        with it at Vonage (two grants' requests in one second's worth of arrivals). Never raises: a
        connection that cannot be opened now is reported by the send."""
        from vonage_sms import SmsMessage
        SmsMessage(to="15550100000", from_=self.wire_sender, text="-", type="text", client_ref="warm",
                   status_report_req=True, callback=self.callback)
        pool = self.client.pool
        if not hasattr(pool, "_get_conn"):  # a ProxyManager: its pools are made per target on first use
            return
        with self.client.lock:
            conn = pool._get_conn()
            try:
                if not conn.is_connected:
                    conn.timeout = self.client.timeout.connect_timeout
                    conn.connect()
            except (HTTPError, OSError) as exc:
                log.info("Vonage: could not open the connection ahead of sending: %s", exc)
                conn.close()
            finally:
                pool._put_conn(conn)

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
        client = self.client
        form = urlencode([(key, value) for key, value in message.model_dump(by_alias=True).items()
                          if value is not None])  # as the SDK (through requests) sends it
        try:
            response = client.pool.urlopen("POST", client.target, body=form, headers=client.headers,
                                            retries=False, redirect=False, timeout=client.timeout,
                                            preload_content=True)  # read it all while the lock holds the connection
        except (HTTPError, OSError) as exc:
            if _never_left(exc):
                return SendResult(None, "failed", error_code="connect", error_text=_short(exc), retryable=True)
            log.warning("Vonage send %s: outcome unknown (%s)", message.client_ref, exc)
            return SendResult(None, "unknown", error_code="connection", error_text=_short(exc),
                              unknown_outcome=True)
        except Exception as exc:  # anything else: the request may have left, so it may have been sent
            log.exception("Vonage send %s: unexpected error, outcome unknown", message.client_ref)
            return SendResult(None, "unknown", error_code="unexpected", error_text=_short(exc), unknown_outcome=True)
        code, body = response.status, response.data
        if code >= 300:
            log.warning("Vonage send %s: HTTP %s: %r", message.client_ref, code, body[:500])
            return SendResult(None, "failed", error_code=f"http-{code}",
                              error_text=f"HTTP {code} from Vonage: {_short(body.decode('utf-8', 'replace'))}",
                              retryable=code == 429 or code >= 500)
        try:
            answer = json.loads(body)
        except ValueError as exc:  # an unreadable answer: the request left, so it may have been sent
            log.warning("Vonage send %s: unreadable answer, outcome unknown", message.client_ref)
            return SendResult(None, "unknown", error_code="unexpected", error_text=_short(exc), unknown_outcome=True)
        return self._from_body(answer if isinstance(answer, dict) else None)

    def _from_body(self, body: dict | None) -> SendResult:
        """Map Vonage's `messages[]` (one per part of a long SMS) to one result."""
        parts = (body or {}).get("messages") or []
        if not isinstance(parts, list) or not all(isinstance(p, dict) for p in parts):
            parts = []
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
    if isinstance(exc, (NewConnectionError, ConnectTimeoutError)):
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
