"""Flows: a trigger and an ordered list of steps (wait, send, condition, end), and one run per person per entry.

A flow's send steps each own a backing Campaign of kind "flow": sending, links, attribution, statistics and
exactly-once are the campaigns' own, the message of a run being the row (campaign, subscriber, occurrence =
the run's id). Steps are versioned: editing a flow writes the steps of a new `version`, and a run keeps the
version it started with (its `current_step_id` points into that version's steps). How runs move:
kinnekt/flows/engine.py and docs/flows.md.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint, column
from sqlalchemy.orm import Mapped, mapped_column

from kinnekt import shared_cache
from kinnekt.db import Base, UTCDateTime
from kinnekt.models.base import IdType, TenantMixin, Timestamps

TRIGGERS = ("segment_enter", "segment_leave", "subscribed", "checkout_started", "order_placed", "order_fulfilled",
            "product_viewed", "added_to_cart")
"""What starts a run: entering or leaving the flow's segment, subscribing (any source, or one keyword in
`trigger_config["keyword"]`), starting a checkout not completed, placing an order, an order fulfilled, viewing a
product or adding one to the cart on the storefront (the web pixel's events, once attributed to the subscriber)."""

EXITS = ("order", "unsubscribed", "left_segment", "added_to_cart", "started_checkout")
"""Exit conditions, checked in the flow's chosen order before every step: the person placed an order since the
run began (or completed the run's checkout), is no longer subscribed, no longer matches the trigger's segment,
added something to the cart since the run began, started a checkout since the run began."""

STEP_KINDS = ("wait", "send", "condition", "end")
BRANCHES = ("yes", "no")


class FlowStatus:
    """A flow is `off` (built, not entering anyone) or `on`; runs already in it go on either way."""

    OFF = "off"
    ON = "on"


class RunState:
    """A run is `active` (waiting for its due time at its current step), `completed` (past its last step or at an
    end step) or `exited` (an exit condition held before a step; `exit_reason` says which)."""

    ACTIVE = "active"
    COMPLETED = "completed"
    EXITED = "exited"


class Flow(TenantMixin, Timestamps, Base):
    """A trigger with its configuration, exit conditions, re-entry cool-down and the current version of its steps.

    `scanned_through` is how far the trigger's sources have been read (kinnekt/flows/engine.enter); entries are
    unique per (flow, trigger_key) on the runs, so reading an instant twice never starts a second run.
    """

    __tablename__ = "flows"
    __table_args__ = (UniqueConstraint("shop_id", "builtin"),)  # one of each built-in per shop; NULLs are free

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    trigger: Mapped[str] = mapped_column(String(24), nullable=False)  # TRIGGERS
    trigger_config: Mapped[dict] = mapped_column(JSON, default=dict, nullable=False)  # {"keyword": "JOIN"}
    segment_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("segments.id", ondelete="SET NULL"),
                                                   index=True)  # the trigger's segment (segment triggers, exit)
    status: Mapped[str] = mapped_column(String(8), default=FlowStatus.OFF, nullable=False)
    exit_conditions: Mapped[list] = mapped_column(JSON, default=list, nullable=False)  # EXITS, in checking order
    reentry_cooldown_seconds: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    version: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    builtin: Mapped[str | None] = mapped_column(String(48))
    enabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    scanned_through: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class FlowStep(TenantMixin, Base):
    """One step of one version of a flow: in order (`position`) within its parent condition's `branch` (yes/no),
    or at the top level (no parent). A send step's message lives on its backing campaign (`campaign_id`)."""

    __tablename__ = "flow_steps"
    __table_args__ = (
        UniqueConstraint("campaign_id"),
        Index("ix_flow_steps_flow_version", "flow_id", "version", "parent_id", "branch", "position"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    flow_id: Mapped[int] = mapped_column(IdType, ForeignKey("flows.id", ondelete="CASCADE"), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    parent_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("flow_steps.id", ondelete="CASCADE"))
    branch: Mapped[str | None] = mapped_column(String(3))  # yes | no under a condition, NULL at the top
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(12), nullable=False)  # STEP_KINDS
    wait_seconds: Mapped[int | None] = mapped_column(Integer)  # wait: a duration
    wait_until_minute: Mapped[int | None] = mapped_column(Integer)  # wait: until this local time (minutes)
    condition: Mapped[dict | None] = mapped_column(JSON)  # condition: a segment definition
    campaign_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("campaigns.id", ondelete="CASCADE"))


class FlowRun(TenantMixin, Base):
    """One person's pass through a flow, per entry: where it is (`current_step_id`), when that step is due, the
    trigger's data (checkout token, order, product) and the flow version it started with.

    One active run per (flow, subscriber) is a partial unique index; one run per trigger occurrence is the
    unique (flow, trigger_key).
    """

    __tablename__ = "flow_runs"
    __table_args__ = (
        UniqueConstraint("flow_id", "trigger_key"),
        Index("ux_flow_runs_one_active", "flow_id", "subscriber_id", unique=True,
              postgresql_where=column("state") == RunState.ACTIVE, sqlite_where=column("state") == RunState.ACTIVE),
        Index("ix_flow_runs_due", "shop_id", "due_at",
              postgresql_where=column("state") == RunState.ACTIVE, sqlite_where=column("state") == RunState.ACTIVE),
        Index("ix_flow_runs_subscriber", "subscriber_id", "flow_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    flow_id: Mapped[int] = mapped_column(IdType, ForeignKey("flows.id", ondelete="CASCADE"), nullable=False)
    subscriber_id: Mapped[int] = mapped_column(IdType, ForeignKey("subscribers.id", ondelete="CASCADE"),
                                               nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(12), default=RunState.ACTIVE, nullable=False)
    current_step_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("flow_steps.id", ondelete="SET NULL"))
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    trigger_key: Mapped[str] = mapped_column(String(96), nullable=False)  # e.g. "checkout:<token>", "order:<id>"
    checkout_token: Mapped[str | None] = mapped_column(String(64))
    order_id: Mapped[int | None] = mapped_column(IdType, ForeignKey("orders.id", ondelete="SET NULL"))
    product_id: Mapped[int | None] = mapped_column(BigInteger)  # Shopify's product id (a line item's, the pixel's)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    orders_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # the "order" exit counts orders from here
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    exit_reason: Mapped[str | None] = mapped_column(String(32))


# Whether a shop has a flow on is remembered per process (kinnekt.flows.engine.request_entries): a flow added,
# switched on or off, or removed moves the shop's generation of it in every process.
shared_cache.watch(Flow, ("status",), "flow-status")
