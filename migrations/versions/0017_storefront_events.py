"""storefront events from the web pixel, the browsers identified as subscribers', and the shop's pixel settings

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 13:45:00

`storefront_events` holds the pixel's events append-only, unique per shop and event id; `storefront_browsers`
ties a browser (`client_id`) to a subscriber. Shops get the key their pixel sends (`pixel_key`, unique), the
WebPixel's id once created, and how many days unattributed events are kept (90 by default). New tables and
plain ADD COLUMN (see 0011), so there is nothing to fill.
"""
from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    """The two tables with their keys and indexes, and the three shop columns."""
    op.create_table('storefront_events',
    sa.Column('id', ID, nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('occurred_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('received_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=True),
    sa.Column('subscriber_id', ID, nullable=True),
    sa.Column('customer_id', sa.BigInteger(), nullable=True),
    sa.Column('product_id', sa.BigInteger(), nullable=True),
    sa.Column('variant_id', sa.BigInteger(), nullable=True),
    sa.Column('collection_id', sa.BigInteger(), nullable=True),
    sa.Column('quantity', sa.Integer(), nullable=True),
    sa.Column('value', kinnekt.db.Money(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('checkout_token', sa.String(length=64), nullable=True),
    sa.Column('search_query', sa.String(length=255), nullable=True),
    sa.Column('url', sa.Text(), nullable=True),
    sa.Column('shop_id', ID, nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_storefront_events_shop_id_shops'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'],
                            name=op.f('fk_storefront_events_subscriber_id_subscribers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_storefront_events')),
    sa.UniqueConstraint('shop_id', 'event_id', name=op.f('uq_storefront_events_shop_id_event_id'))
    )
    op.create_index(op.f('ix_storefront_events_shop_id'), 'storefront_events', ['shop_id'], unique=False)
    op.create_index('ix_storefront_events_subscriber', 'storefront_events',
                    ['subscriber_id', 'name', 'occurred_at'], unique=False)
    op.create_index('ix_storefront_events_browser', 'storefront_events', ['shop_id', 'client_id'], unique=False)
    op.create_index('ix_storefront_events_shop_occurred', 'storefront_events', ['shop_id', 'occurred_at'],
                    unique=False)
    op.create_table('storefront_browsers',
    sa.Column('id', ID, nullable=False),
    sa.Column('client_id', sa.String(length=64), nullable=False),
    sa.Column('subscriber_id', ID, nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('identified_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('shop_id', ID, nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_storefront_browsers_shop_id_shops'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'],
                            name=op.f('fk_storefront_browsers_subscriber_id_subscribers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_storefront_browsers')),
    sa.UniqueConstraint('shop_id', 'client_id', name=op.f('uq_storefront_browsers_shop_id_client_id'))
    )
    op.create_index(op.f('ix_storefront_browsers_shop_id'), 'storefront_browsers', ['shop_id'], unique=False)
    op.create_index('ix_storefront_browsers_subscriber', 'storefront_browsers', ['subscriber_id'], unique=False)
    op.add_column('shops', sa.Column('pixel_key', sa.String(length=64), nullable=True))
    op.add_column('shops', sa.Column('web_pixel_id', sa.String(length=128), nullable=True))
    op.add_column('shops', sa.Column('storefront_retention_days', sa.Integer(), nullable=False,
                                     server_default='90'))
    op.create_index(op.f('ix_shops_pixel_key'), 'shops', ['pixel_key'], unique=True)


def downgrade() -> None:
    """Drop them again."""
    op.drop_index(op.f('ix_shops_pixel_key'), table_name='shops')
    for column in ('storefront_retention_days', 'web_pixel_id', 'pixel_key'):
        op.drop_column('shops', column)
    op.drop_table('storefront_browsers')
    op.drop_table('storefront_events')
