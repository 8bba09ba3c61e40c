"""Vonage SMS API gateway: the SDK's message model, one kept-alive HTTPS connection, never a silent repeat.

The SDK's HttpClient re-issues a request after `RemoteDisconnected` up to `pool_maxsize` times, POST
included, and mounts a urllib3 Retry of `max_retries`. A connection that drops after Vonage read the
request would then send the SMS twice. So the request does not go through that loop: the SDK's
`SmsMessage` validates the message and gives the wire fields (exactly what the SDK would post), and the
gateway posts them itself (`POST https://{host}/sms/json`, form-encoded, Basic auth) on one kept-alive
connection of its own (`http.client`, which never retries nor follows redirects). The first error is
reported, never repeated: an error while connecting (before the request left: no connection, a refused
certificate, a proxy refusing the tunnel) is retryable; an error after the request was handed to the
connection is an unknown outcome, recorded and settled by the delivery receipt. A kept-alive connection
that the server closed while idle is noticed before the next request and replaced, so that case never
becomes an unknown outcome.

This leaves out the SDK's, requests' and urllib3's per-call costs: two pydantic call validations, the response
model, reading the environment for proxies, netrc and the CA bundle at every request (the environment is
read once, when the client is made), and urllib3's pool and response wrapper (0.17 ms of CPU per request
against the local fake, a tenth of a campaign sender's CPU per message).
"""
from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import re
import select
import ssl
import threading
from decimal import Decimal, InvalidOperation

import urllib.request
from urllib.parse import unquote, urlencode, urlsplit

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
REFUSED_UNHANDLED = frozenset({429, 503})
"""HTTP statuses that say the request was not handled (too many requests, service unavailable): retry later. Any
other server error is an unknown outcome; any other client error a permanent failure."""
DEFAULT_REST_HOST = "rest.nexmo.com"
"""Where the SMS API lives (the SDK's default rest_host)."""


class NotSent(OSError):
    """The connection could not be opened: the request never left."""


class VonageClient:
    """One kept-alive HTTPS connection to the SMS API (through an HTTP proxy's tunnel when one is set), and the
    lock that keeps it to one request at a time."""

    def __init__(self, host: str, port: int, path: str, headers: dict, tls: ssl.SSLContext, timeout: float,
                 proxy: tuple[str, int] | None = None):
        self.host, self.port, self.path, self.headers = host, port, path, headers
        self.tls, self.timeout, self.proxy = tls, timeout, proxy
        self.tunnel_headers: dict | None = None
        """Headers of the proxy's CONNECT (its credentials), when the proxy URL has them."""
        self.lock = threading.Lock()
        self.connection: http.client.HTTPSConnection | None = None
        self.connections_opened = 0
        """How many connections were opened so far (one while the server keeps it alive)."""

    def ready(self) -> http.client.HTTPSConnection:
        """The open connection, or a new one when there is none or the server closed it (raises NotSent when it
        cannot be opened). Call with the lock held."""
        connection = self.connection
        if connection is not None and (connection.sock is None or _dropped(connection.sock)):
            self.close()
            connection = None
        if connection is None:
            if self.proxy:
                connection = http.client.HTTPSConnection(*self.proxy, timeout=self.timeout, context=self.tls)
                connection.set_tunnel(self.host, self.port, headers=self.tunnel_headers)
            else:
                connection = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                         context=self.tls)
            try:
                connection.connect()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                raise NotSent(str(exc) or type(exc).__name__) from exc
            self.connection = connection
            self.connections_opened += 1
        return connection

    def post(self, body: str) -> tuple[int, bytes]:
        """POST the form on the kept-alive connection: (HTTP status, body). NotSent when it could not connect;
        any other error may have followed the request leaving (the connection is then closed)."""
        connection = self.ready()
        try:
            connection.request("POST", self.path, body=body, headers=self.headers)
            response = connection.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, data

    def close(self) -> None:
        """Close the connection, if open; the next request opens a new one."""
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()


def _dropped(sock) -> bool:
    """True when the idle kept-alive connection is unusable: the server closed it, reset it or sent what no
    request asked for. A readable socket may only hold TLS records that are not data (TLS 1.3 session tickets
    come after the handshake): a non-blocking read consumes them and finds no data, and the connection is kept."""
    try:
        poller = select.poll()  # not select.select: it refuses descriptors past 1023
        poller.register(sock, select.POLLIN)
        if not poller.poll(0):
            return False
    except (OSError, ValueError):  # closed on our side
        return True
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1)  # b"" (closed) or unasked data: unusable either way
        return True
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)


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
        """A client with one kept-alive connection and no automatic retries, for the SMS API at `host`
        (host:port; default Vonage's rest.nexmo.com). The environment (HTTPS_PROXY and NO_PROXY, the CA bundle
        in REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else certifi's) is read now. An HTTPS proxy is reached in
        plain HTTP and tunnels (CONNECT); a proxy URL that is not http:// is refused (GatewayNotConfigured)."""
        import certifi
        from kinnekt.sms.gateway import GatewayNotConfigured
        target = urlsplit(f"https://{host or DEFAULT_REST_HOST}/sms/json")
        tls = ssl.create_default_context(
            cafile=os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where())
        token = base64.b64encode(f"{api_key}:{api_secret}".encode()).decode("ascii")
        headers = {"Authorization": f"Basic {token}", "Accept": "application/json",
                   "Content-Type": "application/x-www-form-urlencoded", "User-Agent": "kinnekt"}
        client = VonageClient(target.hostname, target.port or 443, target.path, headers, tls,
                              float(defaults.SMS_HTTP_TIMEOUT_SECONDS))
        proxy = None if urllib.request.proxy_bypass(target.hostname) else urllib.request.getproxies().get("https")
        if proxy:
            parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            if parts.scheme != "http" or not parts.hostname:
                raise GatewayNotConfigured(f"The HTTPS proxy must be an http:// URL (host and port), not {proxy!r}.")
            client.proxy = (parts.hostname, parts.port or 80)
            if parts.username:
                credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                client.tunnel_headers = {"Proxy-Authorization": "Basic " + base64.b64encode(
                    credentials.encode()).decode("ascii")}
        return client

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
        with self.client.lock:
            try:
                self.client.ready()
            except NotSent as exc:
                log.info("Vonage: could not open the connection ahead of sending: %s", exc)

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
            code, body = client.post(form)
        except NotSent as exc:
            return SendResult(None, "failed", error_code="connect", error_text=_short(exc), retryable=True)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("Vonage send %s: outcome unknown (%s)", message.client_ref, exc)
            return SendResult(None, "unknown", error_code="connection", error_text=_short(exc) or type(exc).__name__,
                              unknown_outcome=True)
        except Exception as exc:  # anything else: the request may have left, so it may have been sent
            log.exception("Vonage send %s: unexpected error, outcome unknown", message.client_ref)
            return SendResult(None, "unknown", error_code="unexpected", error_text=_short(exc), unknown_outcome=True)
        if code >= 300:
            log.warning("Vonage send %s: HTTP %s: %r", message.client_ref, code, body[:500])
            text = f"HTTP {code} from Vonage: {_short(body.decode('utf-8', 'replace'))}"
            if code >= 500 and code not in REFUSED_UNHANDLED:
                # A server error after the request arrived (500, or a gateway's 502/504 after passing it on) may
                # come after the message was accepted: a resend could text the phone twice.
                return SendResult(None, "unknown", error_code=f"http-{code}", error_text=text, unknown_outcome=True)
            return SendResult(None, "failed", error_code=f"http-{code}", error_text=text,
                              retryable=code in REFUSED_UNHANDLED)
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
