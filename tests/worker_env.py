"""The environment of a `python -m workers` process that a test starts: the test's database and a queue of its own."""
from __future__ import annotations

import os

REDIS_URL = os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/15")


def worker_env(app, database_url: str, queue_name: str, **extra) -> dict:
    """The process environment with the app's secrets, the test's database and Redis, and `extra` on top."""
    return {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, "QUEUE_NAME": queue_name,
            "SECRET_KEY": "s" * 32, "TOKEN_ENCRYPTION_KEY": app.config["TOKEN_ENCRYPTION_KEY"],
            "SHOPIFY_API_KEY": "k", "SHOPIFY_API_SECRET": "x" * 32, "KINNEKT_DEMO": "",
            "VONAGE_SIGNATURE_SECRET": "test-signature-secret", **extra}
