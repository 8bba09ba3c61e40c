"""Shared test helpers: queues that record jobs, running the app's queue dry, delivering webhooks and texts.

This module is a pytest plugin (tests/conftest.py lists it in `pytest_plugins`): its fixtures are there for every
test module, which takes them as parameters without importing them.
"""
from __future__ import annotations

import datetime as dt
import html as html_lib
import io
import re
import itertools
import time

import pytest
from sqlalchemy import select

from kinnekt.db import Session, utcnow
from kinnekt.models import OutboxMessage, WebhookEvent
from kinnekt.queue import get_queue
from kinnekt.tenancy import bind_shop
from tests import factories
from tests import shopify_payloads as sp


# ---------------------------------------------------------------------------------------------- shops

@pytest.fixture
def shop_us(db, shop):
    """The shop with quiet hours off (the real clock decides sends here): the campaign sending tests' shop."""
    shop.quiet_hours_enabled = False
    db.commit()
    return shop


# ---------------------------------------------------------------------------------------------- the app's queue

def drain(timeout: float = 20) -> None:
    """Run the current app's queue dry: every job due has finished (a test's "and then the workers ran")."""
    assert get_queue().drain(timeout)


def wait_until(db, predicate, timeout: float = 20.0):
    """Let the in-process queue work until `predicate()` holds (or `timeout` seconds pass); returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        assert get_queue().drain(timeout)
        db.expire_all()
        if predicate() or time.monotonic() > deadline:
            return predicate()
        time.sleep(0.05)


@pytest.fixture
def finished_jobs(app):
    """The jobs a test queued (segment builds and re-checks, mostly) finish before its tables are emptied, else they
    race the clean-up; a module asks for it with `pytestmark = pytest.mark.usefixtures("finished_jobs")`."""
    yield
    assert app.extensions["kinnekt_queue"].drain(60)


class RecordingQueue:
    """Stands in for the job queue where a test drives the jobs itself: remembers what was queued."""

    mode = "recording"

    def __init__(self):
        self.jobs: list[tuple] = []

    def enqueue(self, func, *args, job_id=None, **kwargs):
        self.jobs.append((func.__name__, args, job_id, None))
        return job_id

    def enqueue_at(self, when, func, *args, job_id=None, **kwargs):
        self.jobs.append((func.__name__, args, job_id, when))
        return job_id

    def enqueue_in(self, delay, func, *args, job_id=None, **kwargs):
        return self.enqueue_at(utcnow() + delay, func, *args, job_id=job_id, **kwargs)

    def enqueue_batched(self, func, group, arg, items, *, delay=0.0):
        """A batched job (segment re-checks) is remembered as one job of `arg` and the items, in order."""
        self.jobs.append((func.__name__, (arg, sorted(items)), None, None))
        return True

    def drain(self, timeout=10.0):
        return True

    def lane_states(self, lanes=()):
        return []

    def unfinished(self, job_ids) -> set[str]:
        """Those of `job_ids` recorded (a recorded job never runs by itself), as the real queues answer."""
        recorded = {job_id for _name, _args, job_id, _when in self.jobs}
        return {job_id for job_id in job_ids if job_id in recorded}

    def names(self) -> list[str]:
        return [name for name, *_ in self.jobs]


@pytest.fixture
def jobs(app, monkeypatch):
    """Jobs are recorded, not run: the test calls start / run itself."""
    from kinnekt import queue
    recorder = RecordingQueue()
    monkeypatch.setitem(app.extensions, "kinnekt_queue", recorder)
    monkeypatch.setattr(queue, "_queue", recorder)
    return recorder


class ImportRecordingQueue:
    """Stands in for the job queue where a test runs the import jobs itself: remembers what was queued (segment
    re-checks too, which it takes batched, as the real queues do)."""

    mode = "recording"

    def __init__(self):
        self.jobs: list[tuple[str, tuple, str | None]] = []

    def enqueue(self, func, *args, job_id=None, **kwargs):
        self.jobs.append((func.__name__, args, job_id))
        return job_id

    def enqueue_batched(self, func, group, arg, items, *, delay=0.0):
        self.jobs.append((func.__name__, (arg, sorted(items)), None))
        return True

    def drain(self, timeout=10.0):
        return True

    def imports(self) -> list[tuple[tuple, str | None]]:
        return [(args, job_id) for name, args, job_id in self.jobs if name == "import_subscribers"]


@pytest.fixture
def import_jobs(app, monkeypatch):
    """Jobs are recorded, not run; imports take a file of more than 3 rows as a job, 2 rows per batch."""
    from kinnekt import defaults, queue
    recorder = ImportRecordingQueue()
    monkeypatch.setitem(app.extensions, "kinnekt_queue", recorder)
    monkeypatch.setattr(queue, "_queue", recorder)
    monkeypatch.setattr(defaults, "SUBSCRIBER_IMPORT_INLINE_ROWS", 3)
    monkeypatch.setattr(defaults, "SUBSCRIBER_IMPORT_BATCH_ROWS", 2)
    return recorder


# ---------------------------------------------------------------------------------------------- deliveries

@pytest.fixture
def deliver(app, client, db):
    """POST a signed Shopify webhook delivery, check the 200, run the queue dry, and return the stored event of
    that topic (re-read), checked as processed."""
    queue = app.extensions["kinnekt_queue"]

    def send(topic: str, payload: dict, **fields) -> WebhookEvent:
        response = sp.deliver(client, topic, payload, secret=app.config["SHOPIFY_API_SECRET"], **fields)
        assert response.status_code == 200, response.data
        assert queue.drain()
        db.expire_all()
        event = db.scalar(select(WebhookEvent).where(WebhookEvent.topic == topic)
                          .order_by(WebhookEvent.id.desc()).limit(1))
        assert event.processed_at is not None, event.error
        return event

    return send


SENDER = "15550100200"
"""The number the browser tests' demo shops text from."""
MSISDN = "447400123456"
"""The number that texts them (as Vonage writes it)."""
PHONE = "+" + MSISDN
_message_ids = itertools.count(1)


@pytest.fixture
def text_in(live_server, page, app):
    """Text the shop's number from MSISDN the way the Messages API calls the inbound webhook (JSON POST), then let
    the in-process queue handle it."""
    from tests.fake_vonage import inbound_body

    def send(text: str):
        response = page.request.post(f"{live_server}/sms/inbound", data=inbound_body(text, from_=MSISDN, to=SENDER),
                                     headers={"Content-Type": "application/json"})
        assert response.status == 204
        assert app.extensions["kinnekt_queue"].drain(20)
    return send


def outbox() -> list[str]:
    """The texts the demo Outbox holds for PHONE, oldest first."""
    bind_shop(None)
    Session.expire_all()
    return Session.scalars(select(OutboxMessage.text).where(OutboxMessage.to_phone == PHONE)
                           .order_by(OutboxMessage.id)).all()


# ---------------------------------------------------------------------------------------------- pages and people

@pytest.fixture
def embedded(app, monkeypatch, page):
    """Pages served as inside the Shopify admin: App Bridge on (its CDN script answered empty, the test's init
    script being App Bridge), as in production."""
    monkeypatch.setitem(app.config, "APP_BRIDGE_ENABLED", True)
    page.route("https://cdn.shopify.com/**",
               lambda route: route.fulfill(status=200, content_type="text/javascript", body="/* faked */"))
    return page


@pytest.fixture
def audience_of_three(db, shop):
    """Three subscribed US numbers in a built segment; quiet hours off (the clock is moved around freely)."""
    shop.quiet_hours_enabled = False
    db.commit()
    people = [factories.subscriber(db, shop, country="US") for _ in range(3)]
    return people, factories.country_segment(db, shop, "US", ["US"], built_at=AUDIENCE_BUILT_AT)


AUDIENCE_BUILT_AT = dt.datetime(2026, 3, 15, 16, 0, tzinfo=dt.timezone.utc)
"""When audience_of_three's segment was built (the campaign modules' NOW)."""


# ---------------------------------------------------------------------------------------------- subscriber CSV imports

def send_file(client, auth, content: bytes | None, consent: bool = True, filename="people.csv"):
    """The upload: the mapping step of the file, or the form again with what is wrong."""
    data = {}
    if consent:
        data["consent"] = "on"
    if content is not None:
        data["file"] = (io.BytesIO(content), filename)
    return client.post("/subscribers/import", data=data, headers=auth, content_type="multipart/form-data")


def choices(response) -> dict[str, str]:
    """The mapping form's fields as the page fills them: each column's selected target, each name."""
    html = response.get_data(as_text=True)
    form = {}
    for name, options in re.findall(r'<select[^>]*name="(column-\d+)"[^>]*>(.*?)</select>', html, re.S):
        form[name] = html_lib.unescape(re.search(r'<option value="([^"]*)" selected>', options).group(1))
    for name, value in re.findall(r'<input[^>]*name="(name-\d+)"[^>]*value="([^"]*)"', html):
        form[name] = html_lib.unescape(value)
    return form


def draft_id(response) -> int:
    return int(re.search(r'action="/subscribers/imports/(\d+)/confirm"', response.get_data(as_text=True)).group(1))


def upload_csv(client, auth, content: bytes | None, consent: bool = True, filename="people.csv", **mapping):
    """Upload a file and, when it reaches the mapping step, import it as suggested (`mapping`: fields changed)."""
    response = send_file(client, auth, content, consent, filename)
    if 'id="import-mapping-form"' not in response.get_data(as_text=True):
        return response
    return client.post(f"/subscribers/imports/{draft_id(response)}/confirm", headers=auth,
                       data={**choices(response), **mapping})


# ---------------------------------------------------------------------------------------------- a sending business

TOLL_FREE = "18885550101"
"""The toll-free number `numbers_fake` puts on sale first (the one the browser tests buy)."""


@pytest.fixture
def billed(app, monkeypatch, live_server, fake_shopify, shop, vonage_config, settled_jobs):
    """Billing on, the shop connected to the fake Shopify, whose webhooks reach the live app."""
    from kinnekt import defaults
    from tests.fake_shopify import connect
    monkeypatch.setitem(app.config, "BILLING_REQUIRED", True)
    monkeypatch.setitem(app.config, "SHOPIFY_APP_URL", live_server)
    monkeypatch.setattr(defaults, "BILLING_BLOCKED_RECHECK_SECONDS", 10 ** 6)
    connect(fake_shopify, shop)
    fake_shopify.webhook_url = f"{live_server}/webhooks/billing"
    return fake_shopify


@pytest.fixture
def numbers_fake(app, monkeypatch, vonage_config, settled_jobs):
    """The fake Vonage's Numbers API configured, with two toll-free numbers on sale."""
    from tests.fake_vonage import numbers_env
    for key, value in numbers_env(vonage_config).items():
        monkeypatch.setitem(app.config, key, value)
    vonage_config.offer(TOLL_FREE, cost="0.95")
    vonage_config.offer("18885550102", cost="0.95")
    return vonage_config
