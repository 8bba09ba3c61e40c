"""Ad audience syncs against the fake Graph API: the difference sent, consent, emails, batches, partial failures,
throttling with backoff, refused tokens, redaction, edits, and links whose segment or account went away."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from kinnekt import defaults
from kinnekt.audiences import connections, tasks
from kinnekt.db import utcnow
from kinnekt.models import AdConnection, AudienceLink, AudienceMember, Subscriber
from kinnekt.models.audience import LinkStatus
from kinnekt.segments import membership
from kinnekt.segments.exports import sha256_hex
from kinnekt.shopify import compliance
from tests import factories as f

US = f.where(f.rule("country", "in", ["US"]))


def phone_hash(phone: str) -> str:
    """Meta's form of a number: digits with the country code, hashed."""
    return sha256_hex(phone.lstrip("+"))


@pytest.fixture
def meta_link(db, shop, fake_meta, jobs):
    """A Meta connection (account 111) and a link of a built "US" segment of three subscribers."""
    people = [f.subscriber(db, shop, country="US") for _ in range(3)]
    segment = f.segment(db, shop, US, name="Americans", kind="manual")
    membership.build(db, segment.id)
    connections.save_grant(db, shop.id, "meta", connections.Granted(
        fake_meta.issue_token(), None, None, [{"id": "111", "name": "Northwind Ads"}]))
    connection = db.scalar(select(AdConnection))
    link = connections.add_link(db, connection, segment)
    jobs.jobs.clear()
    return {"link": link, "segment": segment, "people": people, "connection": connection}


def audience(db, fake, link_id: int) -> set:
    link = db.get(AudienceLink, link_id)
    db.refresh(link)
    return fake.members(link.audience_id)


def test_first_sync_creates_the_audience_and_adds_every_consenting_member(db, shop, meta_link, fake_meta):
    people = meta_link["people"]
    pending = f.subscriber(db, shop, country="US", status="pending")
    assert tasks.run_sync(db, meta_link["link"].id) == "synced"
    [created] = fake_meta.calls("create")
    assert created["params"]["subtype"] == "CUSTOM"
    assert created["params"]["customer_file_source"] == "USER_PROVIDED_ONLY"
    assert created["params"]["name"] == "Kinnekt: Americans"
    assert audience(db, fake_meta, meta_link["link"].id) == {(phone_hash(p.phone), None) for p in people}
    assert phone_hash(pending.phone) not in {h for h, _ in audience(db, fake_meta, meta_link["link"].id)}
    [add] = fake_meta.calls("add")
    assert add["schema"] == ["PHONE"] and add["rows"] == 3  # phones only by default
    link = db.get(AudienceLink, meta_link["link"].id)
    assert (link.status, link.member_count, link.last_added, link.last_removed, link.last_error) == (
        LinkStatus.ACTIVE, 3, 3, 0, None)
    assert link.last_synced_at is not None and link.sync_started_at is None
    # Hashes only: no number is stored or sent readable.
    rows = db.scalars(select(AudienceMember.phone_hash)).all()
    assert sorted(rows) == sorted(phone_hash(p.phone) for p in people)


def test_only_subscribers_who_consent_now_are_sent(db, shop, meta_link, fake_meta):
    """Someone who unsubscribed after the segment was built (its re-check not run yet) is not sent, and is removed
    once they were."""
    first, second, third = meta_link["people"]
    first.status = "unsubscribed"
    db.commit()
    tasks.run_sync(db, meta_link["link"].id)
    assert audience(db, fake_meta, meta_link["link"].id) == {(phone_hash(p.phone), None) for p in (second, third)}
    second.suppressed_at = utcnow()
    db.commit()
    tasks.run_sync(db, meta_link["link"].id)
    assert audience(db, fake_meta, meta_link["link"].id) == {(phone_hash(third.phone), None)}


def test_a_later_sync_sends_only_who_entered_and_who_left(db, shop, meta_link, fake_meta):
    link_id = meta_link["link"].id
    tasks.run_sync(db, link_id)
    leaving, staying, _other = meta_link["people"]
    leaving.country = "CA"
    newcomer = f.subscriber(db, shop, country="US")
    db.commit()
    membership.build(db, meta_link["segment"].id)
    fake_meta.log.clear()
    assert tasks.run_sync(db, link_id) == "synced"
    assert [(c["kind"], c["rows"]) for c in fake_meta.calls()] == [("remove", 1), ("add", 1)]
    members = audience(db, fake_meta, link_id)
    assert (phone_hash(newcomer.phone), None) in members and (phone_hash(leaving.phone), None) not in members
    link = db.get(AudienceLink, link_id)
    assert (link.member_count, link.last_added, link.last_removed) == (3, 1, 1)
    fake_meta.log.clear()
    tasks.run_sync(db, link_id)
    assert fake_meta.calls() == []  # nothing changed: no request at all


def test_batches_and_read_chunks_cover_everyone_once(db, shop, meta_link, fake_meta, monkeypatch):
    monkeypatch.setattr(defaults, "AUDIENCE_BATCH_SIZE", 2)
    monkeypatch.setattr(defaults, "AUDIENCE_READ_CHUNK", 3)
    more = [f.subscriber(db, shop, country="US") for _ in range(6)]
    membership.build(db, meta_link["segment"].id)
    link_id = meta_link["link"].id
    tasks.run_sync(db, link_id)
    everyone = meta_link["people"] + more
    assert [c["rows"] for c in fake_meta.calls("add")] == [2, 2, 2, 2, 1]
    assert audience(db, fake_meta, link_id) == {(phone_hash(p.phone), None) for p in everyone}
    # Every other person leaves, one joins: removals and the add, in batches of two, nothing sent twice.
    for person in everyone[::2]:
        person.country = "CA"
    joined = f.subscriber(db, shop, country="US")
    db.commit()
    membership.build(db, meta_link["segment"].id)
    fake_meta.log.clear()
    tasks.run_sync(db, link_id)
    assert sum(c["rows"] for c in fake_meta.calls("remove")) == 5
    assert sum(c["rows"] for c in fake_meta.calls("add")) == 1
    assert audience(db, fake_meta, link_id) == {(phone_hash(p.phone), None) for p in everyone[1::2] + [joined]}
    assert db.scalar(select(func.count()).select_from(AudienceMember)) == 5


def test_emails_are_sent_only_when_the_merchant_allows_them(db, shop, meta_link, fake_meta):
    person, *_ = meta_link["people"]
    buyer = f.customer(db, shop, email=" Ada@Example.COM ")
    person.customer_id = buyer.id
    db.commit()
    tasks.run_sync(db, meta_link["link"].id)
    assert all(email is None for _phone, email in audience(db, fake_meta, meta_link["link"].id))
    connections.set_allow_emails(db, meta_link["connection"], True)
    fake_meta.log.clear()
    tasks.run_sync(db, meta_link["link"].id)
    # The one whose identifiers changed is removed with the old ones and added with the new.
    assert [(c["kind"], c["rows"]) for c in fake_meta.calls()] == [("remove", 1), ("add", 1)]
    assert fake_meta.calls("add")[0]["schema"] == ["PHONE", "EMAIL"]
    assert (phone_hash(person.phone), sha256_hex("ada@example.com")) in audience(db, fake_meta, meta_link["link"].id)


def test_a_partial_failure_is_recorded_and_shown(db, shop, meta_link, fake_meta):
    bad = meta_link["people"][0]
    fake_meta.invalid_rows.add(phone_hash(bad.phone))
    assert tasks.run_sync(db, meta_link["link"].id) == "synced"
    link = db.get(AudienceLink, meta_link["link"].id)
    assert link.last_invalid == 1 and "1 of the people sent were refused" in link.last_error
    assert link.status == LinkStatus.ACTIVE


@pytest.mark.parametrize("fault, waits", [("throttle", 60), ("user_limit", None), ("500", None)])
def test_throttling_and_failures_retry_with_backoff(db, shop, meta_link, fake_meta, jobs, fault, waits):
    link_id = meta_link["link"].id
    fake_meta.fail_next(fault)
    before = utcnow()
    assert tasks.run_sync(db, link_id) == "retrying"
    link = db.get(AudienceLink, link_id)
    assert link.status == LinkStatus.RETRYING and link.attempts == 1 and link.last_error
    assert link.sync_started_at is None
    [(name, args, job_id, when)] = [j for j in jobs.jobs if j[0] == "sync_audience"]
    assert args == (link_id,) and when is not None
    expected = waits if waits is not None else defaults.AUDIENCE_RETRY_BASE_SECONDS
    assert (when - before).total_seconds() == pytest.approx(expected, abs=5)
    # The next attempt goes through and clears the error.
    assert tasks.run_sync(db, link_id) == "synced"
    db.refresh(link)
    assert (link.status, link.attempts, link.last_error, link.next_attempt_at) == (LinkStatus.ACTIVE, 0, None, None)
    assert len(audience(db, fake_meta, link_id)) == 3


def test_backoff_doubles_and_gives_up_after_the_last_attempt(db, shop, meta_link, fake_meta, monkeypatch):
    monkeypatch.setattr(defaults, "AUDIENCE_RETRY_BASE_SECONDS", 60)
    assert [tasks.retry_delay(n) for n in (1, 2, 3)] == [60, 120, 240]
    assert tasks.retry_delay(30) == defaults.AUDIENCE_RETRY_MAX_SECONDS
    assert tasks.retry_delay(1, retry_after=600) == 600
    fake_meta.fail_next("500", times=defaults.AUDIENCE_MAX_ATTEMPTS)
    outcomes = [tasks.run_sync(db, meta_link["link"].id) for _ in range(defaults.AUDIENCE_MAX_ATTEMPTS)]
    assert outcomes[:-1] == ["retrying"] * (defaults.AUDIENCE_MAX_ATTEMPTS - 1) and outcomes[-1] == "failed"
    link = db.get(AudienceLink, meta_link["link"].id)
    assert link.status == LinkStatus.FAILED and "temporary problem" in link.last_error


def test_a_refused_token_fails_without_retrying_and_asks_to_connect_again(db, shop, meta_link, fake_meta, jobs):
    fake_meta.revoke_tokens()
    assert tasks.run_sync(db, meta_link["link"].id) == "failed"
    link = db.get(AudienceLink, meta_link["link"].id)
    assert link.status == LinkStatus.FAILED and "access token" in link.last_error
    assert "access token" in db.get(AdConnection, meta_link["connection"].id).error
    assert "sync_audience" not in jobs.names()


def test_a_sync_in_progress_holds_the_link(db, shop, meta_link, fake_meta):
    link = db.get(AudienceLink, meta_link["link"].id)
    link.sync_started_at = utcnow()
    db.commit()
    assert tasks.run_sync(db, link.id) == "busy"
    assert fake_meta.calls() == []
    link.sync_started_at = utcnow() - dt.timedelta(seconds=defaults.AUDIENCE_SYNC_STALE_SECONDS + 1)
    db.commit()
    assert tasks.run_sync(db, link.id) == "synced"  # a dead sync's hold expires


def test_redaction_removes_the_person_from_every_audience(db, shop, meta_link, fake_meta, jobs):
    link_id = meta_link["link"].id
    tasks.run_sync(db, link_id)
    phone = meta_link["people"][0].phone
    payload = {"customer": {"id": None, "email": None, "phone": phone}, "orders_to_redact": []}
    jobs.jobs.clear()
    compliance.redact_customer(db, shop, payload)
    assert db.scalar(select(func.count()).select_from(Subscriber).where(Subscriber.phone == phone)) == 0
    assert [args for name, args, *_ in jobs.jobs if name == "sync_audience"] == [(link_id,)]
    detached = db.scalar(select(func.count()).select_from(AudienceMember)
                         .where(AudienceMember.subscriber_id.is_(None)))
    assert detached == 1
    assert tasks.run_sync(db, link_id) == "waiting"  # the redaction asked for a rebuild of the segment: after it
    membership.build(db, meta_link["segment"].id)
    assert tasks.run_sync(db, link_id) == "synced"
    assert (phone_hash(phone), None) not in audience(db, fake_meta, link_id)
    assert db.scalar(select(func.count()).select_from(AudienceMember)) == 2  # and its hashes are gone here too


def test_a_segment_edit_queues_the_sync_of_its_audiences(db, shop, meta_link, jobs):
    membership.build(db, meta_link["segment"].id, cause="edit")
    assert [args for name, args, *_ in jobs.jobs if name == "sync_audience"] == [(meta_link["link"].id,)]
    jobs.jobs.clear()
    membership.build(db, meta_link["segment"].id, cause="sweep")  # nobody entered or left: nothing to send
    assert "sync_audience" not in jobs.names()


def test_a_segment_being_built_is_waited_for(db, shop, meta_link, fake_meta, jobs):
    segment = meta_link["segment"]
    segment.build_status = "pending"
    db.commit()
    assert tasks.run_sync(db, meta_link["link"].id) == "waiting"
    assert fake_meta.calls() == [] and "sync_audience" in jobs.names()


def test_a_deleted_segment_stops_its_link_cleanly(db, shop, meta_link, fake_meta):
    link_id = meta_link["link"].id
    tasks.run_sync(db, link_id)
    db.delete(meta_link["segment"])
    db.commit()
    assert link_id in tasks.due_links(db)
    assert tasks.run_sync(db, link_id) == "stopped"
    link = db.get(AudienceLink, link_id)
    assert link.status == LinkStatus.STOPPED and "deleted" in link.last_error and link.segment_name == "Americans"
    assert db.scalar(select(func.count()).select_from(AudienceMember)) == 0
    assert tasks.run_sync(db, link_id) == "stopped"
    assert link_id not in tasks.due_links(db, now=utcnow() + dt.timedelta(days=3))


def test_a_disconnected_account_stops_queued_syncs_cleanly(db, shop, meta_link, fake_meta):
    link_id = meta_link["link"].id
    tasks.run_sync(db, link_id)
    connections.disconnect(db, meta_link["connection"])
    assert db.scalar(select(func.count()).select_from(AudienceMember)) == 0
    assert tasks.run_sync(db, link_id) == "gone"
    assert tasks.due_links(db, now=utcnow() + dt.timedelta(days=3)) == []


def test_the_periodic_scan_queues_links_due_daily_and_lost_retries(db, shop, meta_link, fake_meta, jobs):
    link_id = meta_link["link"].id
    assert tasks.due_links(db) == [link_id]  # never synced
    tasks.run_sync(db, link_id)
    assert tasks.due_links(db) == []
    assert tasks.due_links(db, now=utcnow() + dt.timedelta(days=1, minutes=1)) == [link_id]
    link = db.get(AudienceLink, link_id)
    link.status, link.next_attempt_at = LinkStatus.RETRYING, utcnow() - dt.timedelta(hours=2)
    db.commit()
    assert tasks.due_links(db) == [link_id]
    jobs.jobs.clear()
    assert tasks.queue_due_syncs() == 1 and jobs.names() == ["sync_audience"]


def test_the_sync_job_is_periodic_and_registered():
    from kinnekt.jobs import JOBS
    from kinnekt.queue import job_path, lane_for
    from kinnekt.schedule import periodic_jobs
    assert "sync_audiences" in {p.name for p in periodic_jobs()}
    assert JOBS[job_path(tasks.sync_audience)] is tasks.sync_audience
    assert lane_for(tasks.sync_audience) == "bulk"


def test_a_long_sync_hands_over_to_a_new_job_and_goes_on(db, shop, meta_link, fake_meta, jobs, monkeypatch):
    monkeypatch.setattr(defaults, "AUDIENCE_BATCH_SIZE", 2)
    monkeypatch.setattr(defaults, "AUDIENCE_SYNC_SLICE_SECONDS", 0)  # every committed batch ends the slice
    more = [f.subscriber(db, shop, country="US") for _ in range(2)]
    membership.build(db, meta_link["segment"].id)
    jobs.jobs.clear()  # the build queued a sync: the test runs them itself
    link_id = meta_link["link"].id
    outcomes = [tasks.run_sync(db, link_id) for _ in range(4)]
    assert outcomes == ["continued", "continued", "synced", "synced"]
    assert [args for name, args, job_id, _w in jobs.jobs if name == "sync_audience"] == [(link_id,), (link_id,)]
    everyone = meta_link["people"] + more
    assert audience(db, fake_meta, link_id) == {(phone_hash(p.phone), None) for p in everyone}
    assert [c["rows"] for c in fake_meta.calls("add")] == [2, 2, 1]
    assert db.get(AudienceLink, link_id).member_count == 5


def test_an_unforeseen_error_retries_and_keeps_what_was_sent(db, shop, meta_link, fake_meta, jobs, monkeypatch):
    from kinnekt.audiences import meta
    calls = []
    real = meta.MetaAudiences.add

    def breaks_second_batch(self, audience_id, rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(self, audience_id, rows)

    monkeypatch.setattr(defaults, "AUDIENCE_BATCH_SIZE", 2)
    monkeypatch.setattr(meta.MetaAudiences, "add", breaks_second_batch)
    assert tasks.run_sync(db, meta_link["link"].id) == "retrying"
    link = db.get(AudienceLink, meta_link["link"].id)
    assert "RuntimeError" in link.last_error and link.sync_started_at is None
    assert db.scalar(select(func.count()).select_from(AudienceMember)) == 2  # the first batch stays recorded
    assert tasks.run_sync(db, meta_link["link"].id) == "synced"
    assert len(audience(db, fake_meta, meta_link["link"].id)) == 3
