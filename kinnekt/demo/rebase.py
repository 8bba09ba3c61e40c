"""Short links of the demo's texts follow where the demo is served (`flask demo run` rebases them)."""
from __future__ import annotations

import re

from sqlalchemy import func, select

from kinnekt.models import Message, OutboxMessage, Shop


_SHORT_LINK = re.compile(r"(https?://[^\s/]+(?:/[^\s]*?)?)/r/[A-Za-z0-9]+")


def rebase_links(session, domain: str, base: str) -> int:
    """Point the demo shop's texts (messages and the Outbox) at short links under `base`; commits.

    The demo database outlives a run: texts seeded or sent while it was served at another address keep that
    address, where nothing answers now. Returns how many bases were rewritten (0 when all were current).
    """
    shop_id = session.execute(select(Shop.id).where(Shop.domain == domain, Shop.is_demo.is_(True))).scalar()
    if shop_id is None:
        return 0
    new = base.rstrip("/") + "/r/"
    tables = ((Message.__table__, Message.__table__.c.body), (OutboxMessage.__table__, OutboxMessage.__table__.c.text))
    old_bases: set[str] = set()
    for table, column in tables:
        for (text,) in session.execute(select(column).where(table.c.shop_id == shop_id, column.like("%/r/%"))
                                       .execution_options(all_shops=True)):
            old_bases.update(m.group(1) + "/r/" for m in _SHORT_LINK.finditer(text or ""))
    old_bases.discard(new)
    for old in sorted(old_bases):
        for table, column in tables:
            session.execute(table.update().where(table.c.shop_id == shop_id, column.contains(old, autoescape=True))
                            .values({column.name: func.replace(column, old, new)}).execution_options(all_shops=True))
    session.commit()
    return len(old_bases)
