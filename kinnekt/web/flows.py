"""The flows page (the shop's flows with their trigger, status and figures, an on/off switch each, and the
ready-made flows to add, switched off) and the flow editor: settings and steps top to bottom, edited in place
with HTMX (add, remove, move up/down; conditions' branches indented), a live preview of each message, saved as a
new version of the flow (kinnekt/flows/service.save), and the dry run of a saved flow for one subscriber
(kinnekt/flows/dry_run.py). The form codec is kinnekt/web/flow_form.py."""
from __future__ import annotations

from flask import Response, abort, g, make_response, render_template, request, url_for
from markupsafe import Markup
from sqlalchemy import func, select

from kinnekt.campaigns import composer, trigger_tags
from kinnekt.segments import references, summaries
from kinnekt.db import Session, utcnow
from kinnekt.flows import dry_run as dry_runs
from kinnekt.flows import service, stats
from kinnekt.models import Campaign, Flow, FlowRun, Segment, Subscriber
from kinnekt.models.flow import EXITS, TRIGGERS, RunState
from kinnekt.numbers import MAX_ID, whole_number
from kinnekt.tenancy import get_or_404
from kinnekt.web import flow_form, hx, segment_form
from kinnekt.web.segments import builder_parts
from kinnekt.web.auth import merchant_blueprint
from kinnekt.web.templating import money

bp = merchant_blueprint("flows", __name__, url_prefix="/flows")


def _context() -> dict:
    added = set(Session.scalars(select(Flow.builtin).where(Flow.shop_id == g.shop.id, Flow.builtin.is_not(None))))
    offers = [(key, spec["name"]) for key, spec in service.BUILTINS.items() if key not in added]
    rows = stats.flow_rows(Session, g.shop)
    return {"rows": rows, "offers": offers, "us_hold": service.us_hold(Session, g.shop.id),
            "figures": [stats.step_figures(Session, row.flow) for row in rows if sum(row.runs.values())]}


def _list(message: str, error: bool = False) -> Response:
    return hx.toast(make_response(render_template("flows/_index.html", **_context())), message, error)


@bp.get("/")
def index():
    """The flows page (a GET writes nothing)."""
    return hx.render("flows/index.html", "flows/_index.html", **_context())


@bp.post("/builtins")
def add_builtin():
    """Add the ready-made flow the merchant picked, switched off; answers with the list."""
    try:
        flow = service.add_builtin(Session, g.shop, request.form.get("builtin", ""))
    except service.FlowError as exc:
        Session.rollback()
        return _list(str(exc), error=True)
    return _list(f"Added “{flow.name}”. It is off until you switch it on.")


@bp.post("/<int:flow_id>/status")
def set_status(flow_id: int):
    """The on/off switch; answers with the list, or the flow's page when switched from there."""
    flow = get_or_404(Flow, flow_id)
    on = request.form.get("on") in ("1", "on", "true")
    try:
        service.set_status(Session, flow, on, now=utcnow())
    except service.FlowError as exc:  # a flow to US subscribers without an approved US sender
        Session.rollback()
        if request.form.get("from") == "detail":
            return hx.toast(make_response(render_template("flows/_detail.html", **_detail_context(flow)), 422),
                            str(exc), error=True)
        return _list(str(exc), error=True)
    message = f"“{flow.name}” is {'on' if on else 'off'}"
    if request.form.get("from") == "detail":
        flow = get_or_404(Flow, flow_id)
        return hx.toast(make_response(render_template("flows/_detail.html", **_detail_context(flow))), message)
    return _list(message)


# ---------------------------------------------------------------------------------------------- the flow's page

def _words(group) -> str:
    """A condition's rules (segments.summaries.GroupWords) as one sentence."""
    if group is None:
        return "rules that cannot be read any more"
    joiner = " and " if group.match == "all" else " or "
    parts = [f"({_words(item)})" if getattr(item, "is_group", False) else item.text for item in group.items]
    return joiner.join(parts)


def _step_text(step, campaigns: dict, names) -> str:
    """One step in the merchant's words: "Wait 30 minutes", "Text: …", "If …", "End"."""
    if step.kind == "wait":
        if step.wait_until_minute is not None:
            return f"Wait until {step.wait_until_minute // 60:02d}:{step.wait_until_minute % 60:02d} (their time)"
        return f"Wait {flow_form.duration_words(step.wait_seconds or 0)}"
    if step.kind == "send":
        campaign = campaigns.get(step.campaign_id)
        return f"Text: {campaign.body if campaign else ''}"
    if step.kind == "condition":
        return "If " + _words(summaries.describe(step.condition, names, money))
    return "End"


def _detail_context(flow: Flow) -> dict:
    figures = stats.step_figures(Session, flow)
    campaigns = {c.id: c for c in Session.scalars(select(Campaign).where(
        Campaign.shop_id == g.shop.id, Campaign.id.in_([f.step.campaign_id for f in figures.steps
                                                        if f.step.campaign_id])))}
    names = references.load_names(Session, g.shop.id, [f.step.condition for f in figures.steps
                                                        if f.step.condition])
    segment = Session.scalar(select(Segment).where(Segment.id == flow.segment_id, Segment.shop_id == g.shop.id)) \
        if flow.segment_id else None
    runs = stats.recent_runs(Session, flow)
    counts = dict(Session.execute(select(FlowRun.state, func.count()).where(
        FlowRun.shop_id == g.shop.id, FlowRun.flow_id == flow.id).group_by(FlowRun.state)).tuples().all())
    return {"flow": flow, "figures": figures, "segment": segment, "runs": runs, "counts": counts,
            "trigger": stats.trigger_label(flow, segment),
            "exits": [EXIT_LABELS.get(key, key) for key in flow.exit_conditions or []],
            "cooldown": flow_form.duration_words(flow.reentry_cooldown_seconds or 0)
            if flow.reentry_cooldown_seconds else None,
            "step_text": {f.step.id: _step_text(f.step, campaigns, names) for f in figures.steps},
            "run_steps": stats.step_positions(Session, flow, [r.step_id for r in runs])}


@bp.get("/<int:flow_id>")
def detail(flow_id: int):
    """A flow's page: status, trigger and settings, its steps with their figures, its latest runs (a GET writes
    nothing)."""
    flow = get_or_404(Flow, flow_id)
    return hx.render("flows/detail.html", "flows/_detail.html", **_detail_context(flow))


# ---------------------------------------------------------------------------------------------- the editor

EXIT_LABELS = {"order": "They place an order", "unsubscribed": "They unsubscribe",
               "left_segment": "They are no longer in the segment", "added_to_cart": "They add to the cart",
               "started_checkout": "They start a checkout"}
"""Each exit condition in the merchant's words."""


def _editor_context(draft: flow_form.Draft, flow: Flow | None) -> dict:
    flow_form.key_trees(draft.steps)
    # The segment builder's parts for every "rules" condition at once (one set of choices for all their rows).
    builder = builder_parts(segment_form.Group("all", items=list(flow_form.trees(draft.steps))))
    segments = Session.execute(select(Segment.id, Segment.name).where(Segment.shop_id == g.shop.id)
                               .order_by(Segment.name, Segment.id)).all()
    waiting = 0
    if flow is not None:
        waiting = Session.scalar(select(func.count()).select_from(FlowRun).where(
            FlowRun.shop_id == g.shop.id, FlowRun.flow_id == flow.id, FlowRun.state == RunState.ACTIVE)) or 0
    return {"draft": draft, "flow": flow, "waiting": waiting,
            "segment_options": [("", "Choose a segment")] + [(str(id_), name) for id_, name in segments],
            "trigger_options": [(key, stats.TRIGGER_LABELS[key].replace("“{segment}”", "a segment"))
                                for key in TRIGGERS],
            "exit_options": [(key, EXIT_LABELS[key]) for key in EXITS],
            "unit_options": [(unit, unit) for unit in flow_form.UNITS], "order_ops": list(flow_form.ORDER_OPS.items()),
            "tests": list(flow_form.CONDITION_TESTS.items()), "discount_modes": list(composer.DISCOUNT_MODES.items()),
            "discount_kinds": list(composer.DISCOUNT_KINDS.items()),
            "tag_help": "Merge tags: " + " ".join("{" + tag + "}" for tag in [*composer.MERGE_TAGS,
                                                                             *trigger_tags.TAGS]),
            "preview_html": _preview_html, "max_depth": flow_form.MAX_DEPTH, **builder,
            "action": url_for("flows.save", flow_id=flow.id) if flow else url_for("flows.create")}


def _preview_html(path: str, values: dict) -> Markup:
    """The live preview of one message, as the editor first shows it."""
    return Markup(render_template("flows/_preview.html", path=path, **flow_form.preview(g.shop, values)))


def _editor(draft: flow_form.Draft, flow: Flow | None, message: str | None = None, error: bool = False, *,
            drafted: bool = False):
    response = make_response(render_template("flows/_editor.html", drafted=drafted, **_editor_context(draft, flow)))
    return hx.toast(response, message, error) if message else response


def _posted_draft() -> flow_form.Draft:
    try:
        return flow_form.parse(request.form)
    except flow_form.MalformedForm as exc:
        abort(400, description=f"This is not the flow editor's form ({exc}). Reload the page.")


@bp.get("/new")
def new():
    """The editor for a new flow (a GET writes nothing)."""
    return hx.render("flows/editor.html", "flows/_editor.html", **_editor_context(flow_form.new_draft(), None))


@bp.get("/<int:flow_id>/edit")
def edit(flow_id: int):
    """The editor for one of the shop's flows, showing its current version (a GET writes nothing)."""
    flow = get_or_404(Flow, flow_id)
    return hx.render("flows/editor.html", "flows/_editor.html",
                     **_editor_context(flow_form.draft_from_flow(Session, flow), flow))


@bp.post("/draft")
@bp.post("/<int:flow_id>/draft")
def change(flow_id: int | None = None):
    """A structural edit of the posted draft (`op`: add, remove, move up or down); answers with the editor as
    edited. Nothing is saved."""
    flow = get_or_404(Flow, flow_id) if flow_id is not None else None
    draft = _posted_draft()
    try:
        problem = flow_form.apply(draft, request.form.get("op", ""))
    except flow_form.MalformedForm as exc:
        abort(400, description=f"This is not an edit the flow editor offers ({exc}). Reload the page.")
    return _editor(draft, flow, problem, error=bool(problem), drafted=True)


@bp.post("/preview/<path>")
def preview(path: str):
    """The live preview of one message of the posted draft: its text for a sample recipient, encoding, parts and
    cost per message (from the one price table)."""
    if not flow_form.valid_path(path):
        abort(404)
    values = {part: request.form.get(f"s{path}-{part}", "") for part in
              ("body", "discount_mode", "discount_code")}
    return render_template("flows/_preview.html", path=path, **flow_form.preview(g.shop, values))


@bp.get("/<int:flow_id>/dry-run")
def dry_run(flow_id: int):
    """The dry run (target #dry-run): with `q`, the shop's subscribers matching it; with `subscriber_id`, what that
    subscriber would get from the flow's saved steps if they entered now. Reads only: sends and saves nothing."""
    flow = get_or_404(Flow, flow_id)
    raw = request.args.get("subscriber_id")
    if raw is not None:
        subscriber_id = whole_number(raw, MAX_ID)
        person = Session.scalar(select(Subscriber).where(Subscriber.id == subscriber_id,
                                                         Subscriber.shop_id == g.shop.id)) \
            if subscriber_id is not None else None
        if person is None:
            abort(404, description="There is no such subscriber in this shop.")
        run = dry_runs.simulate(Session, g.shop, flow, person, now=utcnow())
        return render_template("flows/_dry_run.html", flow=flow, run=run, found=[], query="")
    query = request.args.get("q", "").strip()[:64]
    found = dry_runs.search(Session, g.shop, query)
    return render_template("flows/_dry_run.html", flow=flow, run=None, found=found, query=query)


@bp.post("/")
def create():
    """Save a new flow from the editor (switched off); the editor again with every problem when it is wrong."""
    return _save(None)


@bp.post("/<int:flow_id>")
def save(flow_id: int):
    """Save the editor as a new version of the flow; waiting runs keep theirs or move, as the merchant chose."""
    return _save(get_or_404(Flow, flow_id))


def _save(flow: Flow | None):
    draft = _posted_draft()
    checked = flow_form.check(Session, g.shop, draft)
    if checked is None:
        return _editor(draft, flow, "The flow was not saved: fix what is marked.", error=True)
    settings, steps = checked
    try:
        if flow is None:
            flow = service.create(Session, g.shop, steps=steps, **settings)
            message = f"Saved “{flow.name}”. It is off until you switch it on."
        else:
            moved, kept = service.save(Session, g.shop, flow, settings=settings, steps=steps,
                                       move_runs=draft.settings.get("runs") == "move", now=utcnow())
            message = f"Saved “{flow.name}” (version {flow.version})."
            if moved or kept:
                message += f" People already in it: {moved} moved to this version, {kept} kept theirs."
    except service.FlowError as exc:
        Session.rollback()
        draft.general = str(exc)
        return _editor(draft, flow, "The flow was not saved: fix what is marked.", error=True)
    return _editor(flow_form.draft_from_flow(Session, flow), flow, message)
