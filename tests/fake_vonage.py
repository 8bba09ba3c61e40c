"""A local HTTPS server speaking Vonage's Messages API wire format (POST /v1/messages), for the gateway to talk to.

Requests are JSON (`channel` sms, `message_type` text, `to`, `from`, `text`, optional `client_ref`, `sms`,
`webhook_url`) with `Authorization: Bearer <JWT>`, the application's RS256 token (its `application_id` claim,
checked with the application's public key). Answers are Vonage's: 202 with `{"message_uuid": ...}`, and errors
as RFC 7807 `application/problem+json` (`type` ending in the Messages API's error code, `title`, `detail`,
`instance`): 401 for a bad token, 422 for missing or invalid fields, 429 when throttled. Tests script the next
answers: "ok", ("error", http_status, code, title), "throttle" (429, code 1000), ("http", code) (a bare problem
document), "drop" (read the whole request, then close the connection without answering: the "did it send?"
case), "close" (answer, then close the kept-alive connection without saying so, as a server does with an idle
one) or "ok-close" (answer with "Connection: close"). TLS comes from a trustme CA that the client trusts through
REQUESTS_CA_BUNDLE.

It also speaks Vonage's US registration APIs (account API key and secret, HTTP Basic; API_KEY / API_SECRET here):
the TFN Registration API (`POST /tfn/v1/registrations`, `GET`/`PATCH /tfn/v1/registrations/{id}`; status
IN_REVIEW until a test decides; a registration needs the business's terms and privacy policy links, named
`terms_and_conditions_url` and `privacy_policy_url` here, our unconfirmed names for the reference's "Terms link" and
"Privacy Policy link") and the 10DLC API (`POST /v1/10dlc/brands`, `POST /v1/10dlc/brands/{brand}/campaigns`,
`GET`/`PATCH` a campaign, `POST …/campaigns/{campaign}/numbers` with `{"country", "number"}`, the number's digits
without "+"). Missing required fields answer 422 with `invalid_parameters`. `decide(id, "approved" | "rejected",
reason)` is the carriers' answer: a TFN registration becomes REGISTERED or REJECTED (with `rejection_reason`, our
unconfirmed guess of its field); a campaign ACTIVE (`traffic_enabled`) or REJECTED, each change recorded in its
`last_status_changes` (`status`, `reason`, `change_date`), as Vonage's campaign object has them. A PATCH of a
rejected one puts it back in review.
It also speaks the Numbers API (https://rest.nexmo.com): `GET /number/search` and `GET /account/numbers`
(`{"count": n, "numbers": [...]}`, no `numbers` when there are none), `POST /number/buy`, `/number/update` and
`/number/cancel` (form-encoded `country`, `msisdn`, `app_id`, `moHttpUrl`: an update with an empty `app_id` or
`moHttpUrl` removes it; `{"error-code": "200", "error-code-label": "success"}`), authenticated with the account's
API key and secret (HTTP Basic, or `api_key`/`api_secret` parameters; else 401 with `error-code` 401). A number
that is not for sale (bought meanwhile) or not in the account is refused with 420 "method failed". Tests put
numbers on sale with `offer(...)` and in the account with `own(...)`; `then_numbers("drop")` drops the next
Numbers API request after reading it.

Also here: Vonage's webhook bodies (`inbound_body`, `status_body`) and their signed JWT (`signed_headers`), as
the Messages API posts them.
"""
from __future__ import annotations

import base64
import itertools
import json
import ssl
import threading
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

APPLICATION_ID = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_KEY = _key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode("ascii")
"""The test application's private key (PKCS#8 PEM, as Vonage's dashboard gives it), made once per process."""
ERRORS = "https://developer.vonage.com/api-errors/messages#"
THROTTLED = ("error", 429, "1000", "Throttled")
BARRED = ("error", 422, "1050", "Number barred")
INVALID = ("error", 422, "1020", "Invalid params")
API_KEY = "kinnekt1"
API_SECRET = "fake-vonage-secret"
"""The account's API key and secret the fake accepts on the registration APIs."""


def vonage_env(fake: "FakeVonage | None" = None) -> dict:
    """The settings that send through the fake (or only the application's, without one)."""
    env = {"VONAGE_APPLICATION_ID": APPLICATION_ID, "VONAGE_PRIVATE_KEY": PRIVATE_KEY}
    if fake is not None:
        env["VONAGE_HOST_OVERRIDE"] = fake.host
    return env


def numbers_env(fake: "FakeVonage") -> dict:
    """The settings that reach the fake's Numbers API with its account's key and secret."""
    return {"VONAGE_API_KEY": API_KEY, "VONAGE_API_SECRET": API_SECRET, "VONAGE_NUMBERS_HOST_OVERRIDE": fake.host}


class FakeVonage:
    """The server; `requests` lists what it received (path, headers, JSON body as `message`), in order."""

    def __init__(self, ca: trustme.CA, application_id: str = APPLICATION_ID, private_key_pem: str | None = None):
        self.application_id = application_id
        self.available: dict[str, dict] = {}
        """Numbers for sale, by msisdn."""
        self.owned: dict[str, dict] = {}
        """The account's numbers, by msisdn (with `app_id` once linked)."""
        self.numbers_script: deque = deque()
        key = serialization.load_pem_private_key((private_key_pem or PRIVATE_KEY).encode(), None)
        self.public_key = key.public_key()
        self.requests: list[dict] = []
        self.tfn: dict[str, dict] = {}  # TFN registration id -> {"body", "status", "rejection_reason"}
        self.brands: dict[str, dict] = {}  # brand_id -> body
        self.campaigns: dict[str, dict] = {}  # campaign_id -> {"brand_id", "body", "status", "changes", "numbers"}
        self.script: deque = deque()
        self._lock = threading.Lock()
        self.closing: str | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    @property
    def host(self) -> str:
        """host:port for VONAGE_HOST_OVERRIDE."""
        return f"127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeVonage":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def then(self, *behaviours) -> None:
        """Answer the next requests like this (afterwards: "ok")."""
        self.script.extend(behaviours)

    def offer(self, msisdn: str, country: str = "US", type_: str = "landline-toll-free", cost: str = "0.95",
              features=("SMS", "VOICE")) -> None:
        """Put a number on sale."""
        self.available[msisdn] = {"country": country, "msisdn": msisdn, "type": type_, "cost": cost,
                                  "features": list(features)}

    def own(self, msisdn: str, country: str = "US", type_: str = "landline-toll-free", features=("SMS", "VOICE"),
            app_id: str | None = None) -> None:
        """Put a number in the account."""
        self.owned[msisdn] = {"country": country, "msisdn": msisdn, "type": type_, "features": list(features),
                              **({"app_id": app_id} if app_id else {})}

    def then_numbers(self, *behaviours) -> None:
        """Answer the next Numbers API requests like this ("drop": read it, close without answering; ("answer",
        status, body): that status with that body, a dict as JSON or text as it is)."""
        self.numbers_script.extend(behaviours)

    def numbers_calls(self, path: str | None = None) -> list[dict]:
        """The Numbers API requests received (method, path, params), optionally of one path."""
        return [r for r in self.requests if r.get("numbers") and (path is None or r["path"] == path)]

    def _numbers_answer(self, method: str, path: str, params: dict, authorization: str) -> tuple[int, dict | None]:
        """The Numbers API's answer to one request (its documented shapes)."""
        with self._lock:
            behaviour = self.numbers_script.popleft() if self.numbers_script else "ok"
        if behaviour == "drop":
            return 0, None
        if isinstance(behaviour, tuple) and behaviour[0] == "answer":
            return behaviour[1], behaviour[2]
        key, secret = params.get("api_key"), params.get("api_secret")
        scheme, _, encoded = authorization.partition(" ")
        if scheme == "Basic":
            import base64
            try:
                key, _, secret = base64.b64decode(encoded).decode().partition(":")
            except ValueError:
                key = secret = None
        if (key, secret) != (API_KEY, API_SECRET):
            return 401, {"error-code": "401", "error-code-label": "authentication failed"}
        routes = {("GET", "/number/search"), ("GET", "/account/numbers"), ("POST", "/number/buy"),
                  ("POST", "/number/update"), ("POST", "/number/cancel")}
        if (method, path) not in routes:
            return 404, {"error-code": "404", "error-code-label": "not found"}
        if path == "/account/numbers":
            return 200, self._listing(self.owned.values(), params)
        country = (params.get("country") or "").upper()
        if not country:
            return 400, {"error-code": "400", "error-code-label": "missing parameter: country"}
        if path == "/number/search":
            wanted = [n for n in self.available.values() if n["country"] == country
                      and (not params.get("type") or n["type"] == params["type"])
                      and all(f in n["features"] for f in (params.get("features") or "").split(",") if f)]
            return 200, self._listing(wanted, params)
        msisdn = params.get("msisdn") or ""
        if not msisdn:
            return 400, {"error-code": "400", "error-code-label": "missing parameter: msisdn"}
        failed = 420, {"error-code": "420", "error-code-label": "method failed"}
        with self._lock:
            if path == "/number/buy":
                number = self.available.get(msisdn)
                if number is None or number["country"] != country:
                    return failed
                del self.available[msisdn]
                self.owned[msisdn] = {k: v for k, v in number.items() if k != "cost"}
            elif path == "/number/update":
                if msisdn not in self.owned:
                    return failed
                for name in ("app_id", "moHttpUrl"):  # an empty value removes it, as documented
                    if params.get(name):
                        self.owned[msisdn][name] = params[name]
                    elif name in params:
                        self.owned[msisdn].pop(name, None)
            elif path == "/number/cancel":
                number = self.owned.pop(msisdn, None)
                if number is None:
                    return failed
        return 200, {"error-code": "200", "error-code-label": "success"}

    @staticmethod
    def _listing(numbers, params: dict) -> dict:
        pattern, how = params.get("pattern") or "", params.get("search_pattern") or "0"
        test = {"0": str.startswith, "1": str.__contains__, "2": str.endswith}.get(how, str.startswith)
        found = sorted((n for n in numbers if not pattern or test(n["msisdn"], pattern)), key=lambda n: n["msisdn"])
        size, index = int(params.get("size") or 10), max(1, int(params.get("index") or 1))
        page = found[(index - 1) * size:index * size]
        return {"count": len(found), **({"numbers": [dict(n) for n in page]} if page else {})}

    def sent(self) -> list[dict]:
        """JSON bodies of every /v1/messages request received."""
        return [r["message"] for r in self.requests if r["path"] == "/v1/messages"]

    def registration_calls(self, method: str | None = None) -> list[dict]:
        """The registration API requests received (method, path, body), in order."""
        return [r for r in self.requests if r["path"].startswith(("/tfn/", "/v1/10dlc/"))
                and (method is None or r.get("method") == method)]

    def decide(self, external_id: str, outcome: str, reason: str | None = None) -> None:
        """The carriers decide a TFN registration or a 10DLC campaign: "approved" or "rejected" (with a reason)."""
        with self._lock:
            found = self.tfn.get(external_id) or self.campaigns.get(external_id)
            assert found is not None, f"no registration {external_id}"
            if external_id in self.tfn:
                found["status"] = "REGISTERED" if outcome == "approved" else "REJECTED"
                found["rejection_reason"] = reason if outcome == "rejected" else None
                return
            found["status"] = "ACTIVE" if outcome == "approved" else "REJECTED"
            self._status_change(found, reason or ("Approved." if outcome == "approved" else None))

    def _status_change(self, campaign: dict, reason: str | None) -> None:
        """Record a campaign's status change as Vonage's `last_status_changes` entries are (one a second)."""
        when = f"2026-01-01 00:00:{len(campaign['changes']):02d}"
        campaign["changes"].append({"status": campaign["status"], "reason": reason, "change_date": when})

    def _registration(self, method: str, path: str, body, authorization: str) -> tuple[int, dict]:
        """Answer a registration API call as Vonage documents it."""
        expected = "Basic " + base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode()
        if authorization != expected:
            return 401, {"type": "https://developer.vonage.com/api-errors#unauthorized", "title": "Unauthorized",
                         "detail": "You did not provide correct credentials."}
        parts = path.strip("/").split("/")
        with self._lock:
            if parts[:3] == ["tfn", "v1", "registrations"]:
                return self._tfn(method, parts[3:], body)
            if parts[:3] == ["v1", "10dlc", "brands"]:
                return self._ten_dlc(method, parts[3:], body)
        return _problem(404, "not-found", "Not found", "no such endpoint")

    def _tfn(self, method, rest, body):
        if method == "POST" and not rest:
            missing = _missing(body, "business.name", "business.address.street", "business.address.city",
                               "business.address.state", "business.address.postal_code", "business.address.country",
                               "business.company_website", "business.contact.first_name", "business.contact.last_name",
                               "business.contact.email", "business.contact.phone", "business.entity_type",
                               "business.terms_and_conditions_url", "business.privacy_policy_url")
            if missing:
                return _invalid(missing)
            registration_id = str(uuid.uuid4())
            self.tfn[registration_id] = {"body": body, "status": "IN_REVIEW", "rejection_reason": None}
            return 201, {"id": registration_id, "status": "IN_REVIEW"}
        found = self.tfn.get(rest[0]) if len(rest) == 1 else None
        if found is None:
            return _problem(404, "not-found", "Not found", "no such registration")
        if method == "PATCH":
            if found["status"] == "REGISTERED":
                return _problem(409, "conflict", "Conflict", "the registration is registered already")
            found.update(body=body, status="IN_REVIEW", rejection_reason=None)
        answer = {"id": rest[0], "status": found["status"]}
        if found["rejection_reason"]:
            answer["rejection_reason"] = found["rejection_reason"]
        return 200, answer

    def _ten_dlc(self, method, rest, body):
        if method == "POST" and not rest:
            missing = _missing(body, "entity_type", "display_name", "company_name", "country", "email", "vertical")
            if missing:
                return _invalid(missing)
            brand_id = "B" + uuid.uuid4().hex[:6].upper()
            self.brands[brand_id] = body
            return 200, {**body, "brand_id": brand_id, "status": "UNVERIFIED"}
        if not rest or rest[0] not in self.brands:
            return _problem(404, "not-found", "Not found", "no such brand")
        brand_id, rest = rest[0], rest[1:]
        if rest == ["campaigns"] and method == "POST":
            missing = _missing(body, "account_id", "usecase", "description", "sample_one", "sample_two",
                               "message_flow_details.brand_name", "message_flow_details.consent_mechanisms")
            if missing:
                return _invalid(missing)
            campaign_id = "C" + uuid.uuid4().hex[:6].upper()
            self.campaigns[campaign_id] = {"brand_id": brand_id, "body": body, "status": "PENDING_REVIEW",
                                           "changes": [], "numbers": []}
            self._status_change(self.campaigns[campaign_id], "Submitted.")
            return 200, self._campaign(campaign_id)
        found = self.campaigns.get(rest[1]) if len(rest) >= 2 and rest[0] == "campaigns" else None
        if found is None or found["brand_id"] != brand_id:
            return _problem(404, "not-found", "Not found", "no such campaign")
        if rest[2:] == ["numbers"] and method == "POST":
            missing = _missing(body, "country", "number")
            if missing:
                return _invalid(missing)
            if not str(body["number"]).isdigit():
                return 422, {"type": "https://developer.vonage.com/api-errors#invalid-params",
                             "title": "Invalid parameters", "detail": "The request failed due to validation errors",
                             "invalid_parameters": [{"name": "number", "reason": "digits only, without +"}]}
            found["numbers"].append(body["number"])
            return 200, {"number": body["number"], "country": body["country"], "status": "PENDING"}
        if rest[2:]:
            return _problem(404, "not-found", "Not found", "no such endpoint")
        if method == "PATCH":
            found.update(body={**found["body"], **(body or {})}, status="PENDING_REVIEW")
            self._status_change(found, "Updated.")
        return 200, self._campaign(rest[1])

    def _campaign(self, campaign_id: str) -> dict:
        """A campaign as Vonage's 10DLC API answers it."""
        found = self.campaigns[campaign_id]
        return {**found["body"], "campaign_id": campaign_id, "brand_id": found["brand_id"],
                "status": found["status"], "traffic_enabled": found["status"] == "ACTIVE",
                "last_status_changes": [dict(c) for c in found["changes"]]}

    def _next(self):
        with self._lock:
            return self.script.popleft() if self.script else "ok"

    def _authorized(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or not token:
            return False
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"], options={"require": ["iat", "jti"]})
        except jwt.PyJWTError:
            return False
        return claims.get("application_id") == self.application_id

    def _answer(self, message: dict, authorization: str) -> tuple[int, dict | None]:
        behaviour = self._next()
        if behaviour == "drop":
            return 0, None
        if behaviour in ("close", "ok-close"):
            self.closing = behaviour
        if isinstance(behaviour, tuple) and behaviour[0] == "http":
            return behaviour[1], {"type": "https://developer.vonage.com/api-errors", "title": "Server error",
                                  "instance": uuid.uuid4().hex}
        if not self._authorized(authorization):
            return 401, {"type": "https://developer.vonage.com/api-errors#unauthorized", "title": "Unauthorized",
                         "detail": "You did not provide correct credentials.", "instance": uuid.uuid4().hex}
        missing = [f for f in ("to", "from", "text", "channel", "message_type") if not message.get(f)]
        if missing:
            return _problem(422, "1010", "Missing params", f"Missing {', '.join(missing)}")
        if message["channel"] != "sms" or message["message_type"] != "text":
            return _problem(422, "1020", "Invalid params", "channel must be sms and message_type text")
        if behaviour == "throttle":
            behaviour = THROTTLED
        if isinstance(behaviour, tuple) and behaviour[0] == "error":
            return _problem(behaviour[1], behaviour[2], behaviour[3], f"{behaviour[3]} (scripted)")
        return 202, {"message_uuid": str(uuid.uuid4())}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes; do not wait 40 ms on the ACK

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path.startswith(("/number/", "/account/")):
                    self._numbers("GET")
                else:
                    self._registration_call("GET")

            def do_PATCH(self):
                self._registration_call("PATCH")

            def _registration_call(self, method: str, message=None):
                if method != "POST":
                    length = int(self.headers.get("Content-Length") or 0)
                    raw = self.rfile.read(length)
                    try:
                        message = json.loads(raw) if raw else None
                    except ValueError:
                        message = None
                    with fake._lock:
                        fake.requests.append({"method": method, "path": self.path, "headers": dict(self.headers),
                                              "message": message})
                status, payload = fake._registration(method, self.path, message,
                                                     self.headers.get("Authorization", ""))
                self._send(status, payload)

            def _numbers(self, method: str, raw: bytes = b""):
                from urllib.parse import parse_qsl, urlsplit
                parts = urlsplit(self.path)
                params = dict(parse_qsl(parts.query, keep_blank_values=True))
                if method == "POST":
                    params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
                with fake._lock:
                    fake.requests.append({"path": parts.path, "method": method, "params": params, "numbers": True,
                                          "headers": dict(self.headers), "message": None})
                status, payload = fake._numbers_answer(method, parts.path, params,
                                                       self.headers.get("Authorization", ""))
                if payload is None:
                    self.close_connection = True
                    return
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.startswith(("/number/", "/account/")):
                    self._numbers("POST", raw)
                    return
                try:
                    message = json.loads(raw)
                except ValueError:
                    message = None
                with fake._lock:
                    fake.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers),
                                          "message": message})
                if self.path.startswith(("/tfn/", "/v1/10dlc/")):
                    self._registration_call("POST", message if isinstance(message, dict) else {})
                    return
                if self.path != "/v1/messages":
                    self._send(*_problem(404, "not-found", "Not found", "no such endpoint"))
                    return
                if not isinstance(message, dict):
                    self._send(*_problem(400, "1020", "Invalid params", "the body is not a JSON object"))
                    return
                status, payload = fake._answer(message, self.headers.get("Authorization", ""))
                if payload is None:  # drop: the request was read, no answer ever comes
                    self.close_connection = True
                    return
                closing, fake.closing = fake.closing, None
                self._send(status, payload, announce_close=closing == "ok-close")
                if closing:
                    self.close_connection = True

            def _send(self, status: int, payload: dict, announce_close: bool = False) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if status < 300 else "application/problem+json")
                self.send_header("Content-Length", str(len(data)))
                if announce_close:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

        return Handler


def _missing(body, *paths: str) -> list[str]:
    """The dotted paths of `body` that are missing or empty."""
    out = []
    for path in paths:
        node = body
        for key in path.split("."):
            node = node.get(key) if isinstance(node, dict) else None
        if node in (None, "", [], {}):
            out.append(path)
    return out


def _invalid(names) -> tuple[int, dict]:
    return 422, {"type": "https://developer.vonage.com/api-errors#invalid-params", "title": "Invalid parameters",
                 "detail": "The request failed due to validation errors",
                 "invalid_parameters": [{"name": name, "reason": "is required"} for name in names]}


def registration_env(fake: "FakeVonage") -> dict:
    """The settings that send registration calls to the fake, with its key and secret."""
    return {"VONAGE_API_KEY": API_KEY, "VONAGE_API_SECRET": API_SECRET, "VONAGE_HOST_OVERRIDE": fake.host}


def _problem(status: int, code: str, title: str, detail: str) -> tuple[int, dict]:
    return status, {"type": ERRORS + code, "title": title, "detail": detail, "instance": uuid.uuid4().hex}


_inbound_ids = itertools.count(1)


def inbound_body(text: str, *, from_: str, to: str, **extra) -> dict:
    """An inbound SMS webhook as the Messages API posts it (numbers without +)."""
    words = text.split()
    body = {"channel": "sms", "message_uuid": str(uuid.uuid4()), "to": to, "from": from_,
            "timestamp": "2026-11-22T10:00:00Z", "text": text, "message_type": "text",
            "sms": {"num_messages": "1", "keyword": words[0].upper() if words else ""},
            "usage": {"currency": "EUR", "price": "0.0057"}, "context_status": "none"}
    body.update(extra)
    return body


def status_body(status: str = "delivered", *, message_uuid: str | None = None, client_ref: str | None = None,
                to: str = "447400123456", code: str | None = None, detail: str | None = None,
                price: str | None = "0.0333", currency: str = "EUR", **extra) -> dict:
    """A message status webhook as the Messages API posts it; `code` adds an `error` object; `usage` is priced in
    the account's currency (euros by default, as most Vonage accounts are billed)."""
    body = {"message_uuid": message_uuid, "to": to, "from": "15550100200", "timestamp": "2026-11-22T10:00:05Z",
            "status": status, "channel": "sms", "client_ref": client_ref, "destination": {"network_code": "23410"},
            "sms": {"count_total": "1"}}
    if price is not None:
        body["usage"] = {"currency": currency, "price": price}
    if code is not None:
        body["error"] = {"type": ERRORS + code, "title": int(code) if code.isdigit() else code,
                         "detail": detail or "", "instance": uuid.uuid4().hex}
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def signed_headers(raw: bytes, secret: str, **claims) -> dict:
    """The Authorization header Vonage signs a webhook body with (HS256 JWT, payload_hash of the body)."""
    from kinnekt.sms.webhook_auth import sign
    return {"Authorization": "Bearer " + sign(raw, secret, **claims), "Content-Type": "application/json"}


@pytest.fixture(scope="session")
def vonage_ca(tmp_path_factory):
    """A throwaway certificate authority and its PEM file."""
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("vonage-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, str(path)


@pytest.fixture
def fake_vonage(vonage_ca, monkeypatch):
    """A running fake whose certificate the requests library trusts."""
    ca, ca_path = vonage_ca
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_path)
    server = FakeVonage(ca).start()
    yield server
    server.stop()


@pytest.fixture
def vonage_config(app, fake_vonage, monkeypatch):
    """The app configured to send through the fake (application id and key, sender, host override)."""
    for key, value in {**vonage_env(fake_vonage), "VONAGE_SENDER": "15550100200"}.items():
        monkeypatch.setitem(app.config, key, value)
    return fake_vonage


@pytest.fixture
def registration_config(app, fake_vonage, monkeypatch):
    """The app configured to call the fake's registration APIs (API key and secret, host override)."""
    for key, value in registration_env(fake_vonage).items():
        monkeypatch.setitem(app.config, key, value)
    return fake_vonage


@pytest.fixture
def settled_jobs(app, monkeypatch):
    """Jobs go to the test app's queue, retries are scheduled far in the future (never into a later test),
    and every queued job has finished before the test's tables are emptied.

    get_queue() returns the queue of the app created last; other test modules create apps of their own
    (demo mode, other configs), whose queue would run our jobs with their config.
    """
    from kinnekt import defaults, queue
    monkeypatch.setattr(queue, "_queue", app.extensions["kinnekt_queue"])
    monkeypatch.setattr(defaults, "SMS_SEND_RETRY_SECONDS", (10 ** 6,))
    monkeypatch.setattr(defaults, "SMS_RECEIPT_RETRY_SECONDS", 10 ** 6)
    yield
    assert app.extensions["kinnekt_queue"].drain(30)
