"""The send rate limiter shared by every worker: at most N grants in any sliding one-second window.

Each limit (per Vonage account, per sender) is a sorted set of grant times in Redis. One Lua script,
atomic on the server and timed by the server's clock (so workers' clocks do not matter), drops the
grants older than the window, and grants only if every limit has room, recording the grant in all of
them; otherwise it answers how long until the oldest blocking grant leaves the window. Because a
grant is only made when fewer than N grants lie in the window ending at it, no window of that
length ever holds more than N grants. The window is one second plus a small margin
(defaults.SMS_RATE_WINDOW_MARGIN_MS) for network jitter.

Without Redis (the demo's in-process queue) a process-local limiter applies the same rule.
"""
from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

from kinnekt import defaults

_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 2])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    local blocking = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
    local until_free = tonumber(blocking[2]) + window - now + 1
    if until_free > wait then wait = until_free end
  end
end
if wait > 0 then
  return {0, wait, now}
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, math.floor(window / 1000) + 1000)
end
return {1, 0, now}
"""


class RateLimitTimeout(RuntimeError):
    """No slot came free within the bounded wait."""


@dataclass(frozen=True)
class Limit:
    """At most `per_second` grants per window under `key`."""

    key: str
    per_second: int


class RedisRateLimiter:
    """The shared limiter: all workers and processes using the same Redis and keys share the limits."""

    def __init__(self, redis, limits: list[Limit], *, window_ms: int | None = None):
        self.redis = redis
        self.limits = [limit for limit in limits if limit.per_second > 0]
        self.window_us = int(1000 * (window_ms if window_ms is not None else 1000 + defaults.SMS_RATE_WINDOW_MARGIN_MS))
        self._script = redis.register_script(_SCRIPT)

    def try_acquire(self) -> tuple[bool, float, float]:
        """One attempt: (granted, seconds to wait before trying again, server time in seconds)."""
        if not self.limits:
            return True, 0.0, time.time()
        granted, wait_us, now_us = self._script(
            keys=[limit.key for limit in self.limits],
            args=[self.window_us, uuid.uuid4().hex, *[limit.per_second for limit in self.limits]])
        return bool(granted), int(wait_us) / 1e6, int(now_us) / 1e6

    def acquire(self, max_wait: float | None = None) -> float:
        """Block until a grant (returns its time, seconds on the server clock) or raise RateLimitTimeout."""
        return _acquire(self.try_acquire, max_wait)


class LocalRateLimiter:
    """The same rule inside one process (in-process queue, no Redis); limits with equal keys are shared."""

    _lock = threading.Lock()
    _grants: dict[str, deque] = {}

    def __init__(self, limits: list[Limit], *, window_ms: int | None = None):
        self.limits = [limit for limit in limits if limit.per_second > 0]
        self.window = (window_ms if window_ms is not None else 1000 + defaults.SMS_RATE_WINDOW_MARGIN_MS) / 1000

    def try_acquire(self) -> tuple[bool, float, float]:
        """One attempt: (granted, seconds to wait, grant time on the monotonic clock)."""
        with self._lock:
            now = time.monotonic()
            wait = 0.0
            for limit in self.limits:
                grants = self._grants.setdefault(limit.key, deque())
                while grants and grants[0] <= now - self.window:
                    grants.popleft()
                if len(grants) >= limit.per_second:
                    wait = max(wait, grants[len(grants) - limit.per_second] + self.window - now + 1e-6)
            if wait > 0:
                return False, wait, now
            for limit in self.limits:
                self._grants[limit.key].append(now)
            return True, 0.0, now

    def acquire(self, max_wait: float | None = None) -> float:
        """Block until a grant (returns its monotonic time) or raise RateLimitTimeout."""
        return _acquire(self.try_acquire, max_wait)


def _acquire(attempt, max_wait: float | None) -> float:
    max_wait = defaults.SMS_RATE_MAX_WAIT_SECONDS if max_wait is None else max_wait
    deadline = time.monotonic() + max_wait
    while True:
        granted, wait, at = attempt()
        if granted:
            return at
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RateLimitTimeout(f"no send slot within {max_wait:g} s")
        # a little jitter so waiting workers do not all wake in the same microsecond
        time.sleep(min(wait + random.uniform(0, 0.005), remaining))


def limits_for(api_key: str, sender: str | None, config) -> list[Limit]:
    """The account and sender limits from config (SMS_RATE_PER_SECOND, SMS_SENDER_RATE_PER_SECOND)."""
    account = hashlib.sha256(api_key.encode()).hexdigest()[:16]
    limits = [Limit(f"kinnekt:sms:rate:account:{account}", int(config.get("SMS_RATE_PER_SECOND") or 0))]
    if sender:
        limits.append(Limit(f"kinnekt:sms:rate:sender:{sender.replace(' ', '')}",
                            int(config.get("SMS_SENDER_RATE_PER_SECOND") or 0)))
    return limits


_redis_clients: dict[str, object] = {}


def shared_redis(url: str):
    """One Redis client per URL in this process (its connection pool is thread-safe)."""
    client = _redis_clients.get(url)
    if client is None:
        from redis import Redis
        client = _redis_clients.setdefault(url, Redis.from_url(url))
    return client


def limiter_for(api_key: str, sender: str | None):
    """The limiter for sends with this account and sender: in Redis when REDIS_URL is set, else in-process."""
    from flask import current_app
    config = current_app.config
    limits = limits_for(api_key, sender, config)
    url = config.get("REDIS_URL")
    if not url:
        return LocalRateLimiter(limits)
    return RedisRateLimiter(shared_redis(url), limits)
