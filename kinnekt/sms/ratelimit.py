"""The send rate limiter shared by every worker: grants evenly spaced, so no one-second window holds more than N.

Each limit (per Vonage account, per sender) keeps in Redis the earliest time of its next grant (a GCRA
with no burst). One Lua script, atomic on the server and timed by the server's clock (so workers'
clocks do not matter), grants only when every limit's next time has come, and then moves each of them
one spacing later; otherwise it answers how long to wait. A grant made a little after its time (a worker
wakes late) keeps the schedule, so that the rate does not sag below the spacing, but only within a
slack (defaults.SMS_RATE_SLACK_MS). The spacing is (window + slack) / N, the window being one second
plus a margin (defaults.SMS_RATE_WINDOW_MARGIN_MS): N + 1 grants then span at least the window, so no
one-second window ever holds more than N, and a request may reach the provider up to the margin late
(network, a busy machine) before two grants could crowd into one second there. Even spacing rather than a sliding window matters for that: a sliding window lets N
grants go at once, and then any lateness among them puts N + 1 into some second at the provider.

The state can be lost (Redis restarted without saving, or flushed) while grants were made a moment ago.
A marker key without expiry (`STATE_KEY`) tells a lost state from a limit that was idle long enough for
its key to expire: when the marker is missing, every limit starts as if a grant had just been made (its
next grant one spacing away), which continues the schedule the lost state held, since its next grant was
never more than one spacing ahead. Redis must not evict keys (`maxmemory-policy noeviction`, as RQ needs).
When Redis cannot be reached, acquiring raises RateLimitUnavailable: no slot, nothing sent.

Without Redis (the demo's in-process queue) a process-local limiter applies the same rule.
"""
from __future__ import annotations

import hashlib
import random
import threading
import time
from dataclasses import dataclass

from kinnekt import defaults

STATE_KEY = "kinnekt:sms:rate:state"
"""Set with the first grant after the limits' state was lost, never expires: its absence means a lost state."""

_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local slack = tonumber(ARGV[2])
local n = #KEYS - 1
if redis.call('EXISTS', KEYS[#KEYS]) == 0 then
  for i = 1, n do
    local spacing = math.ceil((window + slack) / tonumber(ARGV[i + 2]))
    local due = tonumber(redis.call('GET', KEYS[i]) or '0')
    if due < now + spacing then due = now + spacing end
    redis.call('SET', KEYS[i], due, 'PX', math.floor((due - now) / 1000) + 1000)
  end
  redis.call('SET', KEYS[#KEYS], now)
end
local wait = 0
for i = 1, n do
  local next_grant = tonumber(redis.call('GET', KEYS[i]) or '0')
  if next_grant - now > wait then wait = next_grant - now end
end
if wait > 0 then
  return {0, wait, now}
end
for i = 1, n do
  local spacing = math.ceil((window + slack) / tonumber(ARGV[i + 2]))
  local due = tonumber(redis.call('GET', KEYS[i]) or '0')
  if due < now - slack then due = now end
  redis.call('SET', KEYS[i], due + spacing, 'PX', math.floor(spacing / 1000) + 1000)
end
return {1, 0, now}
"""


class RateLimitTimeout(RuntimeError):
    """No slot came free within the bounded wait."""


class RateLimitUnavailable(RateLimitTimeout):
    """The shared limiter could not be asked (Redis unreachable): no slot, so nothing may be sent now."""


@dataclass(frozen=True)
class Limit:
    """At most `per_second` grants per window under `key`."""

    key: str
    per_second: int


class RedisRateLimiter:
    """The shared limiter: all workers and processes using the same Redis and keys share the limits."""

    attempt_started: float = 0.0
    """Monotonic time at which the last grant's attempt began: the grant was made no earlier, so the time since
    then bounds how late a request follows its slot, a pause while the answer came back from Redis included."""

    def __init__(self, redis, limits: list[Limit], *, window_ms: int | None = None, state_key: str = STATE_KEY):
        self.redis = redis
        self.limits = [limit for limit in limits if limit.per_second > 0]
        self.state_key = state_key
        self.window_us = int(1000 * (window_ms if window_ms is not None else 1000 + defaults.SMS_RATE_WINDOW_MARGIN_MS))
        self.slack_us = 1000 * defaults.SMS_RATE_SLACK_MS
        self._script = redis.register_script(_SCRIPT)

    def try_acquire(self) -> tuple[bool, float, float]:
        """One attempt: (granted, seconds to wait before trying again, server time in seconds)."""
        if not self.limits:
            return True, 0.0, time.time()
        from redis.exceptions import RedisError
        try:
            granted, wait_us, now_us = self._script(
                keys=[*(limit.key for limit in self.limits), self.state_key],
                args=[self.window_us, self.slack_us, *[limit.per_second for limit in self.limits]])
        except RedisError as error:
            raise RateLimitUnavailable(f"the send rate limiter cannot be reached: {error}") from error
        return bool(granted), int(wait_us) / 1e6, int(now_us) / 1e6

    def acquire(self, max_wait: float | None = None) -> float:
        """Block until a grant (returns its time, seconds on the server clock) or raise RateLimitTimeout.
        `attempt_started` is then the monotonic time at which the granting attempt began."""
        at, self.attempt_started = _acquire(self.try_acquire, max_wait)
        return at


class LocalRateLimiter:
    """The same rule inside one process (in-process queue, no Redis); limits with equal keys are shared."""

    _lock = threading.Lock()
    _next: dict[str, float] = {}  # key -> monotonic time of its next grant
    attempt_started: float = 0.0

    def __init__(self, limits: list[Limit], *, window_ms: int | None = None):
        self.limits = [limit for limit in limits if limit.per_second > 0]
        self.window = (window_ms if window_ms is not None else 1000 + defaults.SMS_RATE_WINDOW_MARGIN_MS) / 1000

    def try_acquire(self) -> tuple[bool, float, float]:
        """One attempt: (granted, seconds to wait, grant time on the monotonic clock)."""
        with self._lock:
            now = time.monotonic()
            wait = max((self._next.get(limit.key, 0.0) - now for limit in self.limits), default=0.0)
            if wait > 0:
                return False, wait, now
            slack = defaults.SMS_RATE_SLACK_MS / 1000
            for limit in self.limits:
                due = self._next.get(limit.key, 0.0)
                spacing = (self.window + slack) / limit.per_second
                self._next[limit.key] = (due if due >= now - slack else now) + spacing
            return True, 0.0, now

    def acquire(self, max_wait: float | None = None) -> float:
        """Block until a grant (returns its monotonic time) or raise RateLimitTimeout; `attempt_started` as in
        RedisRateLimiter."""
        at, self.attempt_started = _acquire(self.try_acquire, max_wait)
        return at


def _acquire(attempt, max_wait: float | None) -> tuple[float, float]:
    """(grant time as the attempt reports it, monotonic time at which the granting attempt began)."""
    max_wait = defaults.SMS_RATE_MAX_WAIT_SECONDS if max_wait is None else max_wait
    deadline = time.monotonic() + max_wait
    while True:
        started = time.monotonic()
        granted, wait, at = attempt()
        if granted:
            return at, started
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
