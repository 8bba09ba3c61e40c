"""The SMS gateway interface, the Outbox sink (demo), and the choice of gateway for a shop."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from flask import current_app
from sqlalchemy.exc import IntegrityError
from sqlalchemy import select

from kinnekt.models import OutboxMessage, Shop


@dataclass(frozen=True)
class SendResult:
    """What the provider said about one send.

    status: "sent" (accepted by the provider), "failed", or "unknown" (the request left and no answer came
    back: it may have been sent, so it is never sent again; a delivery receipt settles it).
    retryable: a failure worth trying again later (throttled, provider busy, request never left).
    recipient_unreachable: the provider refused this number for good (barred, de-activated).
    """

    provider_id: str | None
    status: str
    price: Decimal | None = None
    error_code: str | None = None
    error_text: str | None = None
    retryable: bool = False
    unknown_outcome: bool = False
    recipient_unreachable: bool = False


class Gateway(Protocol):
    """Something that sends one SMS."""

    name: str
    rate_limited: bool

    def send(self, to: str, text: str, client_ref: str) -> SendResult:
        """Send `text` to the E.164 number `to`; `client_ref` comes back on the delivery receipt."""


class GatewayNotConfigured(RuntimeError):
    """No way to send: no Vonage credentials outside the demo."""


class OutboxGateway:
    """The demo's sink: each "sent" message becomes an OutboxMessage row; nothing reaches a phone."""

    name = "outbox"
    rate_limited = False

    def __init__(self, shop: Shop, sender: str | None, session=None):
        from kinnekt.db import Session
        self.shop_id = shop.id
        self.sender = sender
        self.session = session if session is not None else Session()

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


def sender_for(shop: Shop) -> str | None:
    """The shop's sender number or id, else the app's VONAGE_SENDER."""
    return (shop.sender or "").strip() or (current_app.config.get("VONAGE_SENDER") or "").strip() or None


def get_gateway(shop: Shop, session=None) -> Gateway:
    """Vonage for real shops with credentials; the Outbox for demo shops (always) and a key-less demo app."""
    config = current_app.config
    sender = sender_for(shop)
    if shop.is_demo:
        return OutboxGateway(shop, sender, session)
    if not config.get("VONAGE_API_KEY") or not config.get("VONAGE_API_SECRET"):
        if config.get("DEMO_MODE"):
            return OutboxGateway(shop, sender, session)
        raise GatewayNotConfigured("SMS is not configured: set VONAGE_API_KEY and VONAGE_API_SECRET.")
    if not sender:
        raise GatewayNotConfigured("No sender: set the shop's sender number in Settings, or VONAGE_SENDER.")
    from kinnekt.sms.vonage import VonageGateway
    key = (config["VONAGE_API_KEY"], config["VONAGE_API_SECRET"], config.get("VONAGE_HOST_OVERRIDE") or "",
           _callback_url(config))
    with _vonage_lock:
        client = _vonage_cache.get(key)
        if client is None:
            # One client (one kept-alive connection) per process and configuration; older ones are dropped.
            _vonage_cache.clear()
            client = _vonage_cache[key] = VonageGateway.make_client(key[0], key[1], key[2] or None)
    return VonageGateway(client, sender=sender, api_key=key[0], callback=key[3])


def _callback_url(config) -> str | None:
    """The delivery-receipt URL passed with each message (Vonage allows at most 100 characters, https only)."""
    base = (config.get("SHOPIFY_APP_URL") or "").rstrip("/")
    url = f"{base}/sms/receipt"
    return url if base.startswith("https://") and len(url) <= 100 else None
