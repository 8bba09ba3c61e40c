"""Segments pages: the list (copy, delete, export, suggestions), one segment's page (rules in words, count over
time, enter/leave log, members, users), and the HTMX segment builder with its live preview."""
from __future__ import annotations

import re

from flask import Response, abort, g, make_response, render_template, request, stream_with_context, url_for
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from kinnekt.db import Session, utcnow
from kinnekt.flows import service as flows
from kinnekt.models import Collection, Product, Segment, ShopifySegment, Subscriber
from kinnekt.models.segment import BuildStatus
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.numbers import record_id, whole_number
from kinnekt.segments import exports, history, labels, previews, references, rules, service, summaries
from kinnekt.segments.labels import refreshed_words
from kinnekt.segments.rules import DefinitionError
from kinnekt.shopify import tag_mirror as mirrors
from kinnekt.shopify.tasks import enqueue_refresh_shopify_segments
from kinnekt.tenancy import get_or_404
from kinnekt.web import hx, segment_form
from kinnekt.web.auth import merchant_blueprint
from kinnekt.web.templating import Page, money

bp = merchant_blueprint("segments", __name__, url_prefix="/segments")

RULES_CHANGED = "segment-rules-changed"
"""Event the builder form listens for (from:body) to refresh the live preview after a row changed."""

OPTIONS = {
    "periods": list(labels.PERIOD_LABELS.items()),
    "windows": list(labels.WINDOW_LABELS.items()),
    "events": list(labels.EVENT_LABELS.items()),
    "attributes": list(labels.LINE_ITEM_ATTRIBUTES.items()),
    "followers": [("", "—")] + list(labels.FOLLOWER_LABELS.items()),
}
"""The fixed selects of rule rows, in the merchant's words."""


def builder_parts(root: segment_form.Group, segment_id: int | None = None) -> dict:
    """What the builder's partials (segments/_group.html, _rule_row.html) need to render `root`'s rows; the flow
    editor's conditions render them too."""
    return _row_parts(root, segment_id)


def _row_parts(root: segment_form.Group, segment_id: int | None) -> dict:
    """What rows need besides themselves: the field and fixed options, the shop's choices, and the segment's id
    (rows and groups send it along only when there is one: an hx-include matching nothing is a console error)."""
    return {"field_options": segment_form.field_options(), "options": OPTIONS, "segment_id": segment_id,
            "country_options": segment_form.country_options,
            "choices": segment_form.load_choices(Session, g.shop.id, root=root, segment_id=segment_id)}


# ---------------------------------------------------------------------------------------------- the list

def _list_context() -> dict:
    """Everything the list partial shows: segments (automatic first), their rule summaries, and suggestions."""
    segments = Session.scalars(
        select(Segment).where(Segment.shop_id == g.shop.id).order_by(Segment.kind, Segment.name, Segment.id)).all()
    names = references.load_names(Session, g.shop.id, [s.definition for s in segments])
    taken = {s.name for s in segments}
    return {
        "segments": segments,
        # Segments never hold suppressed numbers: "All subscribers" is the Subscribed count minus these.
        "suppressed": Session.scalar(select(func.count(Subscriber.id)).where(
            Subscriber.shop_id == g.shop.id, Subscriber.status == SubscriberStatus.SUBSCRIBED,
            Subscriber.suppressed_at.is_not(None))) or 0,
        "summaries": {s.id: summaries.summary(s.definition, names, money) for s in segments},
        "suggestions": [(i, s) for i, s in enumerate(service.suggested_segments()) if s.name not in taken],
        "audience_formats": list(exports.FORMATS.values()),
    }


def _list(message: str | None = None, error: bool = False) -> Response:
    response = make_response(render_template("segments/_list.html", **_list_context()))
    return hx.toast(response, message, error) if message else response


@bp.get("/")
def index():
    """The segments page: automatic segments first, then the merchant's own, by name."""
    return hx.render("segments/index.html", "segments/_list.html", **_list_context())


@bp.post("/<int:segment_id>/copy")
def copy(segment_id: int):
    """Copy a segment (as a manual one the merchant can edit) and show the list again."""
    segment = get_or_404(Segment, segment_id)
    created = service.copy_segment(Session, segment)
    return _list(f"Created “{created.name}”")


@bp.get("/<int:segment_id>/delete")
def confirm_delete(segment_id: int):
    """The confirmation dialog, naming the scheduled campaigns that use the segment. Deletes nothing."""
    segment = get_or_404(Segment, segment_id)
    usages = service.segment_usages(Session, segment)
    return render_template("segments/_delete_confirm.html", segment=segment, usages=usages)


@bp.delete("/<int:segment_id>")
def delete(segment_id: int):
    """Delete a segment once the merchant confirmed (subscribers are never touched) and show the list again."""
    segment = get_or_404(Segment, segment_id)
    name = segment.name
    service.delete_segment(Session, segment, confirmed=True)
    return _list(f"Deleted “{name}”")


@bp.get("/<int:segment_id>/build")
def build_status(segment_id: int):
    """A segment's build state and member count in the list, polled while it builds; 286 once the build is over
    stops the polling.

    A segment that is not there (deleted while its row was polling, or not this shop's) also stops the polling,
    with an empty answer instead of a 404: the same for every id, so it tells nothing about other shops' rows,
    and the page shows no error for a segment the merchant just deleted.
    """
    segment = Session.scalar(select(Segment).where(Segment.shop_id == g.shop.id, Segment.id == segment_id))
    if segment is None:
        return hx.stop_polling("")
    body = render_template("segments/_build_status.html", segment=segment, part="both")
    if segment.build_status in BuildStatus.ACTIVE:
        return make_response(body)
    return hx.stop_polling(body)


@bp.get("/<int:segment_id>/members.csv")
def export(segment_id: int):
    """The segment's members as a CSV download, streamed row by row."""
    segment = get_or_404(Segment, segment_id)
    lines = service.export_members_csv(Session, segment, now=utcnow())
    filename = re.sub(r"[^A-Za-z0-9._-]+", "-", segment.name).strip("-") or "segment"
    response = Response(stream_with_context(lines), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}-members.csv"'
    return response


@bp.get("/<int:segment_id>/audiences/<platform>.csv")
def export_audience(segment_id: int, platform: str):
    """The segment's members as an ad platform's customer list (hashed, see kinnekt.segments.exports), streamed."""
    segment = get_or_404(Segment, segment_id)
    if platform not in exports.FORMATS:
        abort(404)
    lines = exports.export_audience_csv(Session, segment, platform, now=utcnow())
    response = Response(stream_with_context(lines), mimetype="text/csv")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{exports.download_name(segment, platform + "-audience.csv")}"')
    return response


@bp.post("/suggested")
def create_suggested():
    """Create one of the suggested segments as it is."""
    suggestions = service.suggested_segments()
    try:
        suggestion = suggestions[int(request.form.get("suggestion", ""))]
    except (ValueError, IndexError):
        abort(400, description="Choose one of the suggested segments.")
    try:
        created = service.create_segment(Session, g.shop, name=suggestion.name, definition=suggestion.definition)
    except service.InvalidSegmentName as exc:
        Session.rollback()
        return _list(str(exc), error=True)
    except DefinitionError as exc:
        Session.rollback()
        return _list(f"“{suggestion.name}” could not be created: {exc}", error=True)
    return _list(f"Created “{created.name}”")


# ---------------------------------------------------------------------------------------------- one segment

LOG_ID = "segment-log"
"""The id of the enter/leave log partial; its filter form and page links target it."""


def _log_filters() -> tuple[str, str, int]:
    """The log's `kind`, `q` and `page` arguments; 400 with what is wrong when one cannot be used."""
    kind = request.args.get("kind", "")
    if kind not in ("", *history.LOG_KINDS):
        abort(400, description="Show “All changes”, “Entered” or “Left”: the log cannot be filtered by "
                               f"“{kind[:40]}”.")
    query = request.args.get("q", "").strip()
    if len(query) > history.MAX_QUERY_LENGTH:
        abort(400, description=f"Search for at most {history.MAX_QUERY_LENGTH} characters.")
    raw_page = request.args.get("page", "")
    page = record_id(raw_page) if raw_page else 1
    if page is None:
        abort(400, description=f"“{raw_page[:40]}” is not a page number: use a whole number from 1.")
    return kind, query, page


def _log_context(segment: Segment, kind: str, query: str, page: int) -> dict:
    """The log partial's context: one page of entries (paged in the database) and the filters that made it."""
    found = history.log_page(Session, segment, kind=kind, query=query, page=page)
    params = {key: value for key, value in (("kind", kind), ("q", query)) if value}
    results = Page(items=found.entries, number=found.number, size=found.size, total=found.total,
                   params={"segment_id": segment.id, **params})
    return {"segment": segment, "log": results, "log_kind": kind, "log_query": query, "log_filtered": bool(params),
            "log_id": LOG_ID, "log_kinds": [("", "All changes"), *history.LOG_KINDS.items()]}


def _detail_context(segment: Segment, kind: str = "", query: str = "", page: int = 1) -> dict:
    """Everything the segment page shows, each figure read from the shop's data."""
    names = references.load_names(Session, g.shop.id, [segment.definition])
    return {
        "segment": segment,
        "rules_in_words": summaries.describe(segment.definition, names, money),
        "names": names,
        "counts": history.count_history(Session, segment, timezone=g.shop.timezone, now=utcnow()),
        "chart_days": history.CHART_DAYS,
        "sample": history.member_sample(Session, segment),
        "campaigns": service.campaigns_using(Session, segment),
        "flows": flows.flows_using(Session, segment),
        "audience_formats": list(exports.FORMATS.values()),
        "shopify_segments_used": _shopify_segments_used(names),
        **_mirror_context(segment),
        **_log_context(segment, kind, query, page),
    }


def _shopify_segments_used(names: references.Names) -> list[tuple[str, str, str | None]]:
    """The Shopify segments the rules name: (name, when their members were read, the last read's error)."""
    if not names.shopify_segments:
        return []
    errors = dict(Session.execute(select(ShopifySegment.shopify_id, ShopifySegment.last_error).where(
        ShopifySegment.shop_id == g.shop.id, ShopifySegment.shopify_id.in_([int(i) for i in names.shopify_segments]))
    ).all())
    return [(name, refreshed_words(at), errors.get(int(shopify_id)))
            for shopify_id, (name, at) in sorted(names.shopify_segments.items(), key=lambda item: item[1][0])]


def _mirror_context(segment: Segment, values: dict | None = None, errors: dict | None = None) -> dict:
    """The tag mirror card's context: the saved setting and its sync state, or the posted values beside errors."""
    mirror = mirrors.mirror_of(Session, segment)
    if values is None:
        values = {"enabled": bool(mirror and mirror.enabled), "tag": mirror.tag if mirror else ""}
    return {"segment": segment, "mirror": mirror, "mirror_values": values, "mirror_errors": errors or {}}


MIRROR_SWITCH = {"": False, "on": True, "1": True, "true": True}
"""What the mirror form's checkbox may post (absent: off)."""


@bp.post("/<int:segment_id>/tag-mirror")
def tag_mirror(segment_id: int):
    """Save the segment's mirror into a Shopify customer tag (on/off and the tag); its card comes back, with the
    errors beside their fields when nothing was saved."""
    segment = get_or_404(Segment, segment_id)
    switch, tag = request.form.get("enabled", ""), request.form.get("tag", "")
    values = {"enabled": MIRROR_SWITCH.get(switch, False), "tag": tag[:300]}
    errors: dict[str, str] = {}
    if switch not in MIRROR_SWITCH:
        errors["enabled"] = "Tick the box to keep the tag, or leave it empty to switch it off."
    else:
        try:
            saved = mirrors.configure(Session, segment, enabled=values["enabled"], tag=tag)
        except mirrors.InvalidMirror as exc:
            Session.rollback()
            errors = exc.errors
        except IntegrityError:  # another segment took the tag meanwhile (the database said so)
            Session.rollback()
            errors = {"tag": "Another segment already mirrors into this tag: choose another tag."}
    if errors:
        response = make_response(render_template("segments/_tag_mirror.html",
                                                 **_mirror_context(segment, values, errors)))
        return hx.toast(response, "Not saved: " + " ".join(errors.values()), error=True)
    response = make_response(render_template("segments/_tag_mirror.html", **_mirror_context(segment)))
    message = (f"Saved. Customers of “{segment.name}” are being tagged." if values["enabled"]
               else "Saved. The tag is being removed from every customer who has it." if saved is not None
               else "The Shopify customer tag is off.")
    return hx.toast(response, message)


@bp.post("/shopify-segments/refresh")
def refresh_shopify_segments():
    """Read the shop's Shopify segments and their members again now (a bulk job); answers with a message only."""
    if g.shop.is_demo:
        return hx.toast(make_response("", 200), "The demo store has no Shopify connection to read segments from.",
                        error=True)
    enqueue_refresh_shopify_segments(g.shop.id)
    return hx.toast(make_response("", 200), "Reading your Shopify segments. Their members update in a minute.")


@bp.get("/<int:segment_id>")
def detail(segment_id: int):
    """One segment: its rules in words, member count over time, enter/leave log, members, exports and users."""
    segment = get_or_404(Segment, segment_id)
    return hx.render("segments/detail.html", "segments/_detail.html", **_detail_context(segment, *_log_filters()))


@bp.get("/<int:segment_id>/log")
def log(segment_id: int):
    """The segment's enter/leave log, filtered and paged: its partial for htmx, else the segment page showing it."""
    segment = get_or_404(Segment, segment_id)
    kind, query, page = _log_filters()
    if hx.is_htmx() and request.headers.get("HX-Target") == LOG_ID:
        return render_template("segments/_log.html", **_log_context(segment, kind, query, page))
    return hx.render("segments/detail.html", "segments/_detail.html", **_detail_context(segment, kind, query, page))


# ---------------------------------------------------------------------------------------------- the builder

def _editable_or_404(segment_id: int) -> Segment:
    segment = get_or_404(Segment, segment_id)
    if not segment.editable:
        abort(404, description="Automatic segments cannot be edited: they follow how people subscribed. "
                               "Copy one to make your own version.")
    return segment


def _builder_context(*, segment: Segment | None, name: str, root: segment_form.Group, name_error: str | None = None,
                     loose_errors: list[str] | None = None, show_preview: bool = True) -> dict:
    context = {"segment": segment, "name": name, "root": root, "name_error": name_error,
               "loose_errors": loose_errors or [], "preview": None, "preview_blocked": None,
               **_row_parts(root, segment.id if segment else None)}
    if show_preview:
        context.update(_preview_of(root, segment))
    return context


def _checked(parsed: segment_form.ParsedForm, segment: Segment | None) -> tuple[dict | None, list[dict]]:
    return references.check(Session, g.shop.id, parsed.definition, segment_id=segment.id if segment else None)


def _preview_of(root: segment_form.Group, segment: Segment | None,
                parsed: segment_form.ParsedForm | None = None) -> dict:
    """The live preview of a tree: count and sample, or why there is none (errors are put beside their rows)."""
    parsed = parsed or segment_form.parsed_tree(root)
    definition, errors = _checked(parsed, segment)
    if definition is None:
        loose = parsed.place_errors(errors)
        for node in root.walk():
            if isinstance(node, segment_form.Row) and node.waiting:
                node.errors = []  # a row still waiting for its value is not wrong yet
        wrong = loose or any(node.errors for node in root.walk())
        return {"preview": None, "loose_errors": loose,
                "preview_blocked": "Fix the highlighted rules to see who matches." if wrong
                else "Fill in every rule to see who matches."}
    try:
        result = previews.preview(Session, definition, shop=g.shop, now=utcnow())
    except DefinitionError as exc:  # a segment this one refers to has a broken stored definition
        return {"preview": None, "preview_blocked": "; ".join(e["message"] for e in exc.errors),
                "loose_errors": [f"{e['path']}: {e['message']}" for e in exc.errors]}
    return {"preview": result, "preview_blocked": None}


def _parse() -> segment_form.ParsedForm:
    try:
        return segment_form.parse_form(request.form)
    except segment_form.MalformedForm as exc:
        abort(400, description=f"The segment form could not be read ({exc}). Reload the page and try again.")


@bp.get("/new")
def new():
    """The builder for a new segment (one rule to start from, matching everyone)."""
    root = segment_form.definition_to_tree(None)
    return hx.render("segments/builder.html", "segments/_builder_page.html",
                     **_builder_context(segment=None, name="", root=root))


@bp.get("/<int:segment_id>/edit")
def edit(segment_id: int):
    """The builder for one of the merchant's own segments."""
    segment = _editable_or_404(segment_id)
    root = segment_form.definition_to_tree(segment.definition)
    return hx.render("segments/builder.html", "segments/_builder_page.html",
                     **_builder_context(segment=segment, name=segment.name, root=root))


def _save(segment: Segment | None):
    """Validate the posted builder; save it and go to the list, or show the form again with its errors."""
    parsed = _parse()
    name_error = None
    try:
        service.clean_name(parsed.name)
    except service.InvalidSegmentName as exc:
        name_error = str(exc)
    definition, errors = _checked(parsed, segment)
    loose = parsed.place_errors(errors)
    if definition is not None and name_error is None:
        try:
            if segment is None:
                saved = service.create_segment(Session, g.shop, name=parsed.name, definition=definition)
            else:
                users = _automations_to_ask(segment, definition)
                if users and request.form.get("automations_asked") != "1":
                    return _ask_about_automations(segment, parsed, definition, users)
                saved = service.update_segment(Session, segment, name=parsed.name, definition=definition,
                                               trigger_automations=bool(users) and _trigger_automations())
        except service.InvalidSegmentName as exc:  # the name is taken (the database said so)
            Session.rollback()
            name_error = str(exc)
        except DefinitionError as exc:
            Session.rollback()
            loose, definition = parsed.place_errors(exc.errors), None
        else:
            verb = "Created" if segment is None else "Saved"
            return hx.toast(_go_to_list(), f"{verb} “{saved.name}”. Members are being counted.")
    context = _builder_context(segment=segment, name=parsed.name, root=parsed.root, name_error=name_error,
                               loose_errors=loose, show_preview=False)
    if definition is None:
        context["preview_blocked"] = "Fix the highlighted rules to see who matches."
    else:
        context["preview"] = previews.preview(Session, definition, shop=g.shop, now=utcnow())
    return render_template("segments/_builder.html", **context)


def _automations_to_ask(segment: Segment, definition: dict) -> list:
    """The switched-on flows started by entering or leaving a segment whose rules this save changes (nothing to ask
    otherwise)."""
    if definition == segment.definition:
        return []
    return flows.segment_users(Session, segment)


def _trigger_automations() -> bool:
    """The merchant's answer to the prompt: only a ticked box lets the edit's entries and leaves start the flows."""
    return request.form.get("trigger_automations") in ("1", "on", "true")


def _ask_about_automations(segment: Segment, parsed: segment_form.ParsedForm, definition: dict, users: list) -> str:
    """The builder again, unsaved, asking whether the subscribers this edit moves should start the flows."""
    context = _builder_context(segment=segment, name=parsed.name, root=parsed.root, show_preview=False)
    context["preview"] = previews.preview(Session, definition, shop=g.shop, now=utcnow())
    context["automations_prompt"] = users
    return render_template("segments/_builder.html", **context)


def _go_to_list() -> Response:
    """Send htmx to the list page (its partial into #main, URL pushed); a 303 for a plain form post."""
    return hx.redirect_to(url_for("segments.index"))


@bp.post("/")
def create():
    """Create a segment from the builder."""
    return _save(None)


@bp.post("/<int:segment_id>")
def update(segment_id: int):
    """Save changes to one of the merchant's segments."""
    return _save(_editable_or_404(segment_id))


@bp.post("/preview")
def preview():
    """The live preview: member count and a sample for the posted rules, errors placed beside their rows."""
    parsed = _parse()
    segment_id = request.form.get("segment_id", "")
    segment = get_or_404(Segment, segment_id) if segment_id else None
    context = _preview_of(parsed.root, segment, parsed)
    return render_template("segments/_preview.html", root=parsed.root, oob=True, **context)


# ---------------------------------------------------------------------------------------------- builder pieces

def _changed(response: Response) -> Response:
    """Refresh the preview once the new row is in the page."""
    response.headers["HX-Trigger-After-Swap"] = RULES_CHANGED
    return response


def _key_arg(name: str) -> str:
    value = request.args.get(name, "")
    if not re.fullmatch(r"[a-z0-9]{1,16}", value):
        abort(400, description="The builder request names no group or rule.")
    return value


def _part_arg() -> str:
    """Which input of the row a picker fills: its value, or a browsing event's `products` / `collections`."""
    part = request.args.get("part", "value")
    if part not in PICKER_PARTS:
        abort(400, description="The builder request names no picker.")
    return part


PICKER_PARTS = ("value", "products", "collections")


def _row_response(row: segment_form.Row, parent: str) -> Response:
    root = segment_form.Group(segment_form.ROOT_KEY, items=[row])
    parts = _row_parts(root, record_id(request.args.get("segment_id")))
    return _changed(make_response(render_template("segments/_rule_row.html", row=row, parent=parent, **parts)))


@bp.get("/builder/rule")
def rule_row():
    """A rule row: a new one for a group (`?parent=`), or the posted row again after its field or operator changed."""
    if "parent" in request.args:
        return _row_response(segment_form.new_row(), _key_arg("parent"))
    try:
        row, parent = segment_form.parse_row(request.args)
    except segment_form.MalformedForm as exc:
        abort(400, description=f"The rule could not be read ({exc}).")
    shown_shape = row.get("shape")
    row = segment_form.refresh_row(row)
    if row.shape == shown_shape:
        # Same inputs as on the page (e.g. "is" -> "is greater than"): redrawing would only risk losing what
        # the merchant types meanwhile. The form's own change event already refreshed the preview.
        return make_response("", 204)
    return _row_response(row, parent)


@bp.get("/builder/group")
def group():
    """A new group (holding one rule) inside a group."""
    parent = _key_arg("parent")
    depth = whole_number(request.args.get("depth"), rules.MAX_DEPTH)
    if depth is None or depth < 2:
        abort(400, description=f"Groups nest at most {rules.MAX_DEPTH} deep.")
    node = segment_form.new_group(depth)
    parts = _row_parts(node, record_id(request.args.get("segment_id")))
    return _changed(make_response(render_template("segments/_group.html", group=node, parent=parent, **parts)))


_PICKERS = {"products": ("product", Product), "collections": ("collection", Collection)}


@bp.get("/builder/<any(products, collections):kind>")
def picker(kind: str):
    """Search-as-you-type over the shop's synced products or collections."""
    key, part = _key_arg("key"), _part_arg()
    query = request.args.get("q", "")
    results = references.search_catalog(Session, g.shop.id, _PICKERS[kind][0], query)
    return render_template("segments/_picker.html", key=key, part=part, kind=kind, results=results,
                           query=query.strip())


@bp.get("/builder/<any(products, collections):kind>/pick")
def pick(kind: str):
    """One chosen product or collection as a removable tag (nothing when it is already chosen)."""
    key, part = _key_arg("key"), _part_arg()
    item_id = request.args.get("id", "")
    noun, model = _PICKERS[kind]
    if record_id(item_id) is None:
        abort(404)
    title = Session.scalar(select(model.title).where(model.shop_id == g.shop.id,
                                                     model.shopify_id == record_id(item_id)))
    if title is None:
        abort(404, description=f"There is no such {noun} in this shop.")
    if item_id in request.args.getlist(f"rule-{key}-{part}"):
        return make_response("", 204)
    response = make_response(render_template("segments/_picked.html", key=key, part=part, kind=kind,
                                             item_id=item_id, title=title, clear_results=True))
    return _changed(response)
