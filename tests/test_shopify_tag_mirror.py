"""A segment mirrored into a Shopify customer tag: members who enter are tagged (tagsAdd), those who leave untagged
(tagsRemove), in aliased batches throttled by the GraphQL cost; off or deleted removes the tag from everyone; a
crash mid-batch or a second worker leaves the right tags; the setting's route refuses bad input. Against the fake
Shopify, on both databases."""
from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, update

from kinnekt import defaults
from kinnekt.db import Session, utcnow
from kinnekt.models import SegmentTaggedCustomer, SegmentTagMirror, Subscriber
from kinnekt.segments import membership, service
from kinnekt.shopify import tag_mirror
from kinnekt.shopify.graphql import client_for
from tests import factories
from tests.factories import rule, where
from tests.fake_shopify import connect

pytestmark = pytest.mark.usefixtures("settled_jobs")


@pytest.fixture
def live(db, fake_shopify, shop):
    connect(fake_shopify, shop)
    return fake_shopify.shop(shop.domain)


def people(shop, live, customer_ids, country="US"):
    """Subscribers linked to customers (also at the fake), {customer id: subscriber}."""
    out = {}
    for customer_id in customer_ids:
        live.add_customer(customer_id=customer_id, tags=["existing"])
        customer = factories.customer(Session, shop, shopify_id=customer_id)
        out[customer_id] = factories.subscriber(Session, shop, phone=f"+1212555{2000 + customer_id:04d}",
                                                customer=customer, country=country, subscribed_at=utcnow())
    return out


def tagged(live, tag):
    return sorted(cid for cid, node in live.customers.items() if tag in node["tags"])


def recorded(segment_id):
    return sorted(Session.scalars(select(SegmentTaggedCustomer.customer_id)
                                  .where(SegmentTaggedCustomer.segment_id == segment_id)
                                  .execution_options(all_shops=True)))


@pytest.fixture
def americans(shop, live, jobs):
    """A built segment of the US subscribers (customers 1..30), and a French one (31); jobs recorded."""
    folks = people(shop, live, range(1, 31))
    folks.update(people(shop, live, [31], country="FR"))
    segment = factories.segment(Session, shop, where(rule("country", "eq", "US")), name="Americans")
    membership.build(Session, segment.id)
    return segment, folks


def run(shop, segment_id, **kwargs):
    return tag_mirror.sync(Session, shop, segment_id, **kwargs)


def test_on_tags_every_members_customer_in_batches_of_aliased_mutations(shop, live, fake_shopify, americans):
    segment, _folks = americans
    tag_mirror.configure(Session, segment, enabled=True, tag="kinnekt-americans")
    result = run(shop, segment.id)
    assert tagged(live, "kinnekt-americans") == list(range(1, 31)) and recorded(segment.id) == list(range(1, 31))
    assert (result.added, result.removed, result.requests) == (30, 0, 2)  # 25 + 5
    adds = fake_shopify.calls("graphql:KinnektTagsAdd")
    assert [len([k for k in c["variables"] if k.startswith("id")]) for c in adds] == [25, 5]
    assert adds[0]["query"].count("tagsAdd(") == 25 and adds[0]["variables"]["tags"] == ["kinnekt-americans"]
    assert all("existing" in node["tags"] for node in live.customers.values())  # other tags are left alone
    mirror = Session.scalar(select(SegmentTagMirror))
    assert (mirror.tagged_count, mirror.last_error, mirror.claimed_until) == (30, None, None)
    assert run(shop, segment.id).requests == 0  # nothing left to do


def test_leaving_and_entering_follow_the_segments_events(shop, live, fake_shopify, americans, jobs):
    segment, folks = americans
    tag_mirror.configure(Session, segment, enabled=True, tag="usa")
    run(shop, segment.id)
    jobs.jobs.clear()
    Session.execute(update(Subscriber).where(Subscriber.id == folks[3].id).values(country="FR"))
    Session.execute(update(Subscriber).where(Subscriber.id == folks[31].id).values(country="US"))
    Session.commit()
    changes = membership.recheck(Session, shop.id, [folks[3].id, folks[31].id])
    assert sorted(kind for _s, _m, kind in changes) == ["enter", "leave"]
    assert ("sync_tag_mirrors", (shop.id, [segment.id]), None, None) in jobs.jobs  # the events queued the sync
    result = run(shop, segment.id)
    assert (result.added, result.removed) == (1, 1)
    assert tagged(live, "usa") == [c for c in range(1, 32) if c != 3]
    assert live.tag_calls[-2:] == [("tagsRemove", 3, ["usa"]), ("tagsAdd", 31, ["usa"])]


def test_off_removes_the_tag_from_everyone_and_on_again_puts_it_back(shop, live, americans):
    segment, _folks = americans
    tag_mirror.configure(Session, segment, enabled=True, tag="usa")
    run(shop, segment.id)
    tag_mirror.configure(Session, segment, enabled=False, tag="")
    result = run(shop, segment.id)
    assert result.removed == 30 and tagged(live, "usa") == [] and recorded(segment.id) == []
    assert Session.scalar(select(SegmentTagMirror.tag)) == "usa"  # kept for switching on again
    with pytest.raises(tag_mirror.InvalidMirror):
        tag_mirror.configure(Session, segment, enabled=True, tag="")  # on needs its tag
    tag_mirror.configure(Session, segment, enabled=True, tag="usa")
    assert run(shop, segment.id).added == 30 and tagged(live, "usa") == list(range(1, 31))


def test_a_renamed_tag_moves_every_customer_to_the_new_one(shop, live, americans):
    segment, _folks = americans
    tag_mirror.configure(Session, segment, enabled=True, tag="usa")
    run(shop, segment.id)
    tag_mirror.configure(Session, segment, enabled=True, tag="americans")
    run(shop, segment.id)
    assert tagged(live, "usa") == [] and tagged(live, "americans") == list(range(1, 31))


def test_deleting_the_segment_removes_the_tag_and_then_the_mirror(shop, live, americans, jobs):
    segment, _folks = americans
    tag_mirror.configure(Session, segment, enabled=True, tag="usa")
    run(shop, segment.id)
    jobs.jobs.clear()
    segment_id = segment.id
    service.delete_segment(Session, segment, confirmed=True)
    assert ("sync_tag_mirrors", (shop.id, [segment_id]), None, None) in jobs.jobs  # queued once committed
    run(shop, segment_id)
    assert tagged(live, "usa") == [] and recorded(segment_id) == []
    assert Session.scalar(select(func.count()).select_from(SegmentTagMirror)) == 0


def test_a_throttled_batch_waits_for_the_points_and_is_sent_again(shop, live, fake_shopify, americans):
    segment, _folks = americans
    tag_mirror.configure(Session, segment, enabled=True, tag="usa")
    fake_shopify.fail_next("throttled")
    sleeps = []
    client = client_for(shop)
    client._sleep = sleeps.append
    run(shop, segment.id, client=client)
    assert tagged(live, "usa") == list(range(1, 31)) and sleeps
    answered = fake_shopify.calls("graphql:KinnektTagsAdd")
    assert len(answered) == 3  # the throttled request, then the same batch again, then the rest


def test_each_batch_waits_until_the_bucket_holds_its_cost(shop, live, fake_shopify, americans, monkeypatch):
    segment, _folks = americans
    monkeypatch.setattr(defaults, "SHOPIFY_TAG_BATCH", 15)
    tag_mirror.configure(Session, segment, enabled=True, tag="usa")
    fake_shopify.bucket_available = 0.0  # every answer reports an empty bucket, 100 points restored a second
    sleeps = []
    client = client_for(shop)
    client._sleep = sleeps.append
    run(shop, segment.id, client=client)
    assert tagged(live, "usa") == list(range(1, 31))
    # Before the second batch (15 mutations, 150 points) it waited for them: about 1.5 s.
    assert 1.0 < max(sleeps) <= 1.5, sleeps
    assert [c["query"].count("tagsAdd(") for c in fake_shopify.calls("graphql:KinnektTagsAdd")] == [15, 15]


def test_a_crash_between_the_request_and_its_transaction_ends_with_the_right_tags(shop, live, americans,
                                                                                 monkeypatch):
    segment, _folks = americans
    tag_mirror.configure(Session, segment, enabled=True, tag="usa")
    real = tag_mirror._send
    sent = []

    def crash_after_the_first_request(client, kind, tag, customer_ids):
        refused = real(client, kind, tag, customer_ids)
        sent.append(customer_ids)
        if len(sent) == 1:
            raise RuntimeError("worker killed")
        return refused

    monkeypatch.setattr(tag_mirror, "_send", crash_after_the_first_request)
    with pytest.raises(RuntimeError):
        run(shop, segment.id)
    assert len(tagged(live, "usa")) == 25 and recorded(segment.id) == []  # done at Shopify, not recorded here
    monkeypatch.setattr(tag_mirror, "_send", real)
    run(shop, segment.id)  # the retry sends that batch again (tagsAdd is idempotent) and the rest
    assert tagged(live, "usa") == list(range(1, 31)) and recorded(segment.id) == list(range(1, 31))


def test_a_second_worker_finds_the_mirror_claimed_and_does_nothing(shop, live, fake_shopify, americans):
    segment, _folks = americans
    tag_mirror.configure(Session, segment, enabled=True, tag="usa")
    Session.execute(update(SegmentTagMirror).values(claimed_until=utcnow() + dt.timedelta(minutes=4)))
    Session.commit()
    assert run(shop, segment.id).skipped and fake_shopify.calls("graphql:KinnektTagsAdd") == []
    # A claim lapses (its worker died): the next sync takes over.
    Session.execute(update(SegmentTagMirror).values(claimed_until=utcnow() - dt.timedelta(seconds=1)))
    Session.commit()
    assert run(shop, segment.id).added == 30


def test_a_customer_shopify_refuses_is_reported_and_the_others_are_tagged(shop, live, americans, monkeypatch):
    segment, _folks = americans
    del live.customers[7]  # deleted at Shopify
    monkeypatch.setattr(defaults, "SHOPIFY_TAG_BATCH", 10)
    tag_mirror.configure(Session, segment, enabled=True, tag="usa")
    result = run(shop, segment.id)
    assert result.failed == 1 and len(tagged(live, "usa")) == 29
    assert "Shopify refused 1 customer(s): customer 7: Resource not found" in Session.scalar(
        select(SegmentTagMirror.last_error))


def test_the_shop_job_syncs_what_piled_up(shop, live, americans, jobs):
    from kinnekt.shopify import tasks
    segment, _folks = americans
    tag_mirror.configure(Session, segment, enabled=True, tag="usa")
    batches = iter([[segment.id], []])
    jobs.take_batch = lambda group, size=2000: next(batches)
    assert tasks.sync_tag_mirrors(shop.id)["added"] == 30
    assert tasks.tag_mirror_group(shop.id) == f"tag-mirror:{shop.id}"


def test_a_failing_mirror_records_its_error_and_the_job_goes_on(shop, live, fake_shopify, americans, jobs):
    from kinnekt.shopify import tasks
    segment, _folks = americans
    tag_mirror.configure(Session, segment, enabled=True, tag="usa")
    fake_shopify.fail_next("503", times=20)
    batches = iter([[segment.id], []])
    jobs.take_batch = lambda group, size=2000: next(batches)
    assert tasks.sync_tag_mirrors(shop.id)["errors"] == 1
    mirror = Session.scalar(select(SegmentTagMirror))
    assert "HTTP 503" in mirror.last_error and mirror.claimed_until is None  # released for the next try
    assert tasks.sync_all_tag_mirrors() == 1 and jobs.jobs[-1][:2] == ("sync_tag_mirrors", (shop.id, [segment.id]))


# ---------------------------------------------------------------------------------------------- the setting's route

def mirror_rows():
    return Session.scalar(select(func.count()).select_from(SegmentTagMirror).execution_options(all_shops=True))


@pytest.mark.parametrize("form, error", [
    ({"enabled": "on", "tag": ""}, "Type the tag"),
    ({"enabled": "on", "tag": "   "}, "Type the tag"),
    ({"enabled": "on", "tag": "a,b"}, "cannot hold a comma"),
    ({"enabled": "on", "tag": "x" * 256}, "at most 255 characters"),
    ({"enabled": "on", "tag": "bad\x01tag"}, "control characters"),
    ({"enabled": "maybe", "tag": "usa"}, "Tick the box"),
])
def test_bad_mirror_settings_are_refused_with_a_message_and_save_nothing(client, auth, shop, jobs, form, error):
    segment = factories.segment(Session, shop, where(rule("country", "eq", "US")), name="Americans")
    response = client.post(f"/segments/{segment.id}/tag-mirror", data=form, headers=auth)
    assert response.status_code == 200
    assert error in response.get_data(as_text=True) and mirror_rows() == 0 and jobs.jobs == []


def test_a_tag_another_segment_mirrors_into_is_refused(client, auth, shop, jobs):
    first = factories.segment(Session, shop, where(rule("country", "eq", "US")), name="Americans")
    second = factories.segment(Session, shop, where(rule("country", "eq", "FR")), name="French")
    assert client.post(f"/segments/{first.id}/tag-mirror", data={"enabled": "on", "tag": "VIP"},
                       headers=auth).status_code == 200
    response = client.post(f"/segments/{second.id}/tag-mirror", data={"enabled": "on", "tag": " vip "}, headers=auth)
    assert "already mirrors into the tag" in response.get_data(as_text=True) and mirror_rows() == 1


def test_the_route_saves_on_and_off_and_queues_the_sync(client, auth, shop, jobs):
    segment = factories.segment(Session, shop, where(rule("country", "eq", "US")), name="Americans")
    response = client.post(f"/segments/{segment.id}/tag-mirror", data={"tag": ""}, headers=auth)
    assert "is off" in response.headers["HX-Trigger"] and mirror_rows() == 0 and jobs.jobs == []
    response = client.post(f"/segments/{segment.id}/tag-mirror", data={"enabled": "on", "tag": "  usa  fans "},
                           headers=auth)
    assert "are being tagged" in response.headers["HX-Trigger"]
    assert Session.scalar(select(SegmentTagMirror.tag)) == "usa fans"
    response = client.post(f"/segments/{segment.id}/tag-mirror", data={"tag": "usa fans"}, headers=auth)
    assert "being removed" in response.headers["HX-Trigger"]
    assert Session.scalar(select(SegmentTagMirror.enabled)) is False
    assert [args for name, args, *_ in jobs.jobs if name == "sync_tag_mirrors"] == [(shop.id, [segment.id])] * 2
    page = client.get(f"/segments/{segment.id}", headers=auth).get_data(as_text=True)
    assert 'id="segment-tag-mirror"' in page and "usa fans" in page


def test_another_shops_segment_is_not_found(client, auth, other_shop, jobs):
    theirs = factories.segment(Session, other_shop, where(rule("country", "eq", "US")), name="Theirs")
    response = client.post(f"/segments/{theirs.id}/tag-mirror", data={"enabled": "on", "tag": "x"}, headers=auth)
    assert response.status_code == 404 and mirror_rows() == 0
