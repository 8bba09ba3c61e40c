"""The send rate limiter shared by every worker: grants evenly spaced, so no one-second window holds more than N.

Each limit (per Vonage account, per sender) keeps in Redis the time of its next free slot (a GCRA with no
burst). One Lua script, atomic on the server and timed by the server's clock (so workers' clocks do not
matter), books a sender the first slot free in every limit and moves each limit's next slot one spacing
later; the sender then sleeps until its slot. So two senders never spend a Redis call on a slot the other
one got, and no slot goes unused while both wait (asking again after a sleep used to lose slots and cost a
call per attempt). A slot taken a little after its time (nobody asked at once) keeps the schedule, so that
the rate does not sag below the spacing, but only within a slack (defaults.SMS_RATE_SLACK_MS). The spacing
is (window + slack) / N, the window being one second plus a margin (defaults.SMS_RATE_WINDOW_MARGIN_MS):
N + 1 grants then span at least the window, so no one-second window ever holds more than N, and a request
may reach the provider up to the margin late (network, a busy machine) before two grants could crowd into
one second there. Even spacing rather than a sliding window matters for that: a sliding window lets N
grants go at once, and then any lateness among them puts N + 1 into some second at the provider.

The state can be lost (Redis restarted without saving, or flushed) while grants were made a moment ago.
A marker key without expiry (`STATE_KEY`, holding the time the state began) tells a lost state from a limit
that was idle long enough for its key to expire: when the marker is missing, every limit starts as if a
grant had just been made (its next slot one spacing away), which continues the schedule the lost state
held as far as grants already made go. A sender that slept until a booked slot checks that the state it
booked in is still the current one, and books again if not: a booking of a lost state is no grant. Redis
must not evict keys (`maxmemory-policy noeviction`, as RQ needs). When Redis cannot be reached, acquiring
raises RateLimitUnavailable: no slot, nothing sent.

Without Redis (the demo's in-process queue) a process-local limiter applies the same rule.
"""
from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

from kinnekt import defaults

STATE_KEY = "kinnekt:sms:rate:state"
"""Set (to the server time) by the first grant after the limits' state was lost, never expires: its absence
means a lost state, and its value tells one state from the next."""

_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local slack = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local n = #KEYS - 1
local epoch = redis.call('GET', KEYS[#KEYS])
if not epoch then
  for i = 1, n do
    local spacing = math.ceil((window + slack) / tonumber(ARGV[i + 3]))
    local due = tonumber(redis.call('GET', KEYS[i]) or '0')
    if due < now + spacing then due = now + spacing end
    redis.call('SET', KEYS[i], due, 'PX', math.floor((due - now) / 1000) + 1000)
  end
  epoch = tostring(now)
  redis.call('SET', KEYS[#KEYS], epoch)
end
local slot = now
for i = 1, n do
  local next_slot = tonumber(redis.call('GET', KEYS[i]) or '0')
  if next_slot > slot then slot = next_slot end
end
if slot - now > max_wait then
  return {0, slot - now, now, epoch}
end
for i = 1, n do
  local spacing = math.ceil((window + slack) / tonumber(ARGV[i + 3]))
  local due = tonumber(redis.call('GET', KEYS[i]) or '0')
  if due < slot - slack then due = slot end
  redis.call('SET', KEYS[i], due + spacing, 'PX', math.floor((due + spacing - now) / 1000) + 1000)
end
return {1, slot - now, slot, epoch}
"""
"""Book the first slot free in every limit, if it comes within max_wait (µs): {granted, µs until the slot,
the slot's server time (µs), the state's epoch}. With max_wait 0 it grants only a slot free now."""


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
    """Monotonic time at which the last grant's slot began, at the earliest: the time since then bounds how
    late a request follows its slot (a pause while the answer came back from Redis, or after the sleep)."""

    def __init__(self, redis, limits: list[Limit], *, window_ms: int | None = None, state_key: str = STATE_KEY):
        self.redis = redis
        self.limits = [limit for limit in limits if limit.per_second > 0]
        self.state_key = state_key
        self.window_us = int(1000 * (window_ms if window_ms is not None else 1000 + defaults.SMS_RATE_WINDOW_MARGIN_MS))
        self.slack_us = 1000 * defaults.SMS_RATE_SLACK_MS
        self._script = redis.register_script(_SCRIPT)

    def reserve(self, max_wait: float) -> tuple[bool, float, float, str]:
        """Book the first free slot if it comes within `max_wait` seconds: (granted, seconds until the slot,
        the slot's server time in seconds, the state's epoch). Not granted: nothing was booked."""
        if not self.limits:
            return True, 0.0, time.time(), ""
        from redis.exceptions import RedisError
        try:
            granted, wait_us, at_us, epoch = self._script(
                keys=[*(limit.key for limit in self.limits), self.state_key],
                args=[self.window_us, self.slack_us, int(max_wait * 1e6), *[limit.per_second for limit in self.limits]])
        except RedisError as error:
            raise RateLimitUnavailable(f"the send rate limiter cannot be reached: {error}") from error
        epoch = epoch.decode() if isinstance(epoch, bytes) else epoch
        return bool(granted), int(wait_us) / 1e6, int(at_us) / 1e6, epoch

    def try_acquire(self) -> tuple[bool, float, float]:
        """A slot free now, or none: (granted, seconds until the next free one, server time in seconds)."""
        granted, wait, at, _ = self.reserve(0)
        return granted, wait, at

    def acquire(self, max_wait: float | None = None) -> float:
        """Book a slot and sleep until it (returns its time, seconds on the server clock), or raise
        RateLimitTimeout when none comes within `max_wait` (SMS_RATE_MAX_WAIT_SECONDS)."""
        max_wait = defaults.SMS_RATE_MAX_WAIT_SECONDS if max_wait is None else max_wait
        deadline = time.monotonic() + max_wait
        while True:
            started = time.monotonic()
            granted, wait, at, epoch = self.reserve(max(0.0, deadline - started))
            if not granted:
                raise RateLimitTimeout(f"no send slot within {max_wait:g} s")
            self.attempt_started = started + wait
            if wait <= 0:
                return at
            time.sleep(wait)
            if self._epoch() == epoch:
                return at
            # The state was lost while we slept: that booking is void; book in the new state.

    def _epoch(self) -> str | None:
        from redis.exceptions import RedisError
        try:
            value = self.redis.get(self.state_key)
        except RedisError as error:
            raise RateLimitUnavailable(f"the send rate limiter cannot be reached: {error}") from error
        return value.decode() if isinstance(value, bytes) else value


class LocalRateLimiter:
    """The same rule inside one process (in-process queue, no Redis); limits with equal keys are shared."""

    _lock = threading.Lock()
    _next: dict[str, float] = {}  # key -> monotonic time of its next free slot
    attempt_started: float = 0.0

    def __init__(self, limits: list[Limit], *, window_ms: int | None = None):
        self.limits = [limit for limit in limits if limit.per_second > 0]
        self.window = (window_ms if window_ms is not None else 1000 + defaults.SMS_RATE_WINDOW_MARGIN_MS) / 1000

    def reserve(self, max_wait: float) -> tuple[bool, float, float]:
        """As RedisRateLimiter.reserve, on the monotonic clock: (granted, seconds until the slot, its time)."""
        with self._lock:
            now = time.monotonic()
            slot = max([now, *(self._next.get(limit.key, 0.0) for limit in self.limits)])
            if slot - now > max_wait:
                return False, slot - now, now
            slack = defaults.SMS_RATE_SLACK_MS / 1000
            for limit in self.limits:
                due = self._next.get(limit.key, 0.0)
                spacing = (self.window + slack) / limit.per_second
                self._next[limit.key] = (due if due >= slot - slack else slot) + spacing
            return True, slot - now, slot

    def try_acquire(self) -> tuple[bool, float, float]:
        """A slot free now, or none: (granted, seconds until the next free one, monotonic time)."""
        return self.reserve(0)

    def acquire(self, max_wait: float | None = None) -> float:
        """Book a slot and sleep until it (returns its monotonic time), or raise RateLimitTimeout."""
        max_wait = defaults.SMS_RATE_MAX_WAIT_SECONDS if max_wait is None else max_wait
        started = time.monotonic()
        granted, wait, at = self.reserve(max_wait)
        if not granted:
            raise RateLimitTimeout(f"no send slot within {max_wait:g} s")
        self.attempt_started = started + wait
        if wait > 0:
            time.sleep(wait)
        return at


def limits_for(account_id: str, sender: str | None, config, sender_rate: int | None = None) -> list[Limit]:
    """The account and sender limits: the account's from SMS_RATE_PER_SECOND (named by the Vonage application id),
    the sender's from `sender_rate` when the sender is one of a shop's own numbers (its kind's rate,
    kinnekt/sms/senders.rate_for; 0: none beyond the account's), else SMS_SENDER_RATE_PER_SECOND. A send must
    satisfy both."""
    account = hashlib.sha256(account_id.encode()).hexdigest()[:16]
    limits = [Limit(f"kinnekt:sms:rate:account:{account}", int(config.get("SMS_RATE_PER_SECOND") or 0))]
    if sender:
        per_second = int(config.get("SMS_SENDER_RATE_PER_SECOND") or 0) if sender_rate is None else int(sender_rate)
        limits.append(Limit(f"kinnekt:sms:rate:sender:{sender.replace(' ', '')}", per_second))
    return limits


_redis_clients: dict[str, object] = {}


def shared_redis(url: str):
    """One Redis client per URL in this process (its connection pool is thread-safe)."""
    client = _redis_clients.get(url)
    if client is None:
        from redis import Redis
        client = _redis_clients.setdefault(url, Redis.from_url(url))
    return client


def limiter_for(account_id: str, sender: str | None, sender_rate: int | None = None):
    """The limiter for sends with this account and sender (at `sender_rate` per second when given, see
    `limits_for`): in Redis when REDIS_URL is set, else in-process."""
    from flask import current_app
    config = current_app.config
    limits = limits_for(account_id, sender, config, sender_rate)
    url = config.get("REDIS_URL")
    if not url:
        return LocalRateLimiter(limits)
    return RedisRateLimiter(shared_redis(url), limits)
