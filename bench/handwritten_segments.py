"""Hand-written SQL for the six representative definitions of `bench/segments.py`: the yardstick for previews.

Each query counts the same members as `compiler.count` of the definition of the same name (the bench checks
the counts are equal), written as one would by hand for PostgreSQL or SQLite: customer facts through a join,
rules on rows of their own as `EXISTS` / a grouped derived table. The instants and money amounts are the
definition's meaning, computed here in Python as the contract says (periods start at midnight in the shop's
time zone; money is stored in units of 1/MONEY_SCALE), and bound as parameters. The flags are tested as
`li.counted IS true` and `o.test IS false` (the same as `li.counted` and `NOT o.test` on these NOT NULL columns),
the words of the partial indexes on orders and line items, as one writes a query meant to use them.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import bindparam, text

from kinnekt.db import MONEY_SCALE
from kinnekt.segments import periods
from kinnekt.segments.rules import UNPAID

_SUBSCRIBED = ("FROM subscribers s {join}WHERE s.shop_id = :shop AND s.status = 'subscribed' "
               "AND s.suppressed_at IS NULL ")
_CUSTOMER = "JOIN customers c ON c.id = s.customer_id AND c.shop_id = s.shop_id "


def _count(join: str, where: str):
    return text("SELECT count(*) " + _SUBSCRIBED.format(join=join) + where)


def queries(*, shop_id: int, timezone: str | None, now: dt.datetime, products: list[int],
            collections: list[int]) -> dict[str, tuple]:
    """{definition name: (text() statement, parameters)} for the shop at `now`."""
    zone = periods.shop_zone(timezone)
    today = periods.local_today(now, zone)
    midnight = lambda back: periods.day_start(today - dt.timedelta(days=back), zone)  # noqa: E731  ("last_30_days": 29 back)
    shop = {"shop": shop_id}
    out = {
        "recent_spenders": (_count(_CUSTOMER, "AND c.last_order_at >= :since AND c.money_spent > :spent"),
                            {**shop, "since": midnight(29), "spent": 25 * MONEY_SCALE}),
        "loyal_inactive": (_count(_CUSTOMER, "AND c.money_spent > :spent AND c.last_order_at < :before"),
                           {**shop, "spent": 1000 * MONEY_SCALE, "before": now - dt.timedelta(days=90)}),
        # The products and the collection's products as one list (an OR of two INs would keep PostgreSQL from
        # reading the line items' product index: it scans every line item instead).
        "bought_products": (
            _count("", "AND EXISTS (SELECT 1 FROM line_items li WHERE li.customer_id = s.customer_id "
                       "AND li.shop_id = :shop AND li.counted IS true "
                       "AND li.product_id IN (SELECT cp.product_id FROM collection_products cp "
                       "WHERE cp.shop_id = :shop AND cp.collection_id = :collection "
                       "UNION ALL SELECT CAST(:p1 AS BIGINT) UNION ALL SELECT CAST(:p2 AS BIGINT) "
                       "UNION ALL SELECT CAST(:p3 AS BIGINT)))"),
            {**shop, "p1": products[10], "p2": products[50], "p3": products[120], "collection": collections[3]}),
        "repeat_buyers_90d": (
            _count("JOIN (SELECT o.customer_id FROM orders o WHERE o.shop_id = :shop AND o.test IS false "
                   "AND o.cancelled_at IS NULL AND o.created_at >= :since GROUP BY o.customer_id "
                   "HAVING count(*) >= 2) r ON r.customer_id = s.customer_id ", ""),
            {**shop, "since": midnight(89)}),
        "engaged_not_vip": (
            _count("", "AND s.clicks_count >= 1 AND upper(s.country) IN ('US', 'CA') "
                       "AND NOT EXISTS (SELECT 1 FROM customer_tags t WHERE t.customer_id = s.customer_id "
                       "AND t.shop_id = :shop AND t.tag = 'vip')"),
            shop),
        "order_trouble": (
            _count("", "AND EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = s.customer_id "
                       "AND o.shop_id = :shop AND o.test IS false "
                       "AND (o.financial_status IN :unpaid OR o.cancelled_at IS NOT NULL)) "
                       "AND EXISTS (SELECT 1 FROM line_items li WHERE li.customer_id = s.customer_id "
                       "AND li.shop_id = :shop AND li.counted IS true AND li.price > :price)"
                   ).bindparams(bindparam("unpaid", expanding=True)),
            {**shop, "unpaid": list(UNPAID), "price": 100 * MONEY_SCALE}),
    }
    return out
