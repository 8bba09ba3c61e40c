"""customers: lifecycle stage (with the previous one and when it changed) and the expected next order;
attributions indexed by subscriber

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 10:30:00

Filled by the daily lifecycle job (kinnekt/segments/lifecycle.py; expected_next_order_at also at order ingest),
so existing rows start empty and get their values at its first run. Plain ADD / DROP COLUMN (see 0011).
"""
from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Four nullable columns on customers, the (shop_id, lifecycle_stage) index; attributions by subscriber (the
    used_discount event rule probes them per subscriber)."""
    op.add_column('customers', sa.Column('expected_next_order_at', kinnekt.db.UTCDateTime(), nullable=True))
    op.add_column('customers', sa.Column('lifecycle_stage', sa.String(length=16), nullable=True))
    op.add_column('customers', sa.Column('lifecycle_previous_stage', sa.String(length=16), nullable=True))
    op.add_column('customers', sa.Column('lifecycle_changed_at', kinnekt.db.UTCDateTime(), nullable=True))
    op.create_index('ix_customers_shop_lifecycle', 'customers', ['shop_id', 'lifecycle_stage'], unique=False)
    op.create_index('ix_attributions_subscriber', 'attributions', ['subscriber_id'], unique=False)


def downgrade() -> None:
    """Drop them again."""
    op.drop_index('ix_attributions_subscriber', table_name='attributions')
    op.drop_index('ix_customers_shop_lifecycle', table_name='customers')
    for column in ('lifecycle_changed_at', 'lifecycle_previous_stage', 'lifecycle_stage', 'expected_next_order_at'):
        op.drop_column('customers', column)
