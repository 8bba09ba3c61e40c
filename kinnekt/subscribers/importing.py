"""Subscribers the merchant adds (one by hand, or many from a CSV file) under a consent attestation, and
the merchant's own unsubscribe / resubscribe.

Rules:
- A manual add or an import needs the merchant to attest that the people agreed to receive marketing
  texts; that attestation is the consent text recorded on each subscriber (source Manual / Import).
- Neither ever subscribes again a number that unsubscribed, and neither changes a number that is
  already a subscriber (subscribed or pending): those rows are reported, not saved.
- In the pages, an upload is first kept as a draft (`upload_draft`; a shop keeps a few, for a day) while the
  merchant maps its columns (`mapping_step`, import_mapping.py: the phone, names, email, profile properties, new
  properties, or ignored; suggested from the header names, with a preview and the values that do not fit);
  `confirm` imports it with that mapping, once however many times it is confirmed. `import_csv` and
  `import_upload` import a file as its header suggests (a column whose header names one of the shop's profile
  properties, case, spaces and underscores aside, is imported into it). A row with a value that does not fit its
  column (a date that is not one, a number that is not one, a formula) is not imported at all and is reported
  with why.
- An import is checked whole before anything is saved: a file that is not UTF-8 CSV, is empty, is over
  the size, row or column limit (the static lists' limits, defaults.SUBSCRIBER_IMPORT_MAX_COLUMNS), or has no
  phone column, is refused with the reason. Otherwise the good rows are saved and the others are reported with
  why (not a phone number, duplicate in the file, unsubscribed, already a subscriber): in one transaction for a file of
  up to defaults.SUBSCRIBER_IMPORT_INLINE_ROWS rows, else by a job, batch by batch, each batch committed with
  the progress the page shows (a SubscriberImport), so a job cut short goes on where it stopped.
- The merchant may unsubscribe anyone, with a reason. The merchant may resubscribe an unsubscribed
  number with a reason; when the person opted out themselves (texted STOP, or withdrew consent in
  Shopify), only with the merchant's attestation that the person asked to be subscribed again: carriers
  require that a STOP is honoured, so a merchant cannot undo it on a whim. A pending number is not
  confirmed by the merchant: only the person's "Y" confirms a double opt-in.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable, Mapping

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults, signals
from kinnekt.db import begin_writing, utcnow
from kinnekt.models import Customer, Shop, Subscriber, SubscriberImport, SubscriberProperty, SubscriptionEvent
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.models.subscriber_import import ImportStatus
from kinnekt.subscribers import import_mapping, optin, phones, properties, tasks
from kinnekt.subscribers.import_mapping import FIRST_NAME_HEADERS, ImportRefused  # noqa: F401  (re-exported)
from kinnekt.subscribers.phones import shop_region

PERSON_OPT_OUT_SOURCES = ("sms", "checkout")
"""Sources of an unsubscribe made by the person (a STOP text, consent withdrawn in Shopify): only they undo it."""

MAX_FIRST_NAME = 255
MAX_REASON = 255
REJECTED_ROWS_KEPT = 200
"""Rows not imported that an import job keeps for its report (the first ones; the counts cover them all)."""
_CHUNK = 500  # phones per IN (...) query and per INSERT batch


class InvalidInput(ValueError):
    """The merchant's input is wrong; `errors` maps each form field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(errors.values()))
        self.errors = errors


class AlreadyKnown(ValueError):
    """A manual add of a number that is already the shop's subscriber (in any status); nothing was changed."""

    def __init__(self, message: str, subscriber: Subscriber):
        super().__init__(message)
        self.subscriber = subscriber


@dataclass
class ImportReport:
    """The outcome of an import: how many subscribers were added, and each row that was not, with why."""

    imported: int
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (row number, value, reason)
    counts: dict[str, int] = field(default_factory=dict)  # invalid | bad_value | duplicate | unsubscribed | existing
    region: str | None = None  # the country assumed for numbers written without +country code
    ignored_columns: list[str] = field(default_factory=list)
    subscriber_ids: list[int] = field(default_factory=list)
    property_columns: list[tuple[str, str]] = field(default_factory=list)  # (column header, property label)

    @property
    def not_imported(self) -> int:
        """How many rows were not imported (an import job's report keeps only the first ones in `rejected`)."""
        return sum(self.counts.values())


def attestation(shop: Shop) -> str:
    """What the merchant confirms on a manual add; recorded as the subscriber's consent text."""
    return f"This person agreed to receive marketing texts from {shop.name or shop.domain}."


def import_attestation(shop: Shop) -> str:
    """What the merchant confirms on an import; recorded as each imported subscriber's consent text."""
    return f"Everyone in this file agreed to receive marketing texts from {shop.name or shop.domain}."


# ---------------------------------------------------------------------------------------------- manual add

def add_subscriber(session: OrmSession, shop: Shop, *, phone: str, first_name: str | None = None,
                   attested: bool) -> Subscriber:
    """Add one subscriber by hand (source Manual, subscribed now); commits.

    Raises InvalidInput (fields phone, first_name, consent) or AlreadyKnown, having saved nothing.
    """
    errors: dict[str, str] = {}
    info = None
    try:
        info = phones.normalise(phone, shop_region(shop), prefer_zone=shop.timezone)
    except phones.InvalidPhone as exc:
        errors["phone"] = str(exc)
    name = " ".join((first_name or "").split())
    if len(name) > MAX_FIRST_NAME:
        errors["first_name"] = f"The first name can be at most {MAX_FIRST_NAME} characters."
    if not attested:
        errors["consent"] = "Confirm that this person agreed to receive your marketing texts."
    if errors:
        raise InvalidInput(errors)
    existing = session.scalar(select(Subscriber).where(Subscriber.shop_id == shop.id, Subscriber.phone == info.e164))
    if existing is not None:
        raise AlreadyKnown(_known_message(existing), existing)
    try:
        return optin.subscribe(session, shop, info.e164, source="manual", consent_text=attestation(shop),
                               first_name=name or None)
    except optin.OptedOut:  # it unsubscribed between our look and the insert
        session.rollback()
        existing = session.scalar(select(Subscriber).where(Subscriber.shop_id == shop.id,
                                                           Subscriber.phone == info.e164))
        raise AlreadyKnown(_known_message(existing), existing) from None


def _known_message(subscriber: Subscriber) -> str:
    if subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        return (f"{subscriber.phone} unsubscribed. Only they can opt in again, by texting a keyword or using "
                f"your sign-up form.")
    if subscriber.status == SubscriberStatus.PENDING:
        return f"{subscriber.phone} already signed up and has not confirmed yet."
    return f"{subscriber.phone} is already a subscriber."


# ---------------------------------------------------------------------------------------------- CSV import

@dataclass
class CheckedFile(import_mapping.Table):
    """An upload that can be imported: its CSV records, the header row (import_mapping.Table), and what each column
    becomes."""

    phone_column: int
    name_column: int | None
    ignored_columns: list[str]
    region: str | None  # the country assumed for numbers written without +country code
    property_columns: list[tuple[int, str]] = field(default_factory=list)  # (column index, property key)
    properties: Mapping[str, properties.Property] = field(default_factory=dict)  # the shop's, by key
    targets: list[str] = field(default_factory=list)  # one per column (import_mapping)

    @property
    def value_columns(self) -> list[tuple[int, str]]:
        """(column, target) of the columns read besides the phone: names, email, properties."""
        return [(i, target) for i, target in enumerate(self.targets)
                if target not in ("phone", import_mapping.IGNORE)]


def _checked(shop: Shop, table: import_mapping.Table, targets: list[str],
             catalogue: Mapping[str, properties.Property]) -> CheckedFile:
    """A table with a resolved mapping as a CheckedFile; a property deleted since the mapping was confirmed is
    ignored."""
    headers = table.headers
    padded = (list(targets) + [import_mapping.IGNORE] * len(headers))[:len(headers)]
    targets = [t if not t.startswith(import_mapping.PROPERTY) or t[len(import_mapping.PROPERTY):] in catalogue
               else import_mapping.IGNORE for t in padded]
    mapping = import_mapping.Mapping(targets=targets)
    ignored = [cell for i, cell in enumerate(headers) if cell and targets[i] == import_mapping.IGNORE]
    return CheckedFile(rows=table.rows, header=table.header, phone_column=mapping.column("phone"),
                       name_column=mapping.column("first_name"), ignored_columns=ignored,
                       region=shop_region(shop), property_columns=mapping.property_columns,
                       properties=catalogue, targets=targets)


def check_file(shop: Shop, file_bytes: bytes, catalogue: Mapping[str, properties.Property] | None = None
               ) -> CheckedFile:
    """The upload as a CSV file whose first row names a phone column; raises ImportRefused saying why it is not.

    Each column is read as its header suggests (import_mapping.suggest): columns named after one of
    `catalogue`'s properties (the shop's, `properties.catalogue`) are read into them.
    """
    table = import_mapping.read(file_bytes)
    catalogue = catalogue or {}
    targets = import_mapping.suggest(table.headers, catalogue)
    if "phone" not in targets:
        found = ", ".join(f"“{cell}”" for cell in table.headers if cell)
        raise ImportRefused("The first row must name the columns: “phone” (required) and “first_name” "
                            f"(optional). It reads {found}.")
    return _checked(shop, table, targets, catalogue)


def import_upload(session: OrmSession, shop: Shop, *, file_bytes: bytes, filename: str, attested: bool
                  ) -> ImportReport | SubscriberImport:
    """Import an uploaded CSV: at once when it is small (its report), else as a job (the queued import).

    Up to defaults.SUBSCRIBER_IMPORT_INLINE_ROWS rows are imported within the request, as import_csv does;
    a larger file is checked the same way, saved on a SubscriberImport and imported by a job batch by batch
    (import_batches), whose progress the page polls. Raises InvalidInput or ImportRefused, having saved nothing.
    """
    if not attested:
        raise InvalidInput({"consent": "Confirm that everyone in the file agreed to receive your marketing texts."})
    checked = check_file(shop, file_bytes, properties.catalogue(session, shop.id))
    if checked.data_rows <= defaults.SUBSCRIBER_IMPORT_INLINE_ROWS:
        return _import_now(session, shop, checked)
    upload = SubscriberImport(shop_id=shop.id, filename=(filename or "")[:255], file=file_bytes,
                              consent_text=import_attestation(shop), total_rows=checked.data_rows,
                              counts=_no_counts(), region=checked.region, ignored_columns=checked.ignored_columns,
                              mapping=checked.targets)
    session.add(upload)
    session.commit()
    queue_import(upload.id)
    return upload


def queue_import(import_id: int, *, after_row: int | None = None) -> None:
    """Queue the job that imports this upload: one queued job per import, or the successor of a run that
    stopped after `after_row` rows (a running job's id cannot be queued again)."""
    tasks.enqueue_import_subscribers(import_id, after_row=after_row)


def import_csv(session: OrmSession, shop: Shop, *, file_bytes: bytes, attested: bool) -> ImportReport:
    """Add the numbers of an uploaded CSV (header row; `phone`, optional `first_name`) as subscribers; commits.

    Numbers without +country code are read in the shop's country (from its time zone). Raises
    InvalidInput (field consent) or ImportRefused, having saved nothing; see the module docstring.
    """
    if not attested:
        raise InvalidInput({"consent": "Confirm that everyone in the file agreed to receive your marketing texts."})
    return _import_now(session, shop, check_file(shop, file_bytes, properties.catalogue(session, shop.id)))


def _import_now(session: OrmSession, shop: Shop, checked: CheckedFile) -> ImportReport:
    """Every row of a checked file in one transaction; the report lists every row not imported."""
    report = ImportReport(imported=0, region=checked.region, ignored_columns=checked.ignored_columns,
                          counts=_no_counts(), property_columns=[
                              (checked.rows[checked.header][i].strip(), checked.properties[key].label)
                              for i, key in checked.property_columns])
    _import_rows(session, shop, checked, checked.first, len(checked.rows), {}, report, import_attestation(shop),
                 utcnow())
    session.commit()
    _after_inline_import(session, shop, report)
    return report


def _after_inline_import(session: OrmSession, shop: Shop, report: ImportReport) -> None:
    """After an inline import's commit: fresh planner statistics for a large one, the segment re-check."""
    if report.imported >= defaults.SUBSCRIBER_IMPORT_ANALYZE_ROWS:
        analyze_subscriber_tables(session)
    if report.subscriber_ids:
        signals.announce(signals.subscribers_changed, session, shop_id=shop.id,
                         subscriber_ids=report.subscriber_ids)
        optin.announce_imported(session, report.subscriber_ids)


# ---------------------------------------------------------------------------------------------- the mapping step

class AlreadyConfirmed(LookupError):
    """The upload is no longer waiting for its mapping: it was confirmed (or dropped) already."""


def upload_draft(session: OrmSession, shop: Shop, *, file_bytes: bytes, filename: str, attested: bool
                 ) -> SubscriberImport:
    """Keep an uploaded CSV as a draft import while the merchant maps its columns; commits.

    The file is checked whole first (encoding, size, rows, columns): InvalidInput (field consent) or ImportRefused
    save nothing. A shop keeps at most defaults.SUBSCRIBER_IMPORT_DRAFTS drafts, none older than
    defaults.SUBSCRIBER_IMPORT_DRAFT_HOURS: older ones are dropped here.
    """
    if not attested:
        raise InvalidInput({"consent": "Confirm that everyone in the file agreed to receive your marketing texts."})
    table = import_mapping.read(file_bytes)
    drop_stale_drafts(session, shop.id, keep=defaults.SUBSCRIBER_IMPORT_DRAFTS - 1)
    draft = SubscriberImport(shop_id=shop.id, status=ImportStatus.DRAFT, filename=(filename or "")[:255],
                             file=file_bytes, consent_text=import_attestation(shop), total_rows=table.data_rows,
                             counts=_no_counts(), region=shop_region(shop), ignored_columns=[])
    session.add(draft)
    session.commit()
    return draft


def drop_stale_drafts(session: OrmSession, shop_id: int, *, keep: int) -> int:
    """Delete the shop's drafts beyond the newest `keep` and those older than the draft lifetime (not committed)."""
    cutoff = utcnow() - dt.timedelta(hours=defaults.SUBSCRIBER_IMPORT_DRAFT_HOURS)
    drafts = session.execute(select(SubscriberImport.id, SubscriberImport.created_at).where(
        SubscriberImport.shop_id == shop_id, SubscriberImport.status == ImportStatus.DRAFT)
        .order_by(SubscriberImport.id.desc())).tuples().all()
    stale = [draft_id for n, (draft_id, created) in enumerate(drafts) if n >= keep or created < cutoff]
    if stale:
        session.execute(delete(SubscriberImport).where(SubscriberImport.shop_id == shop_id,
                                                       SubscriberImport.id.in_(stale)))
    return len(stale)


def prune_drafts(session: OrmSession, now: dt.datetime | None = None) -> int:
    """Delete every shop's drafts older than the draft lifetime (the periodic prune); commits; returns how many."""
    cutoff = (now or utcnow()) - dt.timedelta(hours=defaults.SUBSCRIBER_IMPORT_DRAFT_HOURS)
    result = session.execute(delete(SubscriberImport).where(SubscriberImport.status == ImportStatus.DRAFT,
                                                            SubscriberImport.created_at < cutoff)
                             .execution_options(synchronize_session=False))
    session.commit()
    return result.rowcount or 0


@dataclass
class MappingStep:
    """What the mapping step shows: the merchant's choices, the options, and the preview they give."""

    upload: SubscriberImport
    chosen: list[str]
    names: dict[int, str]
    options: list[tuple[str, str]]
    preview: import_mapping.Preview
    region: str | None
    errors: dict = field(default_factory=dict)


def mapping_step(session: OrmSession, shop: Shop, upload: SubscriberImport, chosen: list[str] | None = None,
                 names: Mapping[int, str] | None = None, errors: Mapping | None = None) -> MappingStep:
    """The mapping step of a draft: the suggested mapping (or the merchant's `chosen` targets and new property
    `names`, each per column) with its preview. Nothing is saved."""
    table = import_mapping.read(upload.file)
    catalogue = properties.catalogue(session, shop.id)
    width = len(table.headers)
    if chosen is None:
        chosen = import_mapping.suggest(table.headers, catalogue)
    chosen = [(chosen[i] if i < len(chosen) and isinstance(chosen[i], str) else import_mapping.IGNORE)[:80]
              for i in range(width)]
    names = {i: " ".join(str((names or {}).get(i) or table.headers[i]).split())[:80] for i in range(width)}
    targets, extended = import_mapping.provisional(chosen, names, catalogue)
    return MappingStep(upload=upload, chosen=chosen, names=names, options=import_mapping.options(catalogue),
                       preview=import_mapping.preview(shop, table, targets, extended, upload.region),
                       region=upload.region, errors=dict(errors or {}))


def confirm(session: OrmSession, shop: Shop, import_id: int, chosen: list[str], names: Mapping[int, str]
            ) -> ImportReport | SubscriberImport:
    """Import a draft with the merchant's mapping: at once when it is small (its report), else as a job (the
    queued import). New properties of the mapping are created with it; commits.

    Raises MappingInvalid (nothing saved) for a mapping that cannot be imported, AlreadyConfirmed when the
    draft is no longer waiting (confirmed twice at once: only one import runs), LookupError for no such draft.
    """
    upload = session.scalar(select(SubscriberImport).where(SubscriberImport.shop_id == shop.id,
                                                           SubscriberImport.id == import_id))
    if upload is None:
        raise LookupError(import_id)
    if upload.status != ImportStatus.DRAFT:
        raise AlreadyConfirmed(import_id)
    table = import_mapping.read(upload.file)
    mapping = import_mapping.resolve(len(table.headers), chosen, names, properties.catalogue(session, shop.id))
    inline = table.data_rows <= defaults.SUBSCRIBER_IMPORT_INLINE_ROWS
    # Only one confirmation moves the draft on: a second one (a double click, two tabs) finds it taken.
    begin_writing(session)
    taken = session.execute(update(SubscriberImport).where(
        SubscriberImport.id == upload.id, SubscriberImport.status == ImportStatus.DRAFT).values(
        status=ImportStatus.RUNNING if inline else ImportStatus.QUEUED, mapping=mapping.targets)
        .execution_options(synchronize_session=False))
    if taken.rowcount != 1:
        session.rollback()
        raise AlreadyConfirmed(import_id)
    for column, prop in mapping.new.items():
        try:
            properties.add(session, shop.id, prop.name, prop.type)
        except properties.PropertyError as exc:  # taken by another request meanwhile
            session.rollback()
            raise import_mapping.MappingInvalid({column: str(exc)}) from None
    checked = _checked(shop, table, mapping.targets, properties.catalogue(session, shop.id))
    if not inline:
        session.execute(update(SubscriberImport).where(SubscriberImport.id == upload.id).values(
            ignored_columns=checked.ignored_columns).execution_options(synchronize_session=False))
        session.commit()
        session.refresh(upload)
        queue_import(upload.id)
        return upload
    report = ImportReport(imported=0, region=checked.region, ignored_columns=checked.ignored_columns,
                          counts=_no_counts(), property_columns=[
                              (table.headers[i], checked.properties[key].label) for i, key in checked.property_columns])
    _import_rows(session, shop, checked, checked.first, len(checked.rows), {}, report, upload.consent_text, utcnow())
    session.execute(delete(SubscriberImport).where(SubscriberImport.id == upload.id))
    session.commit()
    _after_inline_import(session, shop, report)
    return report


def analyze_subscriber_tables(session: OrmSession) -> None:
    """Fresh planner statistics for the tables an import fills (kinnekt/db_statistics.py)."""
    from kinnekt import db_statistics
    db_statistics.analyze(session, [Subscriber.__tablename__, SubscriptionEvent.__tablename__])


def _no_counts() -> dict[str, int]:
    return {"invalid": 0, "bad_value": 0, "duplicate": 0, "unsubscribed": 0, "existing": 0}


def _import_rows(session: OrmSession, shop: Shop, checked: CheckedFile, first: int, stop: int, seen: dict[str, int],
                 report: ImportReport, consent_text: str, now) -> None:
    """Import the records rows[first:stop] into the session's transaction, adding to `report` (its rejected rows
    in row order); `seen` holds the numbers of the rows before, E.164 -> row number, and gets these ones."""
    rejected: list[tuple[int, str, str]] = []

    def reject(number: int, value: str, reason: str, kind: str) -> None:
        rejected.append((number, value, reason))
        report.counts[kind] += 1

    candidates: dict[str, tuple[int, str, dict, phones.PhoneInfo]] = {}  # E.164 -> (row, value, fields, info)
    values: dict[str, dict] = {}  # E.164 -> its property values (key -> parsed), the rows that have some
    columns = checked.value_columns
    for index in range(first, stop):
        row, number = checked.rows[index], index + 1  # row numbers as a spreadsheet shows them
        if not any(cell.strip() for cell in row):
            continue
        value = row[checked.phone_column].strip() if checked.phone_column < len(row) else ""
        try:
            info = phones.normalise(value, checked.region, prefer_zone=shop.timezone)
        except phones.InvalidPhone as exc:
            reject(number, value, str(exc), "invalid")
            continue
        if info.e164 in seen:
            reject(number, value, f"duplicate of row {seen[info.e164]}", "duplicate")
            continue
        seen[info.e164] = number
        converted, problems = {}, []
        for i, target in columns:
            try:
                converted[target] = import_mapping.convert(target, row[i] if i < len(row) else "",
                                                           checked.properties, checked.region, shop.timezone)
            except import_mapping.CellError as exc:
                problems.append(str(exc))
        if problems:
            reject(number, value, "; ".join(problems), "bad_value")
            continue
        parsed = {target[len(import_mapping.PROPERTY):]: v for target, v in converted.items()
                  if target.startswith(import_mapping.PROPERTY)}
        if any(v is not None for v in parsed.values()):
            values[info.e164] = parsed
        candidates[info.e164] = (number, value, converted, info)

    known = _statuses(session, shop.id, list(candidates))
    fresh = [phone for phone in candidates if phone not in known]
    for chunk in _chunks(fresh, _CHUNK):
        inserted = _insert_chunk(session, shop, chunk, candidates, consent_text, now)
        _insert_values(session, shop, checked, inserted, values)
        for phone in chunk:
            if phone not in inserted:  # signed up by another way while we imported
                known.update(_statuses(session, shop.id, [phone]))
        report.subscriber_ids.extend(inserted.values())
        report.imported += len(inserted)
    for phone, status in known.items():
        number, value, _, _ = candidates[phone]
        if status == SubscriberStatus.UNSUBSCRIBED:
            reject(number, value, "unsubscribed: only they can opt in again, by texting a keyword or using your "
                                  "sign-up form", "unsubscribed")
        else:
            reject(number, value, "already a subscriber" if status == SubscriberStatus.SUBSCRIBED
                   else "already signed up, waiting for their confirmation", "existing")
    report.rejected.extend(sorted(rejected))


# ---------------------------------------------------------------------------------------------- import jobs

def import_batches(session: OrmSession, import_id: int, *, batches: int | None = None,
                   should_stop: Callable[[], bool] = lambda: False) -> str:
    """Import a queued or running upload batch by batch, each committed with its progress.

    Each batch of defaults.SUBSCRIBER_IMPORT_BATCH_ROWS rows is saved in one transaction together with the
    progress on the SubscriberImport row, so a run cut short (a lost worker) is resumed where it stopped.
    Returns "done" when the last batch is in, "paused" when `should_stop` (asked after each batch) said so or
    `batches` were done with rows left, "taken" when another run of the import moved its progress on (this
    one stops), or the status of an import that was over already ("failed"; "gone" when it no longer exists).
    """
    upload = session.get(SubscriberImport, import_id)
    if upload is None or not upload.running:
        return upload.status if upload is not None else "gone"
    shop = session.get(Shop, upload.shop_id)
    checked = _checked_upload(session, shop, upload)  # the same bytes as uploaded, read as confirmed
    cursor = checked.first + upload.processed_rows
    seen = _numbers_before(shop, checked, cursor)  # resuming: the file's earlier numbers, for its duplicates
    end, done = len(checked.rows), 0
    while cursor < end:
        stop = min(cursor + defaults.SUBSCRIBER_IMPORT_BATCH_ROWS, end)
        upload = session.scalar(select(SubscriberImport).where(SubscriberImport.id == import_id).with_for_update()
                                .execution_options(populate_existing=True))
        if upload is None or not upload.running or checked.first + upload.processed_rows != cursor:
            session.rollback()  # another run of this import moved it on (or it was deleted with its shop)
            return "taken"
        now = utcnow()
        report = ImportReport(imported=0, counts=_no_counts())
        _import_rows(session, shop, checked, cursor, stop, seen, report, upload.consent_text, now)
        upload.status = ImportStatus.RUNNING
        upload.processed_rows += stop - cursor
        upload.imported += report.imported
        upload.counts = {kind: upload.counts.get(kind, 0) + count for kind, count in report.counts.items()}
        kept = REJECTED_ROWS_KEPT - len(upload.rejected)
        if kept > 0 and report.rejected:
            upload.rejected = upload.rejected + [list(row) for row in report.rejected[:kept]]
        if stop == end:
            upload.status, upload.file, upload.finished_at = ImportStatus.DONE, None, now
        session.commit()
        if report.subscriber_ids:
            signals.announce(signals.subscribers_changed, session, shop_id=shop.id,
                             subscriber_ids=report.subscriber_ids)
            optin.announce_imported(session, report.subscriber_ids)
        cursor, done = stop, done + 1
        if cursor < end and ((batches is not None and done >= batches) or should_stop()):
            return "paused"  # after a batch, never before the first: every run moves the import on
    analyze_subscriber_tables(session)
    return "done"


def _checked_upload(session: OrmSession, shop: Shop, upload: SubscriberImport) -> CheckedFile:
    """An import's file read with its confirmed mapping (an import queued before mappings: as its header says)."""
    catalogue = properties.catalogue(session, shop.id)
    if not upload.mapping:
        return check_file(shop, upload.file, catalogue)
    return _checked(shop, import_mapping.read(upload.file), upload.mapping, catalogue)


def _numbers_before(shop: Shop, checked: CheckedFile, stop: int) -> dict[str, int]:
    """E.164 -> first row number of the numbers in the records before `stop` (what a resumed run has seen)."""
    seen: dict[str, int] = {}
    for index in range(checked.first, stop):
        row = checked.rows[index]
        value = row[checked.phone_column].strip() if checked.phone_column < len(row) else ""
        if not value:
            continue
        try:
            seen.setdefault(phones.normalise(value, checked.region, prefer_zone=shop.timezone).e164, index + 1)
        except phones.InvalidPhone:
            continue
    return seen


def fail_import(session: OrmSession, import_id: int, error: str) -> None:
    """Mark an import that cannot go on as failed (what it saved stays saved, and its report says so); commits."""
    session.rollback()
    upload = session.get(SubscriberImport, import_id)
    if upload is not None and upload.running:
        upload.status, upload.error, upload.file, upload.finished_at = ImportStatus.FAILED, error[:1000], None, utcnow()
        session.commit()


def report_of(upload: SubscriberImport) -> ImportReport:
    """An import job's report so far, as an inline import's (its rejected rows are the first ones only)."""
    return ImportReport(imported=upload.imported, rejected=[tuple(row) for row in upload.rejected],
                        counts={**_no_counts(), **(upload.counts or {})}, region=upload.region,
                        ignored_columns=list(upload.ignored_columns or []))


def imports_to_resume(session: OrmSession) -> list[int]:
    """Imports whose job was lost: queued ones, and running ones without progress for a while (recovery)."""
    stale = utcnow() - dt.timedelta(seconds=defaults.SUBSCRIBER_IMPORT_STALE_SECONDS)
    return list(session.scalars(select(SubscriberImport.id).where(or_(
        SubscriberImport.status == ImportStatus.QUEUED,
        and_(SubscriberImport.status == ImportStatus.RUNNING, SubscriberImport.updated_at < stale)))
        .order_by(SubscriberImport.id)))


def _statuses(session: OrmSession, shop_id: int, numbers: list[str]) -> dict[str, str]:
    """E.164 -> status of the shop's subscribers among these numbers."""
    found: dict[str, str] = {}
    for chunk in _chunks(numbers, _CHUNK):
        found.update(session.execute(select(Subscriber.phone, Subscriber.status).where(
            Subscriber.shop_id == shop_id, Subscriber.phone.in_(chunk))).tuples().all())
    return found


def _insert_chunk(session: OrmSession, shop: Shop, chunk: list[str], candidates: dict, consent_text: str,
                  now) -> dict[str, int]:
    """Insert these new numbers as subscribed Import subscribers with their consent events; E.164 -> id.

    A number another sign-up inserted meanwhile makes the batch fail as a whole; it is retried
    without the numbers that now exist.
    """
    customers: dict[str, int] = {}
    for phone, customer_id in session.execute(
            select(Customer.phone, Customer.id).where(Customer.shop_id == shop.id, Customer.phone.in_(chunk))
            .order_by(Customer.id.desc())).tuples():
        customers[phone] = customer_id  # the lowest id wins, as optin links it
    remaining = list(chunk)
    while remaining:
        values = []
        for phone in remaining:
            _, _, fields, info = candidates[phone]
            values.append({
                "shop_id": shop.id, "phone": phone, "status": SubscriberStatus.SUBSCRIBED, "source": "import",
                "first_name": fields.get("first_name"), "last_name": fields.get("last_name"),
                "email": fields.get("email"), "country": info.country, "carrier": info.carrier,
                "timezone": info.timezone,
                "customer_id": customers.get(phone), "consent_at": now, "consent_text": consent_text,
                "subscribed_at": now, "sent_count": 0, "clicks_count": 0, "created_at": now, "updated_at": now})
        try:
            with session.begin_nested():
                session.execute(insert(Subscriber), values)
        except IntegrityError:
            taken = _statuses(session, shop.id, remaining)
            if not taken:
                raise
            remaining = [phone for phone in remaining if phone not in taken]
            continue
        ids = dict(session.execute(select(Subscriber.phone, Subscriber.id).where(
            Subscriber.shop_id == shop.id, Subscriber.phone.in_(remaining))).tuples().all())
        session.execute(insert(SubscriptionEvent), [
            {"shop_id": shop.id, "subscriber_id": ids[phone], "kind": "subscribed", "at": now, "source": "import",
             "detail": consent_text} for phone in remaining])
        return ids
    return {}


def _insert_values(session: OrmSession, shop: Shop, checked: CheckedFile, inserted: Mapping[str, int],
                   values: Mapping[str, dict]) -> None:
    """The property values of the rows just inserted (in the same transaction as their subscribers)."""
    rows = []
    for phone, subscriber_id in inserted.items():
        for key, value in values.get(phone, {}).items():
            if value is None:
                continue
            kind = checked.properties[key].type
            rows.append({"shop_id": shop.id, "subscriber_id": subscriber_id, "name_key": key,
                         "text_value": value if kind == "text" else None,
                         "number_value": value if kind == "number" else None,
                         "date_value": value if kind == "date" else None,
                         "anniversary": value.month * 100 + value.day if kind == "date" else None})
    for chunk in _chunks(rows, _CHUNK):
        session.execute(insert(SubscriberProperty), chunk)


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


# ---------------------------------------------------------------------------------------------- merchant actions

def opted_out_by_person(session: OrmSession, subscriber: Subscriber) -> SubscriptionEvent | None:
    """The unsubscribe event that made this number unsubscribed, when the person made it (STOP, Shopify)."""
    if subscriber.status != SubscriberStatus.UNSUBSCRIBED:
        return None
    event = session.scalar(select(SubscriptionEvent).where(
        SubscriptionEvent.subscriber_id == subscriber.id, SubscriptionEvent.kind == "unsubscribed")
        .order_by(SubscriptionEvent.at.desc(), SubscriptionEvent.id.desc()).limit(1))
    return event if event is not None and event.source in PERSON_OPT_OUT_SOURCES else None


def unsubscribe_by_merchant(session: OrmSession, subscriber: Subscriber, *, reason: str) -> Subscriber:
    """Unsubscribe on the merchant's word, with a required reason; raises InvalidInput (field reason)."""
    reason = " ".join((reason or "").split())
    if subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        raise InvalidInput({"reason": f"{subscriber.phone} is already unsubscribed."})
    if not reason:
        raise InvalidInput({"reason": "Enter why you are unsubscribing this number."})
    if len(reason) > MAX_REASON:
        raise InvalidInput({"reason": f"The reason can be at most {MAX_REASON} characters."})
    return optin.unsubscribe(session, subscriber, reason=reason, source="merchant")


def resubscribe_by_merchant(session: OrmSession, subscriber: Subscriber, *, reason: str,
                            asked_again: bool) -> Subscriber:
    """Subscribe an unsubscribed number again on the merchant's word; see the module docstring for the rule.

    Raises InvalidInput (fields reason, asked_again) having changed nothing.
    """
    reason = " ".join((reason or "").split())
    if subscriber.status == SubscriberStatus.PENDING:
        raise InvalidInput({"reason": f"{subscriber.phone} has not confirmed yet: only their reply can confirm it."})
    if subscriber.status != SubscriberStatus.UNSUBSCRIBED:
        raise InvalidInput({"reason": f"{subscriber.phone} is already subscribed."})
    errors = {}
    if not reason:
        errors["reason"] = "Enter why you are subscribing this number again."
    elif len(reason) > MAX_REASON:
        errors["reason"] = f"The reason can be at most {MAX_REASON} characters."
    by_person = opted_out_by_person(session, subscriber)
    if by_person is not None and not asked_again:
        how = "texting STOP" if by_person.source == "sms" else "withdrawing consent in Shopify"
        errors["asked_again"] = (f"This person unsubscribed by {how}. Resubscribe them only if they asked you to, "
                                 "and confirm that they did.")
    if errors:
        raise InvalidInput(errors)
    detail = reason + (" · the person asked to be subscribed again (confirmed by the merchant)"
                       if by_person is not None else "")
    return optin.resubscribe(session, subscriber, source="merchant", detail=detail)
