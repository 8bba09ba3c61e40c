"""One audience's sync by difference: who should be in it now against what was sent before (`AudienceMember`).

Who should be in it: the segment's materialised members (`segment_members`, kept current by builds and
re-checks; a build replaces them in one transaction, so a sync never reads a half-built set) who consented to
marketing now (subscribed, not suppressed), each as the platform's hashed identifiers: the phone always, the
email too only when the connection allows emails.

How: both sets are read in subscriber-id order, a chunk at a time (keyset pagination, AUDIENCE_READ_CHUNK rows a
query), and merged: a member not sent before is added, a sent person no longer a member (or a deleted subscriber,
left behind by a customers/redact) is removed with the identifiers sent, and a member whose identifiers changed
is removed with the old ones and added with the new. Adds and removes are sent in batches of AUDIENCE_BATCH_SIZE
(Meta's maximum); each batch's rows are written and committed right after the platform took it, so a sync that
fails half-way resumes from there (the next attempt's difference is what was left) and memory stays flat whatever
the segment's size. Removals of a chunk are always sent before its adds, so a changed person's old row is gone
before the new one is written (one row per link and subscriber, unique in the database).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.audiences.platform import AudienceClient, BatchResult
from kinnekt.db import utcnow
from kinnekt.models import AudienceLink, AudienceMember, Customer, SegmentMember, Subscriber
from kinnekt.models.subscriber import SubscriberStatus

MEMBERS = AudienceMember.__table__
LINKS = AudienceLink.__table__


class SliceEnded(Exception):
    """The sync used its time slice (AUDIENCE_SYNC_SLICE_SECONDS) after committing a batch: a new job goes on."""


@dataclass
class SyncResult:
    """What one sync sent."""

    added: int = 0
    removed: int = 0
    invalid: int = 0
    samples: list[str] = field(default_factory=list)


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class _Sender:
    """The pending adds and removes of one sync, sent and recorded a batch at a time."""

    def __init__(self, session: OrmSession, link: AudienceLink, client: AudienceClient, audience_id: str,
                 deadline: float | None = None):
        self.session, self.link, self.client, self.audience_id = session, link, client, audience_id
        self.deadline = deadline
        self.adds: list[tuple[int, str | None, str | None]] = []
        self.removes: list[tuple[int | None, int | None, str | None, str | None]] = []  # (row id, subscriber…)
        self.result = SyncResult()

    def _noted(self, answer: BatchResult) -> None:
        self.result.invalid += answer.invalid
        if answer.samples and len(self.result.samples) < 5:
            self.result.samples.extend(answer.samples[:5 - len(self.result.samples)])

    def remove(self, row_id: int | None, subscriber_id: int | None, phone_hash, email_hash) -> None:
        self.removes.append((row_id, subscriber_id, phone_hash, email_hash))
        if len(self.removes) >= defaults.AUDIENCE_BATCH_SIZE:
            self.flush_removes()

    def add(self, subscriber_id: int, phone_hash, email_hash) -> None:
        self.adds.append((subscriber_id, phone_hash, email_hash))
        if len(self.adds) >= defaults.AUDIENCE_BATCH_SIZE:
            self.flush_adds()

    def flush_removes(self) -> None:
        if not self.removes:
            return
        batch, self.removes = self.removes, []
        self._noted(self.client.remove(self.audience_id, [(phone, email) for _r, _s, phone, email in batch]))
        row_ids = [row_id for row_id, *_ in batch if row_id is not None]
        subscriber_ids = [sid for row_id, sid, *_ in batch if row_id is None and sid is not None]
        for part in _chunks(row_ids, 1000):
            self.session.execute(delete(MEMBERS).where(MEMBERS.c.id.in_(part)))
        for part in _chunks(subscriber_ids, 1000):
            self.session.execute(delete(MEMBERS).where(MEMBERS.c.link_id == self.link.id,
                                                       MEMBERS.c.subscriber_id.in_(part)))
        self._count(removed=len(batch))

    def flush_adds(self) -> None:
        self.flush_removes()  # a changed person's old row goes first
        if not self.adds:
            return
        batch, self.adds = self.adds, []
        self._noted(self.client.add(self.audience_id, [(phone, email) for _s, phone, email in batch]))
        now = utcnow()
        self.session.execute(insert(MEMBERS), [
            {"shop_id": self.link.shop_id, "link_id": self.link.id, "subscriber_id": sid, "phone_hash": phone,
             "email_hash": email, "sent_at": now} for sid, phone, email in batch])
        self._count(added=len(batch))

    def _count(self, *, added: int = 0, removed: int = 0) -> None:
        """Record the batch's rows and figures in the batch's own transaction, then commit it."""
        self.result.added += added
        self.result.removed += removed
        self.session.execute(update(LINKS).where(LINKS.c.id == self.link.id).values(
            member_count=LINKS.c.member_count + added - removed, last_requests=self.client.requests))
        self.session.commit()
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise SliceEnded()


def _wanted(session: OrmSession, segment_id: int, after: int, limit: int) -> list[tuple]:
    """The next `limit` consenting members of the segment after subscriber id `after`: (id, phone, emails…)."""
    return list(session.execute(
        select(SegmentMember.subscriber_id, Subscriber.phone, Customer.email, Subscriber.email)
        .join(Subscriber, Subscriber.id == SegmentMember.subscriber_id)
        .outerjoin(Customer, Customer.id == Subscriber.customer_id)
        .where(SegmentMember.segment_id == segment_id, SegmentMember.subscriber_id > after,
               Subscriber.status == SubscriberStatus.SUBSCRIBED, Subscriber.suppressed_at.is_(None))
        .order_by(SegmentMember.subscriber_id).limit(limit)))


def _sent(session: OrmSession, link_id: int, after: int, limit: int) -> list[tuple]:
    """The next `limit` rows sent to the audience after subscriber id `after`: (row id, subscriber id, hashes)."""
    return list(session.execute(
        select(MEMBERS.c.id, MEMBERS.c.subscriber_id, MEMBERS.c.phone_hash, MEMBERS.c.email_hash)
        .where(MEMBERS.c.link_id == link_id, MEMBERS.c.subscriber_id > after)
        .order_by(MEMBERS.c.subscriber_id).limit(limit)))


def sync(session: OrmSession, link: AudienceLink, client: AudienceClient, *, audience_id: str,
         segment_id: int, allow_emails: bool, deadline: float | None = None) -> SyncResult:
    """Send the audience the difference between the segment's consenting members and what it got before.

    Commits after each batch; a PlatformError from the client propagates (what was sent before it stays
    recorded), and so does SliceEnded once a batch is committed past `deadline` (time.monotonic()): the next
    sync goes on from there. The link's `member_count` ends exact.
    """
    sender = _Sender(session, link, client, audience_id, deadline)
    limit = defaults.AUDIENCE_READ_CHUNK
    # People left behind by a deleted subscriber (customers/redact): removed first.
    while True:
        detached = list(session.execute(
            select(MEMBERS.c.id, MEMBERS.c.phone_hash, MEMBERS.c.email_hash)
            .where(MEMBERS.c.link_id == link.id, MEMBERS.c.subscriber_id.is_(None))
            .order_by(MEMBERS.c.id).limit(limit)))
        for row_id, phone, email in detached:
            sender.remove(row_id, None, phone, email)
        sender.flush_removes()
        if len(detached) < limit:
            break
    after = 0
    while True:
        wanted = _wanted(session, segment_id, after, limit)
        sent = _sent(session, link.id, after, limit)
        # Compare up to where both chunks reach (a full chunk may continue past its last id).
        upper = min(wanted[-1][0] if len(wanted) == limit else float("inf"),
                    sent[-1][1] if len(sent) == limit else float("inf"))
        have = {sid: (row_id, phone, email) for row_id, sid, phone, email in sent if sid <= upper}
        for sid, phone, customer_email, subscriber_email in wanted:
            if sid > upper:
                break
            hashes = client.identifiers(phone, customer_email or subscriber_email, allow_emails)
            old = have.pop(sid, None)
            if old is not None and (old[1], old[2]) == hashes:
                continue
            if old is not None:
                sender.remove(old[0], sid, old[1], old[2])
            if hashes[0] or hashes[1]:
                sender.add(sid, *hashes)
        for sid, (row_id, phone, email) in have.items():
            sender.remove(row_id, sid, phone, email)
        if upper == float("inf"):
            break
        after = int(upper)
    sender.deadline = None  # the last batches end the sync anyway
    sender.flush_adds()
    sender.flush_removes()
    count = session.scalar(select(func.count()).select_from(MEMBERS).where(MEMBERS.c.link_id == link.id))
    session.execute(update(LINKS).where(LINKS.c.id == link.id).values(member_count=count,
                                                                      last_requests=client.requests))
    session.commit()
    return sender.result
