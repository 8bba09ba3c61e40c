"""The demo store in memory: one seeded random stream per part, the shop's clock, and the order the parts are
built in (catalog, customers and orders, subscribers and their profile properties, campaigns, storefront events,
flows and their runs, segments); each
part is its own module."""
from __future__ import annotations

import datetime as dt
import random
from zoneinfo import ZoneInfo

from kinnekt.demo.browsing import _Browsing
from kinnekt.demo.campaigns import _Campaigns
from kinnekt.demo.catalog import _Catalog
from kinnekt.demo.customers import _Customers
from kinnekt.demo.data import ORDER_HOURS, SEASON, SHOP_TIMEZONE, UTC
from kinnekt.demo.flows import _Flows
from kinnekt.demo.properties import _Properties
from kinnekt.demo.segments import _Segments
from kinnekt.demo.subscribers import _Subscribers
from kinnekt.demo.writer import _Writer


class _DemoStore(_Catalog, _Customers, _Subscribers, _Properties, _Campaigns, _Segments, _Browsing, _Flows, _Writer):
    """Builds every row of the demo shop in memory (plain dicts; helper keys start with "_"), then writes them."""

    def __init__(self, domain: str, now: dt.datetime, n_customers: int, seed: int):
        self.domain, self.now, self.n_customers, self.seed = domain, now, n_customers, seed
        self.t0 = now.replace(microsecond=0)
        self.start = self.t0 - dt.timedelta(days=730)
        self.installed_at = self.t0 - dt.timedelta(days=540, hours=3, minutes=12, seconds=41)
        self.tz = ZoneInfo(SHOP_TIMEZONE)
        self.codes: set[str] = set()
        self.provider_ids: set[str] = set()
        self.order_seq = 0

    def rng(self, part: str) -> random.Random:
        """An independent stream per part, so changing one part leaves the others as they were."""
        return random.Random(f"{self.seed}:{part}")

    def unique_rng(self, part: str) -> random.Random:
        """A stream for values unique across the whole database (link codes, provider ids): mixes in the domain."""
        return random.Random(f"{self.seed}:{self.domain}:{part}")

    # time helpers

    def shop_time(self, rng: random.Random, lo: dt.datetime, hi: dt.datetime, seasonal: bool = False) -> dt.datetime:
        """A moment in [lo, hi] at a plausible local shopping hour, optionally weighted by season."""
        span = max(int((hi - lo).total_seconds()), 1)
        for _ in range(12):
            moment = lo + dt.timedelta(seconds=rng.randrange(span))
            local = moment.astimezone(self.tz)
            if seasonal and rng.random() > SEASON[local.month] / 1.7:
                continue
            break
        hour = rng.choices(range(24), weights=ORDER_HOURS)[0]
        local_dt = dt.datetime(local.year, local.month, local.day, hour, rng.randrange(60), rng.randrange(60),
                               tzinfo=self.tz)
        candidate = local_dt.astimezone(UTC)
        return candidate if lo <= candidate <= hi else moment

    def clamp(self, moment: dt.datetime) -> dt.datetime:
        return min(moment, self.t0)

    # build

    def build(self) -> None:
        self.build_catalog()
        self.build_customers()
        self.build_orders()
        self.ensure_order_exceptions()
        self.build_keywords()
        self.build_subscribers()
        self.build_properties()
        self.build_campaigns()
        self.finish_orders()
        self.build_attributions()
        self.build_checkouts()
        self.build_customer_facts()
        self.build_browsing()
        self.build_flows()
        self.build_segments()
        self.build_outbox()
