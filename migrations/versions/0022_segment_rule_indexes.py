"""partial covering indexes for segment rules on orders, line items and subscribers (issue 22, PostgreSQL only)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 17:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None

_COUNTED_ORDER = sa.text('test IS false AND cancelled_at IS NULL')
_COUNTED_LINE = sa.text('counted IS true')


def upgrade() -> None:
    """Create the six indexes on PostgreSQL (the models declare them for PostgreSQL only)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index('ix_orders_counted_created', 'orders', ['shop_id', 'created_at'], unique=False,
                    postgresql_include=['customer_id'], postgresql_where=_COUNTED_ORDER)
    op.create_index('ix_orders_financial_status', 'orders', ['shop_id', 'financial_status'], unique=False,
                    postgresql_include=['customer_id'], postgresql_where=sa.text('test IS false'))
    op.create_index('ix_orders_cancelled', 'orders', ['shop_id', 'customer_id'], unique=False,
                    postgresql_where=sa.text('test IS false AND cancelled_at IS NOT NULL'))
    op.create_index('ix_line_items_counted_product', 'line_items', ['shop_id', 'product_id'], unique=False,
                    postgresql_include=['customer_id'], postgresql_where=_COUNTED_LINE)
    op.create_index('ix_line_items_counted_price', 'line_items', ['shop_id', 'price'], unique=False,
                    postgresql_include=['customer_id'], postgresql_where=_COUNTED_LINE)
    op.create_index('ix_subscribers_segment_candidates', 'subscribers', ['shop_id', 'customer_id'], unique=False,
                    postgresql_include=['id'],
                    postgresql_where=sa.text("status = 'subscribed' AND suppressed_at IS NULL"))


def downgrade() -> None:
    """Drop them."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index('ix_subscribers_segment_candidates', table_name='subscribers')
    op.drop_index('ix_line_items_counted_price', table_name='line_items')
    op.drop_index('ix_line_items_counted_product', table_name='line_items')
    op.drop_index('ix_orders_cancelled', table_name='orders')
    op.drop_index('ix_orders_financial_status', table_name='orders')
    op.drop_index('ix_orders_counted_created', table_name='orders')
