"""The segment builder in Chromium: build the Kinnekt example segment, watch the count, save, find it in the list."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from tests.factories import add
from tests.test_segments_web import EXAMPLE, person, segment
from kinnekt.casefold import fold
from kinnekt.db import Session
from kinnekt.models import Customer, LineItem, Order, Product, Segment, Subscriber
from kinnekt.segments import rules

pytestmark = pytest.mark.browser

NAME = "Ordered in last 30 days and spent over $25"


@pytest.fixture
def store(shop, other_shop):
    """A handful of subscribers: who ordered lately, who spent over $25 (one of another shop)."""
    return {
        "ada": person(shop, "+12125550101", name="Ada", spent="120.00", orders=3, last_order_days=3),  # both
        "bob": person(shop, "+12125550102", name="Bob", spent="20.00", orders=1, last_order_days=10),  # recent
        "cy": person(shop, "+12125550103", name="Cy", spent="80.00", orders=2, last_order_days=60),  # spent
        "dee": person(shop, "+12125550104", name="Dee"),  # never ordered
        "mallory": person(other_shop, "+12125550199", name="Mallory", spent="900", orders=9, last_order_days=1),
    }




def row(page, index: int):
    return page.locator("#segment-builder .rule-row").nth(index)


def settled(page):
    """Wait until htmx has set up what it swapped in: it does so after its settle delay (0 in base.html's htmx
    config: the next task after the swap), and an input used before then would not send its request."""
    expect(page.locator("#segment-builder .htmx-added")).to_have_count(0)


def redraw(page, index: int, part: str, *args, **kwargs):
    """Pick an option of a rule row's select that changes the row's inputs; wait for the new row, set up."""
    shape = row(page, index).locator("input[name$='-shape']")
    before = shape.input_value()
    row(page, index).locator(f"select[name$='-{part}']").select_option(*args, **kwargs)
    expect(shape).not_to_have_value(before)
    settled(page)


def test_build_the_example_segment_and_find_it_in_the_list(open_page, app, shop, store):
    page = open_page("/segments/new")
    count = page.locator("#segment-preview-count")
    expect(count).to_have_text("4")  # the starting rule, "Subscription source is Any source", matches everyone
    page.locator("#segment-name").fill(NAME)

    redraw(page, 0, "field", "last_order_created")
    expect(row(page, 0).locator("select[name$='-op']")).to_have_value("eq")
    expect(row(page, 0).locator("select[name$='-value']")).to_have_value("last_30_days")
    expect(count).to_have_text("2")  # Ada and Bob ordered in the last 30 days

    page.get_by_role("button", name="Add rule").click()
    expect(page.locator("#segment-builder .rule-row")).to_have_count(2)
    settled(page)
    redraw(page, 1, "field", "money_spent")
    expect(row(page, 1).locator("input[name$='-value']")).to_be_visible()
    row(page, 1).locator("select[name$='-op']").select_option("gt")
    expect(row(page, 1).locator("select[name$='-op']")).to_have_value("gt")
    row(page, 1).locator("input[name$='-value']").fill("25")
    expect(count).to_have_text("1")  # and only Ada spent over $25
    expect(page.locator("#segment-preview")).to_contain_text("+12125550101")
    expect(page.locator("#segment-preview")).not_to_contain_text("+12125550199")

    page.get_by_role("button", name="Create segment").click()
    expect(page.locator("#segments-page")).to_be_visible()
    assert page.url.endswith("/segments/")
    expect(page.locator("#toasts")).to_contain_text(f"Created “{NAME}”")
    listed = page.locator("#segments-page tbody tr", has_text=NAME)
    expect(listed).to_have_count(1)
    listed.get_by_text("Show more").click()
    expect(listed).to_contain_text("Last order was in the last 30 days")
    expect(listed).to_contain_text("AND Money spent is greater than $25.00")

    saved = Session.scalars(select(Segment).where(Segment.name == NAME)).one()
    assert saved.definition == rules.normalise(EXAMPLE) and saved.shop_id == shop.id
    assert app.extensions["kinnekt_queue"].drain()
    # The row polls its build state every second until an answer says the build is over: leaving before that
    # aborts a poll (a failed request).
    expect(listed.locator(".segment-build")).to_have_attribute("data-build-status", "done")
    open_page("/segments/")
    expect(page.locator("#segments-page tbody tr", has_text=NAME).locator("td.numeric")).to_have_text("1")


@pytest.fixture
def held_builds(monkeypatch):
    """Segment builds wait until the test sets the returned event, so the list is seen while they are pending."""
    import functools
    import threading

    from kinnekt.segments import tasks as segment_tasks
    gate = threading.Event()
    real = segment_tasks.build_segment

    @functools.wraps(real)
    def held(*args, **kwargs):
        gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(segment_tasks, "build_segment", held)
    yield gate
    gate.set()


def test_a_new_segment_row_updates_itself_when_its_build_finishes(open_page, shop, store, held_builds):
    page = open_page("/segments/new")
    expect(page.locator("#segment-preview-count")).to_have_text("4")
    page.locator("#segment-name").fill("Everyone here")
    page.get_by_role("button", name="Create segment").click()
    listed = page.locator("#segments-page tbody tr", has_text="Everyone here")
    expect(listed.locator("td.numeric")).to_have_text("Counting…")  # not "0" while the build waits
    expect(listed).to_contain_text("Counting members…")
    expect(listed).not_to_contain_text("Not built yet")

    held_builds.set()  # the build finishes: the row shows it without a reload
    expect(listed.locator("td.numeric")).to_have_text("4")
    expect(listed.locator("[data-build-status]")).to_have_attribute("data-build-status", "done")
    expect(listed).not_to_contain_text("Counting")
    expect(listed.locator("[hx-trigger^='every']")).to_have_count(0)  # and stops asking

    held_builds.clear()  # a suggested segment: the same
    suggestion = "Ordered in last 30 days and spent over $25"
    page.get_by_role("button", name=f"Create {suggestion}").click()
    suggested = page.locator("#segments-page tbody tr", has_text=suggestion)
    expect(suggested.locator("td.numeric")).to_have_text("Counting…")
    held_builds.set()
    expect(suggested.locator("td.numeric")).to_have_text("1")  # Ada
    expect(suggested.locator("[data-build-status]")).to_have_attribute("data-build-status", "done")


def test_rules_speak_the_merchants_words(open_page, shop, other_shop, store):
    for phone, country, carrier in (("+12125550101", "US", "T-Mobile"), ("+12125550102", "US", "T-Mobile"),
                                    ("+12125550103", "US", "Verizon Wireless")):
        Session.execute(Subscriber.__table__.update().where(Subscriber.phone == phone)  # with its folded copy
                        .values(country=country, carrier=carrier, carrier_folded=fold(carrier)))
    add(Subscriber(shop_id=shop.id, phone="+4915112345678", status="subscribed", source="manual", country="DE",
                   carrier="Telekom"),
        Subscriber(shop_id=other_shop.id, phone="+4915112345679", status="subscribed", source="manual",
                   country="DE", carrier="Their carrier"))
    page = open_page("/segments/new")
    count = page.locator("#segment-preview-count")
    expect(count).to_have_text("5")

    # Phone country: a list of country names; the rule keeps the ISO code
    redraw(page, 0, "field", "country")
    country = row(page, 0).get_by_label("Country", exact=True)
    expect(country).to_have_value("")
    expect(row(page, 0).locator(".node-errors")).to_be_empty()  # nothing chosen yet is not wrong yet
    expect(country.locator("option", has_text="Germany")).to_have_attribute("value", "DE")
    country.select_option(label="Germany")
    expect(count).to_have_text("1")

    # Carrier: the carriers found among the shop's subscribers (never another shop's)
    redraw(page, 0, "field", "carrier")
    carriers = row(page, 0).locator("datalist option")
    expect(carriers).to_have_count(3)
    assert sorted(carriers.evaluate_all("options => options.map(o => o.value)")) == [
        "T-Mobile", "Telekom", "Verizon Wireless"]
    row(page, 0).get_by_label("Carrier").fill("T-Mobile")
    expect(count).to_have_text("2")  # Ada and Bob

    # Custom range: no error before anything is typed
    redraw(page, 0, "field", "last_order_created")
    redraw(page, 0, "value", "custom")
    expect(row(page, 0).locator("input[type=date]")).to_have_count(2)
    expect(page.locator("#segment-preview")).to_contain_text("Fill in every rule")
    expect(row(page, 0).locator(".node-errors")).to_be_empty()

    # A range the wrong way round: said in words, not "lo must be less than hi"
    redraw(page, 0, "field", "money_spent")
    redraw(page, 0, "op", "between")
    row(page, 0).get_by_label("Lowest value").fill("50")
    row(page, 0).get_by_label("Highest value").fill("10")
    errors = row(page, 0).locator(".node-errors")
    expect(errors).to_have_text("Value must go from a lower number to a higher one")
    expect(page.locator("#segment-builder")).not_to_contain_text("lo must")
    expect(page.locator("#segment-builder")).not_to_contain_text("ISO 3166")


def test_removing_a_rule_while_its_preview_is_on_the_way_logs_no_error(open_page, shop, store, monkeypatch):
    import threading

    from kinnekt.web import segments as segments_web
    two = segment(shop, EXAMPLE, "Two rules")
    gate = threading.Event()
    gate.set()
    real = segments_web._preview_of

    def held(*args, **kwargs):
        gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(segments_web, "_preview_of", held)
    page = open_page(f"/segments/{two.id}/edit")
    count = page.locator("#segment-preview-count")
    expect(count).to_have_text("1")
    gate.clear()  # the next previews wait on the server, with both rules in them
    with page.expect_request("**/segments/preview"):
        row(page, 1).locator("input[name$='-value']").fill("1.555")  # too many decimals: its error is on the way
    row(page, 1).get_by_role("button", name="Remove rule").click()
    expect(page.locator("#segment-builder .rule-row")).to_have_count(1)
    gate.set()  # the answer names the removed rule's error slot: nothing to put it in, and no console error
    expect(count).to_have_text("2")  # Ada and Bob ordered in the last 30 days
    expect(page.locator("#segment-builder .node-errors").first).to_be_empty()


def test_errors_show_beside_the_rule_and_products_are_picked(open_page, shop, other_shop, store):
    customer = Session.get(Customer, store["cy"].customer_id)
    order = add(Order(shop_id=shop.id, shopify_id=501, customer_id=customer.id, created_at=customer.last_order_at))
    add(LineItem(shop_id=shop.id, order_id=order.id, shopify_id=601, product_id=11, title="Blue shirt"))
    add(Product(shop_id=shop.id, shopify_id=11, title="Blue shirt"), Product(shop_id=shop.id, shopify_id=12,
                                                                              title="Red shirt"),
        Product(shop_id=other_shop.id, shopify_id=13, title="Their shirt"))
    page = open_page("/segments/new")
    count = page.locator("#segment-preview-count")
    expect(count).to_have_text("4")

    redraw(page, 0, "field", "number_of_orders")
    row(page, 0).locator("input[name$='-value']").fill("1.5")
    expect(row(page, 0).locator(".node-errors")).to_have_text("Value must be a whole number")
    expect(page.locator("#segment-preview")).to_contain_text("Fix the highlighted rules")
    row(page, 0).locator("input[name$='-value']").fill("2")
    expect(count).to_have_text("1")  # Cy has two orders (Ada three, Bob one)
    expect(row(page, 0).locator(".node-errors")).to_be_empty()

    redraw(page, 0, "field", "ordered_product")
    search = row(page, 0).locator("input[type=search]")
    search.fill("shirt")
    options = row(page, 0).locator(".picker__option")
    expect(options).to_have_text(["Blue shirt", "Red shirt"])  # never another shop's
    options.first.click()
    tags = row(page, 0).locator(".tag")
    expect(tags).to_have_text(["Blue shirt"])
    expect(count).to_have_text("1")  # Cy bought the blue shirt
    search.fill("red")
    expect(options).to_have_text(["Red shirt"])
    options.first.click()
    expect(tags).to_have_text(["Blue shirt", "Red shirt"])
    tags.first.get_by_role("button", name="Remove Blue shirt").click()
    expect(tags).to_have_text(["Red shirt"])
    expect(count).to_have_text("0")

    page.locator("#segment-name").fill("Bought the red shirt")
    page.get_by_role("button", name="Create segment").click()
    expect(page.locator("#segments-page tbody tr", has_text="Bought the red shirt")).to_contain_text("Manual")
    saved = Session.scalars(select(Segment).where(Segment.name == "Bought the red shirt")).one()
    assert saved.definition == {"match": "all", "rules": [{"field": "ordered_product", "op": "eq", "value": ["12"]}]}


def test_delete_confirms_in_a_dialog(open_page, shop):
    segment(shop, EXAMPLE, "Old promo")
    segment(shop, EXAMPLE, "Keep me")
    page = open_page("/segments/")
    page.get_by_role("button", name="Actions for Old promo").click()
    page.get_by_role("menuitem", name="Delete Old promo").click()
    dialog = page.locator("#segment-delete-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Nothing uses this segment")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    page.get_by_role("button", name="Actions for Old promo").click()
    page.get_by_role("menuitem", name="Delete Old promo").click()
    page.locator("#segment-delete-dialog").get_by_role("button", name="Delete segment").click()
    expect(page.locator("#segments-page tbody tr")).to_have_count(1)
    expect(page.locator("#segments-page")).not_to_contain_text("Old promo")
    expect(page.locator("#toasts")).to_contain_text("Deleted “Old promo”")
    assert re.search(r"/segments/", page.url)


def test_export_csv_downloads_with_a_fresh_session_token(open_page, shop, store):
    segment(shop, EXAMPLE, "Recent spenders")
    page = open_page("/segments/")
    page.get_by_role("button", name="Actions for Recent spenders").click()
    with page.expect_download() as caught:
        page.get_by_role("menuitem", name="Export the members of Recent spenders as CSV").click()
    download = caught.value
    assert download.suggested_filename == "Recent-spenders-members.csv"
    lines = open(download.path(), encoding="utf-8").read().splitlines()
    assert lines[0].startswith("phone,") and [line.split(",")[0] for line in lines[1:]] == ["+12125550101"]


def test_line_item_quantity_takes_a_fraction_in_the_builder(open_page, shop, store):
    """The contract: `quantity gte 2.5` is a valid rule (the same as `gte 3`); the builder previews and saves it."""
    for who, quantity in (("ada", 3), ("cy", 2)):
        customer = Session.get(Customer, store[who].customer_id)
        order = add(Order(shop_id=shop.id, shopify_id=700 + quantity, customer_id=customer.id,
                          created_at=customer.last_order_at))
        add(LineItem(shop_id=shop.id, order_id=order.id, shopify_id=800 + quantity, customer_id=customer.id,
                     title="Socks", quantity=quantity))
    page = open_page("/segments/new")
    count = page.locator("#segment-preview-count")
    expect(count).to_have_text("4")
    redraw(page, 0, "field", "line_items")  # each choice redraws the row: wait until htmx has set it up
    redraw(page, 0, "attribute", "quantity")
    value = row(page, 0).locator("input[name$='-value']")
    expect(value).to_be_visible()
    expect(value).to_have_attribute("step", "any")
    row(page, 0).locator("select[name$='-op']").select_option("gte")
    settled(page)
    value.fill("2.5")
    expect(count).to_have_text("1")  # Ada bought 3 pairs; Cy's 2 is not at least 2.5
    expect(row(page, 0).locator(".node-errors")).to_be_empty()
    page.locator("#segment-name").fill("Bought socks by the handful")
    page.get_by_role("button", name="Create segment").click()
    expect(page.locator("#segments-page tbody tr", has_text="Bought socks by the handful")).to_be_visible()
    saved = Session.scalars(select(Segment).where(Segment.name == "Bought socks by the handful")).one()
    assert saved.definition == {"match": "all", "rules": [
        {"field": "line_items", "attribute": "quantity", "op": "gte", "value": 2.5}]}


def test_lifecycle_stages_are_chosen_by_name_one_or_several(open_page, shop, store):
    """Lifecycle stage: a select of stage names for is / is not, a multiple select for is any of; saved as the
    contract's words."""
    for who, stage in (("ada", "loyal"), ("bob", "high_potential"), ("cy", "dormant")):
        Session.execute(Customer.__table__.update().where(Customer.id == store[who].customer_id)
                        .values(lifecycle_stage=stage))
    Session.commit()
    page = open_page("/segments/new")
    count = page.locator("#segment-preview-count")
    expect(count).to_have_text("4")
    redraw(page, 0, "field", "lifecycle_stage")
    stage = row(page, 0).locator("select[name$='-value']")
    expect(stage.locator("option", has_text="High potential")).to_have_attribute("value", "high_potential")
    expect(count).to_have_text("1")  # "is Loyal", the first stage: Ada
    redraw(page, 0, "op", "in")
    several = row(page, 0).locator("select[multiple]")
    expect(several).to_be_visible()
    several.select_option(["dormant", "high_potential"])
    expect(count).to_have_text("2")  # Bob and Cy
    page.locator("#segment-name").fill("Worth a nudge")
    page.get_by_role("button", name="Create segment").click()
    expect(page.locator("#segments-page tbody tr", has_text="Worth a nudge")).to_be_visible()
    saved = Session.scalars(select(Segment).where(Segment.name == "Worth a nudge")).one()
    assert saved.definition == {"match": "all", "rules": [
        {"field": "lifecycle_stage", "op": "in", "value": ["high_potential", "dormant"]}]}
