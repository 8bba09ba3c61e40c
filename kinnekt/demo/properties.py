"""The demo's profile property values: birthdays (about 40% of subscribers, spread over the year, a few in the
coming days) and languages (about 60%, by the number's country)."""
from __future__ import annotations

import datetime as dt

from kinnekt.casefold import fold
from kinnekt.demo.data import BIRTHDAY_SHARE, LANGUAGE_SHARE, LANGUAGES
from kinnekt.demo.helpers import _pick


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


class _Properties:
    """Birthday and language values of the demo's subscribers (a part of _DemoStore)."""

    def build_properties(self) -> None:
        """One row per value, as kinnekt/subscribers/properties.py stores it (typed column, anniversary code).

        Birthdays fall on days counted from the shop's local day of `now`, evenly over the coming year, so
        "birthday this month" and "in the next N days" find people whatever `now` is; a few marketable
        subscribers' fall 1 to 6 days after it, so that "in the next 7 days" has members on that day and on the
        next (the CLI seeds at midnight UTC, the evening before in New York, and the merchant looks the day
        after)."""
        rng = self.rng("properties")
        today = self.t0.astimezone(self.tz).date()
        self.properties = []
        with_birthday = [s for s in self.subscribers if rng.random() < BIRTHDAY_SHARE]
        marketable = [s for s in with_birthday if s["status"] == "subscribed" and not s.get("_dead")]
        soon = {id(s) for s in rng.sample(marketable, min(len(marketable), max(1, round(len(marketable) * 0.03))))}
        # The others one in each equal stretch of the coming year (then shuffled): every month has some.
        spread = len(with_birthday) - len(soon)
        offsets = [rng.randrange(i * 366 // spread, max((i + 1) * 366 // spread, i * 366 // spread + 1))
                   for i in range(spread)]
        rng.shuffle(offsets)
        for sub in with_birthday:
            offset = rng.randint(1, 6) if id(sub) in soon else offsets.pop()
            day = today + dt.timedelta(days=offset)
            year = today.year - rng.choice(range(18, 71))
            while (day.month, day.day) == (2, 29) and not _leap(year):
                year -= 1
            born = dt.date(year, day.month, day.day)
            self.properties.append(self._property_row(sub, "birthday", date_value=born,
                                                      anniversary=born.month * 100 + born.day))
        for sub in self.subscribers:
            if rng.random() >= LANGUAGE_SHARE:
                continue
            language = _pick(rng, LANGUAGES.get(sub["country"], LANGUAGES["US"]))
            self.properties.append(self._property_row(sub, "language", text_value=language,
                                                      text_folded=fold(language)))

    def _property_row(self, sub: dict, key: str, **value) -> dict:
        row = {"name_key": key, "text_value": None, "text_folded": None, "number_value": None, "date_value": None,
               "anniversary": None, "updated_at": sub["_consent"], "_sub": sub}
        row.update(value)
        return row
