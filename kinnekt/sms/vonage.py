"""Vonage Messages API gateway (`POST /v1/messages`): the SDK's message model, the application's JWT, our own
kept-alive HTTPS connection, never a silent repeat.

The SDK's HttpClient re-issues a request after `RemoteDisconnected` up to `pool_maxsize` times, POST
included, and mounts a urllib3 Retry of `max_retries`. A connection that drops after Vonage read the
request would then send the SMS twice. Both can be turned down (pool_maxsize=1, max_retries=0), but what is
left still cannot tell a request that never left (no connection: safe to retry) from one whose answer was lost
(it may have been sent: never retry), since requests reports both as one ConnectionError; and the client writes
each request's Authorization into one header dict shared by every thread. So the request does not go through
it: the SDK's `Sms` model validates the message and gives the JSON body (exactly what the SDK would post), a
fresh RS256 JWT with the SDK's claims is signed per request (`AppSigner`: the key parsed once), and the gateway
posts the body itself (`POST https://{host}/v1/messages`, JSON, `Authorization: Bearer <jwt>`) on one kept-alive
connection of its own (`http.client`, which never retries nor follows redirects). The first error is reported,
never repeated: an error while connecting (before the request left: no connection, a refused certificate, a
proxy refusing the tunnel) is retryable; an error after the request was handed to the connection is an unknown
outcome, recorded and settled by the status webhook. A kept-alive connection that the server closed while idle
is noticed before the next request and replaced, so that case never becomes an unknown outcome.

Answers: 202 with `message_uuid` is accepted. Errors are RFC 7807 problem+json whose `type` ends in the
Messages API's error code (`.../messages-olympus#1050`); 429 (throttled) and 503 are retryable, other 5xx are
unknown outcomes (the message may have been taken), other 4xx permanent failures with their code.
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
import time
import uuid

import urllib.request
from urllib.parse import unquote, urlsplit

import jwt

from kinnekt import defaults
from kinnekt.sms.encoding import vonage_type
from kinnekt.sms.protocol import GatewayNotConfigured, SendResult

log = logging.getLogger(__name__)

ERROR_TEXT = {
    "1000": "Throttled", "1010": "Missing params", "1020": "Invalid params", "1030": "Internal error",
    "1040": "Invalid message", "1050": "Number barred", "1060": "Partner account barred",
    "1070": "Partner quota exceeded", "1080": "Account not enabled for REST", "1090": "Message too long",
    "1100": "Communication failed", "1120": "Illegal sender address - rejected", "1160": "Non-whitelisted destination",
    "1170": "Invalid or missing msisdn", "1300": "Gateway quota exceeded",
}
"""Messages API error codes a send can be refused with (https://developer.vonage.com/api-errors/messages)."""
RETRYABLE_CODES = frozenset({"1000", "1030", "1070", "1100", "1300"})
"""Throttled, internal error, out of credit (after a top-up), communication failed, quota: try again later."""
UNREACHABLE_CODES = frozenset({"1050"})
"""The destination is barred: stop sending to it."""
REFUSED_UNHANDLED = frozenset({429, 503})
"""HTTP statuses that say the request was not handled (too many requests, service unavailable): retry later. Any
other server error is an unknown outcome; any other client error a permanent failure."""
DEFAULT_API_HOST = "api.nexmo.com"
"""Where the Messages API lives (the SDK's default api_host)."""
MESSAGES_PATH = "/v1/messages"
TOKEN_LIFETIME_SECONDS = 15 * 60
"""A token's `exp`, as the SDK sets it."""


class NotSent(OSError):
    """The connection could not be opened: the request never left."""


class VonageClient:
    """One kept-alive HTTPS connection to the Messages API (through an HTTP proxy's tunnel when one is set), and the
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

    def post(self, body: bytes, authorization: str) -> tuple[int, bytes]:
        """POST the JSON body on the kept-alive connection: (HTTP status, body). NotSent when it could not connect;
        any other error may have followed the request leaving (the connection is then closed)."""
        connection = self.ready()
        try:
            connection.request("POST", self.path, body=body, headers={**self.headers, "Authorization": authorization})
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


class AppSigner:
    """Makes the application's RS256 JWT for each request, with the claims the SDK's `vonage_jwt.JwtClient` gives
    (application_id, iat, a fresh jti, exp 15 minutes on). JwtClient hands PyJWT the PEM text, which parses and
    checks the RSA key again at every token (about 45 ms of CPU: more than a campaign sender's whole budget per
    message at 30/s); this parses it once and signs with the loaded key (about 1 ms)."""

    def __init__(self, application_id: str, private_key: str):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        if not application_id:
            raise ValueError("no application id")
        key = serialization.load_pem_private_key(private_key.encode("utf-8"), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the private key is not an RSA key")
        self.application_id, self._key = application_id, key

    def generate_application_jwt(self) -> bytes:
        """A new token (bytes, as the SDK's)."""
        issued = int(time.time())
        claims = {"application_id": self.application_id, "iat": issued, "jti": str(uuid.uuid4()),
                  "exp": issued + TOKEN_LIFETIME_SECONDS}
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"typ": "JWT"}).encode("ascii")


class VonageGateway:
    """Sends through Vonage's Messages API (`POST /v1/messages`, channel sms, message_type text)."""

    name = "vonage"
    rate_limited = True

    def __init__(self, client: VonageClient, *, sender: str, account: str, signer, callback: str | None = None,
                 sender_rate: int | None = None):
        self.client = client
        self.sender = sender
        self.sender_rate = sender_rate
        """The sender's own messages per second (kinnekt/sms/senders.rate_for), None for the app's fallback sender
        (SMS_SENDER_RATE_PER_SECOND)."""
        self.account = account
        """Whose account limit applies: the Vonage application id (one application belongs to one account)."""
        self.signer = signer
        """The application's token maker (AppSigner)."""
        self.callback = callback

    def with_sender(self, sender: str, rate: int | None = None) -> "VonageGateway":
        """The same gateway (one connection, one signer) sending from `sender` at its `rate`."""
        return VonageGateway(self.client, sender=sender, account=self.account, signer=self.signer,
                             callback=self.callback, sender_rate=rate)

    @staticmethod
    def make_signer(application_id: str, private_key: str) -> "AppSigner":
        """The application's JWT maker; GatewayNotConfigured when the key cannot be read or cannot sign."""
        try:
            signer = AppSigner(application_id, private_key)
            signer.generate_application_jwt()
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise GatewayNotConfigured(f"The Vonage private key cannot sign: {_short(exc) or type(exc).__name__}") \
                from None
        return signer

    @staticmethod
    def make_client(host: str | None = None) -> VonageClient:
        """A client with one kept-alive connection and no automatic retries, for the Messages API at `host`
        (host:port; default Vonage's api.nexmo.com). The environment (HTTPS_PROXY and NO_PROXY, the CA bundle
        in REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else certifi's) is read now. An HTTPS proxy is reached in
        plain HTTP and tunnels (CONNECT); a proxy URL that is not http:// is refused (GatewayNotConfigured)."""
        import certifi
        target = urlsplit(f"https://{host or DEFAULT_API_HOST}{MESSAGES_PATH}")
        tls = ssl.create_default_context(
            cafile=os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or certifi.where())
        headers = {"Accept": "application/json", "Content-Type": "application/json", "User-Agent": "kinnekt"}
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

    def _message(self, to: str, text: str, client_ref: str):
        from vonage_messages import Sms, SmsOptions
        return Sms(to=to.lstrip("+"), from_=self.wire_sender, text=text, client_ref=client_ref,
                   sms=SmsOptions(encoding_type=vonage_type(text)), webhook_url=self.callback,
                   webhook_version="v1" if self.callback else None)

    def warm(self) -> None:
        """Get ready to send before the first rate-limiter slot is taken: load the message model, sign a first
        token and open the kept-alive connection (TCP, TLS, the CA bundle). Done inside the first send instead,
        those tens of milliseconds would lie between a slot and its request, and the next slot's request could
        catch up with it at Vonage (two grants' requests in one second's worth of arrivals). Never raises: a
        connection that cannot be opened now is reported by the send."""
        self._message("15550100000", "-", "warm")
        self.signer.generate_application_jwt()
        with self.client.lock:
            try:
                self.client.ready()
            except NotSent as exc:
                log.info("Vonage: could not open the connection ahead of sending: %s", exc)

    def send(self, to: str, text: str, client_ref: str) -> SendResult:
        """Send one SMS; never raises for provider or network trouble, it reports it in the SendResult."""
        from pydantic import ValidationError
        try:
            message = self._message(to, text, client_ref)
        except ValidationError as exc:
            return SendResult(None, "failed", error_code="invalid-request", error_text=_short(exc))
        body = json.dumps(message.model_dump(by_alias=True, exclude_none=True, mode="json"),
                          separators=(",", ":")).encode("utf-8")
        authorization = "Bearer " + self.signer.generate_application_jwt().decode("ascii")
        with self.client.lock:
            return self._send(client_ref, body, authorization)

    def _send(self, client_ref: str, body: bytes, authorization: str) -> SendResult:
        try:
            code, answer = self.client.post(body, authorization)
        except NotSent as exc:
            return SendResult(None, "failed", error_code="connect", error_text=_short(exc), retryable=True)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("Vonage send %s: outcome unknown (%s)", client_ref, exc)
            return SendResult(None, "unknown", error_code="connection", error_text=_short(exc) or type(exc).__name__,
                              unknown_outcome=True)
        except Exception as exc:  # anything else: the request may have left, so it may have been sent
            log.exception("Vonage send %s: unexpected error, outcome unknown", client_ref)
            return SendResult(None, "unknown", error_code="unexpected", error_text=_short(exc), unknown_outcome=True)
        try:
            data = json.loads(answer) if answer else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = None
        if 200 <= code < 300:
            uuid = str((data or {}).get("message_uuid") or "").strip()
            if not uuid or len(uuid) > 64:  # accepted, but unreadable: the request left, so it may have been sent
                log.warning("Vonage send %s: HTTP %s without a message_uuid, outcome unknown", client_ref, code)
                return SendResult(None, "unknown", error_code="unreadable",
                                  error_text="Vonage's answer had no message_uuid", unknown_outcome=True)
            return SendResult(uuid, "sent")
        return self._refused(client_ref, code, data, answer)

    def _refused(self, client_ref: str, code: int, problem: dict | None, raw: bytes) -> SendResult:
        """An HTTP error (RFC 7807 problem+json): its Messages API code (from `type`, else `title`) and words."""
        log.warning("Vonage send %s: HTTP %s: %r", client_ref, code, raw[:500])
        error = problem_code(problem)
        words = " - ".join(str(problem[key]) for key in ("title", "detail")
                           if problem and problem.get(key) not in (None, ""))
        text = f"HTTP {code} from Vonage: {_short(words or raw.decode('utf-8', 'replace'))}"
        if code >= 500 and code not in REFUSED_UNHANDLED:
            # A server error after the request arrived (500, or a gateway's 502/504 after passing it on) may
            # come after the message was accepted: a resend could text the phone twice.
            return SendResult(None, "unknown", error_code=error or f"http-{code}", error_text=text,
                              unknown_outcome=True)
        if code in REFUSED_UNHANDLED:
            return SendResult(None, "failed", error_code=error or f"http-{code}", error_text=text, retryable=True)
        if error is None:
            error = {401: "unauthorized", 402: "low-balance", 403: "forbidden"}.get(code, f"http-{code}")
        return SendResult(None, "failed", error_code=error, error_text=text,
                          retryable=error in RETRYABLE_CODES or error == "low-balance",
                          recipient_unreachable=error in UNREACHABLE_CODES)


def problem_code(problem: dict | None) -> str | None:
    """The Messages API error code of a problem+json body: what follows `#` at the end of its `type` ("1050",
    "low-balance", "unauthorized"), else a numeric `title` (status webhooks put the code there); else None."""
    if not problem:
        return None
    kind = str(problem.get("type") or "")
    match = re.search(r"#([A-Za-z0-9-]{1,40})$", kind)
    if match:
        return match.group(1)
    title = str(problem.get("title") or "").strip()
    return title if re.fullmatch(r"[0-9]{3,5}", title) else None


def _short(value) -> str:
    return str(value).strip()[:500]
