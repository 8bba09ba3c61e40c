"""Static lists pages: the shop's uploaded phone lists, the CSV upload with its report, and deleting a list."""
from __future__ import annotations

from flask import Response, g, make_response, render_template, request
from sqlalchemy import select

from kinnekt import defaults
from kinnekt.db import Session
from kinnekt.models import StaticList
from kinnekt.segments.lists import (MAX_NAME_LENGTH, ImportReport, ListImportError, ListNameTaken, import_list_csv,
                                    segments_using)
from kinnekt.tenancy import get_or_404
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("lists", __name__, url_prefix="/segments/lists")

REJECTED_ROWS_SHOWN = 200
"""Rejected rows listed in the report; a file can have 100,000 bad rows and the page must stay readable."""


def _context(**extra) -> dict:
    lists = Session.scalars(select(StaticList).where(StaticList.shop_id == g.shop.id)
                            .order_by(StaticList.created_at.desc(), StaticList.id.desc())).all()
    context = {"lists": lists, "usages": segments_using(Session, g.shop.id, lists), "name": "", "errors": {},
               "report": None, "notice": None, "rows_shown": REJECTED_ROWS_SHOWN}
    context.update(extra)
    return context


def _partial(message: str | None = None, error: bool = False, **extra) -> Response:
    response = make_response(render_template("lists/_index.html", **_context(**extra)))
    return hx.toast(response, message, error) if message else response


@bp.get("/")
def index():
    """The static lists page: the upload form and the shop's lists, newest first."""
    return hx.render("lists/index.html", "lists/_index.html", **_context())


@bp.post("/")
def upload():
    """Save a list from the uploaded CSV and show its report, or the form again with what is wrong."""
    name = request.form.get("name", "")
    upload_file = request.files.get("file")
    errors = {}
    cleaned = " ".join(name.split())
    if not cleaned:
        errors["name"] = "Enter a name for the list."
    elif len(cleaned) > MAX_NAME_LENGTH:
        errors["name"] = f"The name can be at most {MAX_NAME_LENGTH} characters."
    if upload_file is None or not upload_file.filename:
        errors["file"] = "Choose a CSV file to upload."
    if errors:
        return _partial(name=name, errors=errors)
    # One byte past the limit is enough for the import to say the file is too large.
    file_bytes = upload_file.stream.read(defaults.STATIC_LIST_MAX_BYTES + 1)
    try:
        report: ImportReport = import_list_csv(Session, g.shop, name=name, file_bytes=file_bytes)
    except ListNameTaken as exc:
        Session.rollback()
        return _partial(name=name, errors={"name": str(exc)})
    except ListImportError as exc:
        Session.rollback()
        return _partial(name=name, errors={"file": str(exc)})
    numbers = "1 number" if report.accepted == 1 else f"{report.accepted:,} numbers"
    return _partial(f"Saved “{report.list.name}” with {numbers}", report=report)


@bp.delete("/<int:list_id>")
def delete(list_id: int):
    """Delete a list once the merchant confirmed; refused while a segment's rules use it."""
    static_list = get_or_404(StaticList, list_id)
    name = static_list.name
    used_by = segments_using(Session, g.shop.id, [static_list])[static_list.id]
    if used_by:
        names = ", ".join(f"“{segment}”" for segment in used_by)
        message = (f"“{name}” was not deleted: it is used by the segment{'s' if len(used_by) > 1 else ''} {names}. "
                   "Remove it from their rules first.")
        return _partial(message, error=True, notice=message)
    Session.delete(static_list)  # its numbers go with it (ON DELETE CASCADE)
    Session.commit()
    return _partial(f"Deleted “{name}”")
