"""A local HTTPS server speaking Vonage's SMS API wire format (POST /sms/json), for the real SDK to talk to.

Requests are form-encoded with `Authorization: Basic base64(key:secret)`; answers are Vonage's JSON
(`message-count`, `messages[]` with string values; one entry per part of a long text). Wrong
credentials get status "4" in an HTTP 200, as Vonage does. Tests script the next answers:
"ok", ("status", code, text), ("http", code), "drop" (read the whole request, then close the
connection without answering: the "did it send?" case), "close" (answer, then close the kept-alive
connection without saying so, as a server does with an idle one) or "ok-close" (answer with
"Connection: close"). TLS comes from a trustme CA that the
client trusts through REQUESTS_CA_BUNDLE, since the SDK hard-codes https.
"""
from __future__ import annotations

import base64
import itertools
import json
import ssl
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest
import trustme

from kinnekt.sms.encoding import analyze

API_KEY = "fakekey1"
API_SECRET = "fake-secret-0123"


class FakeVonage:
    """The server; `requests` lists what it received (path, headers, form fields), in order."""

    def __init__(self, ca: trustme.CA, api_key: str = API_KEY, api_secret: str = API_SECRET):
        self.api_key, self.api_secret = api_key, api_secret
        self.requests: list[dict] = []
        self.script: deque = deque()
        self._ids = itertools.count(1)
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

    def sent(self) -> list[dict]:
        """Form fields of every /sms/json request received."""
        return [r["form"] for r in self.requests if r["path"] == "/sms/json"]

    def _next(self):
        with self._lock:
            return self.script.popleft() if self.script else "ok"

    def _answer(self, form: dict, authorization: str) -> tuple[int, dict | None]:
        behaviour = self._next()
        if behaviour == "drop":
            return 0, None
        if behaviour in ("close", "ok-close"):
            self.closing = behaviour
        if isinstance(behaviour, tuple) and behaviour[0] == "http":
            return behaviour[1], {"type": "about:blank", "title": "Server error"}
        expected = "Basic " + base64.b64encode(f"{self.api_key}:{self.api_secret}".encode()).decode()
        if authorization != expected:
            return 200, {"message-count": "1", "messages": [{"status": "4", "error-text": "Bad Credentials"}]}
        for field in ("from", "to", "text"):
            if not form.get(field):
                return 200, {"message-count": "1", "messages": [
                    {"status": "2", "error-text": f"Missing {field}"}]}
        if isinstance(behaviour, tuple) and behaviour[0] == "status":
            return 200, {"message-count": "1", "messages": [{"status": behaviour[1], "error-text": behaviour[2]}]}
        parts = max(analyze(form["text"]).segments, 1)
        messages = []
        for _ in range(parts):
            entry = {"to": form["to"], "message-id": f"FAKE{next(self._ids):012X}", "status": "0",
                     "remaining-balance": "15.53590000", "message-price": "0.03330000", "network": "23410"}
            if form.get("client-ref"):
                entry["client-ref"] = form["client-ref"]
            messages.append(entry)
        return 200, {"message-count": str(parts), "messages": messages}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes; do not wait 40 ms on the ACK

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                form = dict(parse_qsl(body, keep_blank_values=True))
                with fake._lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "form": form})
                if self.path != "/sms/json":
                    self._send(404, {"error": "not found"})
                    return
                status, payload = fake._answer(form, self.headers.get("Authorization", ""))
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
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if announce_close:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

        return Handler


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
    """The app configured to send through the fake (key, secret, sender, host override)."""
    for key, value in {"VONAGE_API_KEY": API_KEY, "VONAGE_API_SECRET": API_SECRET,
                       "VONAGE_SENDER": "15550100200", "VONAGE_HOST_OVERRIDE": fake_vonage.host}.items():
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
