"""Template filters, list pages and the component macros."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from flask import g, render_template_string
from sqlalchemy import select

from kinnekt.models import Shop, Subscriber
from kinnekt.tenancy import bind_shop
from kinnekt.web.templating import Page, clock, local_time, money, number, page_number, paginate

UTC = dt.timezone.utc


@pytest.fixture
def in_shop(app):
    """A request context whose g.shop is an unsaved shop in New York that sells in Swedish kronor."""
    with app.test_request_context("/"):
        g.shop = Shop(domain="zone.myshopify.com", timezone="America/New_York", currency="SEK")
        yield g.shop


def render(source: str, **context) -> str:
    return render_template_string('{% import "_components.html" as ui %}' + source, **context).strip()


# --- filters ----------------------------------------------------------------------------------------------

def test_money_uses_the_shops_currency(in_shop):
    assert money(Decimal("1234.5")) == "1,234.50 SEK"
    assert money(Decimal("1234.5"), "USD") == "$1,234.50"
    assert money(Decimal("-3.456"), "GBP") == "-£3.46"
    assert money(0, "CAD") == "CA$0.00"
    assert money(None) == "—"


def test_money_without_a_shop_is_dollars(app):
    with app.test_request_context("/"):
        assert money(Decimal("9.99")) == "$9.99"


def test_local_time_is_in_the_shops_zone(in_shop):
    instant = dt.datetime(2026, 3, 5, 2, 5, tzinfo=UTC)
    assert local_time(instant) == "Mar 4, 2026, 9:05 PM"
    assert local_time(dt.datetime(2026, 7, 1, 16, 0, tzinfo=UTC)) == "Jul 1, 2026, 12:00 PM"  # summer time
    assert local_time(instant, "%Y-%m-%d %H:%M") == "2026-03-04 21:05"
    assert local_time(None) == "—"


def test_local_time_falls_back_to_utc_for_an_unknown_zone(in_shop):
    in_shop.timezone = "Mars/Olympus_Mons"
    assert local_time(dt.datetime(2026, 3, 5, 0, 5, tzinfo=UTC)) == "Mar 5, 2026, 12:05 AM"


@pytest.mark.parametrize("minutes,shown", [(0, "12:00 AM"), (8 * 60, "8:00 AM"), (12 * 60, "12:00 PM"),
                                           (21 * 60 + 30, "9:30 PM"), (24 * 60, "12:00 AM"), (None, "—")])
def test_clock(minutes, shown):
    assert clock(minutes) == shown


def test_number():
    assert number(1234567) == "1,234,567"
    assert number(None) == "0"


@pytest.mark.parametrize("raw,page", [(None, 1), ("", 1), ("3", 3), ("abc", 1), ("0", 1), ("-2", 1), ("1.5", 1)])
def test_page_number(raw, page):
    assert page_number(raw) == page


# --- pages of a list --------------------------------------------------------------------------------------

def test_page_positions():
    page = Page(items=["a", "b"], number=3, size=2, total=5, params={"q": "x"})
    assert page.pages == 3 and page.has_prev and not page.has_next
    assert (page.first_index, page.last_index) == (5, 6)
    assert page.args(2) == {"q": "x", "page": 2}
    empty = Page(items=[], number=1, size=50, total=0)
    assert empty.pages == 1 and not empty.has_prev and not empty.has_next
    assert (empty.first_index, empty.last_index) == (0, 0)


def test_paginate_counts_and_clamps_within_the_bound_shop(db, shop, other_shop):
    start = dt.datetime(2026, 1, 1, tzinfo=UTC)
    db.add_all([Subscriber(shop_id=shop.id, phone=f"+1212555{i:04d}", source="manual",
                           created_at=start + dt.timedelta(minutes=i)) for i in range(5)])
    db.add(Subscriber(shop_id=other_shop.id, phone="+12125559999", source="manual"))
    db.commit()
    bind_shop(shop.id)
    statement = select(Subscriber).order_by(Subscriber.created_at)
    first = paginate(statement, 1, 2)
    assert first.total == 5 and first.pages == 3
    assert [s.phone for s in first.items] == ["+12125550000", "+12125550001"]
    last = paginate(statement, 99, 2)
    assert last.number == 3 and [s.phone for s in last.items] == ["+12125550004"]


# --- macros -----------------------------------------------------------------------------------------------

def test_badge_and_banner(app):
    with app.test_request_context("/"):
        assert render('{{ ui.badge("Sent", "success") }}') == '<span class="badge badge--success">Sent</span>'
        assert render('{{ ui.badge("Draft") }}') == '<span class="badge">Draft</span>'
        html = render('{% call ui.banner("Heads up", tone="critical") %}Body <b>text</b>{% endcall %}')
        assert 'class="banner banner--critical"' in html and 'role="alert"' in html
        assert '<p class="banner__title">Heads up</p>' in html and "Body <b>text</b>" in html
        assert "icon--alert-circle" in html


def test_page_header_with_and_without_actions(app):
    with app.test_request_context("/"):
        bare = render('{{ ui.page_header("Segments") }}')
        assert '<h1 class="page-header__title">Segments</h1>' in bare and "page-header__actions" not in bare
        with_actions = render('{% call ui.page_header("Segments", "Sub") %}{{ ui.button("New", variant="primary") }}'
                              '{% endcall %}')
        assert 'page-header__actions" id="page-actions"><button class="button button--primary" type="button">' \
            in with_actions
        assert '<p class="page-header__subtitle">Sub</p>' in with_actions
        assert "ui-title-bar" not in with_actions  # outside the admin the page shows its own title


def test_page_header_in_the_admin_fills_its_title_bar(app, monkeypatch):
    monkeypatch.setitem(app.config, "APP_BRIDGE_ENABLED", True)
    with app.test_request_context("/"):
        html = render('{% call ui.page_header("Segments") %}{{ ui.button("New", variant="primary") }}{% endcall %}')
        assert '<ui-title-bar title="Segments" data-page-actions="page-actions"></ui-title-bar>' in html
        assert '<ui-title-bar title="Segments"></ui-title-bar>' in render('{{ ui.page_header("Segments") }}')


def test_button_link_and_attributes(app):
    with app.test_request_context("/"):
        link = render('{{ ui.button("Open", href="/x?a=1&b=2") }}')
        assert link == '<a class="button button--secondary" href="/x?a=1&amp;b=2"><span>Open</span></a>'
        action = render('{{ ui.button("End", variant="critical", attrs={"hx-post": "/c/1/end"}) }}')
        assert action == ('<button class="button button--critical" type="button" hx-post="/c/1/end">'
                          '<span>End</span></button>')
        assert " disabled" in render('{{ ui.button("Wait", href="/x", disabled=true) }}')


def test_text_field_shows_its_error_and_escapes_values(app):
    with app.test_request_context("/"):
        html = render('{{ ui.text_field("name", "Name", value=v, error="Name is taken") }}', v='"><script>')
        assert 'class="field field--error"' in html
        assert 'aria-invalid="true" aria-describedby="field-name-error"' in html
        assert '<p class="field__error" id="field-name-error">' in html and "Name is taken" in html
        assert "<script>" not in html and 'value="&#34;&gt;&lt;script&gt;"' in html
        ok = render('{{ ui.text_field("name", "Name", help="Shown to customers") }}')
        assert "field--error" not in ok and 'aria-describedby="field-name-help"' in ok


def test_select_marks_the_selected_option(app):
    with app.test_request_context("/"):
        html = render('{{ ui.select("status", "Status", [("", "All"), ("sent", "Sent")], "sent") }}')
        assert '<option value="sent" selected>Sent</option>' in html
        assert '<option value="">All</option>' in html


def test_index_table_rows_and_empty_state(app):
    with app.test_request_context("/"):
        source = ('{% call(row) ui.index_table(["Name", ("Count", "numeric")], rows, label="Things", '
                  'empty_heading="Nothing yet", empty_text="Add one.") %}<td>{{ row.0 }}</td>'
                  '<td class="numeric">{{ row.1 }}</td>{% endcall %}')
        html = render(source, rows=[("A", 1), ("B", 2)])
        assert '<th scope="col" class="numeric">Count</th>' in html
        assert html.count("<tr>") == 3 and "<td>B</td>" in html
        empty = render(source, rows=[])
        assert "<table" not in empty and "Nothing yet" in empty and "Add one." in empty


def test_pagination_links_keep_params_and_can_target_a_partial(app):
    with app.test_request_context("/"):
        page = Page(items=[1, 2], number=2, size=2, total=5, params={"q": "ada"})
        plain = render('{{ ui.pagination(page, "subscribers.index", noun="rows") }}', page=page)
        assert "3–4 of 5 rows" in plain and "Page 2 of 3" in plain
        assert 'href="/subscribers/?q=ada&amp;page=1" rel="prev"' in plain
        assert 'href="/subscribers/?q=ada&amp;page=3" rel="next"' in plain and "hx-get" not in plain
        targeted = render('{{ ui.pagination(page, "subscribers.index", target="tbl") }}', page=page)
        assert 'hx-target="#tbl" hx-swap="outerHTML" hx-push-url="true"' in targeted
        single = Page(items=[1], number=1, size=2, total=1)
        one = render('{{ ui.pagination(page, "subscribers.index") }}', page=single)
        assert "1–1 of 1 items" in one and "Page 1 of 1" not in one


def test_modal_has_a_confirm_action_and_closers(app):
    with app.test_request_context("/"):
        html = render('{% call ui.modal("end-campaign", "End campaign?", "End campaign", "critical", '
                      '{"hx-post": "/campaigns/1/end"}) %}Messages not sent yet are cancelled.{% endcall %}')
        assert html.startswith('<dialog class="modal" id="end-campaign" aria-labelledby="end-campaign-title">')
        assert '<h2 class="modal__title" id="end-campaign-title">End campaign?</h2>' in html
        assert '<button class="button button--critical" type="button" hx-post="/campaigns/1/end">' in html
        assert html.count("data-dialog-close") == 2 and "Messages not sent yet are cancelled." in html


def test_progress_bar_is_native(app):
    with app.test_request_context("/"):
        html = render('{{ ui.progress_bar(40, 200, "Sending") }}')
        assert '<progress class="progress__bar" value="40" max="200" aria-label="Sending">' in html
        assert "style=" not in html


def test_summary_row_and_metric(app):
    with app.test_request_context("/"):
        assert "<dt>Sender</dt>" in render('{{ ui.summary_row("Sender", "KINNEKT") }}')
        called = render('{% call ui.summary_row("Opt-in") %}{{ ui.badge("On", "success") }}{% endcall %}')
        assert '<dd><span class="badge badge--success">On</span>' in called
        metric = render('{{ ui.metric("Sent", 12) }}')
        assert '<p class="metric__value">12</p>' in metric
