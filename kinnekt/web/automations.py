"""Automations pages: the list with its on/off switches and results, the form (the campaign composer's message,
live counter, preview and discount pieces), the detail page with figures and recent runs, and delete."""
from __future__ import annotations

from flask import Response, g, make_response, render_template, request, url_for
from sqlalchemy import select

from kinnekt import defaults
from kinnekt.automations import service, stats as automation_stats
from kinnekt.campaigns import composer, stats
from kinnekt.db import Session, utcnow
from kinnekt.models import Segment
from kinnekt.models.automation import Automation
from kinnekt.numbers import record_id
from kinnekt.tenancy import get_or_404
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("automations", __name__, url_prefix="/automations")

TRIGGER_CHOICES = (("enter", "Enters the segment"), ("leave", "Leaves the segment"))
DELAY_UNIT_CHOICES = (("minutes", "minutes"), ("hours", "hours"), ("days", "days"))


def _segments() -> list[Segment]:
    return list(Session.scalars(select(Segment).where(Segment.shop_id == g.shop.id)
                                .order_by(Segment.kind, Segment.name, Segment.id)))


def _segment_names() -> dict[int, Segment]:
    return {s.id: s for s in _segments()}


# ---------------------------------------------------------------------------------------------- the list

def _list_context() -> dict:
    rows, totals = stats.campaign_rows(Session, g.shop, kind="automation")
    by_campaign = {row.campaign.id: row for row in rows}
    automations = Session.scalars(select(Automation).where(Automation.shop_id == g.shop.id)
                                  .order_by(Automation.builtin.is_(None), Automation.name, Automation.id)).all()
    segments = _segment_names()
    items = [{"automation": a, "row": by_campaign.get(a.campaign_id) or stats.CampaignRow(campaign=a.campaign),
              "trigger": service.trigger_label(a, segments.get(a.segment_id)),
              "delay": service.delay_label(a.delay_seconds)} for a in automations]
    return {"items": items, "totals": totals, "offers": service.offered_builtins(Session, g.shop)}


def _list(message: str | None = None, error: bool = False) -> Response:
    response = make_response(render_template("automations/_index.html", **_list_context()))
    return hx.toast(response, message, error) if message else response


@bp.get("/")
def index():
    """The automations page: the shop's automations, and the ready-made ones it has not added (only offered:
    a GET writes nothing)."""
    return hx.render("automations/index.html", "automations/_index.html", **_list_context())


@bp.post("/builtins")
def add_builtin():
    """Add the ready-made automation the merchant picked (switched off): "Add" answers with the list, "Set up"
    goes on to its form."""
    try:
        automation = service.add_builtin(Session, g.shop, request.form.get("builtin", ""))
    except service.AutomationError as exc:
        Session.rollback()
        return _list(str(exc), error=True)
    if request.form.get("next") == "edit":
        return hx.redirect_to(url_for("automations.edit", automation_id=automation.id))
    return _list(f"Added “{automation.name}”. It is off until you switch it on.")


@bp.post("/<int:automation_id>/enabled")
def set_enabled(automation_id: int):
    """The on/off switch; answers with the list, or the detail page when switched from there."""
    automation = get_or_404(Automation, automation_id)
    enabled = request.form.get("enabled") in ("1", "on", "true")
    message, error = f"“{automation.name}” is {'on' if enabled else 'off'}", False
    try:
        service.set_enabled(Session, automation, enabled, now=utcnow())
    except service.AutomationError as exc:
        Session.rollback()
        message, error = str(exc), True
    if request.form.get("from") == "detail":
        automation = get_or_404(Automation, automation_id)
        response = make_response(render_template("automations/_detail.html", **_detail_context(automation)))
        return hx.toast(response, message, error)
    return _list(message, error)


@bp.get("/<int:automation_id>/delete")
def confirm_delete(automation_id: int):
    """The delete confirmation dialog (deletes nothing)."""
    automation = get_or_404(Automation, automation_id)
    return render_template("automations/_delete_confirm.html", automation=automation)


@bp.delete("/<int:automation_id>")
def delete(automation_id: int):
    """Delete an automation (its messages and statistics too) once the merchant confirmed; back to the list."""
    automation = get_or_404(Automation, automation_id)
    name = automation.name
    service.delete(Session, automation)
    return hx.toast(hx.redirect_to(url_for("automations.index")), f"Deleted “{name}”")


# ---------------------------------------------------------------------------------------------- the form

def _form_of(automation: Automation | None) -> dict:
    """The form's fields for a saved automation (or a new one: a segment may be preselected by `?segment=`)."""
    if automation is None:
        segment = request.args.get("segment", "")
        return {"name": "", "trigger": "enter", "segment": segment if record_id(segment) else "",
                "delay_value": "0", "delay_unit": "minutes", "body": "", "discount_mode": "none",
                "discount_code": "", "discount_kind": "percent", "discount_value": ""}
    campaign = automation.campaign
    amount, unit = service.split_delay(automation.delay_seconds)
    if unit == "seconds":
        amount, unit = automation.delay_seconds // 60, "minutes"
    return {
        "name": automation.name, "trigger": automation.trigger,
        "segment": str(automation.segment_id) if automation.segment_id else "",
        "delay_value": str(amount), "delay_unit": unit, "body": campaign.body,
        "discount_mode": campaign.discount_mode or "none", "discount_code": campaign.discount_code or "",
        "discount_kind": campaign.discount_kind or "percent",
        "discount_value": "" if campaign.discount_value is None else f"{campaign.discount_value.normalize():f}",
    }


def _posted() -> dict:
    """The form's fields as posted."""
    form = request.form
    out = {key: form.get(key, "") for key in ("name", "trigger", "segment", "delay_value", "delay_unit", "body",
                                               "discount_mode", "discount_code", "discount_kind", "discount_value")}
    out["trigger"] = out["trigger"] or "enter"
    out["delay_unit"] = out["delay_unit"] or "minutes"
    out["discount_mode"] = out["discount_mode"] or "none"
    out["discount_kind"] = out["discount_kind"] or "percent"
    return out


def _live_context(form: dict) -> dict:
    """What the live parts show for `form`: the campaign composer's analysis and phone preview."""
    code = form["discount_code"].strip() or None
    return {
        "form": form,
        "analysis": composer.analysis(form["body"], g.shop, discount_mode=form["discount_mode"], discount_code=code),
        "preview_text": composer.sample_text(form["body"], g.shop, discount_mode=form["discount_mode"],
                                             discount_code=code, shorten=False, first_message=True),
        "footer": (g.shop.compliance_footer or "").strip(), "sample_name": defaults.CAMPAIGN_SAMPLE_FIRST_NAME,
    }


def _form_context(automation: Automation | None, form: dict, *, errors: dict | None = None,
                  form_error: str | None = None) -> dict:
    return {"automation": automation, "errors": errors or {}, "form_error": form_error, "segments": _segments(),
            "waiting": automation_stats.waiting(Session, automation) if automation else 0,
            "merge_tags": composer.MERGE_TAGS, "discount_modes": composer.DISCOUNT_MODES,
            "discount_kinds": composer.DISCOUNT_KINDS, "triggers": TRIGGER_CHOICES, "delay_units": DELAY_UNIT_CHOICES,
            **_live_context(form)}


@bp.get("/new")
def new():
    """The form for a new automation."""
    return hx.render("automations/form.html", "automations/_form_page.html", **_form_context(None, _form_of(None)))


@bp.get("/<int:automation_id>/edit")
def edit(automation_id: int):
    """The form for an automation (on or off: changes apply to the next entries)."""
    automation = get_or_404(Automation, automation_id)
    return hx.render("automations/form.html", "automations/_form_page.html",
                     **_form_context(automation, _form_of(automation)))


def _save(automation: Automation | None) -> Response:
    """Validate the posted form; save and go to the list, or show the form again with an error beside each field."""
    form = _posted()
    values, errors = service.validate(request.form, session=Session, shop=g.shop)
    if errors:
        Session.rollback()
        context = _form_context(automation, form, errors=errors,
                                form_error="Fix the highlighted fields." if len(errors) > 1 else None)
        return make_response(render_template("automations/_form.html", **context))
    if automation is None:
        saved = service.create(Session, g.shop, values)
        message = f"Created “{saved.name}”. Switch it on to start sending."
    else:
        saved = service.update(Session, automation, values)
        message = f"Saved “{saved.name}”"
    notes = composer.warnings(values)
    if notes:
        message = f"{message}. {notes[0]}"
    return hx.toast(hx.redirect_to(url_for("automations.index")), message)


@bp.post("/")
def create():
    """Create an automation (switched off) from the form."""
    return _save(None)


@bp.post("/<int:automation_id>")
def update(automation_id: int):
    """Save changes to an automation."""
    return _save(get_or_404(Automation, automation_id))


@bp.post("/compose/message")
def message_analysis():
    """The live counter for the posted message, with the phone preview (out of band)."""
    return render_template("automations/_analysis.html", **_live_context(_posted()))


# ---------------------------------------------------------------------------------------------- the detail page

def _detail_context(automation: Automation) -> dict:
    campaign = automation.campaign
    segment = Session.get(Segment, automation.segment_id) if automation.segment_id else None
    return {
        "automation": automation, "campaign": campaign, "segment": segment,
        "trigger": service.trigger_label(automation, segment), "delay": service.delay_label(automation.delay_seconds),
        "stats": stats.for_campaign(Session, campaign), "timeline": stats.timeline(Session, campaign),
        "runs": automation_stats.recent_runs(Session, automation), "skip_label": stats.skip_label,
        "discount_kinds": composer.DISCOUNT_KINDS, "discount_modes": composer.DISCOUNT_MODES,
    }


@bp.get("/<int:automation_id>")
def detail(automation_id: int):
    """An automation: its trigger, message, results and latest messages."""
    automation = get_or_404(Automation, automation_id)
    return hx.render("automations/detail.html", "automations/_detail.html", **_detail_context(automation))
