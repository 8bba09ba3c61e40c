"""The customer lifecycle's daily run as it was before it was set-based (kept for bench/lifecycle.py's "before").

The scores and stages come from the same Python rules that kinnekt/segments/lifecycle.py still states
(`scores`, `stage_of`, `expected_next_order`); only the way the shop is read and written differs.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.db import aware_utc
from kinnekt.models import Shop
from kinnekt.segments import lifecycle
from kinnekt.segments.lifecycle import CUSTOMERS, _KEEP_UPDATED_AT, Facts, Run, _counted_order_times, \
    _expected_by_customer, scores, stage_of


def update_shop(session: OrmSession, shop: Shop, *, now: dt.datetime | None = None, recheck: bool = True) -> Run:  # noqa: E501
    """The daily run as it was before it moved into SQL: every customer of the shop loaded, scored and compared
    in Python, the changes written back in chunks of executemany UPDATEs."""
    now = aware_utc(now)
    rows = session.execute(
        select(CUSTOMERS.c.id, CUSTOMERS.c.last_order_at, CUSTOMERS.c.orders_count, CUSTOMERS.c.money_spent,
               CUSTOMERS.c.lifecycle_stage, CUSTOMERS.c.expected_next_order_at)
        .where(CUSTOMERS.c.shop_id == shop.id).order_by(CUSTOMERS.c.id)).all()
    facts = [Facts(row.id, aware_utc(row.last_order_at), row.orders_count, row.money_spent or Decimal(0))
             for row in rows if (row.orders_count or 0) > 0 and row.last_order_at is not None]
    scored, relative = scores(facts, now)
    expected = _expected_by_customer(_counted_order_times(session, shop.id))
    run = Run(customers=len(facts), relative=relative)
    stage_changes, expected_changes = [], []
    for row in rows:
        stage = stage_of(*scored[row.id]) if row.id in scored else None
        if stage != row.lifecycle_stage:
            stage_changes.append({"b_id": row.id, "b_old": row.lifecycle_stage, "b_stage": stage})
        due = expected.get(row.id)
        seen = aware_utc(row.expected_next_order_at) if row.expected_next_order_at is not None else None
        if due != seen:
            expected_changes.append({"b_id": row.id, "b_count": row.orders_count, "b_last": row.last_order_at,
                                     "b_expected": due})
    changed: set[int] = set()
    for start in range(0, max(len(stage_changes), len(expected_changes)), defaults.LIFECYCLE_UPDATE_CHUNK):
        end = start + defaults.LIFECYCLE_UPDATE_CHUNK
        if stage_changes[start:end]:
            # Only from the stage read above (a concurrent run changed it otherwise), so `previous` stays right.
            result = session.execute(
                update(CUSTOMERS).where(CUSTOMERS.c.shop_id == shop.id, CUSTOMERS.c.id == bindparam("b_id"),
                                        CUSTOMERS.c.lifecycle_stage.is_not_distinct_from(bindparam("b_old")))
                .values(lifecycle_stage=bindparam("b_stage"), lifecycle_previous_stage=bindparam("b_old"),
                        lifecycle_changed_at=now, **_KEEP_UPDATED_AT),
                stage_changes[start:end])
            run.stage_changes += result.rowcount if result.rowcount and result.rowcount > 0 else 0
        if expected_changes[start:end]:
            # Only where no order arrived since the read above (the ingest set it from the newer orders then).
            result = session.execute(
                update(CUSTOMERS).where(CUSTOMERS.c.shop_id == shop.id, CUSTOMERS.c.id == bindparam("b_id"),
                                        CUSTOMERS.c.orders_count == bindparam("b_count"),
                                        CUSTOMERS.c.last_order_at.is_not_distinct_from(bindparam("b_last")))
                .values(expected_next_order_at=bindparam("b_expected"), **_KEEP_UPDATED_AT),
                expected_changes[start:end])
            run.expected_changes += result.rowcount if result.rowcount and result.rowcount > 0 else 0
        session.commit()
    changed.update(c["b_id"] for c in stage_changes)
    changed.update(c["b_id"] for c in expected_changes)
    run.rechecked = lifecycle._subscribers_of(session, shop.id, changed)
    if run.rechecked and recheck:
        from kinnekt.segments.membership import subscribers_changed  # noqa: F401
        for start in range(0, len(run.rechecked), defaults.LIFECYCLE_UPDATE_CHUNK):
            subscribers_changed(shop.id, run.rechecked[start:start + defaults.LIFECYCLE_UPDATE_CHUNK])
    return run
