"""Profile properties pages: the shop's properties (add, rename, remove custom ones) and the card on a subscriber's
page where the merchant edits that subscriber's values; each answers with its one partial."""
from __future__ import annotations

from flask import g, make_response, render_template, request

from kinnekt.db import Session
from kinnekt.models import ProfileProperty, Subscriber
from kinnekt.models.profile import PROPERTY_TYPES
from kinnekt.subscribers import properties
from kinnekt.tenancy import get_or_404
from kinnekt.web import hx
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("properties", __name__)

TYPE_OPTIONS = [(kind, properties.TYPE_LABELS[kind]) for kind in PROPERTY_TYPES]


# ---------------------------------------------------------------------------------------------- the shop's properties

def _list_context(**extra) -> dict:
    context = {"catalogue": list(properties.catalogue(Session, g.shop.id).values()), "type_options": TYPE_OPTIONS,
               "type_labels": properties.TYPE_LABELS, "new_name": "", "new_type": "text", "add_error": None,
               "row_errors": {}, "row_names": {}, "confirm_id": None}
    context.update(extra)
    return context


def _list_partial(message: str | None = None, **extra):
    response = make_response(render_template("properties/_properties.html", **_list_context(**extra)))
    return hx.toast(response, message) if message else response


@bp.get("/subscribers/properties/")
def index():
    """The shop's profile properties: the built-ins, the custom ones, and the form that adds one."""
    return hx.render("properties/index.html", "properties/_properties.html", **_list_context())


@bp.post("/subscribers/properties/")
def add():
    """Add a custom property; the list again, with the error beside the form when the name or type is refused."""
    name, kind = request.form.get("name", ""), request.form.get("type", "")
    try:
        row = properties.add(Session, g.shop.id, name, kind)
    except properties.PropertyError as exc:
        Session.rollback()
        return _list_partial(new_name=name, new_type=kind, add_error=str(exc))
    Session.commit()
    return _list_partial(f"Added “{row.name}”")


@bp.post("/subscribers/properties/<int:property_id>/rename")
def rename(property_id: int):
    """Rename a custom property (its values and the segment rules naming it follow)."""
    get_or_404(ProfileProperty, property_id)
    name = request.form.get("name", "")
    try:
        row = properties.rename(Session, g.shop.id, property_id, name)
    except properties.PropertyError as exc:
        Session.rollback()
        return _list_partial(row_errors={property_id: str(exc)}, row_names={property_id: name})
    Session.commit()
    return _list_partial(f"Renamed to “{row.name}”")


@bp.post("/subscribers/properties/<int:property_id>/delete")
def remove(property_id: int):
    """Remove a custom property and its values once confirmed (the first request asks); refused, with the segments
    named, while a segment uses it."""
    get_or_404(ProfileProperty, property_id)
    if request.form.get("confirmed") != "yes":
        return _list_partial(confirm_id=property_id)
    try:
        name = properties.remove(Session, g.shop.id, property_id)
    except properties.PropertyError as exc:
        Session.rollback()
        return _list_partial(row_errors={property_id: str(exc)})
    Session.commit()
    return _list_partial(f"Removed “{name}”")


# ---------------------------------------------------------------------------------------------- one subscriber

def card_context(subscriber: Subscriber, posted: dict | None = None, errors: dict | None = None) -> dict:
    """What the subscriber page's properties card shows: each property with its value (or what was posted)."""
    catalogue = properties.catalogue(Session, subscriber.shop_id)
    stored = properties.values(Session, subscriber.shop_id, subscriber.id)
    rows = [(prop, posted.get(key, "") if posted is not None else properties.show(prop.type, stored.get(key)))
            for key, prop in catalogue.items()]
    return {"property_rows": rows, "property_errors": errors or {}}


@bp.post("/subscribers/<int:subscriber_id>/properties")
def save_values(subscriber_id: int):
    """Save the subscriber's property values, all or none; the card again, with each bad value's error beside it."""
    subscriber = get_or_404(Subscriber, subscriber_id)
    catalogue = properties.catalogue(Session, g.shop.id)
    # Only the fields the form showed: a property added meanwhile (in another tab) keeps its values.
    posted = {key: request.form[f"property-{key}"][:1000] for key in catalogue if f"property-{key}" in request.form}
    try:
        changed = properties.set_values(Session, subscriber, posted, catalogue_=catalogue)
    except properties.ValuesInvalid as exc:
        Session.rollback()
        errors = {key: message.removeprefix(catalogue[key].label + " ") for key, message in exc.errors.items()}
        stored = properties.values(Session, g.shop.id, subscriber.id)
        shown = {key: posted.get(key, properties.show(prop.type, stored.get(key))) for key, prop in catalogue.items()}
        return render_template("subscribers/_properties.html", subscriber=subscriber,
                               **card_context(subscriber, shown, errors))
    Session.commit()
    if changed:
        properties.recheck(g.shop.id, [subscriber.id])
    response = make_response(render_template("subscribers/_properties.html", subscriber=subscriber,
                                             **card_context(subscriber)))
    return hx.toast(response, "Properties saved" if changed else "Nothing changed")
