"""The Vonage gateway (real SDK against the HTTPS fake), the Outbox sink, and sending queued messages once."""
from __future__ import annotations

import base64
import select as io_select
import socket
import threading
import time

import pytest
from sqlalchemy import func, select
from sqlalchemy import update as sa_update

from kinnekt.models import Message, OutboxMessage, Subscriber
from kinnekt.sms import gateway as gateway_module
from kinnekt.sms import prices
from kinnekt.sms.gateway import GatewayNotConfigured, OutboxGateway, SendResult, get_gateway
from kinnekt.sms.outgoing import deliver, queue_message
from kinnekt.sms.vonage import VonageGateway
from kinnekt.subscribers import optin
from tests.conftest import make_shop
from tests.fake_vonage import APPLICATION_ID, BARRED, PRIVATE_KEY, THROTTLED
from tests.helpers import drain as _drain

PHONE = "+447400123456"

pytestmark = pytest.mark.usefixtures("settled_jobs")


def _signer(application_id=APPLICATION_ID, key=PRIVATE_KEY):
    return VonageGateway.make_signer(application_id, key)


def _gateway(fake, sender="AcmeShop", application_id=APPLICATION_ID, host=None):
    client = VonageGateway.make_client(host or fake.host)
    return VonageGateway(client, sender=sender, account=application_id, signer=_signer(application_id),
                         callback="https://kinnekt.test/sms/receipt")


def test_send_success_speaks_the_wire_format(fake_vonage):
    import jwt
    result = _gateway(fake_vonage).send(PHONE, "Hi Ann, 10% off today", "m42")
    assert result.status == "sent" and not result.retryable and not result.unknown_outcome
    assert len(result.provider_id) == 36 and result.price is None  # priced by the table (kinnekt/sms/prices.py)
    [request] = fake_vonage.requests
    assert request["path"] == "/v1/messages" and request["headers"]["Content-Type"] == "application/json"
    scheme, token = request["headers"]["Authorization"].split(" ")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert scheme == "Bearer" and claims["application_id"] == APPLICATION_ID and claims["jti"]
    assert request["message"] == {
        "to": "447400123456", "from": "AcmeShop", "text": "Hi Ann, 10% off today", "client_ref": "m42",
        "channel": "sms", "message_type": "text", "sms": {"encoding_type": "text"},
        "webhook_url": "https://kinnekt.test/sms/receipt", "webhook_version": "v1"}


def test_our_tokens_carry_the_sdks_claims_and_header():
    import jwt
    from vonage_jwt import JwtClient
    ours = _signer().generate_application_jwt()
    sdk = JwtClient(APPLICATION_ID, PRIVATE_KEY).generate_application_jwt()
    assert jwt.get_unverified_header(ours) == jwt.get_unverified_header(sdk) == {"alg": "RS256", "typ": "JWT"}
    claims, theirs = (jwt.decode(t, options={"verify_signature": False}) for t in (ours, sdk))
    assert set(claims) == set(theirs) and claims["exp"] - claims["iat"] == theirs["exp"] - theirs["iat"]
    assert claims["application_id"] == theirs["application_id"] == APPLICATION_ID


def test_each_send_carries_a_fresh_token(fake_vonage):
    gateway = _gateway(fake_vonage)
    gateway.send(PHONE, "one", "m40")
    gateway.send(PHONE, "two", "m41")
    first, second = (r["headers"]["Authorization"] for r in fake_vonage.requests)
    assert first != second  # a new jti each time, as the SDK does


def test_numeric_sender_goes_without_plus(fake_vonage):
    _gateway(fake_vonage, sender="+1 555 010 0200").send(PHONE, "hello", "m1")
    assert fake_vonage.sent()[0]["from"] == "15550100200"


def test_unicode_text_is_sent_as_type_unicode(fake_vonage):
    result = _gateway(fake_vonage).send(PHONE, "Merci ! Voilà 🎉", "m2")
    assert result.status == "sent"
    assert fake_vonage.sent()[0]["sms"] == {"encoding_type": "unicode"}


def test_a_long_text_is_one_request(fake_vonage):
    result = _gateway(fake_vonage).send(PHONE, "a" * 200, "m3")
    assert result.status == "sent" and len(fake_vonage.requests) == 1


def test_throttled_is_retryable_with_its_code(fake_vonage):
    fake_vonage.then("throttle")
    result = _gateway(fake_vonage).send(PHONE, "hello", "m4")
    assert (result.status, result.error_code) == ("failed", "1000")
    assert result.error_text.startswith("HTTP 429 from Vonage: Throttled")
    assert result.retryable and not result.unknown_outcome
    assert len(fake_vonage.requests) == 1


def test_bad_credentials_are_a_permanent_failure(fake_vonage):
    result = _gateway(fake_vonage, application_id="bbbbbbbb-0000-4000-8000-000000000000").send(PHONE, "hello", "m5")
    assert (result.status, result.error_code) == ("failed", "unauthorized")
    assert "Unauthorized" in result.error_text and not result.retryable and not result.unknown_outcome


def test_barred_number_is_unreachable(fake_vonage):
    fake_vonage.then(BARRED)
    result = _gateway(fake_vonage).send(PHONE, "hello", "m6")
    assert (result.status, result.error_code) == ("failed", "1050")
    assert result.recipient_unreachable and not result.retryable


@pytest.mark.parametrize("behaviour, code, retryable", [
    (("error", 422, "1020", "Invalid params"), "1020", False),
    (("error", 402, "low-balance", "Low balance"), "low-balance", True),  # after a top-up
    (("error", 422, "1120", "Illegal Sender Address - rejected"), "1120", False),
])
def test_problem_documents_give_their_code(fake_vonage, behaviour, code, retryable):
    fake_vonage.then(behaviour)
    result = _gateway(fake_vonage).send(PHONE, "hello", "m6b")
    assert (result.status, result.error_code, result.retryable, result.unknown_outcome) == (
        "failed", code, retryable, False)


def test_a_key_that_cannot_sign_is_a_configuration_error():
    with pytest.raises(GatewayNotConfigured, match="private key"):
        VonageGateway.make_signer(APPLICATION_ID, "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----")


@pytest.mark.parametrize("code, status, retryable, unknown", [
    (429, "failed", True, False),  # too many requests: not handled, try again later
    (503, "failed", True, False),  # service unavailable: not handled
    (500, "unknown", False, True),  # may follow the message's acceptance: never resent, the receipt settles it
    (502, "unknown", False, True),
    (504, "unknown", False, True),
    (400, "failed", False, False),  # the request itself is wrong: a permanent failure
])
def test_http_errors_are_retried_only_when_the_request_was_not_handled(fake_vonage, code, status, retryable, unknown):
    fake_vonage.then(("http", code))
    result = _gateway(fake_vonage).send(PHONE, "hello", "m7")
    assert (result.status, result.error_code, result.retryable, result.unknown_outcome) == (
        status, f"http-{code}", retryable, unknown)
    assert len(fake_vonage.requests) == 1  # never repeated by the client


def test_dropped_connection_after_the_request_is_an_unknown_outcome_sent_once(fake_vonage):
    fake_vonage.then("drop")
    gateway = _gateway(fake_vonage)
    result = gateway.send(PHONE, "hello", "m8")
    assert result.status == "unknown" and result.unknown_outcome and not result.retryable
    assert len(fake_vonage.requests) == 1  # neither the SDK nor urllib3 sent it again
    # the same client keeps working afterwards
    assert gateway.send(PHONE, "next", "m9").status == "sent"


def test_the_fake_catches_the_sdk_default_resending_after_a_drop(fake_vonage):
    """Why the gateway posts itself: with the SDK's client the same SMS goes out twice."""
    from vonage import Auth, HttpClientOptions, Vonage
    from vonage_messages import Sms
    fake_vonage.then("drop")
    client = Vonage(Auth(application_id=APPLICATION_ID, private_key=PRIVATE_KEY),
                    HttpClientOptions(api_host=fake_vonage.host))
    assert client.messages.send(Sms(to="447400123456", from_="AcmeShop", text="hello")).message_uuid
    assert len(fake_vonage.sent()) == 2


def test_the_sdk_made_to_send_once_cannot_tell_a_lost_answer_from_a_request_never_sent(fake_vonage):
    """Turned down to one attempt, the SDK's client reports a dropped answer and a refused connection alike."""
    import requests
    from vonage import Auth, HttpClientOptions, Vonage
    from vonage_messages import Sms
    errors = []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    fake_vonage.then("drop")
    for host in (fake_vonage.host, closed):
        client = Vonage(Auth(application_id=APPLICATION_ID, private_key=PRIVATE_KEY),
                        HttpClientOptions(api_host=host, pool_maxsize=1, max_retries=0))
        with pytest.raises(requests.ConnectionError) as caught:
            client.messages.send(Sms(to="447400123456", from_="AcmeShop", text="hello"))
        errors.append(type(caught.value))
    assert len(fake_vonage.sent()) == 1  # sent once this way, but:
    assert errors == [requests.ConnectionError, requests.ConnectionError]


def test_connection_refused_never_left_so_it_is_retryable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = VonageGateway.make_client(f"127.0.0.1:{port}")
    result = VonageGateway(client, sender="AcmeShop", account=APPLICATION_ID, signer=_signer()).send(
        PHONE, "hello", "m10")
    assert (result.status, result.error_code, result.retryable, result.unknown_outcome) == (
        "failed", "connect", True, False)


def test_a_certificate_refused_in_the_handshake_never_left_so_it_is_retryable(fake_vonage, tmp_path, monkeypatch):
    import trustme
    stranger = tmp_path / "stranger.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(stranger))  # read when the client is made
    result = _gateway(fake_vonage).send(PHONE, "hello", "m11")
    assert (result.status, result.error_code, result.retryable, result.unknown_outcome) == (
        "failed", "connect", True, False)
    assert fake_vonage.requests == []


def test_warm_opens_the_connection_the_first_send_then_uses(fake_vonage):
    gateway = _gateway(fake_vonage)
    assert gateway.client.connections_opened == 0
    gateway.warm()
    assert gateway.client.connections_opened == 1 and fake_vonage.requests == []  # connected, nothing sent
    assert gateway.send(PHONE, "hello", "m12").status == "sent"
    gateway.warm()  # already connected: nothing more
    assert gateway.send(PHONE, "again", "m13").status == "sent"
    assert gateway.client.connections_opened == 1
    assert [r["message"]["client_ref"] for r in fake_vonage.requests] == ["m12", "m13"]


def test_a_connection_the_server_closed_while_idle_is_replaced_before_the_next_send(fake_vonage):
    """Vonage closes an idle kept-alive connection after a while: the next send notices it before its request
    and opens a new one, so the message is sent (not an unknown outcome) and only once."""
    fake_vonage.then("close")  # answers, then closes the connection without saying so
    gateway = _gateway(fake_vonage)
    assert gateway.send(PHONE, "first", "m20").status == "sent"
    deadline = time.monotonic() + 5
    while not _readable(gateway.client.connection.sock) and time.monotonic() < deadline:
        time.sleep(0.01)  # the server's close reaches us
    result = gateway.send(PHONE, "second", "m21")
    assert (result.status, result.unknown_outcome) == ("sent", False)
    assert [r["message"]["client_ref"] for r in fake_vonage.requests] == ["m20", "m21"]
    assert gateway.client.connections_opened == 2


def test_an_answer_that_says_connection_close_closes_it_and_the_next_send_reconnects(fake_vonage):
    fake_vonage.then("ok-close")  # answers with "Connection: close"
    gateway = _gateway(fake_vonage)
    assert gateway.send(PHONE, "first", "m22").status == "sent"
    assert gateway.client.connection is None
    assert gateway.send(PHONE, "second", "m23").status == "sent"
    assert gateway.client.connections_opened == 2 and len(fake_vonage.requests) == 2


def test_sends_go_through_an_https_proxy_tunnel_with_its_credentials(fake_vonage, monkeypatch):
    with _ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://kin%40nekt:s3cret@127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "")
        monkeypatch.delenv("no_proxy", raising=False)
        result = _gateway(fake_vonage).send(PHONE, "via the proxy", "m24")
    assert result.status == "sent" and fake_vonage.sent()[0]["client_ref"] == "m24"
    assert proxy.requests == [(f"CONNECT {fake_vonage.host} HTTP/1.0",
                               "Basic " + base64.b64encode(b"kin@nekt:s3cret").decode())]


def test_a_proxy_refusing_the_tunnel_never_left_so_it_is_retryable(fake_vonage, monkeypatch):
    with _ConnectProxy(refuse=True) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "")
        monkeypatch.delenv("no_proxy", raising=False)
        result = _gateway(fake_vonage).send(PHONE, "hello", "m25")
    assert (result.status, result.error_code, result.retryable, result.unknown_outcome) == (
        "failed", "connect", True, False)
    assert fake_vonage.requests == []


def test_a_proxy_that_is_not_plain_http_is_a_configuration_error(fake_vonage, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy.example:3129")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(GatewayNotConfigured, match="http:// URL"):
        VonageGateway.make_client(fake_vonage.host)


def _readable(sock) -> bool:
    return bool(io_select.select([sock], [], [], 0)[0])


class _ConnectProxy:
    """A minimal HTTP proxy that tunnels CONNECT (or refuses it with 407); notes each CONNECT line and its
    Proxy-Authorization."""

    def __init__(self, refuse: bool = False):
        self.refuse = refuse
        self.requests: list[tuple[str, str | None]] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.close()

    def _serve(self):
        try:
            client, _ = self.server.accept()
        except OSError:
            return
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            lines = head.decode().split("\r\n")
            auth = next((line.split(":", 1)[1].strip() for line in lines
                         if line.lower().startswith("proxy-authorization:")), None)
            self.requests.append((lines[0], auth))
            if self.refuse:
                client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = lines[0].split()[1].rsplit(":", 1)
            with socket.create_connection((host, int(port))) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _pipe(client, upstream)


def _pipe(a, b):
    sockets = [a, b]
    while True:
        readable, _, _ = io_select.select(sockets, [], [], 5)
        if not readable:
            return
        for sock in readable:
            data = sock.recv(65536)
            if not data:
                return
            (b if sock is a else a).sendall(data)


def test_warm_without_a_reachable_vonage_does_not_raise_and_the_send_reports_it():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gateway = VonageGateway(VonageGateway.make_client(f"127.0.0.1:{port}"), sender="AcmeShop",
                            account=APPLICATION_ID, signer=_signer())
    gateway.warm()
    result = gateway.send(PHONE, "hello", "m14")
    assert (result.status, result.error_code, result.retryable) == ("failed", "connect", True)


def test_invalid_request_fails_without_a_call(fake_vonage):
    result = _gateway(fake_vonage).send(PHONE, "hello", "r" * 101)  # client-ref is at most 100
    assert (result.status, result.error_code) == ("failed", "invalid-request")
    assert fake_vonage.requests == []


# --- choosing a gateway -------------------------------------------------------------------------

def test_demo_shops_always_use_the_outbox(db, vonage_config):
    demo = make_shop("demo.myshopify.com", is_demo=True)
    assert isinstance(get_gateway(demo), OutboxGateway)


def test_real_shop_uses_vonage_and_its_own_sender(db, vonage_config, monkeypatch):
    shop = make_shop(sender="AcmeShop")
    gateway = get_gateway(shop)
    assert isinstance(gateway, VonageGateway) and gateway.sender == "AcmeShop"
    shop.sender = None
    assert get_gateway(shop).sender == "15550100200"


def test_without_credentials_outside_the_demo_nothing_is_sent(app, db, monkeypatch):
    shop = make_shop()
    monkeypatch.setitem(app.config, "VONAGE_APPLICATION_ID", "")
    with pytest.raises(GatewayNotConfigured):
        get_gateway(shop)
    monkeypatch.setitem(app.config, "DEMO_MODE", True)
    assert isinstance(get_gateway(shop), OutboxGateway)


def test_outbox_writes_one_row_per_client_ref(db):
    demo = make_shop("demo.myshopify.com", is_demo=True, sender="Demo")
    outbox = OutboxGateway(demo, "Demo", db())
    first = outbox.send(PHONE, "hello", "m1")
    again = outbox.send(PHONE, "hello", "m1")
    db.commit()
    assert first.status == "sent" and first.provider_id == again.provider_id
    assert db.scalar(select(func.count()).select_from(OutboxMessage)) == 1


# --- queued messages ----------------------------------------------------------------------------

def _subscriber(db, shop, phone=PHONE):
    return optin.subscribe(db(), shop, phone, source="manual", consent_text="Added by the merchant")


def test_queued_message_is_sent_once_and_counted(db, vonage_config):
    shop = make_shop(sender="AcmeShop")
    sub = _subscriber(db, shop)
    message = queue_message(db(), shop, sub, "Thanks for joining!", kind="reply")
    _drain()
    db.expire_all()
    message = db.get(Message, message.id)
    assert message.status == "sent" and message.provider_id.count("-") == 4
    # the Messages API gives no price with the answer: the table's until a status webhook brings Vonage's
    assert (message.encoding, message.segments, message.price) == (
        "gsm7", 1, prices.price_per_part(prices.country_of(PHONE)))
    assert message.client_ref == f"m{message.id}" and message.sent_at is not None
    assert vonage_config.sent()[0]["client_ref"] == message.client_ref
    sub = db.get(Subscriber, sub.id)
    assert sub.sent_count == 1 and sub.last_received_at is not None
    assert deliver(db(), message.id) == "not pending"  # a second run of the job sends nothing
    assert len(vonage_config.requests) == 1


def test_unknown_outcome_is_recorded_and_never_resent(db, vonage_config):
    shop = make_shop(sender="AcmeShop")
    sub = _subscriber(db, shop)
    vonage_config.then("drop")
    message = queue_message(db(), shop, sub, "hello", kind="reply")
    _drain()
    from kinnekt.sms.tasks import requeue_due_replies
    requeue_due_replies()
    _drain()
    db.expire_all()
    message = db.get(Message, message.id)
    assert message.status == "unknown" and message.error_code == "connection"
    assert len(vonage_config.requests) == 1
    assert db.get(Subscriber, sub.id).sent_count == 0  # not known to be accepted (a receipt will settle it)


def test_throttled_message_waits_and_is_retried(db, vonage_config):
    shop = make_shop(sender="AcmeShop")
    sub = _subscriber(db, shop)
    vonage_config.then(THROTTLED)
    message = queue_message(db(), shop, sub, "hello", kind="reply")
    _drain()
    db.expire_all()
    message = db.get(Message, message.id)
    assert (message.status, message.attempts, message.error_code) == ("pending", 1, "1000")
    assert message.due_at is not None
    assert deliver(db(), message.id) == "not pending"  # not before it is due
    message.due_at = None
    db.commit()
    assert deliver(db(), message.id) == "sent"
    assert db.get(Message, message.id).attempts == 2


def test_permanent_failure_is_recorded_and_barred_number_suppressed(db, vonage_config):
    shop = make_shop(sender="AcmeShop")
    sub = _subscriber(db, shop)
    vonage_config.then(BARRED)
    message = queue_message(db(), shop, sub, "hello", kind="reply")
    _drain()
    db.expire_all()
    message = db.get(Message, message.id)
    assert (message.status, message.error_code) == ("failed", "1050") and "Number barred" in message.error_reason
    sub = db.get(Subscriber, sub.id)
    assert sub.suppressed_at is not None and "Number barred" in sub.suppressed_reason and not sub.marketable


def test_opted_out_subscriber_is_skipped_but_gets_the_stop_confirmation(db, vonage_config):
    shop = make_shop(sender="AcmeShop")
    sub = _subscriber(db, shop)
    # two messages queued while subscribed (their send jobs not run yet), then the number opts out
    reply, confirmation = (Message(shop_id=shop.id, subscriber_id=sub.id, kind=kind, to_phone=PHONE, body=body,
                                   status="pending", client_ref=f"t-{kind}")
                           for kind, body in (("reply", "a reply"), ("stop_confirm", "You are unsubscribed")))
    db.add_all([reply, confirmation])
    db.commit()
    optin.unsubscribe(db(), sub, reason="Texted STOP", source="sms")
    assert deliver(db(), reply.id) == "skipped"
    assert deliver(db(), confirmation.id) == "sent"
    db.expire_all()
    assert (db.get(Message, reply.id).status, db.get(Message, reply.id).skip_reason) == ("skipped", "unsubscribed")
    assert db.get(Message, confirmation.id).status == "sent"
    assert [f["text"] for f in vonage_config.sent()] == ["You are unsubscribed"]


def test_demo_shop_messages_go_to_the_outbox_not_vonage(db, vonage_config):
    demo = make_shop("demo.myshopify.com", is_demo=True, sender="Demo")
    sub = _subscriber(db, demo)
    message = queue_message(db(), demo, sub, "hello from the demo", kind="test")
    _drain()
    db.expire_all()
    assert db.get(Message, message.id).status == "sent"
    assert db.scalars(select(OutboxMessage.text)).all() == ["hello from the demo"]
    assert vonage_config.requests == []
    # The Outbox gives no price: the message is priced by the one table, by its destination (issue 20).
    assert db.get(Message, message.id).price == prices.price_per_part(prices.country_of(sub.phone)) * 1


def test_a_message_the_provider_gave_no_price_for_is_priced_by_the_table():
    accepted = SendResult(provider_id="p1", status="sent")
    priced = prices.with_price(accepted, "+447700900123", "x" * 161)  # 2 parts to the United Kingdom
    assert priced.price == prices.PRICE_PER_PART["GB"] * 2
    own = SendResult(provider_id="p2", status="sent", price=prices.Decimal("0.0500"))
    assert prices.with_price(own, "+447700900123", "hi").price == prices.Decimal("0.0500")  # the provider's wins
    refused = SendResult(provider_id=None, status="failed")
    assert prices.with_price(refused, "+447700900123", "hi").price is None  # never sent, never charged
    assert prices.message_price("not a number", 1) == prices.OTHER_COUNTRIES


def test_bad_queue_input_saves_nothing(db):
    shop = make_shop()
    with pytest.raises(ValueError):
        queue_message(db(), shop, None, "hello", kind="reply")  # nobody to send to
    with pytest.raises(ValueError):
        queue_message(db(), shop, None, "   ", kind="reply", to_phone=PHONE)
    with pytest.raises(ValueError):
        queue_message(db(), shop, None, "hello", kind="campaign-ish", to_phone=PHONE)
    assert db.scalar(select(func.count()).select_from(Message)) == 0


def test_gateway_client_is_reused_for_the_same_configuration(db, vonage_config):
    shop = make_shop(sender="AcmeShop")
    assert get_gateway(shop).client is get_gateway(shop).client
    assert len(gateway_module._vonage_cache) == 1


def test_a_forked_child_sends_on_a_connection_of_its_own(db, vonage_config):
    # A worker sends replies itself and forks a work horse for a campaign's sends: the horse must not write on
    # the worker's kept-alive TLS connection (bench.mixed saw "bad record mac" at the provider).
    import os
    shop = make_shop(sender="AcmeShop")
    parent = get_gateway(shop)
    assert parent.send(PHONE, "before the fork", "t-fork-1").status == "sent"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        try:
            child = get_gateway(shop)
            outcome = f"{child.client is not parent.client} {child.send(PHONE, 'from the child', 't-fork-2').status}"
        except BaseException as exc:  # noqa: BLE001 (reported to the parent)
            outcome = repr(exc)
        os.write(write_end, outcome.encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        assert pipe.read() == "True sent"
    assert parent.send(PHONE, "after the fork", "t-fork-3").status == "sent"
    assert sorted(f["text"] for f in vonage_config.sent()) == ["after the fork", "before the fork", "from the child"]


def test_nothing_is_sent_for_an_uninstalled_shop(db, vonage_config):
    shop = make_shop(sender="AcmeShop")
    sub = _subscriber(db, shop)
    message = Message(shop_id=shop.id, subscriber_id=sub.id, kind="help", to_phone=PHONE, body="help text",
                      status="pending", client_ref="t-help")
    db.add(message)
    shop.uninstalled_at = shop.installed_at
    db.commit()
    assert deliver(db(), message.id) == "skipped"
    assert db.get(Message, message.id).skip_reason == "shop uninstalled"
    assert vonage_config.requests == []


class _Limiter:
    """Stands in for the shared rate limiter: runs `during_wait()` while a send waits for its slot."""

    def __init__(self, during_wait):
        self.during_wait = during_wait
        self.limits = ["one"]

    def acquire(self, max_wait=None):
        self.during_wait()
        return 0.0


def _other_session():
    from sqlalchemy.orm import sessionmaker

    from kinnekt.db import engine
    return sessionmaker(bind=engine(), expire_on_commit=False)()


def _pending(db, shop, sub, kind, body) -> Message:
    """A queued message whose send job has not run yet (the test runs `deliver` itself)."""
    message = Message(shop_id=shop.id, subscriber_id=sub.id, kind=kind, to_phone=sub.phone, body=body,
                      status="pending", client_ref=f"t-{kind}")
    db.add(message)
    db.commit()
    return message


@pytest.mark.parametrize("kind, outcome", [("reply", "skipped"), ("confirmation", "skipped"),
                                           ("stop_confirm", "sent"), ("help", "sent")])
def test_an_opt_out_while_a_message_waits_for_the_rate_limiter_stops_all_but_the_stop_and_help_answers(
        db, vonage_config, monkeypatch, kind, outcome):
    """The message was claimed and allowed, then waited for a slot (a campaign holds the limiter); the STOP
    committed during that wait is seen by the move to "sending", after the wait."""
    from kinnekt.sms import ratelimit
    shop = make_shop(sender="AcmeShop")
    sub = _subscriber(db, shop)
    message = _pending(db, shop, sub, kind, "a text")

    def stop_meanwhile():
        other = _other_session()
        optin.unsubscribe(other, other.get(Subscriber, sub.id), reason='Texted "STOP"', source="sms")
        other.close()

    monkeypatch.setattr(ratelimit, "limiter_for", lambda key, sender, rate=None: _Limiter(stop_meanwhile))
    assert deliver(db(), message.id) == outcome
    db.expire_all()
    message = db.get(Message, message.id)
    if outcome == "skipped":
        assert (message.status, message.skip_reason, message.claim_token) == ("skipped", "unsubscribed", None)
        assert vonage_config.sent() == []
    else:
        assert message.status == "sent" and [f["text"] for f in vonage_config.sent()] == ["a text"]


def test_a_test_send_to_a_number_that_opts_out_meanwhile_is_stopped(db, vonage_config, monkeypatch):
    """A message to a number with no subscriber link (a test send) is checked against the shop's subscriber
    with that number."""
    from kinnekt.sms import ratelimit
    shop = make_shop(sender="AcmeShop")
    sub = _subscriber(db, shop)
    message = queue_message(db(), shop, None, "Sample: 20% off", kind="test", to_phone=PHONE)
    _drain()  # sent: the number is subscribed
    again = Message(shop_id=shop.id, kind="test", to_phone=PHONE, body="Sample: 30% off", status="pending",
                    client_ref="t-test-2")
    db.add(again)
    db.commit()

    def stop_meanwhile():
        other = _other_session()
        optin.unsubscribe(other, other.get(Subscriber, sub.id), reason='Texted "STOP"', source="sms")
        other.close()

    monkeypatch.setattr(ratelimit, "limiter_for", lambda key, sender, rate=None: _Limiter(stop_meanwhile))
    assert deliver(db(), again.id) == "skipped"
    db.expire_all()
    assert db.get(Message, message.id).status == "sent"
    assert [f["text"] for f in vonage_config.sent()] == ["Sample: 20% off"]


def test_a_claim_whose_worker_died_goes_back_and_the_slow_worker_cannot_send_it(app, db, vonage_config, monkeypatch):
    """The worker holding the claim stalls past the lease (waiting for a slot); the recovery gives the message
    back and queues it; when the old worker wakes up it sends nothing; the new job sends it once."""
    import datetime as dt

    from kinnekt import queue
    from kinnekt.db import utcnow
    from kinnekt.sms import ratelimit
    from kinnekt.sms.tasks import requeue_due_replies
    from tests.helpers import RecordingQueue
    shop = make_shop(sender="AcmeShop")
    sub = _subscriber(db, shop)
    message = _pending(db, shop, sub, "reply", "Thanks for joining!")
    recorder = RecordingQueue()
    monkeypatch.setitem(app.extensions, "kinnekt_queue", recorder)
    monkeypatch.setattr(queue, "_queue", recorder)

    def lease_expires():
        other = _other_session()
        other.execute(sa_update(Message).where(Message.id == message.id)
                      .values(updated_at=utcnow() - dt.timedelta(hours=1)))
        other.commit()
        other.close()
        assert requeue_due_replies() == 1

    monkeypatch.setattr(ratelimit, "limiter_for", lambda key, sender, rate=None: _Limiter(lease_expires))
    assert deliver(db(), message.id) == "not ours"
    db.expire_all()
    assert db.get(Message, message.id).status == "pending" and vonage_config.sent() == []
    assert recorder.names() == ["send_message"]
    monkeypatch.setattr(ratelimit, "limiter_for", lambda key, sender, rate=None: _Limiter(lambda: None))
    assert deliver(db(), message.id) == "sent"
    assert len(vonage_config.sent()) == 1 and db.get(Message, message.id).attempts == 2
