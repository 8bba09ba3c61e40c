"""Validating segment definitions: every error with its path, normalisation, and properties over random trees."""
from __future__ import annotations

import copy
import datetime as dt
import json
import re
import string
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kinnekt.models import StaticList
from kinnekt.segments import DefinitionError, has_relative_time, normalise, validate
from kinnekt.segments.rules import FIELDS, MAX_LIST_ITEMS
from tests import factories
from tests.factories import rule, where


def errors_of(definition) -> list[dict]:
    """The errors `normalise` reports for a definition that must be rejected."""
    with pytest.raises(DefinitionError) as caught:
        normalise(definition)
    return caught.value.errors


def only_error(definition) -> tuple[str, str]:
    errors = errors_of(definition)
    assert len(errors) == 1, errors
    return errors[0]["path"], errors[0]["message"]


# ---------------------------------------------------------------------------------------------- shape

@pytest.mark.parametrize("definition,path,message", [
    ([], "", 'must be a group {"match": "all" | "any", "rules": [...]}'),
    (rule("country", "eq", "US"), "", 'the definition must be a group {"match": "all" | "any", "rules": [...]}, '
                                      'not a rule'),
    ({"rules": [rule("country", "eq", "US")]}, "match", "is required"),
    ({"match": "some", "rules": [rule("country", "eq", "US")]}, "match", "must be 'all' or 'any'"),
    ({"match": "all"}, "rules", "is required"),
    ({"match": "all", "rules": {}}, "rules", "must be a list"),
    ({"match": "all", "rules": []}, "rules", "a group holds 1 to 50 items (this one has 0)"),
    (where(rule("country", "eq", "US"), "vip"), "rules[1]",
     'must be a rule {"field", "op", "value"} or a group {"match", "rules"}'),
    (where({}), "rules[0]", 'must be a rule {"field", "op", "value"} or a group {"match", "rules"}'),
    ({**where(rule("country", "eq", "US")), "name": "x"}, "name", "unknown key 'name'"),
    (where(where(rule("country", "eq", "US"), match="nope")), "rules[0].match", "must be 'all' or 'any'"),
    (where({**rule("country", "eq", "US"), "colour": "red"}), "rules[0].colour", "unknown key 'colour'"),
])
def test_shape_errors(definition, path, message):
    assert only_error(definition) == (path, message)


def test_group_holds_at_most_50_items():
    assert only_error(where(*[rule("sent_count", "gt", i) for i in range(51)])) \
        == ("rules", "a group holds 1 to 50 items (this one has 51)")
    assert normalise(where(*[rule("sent_count", "gt", i) for i in range(50)]))


def test_groups_nest_four_deep():
    leaf = rule("country", "eq", "US")
    four_deep = where(where(where(where(leaf))))
    assert normalise(four_deep) == four_deep
    five_deep = where(where(where(where(where(leaf)))))
    assert only_error(five_deep) == ("rules[0].rules[0].rules[0].rules[0]",
                                     "groups nest at most 4 deep (the root is depth 1)")


def test_at_most_100_rules_in_all():
    block = where(*[rule("sent_count", "gt", i) for i in range(50)])
    assert normalise(where(block, block))  # exactly 100
    assert only_error(where(block, block, rule("country", "eq", "US"))) \
        == ("rules[2]", "a definition holds at most 100 rules")


def test_every_error_is_reported_at_once():
    definition = {"match": "either", "rules": [
        rule("money_spent", "gt", "lots"),
        {"field": "colour", "op": "eq", "value": "red"},
        where(rule("country", "in", ["US", "XX", 5]), {**rule("tags", "contains", "vip"), "within": "today"}),
    ]}
    assert errors_of(definition) == [
        {"path": "match", "message": "must be 'all' or 'any'"},
        {"path": "rules[0].value", "message": "must be a number or a decimal string"},
        {"path": "rules[1].field", "message": "unknown field 'colour'"},
        {"path": "rules[2].rules[0].value[1]", "message": "must be an ISO 3166-1 alpha-2 country code"},
        {"path": "rules[2].rules[0].value[2]", "message": "must be an ISO 3166-1 alpha-2 country code"},
        {"path": "rules[2].rules[1].within", "message": "'within' is only allowed on event rules"},
    ]
    with pytest.raises(DefinitionError, match="rules\\[0\\].value: must be a number"):
        normalise(definition)


# ---------------------------------------------------------------------------------------------- rules

@pytest.mark.parametrize("bad_rule,path,message", [
    ({"field": 3, "op": "eq", "value": 1}, "rules[0].field", "must be a field name"),
    (rule("money_spent", "contains", 5), "rules[0].op",
     "'contains' is not an operator of money_spent (allowed: eq, neq, lt, lte, gt, gte, between)"),
    ({"field": "money_spent", "value": 5}, "rules[0].op", "is required"),
    ({"field": "money_spent", "op": "gt"}, "rules[0].value", "is required"),
    (rule("tags", "eq", "vip"), "rules[0].op", "'eq' is not an operator of tags (allowed: contains, not_contains)"),
    (rule("last_clicked", "never", "2026-01-01"), "rules[0].value", "'never' takes no value; omit 'value'"),
    ({**rule("country", "eq", "US"), "attribute": "price"}, "rules[0].attribute",
     "'attribute' is only allowed on line_items and property rules"),
    ({**rule("country", "eq", "US"), "at_least": 2}, "rules[0].at_least", "'at_least' is only allowed on event rules"),
    ({**rule("country", "eq", "US"), "event": "clicked_link"}, "rules[0].event",
     "'event' is only allowed on event rules"),
])
def test_rule_errors(bad_rule, path, message):
    assert only_error(where(bad_rule)) == (path, message)


@pytest.mark.parametrize("field,op,value,message", [
    ("money_spent", "gt", True, "must be a number or a decimal string"),
    ("money_spent", "gt", "25.001.1", "must be a number or a decimal string"),
    ("money_spent", "gt", float("nan"), "must be a finite number"),
    ("money_spent", "gt", "25.00001", "must have at most 4 decimal places"),
    ("money_spent", "gt", 10**13, "must be between -1,000,000,000,000 and 1,000,000,000,000"),
    ("average_money_spent", "between", [30, 20], "lo must be less than hi"),
    ("average_money_spent", "between", [20, 20], "lo must be less than hi"),
    ("total_discounts", "between", [1], "must be a list of two numbers [lo, hi]"),
    ("total_discounts", "between", 5, "must be a list of two numbers [lo, hi]"),
    ("number_of_orders", "eq", 2.5, "must be a whole number"),
    ("sent_count", "gt", "3", "must be a number"),
    ("clicks_count", "between", [1, 1], "lo must be less than hi"),
    ("subscribed_at", "before", "2026-1-5", "must be a date written YYYY-MM-DD"),
    ("subscribed_at", "after", "2026-02-30", "2026-02-30 is not a calendar date"),
    ("subscribed_at", "eq", "last_week",
     'must be one of all_time, today, yesterday, last_7_days, last_30_days, last_90_days or {"from", "to"}'),
    ("subscribed_at", "within_last_days", 0, "must be a whole number of at least 1"),
    ("subscribed_at", "more_than_days_ago", 1.5, "must be a whole number"),
    ("subscription_source", "eq", "sms",
     "must be one of all, keyword, mobile_popup, shareable_link, checkout, import, manual"),
    ("keyword", "eq", "   ", "must not be empty"),
    ("keyword", "neq", 5, "must be a string"),
    ("country", "eq", "USA", "must be an ISO 3166-1 alpha-2 country code"),
    ("country", "in", [], "must not be empty"),
    ("country", "not_in", "US", "must be a list"),
    ("carrier", "in", ["x"] * (MAX_LIST_ITEMS + 1), f"holds at most {MAX_LIST_ITEMS} items"),
    ("fulfillment_status", "eq", "partial", "must be one of fulfilled, unfulfilled, partially_fulfilled"),
    ("payment_status", "neq", "expired", "must be one of authorized, paid, partially_refunded, partially_paid, "
                                         "pending, refunded, unpaid, voided"),
    ("order_cancelled", "eq", True, "must be one of yes, no"),
    ("ordered_product", "eq", "123", "must be a list"),
    ("segment", "in", "first", "must be an id"),
    ("list", "not_in", 0, "is not a valid id"),
])
def test_value_errors(field, op, value, message):
    assert only_error(where(rule(field, op, value))) == ("rules[0].value", message)


def test_errors_inside_values_name_the_element():
    assert only_error(where(rule("ordered_product", "eq", ["1", "gid://shopify/Product/2"]))) \
        == ("rules[0].value[1]", "must be an id: a string of digits")
    assert only_error(where(rule("ordered_collection", "neq", [0]))) == ("rules[0].value[0]", "is not a valid id")
    assert only_error(where(rule("money_spent", "between", [1, "x"]))) \
        == ("rules[0].value[1]", "must be a number or a decimal string")
    assert only_error(where(rule("last_order_created", "eq", {"from": "2026-02-01", "to": "2026-01-31"}))) \
        == ("rules[0].value.from", "must not be after 'to'")
    assert only_error(where(rule("last_order_created", "eq", {"from": "2026-02-01"}))) \
        == ("rules[0].value.to", "is required")
    assert only_error(where(rule("last_order_created", "neq", {"from": "2026-02-01", "to": "2026-02-01",
                                                                "tz": "UTC"}))) \
        == ("rules[0].value.tz", "unknown key 'tz'")
    assert only_error(where(rule("last_order_created", "eq", {"from": "2026-02-01", "to": "02/03/2026"}))) \
        == ("rules[0].value.to", "must be a date written YYYY-MM-DD")


def test_quantity_takes_any_number_and_numbers_go_up_to_10_to_the_12():
    """The contract: `quantity` and `price` take any number; a value may be refused only beyond what is stored."""
    assert normalise(where(rule("line_items", "gte", 2.5, attribute="quantity")))["rules"][0]["value"] == 2.5
    assert normalise(where(rule("line_items", "gte", 3.0, attribute="quantity")))["rules"][0]["value"] == 3
    assert normalise(where(rule("money_spent", "gt", 10**12)))["rules"][0]["value"] == str(10**12)
    assert normalise(where(rule("average_money_spent", "lt", "-999999999999.5")))["rules"][0]["value"] \
        == "-999999999999.5"
    assert normalise(where(rule("sent_count", "gte", 10**12)))["rules"][0]["value"] == 10**12


def test_text_values_fold_as_str_casefold():
    """Case-insensitive values are folded (`GRÖSSE` → `grösse`); keywords keep their upper case where it folds alike."""
    assert normalise(where(rule("city", "eq", " ZÜRICH ")))["rules"][0]["value"] == "zürich"
    assert normalise(where(rule("tags", "contains", "GROẞE")))["rules"][0]["value"] == "grosse"
    assert normalise(where(rule("keyword", "eq", "grün")))["rules"][0]["value"] == "GRÜN"
    assert normalise(where(rule("keyword", "eq", "ı")))["rules"][0]["value"] == "ı"  # 'I' would fold to 'i'


def test_line_items_errors():
    assert only_error(where(rule("line_items", "eq", "1"))) == ("rules[0].attribute", "is required")
    assert only_error(where(rule("line_items", "eq", "1", attribute="sku"))) \
        == ("rules[0].attribute", "must be one of product_id, variant_id, product_title, variant_title, quantity, "
                                  "price")
    assert only_error(where(rule("line_items", "between", [1, 3], attribute="quantity"))) \
        == ("rules[0].op", "'between' is not an operator of line_items quantity (allowed: eq, neq, lt, lte, gt, gte)")
    assert only_error(where(rule("line_items", "contains", "1", attribute="product_id"))) \
        == ("rules[0].op", "'contains' is not an operator of line_items product_id (allowed: eq, neq)")
    assert only_error(where(rule("line_items", "gt", "1.5", attribute="quantity"))) \
        == ("rules[0].value", "must be a number")
    assert only_error(where(rule("line_items", "eq", ["1"], attribute="variant_id"))) \
        == ("rules[0].value", "must be an id: a string of digits")


def test_lifecycle_stage_errors():
    assert only_error(where({"field": "lifecycle_stage", "op": "eq", "value": "vip"})) == (
        "rules[0].value", "must be one of loyal, high_potential, nurture_needed, dormant, churned")
    assert only_error(where({"field": "previous_lifecycle_stage", "op": "in", "value": ["loyal", "lost"]})) == (
        "rules[0].value[1]", "must be one of loyal, high_potential, nurture_needed, dormant, churned")
    assert only_error(where({"field": "lifecycle_stage", "op": "in", "value": []})) == (
        "rules[0].value", "must not be empty")
    assert only_error(where({"field": "lifecycle_stage", "op": "gt", "value": "loyal"}))[0] == "rules[0].op"
    assert normalise(where({"field": "lifecycle_stage", "op": "in", "value": ["loyal", "loyal", "dormant"]})) \
        == where({"field": "lifecycle_stage", "op": "in", "value": ["loyal", "dormant"]})


def test_expected_next_order_is_a_date_field():
    assert only_error(where({"field": "expected_next_order", "op": "within_last_days", "value": 0})) == (
        "rules[0].value", "must be a whole number of at least 1")
    assert normalise(where({"field": "expected_next_order", "op": "never"})) \
        == where({"field": "expected_next_order", "op": "never"})


def test_event_errors():
    def event(**keys):
        return where({"field": "event", "op": "performed", "event": "placed_order", **keys})

    assert only_error(where({"field": "event", "op": "performed"})) == ("rules[0].event", "is required")
    assert only_error(event(event="bought")) == (
        "rules[0].event", "must be one of placed_order, received_sms, clicked_link, started_checkout, subscribed, "
        "received_discount, used_discount, visited, viewed_product, viewed_collection, added_to_cart")
    assert only_error(event(op="did")) == (
        "rules[0].op", "'did' is not an operator of event (allowed: performed, not_performed)")
    assert only_error(event(value=1)) == ("rules[0].value", "'performed' takes no value; omit 'value'")
    assert only_error(event(at_least=0)) == ("rules[0].at_least", "must be a whole number of at least 1")
    assert only_error(event(within={"last_days": 0})) == ("rules[0].within.last_days",
                                                          "must be a whole number of at least 1")
    assert only_error(event(within={"last_days": 3, "from": "2026-01-01"})) == ("rules[0].within.from",
                                                                                "unknown key 'from'")
    assert only_error(event(within="forever")) == (
        "rules[0].within", 'must be one of all_time, today, yesterday, last_7_days, last_30_days, last_90_days or '
                           '{"from", "to"} or {"last_days": N}')
    assert only_error(event(attribute="price")) == ("rules[0].attribute",
                                                    "'attribute' is only allowed on line_items and property rules")


# ---------------------------------------------------------------------------------------------- normalisation

def test_normalisation():
    given_ = where(
        rule("money_spent", "gt", 25.01),
        rule("total_discounts", "between", ["5.50", 10]),
        rule("average_money_spent", "eq", "0.00"),
        rule("number_of_orders", "gte", 2.0),
        rule("keyword", "eq", " summer "),
        rule("country", "in", ["us", "CA", "US"]),
        rule("carrier", "eq", " Verizon "),
        rule("city", "neq", "  New York "),
        rule("tags", "contains", "VIP "),
        rule("ordered_product", "eq", [123, "0456", "123"]),
        rule("line_items", "eq", 99, attribute="variant_id"),
        rule("line_items", "contains", " Blue ", attribute="product_title"),
        rule("line_items", "lte", "19.990", attribute="price"),
        rule("segment", "in", "12"),
        {"field": "event", "op": "not_performed", "event": "clicked_link"},
    )
    assert normalise(given_)["rules"] == [
        rule("money_spent", "gt", "25.01"),
        rule("total_discounts", "between", ["5.5", "10"]),
        rule("average_money_spent", "eq", "0"),
        rule("number_of_orders", "gte", 2),
        rule("keyword", "eq", "SUMMER"),
        rule("country", "in", ["US", "CA"]),
        rule("carrier", "eq", "verizon"),
        rule("city", "neq", "new york"),
        rule("tags", "contains", "vip"),
        rule("ordered_product", "eq", ["123", "456"]),
        rule("line_items", "eq", "99", attribute="variant_id"),
        rule("line_items", "contains", "blue", attribute="product_title"),
        rule("line_items", "lte", "19.99", attribute="price"),
        rule("segment", "in", 12),
        {"field": "event", "op": "not_performed", "event": "clicked_link", "within": "all_time", "at_least": 1},
    ]


def test_normalise_does_not_change_its_input():
    given_ = where(rule("tags", "contains", "VIP"))
    before = copy.deepcopy(given_)
    normalise(given_)
    assert given_ == before


# ---------------------------------------------------------------------------------------------- references

def make_segment(db, shop, definition, name):
    return factories.segment(db, shop, definition, name=name, kind="manual", commit=False)


def make_list(db, shop, name="VIPs"):
    row = StaticList(shop_id=shop.id, name=name)
    db.add(row)
    db.flush()
    return row


def validation_errors(db, shop, definition, segment_id=None) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as caught:
        validate(definition, shop_id=shop.id, session=db, segment_id=segment_id)
    return [(e["path"], e["message"]) for e in caught.value.errors]


def test_segment_and_list_ids_must_exist_in_the_same_shop(db, shop, other_shop):
    mine = make_segment(db, shop, where(rule("country", "eq", "US")), "Americans")
    theirs = make_segment(db, other_shop, where(rule("country", "eq", "US")), "Americans")
    my_list, their_list = make_list(db, shop), make_list(db, other_shop)
    ok = where(rule("segment", "in", mine.id), rule("list", "not_in", str(my_list.id)))
    assert validate(ok, shop_id=shop.id, session=db) == where(rule("segment", "in", mine.id),
                                                               rule("list", "not_in", my_list.id))
    assert validation_errors(db, shop, where(rule("segment", "in", theirs.id), rule("list", "in", their_list.id),
                                             rule("segment", "not_in", 999_999))) == [
        ("rules[0].value", f"there is no segment {theirs.id} in this shop"),
        ("rules[1].value", f"there is no list {their_list.id} in this shop"),
        ("rules[2].value", "there is no segment 999999 in this shop"),
    ]


def test_a_segment_cannot_refer_to_itself(db, shop):
    me = make_segment(db, shop, where(rule("country", "eq", "US")), "Me")
    assert validation_errors(db, shop, where(rule("segment", "not_in", me.id)), segment_id=me.id) \
        == [("rules[0].value", "a segment cannot refer to itself")]


def test_a_segment_cannot_refer_to_itself_through_others(db, shop):
    me = make_segment(db, shop, where(rule("country", "eq", "US")), "Me")
    middle = make_segment(db, shop, where(rule("segment", "in", me.id)), "Middle")
    top = make_segment(db, shop, where(where(rule("tags", "contains", "x"), rule("segment", "not_in", middle.id))),
                       "Top")
    assert validation_errors(db, shop, where(rule("country", "eq", "US"), rule("segment", "in", top.id)),
                             segment_id=me.id) \
        == [("rules[1].value", f"segment {top.id} refers back to this segment ({top.id} → {middle.id} → this segment)")]
    # Saving another segment that uses them is fine.
    assert validate(where(rule("segment", "in", top.id)), shop_id=shop.id, session=db, segment_id=None)


def test_a_reference_into_a_stored_loop_is_refused(db, shop):
    first = make_segment(db, shop, where(rule("country", "eq", "US")), "First")
    second = make_segment(db, shop, where(rule("segment", "in", first.id)), "Second")
    first.definition = where(rule("segment", "in", second.id))
    db.flush()
    assert validation_errors(db, shop, where(rule("segment", "in", first.id))) == [
        ("rules[0].value", f"segment {first.id} leads to a loop of segments ({first.id} → {second.id} → {first.id})")]


# ---------------------------------------------------------------------------------------------- relative time

@pytest.mark.parametrize("definition,relative", [
    (where(rule("money_spent", "gt", 5)), False),
    (where(rule("last_clicked", "eq", "all_time")), False),
    (where(rule("last_clicked", "eq", {"from": "2026-01-01", "to": "2026-01-02"})), False),
    (where(rule("last_clicked", "before", "2026-01-01"), rule("last_clicked", "after", "2026-01-01")), False),
    (where(rule("last_clicked", "never")), False),
    (where(rule("last_clicked", "neq", "today")), True),
    (where(where(rule("country", "eq", "US"), rule("subscribed_at", "within_last_days", 3))), True),
    (where(rule("subscribed_at", "more_than_days_ago", 3)), True),
    (where({"field": "event", "op": "performed", "event": "clicked_link"}), False),
    (where({"field": "event", "op": "performed", "event": "clicked_link", "within": "all_time"}), False),
    (where({"field": "event", "op": "performed", "event": "clicked_link",
            "within": {"from": "2026-01-01", "to": "2026-01-02"}}), False),
    (where({"field": "event", "op": "performed", "event": "clicked_link", "within": "last_90_days"}), True),
    (where({"field": "event", "op": "performed", "event": "clicked_link", "within": {"last_days": 2}}), True),
])
def test_has_relative_time(definition, relative):
    assert has_relative_time(definition) is relative


def test_has_relative_time_follows_segment_rules(db, shop):
    timeless = make_segment(db, shop, where(rule("country", "eq", "US")), "Timeless")
    recent = make_segment(db, shop, where(rule("subscribed_at", "within_last_days", 7)), "Recent")
    via_recent = make_segment(db, shop, where(rule("segment", "not_in", recent.id)), "Via")
    assert has_relative_time(where(rule("segment", "in", timeless.id)), session=db, shop_id=shop.id) is False
    assert has_relative_time(where(rule("segment", "in", via_recent.id)), session=db, shop_id=shop.id) is True
    assert has_relative_time(where(rule("segment", "in", timeless.id))) is True  # no session: assume it may


# ---------------------------------------------------------------------------------------------- the contract's table

NUMBER_OPS = ["eq", "neq", "lt", "lte", "gt", "gte"]
DATE_OPS = ["eq", "neq", "before", "after", "within_last_days", "more_than_days_ago", "never"]
DATE_FIELDS = ["last_order_created", "first_order_created", "customer_created", "subscribed_at",
               "last_received_sms", "last_clicked", "expected_next_order", "last_visit"]
MONEY_FIELDS = ["money_spent", "average_money_spent", "total_discounts"]
WHOLE_FIELDS = ["number_of_orders", "sent_count", "clicks_count"]
CONTRACT_OPS = {
    **{f: DATE_OPS for f in DATE_FIELDS},
    **{f: NUMBER_OPS + ["between"] for f in MONEY_FIELDS + WHOLE_FIELDS},
    "subscription_source": ["eq", "neq"], "keyword": ["eq", "neq"],
    "country": ["eq", "neq", "in", "not_in"], "carrier": ["eq", "neq", "in", "not_in"],
    "city": ["eq", "neq"], "tags": ["contains", "not_contains"],
    "fulfillment_status": ["eq", "neq"], "payment_status": ["eq", "neq"], "order_cancelled": ["eq"],
    "ordered_product": ["eq", "neq"], "ordered_collection": ["eq", "neq"],
    "lifecycle_stage": ["eq", "neq", "in", "not_in"], "previous_lifecycle_stage": ["eq", "neq", "in", "not_in"],
    "event": ["performed", "not_performed"], "segment": ["in", "not_in"], "list": ["in", "not_in"],
    "shopify_segment": ["in", "not_in"],
}
LINE_ITEM_OPS = {"product_id": ["eq", "neq"], "variant_id": ["eq", "neq"],
                 "product_title": ["eq", "neq", "contains", "not_contains"],
                 "variant_title": ["eq", "neq", "contains", "not_contains"],
                 "quantity": NUMBER_OPS, "price": NUMBER_OPS}
PROPERTY_OPS = {"birthday": DATE_OPS + ["is_set", "anniversary_today", "anniversary_next_days",
                                         "anniversary_this_month"],
                "language": ["eq", "neq", "contains", "not_contains", "is_set", "is_not_set"]}
"""The operators of the built-in profile properties (a date and a text), by name."""
ALL_OPS = sorted({op for ops in [*CONTRACT_OPS.values(), *PROPERTY_OPS.values()] for op in ops}
                 | {"is", "like", "EQ", ""})


def allowed_ops(node) -> list[str]:
    """The operators the contract allows for a rule (per attribute for line_items and profile properties)."""
    if node["field"] == "property":
        return PROPERTY_OPS[node["attribute"].strip().casefold()]
    return LINE_ITEM_OPS[node["attribute"]] if node["field"] == "line_items" else CONTRACT_OPS[node["field"]]


def test_the_whitelist_is_the_contracts_table():
    assert {name: sorted(spec.ops) for name, spec in FIELDS.items() if name not in ("line_items", "property")} \
        == {name: sorted(ops) for name, ops in CONTRACT_OPS.items()}
    assert {a: sorted(ops) for a, ops in FIELDS["line_items"].attributes.items()} \
        == {a: sorted(ops) for a, ops in LINE_ITEM_OPS.items()}


# ---------------------------------------------------------------------------------------------- strategies

NAMED_PERIODS = ["all_time", "today", "yesterday", "last_7_days", "last_30_days", "last_90_days"]
EVENTS = ["placed_order", "received_sms", "clicked_link", "started_checkout", "subscribed", "received_discount",
          "used_discount", "visited", "viewed_product", "viewed_collection", "added_to_cart"]
EVENT_FILTERS = {"viewed_product": ["products", "collections"], "added_to_cart": ["products", "collections"],
                 "viewed_collection": ["collections"]}
FOLLOWERS = {"viewed_product": ["placed_order", "added_to_cart", "started_checkout"],
             "added_to_cart": ["placed_order", "started_checkout"]}
STAGES = ["loyal", "high_potential", "nurture_needed", "dormant", "churned"]
STAGE_FIELDS = ("lifecycle_stage", "previous_lifecycle_stage")

money = st.one_of(st.integers(-10**6, 10**6), st.integers(-10**8, 10**8).map(lambda n: n / 100),
                  st.decimals(-10**6, 10**6, places=4).map(str))
whole = st.one_of(st.integers(-10**6, 10**6), st.integers(-1000, 1000).map(float))
days = st.integers(1, 3650)
words = st.text(string.ascii_letters + string.digits + " -_%'", min_size=1, max_size=12).filter(str.strip)
shopify_ids = st.one_of(st.integers(1, 2**63 - 1), st.integers(1, 2**63 - 1).map(str))
countries = st.sampled_from(["US", "ca", "Gb", "FR", "nz", "DE", "MX"])
dates = st.dates(dt.date(2000, 1, 1), dt.date(2100, 12, 31))


def ordered_pairs(element):
    """[lo, hi] with lo < hi."""
    return (st.tuples(element, element)
            .filter(lambda pair: Decimal(str(pair[0])) != Decimal(str(pair[1])))
            .map(lambda pair: sorted(pair, key=lambda v: Decimal(str(v)))))


periods = st.one_of(st.sampled_from(NAMED_PERIODS), st.tuples(dates, dates).map(sorted).map(
    lambda pair: {"from": pair[0].isoformat(), "to": pair[1].isoformat()}))


def number_rules(field, element, *, with_between=True):
    ops = NUMBER_OPS + (["between"] if with_between else [])
    return st.sampled_from(ops).flatmap(lambda op: (ordered_pairs(element) if op == "between" else element).map(
        lambda value: rule(field, op, value)))


def choice_rules(field, ops, values):
    return st.builds(rule, st.just(field), st.sampled_from(ops), values)


@st.composite
def date_rules(draw):
    field, op = draw(st.sampled_from(DATE_FIELDS)), draw(st.sampled_from(DATE_OPS))
    if op == "never":
        return rule(field, op)
    value = {"eq": periods, "neq": periods, "before": dates.map(str), "after": dates.map(str)}.get(op, days)
    return rule(field, op, draw(value))


@st.composite
def line_item_rules(draw):
    attribute = draw(st.sampled_from(sorted(LINE_ITEM_OPS)))
    ops = LINE_ITEM_OPS[attribute]
    if attribute in ("product_id", "variant_id"):
        found = rule("line_items", draw(st.sampled_from(ops)), draw(shopify_ids))
    elif attribute.endswith("title"):
        found = rule("line_items", draw(st.sampled_from(ops)), draw(words))
    else:
        found = draw(number_rules("line_items", whole if attribute == "quantity" else money, with_between=False))
    return {**found, "attribute": attribute}


@st.composite
def event_rules(draw):
    out = {"field": "event", "event": draw(st.sampled_from(EVENTS)),
           "op": draw(st.sampled_from(["performed", "not_performed"]))}
    if draw(st.booleans()):
        out["within"] = draw(st.one_of(periods, days.map(lambda n: {"last_days": n})))
    if draw(st.booleans()):
        out["at_least"] = draw(st.integers(1, 20))
    for key in EVENT_FILTERS.get(out["event"], ()):
        if draw(st.booleans()):
            out[key] = draw(st.lists(shopify_ids, min_size=1, max_size=4))
    if out["event"] in FOLLOWERS and draw(st.booleans()):
        out["not_followed_by"] = draw(st.sampled_from(FOLLOWERS[out["event"]]))
    return out


@st.composite
def property_rules(draw):
    """A rule on a built-in profile property: the birthday (a date) or the language (text)."""
    attribute = draw(st.sampled_from(["birthday", "Birthday ", "language", "LANGUAGE"]))
    op = draw(st.sampled_from(PROPERTY_OPS[attribute.strip().casefold()]))
    values = {"eq": periods, "neq": periods, "before": dates.map(str), "after": dates.map(str),
              "within_last_days": days, "more_than_days_ago": days, "anniversary_next_days": st.integers(1, 366)}
    if attribute.strip().casefold() == "language":
        values = {op: words for op in ("eq", "neq", "contains", "not_contains")}
    return rule("property", op, draw(values[op]) if op in values else None, attribute=attribute)


def leaf_rules(segment_ids, list_ids):
    """Any valid rule of the contract."""
    def id_forms(ids):
        return st.sampled_from(ids).flatmap(lambda i: st.sampled_from([i, str(i)]))

    return st.one_of(
        date_rules(),
        *(number_rules(f, money) for f in MONEY_FIELDS),
        *(number_rules(f, whole) for f in WHOLE_FIELDS),
        choice_rules("subscription_source", ["eq", "neq"], st.sampled_from(
            ["all", "keyword", "mobile_popup", "shareable_link", "checkout", "import", "manual"])),
        choice_rules("keyword", ["eq", "neq"], words),
        choice_rules("country", ["eq", "neq"], countries),
        choice_rules("country", ["in", "not_in"], st.lists(countries, min_size=1, max_size=4)),
        choice_rules("carrier", ["eq", "neq"], words),
        choice_rules("carrier", ["in", "not_in"], st.lists(words, min_size=1, max_size=4)),
        choice_rules("city", ["eq", "neq"], words),
        choice_rules("tags", ["contains", "not_contains"], words),
        choice_rules("fulfillment_status", ["eq", "neq"],
                     st.sampled_from(["fulfilled", "unfulfilled", "partially_fulfilled"])),
        choice_rules("payment_status", ["eq", "neq"], st.sampled_from(
            ["authorized", "paid", "partially_refunded", "partially_paid", "pending", "refunded", "unpaid",
             "voided"])),
        choice_rules("order_cancelled", ["eq"], st.sampled_from(["yes", "no"])),
        *(choice_rules(f, ["eq", "neq"], st.sampled_from(STAGES)) for f in STAGE_FIELDS),
        *(choice_rules(f, ["in", "not_in"], st.lists(st.sampled_from(STAGES), min_size=1, max_size=3, unique=True))
          for f in STAGE_FIELDS),
        choice_rules("ordered_product", ["eq", "neq"], st.lists(shopify_ids, min_size=1, max_size=5)),
        choice_rules("ordered_collection", ["eq", "neq"], st.lists(shopify_ids, min_size=1, max_size=5)),
        line_item_rules(),
        event_rules(),
        choice_rules("segment", ["in", "not_in"], id_forms(segment_ids)),
        choice_rules("list", ["in", "not_in"], id_forms(list_ids)),
        property_rules(),
    )


@st.composite
def definitions(draw, segment_ids=(1, 2), list_ids=(1, 2)):
    """A valid definition: random groups (depth ≤ 4, ≤ 6 items each) with at most 100 rules in all."""
    leaves = leaf_rules(list(segment_ids), list(list_ids))
    budget = [draw(st.integers(1, 100))]

    def group(depth):
        items = []
        for _ in range(draw(st.integers(1, 6))):
            if budget[0] == 0:
                break
            if depth < 4 and budget[0] > 1 and draw(st.integers(0, 4)) == 0:
                items.append(group(depth + 1))
            else:
                budget[0] -= 1
                items.append(draw(leaves))
        if not items:  # the budget ran out: one more rule (the first budget draw left room for it)
            items.append(draw(leaves))
        return {"match": draw(st.sampled_from(["all", "any"])), "rules": items}

    return group(1)


def nodes(definition, path="", depth=1):
    """(path, node, depth) of every group (its own depth) and rule (the depth of the group holding it)."""
    yield path, definition, depth
    for i, item in enumerate(definition["rules"]):
        item_path = f"{path}.rules[{i}]" if path else f"rules[{i}]"
        if "field" in item:
            yield item_path, item, depth
        else:
            yield from nodes(item, item_path, depth + 1)


def rules_in(definition):
    return [(p, n, d) for p, n, d in nodes(definition) if "field" in n]


def groups_in(definition):
    return [(p, n, d) for p, n, d in nodes(definition) if "field" not in n]


def node_at(definition, path):
    node = definition
    for index in re.findall(r"\[(\d+)\]", path):
        node = node["rules"][int(index)]
    return node


def key_path(path, key):
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------------------------------------- properties

@pytest.fixture
def references(db, shop):
    """Two segments and two lists of the shop, for valid `segment` / `list` rules."""
    segments = [make_segment(db, shop, where(rule("country", "eq", "US")), f"Segment {i}").id for i in range(2)]
    lists = [make_list(db, shop, f"List {i}").id for i in range(2)]
    return segments, lists


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_valid_definitions_are_accepted_and_normalising_is_idempotent(db, shop, references, data):
    definition = data.draw(definitions(*references))
    once = validate(definition, shop_id=shop.id, session=db)
    assert validate(once, shop_id=shop.id, session=db) == once
    assert normalise(definition) == once
    assert json.loads(json.dumps(once)) == once  # storable in the JSON column as it is
    assert sum(1 for _ in rules_in(once)) == sum(1 for _ in rules_in(definition))


MUTATIONS = ["unknown_field", "wrong_op", "bad_value", "unknown_key", "too_deep", "too_many_rules",
             "too_many_items", "empty_group"]


def mutate(data, definition) -> tuple[dict, str, bool, str | None]:
    """(mutated copy, path of the error it must cause, whether that path is exact, the message if fixed)."""
    mutated = copy.deepcopy(definition)
    kind = data.draw(st.sampled_from(MUTATIONS))
    if kind in ("unknown_field", "wrong_op", "bad_value"):
        path, _, _ = data.draw(st.sampled_from(rules_in(definition)))
        node = node_at(mutated, path)
        if kind == "unknown_field":
            node["field"] = data.draw(st.sampled_from(["colour", "Money_Spent", "tag", ""]))
            return mutated, key_path(path, "field"), True, None
        if kind == "wrong_op":
            node["op"] = data.draw(st.sampled_from([op for op in ALL_OPS if op not in allowed_ops(node)]))
            return mutated, key_path(path, "op"), True, None
        if node["field"] == "event":
            node["at_least"] = data.draw(st.sampled_from([True, 0, "2", 1.5, None]))
            return mutated, key_path(path, "at_least"), True, None
        if node["op"] == "never":
            node["value"] = data.draw(st.sampled_from([None, 1, "2026-01-01"]))
            return mutated, key_path(path, "value"), True, None
        node["value"] = data.draw(st.sampled_from([True, None, {"nope": 1}, [[]]]))
        return mutated, key_path(path, "value"), False, None
    if kind == "unknown_key":
        path, _, _ = data.draw(st.sampled_from(list(nodes(definition))))
        key = data.draw(st.sampled_from(["colour", "name", "Match", "values"]))
        node_at(mutated, path)[key] = 1
        return mutated, key_path(path, key), True, f"unknown key '{key}'"
    if kind == "too_deep":
        path, _, depth = data.draw(st.sampled_from(rules_in(definition)))
        node = node_at(mutated, path)
        wrapped = dict(node)
        for _ in range(5 - depth):  # the outermost new group sits at depth+1, the innermost at 5
            wrapped = where(wrapped)
        node.clear()
        node.update(wrapped)
        return mutated, path + ".rules[0]" * (4 - depth), True, "groups nest at most 4 deep (the root is depth 1)"
    if kind == "too_many_rules":
        path, _, _ = data.draw(st.sampled_from([(p, n, d) for p, n, d in groups_in(definition) if d <= 3]))
        block = where(*[rule("sent_count", "gt", i) for i in range(40)])
        node_at(mutated, path)["rules"].extend(copy.deepcopy(block) for _ in range(3))
        return mutated, path, False, "a definition holds at most 100 rules"
    path, _, _ = data.draw(st.sampled_from(groups_in(definition)))
    items = node_at(mutated, path)["rules"]
    if kind == "too_many_items":
        items.extend(rule("sent_count", "gt", i) for i in range(51 - len(items)))
        return mutated, key_path(path, "rules"), True, "a group holds 1 to 50 items (this one has 51)"
    items.clear()
    return mutated, key_path(path, "rules"), True, "a group holds 1 to 50 items (this one has 0)"


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_mutated_definitions_are_rejected_at_the_mutated_node(data):
    definition = data.draw(definitions())
    normalise(definition)
    mutated, path, exact, message = mutate(data, definition)
    with pytest.raises(DefinitionError) as caught:
        normalise(mutated)

    def points_there(error_path: str) -> bool:
        if exact or not path:
            return error_path == path or (not exact and not path)
        return error_path == path or error_path.startswith((path + ".", path + "["))

    errors = caught.value.errors
    assert any(points_there(e["path"]) and message in (None, e["message"]) for e in errors), (path, errors)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.sampled_from(["all", "any", "eq", "in", "money_spent", "segment", "event", "today", "2026-01-01"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["match", "rules", "field", "op", "value", "attribute", "event", "within", "at_least",
                         "from", "to", "last_days", "x"]), children, max_size=5),
    max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(anything=json_values)
def test_any_json_is_either_normalised_or_refused_with_errors(anything):
    try:
        normalise(anything)
    except DefinitionError as exc:
        assert exc.errors and all(set(e) == {"path", "message"} for e in exc.errors)


# ---------------------------------------------------------------------------------------------- profile properties

def prop(name, op, value=None):
    return rule("property", op, value, attribute=name)


def test_property_rules_of_the_built_ins_are_checked_by_type_without_the_database():
    assert normalise(where(prop(" Birthday ", "anniversary_next_days", 7.0)))["rules"][0] == {
        "field": "property", "attribute": "birthday", "op": "anniversary_next_days", "value": 7}
    assert normalise(where(prop("language", "eq", " DEUTSCH ")))["rules"][0]["value"] == "deutsch"
    assert normalise(where(prop("birthday", "anniversary_today")))["rules"][0] == {
        "field": "property", "attribute": "birthday", "op": "anniversary_today"}
    assert only_error(where(prop("birthday", "gt", 3))) == (
        "rules[0].op", "'gt' is not an operator of the date property 'birthday' (allowed: eq, neq, before, after, "
                       "within_last_days, more_than_days_ago, never, is_set, anniversary_today, anniversary_next_days, "
                       "anniversary_this_month)")
    assert only_error(where(prop("language", "anniversary_today"))) == (
        "rules[0].op", "'anniversary_today' is not an operator of the text property 'language' (allowed: eq, neq, "
                       "contains, not_contains, is_set, is_not_set)")
    assert only_error(where(prop("birthday", "before", "1990-02-30"))) == (
        "rules[0].value", "1990-02-30 is not a calendar date")
    assert only_error(where(prop("birthday", "anniversary_next_days", 367))) == (
        "rules[0].value", "must be at most 366")
    assert only_error(where(prop("birthday", "anniversary_this_month", 3))) == (
        "rules[0].value", "'anniversary_this_month' takes no value; omit 'value'")
    assert only_error(where(prop("language", "eq", 5))) == ("rules[0].value", "must be a string")
    assert only_error(where(rule("property", "eq", "x"))) == ("rules[0].attribute", "is required")
    assert only_error(where(prop(3, "eq", "x"))) == ("rules[0].attribute", "must be the name of a profile property")


def test_custom_property_rules_need_the_shops_properties_to_be_checked():
    lenient = normalise(where(prop("Shoe size", "gt", "nine")))
    assert lenient["rules"][0] == {"field": "property", "attribute": "shoe size", "op": "gt", "value": "nine"}
    assert only_error(where(prop("Shoe size", "performed"))) [0] == "rules[0].op"
    with pytest.raises(DefinitionError) as caught:
        normalise(where(prop("Shoe size", "gt", "nine")), properties={"shoe size": "number"})
    assert caught.value.errors == [{"path": "rules[0].value", "message": "must be a number or a decimal string"}]
    assert normalise(where(prop("Shoe size", "between", [9, "10.5"])), properties={"shoe size": "number"}
                     )["rules"][0]["value"] == ["9", "10.5"]
    with pytest.raises(DefinitionError) as caught:
        normalise(where(prop("Hat size", "eq", 3)), properties={"shoe size": "number", "birthday": "date"})
    assert caught.value.errors == [{"path": "rules[0].attribute",
                                    "message": "there is no property 'Hat size' in this shop (it has: birthday, "
                                               "shoe size)"}]


def test_validate_checks_property_rules_against_the_shops_properties(db, shop, other_shop):
    from kinnekt.subscribers import properties
    properties.add(db, shop.id, "Points", "number")
    properties.add(db, other_shop.id, "Club", "text")
    assert validate(where(prop("POINTS", "gte", 10)), shop_id=shop.id, session=db)["rules"][0] == {
        "field": "property", "attribute": "points", "op": "gte", "value": "10"}
    with pytest.raises(DefinitionError) as caught:
        validate(where(prop("points", "contains", "1"), prop("club", "eq", "x")), shop_id=shop.id, session=db)
    assert [e["path"] for e in caught.value.errors] == ["rules[0].op", "rules[1].attribute"]


def test_relative_date_property_rules_are_swept():
    assert has_relative_time(where(prop("birthday", "anniversary_today")))
    assert has_relative_time(where(prop("birthday", "within_last_days", 3)))
    assert has_relative_time(where(prop("birthday", "eq", "last_7_days")))
    assert not has_relative_time(where(prop("birthday", "before", "2000-01-01")))
    assert not has_relative_time(where(prop("language", "eq", "de")))
