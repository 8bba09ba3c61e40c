"""JSON API for segments (/api/segments): list, create, get, update, delete, preview and members export.

Authenticated by the App Bridge session token like every merchant route. Definitions follow the contract
(docs/segment-rules.md); an invalid one is answered 422 with `{"errors": [{"path", "message"}]}`, the
paths being those inside the definition ("name" for the segment's name).
"""
from __future__ import annotations

import re
from typing import Any

from flask import Response, abort, g, jsonify, make_response, request, stream_with_context
from sqlalchemy import select

from kinnekt.db import Session, utcnow
from kinnekt.models import Segment
from kinnekt.segments import exports, previews, references, service
from kinnekt.segments.rules import DefinitionError
from kinnekt.tenancy import get_or_404
from kinnekt.web import guards
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("api_segments", __name__, url_prefix="/api/segments")


def _iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def segment_json(segment: Segment) -> dict[str, Any]:
    """One segment as the API shows it."""
    return {
        "id": segment.id, "name": segment.name, "kind": segment.kind, "auto_source": segment.auto_source,
        "editable": segment.editable, "definition": segment.definition, "member_count": segment.member_count,
        "build_status": segment.build_status, "last_built_at": _iso(segment.last_built_at),
        "has_relative_time": segment.has_relative_time, "created_at": _iso(segment.created_at),
        "updated_at": _iso(segment.updated_at),
    }


def _body() -> dict:
    """The request's JSON object; 400 with a clear message when the body is not one, or holds a NUL character;
    422 naming the path of a lone surrogate (half of a UTF-16 pair: not text any database stores)."""
    if not request.is_json:
        abort(400, description="Send a JSON object with Content-Type: application/json.")
    try:
        data = guards.parse_json(request.get_data())
    except guards.NestedTooDeep:  # a definition nests at most 4 groups: 9 levels of JSON
        abort(400, description="The request body is nested too deeply.")
    except guards.BadJson:
        abort(400, description="The request body is not valid JSON.")
    if not isinstance(data, dict):
        abort(400, description="The request body must be a JSON object.")
    found = guards.unstorable_text(data)
    if found is not None and found.nul:
        abort(400, description=f"The request body holds a NUL character (in {found.where}). Remove it.")
    if found is not None:
        abort(_unprocessable([{"path": _api_path(found.where), "message": found.why}]))
    return data


def _api_path(path: str) -> str:
    """A path in the body as the API's errors name it: inside the definition, as the contract writes them."""
    if path == "definition":
        return ""
    return path.removeprefix("definition.") if path.startswith(("definition.", "definition[")) else path


def _unprocessable(errors: list[dict[str, str]]) -> Response:
    return make_response(jsonify({"errors": errors}), 422)


def _checked_name(data: dict, *, required: bool) -> tuple[str | None, list[dict[str, str]]]:
    if "name" not in data:
        return None, ([{"path": "name", "message": "is required"}] if required else [])
    try:
        return service.clean_name(data["name"]), []
    except service.InvalidSegmentName as exc:
        return None, [{"path": "name", "message": str(exc)}]


def _checked_definition(data: dict, *, required: bool, segment: Segment | None
                        ) -> tuple[dict | None, list[dict[str, str]]]:
    """The validated definition from the body (None when absent and not required), or its errors."""
    if "definition" not in data:
        return None, ([{"path": "", "message": "definition is required"}] if required else [])
    return references.check(Session, g.shop.id, data["definition"], segment_id=segment.id if segment else None)


def _save_errors(call) -> Response | Segment:
    """Run a service save; its refusals become 422 (name taken, definition) or 409 (not editable)."""
    try:
        return call()
    except service.InvalidSegmentName as exc:  # SegmentNameTaken: the unique constraint said no
        Session.rollback()
        return _unprocessable([{"path": "name", "message": str(exc)}])
    except service.SegmentNotEditable:
        Session.rollback()
        abort(409, description="Automatic segments cannot be edited; they follow how people subscribed.")
    except DefinitionError as exc:
        Session.rollback()
        return _unprocessable(exc.errors)


@bp.get("")
def index():
    """Every segment of the shop, automatic ones first."""
    segments = Session.scalars(
        select(Segment).where(Segment.shop_id == g.shop.id).order_by(Segment.kind, Segment.name, Segment.id))
    return jsonify({"segments": [segment_json(s) for s in segments]})


@bp.post("")
def create():
    """Create a segment from `{name, definition}`: 201 with the segment, or 422 with every error."""
    data = _body()
    name, errors = _checked_name(data, required=True)
    definition, definition_errors = _checked_definition(data, required=True, segment=None)
    errors += definition_errors
    if errors:
        return _unprocessable(errors)
    saved = _save_errors(lambda: service.create_segment(Session, g.shop, name=name, definition=definition))
    if isinstance(saved, Response):
        return saved
    return make_response(jsonify(segment_json(saved)), 201)


@bp.get("/<int:segment_id>")
def show(segment_id: int):
    """One segment."""
    return jsonify(segment_json(get_or_404(Segment, segment_id)))


@bp.put("/<int:segment_id>")
def update(segment_id: int):
    """Change a segment's name and/or definition (either may be left out)."""
    segment = get_or_404(Segment, segment_id)
    if not segment.editable:
        abort(409, description="Automatic segments cannot be edited; they follow how people subscribed.")
    data = _body()
    name, errors = _checked_name(data, required=False)
    definition, definition_errors = _checked_definition(data, required=False, segment=segment)
    errors += definition_errors
    if errors:
        return _unprocessable(errors)
    saved = _save_errors(lambda: service.update_segment(
        Session, segment, name=name if name is not None else segment.name,
        definition=definition if definition is not None else segment.definition))
    if isinstance(saved, Response):
        return saved
    return jsonify(segment_json(saved))


def _usage_json(usage: service.Usage) -> dict[str, Any]:
    return {"kind": usage.kind, "id": usage.id, "name": usage.name, "status": usage.status}


@bp.delete("/<int:segment_id>")
def delete(segment_id: int):
    """Delete a segment (never its subscribers): 204. In use (scheduled campaigns, segments referring to it):
    409 naming what uses it, and nothing deleted, unless ?confirm=true."""
    segment = get_or_404(Segment, segment_id)
    confirmed = request.args.get("confirm", "").lower() in ("true", "1", "yes")
    usages = service.delete_segment(Session, segment, confirmed=confirmed)
    if usages and not confirmed:  # nothing was deleted
        return make_response(jsonify({
            "error": "Conflict",
            "message": "This segment is in use (named in `usages`); repeat with ?confirm=true to delete it anyway.",
            "usages": [_usage_json(u) for u in usages]}), 409)
    return make_response("", 204)


@bp.post("/preview")
def preview():
    """How many subscribers `{definition}` holds right now, and a sample of up to 10 of them."""
    definition, errors = _checked_definition(_body(), required=True, segment=None)
    if errors:
        return _unprocessable(errors)
    try:
        result = previews.preview(Session, definition, shop=g.shop, now=utcnow())
    except DefinitionError as exc:
        return _unprocessable(exc.errors)
    return jsonify({"count": result.count,
                    "sample": [{"id": m.id, "phone": m.phone, "name": m.name} for m in result.sample]})


@bp.get("/<int:segment_id>/members.csv")
def members_csv(segment_id: int):
    """The segment's members as CSV, streamed."""
    segment = get_or_404(Segment, segment_id)
    filename = re.sub(r"[^A-Za-z0-9._-]+", "-", segment.name).strip("-") or "segment"
    response = Response(stream_with_context(service.export_members_csv(Session, segment, now=utcnow())),
                        mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}-members.csv"'
    return response


@bp.get("/<int:segment_id>/audiences/<platform>.csv")
def audience_csv(segment_id: int, platform: str):
    """The segment's members as an ad platform's customer list (meta, google, tiktok): hashed CSV, streamed."""
    segment = get_or_404(Segment, segment_id)
    if platform not in exports.FORMATS:
        abort(404, description=f"Unknown audience format; use one of: {', '.join(exports.FORMATS)}.")
    response = Response(stream_with_context(exports.export_audience_csv(Session, segment, platform, now=utcnow())),
                        mimetype="text/csv")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{exports.download_name(segment, platform + "-audience.csv")}"')
    return response
