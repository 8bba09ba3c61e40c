"""gunicorn.conf.py: only settings gunicorn knows, the timeouts the app needs, and the README deploys with it."""
from __future__ import annotations

import runpy

from gunicorn.config import KNOWN_SETTINGS

from kinnekt.config import PROJECT_ROOT


def settings() -> dict:
    found = runpy.run_path(str(PROJECT_ROOT / "gunicorn.conf.py"))
    return {key: value for key, value in found.items() if not key.startswith("_") and key != "os"}


def test_every_setting_is_one_gunicorn_knows():
    assert set(settings()) <= {setting.name for setting in KNOWN_SETTINGS}


def test_the_port_and_workers_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("PORT", "8123")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    found = settings()
    assert (found["bind"], found["workers"]) == ("0.0.0.0:8123", 3)


def test_workers_get_more_than_gunicorns_30_seconds_and_stop_within_an_orchestrators_grace():
    found = settings()
    assert found["timeout"] >= 60 and found["graceful_timeout"] < 30


def test_the_readme_deploys_with_it():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert "gunicorn -c gunicorn.conf.py app:app" in readme
