"""messages keyed to their campaign and shop; partial provider-id, client-ref and shop indexes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 04:10:23.608809
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """(campaign_id, shop_id) references campaigns (one check instead of two); snapshot rows leave three indexes."""
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.create_unique_constraint(batch_op.f('uq_campaigns_id_shop_id'), ['id', 'shop_id'])

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_messages_provider_id'), type_='unique')
        batch_op.create_index('ux_messages_provider_id', ['provider_id'], unique=True, postgresql_where=sa.text('provider_id IS NOT NULL'), sqlite_where=sa.text('provider_id IS NOT NULL'))
        batch_op.drop_constraint(batch_op.f('fk_messages_campaign_id_campaigns'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_messages_shop_id_shops'), type_='foreignkey')
        batch_op.create_foreign_key(batch_op.f('fk_messages_campaign_id_campaigns'), 'campaigns', ['campaign_id', 'shop_id'], ['id', 'shop_id'], ondelete='CASCADE')
        batch_op.drop_index('ix_messages_client_ref')
        batch_op.create_index('ix_messages_client_ref', ['client_ref'], unique=False, postgresql_where=sa.text('client_ref IS NOT NULL'), sqlite_where=sa.text('client_ref IS NOT NULL'))
        batch_op.drop_index(batch_op.f('ix_messages_shop_id'))
        batch_op.create_index('ix_messages_shop_unlinked', ['shop_id'], unique=False, postgresql_where=sa.text('subscriber_id IS NULL'), sqlite_where=sa.text('subscriber_id IS NULL'))


def downgrade() -> None:
    """Back to separate campaign and shop keys and full indexes."""
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_shop_unlinked', postgresql_where=sa.text('subscriber_id IS NULL'), sqlite_where=sa.text('subscriber_id IS NULL'))
        batch_op.create_index(batch_op.f('ix_messages_shop_id'), ['shop_id'], unique=False)
        batch_op.drop_index('ix_messages_client_ref', postgresql_where=sa.text('client_ref IS NOT NULL'), sqlite_where=sa.text('client_ref IS NOT NULL'))
        batch_op.create_index('ix_messages_client_ref', ['client_ref'], unique=False)
        batch_op.drop_constraint(batch_op.f('fk_messages_campaign_id_campaigns'), type_='foreignkey')
        batch_op.create_foreign_key(batch_op.f('fk_messages_shop_id_shops'), 'shops', ['shop_id'], ['id'], ondelete='CASCADE')
        batch_op.create_foreign_key(batch_op.f('fk_messages_campaign_id_campaigns'), 'campaigns', ['campaign_id'], ['id'], ondelete='CASCADE')
        batch_op.drop_index('ux_messages_provider_id', postgresql_where=sa.text('provider_id IS NOT NULL'), sqlite_where=sa.text('provider_id IS NOT NULL'))
        batch_op.create_unique_constraint(batch_op.f('uq_messages_provider_id'), ['provider_id'])

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_campaigns_id_shop_id'), type_='unique')
