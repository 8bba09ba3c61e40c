"""Profile properties: defining, renaming and removing custom ones; parsing and writing typed values all or none."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from kinnekt.models import ProfileProperty, Segment, Subscriber, SubscriberProperty
from kinnekt.subscribers import properties
from kinnekt.subscribers.properties import PropertyError, ValuesInvalid


def person(db, shop, phone="+12125550100") -> Subscriber:
    row = Subscriber(shop_id=shop.id, phone=phone, status="subscribed", source="manual")
    db.add(row)
    db.flush()
    return row


def test_the_built_ins_exist_in_every_shop_and_custom_ones_follow_by_name(db, shop, other_shop):
    properties.add(db, shop.id, "Shoe size", "number")
    properties.add(db, shop.id, "anniversary", "date")
    properties.add(db, other_shop.id, "Club", "text")
    assert properties.types(db, shop.id) == {"birthday": "date", "language": "text", "anniversary": "date",
                                             "shoe size": "number"}
    assert [p.label for p in properties.catalogue(db, shop.id).values()] == [
        "Birthday", "Language", "anniversary", "Shoe size"]


@pytest.mark.parametrize("name,type_,message", [
    ("", "text", "Enter a name"),
    ("x" * 41, "text", "A name has at most 40 characters"),
    ("-size", "text", "Use letters, digits, spaces, dots, hyphens and underscores, starting with a letter or digit"),
    ("size<script>", "text", "Use letters, digits, spaces, dots, hyphens and underscores, starting with a letter or "
                             "digit"),
    ("BIRTHDAY", "date", "“BIRTHDAY” is a built-in property"),
    ("ﬃ" * 30, "text", "This name is too long"),
    ("Size", "colour", "Choose a type: text, number or date"),
    ("SIZE", "text", "There is already a property named “SIZE”"),
])
def test_bad_or_taken_names_are_refused(db, shop, name, type_, message):
    properties.add(db, shop.id, "size", "number")
    with pytest.raises(PropertyError) as caught:
        properties.add(db, shop.id, name, type_)
    assert str(caught.value) == message
    assert db.scalar(select(ProfileProperty.name).where(ProfileProperty.shop_id == shop.id)) == "size"


def test_names_are_unique_per_shop_in_the_database(db, shop):
    properties.add(db, shop.id, "Größe", "text")
    db.add(ProfileProperty(shop_id=shop.id, name="GRÖSSE", name_key="grösse", type="text"))
    with pytest.raises(IntegrityError):
        db.flush()


def test_renaming_moves_values_and_segment_rules_along(db, shop):
    size = properties.add(db, shop.id, "Size", "text")
    someone = person(db, shop)
    properties.set_values(db, someone, {"size": "M"})
    rules = {"match": "any", "rules": [{"field": "property", "attribute": "size", "op": "eq", "value": "m"},
                                        {"field": "property", "attribute": "language", "op": "is_set"}]}
    segment = Segment(shop_id=shop.id, name="Mediums", kind="manual", definition=rules)
    db.add(segment)
    db.flush()
    properties.rename(db, shop.id, size.id, "Shirt size")
    db.commit()
    assert properties.values(db, shop.id, someone.id) == {"shirt size": "M"}
    assert db.get(Segment, segment.id).definition["rules"][0]["attribute"] == "Shirt size"
    assert db.get(Segment, segment.id).definition["rules"][1]["attribute"] == "language"
    with pytest.raises(PropertyError):
        properties.rename(db, shop.id, size.id, "language")


def test_removing_is_refused_while_a_segment_uses_it_and_takes_the_values_along(db, shop):
    size = properties.add(db, shop.id, "Size", "text")
    someone = person(db, shop)
    properties.set_values(db, someone, {"size": "M", "language": "de"})
    db.add(Segment(shop_id=shop.id, name="Mediums", kind="manual", definition={
        "match": "all", "rules": [{"field": "property", "attribute": "SIZE", "op": "eq", "value": "m"}]}))
    db.flush()
    with pytest.raises(PropertyError) as caught:
        properties.remove(db, shop.id, size.id)
    assert str(caught.value) == "“Size” is used by the segment “Mediums”: remove those rules first"
    db.execute(Segment.__table__.delete())
    assert properties.remove(db, shop.id, size.id) == "Size"
    assert properties.values(db, shop.id, someone.id) == {"language": "de"}
    assert db.scalars(select(SubscriberProperty.name_key)).all() == ["language"]


@pytest.mark.parametrize("type_,raw,expected", [
    ("text", "  Deutsch ", "Deutsch"),
    ("text", "", None),
    ("number", "10.50", Decimal("10.5")),
    ("number", "-3", Decimal("-3")),
    ("number", 7, Decimal("7")),
    ("date", "2000-02-29", dt.date(2000, 2, 29)),
    ("date", "  ", None),
])
def test_values_parse_by_type(type_, raw, expected):
    assert properties.parse_value(type_, raw) == expected


@pytest.mark.parametrize("type_,raw,message", [
    ("text", "x" * 256, "must be at most 255 characters"),
    ("number", "ten", "must be a number"),
    ("number", "1e3", "must be a number"),
    ("number", "NaN", "must be a number"),
    ("number", "0.00001", "must have at most 4 decimal places"),
    ("number", "10000000000001", "must be between -1,000,000,000,000 and 1,000,000,000,000"),
    ("date", "01/02/2000", "must be a date written YYYY-MM-DD"),
    ("date", "2001-02-29", "2001-02-29 is not a calendar date"),
    ("text", True, "must be text"),
])
def test_bad_values_say_why(type_, raw, message):
    with pytest.raises(PropertyError) as caught:
        properties.parse_value(type_, raw)
    assert str(caught.value) == message


def test_values_are_written_all_or_none_and_report_what_changed(db, shop):
    properties.add(db, shop.id, "Points", "number")
    someone = person(db, shop)
    assert properties.set_values(db, someone, {"birthday": "1990-07-04", "Language": "en"}) == ["birthday",
                                                                                                "language"]
    with pytest.raises(ValuesInvalid) as caught:
        properties.set_values(db, someone, {"language": "fr", "points": "many", "birthday": "1990-13-01",
                                            "colour": "red"})
    assert caught.value.errors == {"points": "Points must be a number",
                                   "birthday": "Birthday 1990-13-01 is not a calendar date",
                                   "colour": "there is no property “colour”"}
    assert properties.values(db, shop.id, someone.id) == {"birthday": dt.date(1990, 7, 4), "language": "en"}
    assert properties.set_values(db, someone, {"birthday": "1990-07-04", "language": "", "points": "12"}) \
        == ["language", "points"]
    db.commit()
    assert properties.values(db, shop.id, someone.id) == {"birthday": dt.date(1990, 7, 4), "points": Decimal("12")}
    row = db.scalar(select(SubscriberProperty).where(SubscriberProperty.name_key == "birthday"))
    assert (row.anniversary, row.text_value, row.number_value) == (704, None, None)


def test_recheck_goes_through_the_pending_recheck_path(db, shop, segment_rechecks):
    someone = person(db, shop)
    properties.set_values(db, someone, {"language": "en"})
    db.commit()
    properties.recheck(shop.id, [someone.id])
    assert segment_rechecks == [(shop.id, [someone.id])]
