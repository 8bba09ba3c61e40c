"""billing through Shopify: the shop's plan, usage records and which record charged each message

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 14:15:00

`billing_plans` mirrors a shop's app subscription (one per shop); `usage_records` are the usage charges asked of
Shopify, unique on their idempotency key; `usage_record_messages` links each charged message to its record, the
message id being the primary key (a message is charged once). Campaigns get `cap_choice` ("up_to_cap": send only
as far as the cap allows). New tables and a plain nullable ADD COLUMN: nothing to fill.
"""
from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    """The three tables with their keys and indexes, and the campaigns' column."""
    op.create_table('billing_plans',
    sa.Column('id', ID, nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('subscription_id', sa.String(length=128), nullable=True),
    sa.Column('line_item_id', sa.String(length=128), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('terms', sa.Text(), nullable=False),
    sa.Column('capped_amount', kinnekt.db.Money(), nullable=False),
    sa.Column('balance_used', kinnekt.db.Money(), nullable=False),
    sa.Column('requested_cap', kinnekt.db.Money(), nullable=True),
    sa.Column('confirmation_url', sa.Text(), nullable=True),
    sa.Column('test', sa.Boolean(), nullable=False),
    sa.Column('cap_reached_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('approaching_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('period_ends_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('shop_id', ID, nullable=False),
    sa.Column('created_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_billing_plans_shop_id_shops'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_billing_plans')),
    sa.UniqueConstraint('shop_id', name=op.f('uq_billing_plans_shop_id')),
    sa.UniqueConstraint('subscription_id', name=op.f('uq_billing_plans_subscription_id'))
    )
    op.create_index(op.f('ix_billing_plans_shop_id'), 'billing_plans', ['shop_id'], unique=False)
    op.create_table('usage_records',
    sa.Column('id', ID, nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('messages', sa.Integer(), nullable=False),
    sa.Column('parts', sa.Integer(), nullable=False),
    sa.Column('amount', kinnekt.db.Money(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('shopify_id', sa.String(length=128), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('recorded_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('shop_id', ID, nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_usage_records_shop_id_shops'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_records')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_usage_records_idempotency_key'))
    )
    op.create_index(op.f('ix_usage_records_shop_id'), 'usage_records', ['shop_id'], unique=False)
    op.create_index('ix_usage_records_status', 'usage_records', ['status', 'created_at'], unique=False)
    op.create_table('usage_record_messages',
    sa.Column('message_id', ID, nullable=False),
    sa.Column('usage_record_id', ID, nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_usage_record_messages_message_id_messages'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['usage_record_id'], ['usage_records.id'],
                            name=op.f('fk_usage_record_messages_usage_record_id_usage_records'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_usage_record_messages'))
    )
    op.create_index(op.f('ix_usage_record_messages_usage_record_id'), 'usage_record_messages', ['usage_record_id'],
                    unique=False)
    op.add_column('campaigns', sa.Column('cap_choice', sa.String(length=16), nullable=True))


def downgrade() -> None:
    """Drop the three tables and the campaigns' column."""
    with op.batch_alter_table('campaigns') as batch:
        batch.drop_column('cap_choice')
    op.drop_index(op.f('ix_usage_record_messages_usage_record_id'), table_name='usage_record_messages')
    op.drop_table('usage_record_messages')
    op.drop_index('ix_usage_records_status', table_name='usage_records')
    op.drop_index(op.f('ix_usage_records_shop_id'), table_name='usage_records')
    op.drop_table('usage_records')
    op.drop_index(op.f('ix_billing_plans_shop_id'), table_name='billing_plans')
    op.drop_table('billing_plans')
