"""Shopify customer segments in (their members) and Kinnekt segments out (mirrored into customer tags)

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 17:10:00

`shopify_segments` and `shopify_segment_members` hold the shop's Shopify segments and their members (unique per
shop, segment and customer), read by the `shopify_segment` rule; `segment_tag_mirrors` and
`segment_tagged_customers` hold a segment's mirror into a Shopify customer tag and whom it tagged. New tables:
nothing to fill.
"""
from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0024'
down_revision = '0023'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def _tenant(table: str) -> list:
    return [sa.Column('shop_id', ID, nullable=False),
            sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f(f'fk_{table}_shop_id_shops'),
                                    ondelete='CASCADE')]


def _stamps() -> list:
    return [sa.Column('created_at', kinnekt.db.UTCDateTime(), nullable=False),
            sa.Column('updated_at', kinnekt.db.UTCDateTime(), nullable=False)]


def upgrade() -> None:
    """The four tables and their keys."""
    op.create_table('shopify_segments',
    sa.Column('id', ID, nullable=False),
    sa.Column('shopify_id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('query', sa.Text(), nullable=False),
    sa.Column('member_count', sa.Integer(), nullable=False),
    sa.Column('refreshed_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('gone_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('recheck_owed', sa.Boolean(), nullable=False),
    *_tenant('shopify_segments'), *_stamps(),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shopify_segments')),
    sa.UniqueConstraint('shop_id', 'shopify_id', name=op.f('uq_shopify_segments_shop_id_shopify_id'))
    )
    op.create_index(op.f('ix_shopify_segments_shop_id'), 'shopify_segments', ['shop_id'], unique=False)
    op.create_table('shopify_segment_members',
    sa.Column('id', ID, nullable=False),
    sa.Column('segment_id', sa.BigInteger(), nullable=False),
    sa.Column('customer_id', sa.BigInteger(), nullable=False),
    *_tenant('shopify_segment_members'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shopify_segment_members')),
    sa.UniqueConstraint('shop_id', 'segment_id', 'customer_id',
                        name=op.f('uq_shopify_segment_members_shop_id_segment_id_customer_id'))
    )
    op.create_index(op.f('ix_shopify_segment_members_shop_id'), 'shopify_segment_members', ['shop_id'],
                    unique=False)
    op.create_table('segment_tag_mirrors',
    sa.Column('id', ID, nullable=False),
    sa.Column('segment_id', ID, nullable=False),
    sa.Column('tag', sa.String(length=255), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('tagged_count', sa.Integer(), nullable=False),
    sa.Column('synced_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('claimed_until', kinnekt.db.UTCDateTime(), nullable=True),
    *_tenant('segment_tag_mirrors'), *_stamps(),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_segment_tag_mirrors')),
    sa.UniqueConstraint('segment_id', name=op.f('uq_segment_tag_mirrors_segment_id')),
    sa.UniqueConstraint('shop_id', 'tag', name=op.f('uq_segment_tag_mirrors_shop_id_tag'))
    )
    op.create_index(op.f('ix_segment_tag_mirrors_shop_id'), 'segment_tag_mirrors', ['shop_id'], unique=False)
    op.create_table('segment_tagged_customers',
    sa.Column('id', ID, nullable=False),
    sa.Column('segment_id', ID, nullable=False),
    sa.Column('customer_id', sa.BigInteger(), nullable=False),
    sa.Column('tag', sa.String(length=255), nullable=False),
    *_tenant('segment_tagged_customers'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_segment_tagged_customers')),
    sa.UniqueConstraint('segment_id', 'customer_id', name=op.f('uq_segment_tagged_customers_segment_id_customer_id'))
    )
    op.create_index(op.f('ix_segment_tagged_customers_shop_id'), 'segment_tagged_customers', ['shop_id'],
                    unique=False)
    op.create_index('ix_segment_tagged_customers_shop_customer', 'segment_tagged_customers',
                    ['shop_id', 'customer_id'], unique=False)


def downgrade() -> None:
    """Drop the four tables."""
    op.drop_index('ix_segment_tagged_customers_shop_customer', table_name='segment_tagged_customers')
    op.drop_index(op.f('ix_segment_tagged_customers_shop_id'), table_name='segment_tagged_customers')
    op.drop_table('segment_tagged_customers')
    op.drop_index(op.f('ix_segment_tag_mirrors_shop_id'), table_name='segment_tag_mirrors')
    op.drop_table('segment_tag_mirrors')
    op.drop_index(op.f('ix_shopify_segment_members_shop_id'), table_name='shopify_segment_members')
    op.drop_table('shopify_segment_members')
    op.drop_index(op.f('ix_shopify_segments_shop_id'), table_name='shopify_segments')
    op.drop_table('shopify_segments')
