"""flows: a trigger and versioned steps, one run per person per entry; checkouts keep their recovery link

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 14:00:00

`flows` (trigger, its configuration, exit conditions, re-entry cool-down, version), `flow_steps` (ordered within
their parent condition's branch; a send step owns a backing campaign of kind "flow") and `flow_runs` (state,
current step, due time, the trigger's data; one active run per flow and subscriber is a partial unique index,
one run per trigger occurrence the unique (flow, trigger_key)). `checkouts.recovery_url` holds Shopify's
abandoned_checkout_url for {checkout_url}. New tables and a plain ADD COLUMN: nothing to fill.
"""
from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    """The three tables with their keys and indexes, and the checkout column."""
    op.create_table('flows',
    sa.Column('id', ID, nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('trigger', sa.String(length=24), nullable=False),
    sa.Column('trigger_config', sa.JSON(), nullable=False),
    sa.Column('segment_id', ID, nullable=True),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('exit_conditions', sa.JSON(), nullable=False),
    sa.Column('reentry_cooldown_seconds', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('builtin', sa.String(length=48), nullable=True),
    sa.Column('enabled_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('scanned_through', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('shop_id', ID, nullable=False),
    sa.Column('created_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['segment_id'], ['segments.id'], name=op.f('fk_flows_segment_id_segments'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_flows_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flows')),
    sa.UniqueConstraint('shop_id', 'builtin', name=op.f('uq_flows_shop_id_builtin'))
    )
    op.create_index(op.f('ix_flows_segment_id'), 'flows', ['segment_id'], unique=False)
    op.create_index(op.f('ix_flows_shop_id'), 'flows', ['shop_id'], unique=False)
    op.create_table('flow_steps',
    sa.Column('id', ID, nullable=False),
    sa.Column('flow_id', ID, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('parent_id', ID, nullable=True),
    sa.Column('branch', sa.String(length=3), nullable=True),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('wait_seconds', sa.Integer(), nullable=True),
    sa.Column('wait_until_minute', sa.Integer(), nullable=True),
    sa.Column('condition', sa.JSON(), nullable=True),
    sa.Column('campaign_id', ID, nullable=True),
    sa.Column('shop_id', ID, nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_flow_steps_campaign_id_campaigns'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['flow_id'], ['flows.id'], name=op.f('fk_flow_steps_flow_id_flows'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_id'], ['flow_steps.id'], name=op.f('fk_flow_steps_parent_id_flow_steps'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_flow_steps_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flow_steps')),
    sa.UniqueConstraint('campaign_id', name=op.f('uq_flow_steps_campaign_id'))
    )
    op.create_index('ix_flow_steps_flow_version', 'flow_steps', ['flow_id', 'version', 'parent_id', 'branch',
                                                               'position'], unique=False)
    op.create_index(op.f('ix_flow_steps_shop_id'), 'flow_steps', ['shop_id'], unique=False)
    op.create_table('flow_runs',
    sa.Column('id', ID, nullable=False),
    sa.Column('flow_id', ID, nullable=False),
    sa.Column('subscriber_id', ID, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('current_step_id', ID, nullable=True),
    sa.Column('due_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('trigger_key', sa.String(length=96), nullable=False),
    sa.Column('checkout_token', sa.String(length=64), nullable=True),
    sa.Column('order_id', ID, nullable=True),
    sa.Column('product_id', sa.BigInteger(), nullable=True),
    sa.Column('started_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('orders_since', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('finished_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('exit_reason', sa.String(length=32), nullable=True),
    sa.Column('shop_id', ID, nullable=False),
    sa.ForeignKeyConstraint(['current_step_id'], ['flow_steps.id'],
                            name=op.f('fk_flow_runs_current_step_id_flow_steps'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['flow_id'], ['flows.id'], name=op.f('fk_flow_runs_flow_id_flows'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], name=op.f('fk_flow_runs_order_id_orders'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_flow_runs_shop_id_shops'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], name=op.f('fk_flow_runs_subscriber_id_subscribers'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_flow_runs')),
    sa.UniqueConstraint('flow_id', 'trigger_key', name=op.f('uq_flow_runs_flow_id_trigger_key'))
    )
    op.create_index('ix_flow_runs_due', 'flow_runs', ['shop_id', 'due_at'], unique=False,
                    postgresql_where=sa.text("state = 'active'"), sqlite_where=sa.text("state = 'active'"))
    op.create_index('ux_flow_runs_one_active', 'flow_runs', ['flow_id', 'subscriber_id'], unique=True,
                    postgresql_where=sa.text("state = 'active'"), sqlite_where=sa.text("state = 'active'"))
    op.create_index('ix_flow_runs_subscriber', 'flow_runs', ['subscriber_id', 'flow_id', 'started_at'],
                    unique=False)
    op.create_index(op.f('ix_flow_runs_shop_id'), 'flow_runs', ['shop_id'], unique=False)
    op.add_column('checkouts', sa.Column('recovery_url', sa.String(length=2048), nullable=True))


def downgrade() -> None:
    """Drop them again."""
    op.drop_column('checkouts', 'recovery_url')
    op.drop_table('flow_runs')
    op.drop_table('flow_steps')
    op.drop_table('flows')
