"""line items repeat their order's customer and whether it counts (segment rules read line_items alone)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 22:05:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add line_items.customer_id and counted, fill them from each line item's order, then index."""
    with op.batch_alter_table('line_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('customer_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                                      nullable=True))
        batch_op.add_column(sa.Column('counted', sa.Boolean(), nullable=True))
    op.execute(
        "UPDATE line_items SET "
        "customer_id = (SELECT o.customer_id FROM orders o WHERE o.id = line_items.order_id), "
        "counted = (SELECT (o.test = false AND o.cancelled_at IS NULL) FROM orders o WHERE o.id = line_items.order_id)"
    )
    op.execute("UPDATE line_items SET counted = false WHERE counted IS NULL")  # an orphan cannot count
    with op.batch_alter_table('line_items', schema=None) as batch_op:
        batch_op.alter_column('counted', existing_type=sa.Boolean(), nullable=False)
        batch_op.create_foreign_key(batch_op.f('fk_line_items_customer_id_customers'), 'customers',
                                    ['customer_id'], ['id'], ondelete='SET NULL')
        batch_op.create_index('ix_line_items_customer', ['customer_id'], unique=False)


def downgrade() -> None:
    """Drop the repeated order facts."""
    with op.batch_alter_table('line_items', schema=None) as batch_op:
        batch_op.drop_index('ix_line_items_customer')
        batch_op.drop_constraint(batch_op.f('fk_line_items_customer_id_customers'), type_='foreignkey')
        batch_op.drop_column('counted')
        batch_op.drop_column('customer_id')
