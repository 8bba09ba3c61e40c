"""Worker processes a test starts: their environment (the test's database, a queue of its own on the test Redis),
the queue, the pool of `python -m workers` processes and a slow fake Vonage for them to text through.

This module is a pytest plugin (tests/conftest.py lists it in `pytest_plugins`): its fixtures need no import.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from redis import Redis

from kinnekt import queue as kqueue
from kinnekt.config import PROJECT_ROOT
from kinnekt.queue import RQJobQueue
from tests.fake_vonage import FakeVonage, vonage_env

REDIS_URL = os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/15")


def worker_env(app, database_url: str, queue_name: str, **extra) -> dict:
    """The process environment with the app's secrets, the test's database and Redis, and `extra` on top."""
    return {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, "QUEUE_NAME": queue_name,
            "SECRET_KEY": "s" * 32, "TOKEN_ENCRYPTION_KEY": app.config["TOKEN_ENCRYPTION_KEY"],
            "SHOPIFY_API_KEY": "k", "SHOPIFY_API_SECRET": "x" * 32, "KINNEKT_DEMO": "",
            "VONAGE_SIGNATURE_SECRET": "test-signature-secret",
            # As in the test app: shops of these tests send without a plan (kinnekt/config.py, config_for_tests).
            "KINNEKT_BILLING_REQUIRED": "1" if app.config.get("BILLING_REQUIRED") else "0", **extra}


class SlowVonage(FakeVonage):
    """The fake, answering each send after `delay` seconds; the `hold_at`-th request waits until `release` is set
    (`holding` tells that it arrived), so a test can kill the worker while that request waits for its answer."""

    def __init__(self, ca, delay: float):
        super().__init__(ca)
        self.delay = delay
        self.hold_at: int | None = None
        self.holding = threading.Event()
        self.release = threading.Event()

    def _answer(self, message, authorization):
        if self.hold_at is not None and len(self.sent()) == self.hold_at:
            self.holding.set()
            self.release.wait(30)
        time.sleep(self.delay)
        return super()._answer(message, authorization)


@pytest.fixture
def redis_queue(app, monkeypatch):
    """A fresh RQ queue on the test Redis, made the app's queue; its keys are deleted afterwards."""
    conn = Redis.from_url(REDIS_URL)
    try:
        conn.ping()
    except Exception as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    name = f"test-campaign-{uuid.uuid4().hex[:8]}"
    rq_queue = RQJobQueue(REDIS_URL, name)
    monkeypatch.setitem(app.extensions, "kinnekt_queue", rq_queue)
    monkeypatch.setattr(kqueue, "_queue", rq_queue)
    yield rq_queue
    wipe(conn, name)
    conn.close()


def wipe(conn: Redis, name: str) -> int:
    """Delete every key of this queue (its jobs, registries, scheduler state): a Redis restart without a save."""
    keys = list(conn.scan_iter(match=f"*{name}*", count=1000))
    return conn.delete(*keys) if keys else 0


@pytest.fixture
def slow_vonage(vonage_ca):
    ca, _ = vonage_ca
    server = SlowVonage(ca, delay=0.02).start()
    yield server
    server.release.set()
    server.stop()


class Workers:
    """`python -m workers` processes, each in its own process group (the RQ worker and its work horse)."""

    def __init__(self, env):
        self.env = env
        self.procs: list[subprocess.Popen] = []

    def start(self, n=1, *args):
        for _ in range(n):
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "workers", "--name", f"w-{uuid.uuid4().hex[:8]}", *args], cwd=PROJECT_ROOT,
                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True))

    def start_cron(self):
        """`rq cron workers/cron.py`, as the README's deployment runs it (the periodic jobs, the watchdog)."""
        self.procs.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "rq"), "cron", "workers/cron.py", "--url", self.env["REDIS_URL"]],
            cwd=PROJECT_ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True))
        return self.procs[-1]

    def kill(self, proc, sig=signal.SIGKILL):
        """Signal the worker's group and its work horses (RQ puts each horse in a process group of its own). A
        worker that a SIGTERM has not stopped within two minutes (a very busy machine) is killed: the stop
        time itself is measured by bench/mixed.py, not here."""
        horses = _children(proc.pid)
        for pid in [proc.pid, *horses]:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            if sig == signal.SIGKILL:
                raise
            self.kill(proc, signal.SIGKILL)

    def stop_all(self):
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc, signal.SIGTERM)
        self.procs = []


def _children(pid: int) -> list[int]:
    """Ids of the processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


@pytest.fixture
def workers(app, database_url, redis_queue, slow_vonage, vonage_ca):
    _, ca_path = vonage_ca
    env = worker_env(app, database_url, redis_queue.queue.name,
                     **vonage_env(), VONAGE_SENDER="15550100200",
                     VONAGE_HOST_OVERRIDE=slow_vonage.host, REQUESTS_CA_BUNDLE=ca_path, LOG_LEVEL="WARNING")
    pool = Workers(env)
    yield pool
    pool.stop_all()
