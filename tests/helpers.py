"""Shared test helpers: queues that record jobs, running the app's queue dry, delivering webhooks and texts.

This module is a pytest plugin (tests/conftest.py lists it in `pytest_plugins`): its fixtures are there for every
test module, which takes them as parameters without importing them.
"""
from __future__ import annotations

import datetime as dt
import itertools

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

    def enqueue_batched(self, func, group, arg, items):
        """A batched job (segment re-checks) is remembered as one job of `arg` and the items, in order."""
        self.jobs.append((func.__name__, (arg, sorted(items)), None, None))
        return True

    def drain(self, timeout=10.0):
        return True

    def lane_states(self, lanes=()):
        return []

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

    def enqueue_batched(self, func, group, arg, items):
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
    """Text the shop's number from MSISDN the way Vonage calls the inbound webhook (form POST), then let the
    in-process queue handle it."""
    def send(text: str):
        words = text.split()
        response = page.request.post(f"{live_server}/sms/inbound", form={
            "msisdn": MSISDN, "to": SENDER, "messageId": f"0A00000{next(_message_ids):09d}", "text": text,
            "type": "text", "keyword": words[0].upper() if words else "", "message-timestamp": "2026-11-22 10:00:00",
            "api-key": "fakekey1"})
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
