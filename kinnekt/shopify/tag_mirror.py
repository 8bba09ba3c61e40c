"""A Kinnekt segment mirrored into a Shopify customer tag: its members' customers carry the tag, so the merchant can
use it in Shopify's own segments, discounts and emails.

The setting (`segment_tag_mirrors`: on/off and the tag) is saved by `configure`; `segment_tagged_customers` records
whom Kinnekt tagged, with the tag it gave. A sync (`sync`) makes the record match the segment, by difference, in
batches of SHOPIFY_TAG_BATCH customers:

1. remove: customers recorded for the segment who should no longer carry the tag (they left the segment, the mirror
   is off, the segment was deleted, or the tag was renamed: the old tag goes) get `tagsRemove`, then their rows go;
2. add: customers of the segment's current members (through each subscriber's customer) not yet recorded get
   `tagsAdd`, then their rows are inserted.

Each batch is one GraphQL request of aliased mutations (`t0: tagsAdd(id: $id0, tags: $tags) …`), then one
transaction; the GraphQL client waits for the cost bucket (`extensions.cost.throttleStatus`) before a request and,
on a THROTTLED answer, waits for the points and sends it again. tagsAdd and tagsRemove are idempotent at Shopify,
so a crash between a request and its transaction only repeats that batch on the next sync: the tags end right.
A sync first claims the mirror (a conditional UPDATE of `claimed_until`, renewed after each batch), so two workers
never process one mirror at once; the one that finds it claimed leaves it to the holder, which loops until nothing
is left to do, and the periodic safety net finds anything that arrived as the holder finished.

Syncs are queued by the segment's enter/leave events (the `segment_members_written` signal after builds and
re-checks), by a change of the setting, by the segment's deletion (`segment_deleting`: the mirror is switched off
and its tags removed, then the mirror row goes) and hourly for every mirror.
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import delete, event, func, insert, or_, select, update
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults, signals
from kinnekt.casefold import fold
from kinnekt.db import utcnow
from kinnekt.models import (Customer, Segment, SegmentMember, SegmentTaggedCustomer, SegmentTagMirror, Shop,
                            Subscriber)
from kinnekt.shopify.graphql import AdminClient, ShopifyError, client_for, gid

log = logging.getLogger(__name__)

MAX_TAG_LENGTH = 255
"""Shopify's limit on one customer tag."""


class InvalidMirror(ValueError):
    """The mirror setting cannot be saved: `errors` maps the field ("tag") to what is wrong."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(errors.values()))


@dataclass
class SyncResult:
    """What one sync of a mirror did."""

    added: int = 0
    removed: int = 0
    requests: int = 0
    failed: int = 0
    skipped: bool = False  # another worker holds the mirror


# ---------------------------------------------------------------------------------------------- the setting

def clean_tag(value: object) -> str:
    """A tag as Shopify takes it: trimmed text, 1 to 255 characters, without a comma (Shopify splits tags on
    commas); raises InvalidMirror."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidMirror({"tag": "Type the tag to give the segment's customers."})
    tag = " ".join(value.split())
    if len(tag) > MAX_TAG_LENGTH:
        raise InvalidMirror({"tag": f"A Shopify tag is at most {MAX_TAG_LENGTH} characters."})
    if "," in tag:
        raise InvalidMirror({"tag": "A Shopify tag cannot hold a comma (Shopify reads it as two tags)."})
    if any(ord(ch) < 32 for ch in tag):
        raise InvalidMirror({"tag": "A Shopify tag cannot hold control characters."})
    return tag


def mirror_of(session: OrmSession, segment: Segment) -> SegmentTagMirror | None:
    """The segment's mirror setting, if it ever had one."""
    return session.scalar(select(SegmentTagMirror).where(SegmentTagMirror.shop_id == segment.shop_id,
                                                         SegmentTagMirror.segment_id == segment.id))


def configure(session: OrmSession, segment: Segment, *, enabled: bool, tag: object) -> SegmentTagMirror | None:
    """Save the segment's mirror setting (on with a tag, or off) and queue its sync; commits. Raises InvalidMirror
    (nothing saved) for a bad or taken tag. Switching off keeps the tag (shown again when switched on)."""
    mirror = mirror_of(session, segment)
    if not enabled and mirror is None:
        return None
    if enabled or (isinstance(tag, str) and tag.strip()):
        cleaned = clean_tag(tag)
    else:
        cleaned = mirror.tag
    taken = session.execute(select(SegmentTagMirror.segment_id, SegmentTagMirror.tag).where(
        SegmentTagMirror.shop_id == segment.shop_id, SegmentTagMirror.segment_id != segment.id)).all()
    for other_id, other_tag in taken:
        if fold(other_tag) == fold(cleaned):
            raise InvalidMirror({"tag": f"Another segment (#{other_id}) already mirrors into the tag “{other_tag}”: "
                                        "choose another tag."})
    if mirror is None:
        mirror = SegmentTagMirror(shop_id=segment.shop_id, segment_id=segment.id, tag=cleaned, enabled=enabled)
        session.add(mirror)
    else:
        mirror.tag, mirror.enabled = cleaned, enabled
    mirror.last_error = None
    session.commit()
    _enqueue(segment.shop_id, [segment.id])
    return mirror


def _enqueue(shop_id: int, segment_ids) -> None:
    from kinnekt.shopify import tasks
    tasks.enqueue_sync_tag_mirrors(shop_id, sorted(set(segment_ids)))


# ---------------------------------------------------------------------------------------------- the sync

def _claim(session: OrmSession, segment_id: int, now: dt.datetime) -> bool:
    """Take the mirror for this sync (a conditional UPDATE: one of two concurrent claims wins); commits."""
    claimed = session.execute(
        update(SegmentTagMirror).where(SegmentTagMirror.segment_id == segment_id, or_(
            SegmentTagMirror.claimed_until.is_(None), SegmentTagMirror.claimed_until < now))
        .values(claimed_until=now + dt.timedelta(seconds=defaults.SHOPIFY_TAG_CLAIM_SECONDS),
                updated_at=SegmentTagMirror.updated_at)).rowcount
    session.commit()
    return claimed == 1


def _renew(session: OrmSession, segment_id: int) -> None:
    session.execute(update(SegmentTagMirror).where(SegmentTagMirror.segment_id == segment_id).values(
        claimed_until=utcnow() + dt.timedelta(seconds=defaults.SHOPIFY_TAG_CLAIM_SECONDS),
        updated_at=SegmentTagMirror.updated_at))


def _wanted(shop_id: int, segment_id: int):
    """The Select of the Shopify customer ids the segment's members are (each once)."""
    return (select(Customer.shopify_id)
            .join(Subscriber, Subscriber.customer_id == Customer.id)
            .join(SegmentMember, SegmentMember.subscriber_id == Subscriber.id)
            .where(SegmentMember.shop_id == shop_id, SegmentMember.segment_id == segment_id,
                   Customer.shop_id == shop_id)
            .distinct())


MUTATION_FIELDS = "node { id } userErrors { field message }"
MUTATION_COST = 10
"""The requested cost of one tagsAdd / tagsRemove (a mutation costs 10 points)."""


def _mutation(kind: str, count: int) -> str:
    """`count` aliased tagsAdd / tagsRemove mutations of one tag, one request."""
    name = "KinnektTagsAdd" if kind == "tagsAdd" else "KinnektTagsRemove"
    ids = ", ".join(f"$id{i}: ID!" for i in range(count))
    calls = "\n".join(f"  t{i}: {kind}(id: $id{i}, tags: $tags) {{ {MUTATION_FIELDS} }}" for i in range(count))
    return f"mutation {name}({ids}, $tags: [String!]!) {{\n{calls}\n}}"


def _send(client: AdminClient, kind: str, tag: str, customer_ids: list[int]) -> dict[int, str]:
    """One request tagging (or untagging) these customers; returns the refused ones with Shopify's reason."""
    client.reserve(MUTATION_COST * len(customer_ids))  # wait for the points rather than be THROTTLED
    variables = {f"id{i}": gid("Customer", customer_id) for i, customer_id in enumerate(customer_ids)}
    data = client.query(_mutation(kind, len(customer_ids)), {**variables, "tags": [tag]})
    refused = {}
    for i, customer_id in enumerate(customer_ids):
        errors = ((data.get(f"t{i}") or {}).get("userErrors")) or []
        if errors:
            refused[customer_id] = "; ".join(str(e.get("message")) for e in errors)
    return refused


def sync(session: OrmSession, shop: Shop, segment_id: int, *, client: AdminClient | None = None) -> SyncResult:
    """Make the customers tagged for the segment's mirror match its members (or nobody, when off or deleted);
    commits after each batch. Returns what it did; `skipped` when another worker holds the mirror."""
    result = SyncResult()
    if not _claim(session, segment_id, utcnow()):
        result.skipped = session.scalar(select(SegmentTagMirror.id).where(
            SegmentTagMirror.segment_id == segment_id)) is not None
        return result
    client = client or client_for(shop)
    refused: dict[int, str] = {}
    try:
        while True:
            mirror = session.scalar(select(SegmentTagMirror).where(SegmentTagMirror.segment_id == segment_id))
            exists = session.scalar(select(Segment.id).where(Segment.shop_id == shop.id, Segment.id == segment_id))
            tag = mirror.tag if mirror.enabled and exists is not None else None
            if not _remove_batch(session, client, shop.id, segment_id, tag, refused, result) and (
                    tag is None or not _add_batch(session, client, shop.id, segment_id, tag, refused, result)):
                break
            _renew(session, segment_id)
            session.commit()
        _finish(session, shop.id, segment_id, exists is not None, refused)
    except ShopifyError as exc:
        session.rollback()
        session.execute(update(SegmentTagMirror).where(SegmentTagMirror.segment_id == segment_id).values(
            last_error=str(exc)[:2000], claimed_until=None, updated_at=SegmentTagMirror.updated_at))
        session.commit()
        raise
    except Exception:
        session.rollback()
        session.execute(update(SegmentTagMirror).where(SegmentTagMirror.segment_id == segment_id).values(
            claimed_until=None, updated_at=SegmentTagMirror.updated_at))
        session.commit()
        raise
    result.failed = len(refused)
    return result


def _remove_batch(session, client, shop_id: int, segment_id: int, tag: str | None, refused: dict,
                  result: SyncResult) -> bool:
    """Untag one batch of customers who should not carry the mirror's tag; False when there is none."""
    rows = session.execute(
        select(SegmentTaggedCustomer.customer_id, SegmentTaggedCustomer.tag)
        .where(SegmentTaggedCustomer.shop_id == shop_id, SegmentTaggedCustomer.segment_id == segment_id,
               *([SegmentTaggedCustomer.customer_id.not_in(list(refused))] if refused else []),
               *([] if tag is None else [or_(SegmentTaggedCustomer.tag != tag,
                                             SegmentTaggedCustomer.customer_id.not_in(_wanted(shop_id, segment_id)))]))
        .order_by(SegmentTaggedCustomer.tag, SegmentTaggedCustomer.customer_id)
        .limit(defaults.SHOPIFY_TAG_BATCH)).all()
    if not rows:
        return False
    old_tag = rows[0].tag  # one request removes one tag (a rename leaves old rows of one other tag)
    customer_ids = [row.customer_id for row in rows if row.tag == old_tag]
    failures = _send(client, "tagsRemove", old_tag, customer_ids)
    result.requests += 1
    refused.update(failures)
    done = [c for c in customer_ids if c not in failures]
    if done:
        session.execute(delete(SegmentTaggedCustomer).where(SegmentTaggedCustomer.segment_id == segment_id,
                                                            SegmentTaggedCustomer.customer_id.in_(done)))
    result.removed += len(done)
    session.commit()
    return True


def _add_batch(session, client, shop_id: int, segment_id: int, tag: str, refused: dict, result: SyncResult) -> bool:
    """Tag one batch of the segment's customers not tagged yet; False when there is none."""
    tagged = select(SegmentTaggedCustomer.customer_id).where(SegmentTaggedCustomer.segment_id == segment_id)
    wanted = _wanted(shop_id, segment_id).subquery()
    query = select(wanted.c.shopify_id).where(wanted.c.shopify_id.not_in(tagged))
    if refused:
        query = query.where(wanted.c.shopify_id.not_in(list(refused)))
    customer_ids = list(session.scalars(query.order_by(wanted.c.shopify_id).limit(defaults.SHOPIFY_TAG_BATCH)))
    if not customer_ids:
        return False
    failures = _send(client, "tagsAdd", tag, customer_ids)
    result.requests += 1
    refused.update(failures)
    done = [c for c in customer_ids if c not in failures]
    if done:
        session.execute(insert(SegmentTaggedCustomer), [
            {"shop_id": shop_id, "segment_id": segment_id, "customer_id": c, "tag": tag} for c in done])
    result.added += len(done)
    session.commit()
    return True


def _finish(session: OrmSession, shop_id: int, segment_id: int, segment_exists: bool, refused: dict) -> None:
    """Record the sync's outcome and release the mirror; a deleted segment's mirror goes once its tags are off."""
    left = session.scalar(select(func.count()).select_from(SegmentTaggedCustomer).where(
        SegmentTaggedCustomer.segment_id == segment_id)) or 0
    if not segment_exists and left == 0:
        session.execute(delete(SegmentTagMirror).where(SegmentTagMirror.segment_id == segment_id))
    else:
        error = None
        if refused:
            sample = "; ".join(f"customer {c}: {m}" for c, m in list(refused.items())[:3])
            error = f"Shopify refused {len(refused)} customer(s): {sample}"
        session.execute(update(SegmentTagMirror).where(SegmentTagMirror.segment_id == segment_id).values(
            tagged_count=left, synced_at=utcnow(), last_error=error, claimed_until=None,
            updated_at=SegmentTagMirror.updated_at))
    session.commit()


# ---------------------------------------------------------------------------------------------- what queues syncs

def mirrored(session: OrmSession, segment_ids) -> dict[int, list[int]]:
    """Of these segments, those with a mirror (on, or off with tags still to remove), by shop."""
    ids = sorted({int(i) for i in segment_ids})
    out: dict[int, list[int]] = {}
    if not ids:
        return out
    for shop_id, segment_id in session.execute(
            select(SegmentTagMirror.shop_id, SegmentTagMirror.segment_id)
            .where(SegmentTagMirror.segment_id.in_(ids)).execution_options(all_shops=True)):
        out.setdefault(shop_id, []).append(segment_id)
    return out


@signals.segment_members_written.connect
def _members_written(session, *, segment_ids) -> None:
    """Receiver of kinnekt.signals.segment_members_written: queue the syncs of the mirrored ones."""
    for shop_id, ids in mirrored(session, segment_ids).items():
        _enqueue(shop_id, ids)


_PENDING = "kinnekt_tag_mirror_pending"


@signals.segment_deleting.connect
def _segment_deleting(session, *, segment) -> None:
    """Receiver of kinnekt.signals.segment_deleting: switch the mirror off (in the deleting transaction) and queue
    the removal of its tags once that transaction commits."""
    mirror = mirror_of(session, segment)
    if mirror is None:
        return
    mirror.enabled = False
    session.info.setdefault(_PENDING, set()).add((segment.shop_id, segment.id))


@event.listens_for(OrmSession, "after_commit")
def _queue_after_commit(session) -> None:
    pending = session.info.pop(_PENDING, None)
    for shop_id, segment_id in sorted(pending or ()):
        _enqueue(shop_id, [segment_id])


@event.listens_for(OrmSession, "after_rollback")
def _forget_after_rollback(session) -> None:
    session.info.pop(_PENDING, None)


def all_mirrors(session: OrmSession) -> dict[int, list[int]]:
    """Every mirror's segment, by shop (the safety net syncs them all)."""
    out: dict[int, list[int]] = {}
    for shop_id, segment_id in session.execute(select(SegmentTagMirror.shop_id, SegmentTagMirror.segment_id)
                                               .order_by(SegmentTagMirror.segment_id)
                                               .execution_options(all_shops=True)):
        out.setdefault(shop_id, []).append(segment_id)
    return out
