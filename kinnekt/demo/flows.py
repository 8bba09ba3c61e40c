"""The demo's flows: the ready-made Abandoned checkout and Welcome series (kinnekt/flows/service.BUILTINS), on for
the last FLOWS_ON_DAYS days, with the runs they would have made by now: one per checkout left open by a subscriber
and one per subscriber who joined since, each walked through its steps as the engine does (waits, quiet hours that
defer a text, the "order" and "unsubscribed" exits, the welcome's "no orders yet" condition), the texts they sent
(messages of each step's campaign, occurrence = the run's id, with their short links), the clicks on them and the
orders those clicks brought (an order of the person within the attribution window that no campaign was credited
with). Runs whose next step is still to come are left waiting at it, due when the engine would run it. Built in
memory (plain dicts, one seeded random stream) after the campaigns and checkouts, written by `write_flows`."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import select

from kinnekt.demo.data import SHOP_NAME, STORE_URL, USER_AGENTS
from kinnekt.demo.helpers import _pick
from kinnekt.flows.service import BUILTINS
from kinnekt.models import Attribution, Campaign, Click, Flow, FlowRun, FlowStep, Link, Message, SubscriptionEvent
from kinnekt.sms import encoding as sms_encoding, prices

FLOWS_ON_DAYS = 45
"""How long ago the demo's flows were switched on."""

DEMO_FLOWS = ("abandoned_checkout", "welcome_series")
"""The ready-made flows the demo store has on (the others are offered on its Flows page)."""

ATTRIBUTION_WINDOW = dt.timedelta(days=5)
"""How long after a text an order can be credited to it (the demo shop's attribution window)."""

CODE_CHARS = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
"""The characters of a unique discount code's suffix."""


class _Flows:
    """Flows, their runs, messages, clicks and attributed orders of the demo store (a part of _DemoStore)."""

    def build_flows(self) -> None:
        rng = self.rng("flows")
        self.flow_rng_ids = self.unique_rng("flow-ids")
        self.flows_on_at = self.t0 - dt.timedelta(days=FLOWS_ON_DAYS)
        self.demo_flows = {key: self._flow(key) for key in DEMO_FLOWS}
        self.flow_taken = {id(a["_order"]) for a in self.attributions}
        self.flow_methods = {id(a["_order"]): a["method"] for a in self.attributions}
        self.flow_attributions: list[dict] = []
        by_phone = {s["phone"]: s for s in self.subscribers}
        for checkout in self.checkouts:
            checkout["recovery_url"] = None
            if checkout["completed_at"] is None:
                checkout["recovery_url"] = f"{STORE_URL}/checkouts/c/{checkout['token']}/recover"
        for checkout in self.checkouts:
            customer = checkout["_customer"]
            sub = customer.get("_sub") if customer else by_phone.get(checkout["phone"])
            start = checkout["updated_at"] + dt.timedelta(seconds=rng.randint(20, 90))  # the flows job's next read
            if (checkout["completed_at"] is None and sub is not None and start > self.flows_on_at
                    and start < self.t0 and self._subscribed(sub, start)):
                self._abandoned_checkout(rng, sub, checkout, start)
        for sub in sorted(self.subscribers, key=lambda s: (s["subscribed_at"] or self.t0, s["phone"])):
            joined = sub["subscribed_at"]
            if joined is not None and self.flows_on_at < joined < self.t0:
                self._welcome(rng, sub, joined + dt.timedelta(seconds=rng.randint(5, 40)))
        for sub in self.subscribers:
            accepted = [m for m in sub["_messages"] if m["provider_id"]]
            sub["sent_count"] = len(accepted)
            sub["last_received_at"] = max((m["sent_at"] for m in accepted), default=None)
            sub["clicks_count"] = len(sub["_clicks"])
            sub["last_clicked_at"] = max((c["at"] for c in sub["_clicks"]), default=None)

    # flows and steps

    def _flow(self, key: str) -> dict:
        spec = BUILTINS[key]
        on = self.flows_on_at
        flow = {"name": spec["name"], "trigger": spec["trigger"], "trigger_config": {}, "segment_id": None,
                "status": "on", "exit_conditions": list(spec["exit_conditions"]),
                "reentry_cooldown_seconds": spec.get("reentry_cooldown_seconds", 0), "version": 1, "builtin": key,
                "enabled_at": on, "scanned_through": self.t0, "created_at": on - dt.timedelta(hours=2),
                "updated_at": on, "_steps": [], "_runs": []}
        number = [0]

        def add(specs, parent, branch):
            for position, spec_ in enumerate(specs):
                step = {"kind": spec_["kind"], "position": position, "branch": branch, "_parent": parent,
                        "wait_seconds": spec_.get("seconds"), "condition": spec_.get("definition"),
                        "_campaign": None}
                if spec_["kind"] == "send":
                    number[0] += 1
                    mode = spec_.get("discount_mode") or "none"
                    step["_campaign"] = {
                        "name": f"{spec['name']}: message {number[0]}", "body": spec_["body"], "kind": "flow",
                        "status": "in_progress", "enabled": True, "send_now": False, "send_at": None,
                        "recipient_local_time": False, "discount_mode": mode,
                        "discount_code": spec_.get("discount_code") if mode != "none" else None,
                        "discount_kind": spec_.get("discount_kind") if mode != "none" else None,
                        "discount_value": Decimal(str(spec_["discount_value"])) if mode != "none" else None,
                        "started_at": on, "snapshot_at": on, "failure_reason": None, "finished_at": None,
                        "created_at": flow["created_at"], "updated_at": on}
                flow["_steps"].append(step)
                if spec_["kind"] == "condition":
                    add(spec_.get("yes") or [], step, "yes")
                    add(spec_.get("no") or [], step, "no")

        add(spec["steps"], None, None)
        return flow

    def _top(self, flow: dict) -> list[dict]:
        return [step for step in flow["_steps"] if step["_parent"] is None]

    # runs

    def _subscribed(self, sub: dict, at: dt.datetime) -> bool:
        return (sub["subscribed_at"] is not None and sub["subscribed_at"] <= at
                and (sub["unsubscribed_at"] is None or sub["unsubscribed_at"] > at)
                and (sub["suppressed_at"] is None or sub["suppressed_at"] > at))

    def _run(self, flow: dict, sub: dict, start: dt.datetime, **trigger) -> dict:
        run = {"state": "active", "current": None, "due_at": None, "started_at": start, "orders_since": start,
               "finished_at": None, "exit_reason": None, "_sub": sub, "_flow": flow, **trigger}
        flow["_runs"].append(run)
        return run

    def _wait(self, run: dict, at_step: dict, due: dt.datetime) -> bool:
        """The run stands at `at_step`, due at `due`: True when that is still to come (the run waits there)."""
        run["current"], run["due_at"] = at_step, due
        return due > self.t0

    def _exited(self, run: dict, step: dict, at: dt.datetime) -> bool:
        """The flow's exits checked before `step` runs at `at`: True when one held (the run ended there)."""
        sub, flow = run["_sub"], run["_flow"]
        for reason in flow["exit_conditions"]:
            left = None
            if reason == "order" and sub["_customer"] is not None:
                left = next((o["created_at"] for o in sub["_customer"]["_orders"]
                             if run["orders_since"] < o["created_at"] <= at and not o["test"]), None)
            elif reason == "unsubscribed" and sub["unsubscribed_at"] and (
                    run["started_at"] < sub["unsubscribed_at"] <= at):
                left = sub["unsubscribed_at"]
            if left is not None:
                run.update(state="exited", exit_reason=reason, current=step, due_at=None,
                           finished_at=left + dt.timedelta(seconds=30))
                return True
        return False

    def _done(self, run: dict, step: dict, at: dt.datetime) -> None:
        run.update(state="completed", current=step, due_at=None, finished_at=at)

    def _send(self, rng, run: dict, step: dict, due: dt.datetime) -> dt.datetime | None:
        """The run reaches a send step due at `due`: waits there (quiet hours included) or sends; returns when it
        sent, None when the run waits or left."""
        sub = run["_sub"]
        moment = self.deferred(sub, due) or due
        if self._wait(run, step, moment) or self._exited(run, step, moment):
            return None
        campaign = step["_campaign"]
        text = campaign["body"].replace("{shop_name}", SHOP_NAME).replace("{first_name}", sub["first_name"] or "there")
        code = None
        if campaign["discount_mode"] == "unique":
            code = f"{campaign['discount_code']}-{''.join(rng.choice(CODE_CHARS) for _ in range(6))}"
            text = text.replace("{discount_code}", code)
        link = None
        if "{checkout_url}" in text:
            short = self.short_code(self.flow_rng_ids)
            text = text.replace("{checkout_url}", self.link_base + short)
            link = {"code": short, "url": run["_checkout"]["recovery_url"], "created_at": moment}
        encoding, parts = sms_encoding.size(text)
        sent = moment + dt.timedelta(seconds=rng.randint(1, 20))
        roll = rng.random()
        status = "delivered" if roll > 0.03 else "sent"
        message = {"kind": "flow", "to_phone": sub["phone"], "body": text, "skip_reason": None, "due_at": moment,
                   "attempts": 1, "client_ref": None, "provider_id": self.provider_id(self.flow_rng_ids),
                   "encoding": encoding, "segments": parts, "price": prices.price_per_part(sub["country"]) * parts,
                   "error_code": None, "error_reason": None, "status": status, "sent_at": sent,
                   "delivered_at": sent + dt.timedelta(seconds=rng.randint(2, 40)) if status == "delivered" else None,
                   "discount_code": code, "created_at": moment, "_campaign": campaign, "_sub": sub, "_run": run,
                   "_link": link, "_clicks": []}
        message["updated_at"] = message["delivered_at"] or sent
        sub["_messages"].append(message)
        run.setdefault("_messages", []).append(message)
        self._follow(rng, run, message)
        return sent

    def _follow(self, rng, run: dict, message: dict) -> None:
        """A click on the text's link and the order it brought: the person's next order within the attribution window
        that no campaign was credited with; or, now and then, a click alone. A click is only made where the
        attribution engine (kinnekt/campaigns/attribution.py: a code first, else the last click in the window)
        would credit exactly what is seeded."""
        sub, customer = run["_sub"], run["_sub"]["_customer"]
        if message["status"] != "delivered" or message["_link"] is None:
            return
        order = None
        if customer is not None:
            order = next((o for o in customer["_orders"]
                          if message["sent_at"] < o["created_at"] <= message["sent_at"] + ATTRIBUTION_WINDOW
                          and not o["test"] and o["cancelled_at"] is None and id(o) not in self.flow_taken), None)
        if order is not None:
            at = max(message["delivered_at"] + dt.timedelta(seconds=30),
                     order["created_at"] - dt.timedelta(minutes=rng.randint(3, 40)))
        elif rng.random() < 0.12:
            at = message["delivered_at"] + dt.timedelta(seconds=min(int(rng.lognormvariate(7.0, 1.3)), 86_400))
        else:
            return
        if at >= self.t0 or (order is not None and at >= order["created_at"]) or not self._click_ok(customer, at,
                                                                                                    order):
            return
        click = {"at": at, "user_agent": _pick(rng, USER_AGENTS), "_sub": sub}
        message["_clicks"].append(click)
        sub["_clicks"].append(click)
        if order is not None:
            self._credit(rng, order, message, "click")

    def _click_ok(self, customer: dict | None, at: dt.datetime, credited: dict | None) -> bool:
        """True when a click at `at` changes no other order's credit: every counted order of the customer within the
        window after it is the one it is credited with, or one credited by its discount code (a code wins)."""
        if customer is None:
            return True
        for order in customer["_orders"]:
            if (at < order["created_at"] <= at + ATTRIBUTION_WINDOW and not order["test"]
                    and order["cancelled_at"] is None and order is not credited
                    and self.flow_methods.get(id(order)) != "discount_code"):
                return False
        return True

    def _credit(self, rng, order: dict, message: dict, method: str) -> None:
        self.flow_taken.add(id(order))
        self.flow_methods[id(order)] = method
        revenue = order["current_total_price"] if order["current_total_price"] is not None else order["total_price"]
        self.flow_attributions.append({"method": method, "revenue": revenue,
                                       "attributed_at": order["created_at"] + dt.timedelta(seconds=rng.randint(2, 90)),
                                       "_order": order, "_campaign": message["_campaign"], "_sub": message["_sub"]})

    def _abandoned_checkout(self, rng, sub: dict, checkout: dict, start: dt.datetime) -> None:
        """Wait 30 minutes, a text with the recovery link, wait a day, a text with a code; leaves on an order."""
        flow = self.demo_flows["abandoned_checkout"]
        if any(r["_sub"] is sub and (r["state"] == "active" or r["started_at"] > start - dt.timedelta(
                seconds=flow["reentry_cooldown_seconds"])) for r in flow["_runs"]):
            return  # one run at a time, and the flow's cool-down
        wait, first, wait_again, second = self._top(flow)
        run = self._run(flow, sub, start, trigger_key=f"checkout:{checkout['token']}",
                        checkout_token=checkout["token"], _checkout=checkout)
        if self._exited(run, wait, start):
            return
        sent = self._send(rng, run, first, start + dt.timedelta(seconds=wait["wait_seconds"]))
        if sent is None:
            return
        if self._exited(run, wait_again, sent):
            return
        sent = self._send(rng, run, second, sent + dt.timedelta(seconds=wait_again["wait_seconds"]))
        if sent is not None:
            self._done(run, second, sent)

    def _welcome(self, rng, sub: dict, start: dt.datetime) -> None:
        """A welcome with a code at once, then after 3 days a reminder unless they ordered meanwhile."""
        flow = self.demo_flows["welcome_series"]
        welcome, wait, condition = self._top(flow)
        reminder = next(step for step in flow["_steps"] if step["_parent"] is condition)
        run = self._run(flow, sub, start, trigger_key=None)
        sent = self._send(rng, run, welcome, start)
        if sent is None or self._exited(run, wait, sent):
            return
        due = sent + dt.timedelta(seconds=wait["wait_seconds"])
        if self._wait(run, condition, due) or self._exited(run, condition, due):
            return
        customer = sub["_customer"]
        ordered = customer is not None and any(o["created_at"] <= due and not o["test"] and o["cancelled_at"] is None
                                               for o in customer["_orders"])
        if ordered:
            self._done(run, condition, due)
            return
        sent = self._send(rng, run, reminder, due)
        if sent is not None:
            self._done(run, reminder, sent)

    # write

    def write_flows(self, session, sid: int) -> None:
        """Insert the flows, their steps and campaigns, runs, messages, links and clicks (the attributions go with
        the store's, `flow_attributions`); in the store's transaction."""
        from kinnekt.demo.writer import _insert
        joined = {sub_id: id_ for id_, sub_id in session.execute(
            select(SubscriptionEvent.id, SubscriptionEvent.subscriber_id).where(
                SubscriptionEvent.shop_id == sid, SubscriptionEvent.kind == "subscribed")
            .order_by(SubscriptionEvent.id).execution_options(all_shops=True))}
        flows = list(self.demo_flows.values())
        rows = _insert(session, Flow, [{k: v for k, v in f.items() if not k.startswith("_")} | {"shop_id": sid}
                                       for f in flows], returning=("id", "builtin"))
        flow_ids = {builtin: id_ for id_, builtin in rows}
        steps = [step for flow in flows for step in flow["_steps"]]
        campaigns = [step["_campaign"] for step in steps if step["_campaign"]]
        rows = _insert(session, Campaign, [{k: v for k, v in c.items() if not k.startswith("_")} | {"shop_id": sid}
                                           for c in campaigns], returning=("id", "name"))
        by_name = {name: id_ for id_, name in rows}
        for campaign in campaigns:
            campaign["_id"] = by_name[campaign["name"]]
        for flow in flows:  # parents before children, one level at a time (a child names its parent's id)
            for depth in range(max(self._depth(s) for s in flow["_steps"]) + 1):
                level = [(step, FlowStep(
                    shop_id=sid, flow_id=flow_ids[flow["builtin"]], version=1,
                    parent_id=step["_parent"]["_id"] if step["_parent"] else None, branch=step["branch"],
                    position=step["position"], kind=step["kind"], wait_seconds=step["wait_seconds"],
                    condition=step["condition"], campaign_id=step["_campaign"]["_id"] if step["_campaign"] else None))
                    for step in flow["_steps"] if self._depth(step) == depth]
                session.add_all([row for _, row in level])
                session.flush()
                for step, row in level:
                    step["_id"] = row.id
        runs = [run for flow in flows for run in flow["_runs"]]
        for run in runs:
            if run["trigger_key"] is None:
                run["trigger_key"] = f"subscribed:{joined[run['_sub']['_id']]}"
        rows = _insert(session, FlowRun, [
            {"shop_id": sid, "flow_id": flow_ids[run["_flow"]["builtin"]], "subscriber_id": run["_sub"]["_id"],
             "version": 1, "state": run["state"], "current_step_id": run["current"]["_id"], "due_at": run["due_at"],
             "trigger_key": run["trigger_key"], "checkout_token": run.get("checkout_token"), "order_id": None,
             "product_id": None, "started_at": run["started_at"], "orders_since": run["orders_since"],
             "finished_at": run["finished_at"], "exit_reason": run["exit_reason"]} for run in runs],
            returning=("id", "flow_id", "trigger_key"))
        run_ids = {(flow_id, key): id_ for id_, flow_id, key in rows}
        messages = [m for run in runs for m in run.get("_messages", [])]
        for message in messages:
            run = message["_run"]
            message["occurrence"] = run_ids[(flow_ids[run["_flow"]["builtin"]], run["trigger_key"])]
        rows = _insert(session, Message, [
            {k: v for k, v in m.items() if not k.startswith("_")} | {
                "shop_id": sid, "campaign_id": m["_campaign"]["_id"], "subscriber_id": m["_sub"]["_id"]}
            for m in messages], returning=("id", "provider_id"))
        message_ids = {provider_id: id_ for id_, provider_id in rows}
        linked = [m for m in messages if m["_link"]]
        rows = _insert(session, Link, [
            dict(m["_link"], shop_id=sid, campaign_id=m["_campaign"]["_id"], subscriber_id=m["_sub"]["_id"],
                 message_id=message_ids[m["provider_id"]]) for m in linked], returning=("id", "code"))
        link_ids = {code: id_ for id_, code in rows}
        _insert(session, Click, sorted(
            ({"shop_id": sid, "link_id": link_ids[m["_link"]["code"]], "campaign_id": m["_campaign"]["_id"],
              "subscriber_id": m["_sub"]["_id"], "at": c["at"], "user_agent": c["user_agent"]}
             for m in linked for c in m["_clicks"]), key=lambda c: (c["at"], c["link_id"])))
        _insert(session, Attribution, [
            {"shop_id": sid, "method": a["method"], "revenue": a["revenue"], "attributed_at": a["attributed_at"],
             "order_id": a["_order"]["_id"], "campaign_id": a["_campaign"]["_id"], "subscriber_id": a["_sub"]["_id"]}
            for a in self.flow_attributions])

    def _depth(self, step: dict) -> int:
        depth, parent = 0, step["_parent"]
        while parent is not None:
            depth, parent = depth + 1, parent["_parent"]
        return depth
