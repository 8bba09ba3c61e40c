"""What an SMS gateway is (`Gateway`: sends one text), what it answers (`SendResult`), and the error of having none
(`GatewayNotConfigured`). The gateways (the Outbox and the choice of gateway in kinnekt.sms.gateway, Vonage in
kinnekt.sms.vonage) import these; kinnekt.sms.gateway imports its Vonage gateway, never the reverse."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


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
    """Something that sends one SMS. A `rate_limited` one also has `account` and `sender`, which name its limits
    (kinnekt/sms/ratelimit.limiter_for)."""

    name: str
    rate_limited: bool

    def send(self, to: str, text: str, client_ref: str) -> SendResult:
        """Send `text` to the E.164 number `to`; `client_ref` comes back on the delivery receipt."""


class GatewayNotConfigured(RuntimeError):
    """No way to send: no Vonage application (id and private key) outside the demo, or no sender."""
