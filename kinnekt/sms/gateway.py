"""The Outbox sink (demo) and the choice of gateway for a shop; what a gateway is and answers: kinnekt.sms.protocol.
Which of the shop's senders a text goes out from: kinnekt.sms.senders (`get_gateway` asks it)."""
from __future__ import annotations

import copy
import os
import threading

from flask import current_app
from sqlalchemy.exc import IntegrityError
from sqlalchemy import select

from kinnekt.models import OutboxMessage, Shop
from kinnekt.sms.protocol import Gateway, GatewayNotConfigured, SendResult  # noqa: F401  (callers use them here)


class OutboxGateway:
    """The demo's sink: each "sent" message becomes an OutboxMessage row; nothing reaches a phone."""

    name = "outbox"
    rate_limited = False

    sender_rate: int | None = None

    def __init__(self, shop: Shop, sender: str | None, session=None):
        from kinnekt.db import Session
        self.shop_id = shop.id
        self.sender = sender
        self.session = session if session is not None else Session()

    def with_sender(self, sender: str, rate: int | None = None) -> "OutboxGateway":
        """The same sink writing `sender` as the sender."""
        other = copy.copy(self)
        other.sender, other.sender_rate = sender, rate
        return other

    def send(self, to: str, text: str, client_ref: str) -> SendResult:
        """Write the row (once per client_ref) in the caller's transaction and report it sent."""
        row = OutboxMessage(shop_id=self.shop_id, to_phone=to, sender=self.sender, text=text, client_ref=client_ref)
        try:
            with self.session.begin_nested():
                self.session.add(row)
                self.session.flush()
        except IntegrityError:  # the same message "sent" before: report that one, write nothing
            row = self.session.scalar(select(OutboxMessage).where(OutboxMessage.client_ref == client_ref))
        return SendResult(provider_id=f"outbox-{row.id}", status="sent")  # priced by kinnekt/sms/prices.py


_vonage_lock = threading.Lock()
_vonage_cache: dict[tuple, object] = {}


def _forget_parents_clients() -> None:
    """In a forked child (an RQ work horse), drop the parent's Vonage clients without using them: their kept-alive
    TLS connection is the parent's, and two processes writing one TLS stream garble it for both (a send then fails,
    or its answer is lost). The child opens its own connection when it first sends."""
    global _vonage_lock
    _vonage_lock = threading.Lock()  # another thread of the parent may have held it at the fork
    _vonage_cache.clear()


os.register_at_fork(after_in_child=_forget_parents_clients)


def sender_for(shop: Shop, session=None, to: str | None = None):
    """The sender of a text from `shop` to `to` (kinnekt.sms.senders.choose: the shop's own number for the
    recipient's country, its default, its Sender setting, else the app's VONAGE_SENDER), or None."""
    from kinnekt.db import Session
    from kinnekt.sms import senders
    return senders.choose(session if session is not None else Session(), shop, to)


def get_gateway(shop: Shop, session=None, to: str | None = None) -> Gateway:
    """Vonage for real shops with credentials; the Outbox for demo shops (always) and a key-less demo app. The
    gateway sends from the shop's sender for `to` (without it: the shop's default sender)."""
    config = current_app.config
    chosen = sender_for(shop, session, to)
    sender, rate = (chosen.address, chosen.rate) if chosen is not None else (None, None)
    if shop.is_demo:
        return OutboxGateway(shop, sender, session).with_sender(sender, rate)
    if not config.get("VONAGE_APPLICATION_ID") or not config.get("VONAGE_PRIVATE_KEY"):
        if config.get("DEMO_MODE"):
            return OutboxGateway(shop, sender, session).with_sender(sender, rate)
        raise GatewayNotConfigured("SMS is not configured: set VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY.")
    if not sender:
        raise GatewayNotConfigured("No sender: set the shop's sender number in Settings, or VONAGE_SENDER.")
    from kinnekt.sms.vonage import VonageGateway
    key = (config["VONAGE_APPLICATION_ID"], config["VONAGE_PRIVATE_KEY"], config.get("VONAGE_HOST_OVERRIDE") or "",
           _callback_url(config))
    with _vonage_lock:
        made = _vonage_cache.get(key)
        if made is None:
            # One client (one kept-alive connection) and one signer per process and configuration; older ones
            # are dropped.
            _vonage_cache.clear()
            made = _vonage_cache[key] = (VonageGateway.make_client(key[2] or None),
                                         VonageGateway.make_signer(key[0], key[1]))
    client, signer = made
    return VonageGateway(client, sender=sender, account=key[0], signer=signer, callback=key[3], sender_rate=rate)


def _callback_url(config) -> str | None:
    """The status webhook URL passed with each message (`webhook_url`; https only, at most 100 characters)."""
    base = (config.get("SHOPIFY_APP_URL") or "").rstrip("/")
    url = f"{base}/sms/receipt"
    return url if base.startswith("https://") and len(url) <= 100 else None
