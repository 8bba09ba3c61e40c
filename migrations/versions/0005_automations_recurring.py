"""automations, recurring campaigns, messages once per automation entry

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 23:40:18.308654
"""
from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Automations table; campaigns get kind, parent (runs) and repeat; messages unique per occurrence."""
    op.create_table('automations',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('campaign_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('trigger', sa.String(length=8), nullable=False),
    sa.Column('segment_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('delay_seconds', sa.Integer(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('builtin', sa.String(length=48), nullable=True),
    sa.Column('last_event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('enabled_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('shop_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_automations_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['segment_id'], ['segments.id'], name=op.f('fk_automations_segment_id_segments'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_automations_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_automations')),
    sa.UniqueConstraint('campaign_id', name=op.f('uq_automations_campaign_id')),
    sa.UniqueConstraint('shop_id', 'builtin', name=op.f('uq_automations_shop_id_builtin'))
    )
    with op.batch_alter_table('automations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_automations_segment_id'), ['segment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_automations_shop_id'), ['shop_id'], unique=False)

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='campaign', nullable=False))
        batch_op.add_column(sa.Column('parent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.add_column(sa.Column('repeat', sa.String(length=8), server_default='none', nullable=False))
        batch_op.add_column(sa.Column('repeat_until', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('repeat_anchor', kinnekt.db.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_campaigns_parent_id'), ['parent_id'], unique=False)
        batch_op.create_unique_constraint(batch_op.f('uq_campaigns_parent_id_send_at'), ['parent_id', 'send_at'])
        batch_op.create_foreign_key(batch_op.f('fk_campaigns_parent_id_campaigns'), 'campaigns', ['parent_id'], ['id'], ondelete='CASCADE')

    with op.batch_alter_table('segment_events', schema=None) as batch_op:
        batch_op.create_index('ix_segment_events_segment_id', ['segment_id', 'id'], unique=False)

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('occurrence', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), server_default='0', nullable=False))
        batch_op.drop_constraint(batch_op.f('uq_messages_campaign_id_subscriber_id'), type_='unique')
        batch_op.create_unique_constraint('uq_messages_campaign_recipient', ['campaign_id', 'subscriber_id', 'occurrence'])



def downgrade() -> None:
    """Drop automations and the recurring and occurrence columns."""
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_constraint('uq_messages_campaign_recipient', type_='unique')
        batch_op.create_unique_constraint(batch_op.f('uq_messages_campaign_id_subscriber_id'), ['campaign_id', 'subscriber_id'])
        batch_op.drop_column('occurrence')

    with op.batch_alter_table('segment_events', schema=None) as batch_op:
        batch_op.drop_index('ix_segment_events_segment_id')

    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_campaigns_parent_id_campaigns'), type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('uq_campaigns_parent_id_send_at'), type_='unique')
        batch_op.drop_index(batch_op.f('ix_campaigns_parent_id'))
        batch_op.drop_column('repeat_anchor')
        batch_op.drop_column('repeat_until')
        batch_op.drop_column('repeat')
        batch_op.drop_column('parent_id')
        batch_op.drop_column('kind')

    with op.batch_alter_table('automations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_automations_shop_id'))
        batch_op.drop_index(batch_op.f('ix_automations_segment_id'))

    op.drop_table('automations')
