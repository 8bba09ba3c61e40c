"""The demo's catalog: collections, products and their variants."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from kinnekt.demo.data import COLLECTIONS, PRODUCTS
from kinnekt.demo.helpers import _slug


def _sku(handle: str, label: str | None) -> str:
    """A demo variant's SKU: NW-, the product handle's initials, then the variant's option values."""
    initials = "".join(word[0] for word in handle.split("-") if word).upper()
    options = "-".join(part.strip().replace(" ", "").upper() for part in (label or "").split("/") if part.strip())
    return "-".join(part for part in ("NW", initials, options) if part)[:255]


class _Catalog:
    """The catalog of the demo store (a part of _DemoStore)."""

    def build_catalog(self) -> None:
        rng = self.rng("catalog")
        self.collections = []
        cid = 4_310_000_000_000 + rng.randrange(10_000_000_000)
        by_title = {}
        for title in COLLECTIONS:
            cid += rng.randint(1_000_000, 90_000_000)
            handle = _slug(title)
            synced = self.installed_at + dt.timedelta(minutes=2, seconds=rng.randrange(60))
            col = {"shopify_id": cid, "title": title, "handle": handle, "_members": []}
            self.collections.append(col)
            by_title[title] = col
        self.products = []
        pid = 8_410_000_000_000 + rng.randrange(10_000_000_000)
        vid = 45_120_000_000_000 + rng.randrange(10_000_000_000)
        for title, price, sizes, colors, cols, weight, life in PRODUCTS:
            pid += rng.randint(5_000_000, 400_000_000)
            if life == "core":
                launched = self.start - dt.timedelta(days=rng.randint(30, 500))
            elif life == "mid":
                launched = self.start + dt.timedelta(days=rng.randint(120, 420))
            elif life == "new":
                launched = self.t0 - dt.timedelta(days=rng.randint(25, 100))
            else:
                launched = self.start - dt.timedelta(days=rng.randint(100, 300))
            launched += dt.timedelta(seconds=rng.randrange(86_400))
            retired = self.t0 - dt.timedelta(days=rng.randint(280, 330)) if life == "archived" else None
            variants = []
            if title == "Northwind Gift Card":
                for label in sizes:
                    vid += rng.randint(1, 40)
                    variants.append((vid, label, Decimal(label[1:] + ".00")))
            else:
                for color in colors or (None,):
                    for size in sizes or (None,):
                        vid += rng.randint(1, 40)
                        label = " / ".join(p for p in (color, size) if p) or None
                        variants.append((vid, label, Decimal(price)))
            updated = min(self.t0 - dt.timedelta(hours=rng.randint(2, 2000)),
                          max(launched, retired or launched) + dt.timedelta(days=rng.randint(1, 200)))
            updated = max(updated, launched)
            synced = max(self.installed_at, launched) + dt.timedelta(minutes=1, seconds=rng.randrange(300))
            product = {
                "shopify_id": pid, "title": title, "handle": _slug(title),
                "status": "archived" if life == "archived" else "active", "image_url": None,
                "shopify_updated_at": updated, "created_at": synced, "updated_at": max(synced, updated),
                "_variants": variants, "_weight": weight, "_from": launched,
                "_until": retired or self.t0 + dt.timedelta(days=1),
            }
            self.products.append(product)
            for col_title in cols:
                by_title[col_title]["_members"].append(product)
        for col in self.collections:
            newest = max(p["_from"] for p in col["_members"])
            col["shopify_updated_at"] = min(self.t0, newest + dt.timedelta(hours=rng.randint(1, 72)))
            col["created_at"] = max(self.installed_at, newest) + dt.timedelta(minutes=2)
            col["updated_at"] = max(col["created_at"], col["shopify_updated_at"])
