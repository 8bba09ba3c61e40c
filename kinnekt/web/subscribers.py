"""Subscribers pages: the searchable, filterable audience; one subscriber's detail with its consent record and
history; manual add, CSV import, and the merchant's unsubscribe / resubscribe."""
from __future__ import annotations

from functools import lru_cache

import phonenumbers
from flask import abort, g, make_response, redirect, render_template, request, url_for
from phonenumbers import geocoder

from kinnekt import defaults
from kinnekt.db import Session
from kinnekt.models import Subscriber, SubscriberImport
from kinnekt.models.subscriber import SOURCE_LABELS, SOURCES, STATUS_LABELS, STATUSES
from kinnekt.models.subscriber_import import ImportStatus
from kinnekt.segments import lifecycle
from kinnekt.subscribers import history, importing, listing
from kinnekt.tenancy import get_or_404
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint
from kinnekt.web.properties import card_context as properties_card
from kinnekt.web.templating import page_number, paginate

bp = merchant_blueprint("subscribers", __name__, url_prefix="/subscribers")

TABLE_ID = "subscribers-table"
"""The id of the table partial; the search box and filters target it."""


EVENT_LABELS = {"pending": "Signed up, waiting for confirmation", "subscribed": "Subscribed",
                "confirmed": "Confirmed", "consent": "Gave consent again", "unsubscribed": "Unsubscribed",
                "resubscribed": "Subscribed again", "suppressed": "Suppressed", "unsuppressed": "Suppression lifted",
                "reoptin_asked": "Signed up on the web while opted out: asked to reply Y"}
EVENT_SOURCE_LABELS = {**SOURCE_LABELS, "sms": "Text message", "merchant": "You", "carrier": "Carrier"}

REJECTED_ROWS_SHOWN = 200
"""Rejected rows listed in an import report; a file can have 100,000 bad rows and the page must stay readable."""


# ---------------------------------------------------------------------------------------------- the list

@bp.get("/")
def index():
    """The subscribers page, or only its table when the search box or a filter asks for it.

    Unknown filter values and bad page numbers fall back to "all" and page 1 (the form then shows what
    was applied); a page past the end shows the last page.
    """
    filters = listing.Filters.from_args(request.args)
    statement = listing.statement(g.shop.id, filters)
    params = filters.params()
    results = paginate(statement, page_number(request.args.get("page")), defaults.PAGE_SIZE, params)
    context = {
        "results": results, "q": filters.query, "status": filters.status, "source": filters.source,
        "keyword": filters.keyword, "country": filters.country, "filtered": bool(params),
        "status_labels": STATUS_LABELS, "table_id": TABLE_ID,
        "suppressed": listing.suppressed_among(Session, statement),
    }
    if hx.is_htmx() and request.headers.get("HX-Target") == TABLE_ID:
        return hx.render("subscribers/index.html", "subscribers/_table.html", **context)
    context.update(
        status_options=[("", "All statuses")] + [(s, STATUS_LABELS[s]) for s in STATUSES],
        source_options=[("", "All sources")] + [(s, SOURCE_LABELS[s]) for s in SOURCES],
        keyword_options=[("", "All keywords")] + [
            (w, w) for w in listing.keywords(Session, g.shop.id, filters.keyword)],
        country_options=[("", "All countries")] + [
            (c, f"{country_name(c)} ({c})") for c in listing.countries(Session, g.shop.id, filters.country)],
    )
    return hx.render("subscribers/index.html", "subscribers/_index.html", **context)


@lru_cache(maxsize=512)
def country_name(code: str) -> str:
    """The English name of an ISO country code (the code itself when phonenumbers does not know it)."""
    example = phonenumbers.example_number(code)
    return (geocoder.country_name_for_number(example, "en") if example is not None else "") or code


# ---------------------------------------------------------------------------------------------- detail

@bp.get("/<int:subscriber_id>")
def detail(subscriber_id: int):
    """One subscriber: number, consent record and history, messages, clicks, orders, segments, actions."""
    subscriber = get_or_404(Subscriber, subscriber_id)
    return hx.render("subscribers/detail.html", "subscribers/_detail.html", **_detail_context(subscriber))


@bp.post("/<int:subscriber_id>/unsubscribe")
def unsubscribe(subscriber_id: int):
    """Unsubscribe on the merchant's word with a reason; the detail again, with the new status or the error."""
    subscriber = get_or_404(Subscriber, subscriber_id)
    reason = request.form.get("reason", "")
    try:
        importing.unsubscribe_by_merchant(Session, subscriber, reason=reason)
    except importing.InvalidInput as exc:
        return _detail_partial(subscriber, unsubscribe_errors=exc.errors, reason=reason)
    return _detail_partial(subscriber, message=f"Unsubscribed {subscriber.phone}")


@bp.post("/<int:subscriber_id>/resubscribe")
def resubscribe(subscriber_id: int):
    """Subscribe again on the merchant's word (a STOP needs the person's new request); the detail again."""
    subscriber = get_or_404(Subscriber, subscriber_id)
    reason = request.form.get("reason", "")
    try:
        importing.resubscribe_by_merchant(Session, subscriber, reason=reason,
                                          asked_again=request.form.get("asked_again") == "on")
    except importing.InvalidInput as exc:
        return _detail_partial(subscriber, resubscribe_errors=exc.errors, reason=reason)
    return _detail_partial(subscriber, message=f"Subscribed {subscriber.phone} again")


def _detail_partial(subscriber: Subscriber, message: str | None = None, **extra):
    Session.refresh(subscriber)
    response = make_response(render_template("subscribers/_detail.html", **_detail_context(subscriber, **extra)))
    return hx.toast(response, message) if message else response


def _detail_context(subscriber: Subscriber, **extra) -> dict:
    """Everything the detail page shows; each long list is capped at the latest SUBSCRIBER_DETAIL_ROWS."""
    limit = defaults.SUBSCRIBER_DETAIL_ROWS
    by_person = importing.opted_out_by_person(Session, subscriber)
    context = {
        "subscriber": subscriber, "customer": subscriber.customer,
        "standing": lifecycle.standing(subscriber.customer) if subscriber.customer is not None else None,
        "national": national_format(subscriber.phone),
        "country_label": f"{country_name(subscriber.country)} ({subscriber.country})" if subscriber.country else None,
        "status_labels": STATUS_LABELS, "event_labels": EVENT_LABELS, "event_sources": EVENT_SOURCE_LABELS,
        **history.latest(Session, subscriber, limit), "limit": limit,
        "opted_out_by_person": by_person,
        "reason": "", "unsubscribe_errors": {}, "resubscribe_errors": {},
    }
    context.update(properties_card(subscriber))
    context.update(extra)
    return context


def national_format(e164: str) -> str:
    """The number as people of its country write it: +12125550101 -> (212) 555-0101."""
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)


# ---------------------------------------------------------------------------------------------- manual add

@bp.get("/new")
def new():
    """The form to add one subscriber by hand."""
    return hx.render("subscribers/new.html", "subscribers/_new.html", **_new_context())


@bp.post("/new")
def create():
    """Add the subscriber and open its detail, or the form again with what is wrong (nothing saved)."""
    phone, first_name = request.form.get("phone", ""), request.form.get("first_name", "")
    try:
        subscriber = importing.add_subscriber(Session, g.shop, phone=phone, first_name=first_name,
                                              attested=request.form.get("consent") == "on")
    except importing.InvalidInput as exc:
        Session.rollback()
        return render_template("subscribers/_new.html", **_new_context(phone, first_name, errors=exc.errors))
    except importing.AlreadyKnown as exc:
        Session.rollback()
        return render_template("subscribers/_new.html", **_new_context(
            phone, first_name, errors={"phone": str(exc)}, existing=exc.subscriber))
    return hx.toast(hx.redirect_to(url_for("subscribers.detail", subscriber_id=subscriber.id)),
                    f"Added {subscriber.phone}")


def _new_context(phone: str = "", first_name: str = "", **extra) -> dict:
    return {"phone": phone, "first_name": first_name, "errors": {}, "existing": None,
            "attestation": importing.attestation(g.shop), **extra}


# ---------------------------------------------------------------------------------------------- CSV import

@bp.get("/import")
def import_form():
    """The CSV import form."""
    return hx.render("subscribers/import.html", "subscribers/_import.html", **_import_context())


@bp.post("/import")
def import_upload():
    """Keep the uploaded CSV as a draft and show its mapping step (each column, what it becomes, a preview), or the
    form again with what is wrong (nothing saved). The step has its own URL, so a reload shows it again."""
    upload_file = request.files.get("file")
    attested = request.form.get("consent") == "on"
    errors = {}
    if upload_file is None or not upload_file.filename:
        errors["file"] = "Choose a CSV file to upload."
    if not attested:
        errors["consent"] = "Confirm that everyone in the file agreed to receive your marketing texts."
    if errors:
        return render_template("subscribers/_import.html", **_import_context(errors=errors))
    # One byte past the limit is enough for the import to say the file is too large.
    file_bytes = upload_file.stream.read(defaults.STATIC_LIST_MAX_BYTES + 1)
    upload_file.close()
    try:
        draft = importing.upload_draft(Session, g.shop, file_bytes=file_bytes, filename=upload_file.filename,
                                       attested=attested)
    except importing.InvalidInput as exc:
        Session.rollback()
        return render_template("subscribers/_import.html", **_import_context(errors=exc.errors))
    except importing.ImportRefused as exc:
        Session.rollback()
        return render_template("subscribers/_import.html", **_import_context(errors={"file": str(exc)}))
    url = url_for("subscribers.import_page", import_id=draft.id)
    if not hx.is_htmx():
        return redirect(url, 303)
    response = make_response(render_template("subscribers/_import.html", **_import_context(upload=draft)))
    response.headers["HX-Push-Url"] = url
    return response


@bp.get("/imports/<int:import_id>")
def import_page(import_id: int):
    """The import page of one upload: its mapping step while a draft, then its job's progress (or its report)."""
    upload = get_or_404(SubscriberImport, import_id)
    return hx.render("subscribers/import.html", "subscribers/_import.html", **_import_context(upload=upload))


def _chosen_mapping() -> tuple[list[str], dict[int, str]]:
    """The mapping form's choices: a target per column (`column-<i>`), a name per new property (`name-<i>`)."""
    width = defaults.SUBSCRIBER_IMPORT_MAX_COLUMNS
    chosen = [request.form.get(f"column-{i}", importing.import_mapping.IGNORE) for i in range(width)]
    names = {i: request.form.get(f"name-{i}", "") for i in range(width)}
    return chosen, names


def _draft_or_404(import_id: int) -> SubscriberImport:
    upload = get_or_404(SubscriberImport, import_id)
    if upload.status != ImportStatus.DRAFT:
        abort(404)
    return upload


@bp.post("/imports/<int:import_id>/mapping")
def import_mapping(import_id: int):
    """The mapping step again for the merchant's current choices (a select changed): the preview follows."""
    upload = _draft_or_404(import_id)
    chosen, names = _chosen_mapping()
    step = importing.mapping_step(Session, g.shop, upload, chosen, names)
    return render_template("subscribers/_import_mapping.html", step=step)


@bp.post("/imports/<int:import_id>/confirm")
def import_confirm(import_id: int):
    """Import the draft with the chosen mapping and show its report (a large file: its job's progress), or the
    mapping step again with what is wrong (nothing saved)."""
    upload = get_or_404(SubscriberImport, import_id)
    chosen, names = _chosen_mapping()
    try:
        outcome = importing.confirm(Session, g.shop, upload.id, chosen, names)
    except importing.import_mapping.MappingInvalid as exc:
        Session.rollback()
        step = importing.mapping_step(Session, g.shop, upload, chosen, names, errors=exc.errors)
        return render_template("subscribers/_import.html", **_import_context(upload=upload, step=step))
    except (importing.AlreadyConfirmed, LookupError):
        Session.rollback()
        upload = Session.get(SubscriberImport, import_id)
        if upload is None:  # imported at once by the other confirmation: nothing left to show but the form
            response = make_response(render_template("subscribers/_import.html", **_import_context(
                errors={"file": "This file was imported already. See your subscribers, or upload another file."})))
            response.headers["HX-Push-Url"] = url_for("subscribers.import_form")
            return response
        return render_template("subscribers/_import.html", **_import_context(upload=upload))
    if isinstance(outcome, SubscriberImport):
        url = url_for("subscribers.import_page", import_id=outcome.id)
        if not hx.is_htmx():
            return redirect(url, 303)
        response = make_response(render_template("subscribers/_import.html", **_import_context(upload=outcome)))
        response.headers["HX-Push-Url"] = url
        return hx.toast(response, f"Importing {outcome.total_rows:,} rows. This page shows the progress.")
    response = make_response(hx.render("subscribers/import.html", "subscribers/_import.html",
                                       **_import_context(report=outcome)))
    response.headers["HX-Push-Url"] = url_for("subscribers.import_form")  # the draft is gone with its import
    return hx.toast(response, _imported(outcome.imported))


@bp.get("/imports/<int:import_id>/progress")
def import_progress(import_id: int):
    """An import job's progress, polled every second while it runs; once it is over its report, with 286 (which
    stops the polling) and a toast."""
    upload = get_or_404(SubscriberImport, import_id)
    if upload.status == ImportStatus.DRAFT:
        abort(404)  # a draft has no progress: its page shows the mapping step
    body = render_template("subscribers/_import_progress.html", **_import_context(upload=upload))
    if upload.running:
        return body
    response = hx.stop_polling(body)
    if upload.status == ImportStatus.FAILED:
        return hx.toast(response, "The import stopped before the end of the file.", error=True)
    return hx.toast(response, _imported(upload.imported))


def _imported(count: int) -> str:
    return f"Imported {count:,} {'subscriber' if count == 1 else 'subscribers'}"


def _import_context(**extra) -> dict:
    upload = extra.get("upload")
    if upload is not None and upload.status == ImportStatus.DONE:
        extra.setdefault("report", importing.report_of(upload))
    if upload is not None and upload.status == ImportStatus.DRAFT:
        extra.setdefault("step", importing.mapping_step(Session, g.shop, upload))
    return {"errors": {}, "report": None, "upload": None, "step": None, "rows_shown": REJECTED_ROWS_SHOWN,
            "max_columns": defaults.SUBSCRIBER_IMPORT_MAX_COLUMNS,
            "attestation": importing.import_attestation(g.shop), "max_bytes": defaults.STATIC_LIST_MAX_BYTES,
            "max_rows": defaults.STATIC_LIST_MAX_ROWS, **extra}
