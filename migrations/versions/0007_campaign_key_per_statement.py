"""PostgreSQL: the messages -> campaigns key checked once per statement (triggers) instead of per row

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 08:40:00

SQLite keeps its declared key. The trigger statements come from kinnekt/models/campaign_key.py, the same
text `create_all` runs; a later change to them needs a migration of its own (CREATE OR REPLACE).
"""
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop the declared key on PostgreSQL and install the statement-level check and the cascade."""
    if op.get_bind().dialect.name != "postgresql":
        return
    from kinnekt.models.campaign_key import CAMPAIGNS_DDL, MESSAGES_DDL
    op.drop_constraint('fk_messages_campaign_id_campaigns', 'messages', type_='foreignkey')
    for statement in MESSAGES_DDL + CAMPAIGNS_DDL:
        op.execute(statement)


def downgrade() -> None:
    """Back to the declared key (checked per row) on PostgreSQL."""
    if op.get_bind().dialect.name != "postgresql":
        return
    from kinnekt.models.campaign_key import DROP_DDL
    for statement in DROP_DDL:
        op.execute(statement)
    op.create_foreign_key('fk_messages_campaign_id_campaigns', 'messages', 'campaigns',
                          ['campaign_id', 'shop_id'], ['id', 'shop_id'], ondelete='CASCADE')
