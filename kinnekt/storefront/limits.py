"""Rate limits of the public pixel endpoint: events per shop and per browser, counted in fixed windows.

The popup's sign-up limits (kinnekt/subscribers/signup_limits.py) write and commit a database row per attempt,
which is right for a few sign-ups an hour and wrong for thousands of events a second; the SMS limiter
(kinnekt/sms/ratelimit.py) spaces grants evenly with no burst, which would refuse the second of two batches a
page sends at once. So the pixel counts events in Redis: INCRBY + EXPIRE per key, the shop's and the browser's,
in the same fixed window (defaults.PIXEL_RATE_WINDOW_SECONDS), all in one script call: one round trip per batch. A batch
that takes either count past its limit is refused whole (429). Refused batches count too: a sender that keeps
retrying stays refused until the window turns.

Without Redis (the demo) or when Redis cannot be reached, a process-local counter applies the same rule:
an unreachable Redis never lets a batch through unlimited, and never turns into an error.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time

from kinnekt import defaults

log = logging.getLogger(__name__)

PREFIX = "kinnekt:pixel:rate"


class LocalCounter:
    """Fixed-window counts in this process (the demo, or Redis unreachable)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}

    def add(self, keys: list[str], amount: int, window: int) -> list[int]:
        """Add `amount` to each key's count in the current window; the new counts."""
        slot = int(time.time()) // window
        with self._lock:
            if len(self._counts) > 100_000:  # old windows' keys: drop them all
                self._counts = {k: v for k, v in self._counts.items() if k[1] == slot}
            out = []
            for key in keys:
                count = self._counts.get((key, slot), 0) + amount
                self._counts[(key, slot)] = count
                out.append(count)
            return out


_local = LocalCounter()


def browser_key(shop_id: int, client_id: str) -> str:
    """The counter of one browser of a shop (the client id hashed: keys carry no shopper's id)."""
    digest = hashlib.sha256(f"{shop_id}:{client_id}".encode()).hexdigest()[:24]
    return f"{PREFIX}:browser:{digest}"


def admit(shop_id: int, event_counts: dict[str, int], *, redis_url: str | None) -> bool:
    """Count a batch's events against its shop and each of its browsers (client id -> events); False when a
    count is over its limit (the batch is refused)."""
    total = sum(event_counts.values())
    window = defaults.PIXEL_RATE_WINDOW_SECONDS
    browsers = sorted(event_counts)
    keys = [f"{PREFIX}:shop:{shop_id}"] + [browser_key(shop_id, c) for c in browsers]
    counts = None
    if redis_url:
        try:
            counts = _redis_add_each(redis_url, keys, [total] + [event_counts[c] for c in browsers], window)
        except Exception as exc:  # noqa: BLE001 - any Redis failure falls back to the local count
            log.warning("pixel rate limits: Redis unavailable (%s); counting in this process", exc)
    if counts is None:
        counts = [_local.add([key], amount, window)[0]
                  for key, amount in zip(keys, [total] + [event_counts[c] for c in browsers])]
    if counts[0] > defaults.PIXEL_EVENTS_PER_SHOP_PER_MINUTE * window // 60:
        return False
    return all(count <= defaults.PIXEL_EVENTS_PER_BROWSER_PER_MINUTE * window // 60 for count in counts[1:])


ADD_EACH = """
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('INCRBY', key, ARGV[i + 1])
  redis.call('EXPIRE', key, ARGV[1])
end
return counts
"""
"""INCRBY + EXPIRE of every key of a batch in one command (a script, which Redis runs whole): one round trip and
one command to encode, where a pipeline of the same commands cost the endpoint four."""

_scripts: dict[str, object] = {}


def _redis_add_each(url: str, keys: list[str], amounts: list[int], window: int) -> list[int]:
    from kinnekt.sms.ratelimit import shared_redis
    script = _scripts.get(url)
    if script is None:  # redis-py's Script runs EVALSHA, and loads the script when Redis does not know it yet
        script = _scripts.setdefault(url, shared_redis(url).register_script(ADD_EACH))
    slot = int(time.time()) // window
    replies = script(keys=[f"{key}:{slot}" for key in keys], args=[window * 2, *amounts])
    return [int(count) for count in replies]


def reset_local() -> None:
    """Forget the process-local counts (tests)."""
    global _local
    _local = LocalCounter()
