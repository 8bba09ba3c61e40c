"""The shop's Shopify customer segments, read into Kinnekt: the list (`segments`) and each one's members
(`customerSegmentMembers`), kept in `shopify_segments` / `shopify_segment_members` for the `shopify_segment` rule.

A refresh lists the shop's segments (a segment Shopify no longer lists is marked gone and loses its members), then
reads each one's members by Shopify customer id:

- a segment of at most SHOPIFY_SEGMENT_QUERY_THRESHOLD members is paged directly,
  `customerSegmentMembers(segmentId:, first: ≤ 1000, after:)`;
- a larger one through a members query: `customerSegmentMembersQueryCreate(input: {segmentId})`, then
  `customerSegmentMembersQuery(id:)` polled until `done`, then `customerSegmentMembers(queryId:, first:, after:)`
  paged (Shopify evaluates the segment once, so the pages are one consistent snapshot).

A member's `id` is `gid://shopify/CustomerSegmentMember/<customer id>`: the customer id is its numeric tail.
The stored members are replaced by the difference (inserts of the new, deletes of the gone), and the subscribers
whose customer entered or left are re-checked right away against the Kinnekt segments whose rules name that
Shopify segment (and the segments referring to those), through kinnekt.segments.membership.recheck: their entries
and leaves are logged, and fire automations, like any other re-check. The segment's `recheck_owed`, set with its
members and cleared after the re-check, lets the next refresh finish a re-check a crash interrupted (a rebuild of
the segments using it, logged as a re-check). A segment whose read fails keeps its old
members and shows the error (`last_error`); the others are still read.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.db import utcnow
from kinnekt.models import Customer, Segment, Shop, ShopifySegment, ShopifySegmentMember, Subscriber
from kinnekt.models.segment import iter_rules
from kinnekt.segments import membership
from kinnekt.segments.rules import SHOPIFY_SEGMENT_GID
from kinnekt.shopify.graphql import AdminClient, ShopifyError, client_for, gid, gid_to_id, raise_user_errors

log = logging.getLogger(__name__)

SEGMENTS_QUERY = """
query KinnektSegments($first: Int!, $after: String) {
  segments(first: $first, after: $after) {
    nodes { id name query }
    pageInfo { hasNextPage endCursor }
  }
}
"""

MEMBERS_QUERY = """
query KinnektSegmentMembers($segmentId: ID!, $first: Int!, $after: String) {
  customerSegmentMembers(segmentId: $segmentId, first: $first, after: $after) {
    totalCount
    edges { node { id } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

QUERY_MEMBERS_QUERY = """
query KinnektSegmentQueryMembers($queryId: ID!, $first: Int!, $after: String) {
  customerSegmentMembers(queryId: $queryId, first: $first, after: $after) {
    totalCount
    edges { node { id } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

CREATE_QUERY = """
mutation KinnektSegmentMembersQueryCreate($input: CustomerSegmentMembersQueryInput!) {
  customerSegmentMembersQueryCreate(input: $input) {
    customerSegmentMembersQuery { id currentCount done }
    userErrors { field message code }
  }
}
"""

QUERY_STATUS = """
query KinnektSegmentMembersQuery($id: ID!) {
  customerSegmentMembersQuery(id: $id) { id currentCount done }
}
"""


class SegmentQueryFailed(ShopifyError):
    """A members query did not finish in time (or Shopify lost it)."""


@dataclass
class RefreshResult:
    """What one refresh of a shop's Shopify segments did."""

    segments: int = 0
    gone: int = 0
    changed_customers: int = 0
    rechecked_subscribers: int = 0
    membership_changes: int = 0
    errors: dict[int, str] = field(default_factory=dict)  # Shopify segment id -> error


# ---------------------------------------------------------------------------------------------- reading Shopify

def list_segments(client: AdminClient) -> list[dict]:
    """The shop's segments as {"shopify_id", "name", "query"}, every page."""
    found = []
    for node in client.nodes(SEGMENTS_QUERY, {}, "segments", page_size=defaults.SHOPIFY_SEGMENTS_PAGE_SIZE):
        shopify_id = gid_to_id(node.get("id"))
        if shopify_id is None:
            continue
        found.append({"shopify_id": shopify_id, "name": str(node.get("name") or f"Segment {shopify_id}")[:255],
                      "query": str(node.get("query") or "")})
    return found


def _member_pages(client: AdminClient, query: str, variables: dict, first_page: dict | None = None
                  ) -> Iterable[int]:
    """Customer ids of every page of a `customerSegmentMembers` connection (starting from `first_page` if read)."""
    page = first_page
    after = None
    while True:
        if page is None:
            data = client.query(query, {**variables, "first": defaults.SHOPIFY_SEGMENT_MEMBERS_PAGE_SIZE,
                                        "after": after})
            page = data.get("customerSegmentMembers") or {}
        for edge in page.get("edges") or ():
            customer_id = gid_to_id(((edge or {}).get("node") or {}).get("id"))
            if customer_id is not None:
                yield customer_id
        info = page.get("pageInfo") or {}
        if not info.get("hasNextPage"):
            return
        after, page = info.get("endCursor"), None


def read_members(client: AdminClient, shopify_id: int, *, sleep: Callable[[float], None] = time.sleep) -> set[int]:
    """The customer ids of one Shopify segment's members: paged directly, or through a members query when the
    segment holds more than SHOPIFY_SEGMENT_QUERY_THRESHOLD."""
    segment_gid = gid("Segment", shopify_id)
    data = client.query(MEMBERS_QUERY, {"segmentId": segment_gid, "first": defaults.SHOPIFY_SEGMENT_MEMBERS_PAGE_SIZE,
                                        "after": None})
    first = data.get("customerSegmentMembers") or {}
    total = first.get("totalCount") or 0
    if total <= defaults.SHOPIFY_SEGMENT_QUERY_THRESHOLD:
        return set(_member_pages(client, MEMBERS_QUERY, {"segmentId": segment_gid}, first))
    query_id = _run_members_query(client, segment_gid, sleep=sleep)
    return set(_member_pages(client, QUERY_MEMBERS_QUERY, {"queryId": query_id}))


def _run_members_query(client: AdminClient, segment_gid: str, *, sleep: Callable[[float], None]) -> str:
    """Create a members query for the segment and wait until Shopify has run it; returns its id."""
    data = client.query(CREATE_QUERY, {"input": {"segmentId": segment_gid}})
    created = raise_user_errors(data.get("customerSegmentMembersQueryCreate"))
    job = created.get("customerSegmentMembersQuery") or {}
    query_id = job.get("id")
    if not query_id:
        raise SegmentQueryFailed(f"Shopify created no members query for {segment_gid}")
    polls = 0
    while not job.get("done"):
        if polls >= defaults.SHOPIFY_SEGMENT_QUERY_MAX_POLLS:
            raise SegmentQueryFailed(f"the members query of {segment_gid} did not finish in time")
        sleep(defaults.SHOPIFY_SEGMENT_QUERY_POLL_SECONDS)
        polls += 1
        job = client.query(QUERY_STATUS, {"id": query_id}).get("customerSegmentMembersQuery")
        if job is None:
            raise SegmentQueryFailed(f"Shopify lost the members query of {segment_gid}")
    return query_id


# ---------------------------------------------------------------------------------------------- storing

def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def replace_members(session: OrmSession, shop_id: int, shopify_id: int, customer_ids: set[int]) -> set[int]:
    """Make the stored members of one Shopify segment these customers (no commit); returns the customers that
    entered or left."""
    stored = set(session.scalars(select(ShopifySegmentMember.customer_id).where(
        ShopifySegmentMember.shop_id == shop_id, ShopifySegmentMember.segment_id == shopify_id)))
    entered, left = sorted(customer_ids - stored), sorted(stored - customer_ids)
    size = defaults.SHOPIFY_SEGMENT_WRITE_CHUNK
    for chunk in _chunks(left, size):
        session.execute(delete(ShopifySegmentMember).where(
            ShopifySegmentMember.shop_id == shop_id, ShopifySegmentMember.segment_id == shopify_id,
            ShopifySegmentMember.customer_id.in_(chunk)))
    for chunk in _chunks(entered, size):
        session.execute(insert(ShopifySegmentMember), [
            {"shop_id": shop_id, "segment_id": shopify_id, "customer_id": customer_id} for customer_id in chunk])
    return set(entered) | set(left)


def _upsert_listed(session: OrmSession, shop_id: int, listed: list[dict]
                   ) -> tuple[list[ShopifySegment], dict[int, set[int]]]:
    """Store the listed segments (new, renamed, back again); mark the others gone and drop their members. Returns
    the listed rows and, per segment gone now, its customers (their membership changed)."""
    rows = {row.shopify_id: row for row in session.scalars(
        select(ShopifySegment).where(ShopifySegment.shop_id == shop_id))}
    out = []
    for item in listed:
        row = rows.get(item["shopify_id"])
        if row is None:
            row = ShopifySegment(shop_id=shop_id, shopify_id=item["shopify_id"], name=item["name"],
                                 query=item["query"])
            session.add(row)
        else:
            row.name, row.query, row.gone_at = item["name"], item["query"], None
        out.append(row)
    gone: dict[int, set[int]] = {}
    now = utcnow()
    listed_ids = {item["shopify_id"] for item in listed}
    for shopify_id, row in rows.items():
        if shopify_id in listed_ids or row.gone_at is not None:
            continue
        row.gone_at, row.member_count = now, 0
        gone[shopify_id] = replace_members(session, shop_id, shopify_id, set())
        row.recheck_owed = row.recheck_owed or bool(gone[shopify_id])
    session.flush()
    return out, gone


# ---------------------------------------------------------------------------------------------- re-checks

def segments_using(session: OrmSession, shop_id: int, shopify_ids: Iterable[int]) -> list[int]:
    """Ids of the shop's Kinnekt segments whose rules name one of these Shopify segments, and of the segments that
    refer to those."""
    wanted = {str(i) for i in shopify_ids}
    direct = set()
    for segment_id, definition in session.execute(select(Segment.id, Segment.definition)
                                                  .where(Segment.shop_id == shop_id)):
        for rule in iter_rules(definition):
            value = rule.get("value")
            if isinstance(value, str) and (match := SHOPIFY_SEGMENT_GID.fullmatch(value)):
                value = match.group(1)
            if rule.get("field") == "shopify_segment" and str(value) in wanted:
                direct.add(segment_id)
    found = set(direct)
    for segment_id in direct:
        found.update(membership.dependent_segments(session, shop_id, segment_id))
    return sorted(found)


def recheck_customers(session: OrmSession, shop_id: int, customer_ids: set[int], segment_ids: list[int]
                      ) -> tuple[int, int]:
    """Re-check the subscribers of these customers (Shopify ids) against these segments; commits. Returns
    (subscribers re-checked, membership changes)."""
    if not customer_ids or not segment_ids:
        return 0, 0
    subscriber_ids: list[int] = []
    for chunk in _chunks(sorted(customer_ids), defaults.SHOPIFY_SEGMENT_WRITE_CHUNK):
        subscriber_ids += session.scalars(
            select(Subscriber.id).join(Customer, Customer.id == Subscriber.customer_id)
            .where(Subscriber.shop_id == shop_id, Customer.shop_id == shop_id, Customer.shopify_id.in_(chunk)))
    changes = 0
    for chunk in _chunks(sorted(set(subscriber_ids)), defaults.SEGMENT_RECHECK_CHUNK):
        changes += len(membership.recheck(session, shop_id, chunk, segment_ids=segment_ids))
    return len(set(subscriber_ids)), changes


# ---------------------------------------------------------------------------------------------- the refresh

def refresh(session: OrmSession, shop: Shop, *, client: AdminClient | None = None,
            sleep: Callable[[float], None] = time.sleep) -> RefreshResult:
    """List the shop's Shopify segments, read each one's members, store the differences and re-check the Kinnekt
    segments that use the ones that changed; commits after each segment."""
    client = client or client_for(shop)
    result = RefreshResult()
    result.membership_changes += finish_owed_rechecks(session, shop.id)
    listed = list_segments(client)  # a failure here leaves everything as it was (the job records it)
    rows, gone = _upsert_listed(session, shop.id, listed)
    session.commit()
    result.segments, result.gone = len(rows), len(gone)
    changed_by_segment: dict[int, set[int]] = {s: c for s, c in gone.items() if c}
    for row in rows:
        shopify_id = row.shopify_id
        try:
            customers = read_members(client, shopify_id, sleep=sleep)
        except ShopifyError as exc:
            log.warning("shop %s: Shopify segment %s could not be read: %s", shop.id, shopify_id, exc)
            session.rollback()
            session.execute(update(ShopifySegment).where(ShopifySegment.id == row.id)
                            .values(last_error=str(exc)[:2000]))
            session.commit()
            result.errors[shopify_id] = str(exc)
            continue
        changed = replace_members(session, shop.id, shopify_id, customers)
        session.execute(update(ShopifySegment).where(ShopifySegment.id == row.id).values(
            member_count=len(customers), refreshed_at=utcnow(), last_error=None,
            **({"recheck_owed": True} if changed else {})))
        session.commit()
        if changed:
            changed_by_segment[shopify_id] = changed
    # Re-check once per changed customer, against every Kinnekt segment that uses a changed Shopify segment.
    all_changed = set().union(*changed_by_segment.values())
    result.changed_customers = len(all_changed)
    segment_ids = segments_using(session, shop.id, changed_by_segment)
    rechecked, changes = recheck_customers(session, shop.id, all_changed, segment_ids)
    result.rechecked_subscribers, result.membership_changes = rechecked, result.membership_changes + changes
    if changed_by_segment:
        session.execute(update(ShopifySegment).where(ShopifySegment.shop_id == shop.id,
                                                     ShopifySegment.shopify_id.in_(list(changed_by_segment)))
                        .values(recheck_owed=False))
        session.commit()
    return result


def finish_owed_rechecks(session: OrmSession, shop_id: int) -> int:
    """The re-checks an interrupted refresh owes (members stored, segments not re-checked: which customers changed
    is lost): rebuild the Kinnekt segments using those Shopify segments, logged as re-checks (they fire
    automations); commits. Returns the membership changes."""
    owed = list(session.scalars(select(ShopifySegment.shopify_id).where(
        ShopifySegment.shop_id == shop_id, ShopifySegment.recheck_owed.is_(True))))
    if not owed:
        return 0
    changes = 0
    for segment_id in segments_using(session, shop_id, owed):
        built = membership.build(session, segment_id, cause="recheck")
        changes += (built.entered + built.left) if built is not None else 0
    session.execute(update(ShopifySegment).where(ShopifySegment.shop_id == shop_id,
                                                 ShopifySegment.shopify_id.in_(owed)).values(recheck_owed=False))
    session.commit()
    return changes
