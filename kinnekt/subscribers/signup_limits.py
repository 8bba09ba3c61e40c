"""Limits on web sign-up attempts: per IP address and per number, whatever the number's status.

Every attempt with a usable number counts against its IP address and against the number alike, so the
limits answer the same for numbers on the list and numbers that are not (the answer must not tell a
stranger who is subscribed). A shopper whose IP address cannot be told (an X-Forwarded-For we cannot
read) shares one allowance with every other such shopper: an unreadable header never lifts the limit.

An attempt is written and committed first, then the attempts in each window are counted, its own
included; one over a limit is deleted again and refused. So attempts arriving at the same moment
(several processes) can never all see room under the limit, and refused attempts leave no rows.
"""
from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.db import utcnow
from kinnekt.models import Shop, SignupAttempt

log = logging.getLogger(__name__)


def admit(session: OrmSession, shop: Shop, *, ip: str | None, phone: str, now: dt.datetime | None = None) -> bool:
    """Record a sign-up attempt for `phone` from `ip` (None: unknown); False (and nothing kept) over a limit.

    Commits: the attempt must be visible to concurrent attempts before they count.
    """
    now = now or utcnow()
    if ip is None:
        log.warning("shop %s: a sign-up whose IP address cannot be told (X-Forwarded-For unreadable, or "
                    "TRUSTED_PROXY_HOPS too high); counted under one shared allowance", shop.id)
    attempt = SignupAttempt(shop_id=shop.id, ip=ip, phone=phone, at=now)
    session.add(attempt)
    session.commit()
    by_ip = session.scalar(select(func.count()).select_from(SignupAttempt).where(
        SignupAttempt.shop_id == shop.id,
        SignupAttempt.ip.is_(None) if ip is None else SignupAttempt.ip == ip,
        SignupAttempt.at > now - dt.timedelta(hours=1)))
    by_number = session.scalar(select(func.count()).select_from(SignupAttempt).where(
        SignupAttempt.shop_id == shop.id, SignupAttempt.phone == phone,
        SignupAttempt.at > now - dt.timedelta(days=1)))
    if by_ip <= defaults.POPUP_SIGNUPS_PER_IP_PER_HOUR and by_number <= defaults.POPUP_SIGNUPS_PER_NUMBER_PER_DAY:
        return True
    session.execute(delete(SignupAttempt).where(SignupAttempt.id == attempt.id))
    session.commit()
    return False


def prune(session: OrmSession, now: dt.datetime | None = None) -> int:
    """Delete attempts older than every limit's window; returns how many."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=defaults.SIGNUP_ATTEMPTS_KEEP_SECONDS)
    result = session.execute(delete(SignupAttempt).where(SignupAttempt.at < cutoff))
    session.commit()
    return result.rowcount or 0
