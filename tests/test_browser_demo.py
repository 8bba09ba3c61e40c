"""The README's first command, for real: the demo server starts, and every nav page works in Chromium."""
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from kinnekt.config import PROJECT_ROOT

pytestmark = pytest.mark.browser
NAV_PAGES = ["Home", "Segments", "Campaigns", "Subscribers", "Keywords", "Settings", "Outbox"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """`flask --app app demo run` (what `make run` calls) on a fresh SQLite file and a free port."""
    port = _free_port()
    db_path = tmp_path_factory.mktemp("demo") / "demo.sqlite3"
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SHOPIFY_API_SECRET")}
    env.update({"KINNEKT_DEMO": "1", "DATABASE_URL": f"sqlite:///{db_path}"})
    log_path = db_path.with_suffix(".log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "demo", "run", "--port", str(port),
                                 "--customers", "600"], cwd=PROJECT_ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail("demo server exited:\n" + log_path.read_text()[-3000:])
        try:
            urllib.request.urlopen(url + "segments/", timeout=2)
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("demo server did not answer in time:\n" + log_path.read_text()[-3000:])
    yield url, log_path
    proc.terminate()
    proc.wait(10)


def test_demo_prints_its_url_and_queue_mode(demo_server):
    url, log_path = demo_server
    output = log_path.read_text()
    assert f"Kinnekt demo is running at {url}" in output
    assert "background jobs run in this process" in output


def test_every_nav_page_without_console_errors(demo_server, page):
    url, _ = demo_server
    problems = []
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
            if msg.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
    page.on("response", lambda resp: problems.append(f"HTTP {resp.status}: {resp.url}") if resp.status >= 400 else None)
    page.goto(url)
    assert "Demo store" in page.content()
    # The demo lands on Home, its chart drawn from the seeded store.
    expect(page.locator("main h1").first).to_have_text("Home")
    expect(page.locator("#home-growth .home-chart canvas")).to_be_visible()
    for label in NAV_PAGES:
        page.locator("nav").get_by_role("link", name=label, exact=True).click()
        # Nav links are boosted (htmx swaps <main>): wait for the new heading, not for the network.
        expect(page.locator("main h1").first).to_have_text(re.compile("^" + label))
    page.locator("nav").get_by_role("link", name="Subscribers", exact=True).click()
    expect(page.locator("main h1").first).to_have_text(re.compile("^Subscribers"))
    expect(page.locator("main table tbody tr")).to_have_count(50)  # the seeded store fills a whole page
    assert problems == []
