"""Keywords pages: the words customers text in to subscribe; list, add, edit, turn on/off, delete, and who joined."""
from __future__ import annotations

from flask import Response, g, make_response, render_template, request, url_for
from sqlalchemy import func, select

from kinnekt import defaults
from kinnekt.db import Session
from kinnekt.models import Keyword, Segment, SegmentMember, Subscriber
from kinnekt.models.subscriber import STATUS_LABELS
from kinnekt.segments import service as segment_service
from kinnekt.subscribers import keywords as domain
from kinnekt.tenancy import get_or_404
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint
from kinnekt.web.templating import page_number, paginate

bp = merchant_blueprint("keywords", __name__, url_prefix="/keywords")


def _segment_of(keyword: Keyword) -> Segment | None:
    """The keyword's auto segment ("Keyword: <WORD>"), unless the merchant deleted it."""
    return Session.scalar(select(Segment).where(Segment.shop_id == keyword.shop_id, Segment.auto_source == "keyword",
                                                Segment.keyword_id == keyword.id))


def _list_context() -> dict:
    """Each keyword with the number of subscribers who joined by it (any status now) and its auto segment."""
    joined = (
        select(Subscriber.keyword_id, func.count().label("joined"))
        .where(Subscriber.shop_id == g.shop.id, Subscriber.keyword_id.is_not(None))
        .group_by(Subscriber.keyword_id)
        .subquery()
    )
    rows = Session.execute(
        select(Keyword, func.coalesce(joined.c.joined, 0).label("joined"), Segment)
        .outerjoin(joined, joined.c.keyword_id == Keyword.id)
        .outerjoin(Segment, (Segment.keyword_id == Keyword.id) & (Segment.auto_source == "keyword")
                   & (Segment.shop_id == g.shop.id))
        .where(Keyword.shop_id == g.shop.id)
        .order_by(Keyword.word)
    ).all()
    return {"keywords": rows, "max_reply": domain.MAX_REPLY_LENGTH}


def _list(message: str | None = None, error: bool = False) -> Response:
    response = make_response(render_template("keywords/_index.html", **_list_context()))
    return hx.toast(response, message, error) if message else response


@bp.get("/")
def index():
    """The keywords page."""
    return hx.render("keywords/index.html", "keywords/_index.html", **_list_context())


# ---------------------------------------------------------------------------------------------- add and edit

def _form_context(keyword: Keyword | None, values: dict | None = None, errors: dict | None = None) -> dict:
    if values is None:
        values = {"word": keyword.word if keyword else "", "reply_text": keyword.reply_text if keyword else "",
                  "active": keyword.active if keyword else True}
    return {"keyword": keyword, "values": values, "errors": errors or {}, "max_reply": domain.MAX_REPLY_LENGTH}


def _posted() -> dict:
    active = request.form.getlist("active")
    return {"word": request.form.get("word", ""), "reply_text": request.form.get("reply_text", ""),
            "active": bool(active) and active[-1].strip().lower() in ("on", "true", "1", "yes")}


def _form_error(keyword: Keyword | None, values: dict, exc: domain.KeywordError) -> str:
    Session.rollback()
    return render_template("keywords/_form.html", **_form_context(keyword, values, {exc.field: str(exc)}))


@bp.get("/new")
def new():
    """The form for a new keyword."""
    return hx.render("keywords/new.html", "keywords/_form.html", **_form_context(None))


@bp.post("/")
def create():
    """Add a keyword (and its auto segment); the form comes back with the error beside its field when it is wrong."""
    values = _posted()
    try:
        keyword = domain.create_keyword(Session, g.shop, word=values["word"], reply_text=values["reply_text"],
                                        active=values["active"])
    except domain.KeywordError as exc:
        return _form_error(None, values, exc)
    return hx.toast(hx.redirect_to(url_for("keywords.index")), f"Added the keyword {keyword.word}")


def _members_context(keyword: Keyword) -> dict:
    """The keyword's segment and one page of its members."""
    segment = _segment_of(keyword)
    members = None
    if segment is not None:
        statement = (select(Subscriber).join(SegmentMember, SegmentMember.subscriber_id == Subscriber.id)
                     .where(SegmentMember.segment_id == segment.id, Subscriber.shop_id == g.shop.id)
                     .order_by(SegmentMember.entered_at.desc(), Subscriber.id.desc()))
        members = paginate(statement, page_number(request.args.get("page")), defaults.PAGE_SIZE,
                           {"keyword_id": keyword.id})
    return {"keyword": keyword, "segment": segment, "members": members, "status_labels": STATUS_LABELS}


@bp.get("/<int:keyword_id>")
def edit(keyword_id: int):
    """A keyword: its edit form and the members of its auto segment."""
    keyword = get_or_404(Keyword, keyword_id)
    context = {**_form_context(keyword), **_members_context(keyword)}
    if hx.is_htmx() and request.headers.get("HX-Target") == "keyword-segment":
        return render_template("keywords/_segment.html", **context)
    return hx.render("keywords/edit.html", "keywords/_edit.html", **context)


@bp.post("/<int:keyword_id>")
def update(keyword_id: int):
    """Save a keyword's reply text and on/off state (the word itself never changes)."""
    keyword = get_or_404(Keyword, keyword_id)
    values = {**_posted(), "word": keyword.word}
    try:
        domain.update_keyword(Session, keyword, reply_text=values["reply_text"], active=values["active"])
    except domain.KeywordError as exc:
        return _form_error(keyword, values, exc)
    return hx.toast(hx.redirect_to(url_for("keywords.index")), f"Saved the keyword {keyword.word}")


@bp.post("/<int:keyword_id>/active")
def set_active(keyword_id: int):
    """Turn a keyword on or off from the list."""
    keyword = get_or_404(Keyword, keyword_id)
    active = request.form.get("active", "").strip().lower() in ("on", "true", "1", "yes")
    domain.set_active(Session, keyword, active)
    state = "on" if active else "off: texting it no longer subscribes anyone"
    return _list(f"{keyword.word} is {state}")


# ---------------------------------------------------------------------------------------------- delete

@bp.get("/<int:keyword_id>/delete")
def confirm_delete(keyword_id: int):
    """The delete confirmation, naming the campaigns and segments that use the keyword's segment. Deletes nothing."""
    keyword = get_or_404(Keyword, keyword_id)
    segment = _segment_of(keyword)
    usages = segment_service.segment_usages(Session, segment) if segment is not None else []
    return render_template("keywords/_delete_confirm.html", keyword=keyword, segment=segment, usages=usages)


@bp.delete("/<int:keyword_id>")
def delete(keyword_id: int):
    """Delete a keyword and its segment. When something uses the segment and the merchant has not seen that
    yet (`confirmed` not set), nothing is deleted and the confirmation comes back listing the usages."""
    keyword = get_or_404(Keyword, keyword_id)
    word = keyword.word
    confirmed = request.values.get("confirmed", "") == "yes"
    usages = domain.delete_keyword(Session, keyword, confirmed=confirmed)
    if usages and not confirmed:
        response = make_response(render_template("keywords/_delete_confirm.html", keyword=keyword,
                                                 segment=_segment_of(keyword), usages=usages))
        response.headers["HX-Retarget"] = "#keyword-dialog"
        response.headers["HX-Reswap"] = "outerHTML"
        return hx.toast(response, f"{word} is in use now: check what uses it, then confirm.", error=True)
    return _list(f"Deleted the keyword {word}. Its subscribers stay subscribed.")
