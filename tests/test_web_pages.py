"""The nav pages: each shows the shop's own rows (never another shop's), as a page or an htmx partial."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from decimal import Decimal

import pytest

from kinnekt import defaults
from kinnekt.config import PROJECT_ROOT
from kinnekt.db import Session, utcnow
from kinnekt.models import (Attribution, Campaign, Click, Customer, Keyword, Link, Message, Order, OutboxMessage,
                            Segment)
from tests import factories
from tests.factories import add as _add

PAGES = {
    "/": "home-page",
    "/segments/": "segments-page",
    "/campaigns/": "campaigns-page",
    "/subscribers/": "subscribers-page",
    "/keywords/": "keywords-page",
    "/settings/": "settings-page",
}
NAV_LABELS = ["Home", "Segments", "Campaigns", "Subscribers", "Keywords", "Settings"]
UTC = dt.timezone.utc


# --- helpers ----------------------------------------------------------------------------------------------

def _subscriber(shop, phone, **fields):
    fields.setdefault("subscribed_at", utcnow())
    return factories.new_subscriber(shop, phone=phone, **fields)


@pytest.fixture
def page_headers(shop, token_for):
    """A full (non-htmx) request with a valid token: the whole page."""
    return {"Authorization": f"Bearer {token_for(shop.domain)}"}


@pytest.fixture
def demo_mode(app, monkeypatch):
    """Demo mode for one test (tokens are still verified: the test app has a real secret)."""
    monkeypatch.setitem(app.config, "DEMO_MODE", True)


def _get(client, url, headers):
    response = client.get(url, headers=headers)
    return response, response.get_data(as_text=True)


def _rows(html: str) -> int:
    """Body rows of the page's table (the header row is in <thead>)."""
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return body.count("<tr>")


# --- every page -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url,root_id", PAGES.items())
def test_htmx_request_gets_only_the_partial(client, auth, url, root_id):
    response, html = _get(client, url, auth)
    assert response.status_code == 200
    assert html.lstrip().startswith(f'<section id="{root_id}"')
    assert "<html" not in html and "frame__nav" not in html


@pytest.mark.parametrize("url,root_id", PAGES.items())
def test_full_request_gets_the_page_with_navigation(client, page_headers, url, root_id):
    response, html = _get(client, url, page_headers)
    assert response.status_code == 200
    assert html.startswith("<!doctype html>")
    assert f'id="{root_id}"' in html and '<main id="main"' in html
    for label in NAV_LABELS:
        assert f"<span>{label}</span>" in html
    assert html.count('aria-current="page"') == 1
    current = re.search(r'href="([^"]+)"\s+aria-current="page"', html)
    assert current and current.group(1) == url


@pytest.mark.parametrize("url", PAGES)
def test_headers_vary_on_htmx_and_allow_only_the_admin_to_frame(client, auth, shop, url):
    response = client.get(url, headers=auth)
    assert "HX-Request" in response.headers["Vary"]
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors " in csp and "script-src 'self' https://cdn.shopify.com;" in csp
    assert f"https://{shop.domain}" in csp and "https://admin.shopify.com" in csp


@pytest.mark.parametrize("url", list(PAGES) + ["/outbox/"])
def test_pages_refuse_a_missing_or_forged_token(app, client, shop, url):
    from kinnekt.shopify import session_token
    assert client.get(url, headers={"HX-Request": "true"}).status_code == 401
    forged = session_token.mint(shop.domain, app.config["SHOPIFY_API_KEY"], "not-the-app-secret-0123456789abcdef")
    response = client.get(url, headers={"HX-Request": "true", "Authorization": f"Bearer {forged}"})
    assert response.status_code == 401 and shop.domain not in response.get_data(as_text=True)


def test_base_layout_is_csp_friendly_and_loads_vendored_htmx(client, page_headers):
    html = client.get("/segments/", headers=page_headers).get_data(as_text=True)
    config = re.search(r"""<meta name="htmx-config" content='([^']*)'>""", html)
    # no eval; our own indicator styles; swapped content live at once (a change right after a swap is never lost)
    assert config and json.loads(config.group(1)) == {"allowEval": False, "includeIndicatorStyles": False,
                                                      "defaultSettleDelay": 0}
    assert '<body hx-ext="response-targets" hx-boost="true"' in html
    assert 'hx-target-error="#global-error"' in html and 'id="global-error"' in html
    assert 'id="toasts"' in html
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts and all(" src=" in tag for tag in scripts)  # no inline scripts
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers
    order = [re.search(pattern, html).start() for pattern in (
        r"vendor/htmx-2\.0\.11\.min\.js", r"vendor/htmx-ext-response-targets-2\.0\.4\.min\.js",
        r"js/shopify-htmx\.js", r"js/app\.js")]
    assert order == sorted(order)
    # Outside the admin (tests, demo): no App Bridge, no CDN, no admin nav menu.
    assert "cdn.shopify.com" not in html and "<s-app-nav>" not in html and "<ui-title-bar" not in html
    assert 'id="app-nav"' in html and "data-embedded" not in html


def test_embedded_layout_puts_app_bridge_first_and_adds_the_admin_nav(app, client, page_headers, monkeypatch):
    monkeypatch.setitem(app.config, "APP_BRIDGE_ENABLED", True)
    html = client.get("/campaigns/", headers=page_headers).get_data(as_text=True)
    head = html.split("<head>", 1)[1]
    assert head.lstrip().startswith('<meta name="shopify-api-key" content="test-api-key">')
    first_script = re.search(r"<script\b[^>]*>", head).group(0)
    assert first_script == '<script src="https://cdn.shopify.com/shopifycloud/app-bridge.js">'
    menu = html.split("<s-app-nav>", 1)[1].split("</s-app-nav>", 1)[0]
    assert 'href="/" rel="home"' in menu  # Home is the app's own entry in the admin sidebar, not a second one
    others = [label for label in NAV_LABELS if label != "Home"]
    assert [label for label in NAV_LABELS if f">{label}</s-link>" in menu] == others
    assert "Outbox" not in menu
    # The admin draws the navigation and the title bar: no second sidebar inside the iframe.
    assert 'id="app-nav"' not in html and '<ui-title-bar title="Campaigns"' in html


def test_every_static_asset_a_page_references_exists(client, page_headers, app, monkeypatch):
    monkeypatch.setitem(app.config, "DEMO_MODE", True)
    seen = set()
    for url in list(PAGES) + ["/outbox/"]:
        html = client.get(url, headers=page_headers).get_data(as_text=True)
        seen.update(re.findall(r'(?:src|href)="(/static/[^"]+)"', html))
    assert {"/static/css/app.css", "/static/js/app.js", "/static/js/shopify-htmx.js"} <= seen
    for path in sorted(seen):
        response = client.get(path)
        assert response.status_code == 200, path
        response.close()
    css = (PROJECT_ROOT / "static" / "css" / "app.css").read_text()
    icons = re.findall(r'url\("\.\./([^"]+)"\)', css)
    assert len(icons) >= 10
    for relative in icons:
        assert (PROJECT_ROOT / "static" / relative).is_file(), relative


def test_vendored_files_match_their_checksums():
    vendor = PROJECT_ROOT / "static" / "vendor"
    lines = (vendor / "SHA256SUMS").read_text().splitlines()
    names = set()
    for line in lines:
        digest, name = line.split(maxsplit=1)
        names.add(name)
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert {"htmx-2.0.11.min.js", "htmx-ext-response-targets-2.0.4.min.js", "polaris-tokens-9.4.2.css"} <= names
    assert 'version:"2.0.11"' in (vendor / "htmx-2.0.11.min.js").read_text()
    listed = {str(p.relative_to(vendor)) for p in vendor.rglob("*") if p.is_file()} - {"SHA256SUMS", "README.md"}
    assert listed == names  # nothing unchecked lies in static/vendor


def test_errors_are_a_partial_for_htmx_and_a_page_otherwise(client, auth, page_headers):
    response, html = _get(client, "/segments/no-such-page", auth)
    assert response.status_code == 404
    assert html.lstrip().startswith('<section id="error"') and "404 · Page not found" in html
    response, html = _get(client, "/segments/no-such-page", page_headers)
    assert response.status_code == 404
    assert "<!doctype html>" in html and "<span>Segments</span>" in html  # inside the app's frame
    assert 'id="error-page"' in html and "Error 404" in html and "Page not found" in html
    assert re.search(r'<a [^>]*href="/" id="error-page-home"', html) and "data-history-back" in html  # ways back


# --- segments ---------------------------------------------------------------------------------------------

def test_segments_lists_the_shops_segments_in_shop_time(client, auth, shop, other_shop):
    _add(Segment(shop_id=shop.id, name="VIP buyers", kind="manual", definition={}, member_count=1234,
                 last_built_at=dt.datetime(2026, 3, 5, 2, 5, tzinfo=UTC)),
         Segment(shop_id=shop.id, name="All subscribers", kind="auto", auto_source="all", definition={},
                 member_count=7),
         Segment(shop_id=other_shop.id, name="Their secret segment", kind="manual", definition={}, member_count=99))
    html = client.get("/segments/", headers=auth).get_data(as_text=True)
    assert "VIP buyers" in html and "All subscribers" in html
    assert "Their secret segment" not in html
    assert _rows(html) == 2
    assert html.index("All subscribers") < html.index("VIP buyers")  # automatic ones first
    assert "1,234" in html
    assert "Mar 4, 2026, 9:05 PM" in html  # 02:05 UTC is the evening before in New York
    assert "Counting members…" in html  # All subscribers waits for its first build (it polls its row)
    assert '<span class="badge badge--info">Auto</span>' in html
    assert '<span class="badge">Manual</span>' in html


def test_segments_empty_state(client, auth, other_shop):
    _add(Segment(shop_id=other_shop.id, name="Theirs", kind="manual", definition={}))
    html = client.get("/segments/", headers=auth).get_data(as_text=True)
    assert "No segments yet" in html and "<table" not in html and "Theirs" not in html


# --- campaigns --------------------------------------------------------------------------------------------

def _campaign_with_results(shop, name, statuses, clicks, revenues, order_base):
    """A campaign with one message per status, `clicks` clicks and one attributed order per revenue."""
    campaign = _add(Campaign(shop_id=shop.id, name=name, status="completed",
                             started_at=dt.datetime(2026, 5, 1, 16, 0, tzinfo=UTC)))
    messages = []
    for i, status in enumerate(statuses):
        subscriber = _add(_subscriber(shop, f"+1212555{order_base + i:04d}"))
        messages.append(_add(Message(shop_id=shop.id, campaign_id=campaign.id, subscriber_id=subscriber.id,
                                     to_phone=subscriber.phone, status=status)))
    for i in range(clicks):
        link = _add(Link(shop_id=shop.id, code=f"c{order_base}x{i}", url=f"https://example.com/{i}",
                         campaign_id=campaign.id, message_id=messages[0].id))
        _add(Click(shop_id=shop.id, link_id=link.id, campaign_id=campaign.id))
    for i, revenue in enumerate(revenues):
        order = _add(Order(shop_id=shop.id, shopify_id=order_base + i, name=f"#{order_base + i}",
                           created_at=utcnow(), total_price=Decimal(revenue)))
        _add(Attribution(shop_id=shop.id, order_id=order.id, campaign_id=campaign.id, method="click",
                         revenue=Decimal(revenue)))
    return campaign


def test_campaigns_show_results_per_campaign_and_totals_from_rows(client, auth, shop, other_shop):
    _campaign_with_results(shop, "Spring sale", ["sent", "delivered", "failed", "pending"], clicks=3,
                           revenues=["1200.50", "34.25"], order_base=1000)
    _add(Campaign(shop_id=shop.id, name="Summer draft", status="draft"))
    _campaign_with_results(other_shop, "Their campaign", ["sent"] * 5, clicks=4, revenues=["999.00"],
                           order_base=2000)
    html = client.get("/campaigns/", headers=auth).get_data(as_text=True)
    assert "Spring sale" in html and "Summer draft" in html and "Their campaign" not in html
    totals = html.split('id="campaign-totals"', 1)[1].split("</div>\n  <section", 1)[0]
    values = re.findall(r'<p class="metric__label">(\w+)</p>\s*<p class="metric__value">([^<]+)</p>', totals)
    assert values == [("Sent", "2"), ("Clicks", "3"), ("Orders", "2"), ("Revenue", "$1,234.75")]
    spring = html.split("Spring sale", 1)[1].split("</tr>", 1)[0]
    cells = re.findall(r'<td class="numeric">([^<]+)</td>', spring)
    assert cells == ["2", "3", "2", "$1,234.75"]
    assert '<span class="badge badge--success">Completed</span>' in spring
    assert "May 1, 2026, 12:00 PM" in spring
    draft = html.split("Summer draft", 1)[1].split("</tr>", 1)[0]
    assert re.findall(r'<td class="numeric">([^<]+)</td>', draft) == ["0"]  # no links, no discount: only Sent is shown
    assert '<span class="badge">Draft</span>' in draft and "Not scheduled" in draft


def test_campaigns_empty_state(client, auth, other_shop):
    _add(Campaign(shop_id=other_shop.id, name="Theirs"))
    html = client.get("/campaigns/", headers=auth).get_data(as_text=True)
    assert "No campaigns yet" in html and "Theirs" not in html and "$0.00" in html


# --- subscribers ------------------------------------------------------------------------------------------

@pytest.fixture
def audience(shop, other_shop):
    """Four subscribers of `shop` (one named through its Shopify customer) and one of another shop."""
    customer = _add(Customer(shop_id=shop.id, shopify_id=501, first_name="Grace", last_name="Hopper"))
    keyword = _add(Keyword(shop_id=shop.id, word="JOIN"))
    _add(_subscriber(shop, "+12125550101", first_name="Ada", source="keyword", keyword_id=keyword.id,
                     keyword="JOIN", country="US", subscribed_at=dt.datetime(2026, 1, 2, 15, 30, tzinfo=UTC)),
         _subscriber(shop, "+12125550102", customer_id=customer.id, source="checkout", country="CA"),
         _subscriber(shop, "+442071838750", first_name="Alan", status="unsubscribed", source="mobile_popup",
                     country="GB"),
         _subscriber(shop, "+12125550104", first_name="Linus", status="pending", source="shareable_link"),
         _subscriber(other_shop, "+12125550199", first_name="Mallory"))


def _phones(html: str) -> list[str]:
    return re.findall(r'<td class="primary-cell nowrap"><a href="/subscribers/\d+">(\+\d+)</a></td>', html)


def test_subscribers_table_shows_the_shops_audience(client, auth, audience):
    html = client.get("/subscribers/", headers=auth).get_data(as_text=True)
    assert sorted(_phones(html)) == ["+12125550101", "+12125550102", "+12125550104", "+442071838750"]
    assert "Mallory" not in html and "+12125550199" not in html
    ada = html.split("+12125550101", 1)[1].split("</tr>", 1)[0]
    assert "Ada" in ada and "Keyword" in ada and "JOIN" in ada and "US" in ada
    assert '<span class="badge badge--success">Subscribed</span>' in ada
    assert "Jan 2, 2026, 10:30 AM" in ada
    assert "Grace Hopper" in html.split("+12125550102", 1)[1].split("</tr>", 1)[0]
    assert '<span class="badge">Unsubscribed</span>' in html and "Mobile Popup" in html
    assert '<span class="badge badge--attention">Pending</span>' in html
    assert "1–4 of 4 subscribers" in html


@pytest.mark.parametrize("query,expected", [
    ("ada", ["+12125550101"]),
    ("hopper", ["+12125550102"]),  # the Shopify customer's name
    ("Grace Hopper", ["+12125550102"]),
    ("(212) 555-0104", ["+12125550104"]),  # formatting is ignored
    ("2071838", ["+442071838750"]),
    ("mallory", []),  # another shop's subscriber
    ("100%", []),  # LIKE wildcards are literal
])
def test_subscribers_search_by_phone_or_name(client, auth, audience, query, expected):
    response = client.get("/subscribers/", query_string={"q": query},
                          headers={**auth, "HX-Target": "subscribers-table"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert html.lstrip().startswith('<div id="subscribers-table">')  # only the table: the search box keeps focus
    assert 'id="subscriber-search"' not in html
    assert _phones(html) == expected
    if not expected:
        assert "No subscribers match" in html


def test_subscribers_filters_by_status_and_source(client, auth, audience):
    html = client.get("/subscribers/?status=pending", headers=auth).get_data(as_text=True)
    assert _phones(html) == ["+12125550104"]
    assert '<option value="pending" selected>Pending</option>' in html
    html = client.get("/subscribers/?source=checkout", headers=auth).get_data(as_text=True)
    assert _phones(html) == ["+12125550102"]
    html = client.get("/subscribers/?status=subscribed&source=keyword&q=ad", headers=auth).get_data(as_text=True)
    assert _phones(html) == ["+12125550101"]
    html = client.get("/subscribers/?status=unsubscribed&source=keyword", headers=auth).get_data(as_text=True)
    assert _phones(html) == [] and "No subscribers match" in html and "Try another search" in html


def test_subscribers_unknown_filters_fall_back_to_all(client, auth, audience):
    response = client.get("/subscribers/?status=deleted&source=carrier-pigeon", headers=auth)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert len(_phones(html)) == 4
    assert '<option value="" selected>All statuses</option>' in html
    assert '<option value="" selected>All sources</option>' in html


@pytest.fixture
def many_subscribers(shop, other_shop, monkeypatch):
    """Seven subscribers, newest first by creation, with a page size of three."""
    monkeypatch.setattr(defaults, "PAGE_SIZE", 3)
    start = dt.datetime(2026, 2, 1, tzinfo=UTC)
    _add(*[_subscriber(shop, f"+1212555{i:04d}", status="pending" if i % 2 else "subscribed",
                       created_at=start + dt.timedelta(minutes=i)) for i in range(7)])
    _add(_subscriber(other_shop, "+12125559999", created_at=start + dt.timedelta(days=1)))


def test_subscribers_pagination(client, auth, many_subscribers):
    html = client.get("/subscribers/", headers=auth).get_data(as_text=True)
    assert _phones(html) == ["+12125550006", "+12125550005", "+12125550004"]
    assert "1–3 of 7 subscribers" in html and "Page 1 of 3" in html
    assert 'href="/subscribers/?page=2"' in html and 'hx-target="#subscribers-table"' in html
    assert 'rel="prev"' not in html
    html = client.get("/subscribers/?page=3", headers=auth).get_data(as_text=True)
    assert _phones(html) == ["+12125550000"]
    assert "7–7 of 7 subscribers" in html and 'rel="next"' not in html


def test_subscribers_pagination_keeps_the_filters(client, auth, many_subscribers):
    html = client.get("/subscribers/?status=subscribed&page=2", headers=auth).get_data(as_text=True)
    assert _phones(html) == ["+12125550000"]  # subscribed: 6, 4, 2 | 0
    assert "Page 2 of 2" in html
    assert 'href="/subscribers/?status=subscribed&amp;page=1"' in html


@pytest.mark.parametrize("page,expected_page", [("abc", 1), ("0", 1), ("-4", 1), ("2.5", 1), ("99", 3)])
def test_subscribers_bad_page_numbers_show_the_nearest_real_page(client, auth, many_subscribers, page,
                                                                  expected_page):
    response = client.get(f"/subscribers/?page={page}", headers=auth)
    assert response.status_code == 200
    assert f"Page {expected_page} of 3" in response.get_data(as_text=True)


def test_subscribers_empty_state(client, auth, other_shop):
    _add(_subscriber(other_shop, "+12125550123"))
    html = client.get("/subscribers/", headers=auth).get_data(as_text=True)
    assert "No subscribers yet" in html and "+12125550123" not in html and "<table" not in html


# --- keywords ---------------------------------------------------------------------------------------------

def test_keywords_show_reply_state_and_who_joined(client, auth, shop, other_shop):
    join, vip = _add(Keyword(shop_id=shop.id, word="JOIN", reply_text="Thanks for joining!"),
                     Keyword(shop_id=shop.id, word="VIP", reply_text="", active=False))
    theirs = _add(Keyword(shop_id=other_shop.id, word="SECRET", reply_text="Theirs"))
    _add(_subscriber(shop, "+12125550001", source="keyword", keyword_id=join.id, keyword="JOIN"),
         _subscriber(shop, "+12125550002", source="keyword", keyword_id=join.id, keyword="JOIN",
                     status="unsubscribed"),
         _subscriber(shop, "+12125550003", source="manual"),
         _subscriber(other_shop, "+12125550004", source="keyword", keyword_id=theirs.id, keyword="SECRET"))
    html = client.get("/keywords/", headers=auth).get_data(as_text=True)
    assert "SECRET" not in html and "Theirs" not in html
    join_row = html.split(">JOIN<", 1)[1].split("</tr>", 1)[0]
    assert "Thanks for joining!" in join_row
    assert '<span class="badge badge--success">Active</span>' in join_row
    assert '<td class="numeric">2</td>' in join_row
    vip_row = html.split(">VIP<", 1)[1].split("</tr>", 1)[0]
    assert '<span class="badge">Inactive</span>' in vip_row and '<td class="numeric">0</td>' in vip_row


def test_keywords_empty_state(client, auth, other_shop):
    _add(Keyword(shop_id=other_shop.id, word="THEIRS"))
    html = client.get("/keywords/", headers=auth).get_data(as_text=True)
    assert "No keywords yet" in html and "THEIRS" not in html


# --- settings ---------------------------------------------------------------------------------------------

def test_settings_show_the_shops_own_values(client, auth, shop, other_shop):
    shop.sender = "KINNEKT"
    shop.quiet_hours_start, shop.quiet_hours_end = 21 * 60 + 30, 8 * 60
    shop.compliance_footer = "Txt STOP to end"
    shop.help_text = "Call us at 555-0100."
    shop.double_opt_in = False
    shop.smart_sending_hours = 16
    shop.suppression_threshold = 3
    shop.attribution_window_days = 7
    shop.checkout_collection = True
    shop.sync_status = "running"
    shop.sync_progress = 40
    shop.last_synced_at = dt.datetime(2026, 7, 4, 16, 0, tzinfo=UTC)
    other_shop.sender = "OTHERBRAND"
    Session.merge(shop)
    Session.merge(other_shop)
    Session.commit()
    html = client.get("/settings/", headers=auth).get_data(as_text=True)
    assert "KINNEKT" in html and "OTHERBRAND" not in html
    assert "9:30 PM – 8:00 AM" in html
    assert "Txt STOP to end" in html and "Call us at 555-0100." in html
    assert "At most one campaign every 16 hours" in html
    assert "received 3 messages and never clicked" in html
    assert 'name="attribution_window_days"' in html and 'value="7"' in html
    assert "Jul 4, 2026, 12:00 PM" in html
    assert '<progress class="progress__bar" value="40" max="100"' in html
    assert re.search(r'<input type="checkbox" id="field-double_opt_in" name="double_opt_in" value="on"\s', html)
    assert re.search(r'<input type="checkbox" id="field-checkout_collection" name="checkout_collection"'
                     r' value="on" checked', html)
    assert 'value="OTHERBRAND"' not in html


def test_settings_defaults_read_calmly(client, auth):
    html = client.get("/settings/", headers=auth).get_data(as_text=True)
    assert "Default number" in html  # no sender set
    assert "9:00 PM – 8:00 AM" in html  # default quiet hours
    assert "Reply STOP to unsubscribe" in html
    assert "Not yet" in html  # never synced


# --- outbox (demo only) -----------------------------------------------------------------------------------

def test_outbox_is_not_found_outside_demo_mode(client, auth, page_headers, shop):
    _add(OutboxMessage(shop_id=shop.id, to_phone="+12125550100", text="hello"))
    assert client.get("/outbox/", headers=auth).status_code == 404
    assert client.get("/outbox/", headers=page_headers).status_code == 404
    html = client.get("/segments/", headers=page_headers).get_data(as_text=True)
    assert "<span>Outbox</span>" not in html and "Demo store" not in html


def test_outbox_in_demo_mode_lists_newest_first_and_paginates(client, auth, page_headers, shop, other_shop,
                                                              demo_mode, monkeypatch):
    monkeypatch.setattr(defaults, "PAGE_SIZE", 2)
    start = dt.datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    _add(*[OutboxMessage(shop_id=shop.id, to_phone=f"+1212555010{i}", text=f"Message number {i}",
                         created_at=start + dt.timedelta(hours=i)) for i in range(3)])
    _add(OutboxMessage(shop_id=other_shop.id, to_phone="+12125550999", text="Their message", created_at=start))
    response, html = _get(client, "/outbox/", auth)
    assert response.status_code == 200 and html.lstrip().startswith('<section id="outbox-page"')
    assert re.findall(r"Message number (\d)", html) == ["2", "1"]
    assert "Apr 1, 2026, 10:00 AM" in html  # 14:00 UTC in New York
    assert "Their message" not in html
    assert "Page 1 of 2" in html and "1–2 of 3 messages" in html
    html = client.get("/outbox/?page=2", headers=auth).get_data(as_text=True)
    assert re.findall(r"Message number (\d)", html) == ["0"]
    assert "Page 1 of 2" in client.get("/outbox/?page=nope", headers=auth).get_data(as_text=True)
    page = client.get("/segments/", headers=page_headers).get_data(as_text=True)
    assert "<span>Outbox</span>" in page
    assert "Demo store: messages go to the Outbox, never to phones" in page


def test_outbox_empty_state(client, auth, demo_mode):
    html = client.get("/outbox/", headers=auth).get_data(as_text=True)
    assert "The Outbox is empty" in html and "<table" not in html


def test_static_paths_in_templates_exist():
    """Every literal `url_for('static', filename=...)` in a template names a real file."""
    templates = PROJECT_ROOT / "templates"
    names = []
    for template in templates.rglob("*.html"):
        names += re.findall(r"url_for\('static', filename='([^']+)'\)", template.read_text())
    assert names
    for name in names:
        assert (PROJECT_ROOT / "static" / name).is_file(), name
