"""The shared send rate limiter: no sliding one-second window ever holds more grants than the limit."""
from __future__ import annotations

import multiprocessing
import threading
import time
import uuid

import pytest
from redis import Redis

from kinnekt.sms.ratelimit import (
    Limit, LocalRateLimiter, RateLimitTimeout, RateLimitUnavailable, RedisRateLimiter, limiter_for, limits_for,
)

REDIS_URL = "redis://127.0.0.1:6379/15"
WINDOW_MS = 1000  # the exact one-second window, so the property below is the one Vonage enforces


def max_in_window(stamps: list[float], window: float = WINDOW_MS / 1000) -> int:
    """The most grants inside any half-open window [t, t + window) that starts at a grant."""
    stamps = sorted(stamps)
    best, j = 0, 0
    for i, start in enumerate(stamps):
        while j < len(stamps) and stamps[j] < start + window:
            j += 1
        best = max(best, j - i)
    return best


@pytest.fixture
def redis_keys():
    """Unique keys on Redis db 15, deleted afterwards."""
    client = Redis.from_url(REDIS_URL)
    prefix = f"test:rate:{uuid.uuid4().hex}"
    yield client, prefix
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def _hammer_in_process(url: str, limits: list[tuple[str, int]], count: int, out) -> None:
    """Run in a separate process: take `count` grants and report their server times."""
    limiter = RedisRateLimiter(Redis.from_url(url), [Limit(k, n) for k, n in limits], window_ms=WINDOW_MS)
    out.put([limiter.acquire(max_wait=60) for _ in range(count)])


def test_threads_and_processes_never_exceed_the_limit(redis_keys):
    client, prefix = redis_keys
    limits = [(f"{prefix}:account", 20)]
    stamps: list[float] = []
    lock = threading.Lock()

    def worker():
        limiter = RedisRateLimiter(Redis.from_url(REDIS_URL), [Limit(k, n) for k, n in limits], window_ms=WINDOW_MS)
        got = [limiter.acquire(max_wait=60) for _ in range(10)]
        with lock:
            stamps.extend(got)

    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    processes = [context.Process(target=_hammer_in_process, args=(REDIS_URL, limits, 10, out)) for _ in range(2)]
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for p in processes:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in processes:
        stamps.extend(out.get(timeout=120))
    for p in processes:
        p.join(timeout=30)
    assert len(stamps) == 60 and len(set(stamps)) == 60
    assert max_in_window(stamps) == 20  # the limit is reached, and never exceeded


def test_account_and_sender_limits_hold_together(redis_keys):
    client, prefix = redis_keys
    account = Limit(f"{prefix}:account", 6)
    by_sender: dict[str, list[float]] = {"A": [], "B": []}

    def worker(sender):
        limiter = RedisRateLimiter(Redis.from_url(REDIS_URL), [account, Limit(f"{prefix}:sender:{sender}", 4)],
                                   window_ms=WINDOW_MS)
        by_sender[sender].extend(limiter.acquire(max_wait=60) for _ in range(8))

    threads = [threading.Thread(target=worker, args=(s,)) for s in ("A", "A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(by_sender["A"]) == 16 and len(by_sender["B"]) == 8
    assert max_in_window(by_sender["A"]) <= 4 and max_in_window(by_sender["B"]) <= 4
    assert max_in_window(by_sender["A"] + by_sender["B"]) <= 6


def test_acquire_waits_at_most_the_bound(redis_keys):
    client, prefix = redis_keys
    client.set(f"{prefix}:state", 1)  # the limits' state is known (else the first grant waits one spacing: 60 s)
    limiter = RedisRateLimiter(client, [Limit(f"{prefix}:one", 1)], window_ms=60_000, state_key=f"{prefix}:state")
    limiter.acquire()
    granted, wait, _ = limiter.try_acquire()
    assert not granted and 59 < wait <= 60.02  # the spacing: (window + slack) / 1
    with pytest.raises(RateLimitTimeout):
        limiter.acquire(max_wait=0.05)


def test_a_lost_state_never_lets_a_window_hold_more_than_the_limit(redis_keys):
    """Redis restarts without its data right after a run of grants: the next grant still keeps the spacing."""
    client, prefix = redis_keys
    limits = [Limit(f"{prefix}:account", 10), Limit(f"{prefix}:sender", 10)]
    limiter = RedisRateLimiter(client, limits, window_ms=WINDOW_MS, state_key=f"{prefix}:state")
    before = [limiter.acquire(max_wait=60) for _ in range(10)]
    client.delete(f"{prefix}:account", f"{prefix}:sender", f"{prefix}:state")  # the state is lost
    after = [limiter.acquire(max_wait=60) for _ in range(10)]
    spacing = (WINDOW_MS + 10) / 1000 / 10
    assert after[0] - before[-1] >= spacing - 1e-6
    assert max_in_window(before + after) == 10


def test_a_slot_booked_before_the_state_was_lost_is_booked_again(redis_keys):
    """A sender asleep until its booked slot while Redis loses the limits' state: on waking it books again in
    the new state instead of sending beside the grants made there."""
    client, prefix = redis_keys
    limits = [Limit(f"{prefix}:account", 2)]
    stamps: list[float] = []

    def limiter():
        return RedisRateLimiter(Redis.from_url(REDIS_URL), limits, window_ms=WINDOW_MS, state_key=f"{prefix}:state")

    stamps.append(limiter().acquire(max_wait=10))
    sleeper = threading.Thread(target=lambda: stamps.append(limiter().acquire(max_wait=10)))
    sleeper.start()  # books the next slot, half a second away, and sleeps until it
    time.sleep(0.1)
    client.delete(f"{prefix}:account", f"{prefix}:state")  # Redis restarted without its data
    stamps.append(limiter().acquire(max_wait=10))
    sleeper.join(10)
    assert len(stamps) == 3 and max_in_window(stamps) == 2


def test_an_idle_limit_whose_key_expired_grants_at_once(redis_keys):
    client, prefix = redis_keys
    client.set(f"{prefix}:state", 1)
    limiter = RedisRateLimiter(client, [Limit(f"{prefix}:idle", 1)], window_ms=60_000, state_key=f"{prefix}:state")
    assert limiter.try_acquire()[0]  # the marker says the state is known: no key means idle, not lost


def test_an_unreachable_redis_gives_no_slot():
    limiter = RedisRateLimiter(Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1),
                               [Limit("x", 10)])
    with pytest.raises(RateLimitUnavailable):
        limiter.acquire(max_wait=1)
    assert issubclass(RateLimitUnavailable, RateLimitTimeout)  # every caller already handles "no slot"


def test_local_limiter_has_the_same_rule():
    key = f"local:{uuid.uuid4().hex}"
    stamps: list[float] = []
    lock = threading.Lock()

    def worker():
        limiter = LocalRateLimiter([Limit(key, 10)], window_ms=WINDOW_MS)
        got = [limiter.acquire(max_wait=60) for _ in range(8)]
        with lock:
            stamps.extend(got)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stamps) == 24 and max_in_window(stamps) == 10


def test_limits_come_from_config_and_zero_means_off():
    limits = limits_for("key", "+1 555 0100", {"SMS_RATE_PER_SECOND": 30, "SMS_SENDER_RATE_PER_SECOND": 1})
    assert [limit.per_second for limit in limits] == [30, 1]
    assert limits[1].key.endswith(":+15550100") and "key" not in limits[0].key  # the api key is hashed
    assert LocalRateLimiter([Limit("x", 0)]).try_acquire()[0]


def test_limiter_for_uses_redis_only_when_configured(app, monkeypatch):
    with app.app_context():
        assert isinstance(limiter_for("key", "S"), LocalRateLimiter)
        monkeypatch.setitem(app.config, "REDIS_URL", REDIS_URL)
        limiter = limiter_for("key", "S")
        assert isinstance(limiter, RedisRateLimiter)
        assert [limit.per_second for limit in limiter.limits] == [30, 30]
