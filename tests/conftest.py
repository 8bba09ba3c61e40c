"""Fixtures: a migrated database (SQLite file, or a fresh PostgreSQL schema from DATABASE_URL), app, shops, tokens."""
from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from kinnekt import create_app, db as kdb
from kinnekt.config import config_for_tests
from kinnekt.db import Base, Session
from kinnekt.models import Shop
from kinnekt.queue import InProcessQueue
from kinnekt.shopify import session_token
from kinnekt.tenancy import bind_shop

pytest_plugins = ["tests.helpers", "tests.fake_shopify", "tests.fake_vonage", "tests.fake_meta", "tests.fake_google",
                  "tests.worker_env"]
"""Fixtures shared beyond conftest: job queues and deliveries (helpers), the fake Shopify, Vonage, Meta (Graph API)
and Google Ads servers, worker processes (worker_env)."""

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# A browser test's expectation waits up to 20 s (Playwright's default is 5): on a busy machine (CI shares its
# two cores) a page's htmx round trip can take seconds, and a passing test must not depend on the load.
from playwright.sync_api import expect as _expect  # noqa: E402

_expect.set_options(timeout=20_000)


def _postgres_url_with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def fresh_database(tmp_dir: Path, name: str):
    """Yield the URL of an empty database: a new schema on PostgreSQL (DATABASE_URL), else a new SQLite file."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgresql", "postgres:")):
        schema = f"kt_{name}_{uuid.uuid4().hex[:8]}"
        admin = create_engine(kdb.make_engine_url(url))
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield _postgres_url_with_schema(url, schema)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    else:
        yield f"sqlite:///{tmp_dir / (name + '.sqlite3')}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    """The suite's database, with every table of the models (test_migrations proves Alembic builds the same)."""
    with fresh_database(tmp_path_factory.mktemp("db"), "suite") as url:
        engine = kdb.make_engine(url)
        Base.metadata.create_all(engine)
        engine.dispose()
        yield url
        kdb.Session.remove()
        if kdb._engine is not None:
            kdb._engine.dispose()


@pytest.fixture(scope="session")
def app(database_url):
    """The app under test, with a real app secret (tokens are verified) and no Redis (in-process queue)."""
    application = create_app(config_for_tests(DATABASE_URL=database_url))
    yield application
    application.extensions["kinnekt_queue"].stop()


@pytest.fixture(autouse=True)
def _clean_db(request):
    """Empty every table after each test that touched the database."""
    yield
    if "app" not in request.fixturenames and "database_url" not in request.fixturenames:
        return
    if "app" in request.fixturenames:
        # A job the test left to the app's in-process queue runs in a thread of its own: let it end first, or
        # its row locks and the DELETEs below can deadlock on PostgreSQL.
        queue = request.getfixturevalue("app").extensions["kinnekt_queue"]
        if isinstance(queue, InProcessQueue):
            queue.drain(10)
    Session.remove()
    engine = kdb.engine()
    for attempt in range(3):
        try:
            _empty_tables(engine)
            return
        except OperationalError:  # a deadlock with a straggler (a live server's request): once more
            if attempt == 2:
                raise


def _empty_tables(engine) -> None:
    """DELETE, children first, not TRUNCATE: TRUNCATE makes new files for every table and index (0.15-0.3 s a
    test on PostgreSQL, most of the suite's time there); deleting a test's few rows takes milliseconds."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
        if engine.dialect.name == "postgresql":  # ids start at 1 again, as SQLite's do once a table is empty
            conn.execute(text(_RESTART_SEQUENCES))


_RESTART_SEQUENCES = """SELECT count(setval(c.oid::regclass, 1, false)) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S' AND n.nspname = current_schema()"""
"""Sets every sequence of the suite's schema back to its start in one statement."""


@pytest.fixture
def db(app):
    """The shared session, inside an app context, unbound from any shop."""
    with app.app_context():
        bind_shop(None)
        yield Session
        bind_shop(None)


def make_shop(domain: str = "alpha.myshopify.com", **fields) -> Shop:
    """Insert an installed shop."""
    from kinnekt.db import utcnow
    shop = Shop(domain=domain, name=domain.split(".")[0].title(), timezone=fields.pop("timezone", "America/New_York"),
                currency=fields.pop("currency", "USD"), installed_at=utcnow(), **fields)
    Session.add(shop)
    Session.commit()
    return shop


@pytest.fixture
def shop(db):
    """An installed shop."""
    return make_shop()


@pytest.fixture
def other_shop(db):
    """A second shop, for tenant isolation tests."""
    return make_shop("beta.myshopify.com")


@pytest.fixture
def client(app):
    """Flask's test client."""
    return app.test_client()


@pytest.fixture
def token_for(app):
    """Mint an App Bridge session token for a shop domain, signed with the test secret."""
    def mint(domain: str, **overrides) -> str:
        return session_token.mint(domain, app.config["SHOPIFY_API_KEY"], app.config["SHOPIFY_API_SECRET"],
                                  **overrides)
    return mint


@pytest.fixture
def auth(shop, token_for):
    """Headers of an htmx request carrying a valid session token for `shop`."""
    return {"Authorization": f"Bearer {token_for(shop.domain)}", "HX-Request": "true"}


@pytest.fixture
def segment_rechecks(monkeypatch):
    """Every segment re-check request, as (shop id, sorted subscriber ids); each is still made."""
    from kinnekt.segments import membership
    calls = []
    real = membership.subscribers_changed

    def spy(shop_id, ids):
        calls.append((shop_id, sorted(ids)))
        real(shop_id, ids)

    monkeypatch.setattr(membership, "subscribers_changed", spy)
    return calls


FAKE_APP_BRIDGE = """
window.shopify = {idToken: async () => %r};
window.__appBridge = {toasts: [], saveBar: [], pickers: [], pickerSelection: undefined, nav: null};
window.shopify.toast = {show: (message, options) => {
  window.__appBridge.toasts.push({message: message, isError: !!(options && options.isError)});
}};
window.shopify.saveBar = {
  show: async (id) => { window.__appBridge.saveBar.push(['show', id]); },
  hide: async (id) => { window.__appBridge.saveBar.push(['hide', id]); },
};
window.shopify.resourcePicker = async (options) => {
  window.__appBridge.pickers.push(options);
  return window.__appBridge.pickerSelection;
};
document.addEventListener('DOMContentLoaded', () => {
  const nav = document.querySelector('s-app-nav, ui-nav-menu');
  window.__appBridge.nav = nav && Array.from(nav.children, (link) =>
    ({label: link.textContent.trim(), href: link.getAttribute('href'), rel: link.getAttribute('rel')}));
});
"""
"""An init script standing in for App Bridge in browser tests: `%r` is the session token it hands out. It
records what the page asks of the admin in `window.__appBridge`: toasts, save bar show/hide, resource picker
calls (answering `pickerSelection`, undefined being a cancelled picker) and the app navigation it found."""


@pytest.fixture
def open_page(live_server, page, shop, token_for):
    """Open a merchant page as the embedded admin would: a token in the URL, App Bridge handing out more."""
    token = token_for(shop.domain, ttl=900)
    page.add_init_script(FAKE_APP_BRIDGE % token)

    def go(path: str):
        if page.url.startswith(live_server):
            settle(page)  # leaving a page with a request of it in flight would abort that request (a failed request)
        page.goto(f"{live_server}{path}{'&' if '?' in path else '?'}shop={shop.domain}&id_token={token}")
        return page
    return go


PAGE_SETTLED = """() => document.readyState === 'complete' && document.fonts.status === 'loaded'
    && !document.querySelector('.htmx-request, [hx-trigger~="load"]')
    && Array.from(document.images).every((image) => image.complete)
    && Array.from(document.querySelectorAll('link[rel~="stylesheet"]')).every((link) => link.sheet !== null)"""
"""True in the page once it has everything it asked for: no htmx request in flight (htmx puts `htmx-request` on the
request's indicator until its answer is in), no lazy part still to load (an `hx-trigger="load"` placeholder is
swapped out by its answer), every image, stylesheet and font loaded."""


def settle(page, timeout: float = 60) -> None:
    """Wait until the page has loaded all it asked for before a test leaves it: PAGE_SETTLED in the page and, for a
    browser test, no request of the page in flight (scripts and styles a swapped-in page brought included). A page
    left earlier aborts those requests (the settings page's lazy cards, a campaign page's chart script), which the
    browser-error check rightly counts as failed requests. This waits for that state, however long the machine
    takes to get there; `timeout` only ends a wait that would never end."""
    in_flight = getattr(page, "requests_in_flight", None)  # kept by _no_browser_errors
    deadline = time.monotonic() + timeout
    while True:
        page.wait_for_function(PAGE_SETTLED, timeout=timeout * 1000)
        if not in_flight:
            return
        if time.monotonic() > deadline:
            raise AssertionError("the page is still loading: " + ", ".join(sorted(r.url for r in in_flight)))
        page.wait_for_timeout(50)  # lets Playwright deliver the requests' ends, then looks at the page again


class BrowserErrors:
    """What went wrong in the page during a browser test: console errors, page errors, failed requests.

    A test that deliberately provokes an HTTP error declares it, with the marker
    `@pytest.mark.expected_http_error(404, ...)` or by calling `browser_errors.expect(404)`; an expected
    status is allowed in responses and in the console lines Chromium and htmx print about it.
    """

    def __init__(self):
        self.problems: list[str] = []
        self.statuses: set[int] = set()
        self.failed_requests: list = []
        self.downloads: set[str] = set()
        self.in_flight: set = set()

    def expect(self, *statuses: int) -> None:
        """Allow responses with these HTTP statuses (and the console errors they cause) from here on."""
        self.statuses.update(statuses)

    def _expected_text(self, text: str) -> bool:
        # Chromium: "Failed to load resource: the server responded with a status of 404 (NOT FOUND)";
        # htmx: "Response Status Error Code 404 from /path".
        return any(f"status of {code}" in text or f"Error Code {code} " in text for code in self.statuses)

    def on_console(self, message) -> None:
        if message.type == "error" and not self._expected_text(message.text):
            self.problems.append(f"console error: {message.text} ({message.location.get('url', '')})")

    def on_page_error(self, error) -> None:
        self.problems.append(f"page error: {error}")

    def on_response(self, response) -> None:
        if response.status >= 400 and response.status not in self.statuses:
            self.problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    def on_request(self, request) -> None:
        self.in_flight.add(request)

    def on_request_finished(self, request) -> None:
        self.in_flight.discard(request)

    def on_request_failed(self, request) -> None:
        self.in_flight.discard(request)
        self.failed_requests.append(request)

    def on_download(self, download) -> None:
        self.downloads.add(download.url)

    def report(self) -> list[str]:
        """Every problem seen; a download is not one (Chromium ends its request as "aborted" in the page)."""
        return self.problems + [f"request failed ({r.failure}): {r.method} {r.url}" for r in self.failed_requests
                                if r.url not in self.downloads]


@pytest.fixture
def browser_errors(request):
    """The page's collected errors; `browser_errors.expect(404)` declares an HTTP error the test provokes."""
    errors = BrowserErrors()
    for marker in request.node.iter_markers("expected_http_error"):
        errors.expect(*marker.args)
    return errors


@pytest.fixture(autouse=True)
def _no_browser_errors(request):
    """A browser test fails on any console error (CSP violations included), uncaught page error, request that
    failed, or response with status >= 400 that the test did not declare (see BrowserErrors)."""
    if request.node.get_closest_marker("browser") is None or "page" not in request.fixturenames:
        yield
        return
    page = request.getfixturevalue("page")
    errors = request.getfixturevalue("browser_errors")
    page.on("console", errors.on_console)
    page.on("pageerror", errors.on_page_error)
    page.on("response", errors.on_response)
    page.on("requestfailed", errors.on_request_failed)
    page.on("download", errors.on_download)
    page.on("request", errors.on_request)
    page.on("requestfinished", errors.on_request_finished)
    page.requests_in_flight = errors.in_flight  # for settle()
    if os.environ.get("KINNEKT_SHOW_CONSOLE"):  # for a look at every console message while changing pages
        page.on("console", lambda message: print(f"[console {message.type}] {message.text}"))
        page.on("pageerror", lambda error: print(f"[page error] {error}"))
    yield
    problems = errors.report()
    assert problems == [], "the browser reported errors:\n" + "\n".join(problems)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Playwright drives Debian's Chromium (no `playwright install`)."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run"]}


def pytest_collection_modifyitems(config, items):
    """Skip browser tests only when Chromium is missing (CI installs it, so CI never skips them)."""
    if Path(CHROMIUM).exists():
        return
    skip = pytest.mark.skip(reason=f"Chromium not found at {CHROMIUM}")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def live_server(app):
    """The test app served over HTTP on a free port in a thread (for Playwright)."""
    import threading

    from werkzeug.serving import make_server
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
