"""Domain events a lower module announces and a higher one acts on, so that the lower one need not import it
(blinker signals, as Flask ships them). Each receiver is connected where it is defined.

- `segment_members_changed(session, segment_ids=…)`: entries or leaves of these segments were committed (not by
  a build or an edit): kinnekt.automations.engine queues the fires of the automations that watch them.
- `segment_members_written(session, segment_ids=…)`: entries or leaves of these segments were committed, by any
  cause (builds and edits included): kinnekt.shopify.tag_mirror queues the sync of the ones mirrored into a
  Shopify customer tag.
- `segment_deleting(session, segment=…)`: a segment is about to be deleted (not committed yet):
  kinnekt.shopify.tag_mirror switches its tag mirror off and removes its tags once the deletion commits.
- `subscribers_rechecked(session, shop_id=…, subscriber_ids=…)`: data of these subscribers changed (an order, a
  checkout, consent) and their segment memberships were re-checked and committed: kinnekt.flows.engine queues the
  shop's flows job (entries and exits).
- `number_unreachable(session, subscriber=…, reason=…, source=…)`: the SMS provider refused a subscriber's number
  for good: kinnekt.subscribers.optin suppresses the subscriber.
- `subscribers_changed(session, shop_id=…, subscriber_ids=…)`: these subscribers' consent, messages, properties or
  import were committed: kinnekt.segments.membership queues their re-check against the shop's segments.
- `keyword_created(session, keyword=…)`: a keyword was added (not committed yet): kinnekt.segments.auto adds its
  "Keyword: <WORD>" segment in the same transaction.
- `keyword_deleting(session, keyword=…, confirmed=…)`: a keyword is about to be deleted: kinnekt.segments.auto
  deletes its segment, or (not `confirmed`) returns the usages that stop it (a list; the keyword stays then).
- `orders_written(session, shop=…, order_ids=…)`: orders were upserted and committed: kinnekt.campaigns.attribution
  credits them to campaigns and returns the subscribers a discount code credits, before and after (a list).
- `sms_consent_changed(session, subscriber_id=…)`: a subscriber linked to a Shopify customer opted in or out here
  (not by consent that came from Shopify): kinnekt.shopify.tasks queues the write-back to Shopify.
- `storefront_activity(session, shop_id=…, subscriber_ids=…)`: storefront events of these subscribers were
  committed (new ones, or earlier ones just attributed to them): the segment re-checks follow (browsing rules).
- `sending_allowed(session, shop=…)`: a sender asks before each batch whether the shop may send now; a receiver
  (kinnekt.billing.allowance: the shop's plan) answers why not, or None.
- `messages_accepted(session, shop_id=…, message_ids=…)`: the provider accepted these messages (a sender's batch, a
  reply or test send, or an `unknown` send a receipt confirmed):
  kinnekt.billing.tasks queues their usage charge.
- `audience_snapshot_taken(session, campaign=…, shop=…)`: a campaign's audience snapshot is committed, before its
  senders are queued: kinnekt.billing.allowance skips the rows beyond the plan's cap when the merchant chose so.
- `subscription_changed(session, shop=…, topic=…, payload=…)`: an app_subscriptions webhook arrived:
  kinnekt.billing.plans applies it to the shop's plan (and returns a note).
- `segment_rebuilt(session, segment_id=…, cause=…, changed=…)`: a full build of this segment committed (`changed`:
  someone entered or left): kinnekt.audiences.tasks queues the sync of its ad audiences (after an edit, or a change).
- `subscribers_redacted(session, shop_id=…)`: a customers/redact deleted subscribers of this shop and committed:
  kinnekt.audiences.tasks queues the syncs that remove them from the shop's ad audiences.

`announce` imports RECEIVER_MODULES before the first signal is sent, so that every receiver runs in any process,
including one that never imported its module (a worker that only sends texts).
"""
from __future__ import annotations

import importlib

from blinker import Namespace, Signal

_signals = Namespace()

segment_members_changed = _signals.signal("segment-members-changed")
segment_members_written = _signals.signal("segment-members-written")
segment_deleting = _signals.signal("segment-deleting")
number_unreachable = _signals.signal("number-unreachable")
storefront_activity = _signals.signal("storefront-activity")
subscribers_changed = _signals.signal("subscribers-changed")
subscribers_rechecked = _signals.signal("subscribers-rechecked")
keyword_created = _signals.signal("keyword-created")
keyword_deleting = _signals.signal("keyword-deleting")
orders_written = _signals.signal("orders-written")
sms_consent_changed = _signals.signal("sms-consent-changed")
sending_allowed = _signals.signal("sending-allowed")
messages_accepted = _signals.signal("messages-accepted")
audience_snapshot_taken = _signals.signal("audience-snapshot-taken")
subscription_changed = _signals.signal("subscription-changed")
segment_rebuilt = _signals.signal("segment-rebuilt")
subscribers_redacted = _signals.signal("subscribers-redacted")

RECEIVER_MODULES = ("kinnekt.audiences.tasks", "kinnekt.automations.engine", "kinnekt.billing.allowance",
                    "kinnekt.billing.plans", "kinnekt.billing.tasks", "kinnekt.campaigns.attribution",
                    "kinnekt.flows.engine", "kinnekt.segments.auto", "kinnekt.segments.browsing",
                    "kinnekt.segments.membership", "kinnekt.shopify.tag_mirror", "kinnekt.shopify.tasks",
                    "kinnekt.subscribers.optin")
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


def gathered(results: list) -> list:
    """The items of the lists the receivers of one `announce` returned, in receiver order (None counts as none)."""
    return [item for _receiver, found in results for item in (found or ())]
