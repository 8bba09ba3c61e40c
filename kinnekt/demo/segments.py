"""The demo's segments: the automatic ones with their history (enter/leave log, daily counts) and the manual
ones (data.MANUAL_SEGMENTS, built by the app), and the audiences of the campaigns."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from kinnekt.demo.data import (
    AUTO_SEGMENTS, DRAFT_CAMPAIGN, MANUAL_SEGMENTS, SCHEDULED_CAMPAIGN, SHOP_TIMEZONE, STORE_URL
)


class _Segments:
    """Segments of the demo store (a part of _DemoStore)."""

    def in_segment(self, sub: dict, key: str) -> bool:
        if key == "all":
            return True
        if key.startswith("keyword:"):
            return sub["source"] == "keyword" and sub["keyword"] == key.split(":", 1)[1]
        return sub["source"] == key

    def segment_history(self, key: str, created: dt.datetime) -> tuple[list[dict], list[dict]]:
        """The enter/leave log and daily counts an automatic segment created at `created` would have written:
        its first build takes who was subscribed then; later, each subscription enters (a re-check) and each
        unsubscription or suppression leaves. Ends with exactly the segment's members of now."""
        changes = []
        for sub in self.subscribers:
            if sub["subscribed_at"] is None or not self.in_segment(sub, key):
                continue
            left = sub["unsubscribed_at"] if sub["status"] == "unsubscribed" else sub["suppressed_at"]
            if left is not None and left <= created:
                continue  # gone before the segment existed
            entered = max(sub["subscribed_at"], created)
            changes.append((entered, 0 if entered == created else 1, "enter", sub))
            if left is not None:
                changes.append((left, 1, "leave", sub))
        changes.sort(key=lambda c: (c[0], c[1], c[2] == "enter", c[3]["phone"]))
        events = [{"kind": kind, "at": at, "cause": "build" if order == 0 else "recheck", "_sub": sub}
                  for at, order, kind, sub in changes]
        zone = ZoneInfo(SHOP_TIMEZONE)
        by_day: dict[dt.date, tuple[int, dt.datetime]] = {created.astimezone(zone).date(): (0, created)}
        count = 0
        for event in events:
            count += 1 if event["kind"] == "enter" else -1
            by_day[event["at"].astimezone(zone).date()] = (count, event["at"])
        counts = [{"day": day, "member_count": n, "at": at} for day, (n, at) in sorted(by_day.items())]
        return events, counts

    def build_segments(self) -> None:
        rng = self.rng("segments")
        marketable = [s for s in self.subscribers if s["status"] == "subscribed" and s["suppressed_at"] is None]
        self.segments = []

        def auto(name, source, rule, created, keyword=None, key=None):
            members = [s for s in marketable if self.in_segment(s, key or source)]
            history = self.segment_history(key or source, created)
            self.segments.append({
                "name": name, "kind": "auto", "auto_source": source, "_keyword": keyword,
                "definition": {"match": "all", "rules": [rule]}, "has_relative_time": False,
                "member_count": len(members), "build_status": "done", "last_built_at": self.now,
                "build_ms": rng.randint(8, 90), "created_at": created, "updated_at": created,
                "_members": [(s, max(s["subscribed_at"], created)) for s in members], "_key": key or source,
                "_events": history[0], "_counts": history[1],
            })

        for source, name in AUTO_SEGMENTS:
            auto(name, source, {"field": "subscription_source", "op": "eq", "value": source},
                 self.installed_at + dt.timedelta(seconds=rng.randint(5, 60)))
            if source == "all":
                for word, keyword in self.keywords.items():
                    auto(f"Keyword: {word}", "keyword", {"field": "keyword", "op": "eq", "value": word},
                         keyword["created_at"] + dt.timedelta(seconds=1), keyword=keyword, key=f"keyword:{word}")
        for name, days, definition in MANUAL_SEGMENTS:
            created = self.t0 - dt.timedelta(days=days, minutes=rng.randint(0, 600))
            self.segments.append({
                "name": name, "kind": "manual", "auto_source": None, "_keyword": None, "definition": definition,
                "has_relative_time": True, "member_count": 0, "build_status": "pending", "last_built_at": None,
                "build_ms": None, "created_at": created, "updated_at": created, "_members": [], "_key": None,
                "_events": [], "_counts": [],
            })
        by_key = {s["_key"]: s for s in self.segments if s["_key"]}
        for campaign in self.campaigns:
            campaign["_audience"] = ([(by_key[k], "include") for k in campaign["_include"]]
                                     + [(by_key[k], "exclude") for k in campaign["_exclude"]])
        # A draft and a scheduled campaign, so both states show up in the list.
        name, include, path, body = DRAFT_CAMPAIGN
        created = self.t0 - dt.timedelta(days=2, hours=rng.randint(1, 9))
        self.campaigns.append({
            "name": name, "body": body.format(url=STORE_URL + path), "status": "draft", "enabled": True,
            "send_now": False, "send_at": None, "recipient_local_time": False, "discount_mode": "none",
            "discount_code": None, "started_at": None, "finished_at": None, "failure_reason": None,
            "created_at": created, "updated_at": created + dt.timedelta(minutes=rng.randint(3, 50)),
            "_audience": [(by_key[k], "include") for k in include],
        })
        name, include, code, path, body = SCHEDULED_CAMPAIGN
        created = self.t0 - dt.timedelta(days=1, hours=rng.randint(1, 9))
        send_at = self.campaign_time(-3)
        self.campaigns.append({
            "name": name, "body": body.format(url=STORE_URL + path), "status": "scheduled", "enabled": True,
            "send_now": False, "send_at": send_at, "recipient_local_time": False, "discount_mode": "shared",
            "discount_code": code, "started_at": None, "finished_at": None, "failure_reason": None,
            "created_at": created, "updated_at": created + dt.timedelta(minutes=rng.randint(3, 50)),
            "_audience": [(by_key[k], "include") for k in include],
        })
