"""Small helpers of the demo seeder: money, slugs and e-mail names, weighted picks and quotas."""
from __future__ import annotations

import random
import re
import unicodedata
from decimal import ROUND_HALF_UP, Decimal


def _cents(value) -> Decimal:
    return Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _slug(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def _email_part(name: str) -> str:
    for src, dst in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss"), ("Ä", "ae"), ("Ö", "oe"), ("Ü", "ue")):
        name = name.replace(src, dst)
    return re.sub(r"[^a-z]", "", unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower())


def _pick(rng: random.Random, weighted):
    """One item from ((item, weight), ...)."""
    items = [item for item, _ in weighted]
    return rng.choices(items, weights=[w for _, w in weighted])[0]


def _quota(rng: random.Random, n: int, weights: dict) -> list:
    """n labels in proportion to weights (largest remainder), each present once n allows it, shuffled."""
    total = sum(weights.values())
    raw = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in raw.items()}
    if n >= len(weights):
        for k in counts:
            counts[k] = max(counts[k], 1)
    by_remainder = sorted(weights, key=lambda k: (-(raw[k] - int(raw[k])), list(weights).index(k)))
    i = 0
    while sum(counts.values()) < n:
        counts[by_remainder[i % len(by_remainder)]] += 1
        i += 1
    while sum(counts.values()) > n:
        largest = max(counts, key=lambda k: (counts[k], -list(weights).index(k)))
        counts[largest] -= 1
    out = [k for k in weights for _ in range(counts[k])]
    rng.shuffle(out)
    return out
