"""A local fake of Meta's Graph API for the tests: Facebook Login's dialog and token endpoint, ad accounts, custom
audiences and their users.

A threaded HTTP server on 127.0.0.1; the app reaches it through META_GRAPH_URL and META_DIALOG_URL. Requests and
answers follow the documented shapes (kinnekt/audiences/meta.py cites them): `GET /{v}/oauth/access_token` (code,
or `grant_type=fb_exchange_token`) -> `{"access_token", "token_type", "expires_in"}`; `GET /{v}/me/adaccounts` ->
`{"data": [{"id": "act_…", "account_id", "name"}], "paging": {…}}`; `POST /{v}/act_{id}/customaudiences` ->
`{"id"}`; `POST`/`DELETE /{v}/{audience}/users` with a form `payload={"schema", "data"}` -> `{"audience_id",
"session_id", "num_received", "num_invalid_entries", "invalid_entry_samples"}`; errors as `{"error": {"message",
"type", "code", "error_subcode", "fbtrace_id"}}`, throttling (code 80003 or 17) with `X-Business-Use-Case-Usage`.
Every call must carry a token the fake issued and its `appsecret_proof`.
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.local_server import LocalServer

VERSION = "v25.0"
APP_ID = "1234567890"
APP_SECRET = "meta-test-app-secret"
HEX64 = re.compile(r"[0-9a-f]{64}")
SCHEMA_KEYS = {"PHONE", "EMAIL", "PHONE_SHA256", "EMAIL_SHA256"}


class FakeMeta(LocalServer):
    """The fake's state, shared by its request handlers (one lock)."""

    def __init__(self):
        self.lock = threading.RLock()
        self.log: list[dict] = []
        self.faults: deque = deque()
        self.codes: dict[str, str] = {}      # code -> redirect_uri it was issued for
        self.tokens: dict[str, str] = {}     # token -> "short" | "long"
        self.accounts = [{"account_id": "111", "name": "Northwind Ads"}, {"account_id": "222", "name": "Second"}]
        self.audiences: dict[str, dict] = {}  # id -> {"account", "name", "fields", "members": {phone or email}}
        self.invalid_rows: set[str] = set()  # hashes the fake treats as invalid entries (a partial failure)
        self._ids = itertools.count(6_000_000_000)
        super().__init__(_handler(self))

    def reset(self) -> None:
        """Forget everything between tests."""
        with self.lock:
            self.log.clear()
            self.faults.clear()
            self.codes.clear()
            self.tokens.clear()
            self.audiences.clear()
            self.invalid_rows.clear()
            self.accounts = [{"account_id": "111", "name": "Northwind Ads"}, {"account_id": "222", "name": "Second"}]

    # -- test helpers --
    def issue_code(self, redirect_uri: str) -> str:
        """A code the dialog would hand back to `redirect_uri`."""
        with self.lock:
            code = f"code-{next(self._ids)}"
            self.codes[code] = redirect_uri
            return code

    def issue_token(self) -> str:
        """A long-lived user token (as after a login)."""
        with self.lock:
            token = f"EAAlong{next(self._ids)}"
            self.tokens[token] = "long"
            return token

    def revoke_tokens(self) -> None:
        """Every token stops working (code 190)."""
        with self.lock:
            self.tokens.clear()

    def fail_next(self, kind: str, times: int = 1) -> None:
        """The next audience calls fail: "throttle" (code 80003, a wait in the usage header), "user_limit" (17),
        "500", or "token" (190)."""
        with self.lock:
            self.faults.extend([kind] * times)

    def calls(self, kind: str | None = None) -> list[dict]:
        """Logged requests (kind: "token", "accounts", "create", "add", "remove")."""
        with self.lock:
            return [c for c in self.log if kind is None or c["kind"] == kind]

    def members(self, audience_id: str) -> set:
        """The audience's people, as (phone hash, email hash) rows."""
        with self.lock:
            return set(self.audiences[audience_id]["members"])


def _handler(fake: FakeMeta):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _reply(self, status: int, body, headers=None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, code: int, message: str, headers=None, kind="OAuthException", subcode=None):
            error = {"message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEf"}
            if subcode:
                error["error_subcode"] = subcode
            self._reply(status, {"error": error}, headers)

        def _params(self) -> dict:
            query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                body = self.rfile.read(length).decode()
                query.update({k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()})
            return query

        def _authorised(self, params) -> bool:
            token = params.get("access_token", "")
            proof = hmac.new(APP_SECRET.encode(), token.encode(), hashlib.sha256).hexdigest()
            if token not in fake.tokens:
                self._error(400, 190, "Error validating access token: The session has been invalidated.")
                return False
            if params.get("appsecret_proof") != proof:
                self._error(400, 100, "Invalid appsecret_proof provided in the API argument",
                            kind="GraphMethodException")
                return False
            return True

        def _fault(self) -> bool:
            with fake.lock:
                kind = fake.faults.popleft() if fake.faults else None
            if kind == "throttle":
                usage = {"111": [{"type": "custom_audience", "call_count": 100, "total_cputime": 20, "total_time": 30,
                                  "estimated_time_to_regain_access": 1}]}
                self._error(400, 80003, "There have been too many calls to this ad-account. Wait a bit and try again.",
                            headers={"X-Business-Use-Case-Usage": json.dumps(usage)}, subcode=2446079)
            elif kind == "user_limit":
                self._error(400, 17, "User request limit reached")
            elif kind == "500":
                self._reply(500, {"error": {"message": "An unknown error occurred", "code": 1, "type": "OAuthException",
                                            "is_transient": True}})
            elif kind == "token":
                self._error(400, 190, "Error validating access token: Session has expired.", subcode=463)
            return kind is not None

        def do_GET(self):
            path = urlsplit(self.path).path
            params = self._params()
            if path == f"/{VERSION}/dialog/oauth":
                code = fake.issue_code(params.get("redirect_uri", ""))
                query = urlencode({"code": code, "state": params.get("state", "")})
                target = params.get("redirect_uri", "") + "?" + query
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path == f"/{VERSION}/oauth/access_token":
                with fake.lock:
                    fake.log.append({"kind": "token", "params": params})
                if params.get("client_id") != APP_ID or params.get("client_secret") != APP_SECRET:
                    return self._error(400, 1, "Error validating client secret.")
                if params.get("grant_type") == "fb_exchange_token":
                    if fake.tokens.get(params.get("fb_exchange_token", "")) is None:
                        return self._error(400, 190, "Error validating access token")
                    token = fake.issue_token()
                    return self._reply(200, {"access_token": token, "token_type": "bearer", "expires_in": 5183944})
                with fake.lock:
                    redirect_uri = fake.codes.pop(params.get("code", ""), None)
                if redirect_uri is None or redirect_uri != params.get("redirect_uri"):
                    return self._error(400, 100, "This authorization code has been used.", subcode=36009)
                with fake.lock:
                    token = f"EAAshort{next(fake._ids)}"
                    fake.tokens[token] = "short"
                return self._reply(200, {"access_token": token, "token_type": "bearer", "expires_in": 5400})
            if path == f"/{VERSION}/me/adaccounts":
                with fake.lock:
                    fake.log.append({"kind": "accounts", "params": params})
                if not self._authorised(params):
                    return None
                data = [{"id": f"act_{a['account_id']}", **a} for a in fake.accounts]
                return self._reply(200, {"data": data, "paging": {"cursors": {"before": "a", "after": "b"}}})
            return self._error(404, 803, "Unknown path")

        def do_POST(self):
            self._write("POST")

        def do_DELETE(self):
            self._write("DELETE")

        def _write(self, method: str):
            path = urlsplit(self.path).path
            params = self._params()
            created = re.fullmatch(rf"/{VERSION}/act_(\d+)/customaudiences", path)
            users = re.fullmatch(rf"/{VERSION}/(\d+)/users", path)
            if not (created and method == "POST") and not users:
                return self._error(404, 803, "Unknown path")
            if not self._authorised(params) or self._fault():
                return None
            if created:
                with fake.lock:
                    fake.log.append({"kind": "create", "params": params})
                if params.get("subtype") != "CUSTOM" or not params.get("name"):
                    return self._error(400, 100, "Invalid parameter", kind="GraphMethodException")
                if params.get("customer_file_source") not in ("USER_PROVIDED_ONLY", "PARTNER_PROVIDED_ONLY",
                                                             "BOTH_USER_AND_PARTNER_PROVIDED"):
                    return self._error(400, 100, "customer_file_source is required")
                with fake.lock:
                    audience_id = str(next(fake._ids))
                    fake.audiences[audience_id] = {"account": created.group(1), "name": params["name"],
                                                   "fields": params, "members": set()}
                return self._reply(200, {"id": audience_id})
            audience_id = users.group(1)
            if audience_id not in fake.audiences:
                return self._error(400, 100, "Unsupported post request. Object with ID does not exist",
                                   kind="GraphMethodException", subcode=33)
            try:
                payload = json.loads(params.get("payload", ""))
                schema, data = payload["schema"], payload["data"]
                schema = [schema] if isinstance(schema, str) else list(schema)
                assert schema and set(schema) <= SCHEMA_KEYS and isinstance(data, list)
                assert all(isinstance(row, list) and len(row) == len(schema) for row in data)
            except (ValueError, KeyError, TypeError, AssertionError):
                return self._error(400, 100, "Invalid parameter: payload", kind="GraphMethodException")
            if len(data) > 10_000:
                return self._error(400, 100, "Too many users in one request (max 10000)")
            invalid, samples, rows = 0, {}, []
            for row in data:
                values = dict(zip([key.replace("_SHA256", "") for key in schema], row))
                phone, email = values.get("PHONE") or None, values.get("EMAIL") or None
                bad = [v for v in (phone, email) if v and (not HEX64.fullmatch(v) or v in fake.invalid_rows)]
                if bad or not (phone or email):
                    invalid += 1
                    samples.setdefault(bad[0] if bad else "", "invalid")
                    continue
                rows.append((phone, email))
            with fake.lock:
                fake.log.append({"kind": "add" if method == "POST" else "remove", "rows": len(data),
                                 "schema": schema})
                members = fake.audiences[audience_id]["members"]
                if method == "POST":
                    members.update(rows)
                else:
                    phones = {p for p, _e in rows if p}
                    emails = {e for _p, e in rows if e}
                    members.difference_update({m for m in members if m[0] in phones or (m[1] and m[1] in emails)})
            self._reply(200, {"audience_id": audience_id, "session_id": str(next(fake._ids)),
                              "num_received": len(data), "num_invalid_entries": invalid,
                              "invalid_entry_samples": dict(list(samples.items())[:10])})

    return Handler


@pytest.fixture(scope="session")
def fake_meta_server():
    """The fake Graph API, one per test session."""
    fake = FakeMeta().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_meta(app, fake_meta_server, monkeypatch):
    """A clean fake Meta, with the app's Meta settings pointed at it and retries without waiting."""
    from kinnekt import defaults
    fake_meta_server.reset()
    for key, value in {"META_APP_ID": APP_ID, "META_APP_SECRET": APP_SECRET, "META_API_VERSION": VERSION,
                       "META_GRAPH_URL": fake_meta_server.url, "META_DIALOG_URL": fake_meta_server.url}.items():
        monkeypatch.setitem(app.config, key, value)
    monkeypatch.setattr(defaults, "AUDIENCE_RETRY_BASE_SECONDS", 0.01)
    yield fake_meta_server
    app.extensions["kinnekt_queue"].drain(30)
