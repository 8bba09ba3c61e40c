"""A local fake of Google's OAuth token endpoint and the Google Ads API's REST interface for Customer Match.

A threaded HTTP server on 127.0.0.1; the app reaches it through GOOGLE_OAUTH_* and GOOGLE_ADS_API_URL. Shapes as
kinnekt/audiences/google.py cites them: the token endpoint (`authorization_code`, `refresh_token`, `invalid_grant`),
`customers:listAccessibleCustomers`, `userLists:mutate`, `offlineUserDataJobs:create`, `…:addOperations` (with
`partialFailureError` for malformed identifiers when `enablePartialFailure`), `…:run`, `googleAds:search` for a
job's status, and errors as `{"error": {"code", "message", "status", "details"}}` (RESOURCE_EXHAUSTED with a
RetryInfo `retryDelay`). Calls must carry the bearer token the fake issued and the developer token.
"""
from __future__ import annotations

import itertools
import json
import re
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.local_server import LocalServer

VERSION = "v26"
CLIENT_ID = "google-client.apps.googleusercontent.com"
CLIENT_SECRET = "google-test-secret"
DEVELOPER_TOKEN = "dev-token-123"
HEX64 = re.compile(r"[0-9a-f]{64}")


class FakeGoogleAds(LocalServer):
    """The fake's state (one lock)."""

    def __init__(self):
        self.lock = threading.RLock()
        self.log: list[dict] = []
        self.faults: deque = deque()
        self.codes: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.access_tokens: set[str] = set()
        self.customers = ["1234567890", "9876543210"]
        self.user_lists: dict[str, dict] = {}  # resource name -> {"fields", "members": set of (phone, email)}
        self.jobs: dict[str, dict] = {}
        self.running_polls = 1  # polls answering RUNNING before SUCCESS
        self._ids = itertools.count(700_000)
        super().__init__(_handler(self))

    def reset(self) -> None:
        with self.lock:
            for item in (self.log, self.faults, self.codes, self.refresh_tokens, self.access_tokens,
                         self.user_lists, self.jobs):
                item.clear()
            self.running_polls = 1

    def issue_code(self) -> str:
        with self.lock:
            code = f"4/code{next(self._ids)}"
            self.codes.add(code)
            return code

    def fail_next(self, kind: str, times: int = 1) -> None:
        """The next API calls fail: "quota" (429 RESOURCE_EXHAUSTED, retryDelay 30s), "503", or "401"."""
        with self.lock:
            self.faults.extend([kind] * times)

    def calls(self, kind: str | None = None) -> list[dict]:
        with self.lock:
            return [c for c in self.log if kind is None or c["kind"] == kind]

    def members(self, user_list: str) -> set:
        with self.lock:
            return set(self.user_lists[user_list]["members"])


def _handler(fake: FakeGoogleAds):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _reply(self, status: int, body) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, code: int, status: str, message: str, details=()):
            self._reply(code, {"error": {"code": code, "message": message, "status": status,
                                         "details": list(details)}})

        def _body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length).decode() if length else ""

        def do_GET(self):
            path = urlsplit(self.path).path
            if path == f"/{VERSION}/customers:listAccessibleCustomers":
                if not self._authorised():
                    return None
                fake.log.append({"kind": "customers"})
                return self._reply(200, {"resourceNames": [f"customers/{c}" for c in fake.customers]})
            return self._error(404, "NOT_FOUND", "no such path")

        def _authorised(self) -> bool:
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            if token not in fake.access_tokens:
                self._error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
                return False
            if self.headers.get("developer-token") != DEVELOPER_TOKEN:
                self._error(401, "UNAUTHENTICATED", "The developer token is not valid.")
                return False
            with fake.lock:
                fault = fake.faults.popleft() if fake.faults else None
            if fault == "quota":
                self._error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", details=[
                    {"@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure",
                     "errors": [{"errorCode": {"quotaError": "RESOURCE_EXHAUSTED"}, "message": "Too many requests."}]},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}])
                return False
            if fault == "503":
                self._error(503, "UNAVAILABLE", "The service is currently unavailable.")
                return False
            if fault == "401":
                self._error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
                return False
            return True

        def do_POST(self):
            path = urlsplit(self.path).path
            raw = self._body()  # read whatever the answer: the connection is kept alive for the next request
            if path == "/token":
                return self._token(parse_qs(raw))
            match = re.fullmatch(rf"/{VERSION}/(customers/(\d+))/(.+)", path)
            if not match:
                return self._error(404, "NOT_FOUND", "no such path")
            if not self._authorised():
                return None
            try:
                body = json.loads(raw or "{}")
            except ValueError:
                return self._error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
            customer, rest = match.group(1), match.group(3)
            with fake.lock:
                if rest == "userLists:mutate":
                    create = body["operations"][0]["create"]
                    assert create["crmBasedUserList"]["uploadKeyType"] == "CONTACT_INFO" and create["name"]
                    name = f"{customer}/userLists/{next(fake._ids)}"
                    fake.user_lists[name] = {"fields": create, "members": set()}
                    fake.log.append({"kind": "user_list", "body": body})
                    return self._reply(200, {"results": [{"resourceName": name}]})
                if rest == "offlineUserDataJobs:create":
                    job = body["job"]
                    meta = job["customerMatchUserListMetadata"]
                    if job["type"] != "CUSTOMER_MATCH_USER_LIST" or meta["userList"] not in fake.user_lists:
                        return self._error(400, "INVALID_ARGUMENT", "Invalid job.")
                    name = f"{customer}/offlineUserDataJobs/{next(fake._ids)}"
                    fake.jobs[name] = {"list": meta["userList"], "ops": [], "status": "PENDING", "polls": 0,
                                       "consent": meta.get("consent")}
                    fake.log.append({"kind": "job"})
                    return self._reply(200, {"resourceName": name})
                if rest == "googleAds:search":
                    found = re.search(r"resource_name = '([^']+)'", body.get("query", ""))
                    job = fake.jobs.get(found.group(1)) if found else None
                    fake.log.append({"kind": "search"})
                    if job is None:
                        return self._reply(200, {"results": []})
                    job["polls"] += 1
                    if job["status"] == "RUNNING" and job["polls"] > fake.running_polls:
                        self._apply(job)
                    node = {"resourceName": found.group(1), "status": job["status"]}
                    return self._reply(200, {"results": [{"offlineUserDataJob": node}], "fieldMask": "status"})
                job_match = re.fullmatch(r"offlineUserDataJobs/(\d+):(addOperations|run)", rest)
                if not job_match:
                    return self._error(404, "NOT_FOUND", "no such method")
                name = f"{customer}/offlineUserDataJobs/{job_match.group(1)}"
                job = fake.jobs.get(name)
                if job is None:
                    return self._error(404, "NOT_FOUND", "no such job")
                if job_match.group(2) == "run":
                    job["status"] = "RUNNING"
                    fake.log.append({"kind": "run"})
                    return self._reply(200, {"name": f"{customer}/operations/{next(fake._ids)}"})
                return self._add(job, body)

        def _add(self, job, body):
            errors = []
            operations = body.get("operations") or []
            if len(operations) > 100_000:
                return self._error(400, "INVALID_ARGUMENT", "Too many operations.")
            for index, operation in enumerate(operations):
                [(kind, user)] = operation.items()
                ids = {k: v for ident in user["userIdentifiers"] for k, v in ident.items()}
                if not all(HEX64.fullmatch(v) for v in ids.values()) or not ids:
                    errors.append({"errorCode": {"offlineUserDataJobError": "INVALID_SHA256_FORMAT"},
                                   "message": "The SHA256 encoded value is malformed.",
                                   "location": {"fieldPathElements": [{"fieldName": "operations", "index": index}]}})
                    continue
                job["ops"].append((kind, ids.get("hashedPhoneNumber"), ids.get("hashedEmail")))
            fake.log.append({"kind": "add_operations", "count": len(operations),
                             "ops": sorted({next(iter(o)) for o in operations})})
            if errors and not body.get("enablePartialFailure"):
                return self._error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.")
            answer = {}
            if errors:
                answer["partialFailureError"] = {"code": 3, "message": "Multiple errors in 'details'.", "details": [
                    {"@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure",
                     "errors": errors}]}
            return self._reply(200, answer)

        def _apply(self, job):
            members = fake.user_lists[job["list"]]["members"]
            for kind, phone, email in job["ops"]:
                if kind == "create":
                    members.add((phone, email))
                else:
                    members.difference_update({m for m in members if (phone and m[0] == phone)
                                               or (email and m[1] == email)})
            job["status"] = "SUCCESS"

        def _token(self, form):
            form = {k: v[-1] for k, v in form.items()}
            with fake.lock:
                fake.log.append({"kind": "token", "grant_type": form.get("grant_type")})
                if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                    return self._reply(401, {"error": "invalid_client", "error_description": "Unauthorized"})
                if form.get("grant_type") == "authorization_code":
                    if form.get("code") not in fake.codes:
                        return self._reply(400, {"error": "invalid_grant", "error_description": "Bad Request"})
                    fake.codes.discard(form["code"])
                    refresh = f"1//refresh{next(fake._ids)}"
                    fake.refresh_tokens.add(refresh)
                elif form.get("grant_type") == "refresh_token":
                    if form.get("refresh_token") not in fake.refresh_tokens:
                        return self._reply(400, {"error": "invalid_grant",
                                                 "error_description": "Token has been expired or revoked."})
                    refresh = None
                else:
                    return self._reply(400, {"error": "unsupported_grant_type"})
                access = f"ya29.access{next(fake._ids)}"
                fake.access_tokens.add(access)
            body = {"access_token": access, "expires_in": 3599, "scope": "https://www.googleapis.com/auth/adwords",
                    "token_type": "Bearer"}
            if refresh:
                body["refresh_token"] = refresh
            return self._reply(200, body)

    return Handler


@pytest.fixture(scope="session")
def fake_google_server():
    """The fake Google Ads API, one per test session."""
    fake = FakeGoogleAds().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_google(app, fake_google_server, monkeypatch):
    """A clean fake Google Ads, with the app's Google settings pointed at it; polls and retries without waiting."""
    from kinnekt import defaults
    fake_google_server.reset()
    url = fake_google_server.url
    for key, value in {"GOOGLE_ADS_CLIENT_ID": CLIENT_ID, "GOOGLE_ADS_CLIENT_SECRET": CLIENT_SECRET,
                       "GOOGLE_ADS_DEVELOPER_TOKEN": DEVELOPER_TOKEN, "GOOGLE_ADS_API_VERSION": VERSION,
                       "GOOGLE_ADS_API_URL": url, "GOOGLE_OAUTH_AUTHORIZE_URL": f"{url}/authorize",
                       "GOOGLE_OAUTH_TOKEN_URL": f"{url}/token"}.items():
        monkeypatch.setitem(app.config, key, value)
    monkeypatch.setattr(defaults, "AUDIENCE_POLL_SECONDS", 0)
    monkeypatch.setattr(defaults, "AUDIENCE_RETRY_BASE_SECONDS", 0.01)
    yield fake_google_server
    app.extensions["kinnekt_queue"].drain(30)
