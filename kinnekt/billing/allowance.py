"""What a shop's plan lets it send: whether messages may go out at all, and a campaign's cost against what is
left under the cap. Senders (campaigns and automations) ask before every batch (the `sending_allowed` signal,
answered by `stop_reason`); the composer and scheduling ask `budget` before a campaign starts; a campaign whose
merchant chose to send only as far as the cap allows has the rest of its snapshot skipped (`limit_to_cap`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.orm import Session as OrmSession

from kinnekt import signals
from kinnekt.billing import plans, usage
from kinnekt.db import utcnow
from kinnekt.models import Campaign, Message, Shop
from kinnekt.models.billing import PlanStatus
from kinnekt.models.message import MessageStatus
from kinnekt.sms import prices

log = logging.getLogger(__name__)

UP_TO_CAP = "up_to_cap"
"""A campaign's choice to send only as far as the cap allows (the rest is skipped, `over_cap`)."""


def stop_reason(session: OrmSession, shop: Shop) -> str | None:
    """Why the shop may not send now (in the merchant's words, saying what to do), or None when it may."""
    if plans.exempt(shop):
        return None
    plan = plans.plan_for(session, shop.id)
    if plan is None or plan.status in (PlanStatus.DECLINED, PlanStatus.EXPIRED):
        return "Sending needs a plan: pick one in Settings (texts are charged on your Shopify bill)."
    if plan.status == PlanStatus.PENDING:
        return "Your plan waits for your approval: approve it in Settings to start sending."
    if plan.status == PlanStatus.FROZEN:
        return "Your plan is frozen because your Shopify bill is unpaid: settle it in Shopify to send again."
    if plan.status == PlanStatus.CANCELLED:
        return "Your plan was cancelled: pick a plan in Settings to send again."
    if plan.cap_reached_at is not None or headroom(session, shop) <= 0:
        return (f"Your capped amount of ${plan.capped_amount:,.2f} is used up for this period: "
                "raise it in Settings to send again.")
    return None


def headroom(session: OrmSession, shop: Shop) -> Decimal:
    """What is left under the cap once the records waiting for Shopify's answer are counted."""
    plan = plans.plan_for(session, shop.id)
    return max(Decimal(0), plans.remaining(plan) - usage.unanswered_amount(session, shop.id))


@dataclass(frozen=True)
class Budget:
    """A campaign's estimated cost against what is left under the cap."""

    cost: Decimal
    left: Decimal | None  # None: the shop is not billed (no cap applies)
    stop: str | None  # why nothing can be sent now, if so

    @property
    def over(self) -> bool:
        """True when the campaign would pass the cap."""
        return self.left is not None and self.cost > self.left


def budget(session: OrmSession, shop: Shop, cost: Decimal) -> Budget:
    """The campaign's cost (from the composer's estimate) against the shop's headroom."""
    if plans.exempt(shop):
        return Budget(cost, None, None)
    return Budget(cost, headroom(session, shop), stop_reason(session, shop))



@signals.sending_allowed.connect
def answer_sending_allowed(session: OrmSession, *, shop: Shop) -> str | None:
    """A sender asks whether the shop may send now: why not, or None (`stop_reason`)."""
    return stop_reason(session, shop)


@signals.audience_snapshot_taken.connect
def limit_to_cap(session: OrmSession, *, campaign: Campaign, shop: Shop) -> int:
    """When the merchant chose to send only as far as the cap allows (`campaign.cap_choice`), the snapshot's
    pending rows are kept, in order, while their estimated cost fits under what is left (parts with the
    first-message footer, at each recipient's country price: the table the composer's estimate uses); the rest
    are skipped (`over_cap`). Returns how many were skipped (none for a shop that is not billed)."""
    from kinnekt.campaigns import composer
    if campaign.cap_choice != UP_TO_CAP or plans.exempt(shop):
        return 0
    left = headroom(session, shop)
    analysed = composer.analysis(campaign.body, shop, discount_mode=campaign.discount_mode or "none",
                                 discount_code=campaign.discount_code)
    parts = max(analysed["segments"], analysed["first_message_segments"])
    rows = session.execute(select(Message.id, Message.to_phone).where(
        Message.campaign_id == campaign.id, Message.status == MessageStatus.PENDING).order_by(Message.id)).all()
    spent, over = Decimal(0), []
    for message_id, phone in rows:
        spent += prices.message_price(phone, parts)
        if spent > left:
            over.append(message_id)
    for start in range(0, len(over), 1000):
        session.execute(update(Message).where(Message.id.in_(over[start:start + 1000]),
                                              Message.status == MessageStatus.PENDING)
                        .values(status=MessageStatus.SKIPPED, skip_reason="over_cap", updated_at=utcnow())
                        .execution_options(synchronize_session=False))
    session.commit()
    if over:
        log.info("campaign %s: %s of %s messages skipped over the plan's cap", campaign.id, len(over), len(rows))
    return len(over)
