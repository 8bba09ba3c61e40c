"""Flows' figures, computed from the rows (never from counters): for the list, runs by state and messages sent;
per step (`step_figures`), entered, sent, clicked, orders and revenue.

Per step, for one version of a flow's steps:
- entered: the runs that reached the step. A run stands at the step it will execute next (exited and completed
  runs keep the step where they stopped), so a run has reached its step and every step on the way to it: the
  steps before it in its lane, and the condition (and the steps before that condition) whose branch holds it.
  A send step's figure is exact: its message rows (one per run that executed it, the insert's key) plus the runs
  standing at it. For a wait or condition step inside a branch, runs that have since left the branch are not
  counted (which branch they took is recorded only by their messages).
- sent, clicks (every counted tap), clicked (recipients who tapped), orders and revenue: the send step's campaign's,
  with the campaigns' definitions (kinnekt/campaigns/stats.py: sent = accepted by the provider; orders and revenue
  = attributions to that message). The flow's totals: runs started; sums over its send steps.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.automations.stats import mask_phone
from kinnekt.campaigns.stats import accepted
from kinnekt.models import Attribution, Click, Flow, FlowRun, FlowStep, Link, Message, Segment, Shop, Subscriber
from kinnekt.models.flow import RunState
from kinnekt.models.message import MessageStatus

TRIGGER_LABELS = {"segment_enter": "Enters “{segment}”", "segment_leave": "Leaves “{segment}”",
                  "subscribed": "Subscribes", "checkout_started": "Starts a checkout and does not complete it",
                  "order_placed": "Places an order", "order_fulfilled": "An order is fulfilled",
                  "product_viewed": "Views a product", "added_to_cart": "Adds a product to the cart"}
"""Each trigger in the merchant's words."""


@dataclass
class FlowRow:
    """One flow with its figures."""

    flow: Flow
    trigger: str
    steps: int = 0
    runs: dict[str, int] = field(default_factory=dict)
    sent: int = 0


def trigger_label(flow: Flow, segment: Segment | None) -> str:
    """What starts the flow, in words."""
    label = TRIGGER_LABELS.get(flow.trigger, flow.trigger)
    if flow.trigger == "subscribed" and (flow.trigger_config or {}).get("keyword"):
        return f"Subscribes with the keyword {str(flow.trigger_config['keyword']).upper()}"
    return label.format(segment=segment.name if segment else "a deleted segment")


def flow_rows(session: OrmSession, shop: Shop) -> list[FlowRow]:
    """The shop's flows, built-ins first, with their steps (current version), runs by state and messages sent."""
    flows = session.scalars(select(Flow).where(Flow.shop_id == shop.id)
                            .order_by(Flow.builtin.is_(None), Flow.name, Flow.id)).all()
    if not flows:
        return []
    ids = [flow.id for flow in flows]
    segments = {s.id: s for s in session.scalars(select(Segment).where(
        Segment.shop_id == shop.id, Segment.id.in_([f.segment_id for f in flows if f.segment_id])))}
    rows = {flow.id: FlowRow(flow, trigger_label(flow, segments.get(flow.segment_id))) for flow in flows}
    for flow_id, version, count in session.execute(
            select(FlowStep.flow_id, FlowStep.version, func.count()).where(FlowStep.shop_id == shop.id,
                                                                            FlowStep.flow_id.in_(ids))
            .group_by(FlowStep.flow_id, FlowStep.version)):
        if version == rows[flow_id].flow.version:
            rows[flow_id].steps = count
    for flow_id, state, count in session.execute(
            select(FlowRun.flow_id, FlowRun.state, func.count()).where(FlowRun.shop_id == shop.id,
                                                                       FlowRun.flow_id.in_(ids))
            .group_by(FlowRun.flow_id, FlowRun.state)):
        rows[flow_id].runs[state] = count
    for flow_id, count in session.execute(
            select(FlowStep.flow_id, func.count(Message.id)).join(Message, Message.campaign_id == FlowStep.campaign_id)
            .where(FlowStep.shop_id == shop.id, FlowStep.flow_id.in_(ids),
                   Message.status.in_(MessageStatus.ACCEPTED))
            .group_by(FlowStep.flow_id)):
        rows[flow_id].sent = count
    return [rows[flow.id] for flow in flows]



@dataclass
class StepFigures:
    """One step of a flow version with its figures (the message figures only for send steps)."""

    step: FlowStep
    depth: int  # 0 at the top level, 1 inside a condition's branch, ...
    branch: str | None  # "yes" / "no" inside a branch
    entered: int = 0
    here: int = 0  # active runs standing at it now (waiting to execute it)
    sent: int = 0
    clicks: int = 0
    clicked: int = 0
    orders: int = 0
    revenue: Decimal = Decimal(0)


@dataclass
class FlowFigures:
    """A flow version's steps, top to bottom, with their figures, and the flow's totals."""

    flow: Flow
    version: int
    steps: list[StepFigures] = field(default_factory=list)
    entered: int = 0  # runs started on this version
    sent: int = 0
    clicks: int = 0
    clicked: int = 0
    orders: int = 0
    revenue: Decimal = Decimal(0)


def step_figures(session: OrmSession, flow: Flow, version: int | None = None) -> FlowFigures:
    """Entered, sent, clicked, orders and revenue per step of one version (the current one by default) of the flow,
    and the flow's totals (see the module docstring); five grouped queries whatever the number of runs."""
    version = int(version if version is not None else flow.version)
    shop_id = flow.shop_id
    rows = session.scalars(select(FlowStep).where(FlowStep.shop_id == shop_id, FlowStep.flow_id == flow.id,
                                                  FlowStep.version == version)
                           .order_by(FlowStep.position, FlowStep.id)).all()
    lanes: dict[tuple[int | None, str | None], list[FlowStep]] = defaultdict(list)
    for step in rows:
        lanes[(step.parent_id, step.branch if step.parent_id is not None else None)].append(step)
    figures = FlowFigures(flow=flow, version=version)
    by_id: dict[int, StepFigures] = {}
    before: dict[int, list[int]] = {}  # step -> the steps every run at it has passed through

    def walk(parent_id: int | None, branch: str | None, depth: int, passed: list[int]) -> None:
        lane_passed = list(passed)
        for step in lanes.get((parent_id, branch), []):
            figure = StepFigures(step=step, depth=depth, branch=branch)
            figures.steps.append(figure)
            by_id[step.id] = figure
            before[step.id] = list(lane_passed)
            if step.kind == "condition":
                for name in ("yes", "no"):
                    walk(step.id, name, depth + 1, lane_passed + [step.id])
            lane_passed.append(step.id)

    walk(None, None, 0, [])
    runs = session.execute(
        select(FlowRun.current_step_id, FlowRun.state, func.count())
        .where(FlowRun.shop_id == shop_id, FlowRun.flow_id == flow.id, FlowRun.version == version)
        .group_by(FlowRun.current_step_id, FlowRun.state)).all()
    for step_id, state, count in runs:
        figures.entered += count
        if step_id not in by_id:
            continue
        if state == RunState.ACTIVE:
            by_id[step_id].here += count
        if by_id[step_id].step.kind != "send":  # a send step's own figure comes from its messages, below
            by_id[step_id].entered += count
        for passed in before[step_id]:
            if by_id[passed].step.kind != "send":
                by_id[passed].entered += count
    sends = {f.step.campaign_id: f for f in figures.steps if f.step.kind == "send" and f.step.campaign_id}
    for figure in by_id.values():  # a send step: the runs standing at it, not yet sent (active or exited there)
        if figure.step.kind == "send":
            figure.entered = sum(count for step_id, state, count in runs
                                 if step_id == figure.step.id and state != RunState.COMPLETED)
    if sends:
        ids = list(sends)
        for campaign_id, rows_, sent in session.execute(
                select(Message.campaign_id, func.count(), func.count().filter(accepted()))
                .where(Message.shop_id == shop_id, Message.campaign_id.in_(ids)).group_by(Message.campaign_id)):
            sends[campaign_id].entered += rows_
            sends[campaign_id].sent = sent
        for campaign_id, clicks, clicked in session.execute(
                select(Click.campaign_id, func.count(Click.id), func.count(distinct(Link.message_id)))
                .join(Link, Link.id == Click.link_id)
                .where(Click.shop_id == shop_id, Click.campaign_id.in_(ids)).group_by(Click.campaign_id)):
            sends[campaign_id].clicks, sends[campaign_id].clicked = clicks, clicked
        for campaign_id, orders, revenue in session.execute(
                select(Attribution.campaign_id, func.count(Attribution.id), func.sum(Attribution.revenue))
                .where(Attribution.shop_id == shop_id, Attribution.campaign_id.in_(ids))
                .group_by(Attribution.campaign_id)):
            sends[campaign_id].orders = orders
            sends[campaign_id].revenue = revenue if revenue is not None else Decimal(0)
    for figure in sends.values():
        figures.sent += figure.sent
        figures.clicks += figure.clicks
        figures.clicked += figure.clicked
        figures.orders += figure.orders
        figures.revenue += figure.revenue
    return figures


RECENT_RUNS = 25
"""How many of the latest runs a flow's page lists."""

RUN_STATES = {RunState.ACTIVE: ("Waiting", "info"), RunState.COMPLETED: ("Completed", "success"),
              RunState.EXITED: ("Left early", None)}
"""Each run state in the merchant's words, with its badge tone."""

EXIT_REASONS = {"order": "placed an order", "unsubscribed": "unsubscribed", "left_segment": "left the segment",
                "added_to_cart": "added to the cart", "started_checkout": "started a checkout"}
"""Why a run left early, in the merchant's words."""


@dataclass(frozen=True)
class RunRow:
    """One run of a flow for its page: who (masked phone), its state, where it stands and when."""

    run_id: int
    subscriber_id: int
    phone: str
    state: str
    exit_reason: str | None
    version: int
    step_id: int | None
    started_at: object
    due_at: object
    finished_at: object

    @property
    def state_label(self) -> str:
        """The state in words, with the exit's reason for a run that left early."""
        label = RUN_STATES.get(self.state, (self.state, None))[0]
        if self.state == RunState.EXITED and self.exit_reason:
            return f"{label}: {EXIT_REASONS.get(self.exit_reason, self.exit_reason)}"
        return label

    @property
    def tone(self) -> str | None:
        """The badge tone of the state."""
        return RUN_STATES.get(self.state, (None, None))[1]


def recent_runs(session: OrmSession, flow: Flow, *, limit: int = RECENT_RUNS) -> list[RunRow]:
    """The flow's latest runs, newest first, with the person's masked phone (one query)."""
    rows = session.execute(
        select(FlowRun.id, FlowRun.subscriber_id, Subscriber.phone, FlowRun.state, FlowRun.exit_reason,
               FlowRun.version, FlowRun.current_step_id, FlowRun.started_at, FlowRun.due_at, FlowRun.finished_at)
        .join(Subscriber, Subscriber.id == FlowRun.subscriber_id)
        .where(FlowRun.shop_id == flow.shop_id, FlowRun.flow_id == flow.id)
        .order_by(FlowRun.started_at.desc(), FlowRun.id.desc()).limit(limit)).all()
    return [RunRow(run_id=r[0], subscriber_id=r[1], phone=mask_phone(r[2]), state=r[3], exit_reason=r[4],
                   version=r[5], step_id=r[6], started_at=r[7], due_at=r[8], finished_at=r[9]) for r in rows]


def step_positions(session: OrmSession, flow: Flow, step_ids) -> dict[int, str]:
    """Each step's number as the editor shows it ("2", "3 · yes 1"), by id, for the steps of any version."""
    ids = {int(i) for i in step_ids if i is not None}
    if not ids:
        return {}
    versions = set(session.scalars(select(FlowStep.version).where(FlowStep.id.in_(ids))))
    rows = session.scalars(select(FlowStep).where(FlowStep.shop_id == flow.shop_id, FlowStep.flow_id == flow.id,
                                                  FlowStep.version.in_(versions))).all()
    by_id = {step.id: step for step in rows}
    numbers: dict[int, str] = {}

    def number(step: FlowStep) -> str:
        if step.id not in numbers:
            parent = by_id.get(step.parent_id) if step.parent_id is not None else None
            own = str(step.position + 1)
            numbers[step.id] = f"{number(parent)} · {step.branch} {own}" if parent else own
        return numbers[step.id]

    return {step_id: number(by_id[step_id]) for step_id in ids if step_id in by_id}
