"""automations become one-step flows

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-07 18:00:00

A data migration (no schema change). Each automation becomes a flow with the same name, segment, trigger
(`enter` → `segment_enter`, `leave` → `segment_leave`), built-in key and on/off state, no exit conditions and no
cool-down, whose version 1 is a wait of the automation's delay (when it has one) and one send step backed by the
automation's *own* campaign (its kind becomes "flow"): text, discount, links, messages, statistics and
attribution carry over as they are. Then the automation row goes.

Never twice, never lost (docs/flows.md, "Automations became flows"):
- an automation's message is the row (campaign, subscriber, occurrence = the segment event id); a flow's message
  uses the run's id. So every entry the automation already fired (every message row it made, sent, pending or
  skipped) gets a *completed* run keyed `event:<segment event id>`, the flow's own key for that entry: the flow
  reading that entry again starts nothing (unique (flow, trigger_key)).
- entries logged past the automation's cursor (not fired yet) are read by the flow: `scanned_through` is the time
  of the cursor's event, or of the earliest unread entry if earlier, so its window (less the lookback) covers them;
  `enabled_at` (the window never starts before it) is the automation's.
- messages already queued (waiting for their delay, quiet hours, or held for their discount code) stay as they are
  in the same campaign, which stays In Progress: the campaigns' senders send them when due, exactly once.

Downgrade leaves the data as it is (the flows stay flows; the automations table is still there, empty).
"""
from __future__ import annotations

import datetime as dt

from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0026'
down_revision = '0025'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
TIME = kinnekt.db.UTCDateTime()

automations = sa.table(
    'automations', sa.column('id', ID), sa.column('shop_id', ID), sa.column('campaign_id', ID),
    sa.column('name', sa.String), sa.column('trigger', sa.String), sa.column('segment_id', ID),
    sa.column('delay_seconds', sa.Integer), sa.column('enabled', sa.Boolean), sa.column('builtin', sa.String),
    sa.column('last_event_id', ID), sa.column('enabled_at', TIME), sa.column('created_at', TIME),
    sa.column('updated_at', TIME))
campaigns = sa.table('campaigns', sa.column('id', ID), sa.column('kind', sa.String), sa.column('status', sa.String))
segment_events = sa.table('segment_events', sa.column('id', ID), sa.column('shop_id', ID),
                          sa.column('segment_id', ID), sa.column('at', TIME))
messages = sa.table('messages', sa.column('id', ID), sa.column('campaign_id', ID), sa.column('subscriber_id', ID),
                    sa.column('occurrence', ID), sa.column('created_at', TIME))
subscribers = sa.table('subscribers', sa.column('id', ID))
flows = sa.table(
    'flows', sa.column('id', ID), sa.column('shop_id', ID), sa.column('name', sa.String),
    sa.column('trigger', sa.String), sa.column('trigger_config', sa.JSON), sa.column('segment_id', ID),
    sa.column('status', sa.String), sa.column('exit_conditions', sa.JSON),
    sa.column('reentry_cooldown_seconds', sa.Integer), sa.column('version', sa.Integer),
    sa.column('builtin', sa.String), sa.column('enabled_at', TIME), sa.column('scanned_through', TIME),
    sa.column('created_at', TIME), sa.column('updated_at', TIME))
flow_steps = sa.table(
    'flow_steps', sa.column('id', ID), sa.column('shop_id', ID), sa.column('flow_id', ID),
    sa.column('version', sa.Integer), sa.column('parent_id', ID), sa.column('branch', sa.String),
    sa.column('position', sa.Integer), sa.column('kind', sa.String), sa.column('wait_seconds', sa.Integer),
    sa.column('wait_until_minute', sa.Integer), sa.column('condition', sa.JSON), sa.column('campaign_id', ID))
flow_runs = sa.table(
    'flow_runs', sa.column('id', ID), sa.column('shop_id', ID), sa.column('flow_id', ID),
    sa.column('subscriber_id', ID), sa.column('version', sa.Integer), sa.column('state', sa.String),
    sa.column('current_step_id', ID), sa.column('due_at', TIME), sa.column('trigger_key', sa.String),
    sa.column('started_at', TIME), sa.column('orders_since', TIME), sa.column('finished_at', TIME))


def upgrade() -> None:
    """Each automation becomes a flow (see the module docstring), then the automation rows go."""
    conn = op.get_bind()
    now = dt.datetime.now(dt.timezone.utc)
    rows = conn.execute(
        sa.select(automations, campaigns.c.status.label('campaign_status'))
        .select_from(automations.join(campaigns, campaigns.c.id == automations.c.campaign_id))
        .order_by(automations.c.id)).mappings().all()
    for row in rows:
        _convert(conn, row, now)
    conn.execute(automations.delete())


def _convert(conn, row, now: dt.datetime) -> None:
    """One automation as a flow with its steps and the completed runs of the entries it already fired."""
    on = bool(row['enabled']) and row['campaign_status'] == 'in_progress' and row['segment_id'] is not None
    cursor = int(row['last_event_id'] or 0)
    cursor_at = conn.scalar(sa.select(segment_events.c.at).where(segment_events.c.id == cursor)) if cursor else None
    unread_at = None
    if row['segment_id'] is not None:
        unread_at = conn.scalar(sa.select(sa.func.min(segment_events.c.at)).where(
            segment_events.c.shop_id == row['shop_id'], segment_events.c.segment_id == row['segment_id'],
            segment_events.c.id > cursor))
    enabled_at = row['enabled_at'] or (cursor_at if on else None) or (now if on else None)
    scanned = [when for when in (cursor_at, unread_at) if when is not None]
    scanned_through = (min(scanned) if scanned else enabled_at) if on else None
    builtin = row['builtin']
    if builtin is not None and conn.scalar(sa.select(flows.c.id).where(
            flows.c.shop_id == row['shop_id'], flows.c.builtin == builtin)) is not None:
        builtin = None  # the shop already has a flow of that key: this one is the merchant's own now
    flow_id = conn.execute(flows.insert().values(
        shop_id=row['shop_id'], name=row['name'],
        trigger='segment_leave' if row['trigger'] == 'leave' else 'segment_enter', trigger_config={},
        segment_id=row['segment_id'], status='on' if on else 'off', exit_conditions=[], reentry_cooldown_seconds=0,
        version=1, builtin=builtin, enabled_at=enabled_at, scanned_through=scanned_through,
        created_at=row['created_at'] or now, updated_at=row['updated_at'] or now).returning(flows.c.id)).scalar_one()
    position = 0
    delay = int(row['delay_seconds'] or 0)
    if delay > 0:
        conn.execute(flow_steps.insert().values(shop_id=row['shop_id'], flow_id=flow_id, version=1, position=0,
                                                kind='wait', wait_seconds=delay))
        position = 1
    send_id = conn.execute(flow_steps.insert().values(
        shop_id=row['shop_id'], flow_id=flow_id, version=1, position=position, kind='send',
        campaign_id=row['campaign_id']).returning(flow_steps.c.id)).scalar_one()
    conn.execute(campaigns.update().where(campaigns.c.id == row['campaign_id']).values(kind='flow'))
    # Every entry already fired: a completed run under the flow's own key for it, so it never fires again.
    fired = (sa.select(sa.literal(row['shop_id'], ID), sa.literal(flow_id, ID),
                       sa.func.min(messages.c.subscriber_id), sa.literal(1), sa.literal('completed'),
                       sa.literal(send_id, ID), sa.literal('event:', sa.String) + sa.cast(messages.c.occurrence,
                                                                                        sa.String),
                       sa.func.min(messages.c.created_at), sa.func.min(messages.c.created_at),
                       sa.func.min(messages.c.created_at))
             .select_from(messages.join(subscribers, subscribers.c.id == messages.c.subscriber_id))
             .where(messages.c.campaign_id == row['campaign_id'], messages.c.occurrence > 0)
             .group_by(messages.c.occurrence))
    conn.execute(flow_runs.insert().from_select(
        ['shop_id', 'flow_id', 'subscriber_id', 'version', 'state', 'current_step_id', 'trigger_key', 'started_at',
         'orders_since', 'finished_at'], fired))


def downgrade() -> None:
    """Nothing to undo in the schema; the flows made from automations stay flows."""
