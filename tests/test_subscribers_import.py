"""The merchant's subscriber domain: CSV import (consent recorded, one re-check for the batch, opt-outs never
undone, conflicts), manual add, and the unsubscribe / resubscribe rules; on both databases."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from kinnekt.db import utcnow
from kinnekt.models import Customer, Segment, SegmentMember, Subscriber, SubscriberImport, SubscriptionEvent
from kinnekt.segments.auto import source_definition
from kinnekt.subscribers import importing, optin
from kinnekt.subscribers.checkout import apply_sms_consent
from tests.conftest import make_shop

pytestmark = pytest.mark.usefixtures("settled_jobs")


def count(db, model) -> int:
    return db.scalar(select(func.count()).select_from(model))


def csv(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def test_imported_rows_carry_the_attestation_as_their_consent_record(db, segment_rechecks):
    shop = make_shop()
    report = importing.import_csv(db(), shop, attested=True, file_bytes=csv(
        "Phone Number,First Name", "+1 212 555 0101,Ada", "+44 20 7183 8750,  Alan  Turing ", "212 555 0103,"))
    assert report.imported == 3 and report.rejected == [] and report.region == "US"
    subs = db.scalars(select(Subscriber).order_by(Subscriber.phone)).all()
    text = "Everyone in this file agreed to receive marketing texts from Alpha."
    assert [(s.phone, s.first_name, s.country, s.status, s.source) for s in subs] == [
        ("+12125550101", "Ada", "US", "subscribed", "import"),
        ("+12125550103", None, "US", "subscribed", "import"),
        ("+442071838750", "Alan Turing", "GB", "subscribed", "import")]
    for sub in subs:
        assert sub.consent_text == text and sub.consent_at is not None and sub.subscribed_at == sub.consent_at
        assert sub.consent_ip is None and sub.consent_message_id is None
    assert subs[2].timezone == "Europe/London" and subs[0].timezone == "America/New_York"
    events = db.execute(select(SubscriptionEvent.subscriber_id, SubscriptionEvent.kind, SubscriptionEvent.source,
                               SubscriptionEvent.detail).order_by(SubscriptionEvent.subscriber_id)).all()
    assert events == [(s.id, "subscribed", "import", text) for s in sorted(subs, key=lambda s: s.id)]
    # One re-check for the whole batch, after the commit.
    assert segment_rechecks == [(shop.id, sorted(s.id for s in subs))]


def test_the_batch_recheck_puts_imported_subscribers_in_segments(app, db):
    shop = make_shop()
    everyone = Segment(shop_id=shop.id, name="All subscribers", kind="auto", auto_source="all",
                       definition=source_definition("all"))
    db.add(everyone)
    db.commit()
    report = importing.import_csv(db(), shop, attested=True, file_bytes=csv("phone", "+12125550101", "+12125550102"))
    assert app.extensions["kinnekt_queue"].drain(30)
    members = db.scalars(select(SegmentMember.subscriber_id).where(SegmentMember.segment_id == everyone.id)
                         .order_by(SegmentMember.subscriber_id)).all()
    assert members == sorted(report.subscriber_ids)


def test_an_import_links_shopify_customers_by_phone(db):
    shop = make_shop()
    customer = Customer(shop_id=shop.id, shopify_id=7, phone="+12125550101", first_name="Grace")
    db.add(customer)
    db.commit()
    importing.import_csv(db(), shop, attested=True, file_bytes=csv("phone", "+12125550101", "+12125550102"))
    linked = dict(db.execute(select(Subscriber.phone, Subscriber.customer_id)).tuples().all())
    assert linked == {"+12125550101": customer.id, "+12125550102": None}


def test_an_import_never_resubscribes_an_opt_out_and_leaves_known_numbers_alone(db, segment_rechecks):
    shop = make_shop(double_opt_in=True)
    stopped = optin.subscribe(db(), shop, "+12125550101", source="keyword", consent_text="Texted JOIN",
                              double_opt_in=False)
    optin.unsubscribe(db(), stopped, reason="Texted STOP", source="sms")
    pending = optin.subscribe(db(), shop, "+12125550102", source="keyword", consent_text="Texted JOIN",
                              send_confirmation=False)
    segment_rechecks.clear()
    events_before = count(db, SubscriptionEvent)
    report = importing.import_csv(db(), shop, attested=True, file_bytes=csv(
        "phone,first_name", "+12125550101,Stopped", "+12125550102,Pending", "+12125550103,New"))
    assert report.imported == 1
    assert report.rejected == [
        (2, "+12125550101", "unsubscribed: only they can opt in again, by texting a keyword or using your "
                            "sign-up form"),
        (3, "+12125550102", "already signed up, waiting for their confirmation")]
    assert report.counts == {"invalid": 0, "bad_value": 0, "duplicate": 0, "unsubscribed": 1, "existing": 1}
    db.expire_all()
    assert (db.get(Subscriber, stopped.id).status, db.get(Subscriber, stopped.id).first_name) == ("unsubscribed", None)
    assert (db.get(Subscriber, pending.id).status, db.get(Subscriber, pending.id).source) == ("pending", "keyword")
    assert count(db, SubscriptionEvent) == events_before + 1
    assert len(segment_rechecks) == 1 and len(segment_rechecks[0][1]) == 1


def test_rows_reported_with_spreadsheet_row_numbers(db):
    shop = make_shop()
    report = importing.import_csv(db(), shop, attested=True, file_bytes=csv(
        "", "phone", "+12125550101", "", "+1 (212) 555-0101", "12", ",extra"))
    assert report.imported == 1
    assert report.rejected == [(5, "+1 (212) 555-0101", "duplicate of row 3"),
                               (6, "12", "12 is too short to be a phone number."),
                               (7, "", "Enter a phone number.")]
    assert report.counts == {"invalid": 2, "bad_value": 0, "duplicate": 1, "unsubscribed": 0, "existing": 0}


def test_a_number_signed_up_meanwhile_is_reported_not_an_error(db, monkeypatch, segment_rechecks):
    """Another sign-up inserts a number between the import's look-up and its insert."""
    shop = make_shop()
    real = importing._statuses
    calls = []

    def blind_then_real(session, shop_id, numbers):
        calls.append(list(numbers))
        if len(calls) == 1:  # the first look misses the number the other sign-up is about to insert
            found = real(session, shop_id, numbers)
            optin.subscribe(session, shop, "+12125550102", source="keyword", consent_text="Texted JOIN",
                            double_opt_in=False)
            return found
        return real(session, shop_id, numbers)

    monkeypatch.setattr(importing, "_statuses", blind_then_real)
    report = importing.import_csv(db(), shop, attested=True, file_bytes=csv("phone", "+12125550101", "+12125550102"))
    assert len(calls) >= 2  # the insert failed on the unique (shop, phone) and looked again
    assert report.imported == 1
    assert report.rejected == [(3, "+12125550102", "already a subscriber")]
    sources = dict(db.execute(select(Subscriber.phone, Subscriber.source)).tuples().all())
    assert sources == {"+12125550101": "import", "+12125550102": "keyword"}


@pytest.mark.parametrize("content, message", [
    (b"", "The file is empty."),
    ("phone\nZoë\n".encode("latin-1"), "The file is not UTF-8 text."),
    (b"first_name\nAda\n", "The first row must name the columns"),
])
def test_an_unusable_file_saves_nothing_and_queues_nothing(db, segment_rechecks, content, message):
    shop = make_shop()
    with pytest.raises(importing.ImportRefused, match=message):
        importing.import_csv(db(), shop, attested=True, file_bytes=content)
    assert count(db, Subscriber) == 0 and segment_rechecks == []


def test_an_import_without_the_attestation_reads_nothing(db):
    shop = make_shop()
    with pytest.raises(importing.InvalidInput) as caught:
        importing.import_csv(db(), shop, attested=False, file_bytes=csv("phone", "+12125550101"))
    assert set(caught.value.errors) == {"consent"} and count(db, Subscriber) == 0


# --- manual add -------------------------------------------------------------------------------------------

def test_manual_add_reads_national_numbers_in_the_shops_country(db, segment_rechecks):
    shop = make_shop("gamma.myshopify.com", timezone="Europe/London")
    sub = importing.add_subscriber(db(), shop, phone="020 7183 8750", first_name="", attested=True)
    assert (sub.phone, sub.country, sub.source, sub.first_name) == ("+442071838750", "GB", "manual", None)
    assert sub.consent_text == "This person agreed to receive marketing texts from Gamma."
    assert segment_rechecks == [(shop.id, [sub.id])]


def test_manual_add_errors_name_every_bad_field(db):
    shop = make_shop()
    with pytest.raises(importing.InvalidInput) as caught:
        importing.add_subscriber(db(), shop, phone="nope", first_name="x" * 300, attested=False)
    assert set(caught.value.errors) == {"phone", "first_name", "consent"}
    assert count(db, Subscriber) == 0


# --- unsubscribe / resubscribe rules ----------------------------------------------------------------------

def _subscribed(db, shop, phone="+12125550101"):
    return optin.subscribe(db(), shop, phone, source="keyword", consent_text="Texted JOIN", double_opt_in=False)


@pytest.mark.parametrize("opt_out_source, how",
                         [("sms", "texting STOP"), ("checkout", "withdrawing consent in Shopify")])
def test_an_opt_out_by_the_person_needs_their_new_request(db, opt_out_source, how):
    shop = make_shop()
    sub = _subscribed(db, shop)
    optin.unsubscribe(db(), sub, reason="their opt-out", source=opt_out_source)
    assert importing.opted_out_by_person(db(), sub).source == opt_out_source
    with pytest.raises(importing.InvalidInput) as caught:
        importing.resubscribe_by_merchant(db(), sub, reason="They called", asked_again=False)
    assert caught.value.errors == {"asked_again": f"This person unsubscribed by {how}. Resubscribe them only if "
                                                  "they asked you to, and confirm that they did."}
    db.refresh(sub)
    assert sub.status == "unsubscribed"
    importing.resubscribe_by_merchant(db(), sub, reason="They called", asked_again=True)
    assert sub.status == "subscribed"


def test_the_latest_opt_out_decides(db):
    """A STOP, then START, then an unsubscribe by the merchant: the merchant may undo their own."""
    shop = make_shop()
    sub = _subscribed(db, shop)
    optin.unsubscribe(db(), sub, reason="Texted STOP", source="sms")
    optin.resubscribe(db(), sub, source="sms", detail="texted START")
    importing.unsubscribe_by_merchant(db(), sub, reason="Asked in store")
    assert importing.opted_out_by_person(db(), sub) is None
    importing.resubscribe_by_merchant(db(), sub, reason="Changed their mind", asked_again=False)
    assert sub.status == "subscribed"


def test_unsubscribe_reason_rules(db):
    shop = make_shop()
    sub = _subscribed(db, shop)
    for reason, error in (("", "Enter why you are unsubscribing this number."),
                          ("x" * 256, "The reason can be at most 255 characters.")):
        with pytest.raises(importing.InvalidInput) as caught:
            importing.unsubscribe_by_merchant(db(), sub, reason=reason)
        assert caught.value.errors == {"reason": error}
    assert sub.status == "subscribed"
    importing.unsubscribe_by_merchant(db(), sub, reason="Asked")
    assert sub.status == "unsubscribed" and sub.unsubscribe_reason == "Asked"
    with pytest.raises(importing.InvalidInput, match="already unsubscribed"):
        importing.unsubscribe_by_merchant(db(), sub, reason="Again")


def test_checkout_withdrawal_counts_as_the_persons_opt_out(db):
    shop = make_shop(checkout_collection=True)
    customer = Customer(shop_id=shop.id, shopify_id=5, phone="+12125550101")
    db.add(customer)
    db.commit()
    sub = apply_sms_consent(db(), shop, customer, state="subscribed", phone="+12125550101", updated_at=utcnow())
    apply_sms_consent(db(), shop, customer, state="unsubscribed", phone="+12125550101", updated_at=utcnow())
    db.refresh(sub)
    assert sub.status == "unsubscribed" and importing.opted_out_by_person(db(), sub).source == "checkout"


# --- imports too large for one request ----------------------------------------------------------------------

LARGE = csv("phone,first_name,notes", "+12125550101,Ada", "not a number,Bob", "+12125550102,Cy", "",
            "212-555-0101,Ada again", "+12125550103,Di", "+12125550102,Cy again", "+12125550104,Ed")
"""Eight records after the header: a blank row, an invalid number, and duplicates of rows of earlier batches."""


def upload(db, shop, content: bytes = LARGE):
    return importing.import_upload(db(), shop, file_bytes=content, filename="people.csv", attested=True)


def test_a_file_over_the_inline_limit_is_saved_for_a_job_and_nothing_is_imported_yet(db, import_jobs):
    shop = make_shop()
    small = upload(db, shop, csv("phone", "+12125550101", "+12125550102", "+12125550103"))
    assert isinstance(small, importing.ImportReport) and small.imported == 3  # three rows: at once
    queued = upload(db, shop)
    assert isinstance(queued, SubscriberImport)
    assert (queued.status, queued.total_rows, queued.processed_rows, queued.filename) == ("queued", 8, 0, "people.csv")
    assert queued.file == LARGE and queued.region == "US" and queued.ignored_columns == ["notes"]
    assert import_jobs.imports() == [((queued.id,), f"subscriber-import-{queued.id}")]
    assert count(db, Subscriber) == 3


def test_an_import_job_saves_batch_by_batch_and_ends_with_the_inline_report(db, import_jobs):
    shop, twin = make_shop(), make_shop("beta.myshopify.com")
    queued = upload(db, shop)
    assert importing.import_batches(db(), queued.id, batches=2) == "paused"
    db.expire_all()
    progress = db.get(SubscriberImport, queued.id)
    assert (progress.status, progress.processed_rows, progress.imported) == ("running", 4, 2)
    assert progress.counts == {"invalid": 1, "bad_value": 0, "duplicate": 0, "unsubscribed": 0, "existing": 0}
    assert count(db, Subscriber) == 2  # each batch committed with its progress

    assert importing.import_batches(db(), queued.id) == "done"
    db.expire_all()
    done = db.get(SubscriberImport, queued.id)
    assert (done.status, done.processed_rows, done.file) == ("done", 8, None) and done.finished_at is not None
    inline = importing.import_csv(db(), twin, attested=True, file_bytes=LARGE)
    report = importing.report_of(done)
    assert (report.imported, report.rejected, report.counts, report.region, report.ignored_columns) == (
        inline.imported, inline.rejected, inline.counts, inline.region, inline.ignored_columns)
    assert [(row, value, why.split(":")[0]) for row, value, why in report.rejected] == [
        (3, "not a number", "not a number is not a phone number"), (6, "212-555-0101", "duplicate of row 2"),
        (8, "+12125550102", "duplicate of row 4")]
    consent = {s.consent_text for s in db.scalars(select(Subscriber).where(Subscriber.shop_id == shop.id))}
    assert consent == {"Everyone in this file agreed to receive marketing texts from Alpha."}
    assert [args[0] for name, args, _ in import_jobs.jobs if name == "recheck_pending"] == [shop.id] * 4 + [twin.id]


def test_imports_leave_the_planner_statistics_of_the_subscribers(db, import_jobs, monkeypatch):
    from kinnekt import defaults
    from tests.test_db_statistics import analyzed_since, forget_statistics
    shop = make_shop()
    mark = forget_statistics(db)
    importing.import_batches(db(), upload(db, shop).id)  # a job's import: always at its end
    assert analyzed_since(db, "subscribers", mark) and analyzed_since(db, "subscription_events", mark)

    monkeypatch.setattr(defaults, "SUBSCRIBER_IMPORT_ANALYZE_ROWS", 3)  # an import in the request: from 3 rows
    mark = forget_statistics(db)
    upload(db, shop, csv("phone", "+12125550201", "+12125550202"))
    assert not analyzed_since(db, "subscribers", mark)
    upload(db, shop, csv("phone", "+12125550203", "+12125550204", "+12125550205"))
    assert analyzed_since(db, "subscribers", mark)


def test_a_run_cut_short_is_resumed_where_it_stopped_with_the_same_report(db, import_jobs):
    shop = make_shop()
    queued = upload(db, shop)
    importing.import_batches(db(), queued.id, batches=1)
    db.expunge_all()  # a new worker: nothing of the first run is left in memory
    importing.import_batches(db(), queued.id, batches=2)
    db.expunge_all()
    assert importing.import_batches(db(), queued.id) == "done"
    report = importing.report_of(db.get(SubscriberImport, queued.id))
    assert report.imported == 4 and [row for row, _, _ in report.rejected] == [3, 6, 8]
    assert "duplicate of row 4" in report.rejected[2][2]  # its first row was read by an earlier run
    assert sorted(db.scalars(select(Subscriber.phone))) == [f"+1212555010{i}" for i in range(1, 5)]


def test_a_second_run_of_the_same_import_stops_when_the_first_moved_on(db, import_jobs):
    from kinnekt.db import Session
    shop = make_shop()
    queued = upload(db, shop)
    other = Session.session_factory()

    def another_run_meanwhile() -> bool:  # asked after the first batch: another worker runs the import to its end
        assert importing.import_batches(other, queued.id) == "done"
        return False

    try:
        assert importing.import_batches(db(), queued.id, should_stop=another_run_meanwhile) == "taken"
    finally:
        other.close()
    db.expire_all()
    done = db.get(SubscriberImport, queued.id)
    assert (done.status, done.processed_rows, done.imported) == ("done", 8, 4)
    assert done.counts == {"invalid": 1, "bad_value": 0, "duplicate": 2, "unsubscribed": 0, "existing": 0}


def test_the_report_keeps_the_first_rejected_rows_and_counts_them_all(db, import_jobs, monkeypatch):
    monkeypatch.setattr(importing, "REJECTED_ROWS_KEPT", 3)
    shop = make_shop()
    queued = upload(db, shop, csv("phone", *[f"bad {i}" for i in range(7)]))
    importing.import_batches(db(), queued.id)
    report = importing.report_of(db.get(SubscriberImport, queued.id))
    assert [row for row, _, _ in report.rejected] == [2, 3, 4] and report.not_imported == 7


def test_the_job_hands_over_to_a_successor_and_fails_cleanly(db, import_jobs, monkeypatch):
    from kinnekt import defaults
    from kinnekt.subscribers.tasks import import_subscribers
    shop = make_shop()
    queued = upload(db, shop)
    monkeypatch.setattr(defaults, "SUBSCRIBER_IMPORT_JOB_SECONDS", 0)  # one batch, then the successor's turn
    assert import_subscribers(queued.id) == "paused"
    assert import_jobs.imports()[-1] == ((queued.id,), f"subscriber-import-{queued.id}-after-2")

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(importing, "_insert_chunk", broken)
    with pytest.raises(RuntimeError):
        import_subscribers(queued.id)
    db.expire_all()
    failed = db.get(SubscriberImport, queued.id)
    assert (failed.status, failed.processed_rows, failed.imported, failed.file) == ("failed", 2, 1, None)
    assert failed.error == "The import stopped on an error (RuntimeError)."
    assert count(db, Subscriber) == 1  # what the first batch saved stays saved


def test_recovery_resumes_imports_whose_job_was_lost(db, import_jobs):
    import datetime as dt
    from kinnekt.subscribers.tasks import resume_subscriber_imports
    shop = make_shop()
    waiting, lost, busy, done = (upload(db, shop) for _ in range(4))
    importing.import_batches(db(), done.id)
    long_ago = utcnow() - dt.timedelta(hours=1)
    for row, status, at in ((lost, "running", long_ago), (busy, "running", utcnow())):
        db.execute(SubscriberImport.__table__.update().where(SubscriberImport.id == row.id)
                   .values(status=status, updated_at=at))
    db.commit()
    import_jobs.jobs.clear()
    assert resume_subscriber_imports() == 2
    assert import_jobs.imports() == [((waiting.id,), f"subscriber-import-{waiting.id}"),
                              ((lost.id,), f"subscriber-import-{lost.id}")]


# ---------------------------------------------------------------------------------------------- profile properties

def test_columns_named_after_properties_are_imported_into_them(db, segment_rechecks):
    import datetime as dt
    from decimal import Decimal
    from kinnekt.subscribers import properties
    shop = make_shop()
    properties.add(db(), shop.id, "Shoe size", "number")
    db.commit()
    report = importing.import_csv(db(), shop, attested=True, file_bytes=csv(
        "phone,BIRTHDAY,shoe_size,Language,notes", "+12125550101,1990-02-28,9.5,Deutsch,x", "+12125550102,,,,y"))
    assert report.imported == 2 and report.rejected == [] and report.ignored_columns == ["notes"]
    assert report.property_columns == [("BIRTHDAY", "Birthday"), ("shoe_size", "Shoe size"),
                                       ("Language", "Language")]
    first, second = db.scalars(select(Subscriber).order_by(Subscriber.phone)).all()
    assert properties.values(db(), shop.id, first.id) == {
        "birthday": dt.date(1990, 2, 28), "shoe size": Decimal("9.5"), "language": "Deutsch"}
    assert properties.values(db(), shop.id, second.id) == {}
    assert segment_rechecks == [(shop.id, sorted([first.id, second.id]))]


def test_a_row_with_a_bad_property_value_is_reported_and_not_half_saved(db, import_jobs):
    from kinnekt.models import SubscriberProperty
    shop = make_shop()
    report = importing.import_csv(db(), shop, attested=True, file_bytes=csv(
        "phone,birthday,language", "+12125550101,1990-13-01,fr", "+12125550102,1991-01-31,en"))
    assert report.imported == 1 and report.counts["bad_value"] == 1
    assert report.rejected == [(2, "+12125550101", "Birthday 1990-13-01 is not a calendar date")]
    assert db.scalars(select(Subscriber.phone)).all() == ["+12125550102"]
    assert db.scalars(select(SubscriberProperty.text_value).where(SubscriberProperty.name_key == "language")
                      ).all() == ["en"]


def test_an_import_job_imports_property_columns_too(db, import_jobs):
    from kinnekt.subscribers import properties
    shop = make_shop()
    queued = upload(db, shop, csv("phone,language", "+12125550101,de", "+12125550102,fr", "+12125550103,",
                                  "+12125550104,it"))
    assert importing.import_batches(db(), queued.id) == "done"
    languages = sorted(properties.values(db(), shop.id, s.id).get("language", "-")
                       for s in db.scalars(select(Subscriber)))
    assert languages == ["-", "de", "fr", "it"]


# --- the mapping step -----------------------------------------------------------------------------------------

def draft(db, shop, content: bytes):
    return importing.upload_draft(db(), shop, file_bytes=content, filename="people.csv", attested=True)


def suggested(db, shop, upload) -> tuple[list[str], dict[int, str]]:
    step = importing.mapping_step(db(), shop, upload)
    return step.chosen, step.names


@pytest.mark.parametrize("large", [False, True])
def test_two_confirmations_at_once_import_the_file_once(app, db, import_jobs, monkeypatch, large):
    """A double click, or the same draft confirmed in two tabs: one import runs, the other is told it is taken."""
    import threading
    from kinnekt import defaults
    from kinnekt.db import Session
    if large:
        monkeypatch.setattr(defaults, "SUBSCRIBER_IMPORT_INLINE_ROWS", 2)
    shop = make_shop()
    upload = draft(db, shop, csv("phone,first_name", "+12125550101,Ada", "+12125550102,Bo", "+12125550103,Cy"))
    chosen, names = suggested(db, shop, upload)
    db.remove()
    barrier, outcomes = threading.Barrier(2), []

    def confirm():
        with app.app_context():
            try:
                barrier.wait(10)
                outcomes.append(importing.confirm(Session(), shop, upload.id, chosen, names))
            except (importing.AlreadyConfirmed, LookupError) as exc:
                outcomes.append(exc)
            finally:
                Session.remove()

    threads = [threading.Thread(target=confirm) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    done = [o for o in outcomes if isinstance(o, (importing.ImportReport, SubscriberImport))]
    assert len(outcomes) == 2 and len(done) == 1
    assert isinstance(next(o for o in outcomes if o not in done), (importing.AlreadyConfirmed, LookupError))
    if large:
        assert import_jobs.imports() == [((upload.id,), f"subscriber-import-{upload.id}")]
        assert importing.import_batches(db(), upload.id) == "done"
    else:
        assert done[0].imported == 3 and count(db, SubscriberImport) == 0
    assert count(db, Subscriber) == 3 and count(db, SubscriptionEvent) == 3


def test_a_large_file_is_imported_by_its_job_with_the_confirmed_mapping(db, import_jobs, monkeypatch):
    from kinnekt import defaults
    from kinnekt.models import ProfileProperty, SubscriberProperty
    monkeypatch.setattr(defaults, "SUBSCRIBER_IMPORT_INLINE_ROWS", 2)
    monkeypatch.setattr(defaults, "SUBSCRIBER_IMPORT_BATCH_ROWS", 2)
    shop = make_shop()
    upload = draft(db, shop, csv("name,cell,score,surname", "Ada,+12125550101,3,Lovelace", "Bo,+12125550102,x,",
                                 "Cy,+12125550103,4,=1+1"))
    chosen, names = suggested(db, shop, upload)
    assert chosen == ["ignore", "phone", "ignore", "last_name"]
    chosen = ["first_name", "phone", "new:number", "last_name"]
    queued = importing.confirm(db(), shop, upload.id, chosen, {2: "Score"})
    assert isinstance(queued, SubscriberImport) and queued.status == "queued"
    assert queued.mapping == ["first_name", "phone", "property:score", "last_name"]
    assert count(db, Subscriber) == 0 and db.scalar(select(ProfileProperty.name)) == "Score"
    assert importing.import_batches(db(), queued.id) == "done"
    rows = db.execute(select(Subscriber.phone, Subscriber.first_name, Subscriber.last_name)
                      .order_by(Subscriber.phone)).all()
    assert rows == [("+12125550101", "Ada", "Lovelace")]
    assert db.scalar(select(SubscriberProperty.number_value)) == 3
    report = importing.report_of(db.get(SubscriberImport, queued.id))
    assert report.counts["bad_value"] == 2
    assert [why for _, _, why in report.rejected] == [
        "Score must be a number", "Last name starts with “=”, which a spreadsheet would run as a formula"]


def test_a_draft_needs_the_attestation_and_a_usable_file(db):
    shop = make_shop()
    with pytest.raises(importing.InvalidInput):
        importing.upload_draft(db(), shop, file_bytes=csv("phone", "+12125550101"), filename="a.csv", attested=False)
    with pytest.raises(importing.ImportRefused, match="not UTF-8"):
        draft(db, shop, "phone\n+12125550101\n".encode("utf-16"))
    with pytest.raises(importing.ImportRefused, match="at most 60"):
        draft(db, shop, ",".join(f"c{i}" for i in range(61)).encode())
    assert count(db, SubscriberImport) == 0


def test_drafts_past_their_lifetime_are_pruned_in_every_shop(db):
    import datetime as dt
    from kinnekt import defaults
    from kinnekt.subscribers.tasks import prune_import_drafts
    shop, other = make_shop(), make_shop("beta.myshopify.com")
    old, fresh, theirs = (draft(db, s, csv("phone", "+12125550101")) for s in (shop, shop, other))
    queued = importing.import_upload(db(), shop, file_bytes=csv("phone", "+12125550102"), filename="a.csv",
                                     attested=True)
    for upload in (old, theirs):
        upload.created_at = utcnow() - dt.timedelta(hours=defaults.SUBSCRIBER_IMPORT_DRAFT_HOURS, minutes=1)
    db.commit()
    assert prune_import_drafts() == 2
    assert db.scalars(select(SubscriberImport.id).order_by(SubscriberImport.id)).all() == [fresh.id]
    assert isinstance(queued, importing.ImportReport)  # an import done at once leaves no row to prune
