"""Campaigns pages: the list with totals, the composer (live counter, audience breakdown, test send), the
detail page with its self-updating progress bar (and a recurring campaign's runs), quick view, and the delete /
end confirmations."""
from __future__ import annotations

from decimal import Decimal

from flask import Response, abort, g, make_response, render_template, request, url_for
from sqlalchemy import select

from kinnekt import defaults
from kinnekt.billing import allowance
from kinnekt.campaigns import audience, composer, lifecycle, recurrence, stats, waiting
from kinnekt.db import Session, utcnow
from kinnekt.models import Campaign, Segment
from kinnekt.models.campaign import TRIGGERED_KINDS, CampaignStatus
from kinnekt.numbers import MAX_ID, record_id, whole_number
from kinnekt.sms import registration
from kinnekt.subscribers.phones import InvalidPhone, normalise
from kinnekt.tenancy import get_or_404
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint
from kinnekt.web.templating import local_time, money, shop_zone

bp = merchant_blueprint("campaigns", __name__, url_prefix="/campaigns")

EDITABLE = (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED)
"""Statuses whose campaign can still be edited, switched on and off, and deleted without ending it."""

LIVE = CampaignStatus.ACTIVE
"""Statuses whose detail page keeps polling its progress (a scheduled campaign starts by itself)."""

PROGRESS_POLL = "2s"
"""How often the campaign page asks for fresh progress, figures and chart (one request) while it is sending."""

SCHEDULED_POLL = "5s"
"""How often the page of a scheduled campaign looks whether it started (it may be left open for days)."""


# ---------------------------------------------------------------------------------------------- the list

def _list_context() -> dict:
    rows, totals = stats.campaign_rows(Session, g.shop)
    return {"campaigns": rows, "totals": totals, "editable": EDITABLE,
            "schedules": _schedules(r.campaign for r in rows),
            "waits": waiting.by_campaign(Session, (r.campaign for r in rows)), "zone_name": shop_zone().key}


def _schedules(campaigns) -> dict[int, str]:
    """Each recurring campaign's rule in words, by id."""
    zone = shop_zone()
    return {c.id: recurrence.describe(c, zone) for c in campaigns if recurrence.is_recurring(c)}


def _load(campaign_id: int) -> Campaign:
    """The shop's campaign (or a run of one); a flow's message (an automation's before it became one) is edited in
    the flow's editor."""
    campaign = get_or_404(Campaign, campaign_id)
    if campaign.kind in TRIGGERED_KINDS:
        abort(404)
    return campaign


def _list(message: str | None = None, error: bool = False) -> Response:
    response = make_response(render_template("campaigns/_index.html", **_list_context()))
    return hx.toast(response, message, error) if message else response


@bp.get("/")
def index():
    """The campaigns page: totals on top, then every campaign, newest first, with its status and results."""
    return hx.render("campaigns/index.html", "campaigns/_index.html", **_list_context())


@bp.post("/<int:campaign_id>/enabled")
def set_enabled(campaign_id: int):
    """The on/off switcher of a draft or scheduled campaign (a switched-off campaign does not send)."""
    campaign = _load(campaign_id)
    enabled = request.form.get("enabled") in ("1", "on", "true")
    try:
        lifecycle.set_enabled(Session, campaign, enabled)
    except lifecycle.CampaignError as exc:
        Session.rollback()
        return _list(str(exc), error=True)
    return _list(f"“{campaign.name}” is {'on' if enabled else 'off'}")


@bp.get("/<int:campaign_id>/quick-view")
def quick_view(campaign_id: int):
    """A dialog with the campaign's details and settings."""
    campaign = _load(campaign_id)
    return render_template("campaigns/_quick_view.html", **_summary_context(campaign))


@bp.get("/<int:campaign_id>/delete")
def confirm_delete(campaign_id: int):
    """The delete confirmation dialog (deletes nothing)."""
    campaign = _load(campaign_id)
    return render_template("campaigns/_delete_confirm.html", campaign=campaign)


@bp.delete("/<int:campaign_id>")
def delete(campaign_id: int):
    """Delete a campaign once the merchant confirmed; one in progress must be ended first."""
    campaign = _load(campaign_id)
    name = campaign.name
    try:
        lifecycle.delete(Session, campaign)
    except lifecycle.CampaignError as exc:
        Session.rollback()
        return _list(str(exc), error=True)
    return _list(f"Deleted “{name}”")


@bp.get("/<int:campaign_id>/end")
def confirm_end(campaign_id: int):
    """The End Campaign confirmation dialog (ends nothing)."""
    campaign = _load(campaign_id)
    target = "detail" if request.args.get("from") == "detail" else "list"
    return render_template("campaigns/_end_confirm.html", campaign=campaign, target=target)


@bp.post("/<int:campaign_id>/end")
def end(campaign_id: int):
    """End a campaign in progress: the recipients not yet sent to get nothing. Shows the list or the detail."""
    campaign = _load(campaign_id)
    message, error = f"Ended “{campaign.name}”", False
    try:
        lifecycle.end(Session, campaign)
    except lifecycle.CampaignError as exc:
        Session.rollback()
        message, error = str(exc), True
    if request.form.get("from") == "detail":
        Session.refresh(campaign)
        response = make_response(render_template("campaigns/_detail.html", **_summary_context(campaign)))
        return hx.toast(response, message, error)
    return _list(message, error)


# ---------------------------------------------------------------------------------------------- the composer

def _segments() -> list[Segment]:
    return list(Session.scalars(select(Segment).where(Segment.shop_id == g.shop.id)
                                .order_by(Segment.kind, Segment.name, Segment.id)))


def _form_of(campaign: Campaign | None) -> dict:
    """The composer's fields for a saved campaign (or a new one: a segment may be preselected by `?segment=`)."""
    if campaign is None:
        include = [request.args["segment"]] if record_id(request.args.get("segment")) else []
        return {"name": "", "body": "", "include": include, "exclude": [], "send": "later", "send_date": "",
                "send_time": "", "recipient_local_time": "", "discount_mode": "none", "discount_code": "",
                "discount_kind": "percent", "discount_value": "", "test_phone": "", "repeat": "none",
                "repeat_until": "", "cap_choice": ""}
    local = campaign.send_at.astimezone(shop_zone()) if campaign.send_at else None
    return {
        "name": campaign.name, "body": campaign.body,
        "include": [str(cs.segment_id) for cs in campaign.audience if cs.mode == "include"],
        "exclude": [str(cs.segment_id) for cs in campaign.audience if cs.mode == "exclude"],
        "send": "now" if campaign.send_now else "later",
        "send_date": f"{local:%Y-%m-%d}" if local else "", "send_time": f"{local:%H:%M}" if local else "",
        "recipient_local_time": "1" if campaign.recipient_local_time else "",
        "discount_mode": campaign.discount_mode or "none", "discount_code": campaign.discount_code or "",
        "discount_kind": campaign.discount_kind or "percent",
        "discount_value": "" if campaign.discount_value is None else f"{campaign.discount_value.normalize():f}",
        "test_phone": "", "repeat": campaign.repeat or "none",
        "repeat_until": campaign.repeat_until.isoformat() if campaign.repeat_until else "",
        "cap_choice": campaign.cap_choice or "",
    }


def _posted() -> dict:
    """The composer's fields as posted (lists for the segment choices)."""
    form = request.form
    out = {key: form.get(key, "") for key in ("name", "body", "send", "send_date", "send_time",
                                               "recipient_local_time", "discount_mode", "discount_code",
                                               "discount_kind", "discount_value", "test_phone", "repeat",
                                               "repeat_until", "cap_choice")}
    out["include"] = form.getlist("include")
    out["exclude"] = form.getlist("exclude")
    out["send"] = out["send"] or "later"
    out["discount_mode"] = out["discount_mode"] or "none"
    out["discount_kind"] = out["discount_kind"] or "percent"
    out["repeat"] = out["repeat"] or "none"
    return out


def _chosen_ids(values: list[str]) -> list[int]:
    return [number for number in map(record_id, values) if number is not None]


def _sendable() -> int | None:
    return whole_number(request.form.get("sendable", ""), MAX_ID)


def _sendable_by_country() -> dict[str | None, int]:
    """The breakdown's hidden "US:1200 CA:40 ?:3" (? an unknown country); what does not parse is left out."""
    out: dict[str | None, int] = {}
    for part in request.form.get("sendable_countries", "")[:2000].split():
        code, _, count = part.partition(":")
        number = whole_number(count, MAX_ID)
        if number is not None and (code == "?" or (len(code) == 2 and code.isascii() and code.isalpha())):
            key = None if code == "?" else code.upper()
            out[key] = out.get(key, 0) + number
    return out


def _live_context(form: dict, *, breakdown=None, breakdown_error: str | None = None,
                  sendable: int | None = None) -> dict:
    """What the live parts of the composer show for `form`: analysis, preview, cost, name suggestion."""
    analysed = composer.analysis(form["body"], g.shop, discount_mode=form["discount_mode"],
                                 discount_code=form["discount_code"].strip() or None)
    by_country = _sendable_by_country()
    if breakdown is not None:
        sendable, by_country = breakdown.sendable, breakdown.sendable_by_country
    segments = {s.id: s for s in _segments()}
    chosen = [segments[i].name for i in _chosen_ids(form["include"]) if i in segments]
    preview = composer.sample_text(form["body"], g.shop, discount_mode=form["discount_mode"],
                                   discount_code=form["discount_code"].strip() or None, shorten=False,
                                   first_message=True)
    total_cost = composer.estimated_cost(analysed, sendable, by_country) if sendable is not None else None
    us_count = (by_country or {}).get("US", 0)
    return {
        "us_count": us_count, "us_hold": registration.us_block_reason(Session, g.shop.id) if us_count else None,
        "form": form, "analysis": analysed, "preview_text": preview,
        "budget": allowance.budget(Session, g.shop, total_cost if total_cost is not None else Decimal(0)),
        "footer": (g.shop.compliance_footer or "").strip(), "sample_name": defaults.CAMPAIGN_SAMPLE_FIRST_NAME,
        "sendable": sendable,
        "total_cost": total_cost,
        "suggestion": composer.suggested_name(composer.subject_of(form["body"]), chosen),
        "breakdown": breakdown, "breakdown_error": breakdown_error,
    }


def _breakdown_for(form: dict) -> tuple[audience.Breakdown | None, str | None]:
    """The audience funnel for the chosen segments, or why it cannot be counted."""
    include = _chosen_ids(form["include"])
    if not include:
        return None, None
    try:
        return audience.breakdown(Session, g.shop, include, _chosen_ids(form["exclude"]), now=utcnow()), None
    except audience.AudienceError as exc:
        Session.rollback()
        return None, str(exc)


def _composer_context(campaign: Campaign | None, form: dict, *, errors: dict | None = None,
                      form_error: str | None = None) -> dict:
    breakdown, breakdown_error = _breakdown_for(form)
    return {
        "campaign": campaign, "errors": errors or {}, "form_error": form_error,
        "segments": _segments(), "merge_tags": composer.MERGE_TAGS,
        "discount_modes": composer.DISCOUNT_MODES, "discount_kinds": composer.DISCOUNT_KINDS,
        "zone_name": shop_zone().key, "warnings": [], "repeats": list(recurrence.REPEATS.items()),
        **_live_context(form, breakdown=breakdown, breakdown_error=breakdown_error),
    }


def _editable_or_404(campaign_id: int) -> Campaign:
    campaign = _load(campaign_id)
    if campaign.status not in EDITABLE:
        abort(404, description=f"“{campaign.name}” is {campaign.status_label.lower()}: it can no longer be edited.")
    return campaign


@bp.get("/new")
def new():
    """The composer for a new campaign."""
    return hx.render("campaigns/composer.html", "campaigns/_composer_page.html",
                     **_composer_context(None, _form_of(None)))


@bp.get("/<int:campaign_id>/edit")
def edit(campaign_id: int):
    """The composer for a draft or scheduled campaign."""
    campaign = _editable_or_404(campaign_id)
    return hx.render("campaigns/composer.html", "campaigns/_composer_page.html",
                     **_composer_context(campaign, _form_of(campaign)))


def _save(campaign: Campaign | None) -> Response:
    """Validate the posted composer; save a draft (and schedule it when asked), or show the form with errors."""
    form = _posted()
    schedule = request.form.get("action") == "schedule"
    values, errors = composer.validate(request.form, session=Session, shop=g.shop, now=utcnow(), draft=not schedule)
    if errors:
        Session.rollback()
        context = _composer_context(campaign, form, errors=errors,
                                    form_error="Fix the highlighted fields." if len(errors) > 1 else None)
        return make_response(render_template("campaigns/_composer.html", **context))
    try:
        saved = lifecycle.save(Session, g.shop, values, campaign)
    except lifecycle.CampaignError as exc:
        Session.rollback()
        context = _composer_context(campaign, form, form_error=str(exc))
        return make_response(render_template("campaigns/_composer.html", **context))
    notes = composer.warnings(values)
    if schedule:
        try:
            _check_budget(form)
            lifecycle.schedule(Session, saved, now=utcnow())
        except lifecycle.CampaignError as exc:
            Session.rollback()
            saved = get_or_404(Campaign, saved.id)
            context = _composer_context(saved, _form_of(saved),
                                        form_error=f"Saved as a draft, not scheduled: {exc}")
            return make_response(render_template("campaigns/_composer.html", **context))
        Session.refresh(saved)
        if saved.status == CampaignStatus.IN_PROGRESS:
            message = f"“{saved.name}” is sending"
        elif recurrence.is_recurring(saved):
            message = f"Scheduled “{saved.name}”: {recurrence.describe(saved, shop_zone())}, first run {_local(saved)}"
        else:
            message = f"Scheduled “{saved.name}” for {_local(saved)}"
        response = hx.redirect_to(url_for("campaigns.detail", campaign_id=saved.id))
    else:
        message = f"Saved “{saved.name}” as a draft"
        response = hx.redirect_to(url_for("campaigns.index"))
    if notes:
        message = f"{message}. {notes[0]}"
    return hx.toast(response, message)


def _check_budget(form: dict) -> None:
    """Before a campaign is scheduled: its plan must let it send, and its estimated cost fit under what is left of
    the cap, unless the merchant chose to send only as far as the cap allows (else CampaignError says what to do)."""
    breakdown, _ = _breakdown_for(form)
    if breakdown is None:
        return
    analysed = composer.analysis(form["body"], g.shop, discount_mode=form["discount_mode"],
                                 discount_code=form["discount_code"].strip() or None)
    budget = allowance.budget(Session, g.shop, composer.estimated_cost(analysed, breakdown.sendable,
                                                                       breakdown.sendable_by_country))
    if budget.stop:
        raise lifecycle.CampaignError(budget.stop)
    if budget.over and form.get("cap_choice") != allowance.UP_TO_CAP:
        raise lifecycle.CampaignError(
            f"it would cost about {money(budget.cost, 'USD')} and {money(budget.left, 'USD')} is left under your "
            "plan's cap. Raise the cap in Settings, or choose to send only as far as the cap allows.")


def _local(campaign: Campaign) -> str:
    return local_time(campaign.send_at) if campaign.send_at else "now"


@bp.post("/")
def create():
    """Create a campaign from the composer (Save draft, or Schedule campaign)."""
    return _save(None)


@bp.post("/<int:campaign_id>")
def update(campaign_id: int):
    """Save changes to a draft or scheduled campaign (and schedule it when asked)."""
    return _save(_editable_or_404(campaign_id))


@bp.post("/compose/message")
def message_analysis():
    """The live counter for the posted message, with the phone preview, cost and name suggestion (out of band)."""
    form = _posted()
    return render_template("campaigns/_analysis.html", oob=True, **_live_context(form, sendable=_sendable()))


@bp.post("/compose/audience")
def audience_breakdown():
    """The live audience breakdown for the posted segment choices, with cost and name suggestion (out of band)."""
    form = _posted()
    errors = {}
    include, exclude = _chosen_ids(form["include"]), _chosen_ids(form["exclude"])
    known = {s.id for s in _segments()}
    if any(i not in known for i in include + exclude):
        abort(404, description="One of the chosen segments no longer exists. Reload the page.")
    if set(include) & set(exclude):
        errors["exclude"] = "A segment cannot be both included and excluded."
        breakdown, problem = None, None
    else:
        breakdown, problem = _breakdown_for(form)
    return render_template("campaigns/_breakdown.html", oob=True, errors=errors,
                           **_live_context(form, breakdown=breakdown, breakdown_error=problem))


@bp.post("/compose/discount")
def discount_fields():
    """The discount fields for the chosen kind of discount."""
    form = _posted()
    return render_template("campaigns/_discount.html", form=form, errors={},
                           discount_modes=composer.DISCOUNT_MODES, discount_kinds=composer.DISCOUNT_KINDS)


@bp.post("/compose/test")
def send_test():
    """Send the message as composed to one phone number (a test: never in the campaign's statistics)."""
    form = _posted()
    error = None
    try:
        phone = normalise(form["test_phone"]).e164
    except InvalidPhone as exc:
        phone, error = None, str(exc)
    if error is None:
        values, errors = composer.validate(request.form, session=Session, shop=g.shop, now=utcnow(), draft=True)
        problem = errors.get("body") or next((e for k, e in errors.items() if k.startswith("discount")), None)
        if problem:
            error = f"Fix the message first: {problem}"
        else:
            try:
                composer.send_test(Session, g.shop, values, phone)
            except (lifecycle.CampaignError, ValueError) as exc:
                Session.rollback()
                error = str(exc)
    Session.rollback()
    response = make_response(render_template("campaigns/_test_send.html", form=form, error=error))
    if error is None:
        return hx.toast(response, f"Test message sent to {phone}")
    return response


# ---------------------------------------------------------------------------------------------- the detail page

def _progress_of(campaign: Campaign):
    if campaign.status in (CampaignStatus.DRAFT,):
        return None
    return stats.progress(Session, campaign)


def _stats_of(campaign: Campaign) -> dict:
    """The statistics for the detail page (none before the campaign started; a recurring campaign's are its runs')."""
    if campaign.status in EDITABLE or recurrence.is_recurring(campaign):
        return {"has_stats": False}
    return {"has_stats": True, "stats": stats.for_campaign(Session, campaign),
            "timeline": stats.timeline(Session, campaign)}


def _poll(campaign: Campaign) -> str:
    return SCHEDULED_POLL if campaign.status == CampaignStatus.SCHEDULED else PROGRESS_POLL


def _live_parts(campaign: Campaign) -> dict:
    """What campaigns/_live.html shows: progress (and why the rest waits), results and chart, runs."""
    recurring = recurrence.is_recurring(campaign)
    runs, run_totals = (stats.campaign_rows(Session, g.shop, kind="run", parent_id=campaign.id) if recurring
                        else ([], {}))
    return {"campaign": campaign, "recurring": recurring, "runs": runs, "run_totals": run_totals,
            "progress": _progress_of(campaign), "waits": waiting.waits(Session, campaign),
            "billing_stop": (allowance.stop_reason(Session, g.shop)
                             if campaign.status == CampaignStatus.IN_PROGRESS else None),
            "zone_name": shop_zone().key, "live": LIVE, "poll": _poll(campaign), "chart_assets_loaded": True,
            **_stats_of(campaign)}


def _summary_context(campaign: Campaign) -> dict:
    segments = {s.id: s for s in _segments()}
    chosen = [cs for cs in campaign.audience if cs.segment_id in segments]
    include = [segments[cs.segment_id] for cs in chosen if cs.mode == "include"]
    exclude = [segments[cs.segment_id] for cs in chosen if cs.mode == "exclude"]
    analysed = composer.analysis(campaign.body, g.shop, discount_mode=campaign.discount_mode,
                                 discount_code=campaign.discount_code)
    parent = get_or_404(Campaign, campaign.parent_id) if campaign.parent_id else None
    return {"include": include, "exclude": exclude, "analysis": analysed,
            "schedule_text": recurrence.describe(campaign, shop_zone()), "parent": parent, "editable": EDITABLE,
            "discount_kinds": composer.DISCOUNT_KINDS, "discount_modes": composer.DISCOUNT_MODES,
            **_live_parts(campaign)}


@bp.get("/<int:campaign_id>")
def detail(campaign_id: int):
    """A campaign: its settings, the progress of its send, and its statistics."""
    campaign = _load(campaign_id)
    return hx.render("campaigns/detail.html", "campaigns/_detail.html", **_summary_context(campaign))


@bp.get("/<int:campaign_id>/progress")
def progress(campaign_id: int):
    """The live parts of the page in one answer (progress, results and chart, runs), polled every 2 s while
    sending and 5 s while scheduled; 286 stops the polling once done, and the page then reloads its detail
    (its buttons change). The page also reloads when the status changed from the one it shows (`shown`)."""
    campaign = _load(campaign_id)
    body = render_template("campaigns/_live.html", **_live_parts(campaign))
    if campaign.status in LIVE and campaign.enabled:
        response = make_response(body)
        shown = request.args.get("shown")
        if shown and shown != campaign.status:
            hx.trigger(response, "campaign-changed", {"id": campaign.id, "status": campaign.status})
        return response
    response = hx.stop_polling(body)
    return hx.trigger(response, "campaign-finished", {"id": campaign.id})
