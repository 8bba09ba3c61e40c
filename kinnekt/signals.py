"""Domain events a lower module announces and a higher one acts on, so that the lower one need not import it
(blinker signals, as Flask ships them). Each receiver is connected where it is defined.

- `segment_members_changed(session, segment_ids=…)`: entries or leaves of these segments were committed (not by
  a build or an edit): kinnekt.automations.engine queues the fires of the automations that watch them.
- `number_unreachable(session, subscriber=…, reason=…, source=…)`: the SMS provider refused a subscriber's number
  for good: kinnekt.subscribers.optin suppresses the subscriber.

`announce` imports RECEIVER_MODULES before the first signal is sent, so that every receiver runs in any process,
including one that never imported its module (a worker that only sends texts).
"""
from __future__ import annotations

import importlib

from blinker import Namespace, Signal

_signals = Namespace()

segment_members_changed = _signals.signal("segment-members-changed")
number_unreachable = _signals.signal("number-unreachable")

RECEIVER_MODULES = ("kinnekt.automations.engine", "kinnekt.subscribers.optin")
"""The modules whose functions receive these signals."""

_connected = False


def announce(signal: Signal, session, **details) -> list:
    """Send `signal` with the session as its sender, after making sure every receiver is connected; returns the
    receivers' (receiver, result) pairs. A receiver's error propagates to the caller, as a direct call would."""
    global _connected
    if not _connected:
        for name in RECEIVER_MODULES:
            importlib.import_module(name)
        _connected = True
    return signal.send(session, **details)
