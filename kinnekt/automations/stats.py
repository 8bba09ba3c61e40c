"""What an automation did lately: its latest messages ("runs") for the automation's page."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.models import Message, Subscriber
from kinnekt.models.automation import Automation
from kinnekt.models.message import MessageStatus

RECENT_RUNS = 25
"""How many of the latest messages the automation's page lists."""

STATUS_LABELS = {"pending": "Waiting", "claimed": "Sending", "sending": "Sending", "sent": "Sent",
                 "delivered": "Delivered", "failed": "Failed", "unknown": "Unknown", "skipped": "Skipped",
                 "ended": "Stopped"}
"""Message statuses in the merchant's words ("ended": the automation was switched off before it was sent)."""

STATUS_TONES = {"pending": "info", "claimed": "attention", "sending": "attention", "sent": "success",
                "delivered": "success", "failed": "critical", "unknown": "warning", "skipped": None, "ended": None}


@dataclass(frozen=True)
class Run:
    """One message an automation made for one subscriber's entry (or leave)."""

    message_id: int
    subscriber_id: int | None
    phone: str
    status: str
    due_at: dt.datetime | None
    sent_at: dt.datetime | None
    skip_reason: str | None
    error_reason: str | None
    error_code: str | None = None

    @property
    def status_label(self) -> str:
        """The status in the merchant's words."""
        return STATUS_LABELS.get(self.status, self.status)

    @property
    def tone(self) -> str | None:
        """The badge tone of the status."""
        return STATUS_TONES.get(self.status)


def mask_phone(phone: str | None) -> str:
    """A phone with its middle digits hidden ("+1 ••• ••• 0123"), enough to tell recipients apart."""
    phone = (phone or "").strip()
    digits = phone.lstrip("+")
    if len(digits) <= 4:
        return phone
    head = "+" + digits[:1] if phone.startswith("+") else digits[:1]
    return f"{head} {'•' * (len(digits) - 5)} {digits[-4:]}"


def recent_runs(session: OrmSession, automation: Automation, *, limit: int = RECENT_RUNS) -> list[Run]:
    """The automation's latest messages, newest first, with the recipient's masked phone."""
    rows = session.execute(
        select(Message.id, Message.subscriber_id, Message.to_phone, Subscriber.phone, Message.status,
               Message.due_at, Message.sent_at, Message.skip_reason, Message.error_reason, Message.error_code)
        .outerjoin(Subscriber, Subscriber.id == Message.subscriber_id)
        .where(Message.shop_id == automation.shop_id, Message.campaign_id == automation.campaign_id)
        .order_by(Message.id.desc()).limit(limit)).all()
    return [Run(message_id=id_, subscriber_id=subscriber_id, phone=mask_phone(phone or to_phone), status=status,
                due_at=due_at, sent_at=sent_at, skip_reason=skip_reason, error_reason=error_reason,
                error_code=error_code)
            for id_, subscriber_id, to_phone, phone, status, due_at, sent_at, skip_reason, error_reason, error_code
            in rows]


def waiting(session: OrmSession, automation: Automation) -> int:
    """The automation's messages queued and not sent yet (waiting for their delay or for quiet hours to end):
    they are rendered when they go, so they go with the message as it is then."""
    return session.scalar(select(func.count()).select_from(Message).where(
        Message.shop_id == automation.shop_id, Message.campaign_id == automation.campaign_id,
        Message.status.in_(MessageStatus.WAITING))) or 0
